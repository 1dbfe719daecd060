//! Processes: spawning services into their own session, reaping, signalling.

mod reap;
mod spawn;
pub mod tracking;

pub use reap::{children_of, reap_exited, Reaped};
pub use spawn::{spawn, Launch, Output, Spawned};

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

/// Makes every thread allocate from the one main heap. glibc gives each
/// new thread an arena of its own (the log hub, each /proc reader), and an
/// arena keeps its high-water mark resident; corral's threads allocate
/// little and seldom, so they lose nothing by sharing.
pub fn one_heap() {
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread is started.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands the allocator's free pages back to the system. After a burst
/// (starting many services, a storm of log followers) the heap keeps its
/// high-water mark resident otherwise: at 100 services, the parse of the
/// config and the first spawns leave ~100 kB that no one uses again.
pub fn give_back_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns free memory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
