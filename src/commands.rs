//! The subcommands: `apply` reads the answers and brings the configuration in line with
//! them, `remove` reverts everything the package changed.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::answers::{
    Answers, Q_AUTH_ON_PORT_25, Q_SENDER_LOGIN_MAPS, Q_TLS_CERT_FILE, Q_TLS_KEY_FILE,
};
use crate::apply::{decide_snippet, write_diff, Changed, SnippetAction, Target};
use crate::dovecot::Dovecot;
use crate::plan::{self, Current, KeptEdit, Plan};
use crate::postfix::Postfix;
use crate::preflight::{self, CertSources};
use crate::render::{Desired, Inputs, Templates};
use crate::state::{Record, SnippetRecord, StateDir};

/// The files and directories the program works on. The defaults are the installed locations.
#[derive(Debug, Clone)]
pub struct Locations {
    pub postfix_config_dir: PathBuf,
    pub dovecot_config: PathBuf,
    pub state_dir: PathBuf,
    pub templates_dir: PathBuf,
    pub letsencrypt_live: PathBuf,
    /// False to write without reloading Postfix or Dovecot.
    pub reload: bool,
}

impl Locations {
    fn target(&self) -> Target {
        Target {
            postfix: Postfix::new(&self.postfix_config_dir),
            dovecot: Dovecot::new(&self.dovecot_config),
            state: StateDir::new(&self.state_dir),
        }
    }
}

