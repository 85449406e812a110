//! Carrying out a plan: the postconf calls, `postfix check`, the Dovecot snippet, the
//! rollback when a check fails, the state record and the reloads.
//!
//! main.cf, master.cf and the snippet are copied in memory before the first write. If any
//! write or check fails, the copies are put back byte for byte, so the files are never
//! left half-changed.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::dovecot::Dovecot;
use crate::plan::Plan;
use crate::postfix::Postfix;
use crate::state::{write_atomically, Copy, Record, SnippetRecord, StateDir, COPIED_FILES};

/// An action on the Dovecot snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnippetAction {
    Keep,
    Write(String),
    Delete,
}

/// Original content to write back instead of postconf calls, for main.cf and master.cf.
pub type Restore = [Option<Vec<u8>>; 2];

/// The programs and files that a run works on.
pub struct Target {
    pub postfix: Postfix,
    pub dovecot: Dovecot,
    pub state: StateDir,
}

/// A file's content and mode before the run; `None` content means it did not exist.
struct Saved {
    path: PathBuf,
    content: Option<Vec<u8>>,
    mode: u32,
}

impl Saved {
    fn take(path: &Path) -> Result<Saved> {
        match fs::read(path) {
            Ok(content) => {
                let mode = fs::metadata(path)
                    .with_context(|| format!("failed to read the mode of {}", path.display()))?
                    .permissions()
                    .mode();
                Ok(Saved {
                    path: path.to_path_buf(),
                    content: Some(content),
                    mode: mode & 0o7777,
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Saved {
                path: path.to_path_buf(),
                content: None,
                mode: 0o644,
            }),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    /// Puts the file back as it was, unless it is unchanged.
    fn restore(&self) -> Result<()> {
        let now = fs::read(&self.path).ok();
        if now == self.content {
            return Ok(());
        }
        match &self.content {
            Some(content) => write_atomically(&self.path, content, self.mode),
            None => fs::remove_file(&self.path)
                .with_context(|| format!("failed to delete {}", self.path.display())),
        }
    }
}

/// The services whose configuration a run changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub postfix: bool,
    pub dovecot: bool,
}

impl Target {
    /// Applies `plan` and `snippet`, saving `plan.record` on success. `old` is the record
    /// as loaded, put back if anything fails.
    ///
    /// `restore` holds, for main.cf and master.cf in that order, original content to put
    /// back in place of the plan's postconf calls for that file.
    pub fn execute(
        &self,
        plan: &Plan,
        snippet: &SnippetAction,
        old: &Record,
        restore: &Restore,
    ) -> Result<Changed> {
        let changed = Changed {
            postfix: !plan.writes_nothing() || restore.iter().any(Option::is_some),
            dovecot: *snippet != SnippetAction::Keep,
        };
        if !changed.postfix && !changed.dovecot {
            if plan.record != *old {
                self.state.save(&plan.record)?;
            }
            return Ok(changed);
        }
        let saved = [
            Saved::take(&self.postfix.main_cf())?,
            Saved::take(&self.postfix.master_cf())?,
            Saved::take(&self.dovecot.snippet_path())?,
        ];
        self.state.save(&pending_record(old, &plan.record))?;
        if *old == Record::default() {
            // The originals are kept before the first write, so that a run interrupted
            // after it still has them.
            for (file, name) in saved.iter().zip(COPIED_FILES) {
                if let Some(content) = &file.content {
                    self.state.write_copy(Copy::Original, name, content)?;
                }
            }
        }
        if let Err(error) = self.write_all(plan, snippet, restore) {
            return Err(self.roll_back(&saved, old, error));
        }
        self.state.save(&plan.record)?;
        self.update_copies(&saved[..2], old)?;
        Ok(changed)
    }

    fn write_all(&self, plan: &Plan, snippet: &SnippetAction, restore: &Restore) -> Result<()> {
        self.write_snippet(snippet)?;
        let postfix = &self.postfix;
        match &restore[0] {
            Some(content) => write_atomically(&postfix.main_cf(), content, 0o644)?,
            None => {
                postfix.set_parameters(&plan.set_parameters)?;
                postfix.delete_parameters(&plan.delete_parameters)?;
            }
        }
        match &restore[1] {
            Some(content) => write_atomically(&postfix.master_cf(), content, 0o644)?,
            None => {
                postfix.add_entries(&plan.add_entries)?;
                postfix.set_options(&plan.set_options)?;
                postfix.delete_options(&plan.delete_options)?;
                postfix.delete_entries(&plan.delete_entries)?;
            }
        }
        if !plan.writes_nothing() || restore.iter().any(Option::is_some) {
            postfix
                .check()
                .context("Postfix rejected the new configuration")?;
        }
        Ok(())
    }

    /// Keeps the copies of main.cf and master.cf current: the original is taken at the
    /// package's first write, and the applied copy follows each write for as long as
    /// nobody else changed the file in between. Once somebody did, the copies are
    /// dropped and removal reverts setting by setting.
    fn update_copies(&self, saved: &[Saved], old: &Record) -> Result<()> {
        for (file, name) in saved.iter().zip(COPIED_FILES) {
            let Some(before) = &file.content else {
                continue;
            };
            let now = fs::read(&file.path)
                .with_context(|| format!("failed to read {}", file.path.display()))?;
            let original = self.state.read_copy(Copy::Original, name)?;
            let applied = self.state.read_copy(Copy::Applied, name)?;
            let first_write = *old == Record::default() || old.pending;
            match (original, applied) {
                (None, _) => {}
                // The first complete run, possibly after an interrupted one.
                (Some(_), None) if first_write => {
                    self.state.write_copy(Copy::Applied, name, &now)?;
                }
                (Some(_), Some(applied)) if applied == *before => {
                    self.state.write_copy(Copy::Applied, name, &now)?;
                }
                (Some(_), _) => self.state.remove_copies(name)?,
            }
        }
        Ok(())
    }

    /// Returns the original main.cf and master.cf for those of the two files that are
    /// still exactly what the package left.
    pub fn restorable_originals(&self) -> Result<Restore> {
        let mut restore: Restore = [None, None];
        for (slot, name) in restore.iter_mut().zip(COPIED_FILES) {
            let path = self.postfix.config_dir().join(name);
            let current =
                fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
            if self.state.read_copy(Copy::Applied, name)?.as_ref() == Some(&current) {
                *slot = self.state.read_copy(Copy::Original, name)?;
            }
        }
        Ok(restore)
    }

    fn write_snippet(&self, snippet: &SnippetAction) -> Result<()> {
        let path = self.dovecot.snippet_path();
        match snippet {
            SnippetAction::Keep => return Ok(()),
            SnippetAction::Write(content) => write_atomically(&path, content.as_bytes(), 0o644)?,
            SnippetAction::Delete => match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("failed to delete {}", path.display()))
                }
                _ => {}
            },
        }
        self.dovecot
            .check()
            .context("Dovecot rejected the new configuration")?;
        let SnippetAction::Write(content) = snippet else {
            return Ok(());
        };
        for socket in crate::dovecot::listener_paths(content) {
            if !self.dovecot.listener_configured(&socket)? {
                bail!(
                    "Dovecot does not read {}: its settings have no unix_listener for {} \
                     afterwards; make {} include conf.d/*.conf, or add the listener yourself \
                     and answer false to postfix-submission/configure_dovecot",
                    path.display(),
                    socket.display(),
                    self.dovecot.config().display()
                );
            }
        }
        Ok(())
    }

