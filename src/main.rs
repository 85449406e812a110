//! The postfix-submission command: parses the command line and runs a subcommand.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use log::LevelFilter;

use postfix_submission::answers::PACKAGE;
use postfix_submission::commands::{self, AnswerStore, Locations};
use postfix_submission::debconf::{self, Client};
use postfix_submission::{logger, status};

/// Configure authenticated mail submission (ports 587 and 465) on Postfix with Dovecot.
///
/// The answers come from debconf (`dpkg-reconfigure postfix-submission` changes them).
/// Settings are written with postconf, checked with `postfix check`, and reverted on
/// `remove`. Run as root.
#[derive(Debug, Parser)]
#[command(name = "postfix-submission", version, about, long_about)]
struct Cli {
    /// Also show the commands run and their warnings.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// Also show the debconf protocol exchange (never the answer values).
    #[arg(long, global = true)]
    debug: bool,

    /// Postfix configuration directory.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "MAIL_CONFIG",
        default_value = "/etc/postfix"
    )]
    config_dir: PathBuf,

    /// Dovecot's main configuration file; the snippet goes into conf.d beside it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/dovecot/dovecot.conf"
    )]
    dovecot_config: PathBuf,

    /// Directory of the record of what was changed.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/postfix-submission"
    )]
    state_dir: PathBuf,

    /// Directory of the templates that the settings are rendered from.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/usr/share/postfix-submission/templates"
    )]
    templates_dir: PathBuf,

    /// Let's Encrypt's live directory, searched for myhostname's certificate when the
    /// certificate answers are empty.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/etc/letsencrypt/live"
    )]
    letsencrypt_dir: PathBuf,

    /// Write the configuration but reload neither Postfix nor Dovecot.
    #[arg(long, global = true)]
    no_reload: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
enum Format {
    Text,
    Json,
}

/// Reads and writes answers over the debconf protocol.
struct DebconfStore(Client);

impl AnswerStore for DebconfStore {
    fn get(&mut self, question: &'static str) -> Result<String> {
        self.0.get(question).with_context(|| {
            format!(
                "failed to read the answer to {question} from debconf; is {PACKAGE} installed \
                 (its templates must be registered)?"
            )
        })
    }

    fn set(&mut self, question: &'static str, value: &str) -> Result<()> {
        self.0
            .set(question, value)
            .with_context(|| format!("failed to store the answer to {question} in debconf"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.debug, cli.verbose) {
        (true, _) => LevelFilter::Trace,
        (false, true) => LevelFilter::Debug,
        (false, false) => LevelFilter::Info,
    };
    logger::init(level);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let locations = Locations {
        postfix_config_dir: cli.config_dir.clone(),
        dovecot_config: cli.dovecot_config.clone(),
        state_dir: cli.state_dir.clone(),
        templates_dir: cli.templates_dir.clone(),
        letsencrypt_live: cli.letsencrypt_dir.clone(),
        reload: !cli.no_reload,
    };
    match cli.command {
        Command::Apply { dry_run } => {
            debconf::run_under_frontend().context("failed to start a debconf frontend")?;
            let mut out = debconf::report_output().context("failed to open the report output")?;
            let mut client = Client::from_env().context("failed to connect to debconf")?;
            client
                .capb(&["escape"])
                .context("failed to negotiate debconf capabilities")?;
            let mut store = DebconfStore(client);
            commands::apply(&locations, &mut store, dry_run, &mut out)?;
            out.flush().context("failed to write the report")
        }
        Command::Remove { dry_run } => {
            let mut out = std::io::stdout().lock();
            commands::remove(&locations, dry_run, &mut out)
        }
        Command::Status { format } => {
            let mut out = std::io::stdout().lock();
            status::show(&locations, format == Format::Json, &mut out)
        }
    }
}
