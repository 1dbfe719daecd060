//! Spawning a service process: own session, user switch, parent-death signal.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::Identity;

/// Everything needed to start one process of a service.
pub struct Launch<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a Path>,
    pub user: Option<&'a Identity>,
    /// Pipe stdout/stderr to corral, or send them to /dev/null (probes).
    pub capture_output: bool,
    /// A pipe's write end to hand to the child as this fd number (notify-fd readiness).
    pub notify: Option<(OwnedFd, i32)>,
    /// The run's marker, set in the child's environment (`tracking::RUN_ID_VAR`).
    pub run_id: Option<&'a str>,
    /// A cgroup's `cgroup.procs`, opened for writing: the child moves itself there.
    pub cgroup: Option<OwnedFd>,
}

/// A started process and the read ends of its stdout and stderr (when captured).
pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot run {program:?}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("command is empty")]
    Empty,
}

/// Spawns `launch` in a new session (so it leads its own process group), with
/// stdin from /dev/null and stdout/stderr on pipes.
pub fn spawn(launch: Launch<'_>) -> Result<Spawned, SpawnError> {
    let (program, args) = launch.argv.split_first().ok_or(SpawnError::Empty)?;
    let output = || {
        if launch.capture_output {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .envs(launch.run_id.map(|id| (super::tracking::RUN_ID_VAR, id)))
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output());
    if let Some(dir) = launch.working_dir {
        cmd.current_dir(dir);
    }
    let parent = std::process::id() as libc::pid_t;
    let ids = launch
        .user
        .map(|u| (u.uid as libc::uid_t, u.gid as libc::gid_t, u.groups.clone()));
    // The write end lives in the closure, so it closes in the parent once
    // `cmd` is dropped, right after the spawn.
    let notify = launch.notify;
    let cgroup = launch.cgroup;
    let cgroup_fd = cgroup.as_ref().map(AsRawFd::as_raw_fd);
    let notify_fds = notify
        .as_ref()
        .map(|(fd, target)| (fd.as_raw_fd(), *target));
    // Keep the target fd number taken in corral during the spawn, so std's own
    // exec-status pipe cannot land on it and be overwritten in the child.
    let _placeholder = notify_fds.and_then(|(_, target)| reserve_fd(target));
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe system calls; `ids` was built in the parent.
    unsafe {
        cmd.pre_exec(move || {
            let _keep_open = (&notify, &cgroup);
            in_child(parent, ids.as_ref(), notify_fds, cgroup_fd)
        });
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: program.clone(),
        source,
    })?;
    Ok(Spawned {
        pid: child.id() as i32,
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// Occupies fd number `target` with /dev/null (close-on-exec) if it is free.
fn reserve_fd(target: libc::c_int) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl only queries the descriptor table.
    if unsafe { libc::fcntl(target, libc::F_GETFD) } != -1 {
        return None;
    }
    let null = std::fs::File::open("/dev/null").ok()?;
    // SAFETY: dup3 onto a free descriptor number; the new fd is owned below.
    let fd = unsafe { libc::dup3(null.as_raw_fd(), target, libc::O_CLOEXEC) };
    // SAFETY: dup3 returned a fresh descriptor that nothing else owns.
    (fd == target).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs in the forked child: only raw system calls, no allocation, no locks.
fn in_child(
    parent: libc::pid_t,
    ids: Option<&(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    notify: Option<(libc::c_int, libc::c_int)>,
    cgroup: Option<libc::c_int>,
) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on values owned by this frame.
    unsafe {
        if let Some(fd) = cgroup {
            // Moves this process (pid "0": the writer) into the service's
            // cgroup, while still privileged. Failing leaves it where corral
            // is, tracked by its marker only: not a reason to fail the start.
            libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        check(libc::setsid())?;
        if let Some((fd, target)) = notify {
            if fd == target {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            } else {
                // dup2 clears close-on-exec on the new descriptor.
                check(libc::dup2(fd, target))?;
            }
        }
        if let Some((uid, gid, groups)) = ids {
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(*gid))?;
            check(libc::setuid(*uid))?;
        }
        // After the credential change, which would clear it.
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        if libc::getppid() != parent {
            // corral died before the signal was armed.
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}
