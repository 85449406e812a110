//! Runs the debconf client against real debconf 1.5.x programs with a private database.
//!
//! Every test writes its own debconf.conf with File drivers in a temporary directory and
//! points `DEBCONF_SYSTEMRC` at it, so the system database in /var/cache/debconf is never
//! read or written. The probe tests need the `debconf_probe` example, which `cargo test`
//! builds along with the tests.

use std::collections::HashMap;
use std::env;
use std::fmt::Debug;
use std::fs;
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

use postfix_submission::debconf::{Client, Error, GoOutcome, Priority, FRONTEND_PATH};
use tempfile::TempDir;

const PACKAGE: &str = "postfix-submission";
const STRING_QUESTION: &str = "postfix-submission/probe-string";
const BOOLEAN_QUESTION: &str = "postfix-submission/probe-boolean";

const TEMPLATES: &str = "\
Template: postfix-submission/probe-string
Type: string
Default: alpha
Description: Probe string for ${WHAT}
 First extended line.
 .
 Third extended line.

Template: postfix-submission/probe-boolean
Type: boolean
Default: true
Description: Probe boolean?
 A boolean question for the tests.
";

const EXTRA_TEMPLATES: &str = "\
Template: postfix-submission/probe-extra
Type: string
Default: extra default
Description: Extra probe question
 Loaded with X_LOADTEMPLATEFILE.
";

/// Environment variables that could point debconf at another database or another channel.
const INHERITED_VARIABLES: &[&str] = &[
    "DEBIAN_HAS_FRONTEND",
    "DEBCONF_REDIR",
    "DEBCONF_DB_REPLACE",
    "DEBCONF_DB_OVERRIDE",
    "DEBCONF_DB_FALLBACK",
    "DEBCONF_PACKAGE",
    "DPKG_ROOT",
    "POSTFIX_SUBMISSION_OUTPUT_FD",
];

/// A debconf configuration whose databases live in a temporary directory.
struct PrivateDebconf {
    directory: TempDir,
    config: PathBuf,
}

impl PrivateDebconf {
    /// Writes debconf.conf and loads [`TEMPLATES`] with debconf-loadtemplate, or with
    /// X_LOADTEMPLATEFILE where debconf-utils is not installed.
    fn new() -> Self {
        let directory = tempfile::tempdir().expect("failed to create a temporary directory");
        let config = directory.path().join("debconf.conf");
        let database = |name: &str| directory.path().join(name).display().to_string();
        let contents = format!(
            "Config: configdb\nTemplates: templatedb\n\n\
             Name: configdb\nDriver: File\nMode: 600\nFilename: {}\n\n\
             Name: templatedb\nDriver: File\nMode: 600\nFilename: {}\n",
            database("config.dat"),
            database("templates.dat"),
        );
        fs::write(&config, contents).expect("failed to write debconf.conf");
        let private = PrivateDebconf { directory, config };
        let templates = private.write_file("probe.templates", TEMPLATES);
        private.load_templates(&templates);
        private
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("failed to write {path:?}: {e}"));
        path
    }

    /// Returns a command for `program` that uses only this private database.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        // debconf falls back to /etc/debconf.conf when DEBCONF_SYSTEMRC names a missing file.
        assert!(
            self.config.is_file(),
            "{} is missing",
            self.config.display()
        );
        let mut command = Command::new(program);
        for variable in INHERITED_VARIABLES {
            command.env_remove(variable);
        }
        command
            .env("DEBCONF_SYSTEMRC", &self.config)
            .env("DEBIAN_FRONTEND", "noninteractive");
        command
    }

    fn load_templates(&self, templates: &Path) {
        let status = self
            .command("debconf-loadtemplate")
            .arg(PACKAGE)
            .arg(templates)
            .status();
        match status {
            Ok(status) => assert!(status.success(), "debconf-loadtemplate failed: {status}"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let mut session = self.communicate();
                session
                    .client
                    .x_loadtemplatefile(templates, Some(PACKAGE))
                    .unwrap();
                session.finish();
            }
            Err(error) => panic!("failed to run debconf-loadtemplate: {error}"),
        }
    }

    /// Starts `debconf-communicate postfix-submission` and connects a client to it.
    fn communicate(&self) -> Session {
        let mut child = self
            .command("debconf-communicate")
            .arg(PACKAGE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("failed to start debconf-communicate");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        Session {
            child,
            client: Client::new(BufReader::new(stdout), stdin),
        }
    }
}

