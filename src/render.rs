//! Rendering the templates in templates/ into the Postfix settings and the Dovecot
//! snippet that the answers call for.
//!
//! The templates are minijinja files. main.cf.j2 renders `name = value` lines and
//! master.cf.j2 renders master.cf entries with indented `-o name=value` lines; both are
//! parsed back into data here, so the rest of the program compares settings, not text.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::answers::Answers;
use crate::postfix::Version;

pub const MAIN_TEMPLATE: &str = "main.cf.j2";
pub const MASTER_TEMPLATE: &str = "master.cf.j2";
pub const DOVECOT_TEMPLATE: &str = "dovecot-auth.conf.j2";

/// Everything the templates may use: the answers with automatic values resolved, and
/// facts about the installed software.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub services: Vec<&'static str>,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub sender_login_maps: String,
    pub auth_on_port_25: bool,
    pub client_checks: &'static str,
    pub mail_version: String,
    #[serde(skip)]
    pub version: Version,
    pub auth_socket: String,
    /// The chroot column for new smtpd entries (y, n or -).
    pub smtpd_chroot: String,
}

impl Inputs {
    /// Combines answers with the certificate paths that preflight resolved.
    pub fn new(answers: &Answers, cert: &str, key: &str, version: Version, socket: &Path) -> Self {
        Inputs {
            services: answers.services.iter().map(|s| s.name()).collect(),
            tls_cert_file: cert.to_string(),
            tls_key_file: key.to_string(),
            sender_login_maps: answers.sender_login_maps.clone(),
            auth_on_port_25: answers.auth_on_port_25,
            client_checks: answers.client_checks.name(),
            mail_version: version.to_string(),
            version,
            auth_socket: socket.display().to_string(),
            smtpd_chroot: "y".to_string(),
        }
    }
}

/// A master.cf entry as a template renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredEntry {
    /// The field line, one space between fields.
    pub fields: String,
    /// The `-o` options in template order.
    pub options: Vec<(String, String)>,
}

impl DesiredEntry {
    /// Returns the whole entry as one `postconf -M` value.
    pub fn line(&self) -> String {
        let mut line = self.fields.clone();
        for (name, value) in &self.options {
            line.push_str(&format!(" -o {name}={value}"));
        }
        line
    }
}

/// The settings that the answers call for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub parameters: BTreeMap<String, String>,
    /// Entries by `service/type`.
    pub entries: BTreeMap<String, DesiredEntry>,
}

/// The template files, read once from a directory.
pub struct Templates {
    dir: PathBuf,
    env: Environment<'static>,
}

impl Templates {
    /// Loads every template from `dir` (installed as /usr/share/postfix-submission/templates).
    pub fn load(dir: &Path) -> Result<Templates> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        for name in [MAIN_TEMPLATE, MASTER_TEMPLATE, DOVECOT_TEMPLATE] {
            let path = dir.join(name);
            let source = fs::read_to_string(&path)
                .with_context(|| format!("failed to read template {}", path.display()))?;
            env.add_template_owned(name, source)
                .with_context(|| format!("invalid template {}", path.display()))?;
        }
        Ok(Templates {
            dir: dir.to_path_buf(),
            env,
        })
    }

    fn render(&self, name: &str, inputs: &Inputs) -> Result<String> {
        let mut env = self.env.clone();
        let version = inputs.version;
        env.add_function("postfix_at_least", move |wanted: String| {
            Version::parse(&wanted)
                .map(|w| version >= w)
                .ok_or_else(|| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("postfix_at_least: {wanted:?} is not a version such as \"3.10\""),
                    )
                })
        });
        let template = env.get_template(name)?;
        template
            .render(inputs)
            .with_context(|| format!("failed to render {}", self.dir.join(name).display()))
    }

    /// Renders and parses main.cf.j2 and master.cf.j2.
    pub fn desired(&self, inputs: &Inputs) -> Result<Desired> {
        let main = self.render(MAIN_TEMPLATE, inputs)?;
        let master = self.render(MASTER_TEMPLATE, inputs)?;
        Ok(Desired {
            parameters: parse_main(&main).with_context(|| self.origin(MAIN_TEMPLATE))?,
            entries: parse_master(&master).with_context(|| self.origin(MASTER_TEMPLATE))?,
        })
    }

    /// Renders the Dovecot snippet.
    pub fn dovecot_snippet(&self, inputs: &Inputs) -> Result<String> {
        self.render(DOVECOT_TEMPLATE, inputs)
    }

    /// Renders main.cf.j2 and master.cf.j2 as text, for golden tests and debugging.
    pub fn render_text(&self, inputs: &Inputs) -> Result<(String, String)> {
        Ok((
            self.render(MAIN_TEMPLATE, inputs)?,
            self.render(MASTER_TEMPLATE, inputs)?,
        ))
    }

    fn origin(&self, name: &str) -> String {
        format!(
            "in the output of template {}",
            self.dir.join(name).display()
        )
    }
}

fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_end()))
        .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
}

fn parse_main(text: &str) -> Result<BTreeMap<String, String>> {
    let mut parameters = BTreeMap::new();
    for (number, line) in content_lines(text) {
        let Some((name, value)) = line.split_once('=') else {
            bail!("line {number}: expected \"name = value\", found {line:?}");
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("line {number}: {name:?} is not a Postfix parameter name");
        }
        if parameters
            .insert(name.to_string(), value.trim().to_string())
            .is_some()
        {
            bail!("line {number}: parameter {name} is set twice");
        }
    }
    Ok(parameters)
}

fn parse_master(text: &str) -> Result<BTreeMap<String, DesiredEntry>> {
    let mut entries: BTreeMap<String, DesiredEntry> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (number, line) in content_lines(text) {
        if line.starts_with(char::is_whitespace) {
            let Some(key) = &current else {
                bail!(
                    "line {number}: option {:?} comes before any entry",
                    line.trim()
                );
            };
            let option = parse_option(line.trim())
                .with_context(|| format!("line {number}: invalid option {:?}", line.trim()))?;
            entries
                .get_mut(key)
                .expect("current entry exists")
                .options
                .push(option);
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 8 {
            bail!("line {number}: an entry needs 8 fields, found {line:?}");
        }
        let key = format!("{}/{}", words[0], words[1]);
        let entry = DesiredEntry {
            fields: words.join(" "),
            options: Vec::new(),
        };
        if entries.insert(key.clone(), entry).is_some() {
            bail!("line {number}: entry {key} is rendered twice");
        }
        current = Some(key);
    }
    Ok(entries)
}

fn parse_option(text: &str) -> Result<(String, String)> {
    let Some(rest) = text.strip_prefix("-o ") else {
        bail!("expected \"-o name=value\"");
    };
    let Some((name, value)) = rest.trim().split_once('=') else {
        bail!("expected \"-o name=value\"");
    };
    if value.contains(char::is_whitespace) || name.contains(char::is_whitespace) {
        bail!("option names and values must not contain whitespace (postconf -P rejects it)");
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::{ClientChecks, Service};
    use std::collections::BTreeSet;

    fn templates() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    fn answers(checks: ClientChecks, maps: &str) -> Answers {
        Answers {
            services: BTreeSet::from(Service::ALL),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            sender_login_maps: maps.to_string(),
            auth_on_port_25: false,
            client_checks: checks,
            configure_dovecot: true,
        }
    }

    fn inputs(answers: &Answers, version: Version) -> Inputs {
        let socket = Path::new("/var/spool/postfix/private/auth");
        Inputs::new(answers, "/etc/ssl/c.pem", "/etc/ssl/k.pem", version, socket)
    }

    /// Compares rendered text with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites the file.
    fn assert_golden(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, actual).unwrap();
        }
        let expected = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
        assert!(expected == actual, "{} differs:\n{actual}", path.display());
    }

    #[test]
    fn golden_standard_postfix_3_7() {
        let answers = answers(
            ClientChecks::Standard,
            "mysql:/etc/postfix/mysql-email2email.cf",
        );
        let (main, master) = templates()
            .render_text(&inputs(&answers, Version(3, 7, 11)))
            .unwrap();
        assert_golden("main-standard-3.7.cf", &main);
        assert_golden("master-3.7.cf", &master);
    }

    #[test]
    fn golden_strict_postfix_3_10() {
        let mut answers = answers(ClientChecks::Strict, "");
        answers.auth_on_port_25 = true;
        let (main, master) = templates()
            .render_text(&inputs(&answers, Version(3, 10, 1)))
            .unwrap();
        assert_golden("main-strict-3.10.cf", &main);
        assert_golden("master-3.10.cf", &master);
    }

    #[test]
    fn golden_dovecot_snippet() {
        let answers = answers(ClientChecks::Standard, "");
        let text = templates()
            .dovecot_snippet(&inputs(&answers, Version(3, 7, 11)))
            .unwrap();
        assert_golden("dovecot-auth.conf", &text);
    }

    #[test]
    fn desired_parses_parameters_and_entries() {
        let answers = answers(ClientChecks::Standard, "hash:/etc/postfix/sender_login");
        let desired = templates()
            .desired(&inputs(&answers, Version(3, 7, 11)))
            .unwrap();
        let p = &desired.parameters;
        assert_eq!(p["smtpd_sasl_type"], "dovecot");
        assert_eq!(
            p["smtpd_sender_login_maps"],
            "hash:/etc/postfix/sender_login"
        );
        assert!(p["mua_sender_restrictions"].starts_with("reject_sender_login_mismatch"));
        assert_eq!(p["smtpd_sasl_auth_enable"], "no");
        let submission = &desired.entries["submission/inet"];
        assert_eq!(submission.fields, "submission inet n - y - - smtpd");
        let options: BTreeMap<_, _> = submission.options.iter().cloned().collect();
        assert_eq!(options["smtpd_tls_security_level"], "encrypt");
        let submissions = &desired.entries["submissions/inet"];
        assert!(submissions.line().contains("-o smtpd_tls_wrappermode=yes"));
    }

    #[test]
    fn unchanged_checks_and_no_services_render_less() {
        let mut answers = answers(ClientChecks::Unchanged, "");
        answers.services.clear();
        let desired = templates()
            .desired(&inputs(&answers, Version(3, 7, 11)))
            .unwrap();
        assert!(desired.entries.is_empty());
        assert!(!desired.parameters.contains_key("smtpd_client_restrictions"));
        assert!(!desired.parameters.contains_key("mua_client_restrictions"));
        assert!(!desired.parameters.contains_key("smtpd_sender_login_maps"));
    }

    #[test]
    fn version_gates_new_options() {
        let answers = answers(ClientChecks::Standard, "");
        let old = templates()
            .desired(&inputs(&answers, Version(3, 7, 11)))
            .unwrap();
        let new = templates()
            .desired(&inputs(&answers, Version(3, 10, 0)))
            .unwrap();
        let has = |d: &Desired| {
            d.entries["submission/inet"]
                .options
                .iter()
                .any(|(n, _)| n == "smtpd_hide_client_session")
        };
        assert!(!has(&old));
        assert!(has(&new));
    }

    #[test]
    fn parse_main_rejects_bad_lines() {
        assert!(parse_main("a = 1\na = 2\n").is_err());
        assert!(parse_main("no equals sign\n").is_err());
        assert!(parse_main("bad-name = x\n").is_err());
        assert_eq!(parse_main("# c\n\nx =\n").unwrap()["x"], "");
    }

    #[test]
    fn parse_master_rejects_bad_lines() {
        assert!(parse_master("  -o a=b\n").is_err());
        assert!(parse_master("short inet n\n").is_err());
        assert!(parse_master("s inet n - y - - smtpd\n  -o a=b c\n").is_err());
        assert!(parse_master("s inet n - y - - smtpd\n  -x a=b\n").is_err());
    }
}