/// A store of answers by question name: debconf, or a stand-in for it.
pub trait AnswerStore {
    fn get(&mut self, question: &'static str) -> Result<String>;
    fn set(&mut self, question: &'static str, value: &str) -> Result<()>;
}

/// Reads the answers, checks them, and writes what differs.
pub fn apply(
    locations: &Locations,
    store: &mut dyn AnswerStore,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let answers = Answers::from_raw(|q| store.get(q))??;
    let target = locations.target();
    let _lock = if dry_run {
        None
    } else {
        Some(target.state.lock()?)
    };
    let templates = Templates::load(&locations.templates_dir)?;
    let sources = CertSources {
        letsencrypt_live: locations.letsencrypt_live.clone(),
    };
    let record = target.state.load()?;
    let version = target.postfix.mail_version()?;

    let resolved = preflight::check(&answers, &target.postfix, &target.dovecot, &sources)??;
    if !target
        .postfix
        .parameter("smtpd_tls_chain_files")?
        .trim()
        .is_empty()
    {
        log::warn!(
            "main.cf sets smtpd_tls_chain_files, which Postfix uses instead of \
             smtpd_tls_cert_file and smtpd_tls_key_file: the certificate checked and \
             configured here is not the one Postfix presents"
        );
    }
    if resolved.tls_cert_file == preflight::SNAKEOIL_CERT {
        log::warn!(
            "Postfix presents Debian's self-signed snakeoil certificate, which mail programs \
             warn about or reject; set postfix-submission/tls_cert_file and tls_key_file to \
             a certificate for {} (for example from Let's Encrypt)",
            target.postfix.expanded_parameter("myhostname")?
        );
    }
    let current = read_current(&target.postfix, &record)?;
    let chroot = smtpd_chroot(&current);
    let mut inputs = Inputs::new(
        &answers,
        &resolved.tls_cert_file,
        &resolved.tls_key_file,
        version,
        &resolved.auth_socket,
    );
    inputs.smtpd_chroot = chroot.clone();
    let mut notices = Vec::new();
    let mut desired = templates.desired(&inputs)?;
    let mut current = current;
    add_unlisted_parameters(&mut current, &target.postfix, desired.parameters.keys())?;
    plan::use_existing_entries(&mut desired, &current, &record, &mut notices);
    let facts = (version, chroot.as_str());
    let mut before = render_before(&record, &templates, &target.postfix, &sources, facts);
    if let Some(before) = before.as_mut() {
        plan::use_existing_entries(before, &current, &record, &mut Vec::new());
    }
    let mut plan = plan::compute(&desired, before.as_ref(), &current, &record);
    plan.notices.splice(0..0, notices);

    let snippet = plan_snippet(&answers, &inputs, &templates, &target, &record, &mut plan)?;
    let adopted = adopt_kept_edits(&answers, &plan.kept_edits);
    plan.record.answers = Some(adopted.clone());
    plan.record.pending = false;
    for notice in &plan.notices {
        log::warn!("{notice}");
    }
    if dry_run {
        return show_diff(&target, &plan, &snippet, out);
    }
    let mut changed = target.execute(&plan, &snippet, &record, &[None, None])?;
    if record.pending {
        // An interrupted run may have written settings without reloading anything.
        changed = Changed {
            postfix: true,
            dovecot: true,
        };
    }
    store_adopted_answers(store, &answers, &adopted)?;
    report(&plan, changed);
    if locations.reload {
        target.reload(changed);
    }
    Ok(())
}

/// Reverts every change the record holds, and deletes the record.
pub fn remove(locations: &Locations, dry_run: bool, out: &mut dyn Write) -> Result<()> {
    let target = locations.target();
    let _lock = if dry_run {
        None
    } else {
        Some(target.state.lock()?)
    };
    let record = target.state.load()?;
    if record.is_empty() {
        log::info!(
            "nothing to revert: {} records no change",
            target.state.path().display()
        );
        if !dry_run {
            target.state.remove_all()?;
        }
        return Ok(());
    }
    let current = read_current(&target.postfix, &record)?;
    let mut plan = plan::compute(&Desired::default(), None, &current, &record);
    let existing = target.dovecot.read_snippet()?;
    let snippet = if existing.is_some() && record.dovecot_snippet.is_some() {
        SnippetAction::Delete
    } else {
        SnippetAction::Keep
    };
    plan.record = Record::default();
    for notice in &plan.notices {
        log::warn!("{notice}");
    }
    if dry_run {
        return show_diff(&target, &plan, &snippet, out);
    }
    let restore = target.restorable_originals()?;
    let changed = target.execute(&plan, &snippet, &record, &restore)?;
    target.state.remove_all()?;
    report(&plan, changed);
    if locations.reload {
        target.reload(changed);
    }
    Ok(())
}

/// Reads main.cf and master.cf. `postconf -n` leaves out parameters that nothing uses,
/// such as the package's mua_* lists once their services are gone, so the parameters in
/// the record that it did not list are looked up in main.cf itself.
fn read_current(postfix: &Postfix, record: &Record) -> Result<Current> {
    let mut current = Current {
        parameters: postfix.explicit_parameters()?,
        defaults: postfix.default_parameters()?,
        entries: postfix.master_entries()?,
    };
    add_unlisted_parameters(&mut current, postfix, record.parameters.keys())?;
    Ok(current)
}

/// Adds those of `names` that main.cf sets but `postconf -n` did not list.
fn add_unlisted_parameters<'a>(
    current: &mut Current,
    postfix: &Postfix,
    names: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let unlisted: Vec<&str> = names
        .filter(|name| !current.parameters.contains_key(*name))
        .map(String::as_str)
        .collect();
    if !unlisted.is_empty() {
        current
            .parameters
            .extend(postfix.unused_parameters(&unlisted)?);
    }
    Ok(())
}

/// Renders the answers of the last complete run with today's templates, so that the plan
/// can tell which settings a changed answer drives. `None` when there was no such run or
/// its answers no longer resolve.
fn render_before(
    record: &Record,
    templates: &Templates,
    postfix: &Postfix,
    sources: &CertSources,
    (version, chroot): (crate::postfix::Version, &str),
) -> Option<Desired> {
    let answers = record.answers.as_ref()?;
    let resolved = preflight::resolve(answers, postfix, sources).ok()?;
    let mut inputs = Inputs::new(
        answers,
        &resolved.tls_cert_file,
        &resolved.tls_key_file,
        version,
        &resolved.auth_socket,
    );
    inputs.smtpd_chroot = chroot.to_string();
    templates.desired(&inputs).ok()
}

/// Returns the chroot column of the port-25 smtpd entry, so that the submission services
/// run chrooted exactly when it does (lookup tables that use a socket outside the queue
/// directory, such as mysql on localhost, work only without chroot).
fn smtpd_chroot(current: &Current) -> String {
    current
        .entries
        .get("smtp/inet")
        .and_then(|entry| entry.fields.split_whitespace().nth(4))
        .unwrap_or("y")
        .to_string()
}

/// Decides the Dovecot snippet and records it in the plan's record.
fn plan_snippet(
    answers: &Answers,
    inputs: &Inputs,
    templates: &Templates,
    target: &Target,
    record: &Record,
    plan: &mut Plan,
) -> Result<SnippetAction> {
    let path = target.dovecot.snippet_path();
    let existing = target.dovecot.read_snippet()?;
    let wanted = if answers.configure_dovecot {
        let ours = existing.is_some();
        let elsewhere = !ours && target.dovecot.listener_configured(&inputs_socket(inputs))?;
        if elsewhere {
            log::debug!("Dovecot already has a listener on {}", inputs.auth_socket);
            None
        } else {
            Some(templates.dovecot_snippet(inputs)?)
        }
    } else {
        None
    };
    let action = decide_snippet(
        wanted.as_deref(),
        existing.as_deref(),
        record.dovecot_snippet.as_ref(),
        &mut plan.notices,
        &path,
    );
    plan.record.dovecot_snippet = match (&action, existing) {
        (SnippetAction::Write(content), _) => Some(SnippetRecord {
            path,
            content: content.clone(),
        }),
        (SnippetAction::Delete, _) => None,
        (SnippetAction::Keep, Some(content)) if wanted.as_deref() == Some(content.as_str()) => {
            Some(SnippetRecord { path, content })
        }
        (SnippetAction::Keep, _) => record.dovecot_snippet.clone(),
    };
    Ok(action)
}

fn inputs_socket(inputs: &Inputs) -> PathBuf {
    PathBuf::from(&inputs.auth_socket)
}

/// Turns the hand-edited values of question-driven settings into answers, so that
/// `dpkg-reconfigure` offers them as defaults.
fn adopt_kept_edits(answers: &Answers, kept: &[KeptEdit]) -> Answers {
    let mut adopted = answers.clone();
    for edit in kept {
        let value = edit.value.clone().unwrap_or_default();
        match edit.name.as_str() {
            "smtpd_tls_cert_file" => adopted.tls_cert_file = value,
            "smtpd_tls_key_file" => adopted.tls_key_file = value,
            "smtpd_sender_login_maps" => adopted.sender_login_maps = value,
            "smtpd_sasl_auth_enable" => adopted.auth_on_port_25 = value.trim() == "yes",
            _ => {}
        }
    }
    adopted
}

fn store_adopted_answers(
    store: &mut dyn AnswerStore,
    answers: &Answers,
    adopted: &Answers,
) -> Result<()> {
    let changed: BTreeSet<&str> = answers
        .to_raw()
        .into_iter()
        .zip(adopted.to_raw())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0)
        .collect();
    for (question, value) in adopted.to_raw() {
        if !changed.contains(question) {
            continue;
        }
        debug_assert!([
            Q_TLS_CERT_FILE,
            Q_TLS_KEY_FILE,
            Q_SENDER_LOGIN_MAPS,
            Q_AUTH_ON_PORT_25
        ]
        .contains(&question));
        store
            .set(question, &value)
            .with_context(|| format!("failed to store the answer to {question}"))?;
        log::info!("set {question} to the hand-edited value, so dpkg-reconfigure offers it");
    }
    Ok(())
}

