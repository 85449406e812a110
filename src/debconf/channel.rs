//! The descriptors that carry the debconf protocol, and the frontend that the program
//! starts for itself when it was run without one.

use std::env;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, warn};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

use super::{io_error, Error, FRONTEND_PATH, OUTPUT_FD_VAR, PACKAGE_NAME};
use super::{REDIRECTED_FD, STDERR_FD, STDIN_FD, STDOUT_FD};

/// Descriptor on which the frontend expects commands from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelLocation {
    /// fd 3, because a confmodule already moved the channel there (`DEBCONF_REDIR` is set).
    Redirected,
    /// stdout, because the frontend started this process directly.
    Stdout,
}

/// Returns whether an environment variable is set and non-empty, the test that the shell
/// confmodule of debconf 1.5.82 applies.
pub(super) fn is_set(value: Option<&OsStr>) -> bool {
    value.is_some_and(|value| !value.is_empty())
}

pub(super) fn locate_channel(
    has_frontend: Option<&OsStr>,
    redirected: Option<&OsStr>,
) -> Result<ChannelLocation, Error> {
    if !is_set(has_frontend) {
        return Err(Error::NoFrontend);
    }
    if is_set(redirected) {
        Ok(ChannelLocation::Redirected)
    } else {
        Ok(ChannelLocation::Stdout)
    }
}

pub(super) fn claim_channel(claimed: &AtomicBool) -> Result<(), Error> {
    if claimed.swap(true, Ordering::SeqCst) {
        return Err(Error::ChannelInUse);
    }
    Ok(())
}

/// Duplicates `fd` onto a new close-on-exec descriptor numbered 3 or higher. The minimum keeps
/// the duplicate clear of fds 0 to 2, which the callers replace with dup2 afterwards.
pub(super) fn duplicate_cloexec(fd: RawFd) -> nix::Result<OwnedFd> {
    let duplicate = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(REDIRECTED_FD))?;
    // SAFETY: fcntl has just created `duplicate`, so nothing else in this process owns it and
    // the OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(duplicate) })
}

pub(super) fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

/// Returns whether `fd` is open for writing.
pub(super) fn is_writable(fd: RawFd) -> nix::Result<bool> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let access = flags & OFlag::O_ACCMODE;
    Ok(access == OFlag::O_WRONLY || access == OFlag::O_RDWR)
}

/// Takes fd 3, where a confmodule moved the command stream, and marks fd 3 close-on-exec.
pub(super) fn take_redirected_channel() -> Result<OwnedFd, Error> {
    let context = "DEBCONF_REDIR is set, but fd 3 is not open for writing debconf commands";
    match is_writable(REDIRECTED_FD) {
        Ok(true) => {}
        Ok(false) => return Err(io_error(context, Errno::EBADF)),
        Err(errno) => return Err(io_error(context, errno)),
    }
    let channel = duplicate_cloexec(REDIRECTED_FD)
        .map_err(|errno| io_error("failed to duplicate fd 3, the debconf channel", errno))?;
    set_cloexec(REDIRECTED_FD)
        .map_err(|errno| io_error("failed to mark fd 3 close-on-exec", errno))?;
    Ok(channel)
}

/// Moves the command stream off stdout, points stdout at stderr and exports
/// `DEBCONF_REDIR=1`, as the confmodule libraries do.
pub(super) fn take_stdout_channel() -> Result<OwnedFd, Error> {
    io::stdout().flush().map_err(|source| {
        io_error(
            "failed to flush stdout before moving the debconf channel",
            source,
        )
    })?;
    let channel = duplicate_cloexec(STDOUT_FD)
        .map_err(|errno| io_error("failed to duplicate stdout, the debconf channel", errno))?;
    nix::unistd::dup2(STDERR_FD, STDOUT_FD)
        .map_err(|errno| io_error("failed to point stdout at stderr", errno))?;
    // The channel is close-on-exec, so no child can reach it. DEBCONF_REDIR=1 keeps a child
    // that sources the confmodule from taking its stdout, now stderr, for the channel.
    env::set_var("DEBCONF_REDIR", "1");
    Ok(channel)
}

/// Takes the reply stream from stdin and reopens stdin on /dev/null.
pub(super) fn take_stdin_channel() -> Result<OwnedFd, Error> {
    let channel = duplicate_cloexec(STDIN_FD)
        .map_err(|errno| io_error("failed to duplicate stdin, the debconf reply stream", errno))?;
    let null = File::open("/dev/null")
        .map_err(|source| io_error("failed to open /dev/null for stdin", source))?;
    nix::unistd::dup2(null.as_raw_fd(), STDIN_FD)
        .map_err(|errno| io_error("failed to point stdin at /dev/null", errno))?;
    Ok(channel)
}

