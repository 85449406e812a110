//! Reading and writing Postfix's configuration through Postfix's own programs.
//!
//! Postfix owns main.cf and master.cf, so every read goes through `postconf` and every
//! write through `postconf -e/-X/-M/-P/-MX/-PX` (Debian Policy 10.7.4). Each call names the
//! configuration directory with `-c`, which lets tests work on a private copy.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{bail, Context, Result};

/// A Postfix instance, selected by its configuration directory.
#[derive(Debug, Clone)]
pub struct Postfix {
    config_dir: PathBuf,
}

/// A Postfix release number, as `mail_version` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses "3.7.11"; a missing patch level counts as 0, and text after a `-` is ignored.
    pub fn parse(text: &str) -> Option<Version> {
        let release = text.trim().split('-').next()?;
        let mut parts = release.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One active master.cf entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterEntry {
    /// `service/type`, the key that `postconf -M` and `-P` use.
    pub key: String,
    /// The entry's fields without its `-o` options, one space between fields.
    pub fields: String,
    /// The `-o name=value` options, by name.
    pub options: BTreeMap<String, String>,
}

impl Postfix {
    pub fn new(config_dir: impl Into<PathBuf>) -> Postfix {
        Postfix {
            config_dir: config_dir.into(),
        }
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    pub fn main_cf(&self) -> PathBuf {
        self.config_dir.join("main.cf")
    }

    pub fn master_cf(&self) -> PathBuf {
        self.config_dir.join("master.cf")
    }

    /// Runs `postconf -c DIR ARGS` and returns its standard output; stderr warnings are
    /// passed on to the log at debug level.
    fn postconf(&self, args: &[&str]) -> Result<String> {
        let output = self.run("postconf", args)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let description = describe(program, args);
        log::debug!(
            "running {program} -c {} {}",
            self.config_dir.display(),
            args.join(" ")
        );
        let output = Command::new(program)
            .arg("-c")
            .arg(&self.config_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to run {description}; is postfix installed?"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines() {
            log::debug!("{program}: {line}");
        }
        if !output.status.success() {
            bail!(
                "{description} failed ({}): {}",
                output.status,
                stderr.trim()
            );
        }
        Ok(output)
    }

    pub fn mail_version(&self) -> Result<Version> {
        let text = self.postconf(&["-h", "mail_version"])?;
        Version::parse(&text)
            .with_context(|| format!("postconf reported an unreadable mail_version {text:?}"))
    }

    /// Returns the parameters that main.cf sets explicitly (`postconf -n`), unexpanded.
    pub fn explicit_parameters(&self) -> Result<BTreeMap<String, String>> {
        Ok(parse_parameters(&self.postconf(&["-n"])?))
    }

    /// Returns Postfix's default value of every parameter (`postconf -d`).
    pub fn default_parameters(&self) -> Result<BTreeMap<String, String>> {
        Ok(parse_parameters(&self.postconf(&["-d"])?))
    }

    /// Returns those of `names` that main.cf sets although no setting refers to them, which
    /// `postconf -n` does not list. main.cf is only read here, never written.
    pub fn unused_parameters(&self, names: &[&str]) -> Result<BTreeMap<String, String>> {
        let path = self.main_cf();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let all = parse_main_cf(&text);
        Ok(all
            .into_iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .collect())
    }

    /// Returns a parameter's value as Postfix uses it, its default when unset, unexpanded.
    pub fn parameter(&self, name: &str) -> Result<String> {
        Ok(self
            .postconf(&["-h", name])?
            .trim_end_matches('\n')
            .to_string())
    }

    /// Returns a parameter's value with `$name` references expanded (`postconf -hx`).
    pub fn expanded_parameter(&self, name: &str) -> Result<String> {
        Ok(self
            .postconf(&["-hx", name])?
            .trim_end_matches('\n')
            .to_string())
    }

    /// Returns the lookup table types this Postfix supports (`postconf -m`).
    pub fn map_types(&self) -> Result<Vec<String>> {
        Ok(self
            .postconf(&["-m"])?
            .split_whitespace()
            .map(String::from)
            .collect())
    }

    /// Returns the active master.cf entries with their `-o` options.
    pub fn master_entries(&self) -> Result<BTreeMap<String, MasterEntry>> {
        let entries = self.postconf(&["-M"])?;
        let options = self.postconf(&["-P"])?;
        parse_master(&entries, &options)
    }

    /// Sets main.cf parameters with one `postconf -e` call.
    ///
    /// `postconf -e` appends new parameters in the order of a hash table with a random
    /// seed, so one call for several new parameters writes them in a different order on
    /// every run. Parameters that main.cf already sets are replaced in place with one call;
    /// each new one gets a call of its own, so they are appended in sorted order and the
    /// same answers always give the same file.
    pub fn set_parameters(&self, settings: &[(String, String)]) -> Result<()> {
        if settings.is_empty() {
            return Ok(());
        }
        let path = self.main_cf();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let present = parse_main_cf(&text);
        let argument = |(n, v): &(String, String)| format!("{n}={v}");
        let (replaced, appended): (Vec<_>, Vec<_>) = settings
            .iter()
            .partition(|(name, _)| present.contains_key(name));
        self.edit(
            "-e",
            &replaced.into_iter().map(argument).collect::<Vec<_>>(),
        )?;
        let mut appended = appended;
        appended.sort();
        for setting in appended {
            self.edit("-e", &[argument(setting)])?;
        }
        Ok(())
    }

    /// Deletes main.cf parameters with one `postconf -X` call.
    pub fn delete_parameters(&self, names: &[String]) -> Result<()> {
        self.edit("-X", names)
    }

    /// Adds master.cf entries, each given as `key` and its whole line, with `postconf -M`.
    pub fn add_entries(&self, entries: &[(String, String)]) -> Result<()> {
        let args: Vec<String> = entries
            .iter()
            .map(|(k, line)| format!("{k}={line}"))
            .collect();
        self.edit("-M", &args)
    }

    /// Deletes master.cf entries by `service/type` with `postconf -MX`.
    pub fn delete_entries(&self, keys: &[String]) -> Result<()> {
        self.edit("-MX", keys)
    }

    /// Sets `-o` options, given as `service/type/name` and value, with `postconf -P`.
    pub fn set_options(&self, options: &[(String, String)]) -> Result<()> {
        let args: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.edit("-P", &args)
    }

    /// Deletes `-o` options by `service/type/name` with `postconf -PX`.
    pub fn delete_options(&self, keys: &[String]) -> Result<()> {
        self.edit("-PX", keys)
    }

    fn edit(&self, flag: &str, args: &[String]) -> Result<()> {
        if args.is_empty() {
            return Ok(());
        }
        let mut all: Vec<&str> = vec![flag];
        all.extend(args.iter().map(String::as_str));
        self.postconf(&all).map(drop)
    }

    /// Runs `postfix check`; on failure the error carries Postfix's own message.
    ///
    /// The postfix command prints its messages only when stderr is a terminal (Postfix
    /// 3.7 and 3.10 log them to syslog or maillog_file otherwise), so it runs with a
    /// pseudo-terminal as stdout and stderr.
    pub fn check(&self) -> Result<()> {
        let mut command = Command::new("postfix");
        command.arg("-c").arg(&self.config_dir).arg("check");
        let (status, messages) =
            run_on_terminal(command).context("failed to run 'postfix check'")?;
        for line in messages.lines() {
            log::debug!("postfix check: {line}");
        }
        if !status.success() {
            bail!("'postfix check' failed ({status}): {}", messages.trim());
        }
        Ok(())
    }

    /// Tells whether this instance's master process is running (`postfix status`).
    pub fn is_running(&self) -> bool {
        Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("status")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// Runs `command` with a new pseudo-terminal as its stdout and stderr, and returns its
/// exit status and everything it printed.
fn run_on_terminal(mut command: Command) -> Result<(ExitStatus, String)> {
    let pty = nix::pty::openpty(None, None).context("failed to open a pseudo-terminal")?;
    let terminal = std::fs::File::from(pty.slave);
    command
        .stdin(Stdio::null())
        .stdout(
            terminal
                .try_clone()
                .context("failed to duplicate the pseudo-terminal")?,
        )
        .stderr(terminal);
    let mut child = command.spawn()?;
    // The parent's copies of the terminal live in `command`; they must be closed for the
    // reader to see the end of the output.
    drop(command);
    let mut reader = std::fs::File::from(pty.master);
    let collector = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // Linux returns EIO instead of end-of-file once the terminal side is closed.
        let _ = reader.read_to_end(&mut bytes);
        bytes
    });
    let status = child.wait()?;
    let bytes = collector.join().unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&bytes).replace('\r', "")))
}

