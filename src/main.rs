//! The postfix-submission command: parses the command line and runs a subcommand.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use log::LevelFilter;

use postfix_submission::answers::PACKAGE;
use postfix_submission::cli::{Cli, Command, Format};
use postfix_submission::commands::{self, AnswerStore, Locations};
use postfix_submission::debconf::{self, Client};
use postfix_submission::{logger, status};

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
    let writes = match cli.command {
        Command::Apply { dry_run } | Command::Remove { dry_run } => !dry_run,
        Command::Status { .. } => false,
    };
    if writes && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "this command changes Postfix's and Dovecot's configuration and must run as \
             root; --dry-run shows the changes without making them"
        );
    }
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
            commands::remove(&locations, dry_run, &mut out).context(
                "failed to revert the package's changes; fix the problem and run \
                 'dpkg --remove postfix-submission' (or 'postfix-submission remove') again",
            )
        }
        Command::Status { format } => {
            let mut out = std::io::stdout().lock();
            status::show(&locations, format == Format::Json, &mut out)
        }
    }
}