/// Re-executes the current program under the debconf frontend unless `DEBIAN_HAS_FRONTEND`
/// is set, in which case it returns `Ok(())` at once. On success it does not return.
///
/// The frontend receives `DEBCONF_PACKAGE` and `PERL_DL_NONLAZY=1`, which the shell
/// confmodule of debconf 1.5.82 also sets before exec. An inherited `DEBCONF_REDIR` is
/// removed because the new frontend talks to the program on stdin and stdout, not fd 3.
/// A duplicate of stdout without close-on-exec survives both execs, and its number goes into
/// [`OUTPUT_FD_VAR`] for [`report_output`].
pub fn run_under_frontend() -> Result<(), Error> {
    if is_set(env::var_os("DEBIAN_HAS_FRONTEND").as_deref()) {
        return Ok(());
    }
    Err(exec_frontend(Path::new(FRONTEND_PATH)))
}

/// Execs `frontend` on the current program and returns the error when that fails.
pub(super) fn exec_frontend(frontend: &Path) -> Error {
    if !frontend.exists() {
        return Error::NotInstalled {
            path: frontend.to_owned(),
        };
    }
    let program = match env::current_exe() {
        Ok(program) => program,
        Err(source) => return io_error("failed to find the path of the running program", source),
    };
    // A failed flush only loses output that was already written, so exec goes ahead.
    let _ = io::stdout().flush();
    let output_fd = match fcntl(STDOUT_FD, FcntlArg::F_DUPFD(REDIRECTED_FD)) {
        Ok(fd) => fd,
        Err(errno) => return io_error("failed to duplicate stdout for the report output", errno),
    };
    debug!(
        "re-executing {} under {}",
        program.display(),
        frontend.display()
    );
    // The program only reads and stores answers and never displays a question, so an
    // interactive frontend would only print warnings about a missing terminal or dialog.
    let display = env::var_os("DEBIAN_FRONTEND").unwrap_or_else(|| "noninteractive".into());
    let source = Command::new(frontend)
        .arg(&program)
        .args(env::args_os().skip(1))
        .env("DEBCONF_PACKAGE", PACKAGE_NAME)
        .env("PERL_DL_NONLAZY", "1")
        .env("DEBIAN_FRONTEND", display)
        .env(OUTPUT_FD_VAR, output_fd.to_string())
        .env_remove("DEBCONF_REDIR")
        .exec();
    // exec failed, so this process still owns the duplicate and nothing else uses it.
    let _ = nix::unistd::close(output_fd);
    Error::Exec {
        path: frontend.to_owned(),
        source,
    }
}

/// Returns a writer for the program's report, apart from the debconf protocol.
///
/// That is the descriptor named by [`OUTPUT_FD_VAR`] when it is open for writing (the
/// original stdout, passed through the frontend by [`run_under_frontend`]). Otherwise it is
/// stdout, or stderr while stdout carries debconf commands (the frontend started this process
/// and [`Client::from_env`] has not moved the channel yet). The result is a close-on-exec
/// duplicate, and the inherited descriptor is marked close-on-exec as well.
pub fn report_output() -> Result<File, Error> {
    if let Some(fd) = inherited_output_fd(env::var_os(OUTPUT_FD_VAR).as_deref()) {
        set_cloexec(fd)
            .map_err(|errno| io_error(format!("failed to mark fd {fd} close-on-exec"), errno))?;
        let output = duplicate_cloexec(fd)
            .map_err(|errno| io_error(format!("failed to duplicate fd {fd}"), errno))?;
        return Ok(File::from(output));
    }
    let protocol_on_stdout = is_set(env::var_os("DEBIAN_HAS_FRONTEND").as_deref())
        && !is_set(env::var_os("DEBCONF_REDIR").as_deref());
    let (fd, name) = if protocol_on_stdout {
        (STDERR_FD, "stderr")
    } else {
        (STDOUT_FD, "stdout")
    };
    let output = duplicate_cloexec(fd)
        .map_err(|errno| io_error(format!("failed to duplicate {name} for the report"), errno))?;
    Ok(File::from(output))
}

/// Parses the value of [`OUTPUT_FD_VAR`] and returns the descriptor if it is 3 or higher and
/// open for writing. An unusable value is logged and ignored.
pub(super) fn inherited_output_fd(value: Option<&OsStr>) -> Option<RawFd> {
    let value = value?;
    let Some(fd) = value.to_str().and_then(|text| text.parse::<RawFd>().ok()) else {
        warn!("ignoring {OUTPUT_FD_VAR}={value:?}: it is not a file descriptor number");
        return None;
    };
    if fd <= STDERR_FD {
        warn!("ignoring {OUTPUT_FD_VAR}={fd}: it must be 3 or higher");
        return None;
    }
    match is_writable(fd) {
        Ok(true) => Some(fd),
        Ok(false) => {
            warn!("ignoring {OUTPUT_FD_VAR}={fd}: fd {fd} is not open for writing");
            None
        }
        Err(errno) => {
            warn!("ignoring {OUTPUT_FD_VAR}={fd}: fd {fd} is not usable: {errno}");
            None
        }
    }
}