fn describe(program: &str, args: &[&str]) -> String {
    match args.first() {
        Some(first) => format!("'{program} {first}'"),
        None => format!("'{program}'"),
    }
}

/// Parses `name = value` lines as `postconf -n` and `postconf -P` print them.
pub fn parse_parameters(text: &str) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(" =") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            parameters.insert(name.trim().to_string(), value.to_string());
        }
    }
    parameters
}

/// Parses main.cf as Postfix reads it: `name = value` lines, continued on lines that start
/// with whitespace, with comment and blank lines skipped; a later setting wins.
fn parse_main_cf(text: &str) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some((_, value)) = current.as_mut() {
                value.push(' ');
                value.push_str(trimmed);
            }
            continue;
        }
        if let Some((name, value)) = current.take() {
            parameters.insert(name, value);
        }
        if let Some((name, value)) = line.split_once('=') {
            current = Some((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if let Some((name, value)) = current {
        parameters.insert(name, value);
    }
    parameters
}

/// Parses `postconf -M` (one entry a line) and `postconf -P` (`service/type/name = value`).
fn parse_master(entries: &str, options: &str) -> Result<BTreeMap<String, MasterEntry>> {
    let mut parsed = BTreeMap::new();
    for line in entries.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 8 {
            bail!("postconf -M printed an entry with fewer than 8 fields: {line:?}");
        }
        let key = format!("{}/{}", words[0], words[1]);
        let fields = words_before_options(&words).join(" ");
        let entry = MasterEntry {
            key: key.clone(),
            fields,
            options: BTreeMap::new(),
        };
        parsed.insert(key, entry);
    }
    for (name, value) in parse_parameters(options) {
        let Some((key, option)) = name.rsplit_once('/') else {
            bail!("postconf -P printed an option without service/type/: {name:?}");
        };
        if let Some(entry) = parsed.get_mut(key) {
            entry.options.insert(option.to_string(), value);
        }
    }
    Ok(parsed)
}

/// Returns the words of an entry up to its first `-o` option. Options written after the
/// command's own arguments are rare, and `postconf -P` reports them all the same.
fn words_before_options<'a>(words: &[&'a str]) -> Vec<&'a str> {
    let mut kept = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i] == "-o" && i >= 8 {
            i += if words.get(i + 1) == Some(&"{") {
                skip_braced(words, i + 1)
            } else {
                2
            };
            continue;
        }
        kept.push(words[i]);
        i += 1;
    }
    kept
}

