//! corral: a process supervisor, PID 1, and service discovery.
//!
//! One executable is both the command line and the daemon: `corral up`
//! execs the same file under the name `corrald` (same pid, PID 1 included),
//! which runs the daemon without parsing a command line with clap. So the
//! daemon never runs the CLI's code, and the code layout (build.rs) keeps
//! that code out of its memory: a fault maps only the windows of code that
//! runs, and the daemon's code comes first in `.text`.

mod cli;
mod config;
mod control;
mod discovery;
mod engine;
mod logs;
mod process;
mod runtime;
mod state;
mod strings;
mod tcp;

// build.rs's globs over symbol names, tested here (a build script has no tests).
#[cfg(test)]
#[path = "../layout/glob.rs"]
mod layout_glob;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The name under which the executable is the daemon: how `corral up`
/// execs itself, or a link of that name.
const DAEMON: &str = "corrald";
/// The first argument that makes the executable the daemon whatever its
/// argv[0] (which some exec wrappers replace, valgrind among them).
const DAEMON_FLAG: &str = "--daemon";

/// The command line, or the daemon when invoked as `corrald` or with
/// `--daemon` first.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let named = args
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        == Some(OsStr::new(DAEMON));
    if named || args.next().as_deref() == Some(OsStr::new(DAEMON_FLAG)) {
        cli::main_daemon()
    } else {
        cli::main_cli()
    }
}

/// A command that runs this executable as the daemon: the file the kernel
/// started (else /proc's link to it, when the file was replaced or removed
/// since; else argv[0], when /proc is not mounted), as `corrald --daemon`.
fn daemon_command() -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .or_else(|| Some(PathBuf::from("/proc/self/exe")).filter(|p| p.exists()))
        .or_else(|| std::env::args_os().next().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("corral"));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0(DAEMON).arg(DAEMON_FLAG);
    cmd
}

/// The wall clock in seconds since the Unix epoch, as the API carries times.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
