//! Dovecot's side: whether its auth service already listens on Postfix's socket, the
//! snippet in conf.d that adds the listener, the `doveconf -n` check and the reload.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The snippet's file name in Dovecot's conf.d; Debian's dovecot.conf includes
/// `conf.d/*.conf` in name order.
pub const SNIPPET_NAME: &str = "90-postfix-submission.conf";

/// A Dovecot installation, selected by its main configuration file.
#[derive(Debug, Clone)]
pub struct Dovecot {
    config: PathBuf,
}

impl Dovecot {
    pub fn new(config: impl Into<PathBuf>) -> Dovecot {
        Dovecot {
            config: config.into(),
        }
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn is_installed(&self) -> bool {
        self.config.is_file()
    }

    pub fn snippet_path(&self) -> PathBuf {
        let dir = self.config.parent().unwrap_or(Path::new("/etc/dovecot"));
        dir.join("conf.d").join(SNIPPET_NAME)
    }

    /// Returns the snippet's content, or `None` when the file does not exist.
    pub fn read_snippet(&self) -> Result<Option<String>> {
        let path = self.snippet_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    fn doveconf(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("doveconf")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("failed to run doveconf; is dovecot-core installed?")?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "'doveconf -c {} {}' failed: {}",
                self.config.display(),
                args.join(" "),
                stderr.trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Checks the whole configuration with `doveconf -n`.
    pub fn check(&self) -> Result<()> {
        self.doveconf(&["-n"]).map(drop)
    }

    /// Tells whether some `unix_listener` in Dovecot's settings serves `socket`.
    pub fn listener_configured(&self, socket: &Path) -> Result<bool> {
        Ok(has_listener(&self.doveconf(&["-n"])?, socket))
    }

    /// Tells whether Dovecot's master process runs, from the pid file in its base_dir.
    pub fn is_running(&self) -> bool {
        let base_dir = self
            .doveconf(&["-h", "base_dir"])
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "/run/dovecot".to_string());
        let pid_file = Path::new(&base_dir).join("master.pid");
        let Ok(text) = fs::read_to_string(pid_file) else {
            return false;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return false;
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    }
}

/// Returns the sockets of the `unix_listener` sections in a configuration text.
pub fn listener_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("unix_listener"))
                .then(|| words.next())
                .flatten()
                .map(|w| PathBuf::from(w.trim_matches('"')))
        })
        .collect()
}

/// Finds `unix_listener SOCKET {` in `doveconf -n` output.
fn has_listener(settings: &str, socket: &Path) -> bool {
    let wanted = socket.display().to_string();
    settings.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("unix_listener")
            && words.next().map(|w| w.trim_matches('"')) == Some(&wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_found_in_doveconf_output() {
        let settings = "service auth {\n  unix_listener /var/spool/postfix/private/auth {\n    mode = 0660\n  }\n}\n";
        assert!(has_listener(
            settings,
            Path::new("/var/spool/postfix/private/auth")
        ));
        assert!(!has_listener(
            settings,
            Path::new("/var/spool/postfix/private/other")
        ));
        assert!(!has_listener(
            "# unix_listener /var/spool/postfix/private/auth\n",
            Path::new("/var/spool/postfix/private/auth")
        ));
    }

    #[test]
    fn snippet_lives_in_conf_d() {
        let dovecot = Dovecot::new("/etc/dovecot/dovecot.conf");
        assert_eq!(
            dovecot.snippet_path(),
            Path::new("/etc/dovecot/conf.d/90-postfix-submission.conf")
        );
    }
}
