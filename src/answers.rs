//! The debconf questions of postfix-submission, their values as typed data, and the
//! syntax checks that need nothing but the value itself.
//!
//! Question names and value formats are an interface: preseed files name them, so they
//! change only together with debian/templates.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The package name, which is also the owner of every question.
pub const PACKAGE: &str = "postfix-submission";

pub const Q_SERVICES: &str = "postfix-submission/services";
pub const Q_TLS_CERT_FILE: &str = "postfix-submission/tls_cert_file";
pub const Q_TLS_KEY_FILE: &str = "postfix-submission/tls_key_file";
pub const Q_SENDER_LOGIN_MAPS: &str = "postfix-submission/sender_login_maps";
pub const Q_AUTH_ON_PORT_25: &str = "postfix-submission/auth_on_port_25";
pub const Q_CLIENT_CHECKS: &str = "postfix-submission/client_checks";
pub const Q_CONFIGURE_DOVECOT: &str = "postfix-submission/configure_dovecot";

/// Every question, in the order debian/config asks them.
pub const QUESTIONS: [&str; 7] = [
    Q_SERVICES,
    Q_TLS_CERT_FILE,
    Q_TLS_KEY_FILE,
    Q_SENDER_LOGIN_MAPS,
    Q_AUTH_ON_PORT_25,
    Q_CLIENT_CHECKS,
    Q_CONFIGURE_DOVECOT,
];

/// A submission service in master.cf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Port 587, STARTTLS required before AUTH.
    Submission,
    /// Port 465, TLS from the first byte (implicit TLS).
    Submissions,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Submission, Service::Submissions];

    /// The master.cf service name, which is also the /etc/services name of the port.
    pub fn name(self) -> &'static str {
        match self {
            Service::Submission => "submission",
            Service::Submissions => "submissions",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Service::Submission => 587,
            Service::Submissions => 465,
        }
    }

    fn parse(word: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == word)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The port-25 client, HELO and sender restrictions to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientChecks {
    /// The standard checks plus the reject_unknown_*_hostname DNS checks.
    Strict,
    /// Checks that do not depend on the client's DNS being perfect.
    Standard,
    /// Leave smtpd_client/helo/sender_restrictions as the admin has them.
    Unchanged,
}

impl ClientChecks {
    pub fn name(self) -> &'static str {
        match self {
            ClientChecks::Strict => "strict",
            ClientChecks::Standard => "standard",
            ClientChecks::Unchanged => "unchanged",
        }
    }
}

/// The answers to all questions, parsed and checked for syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers {
    pub services: BTreeSet<Service>,
    /// Empty means automatic.
    pub tls_cert_file: String,
    /// Empty means automatic.
    pub tls_key_file: String,
    /// Empty turns the sender login check off.
    pub sender_login_maps: String,
    pub auth_on_port_25: bool,
    pub client_checks: ClientChecks,
    pub configure_dovecot: bool,
}

/// An answer that cannot be used, tied to the question it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid answer to {question}: {value:?}: {problem}\n  fix: {fix}")]
pub struct AnswerError {
    pub question: &'static str,
    pub value: String,
    pub problem: String,
    pub fix: String,
}

impl AnswerError {
    /// Builds an error whose fix names both ways to change the answer.
    pub fn new(question: &'static str, value: &str, problem: impl Into<String>) -> AnswerError {
        AnswerError {
            question,
            value: value.to_string(),
            problem: problem.into(),
            fix: fix_hint(question),
        }
    }

    /// Replaces the generic fix with a more specific one.
    pub fn with_fix(mut self, fix: impl Into<String>) -> AnswerError {
        self.fix = fix.into();
        self
    }
}

/// Tells the admin how to change the answer to `question`, interactively or by preseeding.
pub fn fix_hint(question: &str) -> String {
    format!(
        "set a valid answer with \
         'echo \"{PACKAGE} {question} {} VALUE\" | debconf-set-selections', then run \
         'dpkg --configure -a' if the installation stopped here, or else \
         'dpkg-reconfigure {PACKAGE}' (add -fnoninteractive to keep the new answer)",
        question_type(question)
    )
}

fn question_type(question: &str) -> &'static str {
    match question {
        Q_SERVICES => "multiselect",
        Q_AUTH_ON_PORT_25 | Q_CONFIGURE_DOVECOT => "boolean",
        Q_CLIENT_CHECKS => "select",
        _ => "string",
    }
}