/// A client connected to a running debconf-communicate.
struct Session {
    child: Child,
    client: Client<BufReader<ChildStdout>, ChildStdin>,
}

impl Session {
    /// Closes debconf-communicate's stdin, so it saves the database and exits, and waits.
    fn finish(self) {
        let Session { mut child, client } = self;
        drop(client);
        child
            .wait()
            .expect("failed to wait for debconf-communicate");
    }
}

#[test]
fn communicate_version_and_defaults() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    assert_eq!(client.version().unwrap(), "2.0");
    assert_eq!(client.get(STRING_QUESTION).unwrap(), "alpha");
    assert_eq!(client.get(BOOLEAN_QUESTION).unwrap(), "true");
    assert!(client.exist(STRING_QUESTION).unwrap());
    session.finish();
}

#[test]
fn communicate_set_then_get() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    client
        .set(STRING_QUESTION, "smtp.example.org with spaces")
        .unwrap();
    assert_eq!(
        client.get(STRING_QUESTION).unwrap(),
        "smtp.example.org with spaces"
    );
    client.set(STRING_QUESTION, "").unwrap();
    assert_eq!(client.get(STRING_QUESTION).unwrap(), "");
    session.finish();
}

#[test]
fn communicate_values_persist() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    session.client.set(STRING_QUESTION, "kept").unwrap();
    session.finish();

    let mut session = debconf.communicate();
    assert_eq!(session.client.get(STRING_QUESTION).unwrap(), "kept");
    session.finish();
    let saved = fs::read_to_string(debconf.path("config.dat")).unwrap();
    assert!(
        saved.contains(STRING_QUESTION),
        "private config.dat:\n{saved}"
    );
}

#[test]
fn communicate_reset_restores_default() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    client.set(STRING_QUESTION, "changed").unwrap();
    client.fset(STRING_QUESTION, "seen", true).unwrap();
    client.reset(STRING_QUESTION).unwrap();
    assert_eq!(client.get(STRING_QUESTION).unwrap(), "alpha");
    assert!(!client.fget(STRING_QUESTION, "seen").unwrap());
    session.finish();
}

#[test]
fn communicate_fset_then_fget() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    assert!(!client.fget(STRING_QUESTION, "seen").unwrap());
    client.fset(STRING_QUESTION, "seen", true).unwrap();
    assert!(client.fget(STRING_QUESTION, "seen").unwrap());
    client.fset(STRING_QUESTION, "seen", false).unwrap();
    assert!(!client.fget(STRING_QUESTION, "seen").unwrap());
    session.finish();
}

#[test]
fn communicate_metaget_and_subst() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    assert_eq!(client.metaget(STRING_QUESTION, "type").unwrap(), "string");
    // METAGET fills in substitution variables, and an unset one becomes empty.
    assert_eq!(
        client.metaget(STRING_QUESTION, "description").unwrap(),
        "Probe string for "
    );
    client.subst(STRING_QUESTION, "WHAT", "the tests").unwrap();
    assert_eq!(
        client.metaget(STRING_QUESTION, "description").unwrap(),
        "Probe string for the tests"
    );
    session.finish();
}

#[test]
fn communicate_escape_multiline_values() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    let supported = client.capb(&["escape"]).unwrap();
    assert!(
        supported.iter().any(|capability| capability == "escape"),
        "{supported:?}"
    );
    assert!(client.escape_enabled());

    let value = "first line\nsecond line with \\ and \\n\n";
    client.set(STRING_QUESTION, value).unwrap();
    assert_eq!(client.get(STRING_QUESTION).unwrap(), value);
    assert_eq!(
        client
            .metaget(STRING_QUESTION, "extended_description")
            .unwrap(),
        "First extended line.\n\nThird extended line."
    );
    client.subst(STRING_QUESTION, "WHAT", "two\nlines").unwrap();
    assert_eq!(
        client.metaget(STRING_QUESTION, "description").unwrap(),
        "Probe string for two\nlines"
    );
    session.finish();
}