fn report(plan: &Plan, changed: Changed) {
    if !changed.postfix && !changed.dovecot {
        log::info!("the configuration is up to date; nothing was changed");
        return;
    }
    let counts = [
        (plan.set_parameters.len(), "main.cf parameter", "set"),
        (plan.delete_parameters.len(), "main.cf parameter", "deleted"),
        (plan.add_entries.len(), "master.cf entry", "added"),
        (plan.set_options.len(), "master.cf option", "set"),
        (plan.delete_options.len(), "master.cf option", "deleted"),
        (plan.delete_entries.len(), "master.cf entry", "deleted"),
    ];
    let parts: Vec<String> = counts
        .iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, what, verb)| format!("{n} {} {verb}", plural(what, *n)))
        .collect();
    if !parts.is_empty() {
        log::info!("changed Postfix's configuration: {}", parts.join(", "));
    }
    if changed.dovecot {
        log::info!("changed Dovecot's auth listener for Postfix");
    }
}

fn plural(noun: &str, count: usize) -> String {
    match (count, noun.strip_suffix('y')) {
        (1, _) => noun.to_string(),
        (_, Some(stem)) => format!("{stem}ies"),
        (_, None) => format!("{noun}s"),
    }
}

/// Prints what the plan would change as a unified diff, by running the same postconf
/// calls on copies of main.cf and master.cf in a temporary directory.
fn show_diff(
    target: &Target,
    plan: &Plan,
    snippet: &SnippetAction,
    out: &mut dyn Write,
) -> Result<()> {
    let scratch = tempfile::tempdir().context("failed to create a temporary directory")?;
    let mut any = false;
    for file in ["main.cf", "master.cf"] {
        let source = target.postfix.config_dir().join(file);
        fs::copy(&source, scratch.path().join(file))
            .with_context(|| format!("failed to copy {} for the dry run", source.display()))?;
    }
    let copy = Postfix::new(scratch.path());
    copy.set_parameters(&plan.set_parameters)?;
    copy.delete_parameters(&plan.delete_parameters)?;
    copy.add_entries(&plan.add_entries)?;
    copy.set_options(&plan.set_options)?;
    copy.delete_options(&plan.delete_options)?;
    copy.delete_entries(&plan.delete_entries)?;
    for file in ["main.cf", "master.cf"] {
        let name = target.postfix.config_dir().join(file).display().to_string();
        let before = fs::read_to_string(target.postfix.config_dir().join(file)).unwrap_or_default();
        let after = fs::read_to_string(scratch.path().join(file)).unwrap_or_default();
        any |= before != after;
        write_diff(out, &name, &before, &after)?;
    }
    let snippet_path = target.dovecot.snippet_path();
    let before = target.dovecot.read_snippet()?.unwrap_or_default();
    let after = match snippet {
        SnippetAction::Keep => before.clone(),
        SnippetAction::Write(content) => content.clone(),
        SnippetAction::Delete => String::new(),
    };
    any |= before != after;
    write_diff(out, &snippet_path.display().to_string(), &before, &after)?;
    if !any {
        writeln!(out, "no changes").context("failed to write the report")?;
    }
    Ok(())
}
