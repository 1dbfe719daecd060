//! Processes: spawning services into their own session, reaping, signalling.

mod reap;
mod spawn;
pub mod tracking;

pub use reap::{children_of, reap_exited};
pub use spawn::{spawn, Launch, Spawned};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Sends a signal to the process group led by `pid`; a group that is already gone is fine.
pub fn signal_group(pid: i32, signal: Signal) -> nix::Result<()> {
    match killpg(Pid::from_raw(pid), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Sends a signal to one process; a process that is already gone is fine.
pub fn signal_process(pid: i32, signal: Signal) -> nix::Result<()> {
    match kill(Pid::from_raw(pid), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Unless corral is PID 1, makes it the reaper of its orphaned descendants, so
/// daemons that double-fork stay its children and can still be stopped.
pub fn become_subreaper() -> nix::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true)
}
