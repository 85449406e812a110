//! `postfix-submission status`: what the package manages and whether each setting still
//! holds the value it applied, for a person (text) or a script (JSON).

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::commands::Locations;
use crate::dovecot::Dovecot;
use crate::plan::same_parameter;
use crate::postfix::Postfix;
use crate::preflight;
use crate::state::{Change, StateDir};

#[derive(Debug, Serialize)]
struct Status {
    state_file: String,
    configured: bool,
    /// True when a run was interrupted before it finished.
    interrupted: bool,
    settings: Vec<SettingStatus>,
    services: Vec<ServiceStatus>,
    auth_socket: SocketStatus,
    certificate: CertificateStatus,
}

#[derive(Debug, Serialize)]
struct SettingStatus {
    /// A main.cf parameter, or `service/type/name` for a master.cf option.
    name: String,
    file: &'static str,
    applied: String,
    current: Option<String>,
    original: Option<String>,
    /// True when the file no longer holds the applied value.
    drift: bool,
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    entry: String,
    port: Option<u16>,
    created_by_package: bool,
    present: bool,
}

#[derive(Debug, Serialize)]
struct SocketStatus {
    path: String,
    exists: bool,
    snippet: Option<String>,
}

#[derive(Debug, Serialize)]
struct CertificateStatus {
    cert_file: String,
    key_file: String,
    subject: Option<String>,
    not_after: Option<String>,
    key_matches: Option<bool>,
    error: Option<String>,
}

/// Prints the status as text or JSON.
pub fn show(locations: &Locations, json: bool, out: &mut dyn Write) -> Result<()> {
    let status = collect(locations)?;
    if json {
        let text = serde_json::to_string_pretty(&status).expect("status serializes");
        writeln!(out, "{text}").context("failed to write the status")
    } else {
        write_text(&status, out).context("failed to write the status")
    }
}

fn collect(locations: &Locations) -> Result<Status> {
    let postfix = Postfix::new(&locations.postfix_config_dir);
    let dovecot = Dovecot::new(&locations.dovecot_config);
    let state = StateDir::new(&locations.state_dir);
    let record = state.load()?;
    let parameters = postfix.explicit_parameters()?;
    let entries = postfix.master_entries()?;

    let mut settings = Vec::new();
    for (name, change) in &record.parameters {
        settings.push(setting(name, "main.cf", change, parameters.get(name)));
    }
    for (name, change) in &record.options {
        let (key, option) = name.rsplit_once('/').unwrap_or((name, ""));
        let current = entries.get(key).and_then(|e| e.options.get(option));
        settings.push(setting(name, "master.cf", change, current));
    }
    let services = record
        .entries
        .iter()
        .map(|(key, entry)| ServiceStatus {
            entry: key.clone(),
            port: service_port(key),
            created_by_package: entry.created,
            present: entries.contains_key(key),
        })
        .collect();
    let queue = postfix.expanded_parameter("queue_directory")?;
    let socket = Path::new(&queue).join("private/auth");
    let auth_socket = SocketStatus {
        exists: socket.metadata().is_ok_and(|m| m.file_type().is_socket()),
        path: socket.display().to_string(),
        snippet: dovecot
            .read_snippet()?
            .map(|_| dovecot.snippet_path().display().to_string()),
    };
    Ok(Status {
        state_file: state.path().display().to_string(),
        configured: !record.is_empty(),
        interrupted: record.pending,
        settings,
        services,
        auth_socket,
        certificate: certificate(&postfix),
    })
}

fn setting(
    name: &str,
    file: &'static str,
    change: &Change,
    current: Option<&String>,
) -> SettingStatus {
    let compare = if file == "main.cf" {
        same_parameter(name)
    } else {
        |a: &str, b: &str| a == b
    };
    SettingStatus {
        name: name.to_string(),
        file,
        applied: change.applied.clone(),
        current: current.cloned(),
        original: change.original.clone(),
        drift: !current.is_some_and(|c| compare(c, &change.applied)),
    }
}

fn service_port(key: &str) -> Option<u16> {
    match key.split('/').next()? {
        "submission" => Some(587),
        "submissions" | "smtps" => Some(465),
        name => name.rsplit(':').next()?.parse().ok(),
    }
}

fn certificate(postfix: &Postfix) -> CertificateStatus {
    let cert = postfix
        .expanded_parameter("smtpd_tls_cert_file")
        .unwrap_or_default();
    let key = postfix
        .expanded_parameter("smtpd_tls_key_file")
        .unwrap_or_default();
    let mut status = CertificateStatus {
        cert_file: cert.clone(),
        key_file: key.clone(),
        subject: None,
        not_after: None,
        key_matches: None,
        error: None,
    };
    match preflight::certificate_facts(&cert, &key) {
        Ok(facts) => {
            status.subject = Some(facts.subject);
            status.not_after = Some(facts.not_after);
            status.key_matches = Some(facts.key_matches);
        }
        Err(e) => status.error = Some(e),
    }
    status
}

fn write_text(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    if !status.configured {
        writeln!(
            out,
            "postfix-submission has not configured anything ({} is empty or missing)",
            status.state_file
        )?;
    }
    if status.interrupted {
        writeln!(out, "warning: the last run was interrupted; run 'dpkg --configure -a' or 'postfix-submission apply'")?;
    }
    writeln!(out, "Services:")?;
    for service in &status.services {
        let port = service
            .port
            .map(|p| format!("port {p}"))
            .unwrap_or_else(|| "port unknown".into());
        let origin = if service.created_by_package {
            "added by the package"
        } else {
            "the admin's entry"
        };
        let presence = if service.present {
            "active"
        } else {
            "MISSING from master.cf"
        };
        writeln!(out, "  {:<20} {port}, {origin}, {presence}", service.entry)?;
    }
    writeln!(out, "Settings:")?;
    for s in &status.settings {
        let current = s.current.as_deref().unwrap_or("(unset)");
        if s.drift {
            writeln!(
                out,
                "  {} ({}): CHANGED BY HAND to {current}; applied {}",
                s.name, s.file, s.applied
            )?;
        } else {
            writeln!(out, "  {} ({}) = {current}", s.name, s.file)?;
        }
    }
    let socket = &status.auth_socket;
    let exists = if socket.exists {
        "present"
    } else {
        "MISSING (is Dovecot running?)"
    };
    writeln!(out, "Auth socket: {} ({exists})", socket.path)?;
    if let Some(snippet) = &socket.snippet {
        writeln!(out, "  listener added by {snippet}")?;
    }
    let cert = &status.certificate;
    writeln!(out, "Certificate: {}", cert.cert_file)?;
    writeln!(out, "  key: {}", cert.key_file)?;
    if let Some(error) = &cert.error {
        writeln!(out, "  problem: {error}")?;
    }
    if let (Some(subject), Some(not_after)) = (&cert.subject, &cert.not_after) {
        writeln!(out, "  subject: {subject}")?;
        writeln!(out, "  expires: {not_after}")?;
    }
    if let Some(matches) = cert.key_matches {
        writeln!(out, "  key matches: {}", if matches { "yes" } else { "NO" })?;
    }
    Ok(())
}
