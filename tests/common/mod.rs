//! A sandbox for running the built binary against real postconf, doveconf, openssl and
//! debconf, on private copies: a Postfix configuration directory made from Debian's
//! templates, a minimal Dovecot configuration, and a debconf database in a temporary
//! directory (DEBCONF_SYSTEMRC). Nothing outside the sandbox is read for answers or
//! written, and nothing is reloaded (`--no-reload`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

pub const MYHOSTNAME: &str = "mail.example.test";

pub struct Sandbox {
    pub dir: TempDir,
}

/// A file's bytes, inode and modification time, to prove that nothing rewrote it.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub content: Vec<u8>,
    pub inode: u64,
    pub mtime_ns: i128,
}

pub fn fingerprint(path: &Path) -> Fingerprint {
    let metadata = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Fingerprint {
        content: fs::read(path).unwrap(),
        inode: metadata.ino(),
        mtime_ns: metadata.mtime() as i128 * 1_000_000_000 + metadata.mtime_nsec() as i128,
    }
}

fn run_checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Tells whether the programs the sandbox needs are installed; tests skip with a message
/// otherwise, and the test runner installs them.
pub fn tools_present() -> bool {
    let present = ["postconf", "doveconf", "openssl", "debconf-set-selections"]
        .iter()
        .all(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !present {
        eprintln!("skipping: postfix, dovecot-core, openssl or debconf is not installed");
    }
    present
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        sandbox.make_postfix();
        sandbox.make_dovecot();
        sandbox.make_debconf();
        sandbox.make_certificate("cert", "key");
        sandbox.set_parameters(&[
            (
                "smtpd_tls_cert_file",
                &sandbox.path("tls/cert.pem").display().to_string(),
            ),
            (
                "smtpd_tls_key_file",
                &sandbox.path("tls/key.pem").display().to_string(),
            ),
        ]);
        sandbox
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn postfix_dir(&self) -> PathBuf {
        self.path("postfix")
    }

    pub fn main_cf(&self) -> PathBuf {
        self.path("postfix/main.cf")
    }

    pub fn master_cf(&self) -> PathBuf {
        self.path("postfix/master.cf")
    }

    pub fn snippet(&self) -> PathBuf {
        self.path("dovecot/conf.d/90-postfix-submission.conf")
    }

    pub fn state_file(&self) -> PathBuf {
        self.path("state/state.json")
    }

    fn make_postfix(&self) {
        let dir = self.postfix_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::copy("/usr/share/postfix/main.cf.debian", dir.join("main.cf")).unwrap();
        fs::copy("/usr/share/postfix/master.cf.dist", dir.join("master.cf")).unwrap();
        self.set_parameters(&[
            ("myhostname", MYHOSTNAME),
            ("mydestination", "localhost"),
            ("message_size_limit", "12345678"),
            (
                "smtpd_relay_restrictions",
                "permit_mynetworks permit_sasl_authenticated defer_unauth_destination",
            ),
        ]);
    }

    fn make_dovecot(&self) {
        fs::create_dir_all(self.path("dovecot/conf.d")).unwrap();
        let config = format!(
            "base_dir = {}\nstate_dir = {}\n!include_try conf.d/*.conf\n",
            self.path("dovecot-run").display(),
            self.path("dovecot-state").display()
        );
        fs::write(self.path("dovecot/dovecot.conf"), config).unwrap();
    }

    fn debconf_rc(&self) -> PathBuf {
        self.path("debconf/debconf.conf")
    }

    fn make_debconf(&self) {
        let dir = self.path("debconf");
        fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "Config: configdb\nTemplates: templatedb\n\n\
             Name: configdb\nDriver: File\nFilename: {0}/config.dat\n\n\
             Name: templatedb\nDriver: File\nMode: 644\nFilename: {0}/templates.dat\n",
            dir.display()
        );
        fs::write(self.debconf_rc(), config).unwrap();
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/templates");
        run_checked(
            Command::new("debconf-loadtemplate")
                .arg("postfix-submission")
                .arg(templates)
                .env("DEBCONF_SYSTEMRC", self.debconf_rc()),
        );
    }

    /// Sets answers as a preseed file would: `(name without package prefix, type, value)`.
    pub fn preseed(&self, answers: &[(&str, &str, &str)]) {
        let mut text = String::new();
        for (name, kind, value) in answers {
            text.push_str(&format!(
                "postfix-submission postfix-submission/{name} {kind} {value}\n"
            ));
        }
        let path = self.path("debconf/preseed");
        fs::write(&path, text).unwrap();
        run_checked(
            Command::new("debconf-set-selections")
                .arg(&path)
                .env("DEBCONF_SYSTEMRC", self.debconf_rc()),
        );
    }

    /// Returns an answer as stored in the private debconf database.
    pub fn answer(&self, name: &str) -> String {
        let output = run_checked(
            Command::new("debconf-show")
                .arg("postfix-submission")
                .env("DEBCONF_SYSTEMRC", self.debconf_rc()),
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let key = format!("postfix-submission/{name}:");
        text.lines()
            .find_map(|l| {
                l.trim_start_matches(['*', ' '])
                    .strip_prefix(key.as_str())
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{name} not in debconf-show output:\n{text}"))
    }

    /// Makes a self-signed certificate tls/NAME.pem with its key tls/KEY.pem.
    pub fn make_certificate(&self, name: &str, key: &str) {
        fs::create_dir_all(self.path("tls")).unwrap();
        run_checked(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
                ])
                .arg(format!("/CN={MYHOSTNAME}"))
                .arg("-keyout")
                .arg(self.path(&format!("tls/{key}.pem")))
                .arg("-out")
                .arg(self.path(&format!("tls/{name}.pem")))
                .stdin(Stdio::null()),
        );
    }

    pub fn set_parameters(&self, settings: &[(&str, &str)]) {
        let mut command = Command::new("postconf");
        command.arg("-c").arg(self.postfix_dir()).arg("-e");
        for (name, value) in settings {
            command.arg(format!("{name}={value}"));
        }
        run_checked(&mut command);
    }

    pub fn postconf(&self, args: &[&str]) -> String {
        let output = run_checked(
            Command::new("postconf")
                .arg("-c")
                .arg(self.postfix_dir())
                .args(args),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Returns a main.cf parameter's explicit value, `None` when main.cf does not set it.
    pub fn parameter(&self, name: &str) -> Option<String> {
        let text = self.postconf(&["-n"]);
        let prefix = format!("{name} = ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(String::from))
            .or_else(|| {
                text.lines()
                    .any(|l| l == format!("{name} ="))
                    .then(String::new)
            })
    }

    /// Runs the binary with the sandbox's locations and debconf database.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_templates(
            args,
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        )
    }

    pub fn run_with_templates(&self, args: &[&str], templates: &Path) -> Output {
        self.command(args, templates)
            .output()
            .expect("the binary runs")
    }

    /// Builds the command that runs the binary on the sandbox, for callers that change
    /// its environment before running it.
    pub fn command(&self, args: &[&str], templates: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_postfix-submission"));
        command
            .arg("--config-dir")
            .arg(self.postfix_dir())
            .arg("--dovecot-config")
            .arg(self.path("dovecot/dovecot.conf"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--templates-dir")
            .arg(templates)
            .arg("--letsencrypt-dir")
            .arg(self.path("letsencrypt/live"))
            .arg("--no-reload")
            .args(args)
            .env("DEBCONF_SYSTEMRC", self.debconf_rc())
            .env_remove("DEBIAN_HAS_FRONTEND")
            .env_remove("DEBCONF_REDIR")
            .env_remove("DEBIAN_FRONTEND")
            .env_remove("MAIL_CONFIG")
            .stdin(Stdio::null());
        command
    }

    /// Runs the binary and asserts success, returning stdout and stderr.
    pub fn run_ok(&self, args: &[&str]) -> (String, String) {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "{args:?} failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }

    pub fn fingerprints(&self) -> [Fingerprint; 2] {
        [fingerprint(&self.main_cf()), fingerprint(&self.master_cf())]
    }

    /// Runs postconf on the sandbox's configuration and returns its stdout and stderr, or
    /// an error message with postconf's stderr, for callers that report failures themselves.
    pub fn try_postconf(&self, args: &[&str]) -> Result<(String, String), String> {
        let output = Command::new("postconf")
            .arg("-c")
            .arg(self.postfix_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("failed to run postconf {}: {e}", args.join(" ")))?;
        if !output.status.success() {
            return Err(format!(
                "postconf {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok((
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Returns every answer in the private debconf database, by question name without
    /// the package prefix.
    pub fn answers(&self) -> BTreeMap<String, String> {
        let output = run_checked(
            Command::new("debconf-show")
                .arg("postfix-submission")
                .env("DEBCONF_SYSTEMRC", self.debconf_rc()),
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines()
            .filter_map(|l| {
                let line = l.trim_start_matches(['*', ' ']);
                let (name, value) = line.split_once(':')?;
                let name = name.strip_prefix("postfix-submission/")?;
                Some((name.to_string(), value.trim().to_string()))
            })
            .collect()
    }

    /// Deletes the private debconf database and registers the questions again, so that
    /// every answer is back at its template default, as after a purge.
    pub fn reset_debconf(&self) {
        fs::remove_dir_all(self.path("debconf")).unwrap();
        self.make_debconf();
    }

    /// Copies the repository's templates into the sandbox directory NAME and returns it.
    pub fn copy_templates(&self, name: &str) -> PathBuf {
        let target = self.path(name);
        fs::create_dir_all(&target).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        for entry in fs::read_dir(&source).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
        target
    }
}
