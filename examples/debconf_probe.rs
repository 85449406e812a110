//! Test helper for tests/debconf_client.rs, not a user program: it runs the debconf client
//! inside a real debconf frontend and appends what it observed to the file named by
//! `DEBCONF_PROBE_RESULTS`, one `key=value` line each, with values in Rust's `{:?}` form.
//!
//! `debconf_probe confmodule` expects a shell script that sourced the confmodule to run it, so
//! commands go to fd 3. `debconf_probe reexec` starts without a frontend and re-executes
//! itself under one with `run_under_frontend`, so commands go to stdout.

use std::env;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use postfix_submission::debconf::{self, Client, OUTPUT_FD_VAR};

const QUESTION: &str = "postfix-submission/probe-string";

/// Line that the `reexec` mode writes to the report output.
const REPORT_LINE: &str = "report from debconf_probe\n";

fn main() -> Result<()> {
    let mode = env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "confmodule" => probe_confmodule(),
        "reexec" => probe_reexec(),
        _ => bail!("usage: debconf_probe confmodule|reexec"),
    }
}

/// Appends `key=value` lines to the results file.
struct Results {
    file: File,
}

impl Results {
    fn open() -> Result<Self> {
        let path =
            env::var_os("DEBCONF_PROBE_RESULTS").context("DEBCONF_PROBE_RESULTS is not set")?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("failed to open {path:?}"))?;
        Ok(Results { file })
    }

    fn record(&mut self, key: &str, value: impl Debug) -> Result<()> {
        writeln!(self.file, "{key}={value:?}").context("failed to write the results file")
    }
}

fn probe_confmodule() -> Result<()> {
    let mut results = Results::open()?;
    results.record("redir_on_entry", env::var("DEBCONF_REDIR").ok())?;
    let channel = [fd_target(3)?, fd_target(0)?];
    let mut client = Client::from_env()?;
    exercise(&mut client, &mut results)?;
    record_child_fds(&mut results, &channel)?;
    // The calling script reads this value with db_get, which shows that the probe left the
    // conversation in step. No STOP, because the script goes on talking to debconf.
    client.set(QUESTION, "set by probe")?;
    Ok(())
}

fn probe_reexec() -> Result<()> {
    debconf::run_under_frontend()?;
    let mut results = Results::open()?;
    results.record("redir_on_entry", env::var("DEBCONF_REDIR").ok())?;
    results.record("package", env::var("DEBCONF_PACKAGE").ok())?;
    results.record("perl_dl_nonlazy", env::var("PERL_DL_NONLAZY").ok())?;
    results.record("output_fd_set", env::var_os(OUTPUT_FD_VAR).is_some())?;
    let channel = [fd_target(1)?, fd_target(0)?];

    // Before from_env, stdout still carries commands, so this must not be stdout.
    let mut report = debconf::report_output()?;
    report.write_all(REPORT_LINE.as_bytes())?;

    let mut client = Client::from_env()?;
    results.record("redir_after_connect", env::var("DEBCONF_REDIR").ok())?;
    println!("stdout after connecting goes to stderr");
    exercise(&mut client, &mut results)?;
    record_child_fds(&mut results, &channel)?;
    client.set(QUESTION, "set by probe")?;
    client.stop()?;
    Ok(())
}

/// Runs the commands whose results the integration test checks.
fn exercise<R, W>(client: &mut Client<R, W>, results: &mut Results) -> Result<()>
where
    R: std::io::BufRead,
    W: Write,
{
    results.record("version", client.version()?)?;
    client.capb(&["escape"])?;
    results.record("escape", client.escape_enabled())?;
    results.record("initial", client.get(QUESTION)?)?;
    client.set(QUESTION, "first line\nsecond \\ line")?;
    results.record("multiline", client.get(QUESTION)?)?;
    client.fset(QUESTION, "seen", true)?;
    results.record("seen", client.fget(QUESTION, "seen")?)?;
    Ok(())
}

/// Returns the target of /proc/self/fd/`fd`, such as `pipe:[1234]`.
fn fd_target(fd: i32) -> Result<String> {
    let target = fs::read_link(format!("/proc/self/fd/{fd}"))
        .with_context(|| format!("fd {fd} is not open"))?;
    Ok(target.to_string_lossy().into_owned())
}

/// Records the channel's targets and the descriptors that a child process inherits.
fn record_child_fds(results: &mut Results, channel: &[String]) -> Result<()> {
    let listing = Command::new("sh")
        .arg("-c")
        .arg(r#"for fd in /proc/$$/fd/*; do echo "${fd##*/} $(readlink "$fd")"; done"#)
        .stdin(Stdio::inherit())
        .output()
        .context("failed to run sh to list inherited descriptors")?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let child_fds: Vec<&str> = listing.lines().collect();
    results.record("channel", channel)?;
    results.record("child_fds", child_fds)
}
