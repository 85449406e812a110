//! The command line of postfix-submission, shared by the binary and the test that keeps
//! the man page in step with it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Configure authenticated mail submission (ports 587 and 465) on Postfix with Dovecot.
///
/// The answers come from debconf (`dpkg-reconfigure postfix-submission` changes them).
/// Settings are written with postconf, checked with `postfix check`, and reverted on
/// `remove`. Run as root.
#[derive(Debug, Parser)]
#[command(name = "postfix-submission", version, about, long_about)]
pub struct Cli {
    /// Also show the commands run and their warnings.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Also show the debconf protocol exchange (never the answer values).
    #[arg(long, global = true)]
    pub debug: bool,

    /// Postfix configuration directory.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "MAIL_CONFIG",
        default_value = "/etc/postfix"
    )]
    pub config_dir: PathBuf,

    /// Dovecot's main configuration file; the snippet goes into conf.d beside it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/dovecot/dovecot.conf"
    )]
    pub dovecot_config: PathBuf,

    /// Directory of the record of what was changed.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/postfix-submission"
    )]
    pub state_dir: PathBuf,

    /// Directory of the templates that the settings are rendered from.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/usr/share/postfix-submission/templates"
    )]
    pub templates_dir: PathBuf,

    /// Let's Encrypt's live directory, searched for myhostname's certificate when the
    /// certificate answers are empty.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/etc/letsencrypt/live"
    )]
    pub letsencrypt_dir: PathBuf,

    /// Write the configuration but reload neither Postfix nor Dovecot.
    #[arg(long, global = true)]
    pub no_reload: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the debconf answers and configure Postfix and Dovecot to match; changes
    /// nothing when nothing differs. postinst runs this.
    Apply {
        /// Print what would change as a unified diff, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revert every change the package made to main.cf and master.cf, delete its Dovecot
    /// snippet and its record. prerm runs this on package removal.
    Remove {
        /// Print what would change as a unified diff, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what the package manages: each setting, whether it still holds the applied
    /// value, the services, the auth socket and the certificate.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}
