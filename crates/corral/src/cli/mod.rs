//! The command line: parses arguments and runs one command.

mod check;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, HostEnv, LoadFailure};
use crate::logs::LogHub;
use crate::runtime;

/// corral: run, supervise and connect the processes of a service.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the services and supervise them in the foreground.
    Up {
        /// The config file.
        #[arg(short = 'f', long = "file", default_value = "corral.toml")]
        file: PathBuf,
        /// Start only these services (and what they depend on).
        services: Vec<String>,
    },
    /// Validate the config and print the resolved plan.
    Check {
        /// The config file.
        #[arg(short = 'f', long = "file", default_value = "corral.toml")]
        file: PathBuf,
    },
}

/// Why a command failed, and so which exit code corral returns.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(#[from] runtime::RuntimeError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Runtime(_) | CliError::Io { .. } => 1,
        }
    }
}

/// Runs the parsed command; Ok is corral's exit code on success.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Up { file, services } => up(&file, &services),
        Command::Check { file } => {
            let config = load(&file)?;
            print!("{}", check::plan(&config));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads and validates a config, printing warnings; errors come back all at once.
fn load(file: &Path) -> Result<Config, CliError> {
    let host = HostEnv::from_process();
    match config::load(file, &host) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded.config)
        }
        Err(LoadFailure { errors, warnings }) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            Err(CliError::Config(errors))
        }
    }
}

fn up(file: &Path, only: &[String]) -> Result<ExitCode, CliError> {
    let mut config = load(file)?;
    if !only.is_empty() {
        config = config.select(only).map_err(|unknown| {
            CliError::Usage(format!("unknown service {unknown:?} in {}", file.display()))
        })?;
    }
    let break_glass = config
        .global
        .break_glass
        .clone()
        .filter(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    let names = config.services.iter().map(|s| s.name.clone()).collect();
    let hub = LogHub::start(names).map_err(|source| CliError::Io {
        context: "cannot start the log hub",
        source,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            context: "cannot start the event loop",
            source,
        })?;
    let result = rt.block_on(runtime::run(
        config,
        runtime::Options { break_glass },
        &hub,
    ));
    // Dropping the runtime ends the pipe readers, so the hub can drain and stop.
    drop(rt);
    hub.finish();
    let code = result?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}
