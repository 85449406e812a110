//! Checks of the answers against the system, made before anything is written: the
//! certificate and key, the sender login tables, and Dovecot's auth socket.
//!
//! Every failure is an [`AnswerError`] that names the question, so the admin learns which
//! answer to change.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::answers::{
    split_list, split_table, AnswerError, Answers, Q_CONFIGURE_DOVECOT, Q_SENDER_LOGIN_MAPS,
    Q_TLS_CERT_FILE, Q_TLS_KEY_FILE,
};
use crate::dovecot::Dovecot;
use crate::postfix::Postfix;

/// Debian's self-signed certificate from the ssl-cert package.
pub const SNAKEOIL_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
pub const SNAKEOIL_KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";

/// What the answers resolve to on this system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Dovecot's auth socket for Postfix: queue_directory/private/auth.
    pub auth_socket: PathBuf,
}

/// The places searched for automatic certificate paths.
#[derive(Debug, Clone)]
pub struct CertSources {
    /// Let's Encrypt's live directory, normally /etc/letsencrypt/live.
    pub letsencrypt_live: PathBuf,
}

/// Resolves automatic answers without checking anything, so that earlier answers can be
/// rendered for comparison.
pub fn resolve(answers: &Answers, postfix: &Postfix, sources: &CertSources) -> Result<Resolved> {
    let hostname = postfix.expanded_parameter("myhostname")?;
    let live = sources.letsencrypt_live.join(&hostname);
    let cert = resolve_path(&answers.tls_cert_file, &live.join("fullchain.pem"), || {
        postfix.parameter("smtpd_tls_cert_file")
    })?;
    let key = resolve_path(&answers.tls_key_file, &live.join("privkey.pem"), || {
        postfix.parameter("smtpd_tls_key_file")
    })?;
    let queue = postfix.expanded_parameter("queue_directory")?;
    Ok(Resolved {
        tls_cert_file: cert,
        tls_key_file: key,
        auth_socket: Path::new(&queue).join("private/auth"),
    })
}

fn resolve_path(
    answer: &str,
    letsencrypt: &Path,
    current: impl FnOnce() -> Result<String>,
) -> Result<String> {
    if !answer.is_empty() {
        return Ok(answer.to_string());
    }
    if letsencrypt.is_file() {
        return Ok(letsencrypt.display().to_string());
    }
    current()
}

/// Resolves the answers and checks them all; the first problem found is returned.
pub fn check(
    answers: &Answers,
    postfix: &Postfix,
    dovecot: &Dovecot,
    sources: &CertSources,
) -> Result<Result<Resolved, AnswerError>> {
    let resolved = resolve(answers, postfix, sources)?;
    let expand = |path: &str| postfix_expand(postfix, path);
    if let Err(e) = check_certificate(answers, &resolved, expand) {
        return Ok(Err(e));
    }
    if let Err(e) = check_maps(&answers.sender_login_maps, &postfix.map_types()?) {
        return Ok(Err(e));
    }
    if let Err(e) = check_auth_socket(answers, dovecot, &resolved.auth_socket)? {
        return Ok(Err(e));
    }
    Ok(Ok(resolved))
}

