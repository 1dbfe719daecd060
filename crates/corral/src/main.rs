//! corral: a process supervisor, PID 1, and service discovery in one binary.

mod cli;
mod config;
mod control;
mod discovery;
mod engine;
mod logs;
mod process;
mod runtime;
mod tcp;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version (exit 0) or a usage error (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(cli::CliError::Config(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("corral: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