    fn roll_back(&self, saved: &[Saved], old: &Record, error: anyhow::Error) -> anyhow::Error {
        let mut problems = Vec::new();
        for file in saved {
            if let Err(e) = file.restore() {
                problems.push(format!("{e:#}"));
            }
        }
        if *old == Record::default() {
            for name in COPIED_FILES {
                if let Err(e) = self.state.remove_copies(name) {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        let restored = if *old == Record::default() {
            self.state.remove()
        } else {
            self.state.save(old)
        };
        if let Err(e) = restored {
            problems.push(format!("{e:#}"));
        }
        if problems.is_empty() {
            return error.context(
                "nothing was changed: main.cf, master.cf and Dovecot's snippet were restored",
            );
        }
        error.context(format!(
            "restoring the previous configuration ALSO failed ({}); check main.cf and master.cf by hand",
            problems.join("; ")
        ))
    }

    /// Reloads what changed, if it runs. A stopped service is not started.
    pub fn reload(&self, changed: Changed) {
        if changed.dovecot {
            if self.dovecot.is_running() {
                reload_service(
                    "dovecot",
                    self.dovecot.config() == Path::new("/etc/dovecot/dovecot.conf"),
                    || {
                        let mut command = Command::new("doveadm");
                        command.arg("-c").arg(self.dovecot.config()).arg("reload");
                        command
                    },
                );
            } else {
                log::info!("Dovecot is not running; the new settings take effect when it starts");
            }
        }
        if changed.postfix {
            if self.postfix.is_running() {
                reload_service(
                    "postfix",
                    self.postfix.config_dir() == Path::new("/etc/postfix"),
                    || {
                        let mut command = Command::new("postfix");
                        command
                            .arg("-c")
                            .arg(self.postfix.config_dir())
                            .arg("reload");
                        command
                    },
                );
            } else {
                log::info!("Postfix is not running; the new settings take effect when it starts");
            }
        }
    }
}

/// Builds the record saved while writing: the old record with the new changes laid over
/// it, so that the value before the first write of every setting about to be touched is kept.
fn pending_record(old: &Record, new: &Record) -> Record {
    let mut pending = old.clone();
    pending.pending = true;
    pending.parameters.extend(new.parameters.clone());
    pending.entries.extend(new.entries.clone());
    pending.options.extend(new.options.clone());
    if new.dovecot_snippet.is_some() {
        pending.dovecot_snippet = new.dovecot_snippet.clone();
    }
    pending
}

/// Reloads a service of the default instance through invoke-rc.d, which honours
/// policy-rc.d, or another instance with its own command.
fn reload_service(name: &str, default_instance: bool, other: impl FnOnce() -> Command) {
    let mut command = if default_instance {
        let mut command = Command::new("invoke-rc.d");
        command.args([name, "reload"]);
        command
    } else {
        other()
    };
    log::info!("reloading {name}");
    let result = command.stdin(Stdio::null()).stdout(Stdio::null()).status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => log::warn!(
            "reloading {name} failed ({status}); run 'invoke-rc.d {name} reload' by hand"
        ),
        Err(e) => log::warn!(
            "failed to run the reload of {name}: {e}; run 'invoke-rc.d {name} reload' by hand"
        ),
    }
}

/// Decides what to do with the Dovecot snippet.
///
/// `wanted` is the rendered snippet when the package should provide the listener, `None`
/// when it should not touch Dovecot. The record's copy distinguishes the package's own file
/// from one the admin edited.
pub fn decide_snippet(
    wanted: Option<&str>,
    existing: Option<&str>,
    record: Option<&SnippetRecord>,
    notices: &mut Vec<String>,
    path: &Path,
) -> SnippetAction {
    let Some(wanted) = wanted else {
        return SnippetAction::Keep;
    };
    match existing {
        None => SnippetAction::Write(wanted.to_string()),
        Some(text) if text == wanted => SnippetAction::Keep,
        Some(text) if record.is_some_and(|r| r.content == text) => {
            SnippetAction::Write(wanted.to_string())
        }
        Some(_) => {
            notices.push(format!("kept the hand-edited {}", path.display()));
            SnippetAction::Keep
        }
    }
}

/// Writes a unified diff of `before` and `after` under the file name `name`.
pub fn write_diff(out: &mut dyn Write, name: &str, before: &str, after: &str) -> Result<()> {
    if before == after {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(before, after);
    // No context lines: main.cf may hold credentials in settings the package does not
    // manage (an inline smtp_sasl_password_maps, say), and only changed lines are ours.
    let text = diff
        .unified_diff()
        .context_radius(0)
        .header(name, name)
        .to_string();
    out.write_all(text.as_bytes())
        .context("failed to write the diff")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Change;

    #[test]
    fn pending_record_keeps_old_originals() {
        let mut old = Record::default();
        old.parameters.insert(
            "gone".into(),
            Change {
                original: Some("x".into()),
                applied: "y".into(),
                written: true,
            },
        );
        let mut new = Record::default();
        new.parameters.insert(
            "kept".into(),
            Change {
                original: None,
                applied: "z".into(),
                written: true,
            },
        );
        let pending = pending_record(&old, &new);
        assert!(pending.pending);
        assert!(pending.parameters.contains_key("gone"));
        assert!(pending.parameters.contains_key("kept"));
    }

    #[test]
    fn snippet_decisions() {
        let path = Path::new("/etc/dovecot/conf.d/x.conf");
        let mut notices = Vec::new();
        let record = SnippetRecord {
            path: path.into(),
            content: "old".into(),
        };
        assert_eq!(
            decide_snippet(None, Some("x"), None, &mut notices, path),
            SnippetAction::Keep
        );
        assert_eq!(
            decide_snippet(Some("new"), None, None, &mut notices, path),
            SnippetAction::Write("new".into())
        );
        assert_eq!(
            decide_snippet(Some("new"), Some("new"), None, &mut notices, path),
            SnippetAction::Keep
        );
        assert_eq!(
            decide_snippet(Some("new"), Some("old"), Some(&record), &mut notices, path),
            SnippetAction::Write("new".into())
        );
        assert!(notices.is_empty());
        assert_eq!(
            decide_snippet(Some("new"), Some("hand"), Some(&record), &mut notices, path),
            SnippetAction::Keep
        );
        assert_eq!(notices.len(), 1);
    }

    #[test]
    fn saved_file_restored_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.cf");
        fs::write(&path, "a = 1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let saved = Saved::take(&path).unwrap();
        fs::write(&path, "a = 2\n").unwrap();
        saved.restore().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a = 1\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );

        let absent = Saved::take(&dir.path().join("new.conf")).unwrap();
        fs::write(dir.path().join("new.conf"), "x").unwrap();
        absent.restore().unwrap();
        assert!(!dir.path().join("new.conf").exists());
    }

    #[test]
    fn diff_shows_changed_line() {
        let mut out = Vec::new();
        write_diff(
            &mut out,
            "main.cf",
            "secret = x\nb = 2\n",
            "secret = x\nb = 3\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("-b = 2"), "{text}");
        assert!(text.contains("+b = 3"), "{text}");
        let mut empty = Vec::new();
        write_diff(&mut empty, "main.cf", "same\n", "same\n").unwrap();
        assert!(empty.is_empty());
    }
}