/// Expands `$name` references in a path the way Postfix would, for the few paths that
/// contain them (such as `$config_directory/cert.pem`).
fn postfix_expand(postfix: &Postfix, path: &str) -> String {
    if !path.contains('$') {
        return path.to_string();
    }
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            (&inner[..end], inner.get(end + 1..).unwrap_or(""))
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(&postfix.expanded_parameter(name).unwrap_or_default());
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn describe_choice(answer: &str, resolved: &str) -> String {
    if answer.is_empty() {
        format!("the automatic choice {resolved}")
    } else if answer != resolved {
        format!("{answer} (that is, {resolved})")
    } else {
        resolved.to_string()
    }
}

fn check_certificate(
    answers: &Answers,
    resolved: &Resolved,
    expand: impl Fn(&str) -> String,
) -> Result<(), AnswerError> {
    let cert = expand(&resolved.tls_cert_file);
    let key = expand(&resolved.tls_key_file);
    let cert_error =
        |problem: String| AnswerError::new(Q_TLS_CERT_FILE, &answers.tls_cert_file, problem);
    let key_error =
        |problem: String| AnswerError::new(Q_TLS_KEY_FILE, &answers.tls_key_file, problem);
    let cert_name = describe_choice(&answers.tls_cert_file, &cert);
    let key_name = describe_choice(&answers.tls_key_file, &key);

    if cert.is_empty() {
        return Err(cert_error(
            "no certificate: the answer is empty (automatic), but there is no Let's Encrypt \
             certificate for myhostname and main.cf names no smtpd_tls_cert_file (the \
             package does not read smtpd_tls_chain_files)"
                .into(),
        ));
    }
    if key.is_empty() {
        return Err(key_error(
            "no private key: the answer is empty (automatic), but there is no Let's Encrypt \
             key for myhostname and main.cf names no smtpd_tls_key_file"
                .into(),
        ));
    }
    check_readable(&cert).map_err(|p| cert_error(format!("{cert_name}: {p}")))?;
    check_readable(&key).map_err(|p| key_error(format!("{key_name}: {p}")))?;
    let cert_public = openssl_public_key(&["x509", "-noout", "-pubkey", "-in", &cert])
        .map_err(|p| cert_error(format!("{cert_name} is not a PEM certificate: {p}")))?;
    let key_public = openssl_public_key(&["pkey", "-pubout", "-passin", "pass:", "-in", &key])
        .map_err(|p| {
            key_error(format!(
                "{key_name} is not an unencrypted PEM private key: {p}"
            ))
        })?;
    if cert_public != key_public {
        return Err(key_error(format!(
            "{key_name} is not the private key of {cert}"
        )));
    }
    Ok(())
}

fn check_readable(path: &str) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|e| describe_io_error(&e))?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    File::open(path)
        .map(drop)
        .map_err(|e| describe_io_error(&e))
}

fn describe_io_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "file not found".into(),
        std::io::ErrorKind::PermissionDenied if !nix::unistd::geteuid().is_root() => {
            "permission denied (run as root)".into()
        }
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}

/// Runs openssl and returns the public key it prints. The key file's content never
/// leaves openssl: only its public half is read back.
fn openssl_public_key(args: &[&str]) -> Result<String, String> {
    let output = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("failed to run openssl ({e}); install the openssl package"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .next()
            .unwrap_or("openssl failed")
            .trim()
            .to_string();
        return Err(first);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A certificate's subject and expiry, and whether the key belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    pub subject: String,
    pub not_after: String,
    pub key_matches: bool,
}

/// Reads a certificate's facts with openssl; the error is a one-line description.
pub fn certificate_facts(cert: &str, key: &str) -> Result<CertificateFacts, String> {
    if cert.is_empty() {
        return Err("main.cf names no smtpd_tls_cert_file".into());
    }
    check_readable(cert).map_err(|p| format!("{cert}: {p}"))?;
    let text = openssl_public_key(&["x509", "-noout", "-subject", "-enddate", "-in", cert])
        .map_err(|p| format!("{cert}: {p}"))?;
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let cert_public = openssl_public_key(&["x509", "-noout", "-pubkey", "-in", cert])?;
    let key_public = check_readable(key)
        .and_then(|()| openssl_public_key(&["pkey", "-pubout", "-passin", "pass:", "-in", key]));
    Ok(CertificateFacts {
        subject: field("subject="),
        not_after: field("notAfter="),
        key_matches: key_public.is_ok_and(|k| k == cert_public),
    })
}

/// Table types whose name is a file that must exist, and the suffix postmap adds.
fn table_file(kind: &str, name: &str) -> Option<String> {
    match kind {
        "hash" | "btree" => Some(format!("{name}.db")),
        "lmdb" => Some(format!("{name}.lmdb")),
        "cdb" => Some(format!("{name}.cdb")),
        "texthash" | "regexp" | "pcre" | "cidr" | "mysql" | "pgsql" | "ldap" | "sqlite"
        | "memcache" => Some(name.to_string()),
        _ => None,
    }
}

/// Debian's package for each table type that is not built into postfix itself.
fn table_package(kind: &str) -> Option<&'static str> {
    match kind {
        "mysql" => Some("postfix-mysql"),
        "pgsql" => Some("postfix-pgsql"),
        "ldap" => Some("postfix-ldap"),
        "sqlite" => Some("postfix-sqlite"),
        "lmdb" => Some("postfix-lmdb"),
        "cdb" => Some("postfix-cdb"),
        "pcre" => Some("postfix-pcre"),
        _ => None,
    }
}