#[test]
fn communicate_newline_needs_escape() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    let error = client.set(STRING_QUESTION, "first\nsecond").unwrap_err();
    assert!(
        matches!(error, Error::InvalidArgument { command: "SET", .. }),
        "{error:?}"
    );
    assert_eq!(
        client.get(STRING_QUESTION).unwrap(),
        "alpha",
        "nothing was sent"
    );
    session.finish();
}

#[test]
fn communicate_unknown_question_error() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    let missing = "postfix-submission/no-such-question";
    let error = client.get(missing).unwrap_err();
    let Error::Command {
        command,
        arguments,
        code,
        message,
    } = &error
    else {
        panic!("expected a Command error, got {error:?}");
    };
    assert_eq!(*command, "GET");
    assert_eq!(arguments, missing);
    assert_eq!(*code, 10);
    assert!(message.contains("doesn't exist"), "{message}");

    let error = client.set(missing, "secret-value").unwrap_err();
    assert!(
        matches!(error, Error::Command { code: 10, .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("secret-value"), "{error}");
    assert_eq!(
        client.get(STRING_QUESTION).unwrap(),
        "alpha",
        "session still usable"
    );
    session.finish();
}

#[test]
fn communicate_register_unregister() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    let copy = "postfix-submission/probe-copy";
    assert!(!client.exist(copy).unwrap());
    client.register(STRING_QUESTION, copy).unwrap();
    assert!(client.exist(copy).unwrap());
    assert_eq!(client.get(copy).unwrap(), "alpha");
    client.unregister(copy).unwrap();
    assert!(!client.exist(copy).unwrap());

    let error = client
        .register("postfix-submission/no-template", copy)
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Command {
                command: "REGISTER",
                code: 10,
                ..
            }
        ),
        "{error:?}"
    );
    session.finish();
}

#[test]
fn communicate_input_and_go() {
    let debconf = PrivateDebconf::new();
    let mut session = debconf.communicate();
    let client = &mut session.client;
    client.capb(&["backup"]).unwrap();
    let visible = client.input(Priority::Critical, STRING_QUESTION).unwrap();
    assert!(!visible, "the noninteractive frontend shows no question");
    assert_eq!(client.go().unwrap(), GoOutcome::Continue);
    let error = client
        .input(Priority::High, "postfix-submission/none")
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Command {
                command: "INPUT",
                code: 10,
                ..
            }
        ),
        "{error:?}"
    );
    session.finish();
}

#[test]
fn communicate_loadtemplatefile_and_purge() {
    let debconf = PrivateDebconf::new();
    let extra = debconf.write_file("extra.templates", EXTRA_TEMPLATES);
    let mut session = debconf.communicate();
    let client = &mut session.client;
    client.x_loadtemplatefile(&extra, Some(PACKAGE)).unwrap();
    assert_eq!(
        client.get("postfix-submission/probe-extra").unwrap(),
        "extra default"
    );

    let missing = debconf.path("missing.templates");
    let error = client.x_loadtemplatefile(&missing, None).unwrap_err();
    assert!(
        matches!(error, Error::Command { code: 10, .. }),
        "{error:?}"
    );

    client.purge().unwrap();
    assert!(!client.exist(STRING_QUESTION).unwrap());
    assert!(!client.exist("postfix-submission/probe-extra").unwrap());
    session.finish();
}

/// Returns the `debconf_probe` example, which sits in `examples/` next to the `deps/`
/// directory of this test executable.
fn probe_path() -> PathBuf {
    let test_executable = env::current_exe().expect("failed to find the test executable");
    let profile_directory = test_executable
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is not in a target/<profile>/deps directory");
    let probe = profile_directory.join("examples").join("debconf_probe");
    assert!(
        probe.is_file(),
        "{} is missing: run `cargo test` without target filters or \
         `cargo build --example debconf_probe` first",
        probe.display()
    );
    probe
}

