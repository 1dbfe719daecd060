//! Spawning a service process: own session, user switch, parent-death signal.

use std::os::fd::OwnedFd;
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
}

/// A started process and the read ends of its stdout and stderr.
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
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
pub fn spawn(launch: &Launch<'_>) -> Result<Spawned, SpawnError> {
    let (program, args) = launch.argv.split_first().ok_or(SpawnError::Empty)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = launch.working_dir {
        cmd.current_dir(dir);
    }
    let parent = std::process::id() as libc::pid_t;
    let ids = launch
        .user
        .map(|u| (u.uid as libc::uid_t, u.gid as libc::gid_t, u.groups.clone()));
    // SAFETY: the closure runs in the child between fork and exec and makes only
    // async-signal-safe system calls; `ids` was built in the parent.
    unsafe {
        cmd.pre_exec(move || in_child(parent, ids.as_ref()));
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: program.clone(),
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SpawnError::Exec {
            program: program.clone(),
            source: std::io::Error::other("no output pipes"),
        });
    };
    Ok(Spawned {
        pid: child.id() as i32,
        stdout: stdout.into(),
        stderr: stderr.into(),
    })
}

/// Runs in the forked child: only raw system calls, no allocation, no locks.
fn in_child(
    parent: libc::pid_t,
    ids: Option<&(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
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
        check(libc::setsid())?;
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