impl Answers {
    /// Parses raw debconf values, looked up by question name through `get`.
    ///
    /// Every question is read and checked before any error is returned, so that the
    /// first error reported is the first question in asking order.
    pub fn from_raw<E>(
        mut get: impl FnMut(&'static str) -> Result<String, E>,
    ) -> Result<Result<Answers, AnswerError>, E> {
        let mut raw = Vec::with_capacity(QUESTIONS.len());
        for question in QUESTIONS {
            raw.push(get(question)?);
        }
        Ok(Answers::parse(&raw))
    }

    fn parse(raw: &[String]) -> Result<Answers, AnswerError> {
        for (question, value) in QUESTIONS.iter().zip(raw) {
            reject_control_characters(question, value)?;
        }
        Ok(Answers {
            services: parse_services(&raw[0])?,
            tls_cert_file: parse_path(Q_TLS_CERT_FILE, &raw[1])?,
            tls_key_file: parse_path(Q_TLS_KEY_FILE, &raw[2])?,
            sender_login_maps: parse_maps(&raw[3])?,
            auth_on_port_25: parse_boolean(Q_AUTH_ON_PORT_25, &raw[4])?,
            client_checks: parse_client_checks(&raw[5])?,
            configure_dovecot: parse_boolean(Q_CONFIGURE_DOVECOT, &raw[6])?,
        })
    }

    /// Returns the answers as debconf stores them, in asking order.
    pub fn to_raw(&self) -> Vec<(&'static str, String)> {
        let services: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        vec![
            (Q_SERVICES, services.join(", ")),
            (Q_TLS_CERT_FILE, self.tls_cert_file.clone()),
            (Q_TLS_KEY_FILE, self.tls_key_file.clone()),
            (Q_SENDER_LOGIN_MAPS, self.sender_login_maps.clone()),
            (Q_AUTH_ON_PORT_25, self.auth_on_port_25.to_string()),
            (Q_CLIENT_CHECKS, self.client_checks.name().to_string()),
            (Q_CONFIGURE_DOVECOT, self.configure_dovecot.to_string()),
        ]
    }
}

fn reject_control_characters(question: &'static str, value: &str) -> Result<(), AnswerError> {
    match value.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(AnswerError::new(
            question,
            value,
            format!(
                "contains the control character U+{:04X}; answers must be one line",
                c as u32
            ),
        )),
    }
}

/// Parses a multiselect value: debconf joins the choices with ", ".
fn parse_services(value: &str) -> Result<BTreeSet<Service>, AnswerError> {
    let mut services = BTreeSet::new();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match Service::parse(word) {
            Some(service) => services.insert(service),
            None => {
                return Err(AnswerError::new(
                    Q_SERVICES,
                    value,
                    format!("unknown service {word:?}; the choices are submission and submissions"),
                ))
            }
        };
    }
    Ok(services)
}

fn parse_path(question: &'static str, value: &str) -> Result<String, AnswerError> {
    let path = value.trim();
    // A path may start with a $name reference, such as $config_directory/cert.pem, which
    // Postfix expands; the preflight checks the expanded path.
    if path.is_empty() || path.starts_with('/') || path.starts_with('$') {
        return Ok(path.to_string());
    }
    Err(AnswerError::new(
        question,
        value,
        "not an absolute path; give the full path, or leave it empty for automatic",
    ))
}

/// Checks the syntax of a list of lookup tables: `type:name`, separated by commas or
/// whitespace, as Postfix accepts for smtpd_sender_login_maps.
fn parse_maps(value: &str) -> Result<String, AnswerError> {
    let value_trimmed = value.trim();
    for table in split_list(value_trimmed) {
        let Some((kind, name)) = split_table(table) else {
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("{table:?} is not a lookup table of the form type:name"),
            )
            .with_fix(format!(
                "give tables such as mysql:/etc/postfix/mysql-email2email.cf or \
                 hash:/etc/postfix/sender_login, or leave it empty; {}",
                fix_hint(Q_SENDER_LOGIN_MAPS)
            )));
        };
        let opened = table.matches('{').count();
        if opened != table.matches('}').count() {
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("{table:?} has unbalanced braces; write inline tables as inline:{{ key=value }}"),
            ));
        }
        if kind.is_empty() || name.is_empty() {
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("{table:?} has an empty table type or name"),
            ));
        }
    }
    Ok(value_trimmed.to_string())
}

/// Splits a Postfix list value on commas and whitespace, keeping `{...}` groups whole.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in value.char_indices() {
        let separator = depth == 0 && (c == ',' || c.is_whitespace());
        if separator {
            if let Some(s) = start.take() {
                items.push(&value[s..i]);
            }
            continue;
        }
        if start.is_none() {
            start = Some(i);
        }
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if let Some(s) = start {
        items.push(&value[s..]);
    }
    items
}

/// Splits `type:name`, looking through `proxy:` to the table proxymap opens.
pub fn split_table(table: &str) -> Option<(&str, &str)> {
    let (kind, name) = table.split_once(':')?;
    if kind == "proxy" {
        return split_table(name);
    }
    Some((kind, name))
}

fn parse_boolean(question: &'static str, value: &str) -> Result<bool, AnswerError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(AnswerError::new(
            question,
            value,
            "not a boolean; use true or false",
        )),
    }
}