fn check_maps(value: &str, supported: &[String]) -> Result<(), AnswerError> {
    for table in split_list(value) {
        let (kind, name) = split_table(table).expect("syntax checked when parsing answers");
        if !supported.iter().any(|s| s == kind) {
            let install = table_package(kind)
                .map(|p| format!("install {p}, or "))
                .unwrap_or_default();
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("table type {kind:?} is not supported by this Postfix (postconf -m)"),
            )
            .with_fix(format!(
                "{install}choose a supported type; {}",
                crate::answers::fix_hint(Q_SENDER_LOGIN_MAPS)
            )));
        }
        let Some(file) = table_file(kind, name) else {
            continue;
        };
        if !file.starts_with('/') {
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("{table}: the table name must be an absolute path"),
            ));
        }
        if Path::new(&file).exists() && !Path::new(&file).is_file() {
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("{table}: {file} is not a regular file"),
            ));
        }
        if !Path::new(&file).is_file() {
            let hint = if file == name {
                String::new()
            } else {
                format!("; run 'postmap {name}'")
            };
            return Err(AnswerError::new(
                Q_SENDER_LOGIN_MAPS,
                value,
                format!("{table}: {file} not found{hint}"),
            ));
        }
    }
    Ok(())
}

fn check_auth_socket(
    answers: &Answers,
    dovecot: &Dovecot,
    socket: &Path,
) -> Result<Result<(), AnswerError>> {
    if answers.configure_dovecot {
        if !dovecot.is_installed() {
            return Ok(Err(AnswerError::new(
                Q_CONFIGURE_DOVECOT,
                "true",
                format!(
                    "Dovecot's configuration {} is missing; install dovecot-core",
                    dovecot.config().display()
                ),
            )));
        }
        return Ok(Ok(()));
    }
    let configured = dovecot.is_installed()
        && dovecot
            .listener_configured(socket)
            .context("failed to read Dovecot's settings")?;
    if configured || socket.exists() {
        return Ok(Ok(()));
    }
    Ok(Err(AnswerError::new(
        Q_CONFIGURE_DOVECOT,
        "false",
        format!(
            "Postfix needs Dovecot's auth socket {}, but Dovecot has no unix_listener for it \
             and the socket does not exist",
            socket.display()
        ),
    )
    .with_fix(format!(
        "answer true so that the package adds the listener, or add it to Dovecot's \
         'service auth' yourself; {}",
        crate::answers::fix_hint(Q_CONFIGURE_DOVECOT)
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> Vec<String> {
        ["hash", "texthash", "inline", "proxy"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn maps_unsupported_type_names_package() {
        let err = check_maps("mysql:/etc/postfix/x.cf", &supported()).unwrap_err();
        assert_eq!(err.question, Q_SENDER_LOGIN_MAPS);
        assert!(err.fix.contains("postfix-mysql"), "{}", err.fix);
    }

    #[test]
    fn maps_missing_file_suggests_postmap() {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("sender_login");
        std::fs::write(&name, "a@b a\n").unwrap();
        let value = format!("hash:{}", name.display());
        let err = check_maps(&value, &supported()).unwrap_err();
        assert!(err.problem.contains("postmap"), "{}", err.problem);
        std::fs::write(dir.path().join("sender_login.db"), "").unwrap();
        assert!(check_maps(&value, &supported()).is_ok());
        assert!(check_maps(&format!("texthash:{}", name.display()), &supported()).is_ok());
    }

    #[test]
    fn maps_relative_and_inline() {
        assert!(check_maps("texthash:relative/file", &supported()).is_err());
        assert!(check_maps("inline:{ a@b.example=a }", &supported()).is_ok());
        assert!(check_maps("", &supported()).is_ok());
    }

    #[test]
    fn resolve_path_prefers_answer_then_letsencrypt() {
        let dir = tempfile::tempdir().unwrap();
        let le = dir.path().join("fullchain.pem");
        let current = || Ok("/current.pem".to_string());
        assert_eq!(
            resolve_path("/answer.pem", &le, current).unwrap(),
            "/answer.pem"
        );
        assert_eq!(resolve_path("", &le, current).unwrap(), "/current.pem");
        std::fs::write(&le, "x").unwrap();
        assert_eq!(
            resolve_path("", &le, current).unwrap(),
            le.display().to_string()
        );
    }

    #[test]
    fn readable_reports_missing_and_directory() {
        assert_eq!(
            check_readable("/nonexistent/x.pem").unwrap_err(),
            "file not found"
        );
        assert_eq!(check_readable("/").unwrap_err(), "not a regular file");
    }
}