/// Returns how many words a `{ name = value }` group starting at `start` spans, plus one
/// for the `-o` before it.
fn skip_braced(words: &[&str], start: usize) -> usize {
    let end = words[start..]
        .iter()
        .position(|w| *w == "}")
        .map_or(words.len(), |p| start + p);
    end - start + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parse() {
        assert_eq!(Version::parse("3.7.11\n"), Some(Version(3, 7, 11)));
        assert_eq!(Version::parse("3.10"), Some(Version(3, 10, 0)));
        assert_eq!(Version::parse("3.11-20250101"), Some(Version(3, 11, 0)));
        assert_eq!(Version::parse("x"), None);
        assert!(Version(3, 10, 0) > Version(3, 9, 4));
    }

    #[test]
    fn parameters_parse() {
        let text = "a = b\nsmtpd_banner = $myhostname ESMTP\nempty =\n";
        let parsed = parse_parameters(text);
        assert_eq!(parsed["a"], "b");
        assert_eq!(parsed["smtpd_banner"], "$myhostname ESMTP");
        assert_eq!(parsed["empty"], "");
    }

    #[test]
    fn master_parse() {
        let entries = "smtp       inet  n       -       y       -       -       smtpd\n\
            submission inet  n       -       y       -       -       smtpd -o syslog_name=postfix/submission -o { smtpd_x = a b }\n\
            relay      unix  -       -       y       -       -       smtp -o syslog_name=postfix/$service_name\n\
            maildrop   unix  -       n       n       -       -       pipe flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}\n";
        let options = "submission/inet/smtpd_x = a b\n\
            submission/inet/syslog_name = postfix/submission\n\
            relay/unix/syslog_name = postfix/$service_name\n";
        let parsed = parse_master(entries, options).unwrap();
        let submission = &parsed["submission/inet"];
        assert_eq!(submission.fields, "submission inet n - y - - smtpd");
        assert_eq!(submission.options["syslog_name"], "postfix/submission");
        assert_eq!(submission.options["smtpd_x"], "a b");
        assert_eq!(parsed["smtp/inet"].options.len(), 0);
        assert!(parsed["maildrop/unix"].fields.ends_with("-d ${recipient}"));
        assert_eq!(parsed["relay/unix"].options.len(), 1);
    }

    #[test]
    fn main_cf_parse_joins_continuations() {
        let text = "# comment\na = 1\nb = x,\n    y\n\n  # indented comment\nc =\na = 2\n";
        let parsed = parse_main_cf(text);
        assert_eq!(parsed["a"], "2");
        assert_eq!(parsed["b"], "x, y");
        assert_eq!(parsed["c"], "");
    }

    #[test]
    fn master_parse_rejects_short_line() {
        assert!(parse_master("smtp inet n\n", "").is_err());
    }
}
