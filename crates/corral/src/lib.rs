//! corral: a process supervisor, PID 1, and service discovery.
//!
//! Two binaries are built from this library: `corral`, the command line
//! users run, and `corrald`, the daemon that `corral up` execs (same pid,
//! same arguments resolved). The daemon links neither clap nor the client
//! commands: measured, 390 KB less code and 333 kB less PSS at 100 services
//! (bench/RESULTS.md), and on the kernels corral runs on the code of a
//! binary is resident in every process that maps it, used or not.

mod cli;
mod config;
mod control;
mod discovery;
mod engine;
mod logs;
mod process;
mod runtime;
mod strings;
mod tcp;

// build.rs's globs over symbol names, tested here (a build script has no tests).
#[cfg(test)]
#[path = "../layout/glob.rs"]
mod layout_glob;

pub use cli::{main_cli, main_daemon};

/// The wall clock in seconds since the Unix epoch, as the API carries times.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