fn parse_client_checks(value: &str) -> Result<ClientChecks, AnswerError> {
    match value.trim() {
        "strict" => Ok(ClientChecks::Strict),
        "standard" => Ok(ClientChecks::Standard),
        "unchanged" => Ok(ClientChecks::Unchanged),
        _ => Err(AnswerError::new(
            Q_CLIENT_CHECKS,
            value,
            "unknown choice; use strict, standard or unchanged",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(values: [&str; 7]) -> Result<Answers, AnswerError> {
        Answers::parse(&values.map(String::from))
    }

    const GOOD: [&str; 7] = [
        "submission, submissions",
        "",
        "",
        "mysql:/etc/postfix/mysql-email2email.cf",
        "false",
        "standard",
        "true",
    ];

    #[test]
    fn parse_good_answers() {
        let answers = raw(GOOD).unwrap();
        assert_eq!(answers.services, BTreeSet::from(Service::ALL));
        assert_eq!(
            answers.sender_login_maps,
            "mysql:/etc/postfix/mysql-email2email.cf"
        );
        assert!(!answers.auth_on_port_25);
        assert_eq!(answers.client_checks, ClientChecks::Standard);
        assert!(answers.configure_dovecot);
    }

    #[test]
    fn raw_round_trip() {
        let answers = raw(GOOD).unwrap();
        let values: Vec<String> = answers.to_raw().into_iter().map(|(_, v)| v).collect();
        assert_eq!(Answers::parse(&values).unwrap(), answers);
    }

    #[test]
    fn services_may_be_empty_or_single() {
        let mut values = GOOD;
        values[0] = "";
        assert!(raw(values).unwrap().services.is_empty());
        values[0] = "submissions";
        assert_eq!(
            raw(values).unwrap().services,
            BTreeSet::from([Service::Submissions])
        );
    }

    #[test]
    fn unknown_service_names_question() {
        let mut values = GOOD;
        values[0] = "submission, smtps";
        let err = raw(values).unwrap_err();
        assert_eq!(err.question, Q_SERVICES);
        assert!(err.problem.contains("\"smtps\""), "{}", err.problem);
    }

    #[test]
    fn control_character_rejected() {
        let mut values = GOOD;
        values[1] = "/etc/ssl/a.pem\nsmtpd_tls_key_file = x";
        let err = raw(values).unwrap_err();
        assert_eq!(err.question, Q_TLS_CERT_FILE);
        assert!(err.problem.contains("U+000A"), "{}", err.problem);
        values[1] = "/etc/ssl/a\tb.pem";
        assert!(raw(values).is_err());
    }

    #[test]
    fn relative_cert_path_rejected() {
        let mut values = GOOD;
        values[2] = "privkey.pem";
        let err = raw(values).unwrap_err();
        assert_eq!(err.question, Q_TLS_KEY_FILE);
        assert!(
            err.fix.contains("dpkg-reconfigure postfix-submission"),
            "{}",
            err.fix
        );
    }

    #[test]
    fn map_without_type_rejected() {
        let mut values = GOOD;
        values[3] = "/etc/postfix/sender_login";
        let err = raw(values).unwrap_err();
        assert_eq!(err.question, Q_SENDER_LOGIN_MAPS);
        values[3] = "hash:";
        assert!(raw(values).is_err());
    }

    #[test]
    fn map_with_unbalanced_braces_rejected() {
        let mut values = GOOD;
        values[3] = "inline:{ a@example.test=a";
        let err = raw(values).unwrap_err();
        assert!(err.problem.contains("unbalanced braces"), "{}", err.problem);
    }

    #[test]
    fn dollar_path_accepted() {
        let mut values = GOOD;
        values[1] = "${config_directory}/cert.pem";
        assert_eq!(
            raw(values).unwrap().tls_cert_file,
            "${config_directory}/cert.pem"
        );
    }

    #[test]
    fn map_lists_accepted() {
        let mut values = GOOD;
        values[3] = "hash:/etc/postfix/a, proxy:mysql:/etc/postfix/b.cf inline:{ a@b=c }";
        assert!(raw(values).is_ok());
        values[3] = "";
        assert_eq!(raw(values).unwrap().sender_login_maps, "");
    }

    #[test]
    fn bad_boolean_and_choice_rejected() {
        let mut values = GOOD;
        values[4] = "yes";
        assert_eq!(raw(values).unwrap_err().question, Q_AUTH_ON_PORT_25);
        let mut values = GOOD;
        values[5] = "paranoid";
        assert_eq!(raw(values).unwrap_err().question, Q_CLIENT_CHECKS);
    }

    #[test]
    fn split_list_keeps_braces() {
        assert_eq!(
            split_list("a, b  c,{ x, y },d"),
            vec!["a", "b", "c", "{ x, y }", "d"]
        );
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn split_table_looks_through_proxy() {
        assert_eq!(split_table("proxy:mysql:/x.cf"), Some(("mysql", "/x.cf")));
        assert_eq!(split_table("hash:/etc/a"), Some(("hash", "/etc/a")));
        assert_eq!(split_table("nocolon"), None);
    }

    #[test]
    fn error_message_names_question_value_and_fix() {
        let err = AnswerError::new(Q_TLS_CERT_FILE, "/x.pem", "file not found");
        let text = err.to_string();
        assert!(text.contains(Q_TLS_CERT_FILE), "{text}");
        assert!(text.contains("\"/x.pem\""), "{text}");
        assert!(text.contains("debconf-set-selections"), "{text}");
    }
}
