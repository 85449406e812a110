//! The record of what postfix-submission changed, kept in
//! /var/lib/postfix-submission/state.json.
//!
//! For every setting it wrote, the record keeps the value it found before (so that a
//! deselected setting, or the whole package on removal, can be reverted) and the value it
//! applied (so that a later run can tell a hand edit from its own work).

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::answers::Answers;

pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const FORMAT: u32 = 1;

/// A main.cf parameter or master.cf `-o` option that was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The value before the first write; `None` when it was not set.
    pub original: Option<String>,
    /// The value last applied: written, or found already in place.
    pub applied: String,
    /// True when the value in the file is the package's own write. A value the package
    /// found in place, or adopted from a hand edit, is the admin's and survives removal.
    #[serde(default)]
    pub written: bool,
}

/// A master.cf entry that the package manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// True when the package added the entry, false when it reused the admin's entry.
    pub created: bool,
}

/// The Dovecot snippet as last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnippetRecord {
    pub path: PathBuf,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// True while a run is writing: the changes are recorded before they are made, so an
    /// interrupted run leaves a record that the next run completes.
    pub pending: bool,
    /// The answers that the last complete run applied.
    pub answers: Option<Answers>,
    pub parameters: BTreeMap<String, Change>,
    /// Entries by `service/type`.
    pub entries: BTreeMap<String, EntryRecord>,
    /// Options by `service/type/name`.
    pub options: BTreeMap<String, Change>,
    pub dovecot_snippet: Option<SnippetRecord>,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            format: FORMAT,
            pending: false,
            answers: None,
            parameters: BTreeMap::new(),
            entries: BTreeMap::new(),
            options: BTreeMap::new(),
            dovecot_snippet: None,
        }
    }
}

impl Record {
    /// Tells whether the record contains no change at all.
    pub fn is_empty(&self) -> bool {
        self.parameters.is_empty()
            && self.entries.is_empty()
            && self.options.is_empty()
            && self.dovecot_snippet.is_none()
    }
}

/// The directory that contains the record.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the record; a missing file is an empty record.
    pub fn load(&self) -> Result<Record> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let record: Record = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid postfix-submission state record; move it aside and run \
                 'dpkg-reconfigure postfix-submission' (settings written earlier will then \
                 count as the admin's own)",
                path.display()
            )
        })?;
        if record.format != FORMAT {
            bail!(
                "{} has record format {}, but this version reads format {FORMAT}",
                path.display(),
                record.format
            );
        }
        Ok(record)
    }

    /// Writes the record through a temporary file and a rename, so a crash leaves either
    /// the old record or the new one.
    pub fn save(&self, record: &Record) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("failed to create {}", self.dir.display()))?;
        let path = self.path();
        let mut text = serde_json::to_string_pretty(record).expect("record serializes");
        text.push('\n');
        write_atomically(&path, text.as_bytes(), 0o644)
    }

    /// Takes the lock that keeps two runs from writing at the same time; it is held until
    /// the returned value is dropped.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        use nix::fcntl::{Flock, FlockArg};

        fs::create_dir_all(&self.dir)
            .with_context(|| format!("failed to create {}", self.dir.display()))?;
        let path = self.dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("failed to open {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "another postfix-submission run holds {}; wait for it to finish and try again",
                path.display()
            ),
            Err((_, errno)) => {
                Err(errno).with_context(|| format!("failed to lock {}", path.display()))
            }
        }
    }

    /// Deletes the record file, if there is one.
    pub fn remove(&self) -> Result<()> {
        remove_if_present(&self.path())
    }

    /// Deletes the record and every file copy.
    pub fn remove_all(&self) -> Result<()> {
        self.remove()?;
        for file in COPIED_FILES {
            self.remove_copies(file)?;
        }
        Ok(())
    }

    fn copy_path(&self, copy: Copy, file: &str) -> PathBuf {
        self.dir.join(copy.dir_name()).join(file)
    }

    /// Returns a copy of a Postfix file, or `None` when there is none.
    pub fn read_copy(&self, copy: Copy, file: &str) -> Result<Option<Vec<u8>>> {
        let path = self.copy_path(copy, file);
        match fs::read(&path) {
            Ok(content) => Ok(Some(content)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    pub fn write_copy(&self, copy: Copy, file: &str, content: &[u8]) -> Result<()> {
        let path = self.copy_path(copy, file);
        let dir = path.parent().expect("copy paths have a parent");
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        write_atomically(&path, content, 0o600)
    }

    /// Deletes both copies of a file, once they no longer describe its history.
    pub fn remove_copies(&self, file: &str) -> Result<()> {
        remove_if_present(&self.copy_path(Copy::Original, file))?;
        remove_if_present(&self.copy_path(Copy::Applied, file))
    }
}

/// The Postfix files whose copies are kept, so that removing the package can put back
/// the file the admin had, byte for byte, when nobody else changed it since.
pub const COPIED_FILES: [&str; 2] = ["main.cf", "master.cf"];

/// The kind of copy kept of a Postfix file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    /// The file before the package first changed it.
    Original,
    /// The file right after the package last changed it.
    Applied,
}

impl Copy {
    fn dir_name(self) -> &'static str {
        match self {
            Copy::Original => "original",
            Copy::Applied => "applied",
        }
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Replaces `path` with `content` through a temporary file in the same directory, which
/// is flushed to disk before the rename.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("failed to create a temporary file in {}", dir.display()))?;
    file.write_all(content)
        .and_then(|()| {
            file.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
        })
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("failed to write a temporary file for {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("failed to replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_record_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let record = StateDir::new(dir.path().join("sub")).load().unwrap();
        assert!(record.is_empty());
        assert!(!record.pending);
    }

    #[test]
    fn record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("sub"));
        let mut record = Record::default();
        record.parameters.insert(
            "smtpd_sasl_type".into(),
            Change {
                original: None,
                applied: "dovecot".into(),
                written: true,
            },
        );
        record
            .entries
            .insert("submission/inet".into(), EntryRecord { created: true });
        state.save(&record).unwrap();
        assert_eq!(state.load().unwrap(), record);
        state.remove().unwrap();
        assert!(state.load().unwrap().is_empty());
        state.remove().unwrap();
    }

    #[test]
    fn second_lock_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let first = state.lock().unwrap();
        let err = state.lock().unwrap_err();
        assert!(
            err.to_string().contains("another postfix-submission run"),
            "{err}"
        );
        drop(first);
        assert!(state.lock().is_ok());
    }

    #[test]
    fn corrupt_record_names_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let err = StateDir::new(dir.path()).load().unwrap_err();
        assert!(format!("{err:#}").contains("state.json"), "{err:#}");
    }

    #[test]
    fn unknown_format_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = serde_json::to_string(&Record::default()).unwrap();
        text = text.replace("\"format\":1", "\"format\":99");
        fs::write(dir.path().join(STATE_FILE), text).unwrap();
        assert!(StateDir::new(dir.path()).load().is_err());
    }
}