/// Reads the `key=value` lines that the probe wrote.
fn read_results(path: &Path) -> HashMap<String, String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("no results in {path:?}: {e}"));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn quoted(value: impl Debug) -> String {
    format!("{value:?}")
}

/// Returns the strings inside a `{:?}` list of strings that contain no quotes or escapes.
fn quoted_items(list: &str) -> Vec<String> {
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn result<'a>(results: &'a HashMap<String, String>, key: &str) -> &'a str {
    results
        .get(key)
        .unwrap_or_else(|| panic!("the probe recorded no {key}: {results:?}"))
}

/// Checks the results that both probe modes record through `exercise` and `record_child_fds`.
fn check_exercise(results: &HashMap<String, String>) {
    assert_eq!(result(results, "version"), quoted("2.0"));
    assert_eq!(result(results, "escape"), "true");
    assert_eq!(result(results, "initial"), quoted("alpha"));
    assert_eq!(
        result(results, "multiline"),
        quoted("first line\nsecond \\ line")
    );
    assert_eq!(result(results, "seen"), "true");

    let channel = quoted_items(result(results, "channel"));
    let child_fds = quoted_items(result(results, "child_fds"));
    assert_eq!(channel.len(), 2, "{channel:?}");
    assert!(
        child_fds.iter().any(|fd| fd == "0 /dev/null"),
        "child fds: {child_fds:?}"
    );
    for target in &channel {
        assert!(
            !child_fds
                .iter()
                .any(|fd| fd.ends_with(&format!(" {target}"))),
            "a child inherited the debconf channel {target}: {child_fds:?}"
        );
    }
}

fn stored_value(debconf: &PrivateDebconf) -> String {
    let mut session = debconf.communicate();
    let value = session.client.get(STRING_QUESTION).unwrap();
    session.finish();
    value
}

#[test]
fn probe_over_fd3_from_confmodule() {
    let debconf = PrivateDebconf::new();
    let results_path = debconf.path("results");
    let script = debconf.write_file(
        "probe.sh",
        "#!/bin/sh\n\
         set -e\n\
         . /usr/share/debconf/confmodule\n\
         \"$DEBCONF_PROBE\" confmodule\n\
         db_get postfix-submission/probe-string\n\
         printf 'shell_get=%s\\n' \"$RET\" >> \"$DEBCONF_PROBE_RESULTS\"\n",
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();

    let output = debconf
        .command(FRONTEND_PATH)
        .arg(&script)
        .env("DEBCONF_PACKAGE", PACKAGE)
        .env("DEBCONF_PROBE", probe_path())
        .env("DEBCONF_PROBE_RESULTS", &results_path)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run the debconf frontend");
    assert!(output.status.success(), "{}", describe(&output));

    let results = read_results(&results_path);
    assert_eq!(result(&results, "redir_on_entry"), quoted(Some("1")));
    check_exercise(&results);
    assert_eq!(result(&results, "shell_get"), "set by probe");
    assert_eq!(stored_value(&debconf), "set by probe");
}

#[test]
fn probe_reexec_under_frontend() {
    let debconf = PrivateDebconf::new();
    let results_path = debconf.path("results");
    let output = debconf
        .command(probe_path())
        .arg("reexec")
        // A stale value, as left by an outer confmodule, must not send the channel to fd 3.
        .env("DEBCONF_REDIR", "1")
        .env("DEBCONF_PROBE_RESULTS", &results_path)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run the probe");
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stdout,
        "report from debconf_probe\n",
        "{}",
        describe(&output)
    );
    assert!(
        stderr.contains("stdout after connecting goes to stderr"),
        "{stderr}"
    );

    let results = read_results(&results_path);
    assert_eq!(result(&results, "redir_on_entry"), "None");
    assert_eq!(result(&results, "package"), quoted(Some(PACKAGE)));
    assert_eq!(result(&results, "perl_dl_nonlazy"), quoted(Some("1")));
    assert_eq!(result(&results, "output_fd_set"), "true");
    assert_eq!(result(&results, "redir_after_connect"), quoted(Some("1")));
    check_exercise(&results);
    assert_eq!(stored_value(&debconf), "set by probe");
}
