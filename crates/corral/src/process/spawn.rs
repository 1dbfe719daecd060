//! Spawning a service process: own session, own cgroup, user switch,
//! parent-death signal.
//!
//! corral starts processes by hand rather than through
//! `std::process::Command`, for two reasons. With a cgroup, the child is
//! created in it (`clone3` with `CLONE_INTO_CGROUP`): moving a process into
//! a cgroup after the fork, by a write to `cgroup.procs`, waits for an RCU
//! grace period on most kernels, a delay on every restart. And the
//! child shares corral's memory until it execs, as posix_spawn does (on
//! x86-64: `CLONE_VM | CLONE_VFORK`), where a fork would copy the page
//! tables of the whole daemon for every process it starts, so one spawn
//! costs about what posix_spawn costs whatever corral's size. Everything
//! the child needs (paths, argv, environment, descriptors) is prepared
//! before; the child makes only async-signal-safe system calls, writes
//! nothing the parent relies on but why it could not exec, if it could not
//! (its stack is a buffer the parent set aside; the parent reads that once
//! the child has exited). A forked child (the fallback where clone3 is
//! refused) reports it through a close-on-exec pipe instead, as std does.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Identity;

/// Everything needed to start one process of a service.
pub struct Launch<'a> {
    pub argv: &'a [String],
    pub env: &'a crate::config::Env,
    /// Added after `env`: the instance's own variables, what discovery
    /// tells the service now.
    pub extra_env: Vec<(String, String)>,
    pub working_dir: Option<&'a Path>,
    pub user: Option<&'a Identity>,
    /// Where the process's stdout and stderr go.
    pub output: Output,
    /// A pipe's write end to hand to the child as this fd number (notify-fd readiness).
    pub notify: Option<(OwnedFd, i32)>,
    /// Listening sockets corral holds, passed as fds 3, 4, ... (LISTEN_FDS).
    pub listen: &'a [RawFd],
    /// Variables set to the child's own pid, known only once it exists
    /// (LISTEN_PID, WATCHDOG_PID).
    pub pid_vars: &'a [&'a str],
    /// The run's marker, set in the child's environment (`tracking::RUN_ID_VAR`).
    pub run_id: Option<&'a str>,
    /// A cgroup directory, opened: the child is created in it.
    pub cgroup: Option<OwnedFd>,
}

/// Where a process's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To /dev/null (probes).
    Null,
    /// A pipe each, read by corral.
    Pipes,
    /// One pipe for both (the stderr of `Spawned` is None): half the
    /// descriptors, and lines keep the order they were written in.
    Merged,
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
    #[error("cannot enter the working dir {dir}: {source}")]
    WorkingDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot run {program:?}: out of file descriptors (limit {limit}): corral keeps two \
         pipes per running service (one with log.merge-stderr); raise the limit (ulimit -n, \
         docker run --ulimit nofile=N)"
    )]
    Descriptors { program: String, limit: u64 },
}

impl SpawnError {
    /// The program cannot be run at all (missing, not executable, not a
    /// program, a bad command): trying again would fail the same way.
    pub fn is_permanent(&self) -> bool {
        match self {
            SpawnError::Empty => true,
            SpawnError::Descriptors { .. } => false,
            // It may be created, or its permissions fixed, meanwhile.
            SpawnError::WorkingDir { .. } => false,
            SpawnError::Exec { source, .. } => {
                source.kind() == std::io::ErrorKind::InvalidInput
                    || matches!(
                        source.raw_os_error(),
                        Some(
                            libc::ENOENT
                                | libc::EACCES
                                | libc::ENOEXEC
                                | libc::ENOTDIR
                                | libc::EISDIR
                                | libc::ELOOP
                                | libc::ENAMETOOLONG
                        )
                    )
            }
        }
    }
}

/// Marks a child's errno as that of its chdir, not of its exec.
const IN_WORKING_DIR: libc::c_int = 1 << 20;

/// Where a command is looked up when its environment has no PATH.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Spawns `launch` in a new session (so it leads its own process group), with
/// stdin from /dev/null and stdout/stderr on pipes.
pub fn spawn(launch: Launch<'_>) -> Result<Spawned, SpawnError> {
    let (program, _) = launch.argv.split_first().ok_or(SpawnError::Empty)?;
    let fail = |source: std::io::Error| match source.raw_os_error() {
        Some(libc::EMFILE) => SpawnError::Descriptors {
            program: program.clone(),
            limit: descriptor_limit(),
        },
        _ => SpawnError::Exec {
            program: program.clone(),
            source,
        },
    };
    // Keep the notify target's fd number taken while descriptors are made
    // below, so none of them lands on it and is overwritten in the child.
    let _placeholder = launch
        .notify
        .as_ref()
        .and_then(|(_, target)| reserve_fd(*target));
    // Likewise the numbers the sockets go to (the free ones: a taken one
    // is corral's own, which the child may overwrite).
    let _sockets: Vec<OwnedFd> = (0..launch.listen.len() as RawFd)
        .filter_map(|i| reserve_fd(LISTEN_FDS_START + i))
        .collect();
    let plan = Plan::new(&launch).map_err(fail)?;
    let null = dev_null().map_err(fail)?;
    let (stdout, out_w) = output_pipe(launch.output, null).map_err(fail)?;
    let (stderr, err_w) = match launch.output {
        Output::Merged => (None, None),
        output => output_pipe(output, null)
            .map(|(r, w)| (r, Some(w)))
            .map_err(fail)?,
    };
    let highest = err_w.as_ref().unwrap_or(&out_w).as_raw_fd();
    if near_descriptor_limit(highest) {
        return Err(fail(std::io::Error::from_raw_os_error(libc::EMFILE)));
    }
    let ids = launch.user.map(|u| {
        (
            u.uid as libc::uid_t,
            u.gid as libc::gid_t,
            u.groups.as_slice(),
        )
    });
    let parent = std::process::id() as libc::pid_t;
    let cgroup = launch.cgroup.as_ref().map(AsRawFd::as_raw_fd);
    // Twice at most: a first clone that shares memory turns out not to be
    // possible here, and a fork needs the status pipe.
    let (pid, failed) = loop {
        // A child that shares corral's memory until it execs reports a
        // failure to exec in it (`Child::failed`); one that was forked,
        // through a close-on-exec pipe, system calls the first one spares.
        let shared = shares_memory();
        let (status_r, status_w) = if shared {
            (None, None)
        } else {
            let (r, w) = pipe().map_err(fail)?;
            (Some(r), Some(w))
        };
        let fds = ChildFds {
            stdin: null.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_ref().unwrap_or(&out_w).as_raw_fd(),
            status: status_w
                .as_ref()
                .map_or(null.as_raw_fd(), AsRawFd::as_raw_fd),
            notify: launch
                .notify
                .as_ref()
                .map(|(fd, target)| (fd.as_raw_fd(), *target)),
            listen: launch.listen,
        };
        // The child's descriptors at low fixed numbers, so that it can take
        // a table of its own holding only those (see `Slots`).
        let slotted = Slots::take(&fds);
        let child = Child {
            plan: &plan,
            fds: slotted.as_ref().map_or(&fds, |(_, fds)| fds),
            ids,
            parent,
            own_table_below: slotted.as_ref().map(|_| SLOT_END),
            reset: std::sync::atomic::AtomicU64::new(ALL_SIGNALS),
            failed: std::sync::atomic::AtomicI32::new(0),
        };
        let pid = fork_into(cgroup, &child, slotted.is_some(), shared);
        // The child has exec'd or exited: what it wrote is final.
        let failed = child.failed.load(Ordering::Acquire);
        drop(slotted);
        let Some(pid) = pid.map_err(fail)? else {
            continue;
        };
        drop(status_w);
        let failed = match status_r {
            Some(status_r) => read_status(&status_r),
            None => (failed != 0).then_some(failed),
        };
        break (pid, failed);
    };
    // The child's ends close here.
    drop((out_w, err_w, launch.notify));
    if let Some(errno) = failed {
        let mut status = 0;
        // SAFETY: waitpid on the child we just forked, which has exited or is exiting.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if errno & IN_WORKING_DIR != 0 {
            return Err(SpawnError::WorkingDir {
                dir: launch
                    .working_dir
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                source: std::io::Error::from_raw_os_error(errno & !IN_WORKING_DIR),
            });
        }
        return Err(fail(std::io::Error::from_raw_os_error(errno)));
    }
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// Descriptors a spawn leaves free for the rest of corral: the control
/// API's connections, probes, log files, cgroups. Without them, services
/// that took the last descriptors would leave corral unable to answer even
/// `corral ps` (the API refuses clients past half the limit on its side).
const SPAWN_RESERVE: u64 = 16;

/// The limit as last read (0: not yet).
static LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether a descriptor numbered `fd` leaves fewer than `SPAWN_RESERVE`
/// free. Descriptors are numbered lowest free first, so every number below
/// it is taken. The limit is read again only when near it (it may have been
/// raised by prlimit meanwhile).
fn near_descriptor_limit(fd: RawFd) -> bool {
    let near = |limit: u64| u64::try_from(fd).unwrap_or(0) + SPAWN_RESERVE >= limit;
    let cached = LIMIT.load(Ordering::Relaxed);
    if cached != 0 && !near(cached) {
        return false;
    }
    let limit = descriptor_limit();
    LIMIT.store(limit, Ordering::Relaxed);
    near(limit)
}

/// corral's limit on open descriptors (RLIMIT_NOFILE, soft).
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}

/// The first descriptor a socket is passed on (systemd's SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: RawFd = 3;

/// The most sockets a child gets (the child places them from a fixed array).
const MAX_LISTEN: usize = crate::config::MAX_SOCKETS;

/// Room for a pid in a `NAME=` variable (pid_max is at most 2^22).
const PID_DIGITS: usize = 10;

/// What the child execs, prepared in the parent (the child may not allocate).
struct Plan {
    /// Where the child writes its pid (`pid_vars`): PID_DIGITS + 1 bytes each.
    pid_slots: Vec<*mut u8>,
    /// Paths to try in order: the program itself, or each PATH entry joined to it.
    candidates: Vec<*const libc::c_char>,
    dir: Option<*const libc::c_char>,
    /// Every string the pointers here point into (`Text`).
    _text: Text,
    /// NULL-terminated arrays of pointers, for execve.
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

/// The C strings of a spawn laid end to end in one buffer: one allocation
/// where a CString each took ~20 (argv, the environment, a path per PATH
/// entry), each made by `format!`: callgrind counted 39 K instructions a
/// spawn with those, 21 K with this (bench/RESULTS.md). Not
/// `strings::Builder`: that one holds UTF-8 without terminators, and a
/// working dir need not be UTF-8.
struct Text(Vec<u8>);

impl Text {
    /// Appends the pieces joined as one NUL-terminated string; returns
    /// where it starts.
    fn push(&mut self, pieces: &[&[u8]]) -> std::io::Result<usize> {
        let start = self.0.len();
        for piece in pieces {
            if piece.contains(&0) {
                self.0.truncate(start);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a NUL byte in its command, environment or working dir",
                ));
            }
            self.0.extend_from_slice(piece);
        }
        self.0.push(0);
        Ok(start)
    }

    /// The string that starts at `offset`. Valid while the buffer is
    /// neither changed nor dropped (moving it keeps its heap buffer).
    fn ptr(&self, offset: usize) -> *const libc::c_char {
        self.0.as_ptr().wrapping_add(offset).cast()
    }
}

impl Plan {
    fn new(launch: &Launch<'_>) -> std::io::Result<Plan> {
        let mut text = Text(Vec::with_capacity(2048));
        let argv = launch
            .argv
            .iter()
            .map(|a| text.push(&[a.as_bytes()]))
            .collect::<Result<Vec<_>, _>>()?;
        let mut envp = Vec::with_capacity(launch.env.len() + launch.extra_env.len() + 1);
        let extra = launch
            .extra_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        for (k, v) in launch.env.iter().chain(extra) {
            envp.push(text.push(&[k.as_bytes(), b"=", v.as_bytes()])?);
        }
        if let Some(id) = launch.run_id {
            let var = super::tracking::RUN_ID_VAR;
            envp.push(text.push(&[var.as_bytes(), b"=", id.as_bytes()])?);
        }
        let mut pid_offsets = Vec::with_capacity(launch.pid_vars.len());
        for var in launch.pid_vars {
            let at = text.push(&[var.as_bytes(), b"=", &[b'0'; PID_DIGITS]])?;
            envp.push(at);
            pid_offsets.push(at + var.len() + 1);
        }
        let program = launch.argv.first().map_or("", String::as_str);
        let candidates = if program.contains('/') {
            vec![text.push(&[program.as_bytes()])?]
        } else {
            // As execvp does, with the PATH the child will have.
            let path = launch
                .extra_env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str())
                .or_else(|| launch.env.get("PATH"))
                .unwrap_or(DEFAULT_PATH);
            path.split(':')
                .map(|dir| {
                    let dir = if dir.is_empty() { "." } else { dir };
                    text.push(&[dir.as_bytes(), b"/", program.as_bytes()])
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let dir = launch
            .working_dir
            .map(|d| text.push(&[OsStr::as_bytes(d.as_os_str())]))
            .transpose()?;
        // Pointers only now: the buffer no longer grows. Those the child
        // writes through come from the buffer's own pointer (Vec's as_ptr
        // and as_mut_ptr may be used together).
        let base = text.0.as_mut_ptr();
        let pid_slots = pid_offsets.iter().map(|&o| base.wrapping_add(o)).collect();
        let ptrs = |offsets: &[usize]| {
            offsets
                .iter()
                .map(|&o| text.ptr(o))
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(Plan {
            pid_slots,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            candidates: candidates.iter().map(|&o| text.ptr(o)).collect(),
            dir: dir.map(|o| text.ptr(o)),
            _text: text,
        })
    }
}

/// Descriptor numbers the child puts in place.
struct ChildFds<'a> {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// Close-on-exec: a forked child writes its errno here if it cannot
    /// exec (a pipe); /dev/null for a child that shares corral's memory.
    status: RawFd,
    notify: Option<(RawFd, RawFd)>,
    /// Sockets to put at LISTEN_FDS_START, LISTEN_FDS_START + 1, ...
    listen: &'a [RawFd],
}

/// Everything the child reads: borrowed from the parent's frame, which a
/// fork copies as it is.
struct Child<'a> {
    plan: &'a Plan,
    fds: &'a ChildFds<'a>,
    ids: Option<(libc::uid_t, libc::gid_t, &'a [u32])>,
    parent: libc::pid_t,
    /// Its descriptors are all below this number: it starts on corral's
    /// descriptor table and takes a copy of only this part of it.
    own_table_below: Option<RawFd>,
    /// The signals the child sets to their default: every one, unless the
    /// kernel already reset the handled ones (`CLONE_CLEAR_SIGHAND`); then
    /// only those corral ignores. Set by the parent just before each clone.
    reset: std::sync::atomic::AtomicU64,
    /// Why the child could not exec (an errno; 0: it did), written by a
    /// child that shares corral's memory before it exits.
    failed: std::sync::atomic::AtomicI32,
}

/// First of the descriptor numbers the child's descriptors are put at.
/// corral opens /dev/null there once and keeps them; a spawn puts the
/// child's descriptors in their place, and /dev/null back after.
const SLOT_BASE: RawFd = 40;
/// stdin, stdout, stderr, the status pipe, the notify pipe.
const SLOT_COUNT: RawFd = 5;
const SLOT_END: RawFd = SLOT_BASE + SLOT_COUNT;

/// Whether the reserved descriptor numbers could be reserved (they were
/// free when first asked for; None: not asked yet), behind a lock: spawns
/// from several threads (tests) take turns.
static SLOTS: std::sync::Mutex<Option<bool>> = std::sync::Mutex::new(None);

/// Why the slots: a child that got a copy of corral's whole descriptor
/// table (what a fork does) costs the kernel a copy of every entry and,
/// at exec, a close of every one: with two pipes per service, that is
/// O(services) per spawn and O(services^2) to start them all.
/// Instead the child shares corral's table (CLONE_FILES) and takes a
/// private copy of its first SLOT_END entries (`close_range` with
/// CLOSE_RANGE_UNSHARE) before it changes anything.
struct Slots;

impl Slots {
    /// Puts the child's descriptors at the slot numbers; the lock is held
    /// until the returned guard is dropped, which puts /dev/null back.
    /// None: no slots here (taken numbers, a notify target among them).
    fn take<'a>(fds: &ChildFds<'a>) -> Option<(SlotGuard, ChildFds<'a>)> {
        // Sockets are few services' and at any number: such a child takes a
        // copy of the whole table.
        if !fds.listen.is_empty()
            || fds
                .notify
                .is_some_and(|(_, target)| (SLOT_BASE..SLOT_END).contains(&target))
        {
            return None;
        }
        let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let placeholder = dev_null().ok()?.as_raw_fd();
        if !*slots.get_or_insert_with(|| reserve_slots(placeholder)) {
            return None;
        }
        let moved = ChildFds {
            stdin: SLOT_BASE,
            stdout: SLOT_BASE + 1,
            stderr: SLOT_BASE + 2,
            status: SLOT_BASE + 3,
            notify: fds.notify.map(|(_, target)| (SLOT_BASE + 4, target)),
            listen: &[],
        };
        let pairs = [
            (fds.stdin, moved.stdin),
            (fds.stdout, moved.stdout),
            (fds.stderr, moved.stderr),
            (fds.status, moved.status),
        ];
        let notify = fds.notify.map(|(fd, _)| (fd, SLOT_BASE + 4));
        let mut guard = SlotGuard {
            slots,
            placeholder,
            taken: 0,
        };
        for (from, to) in pairs.into_iter().chain(notify) {
            if from == placeholder {
                continue; // /dev/null (stdin, the status of a vfork child): there already.
            }
            // SAFETY: dup3 onto a slot number this lock reserves: it
            // replaces the /dev/null kept there, nothing else's.
            if unsafe { libc::dup3(from, to, libc::O_CLOEXEC) } != to {
                return None; // The guard puts /dev/null back.
            }
            guard.taken |= 1 << (to - SLOT_BASE);
        }
        Some((guard, moved))
    }
}

/// Holds the slots; puts /dev/null back in them when dropped, so no pipe
/// end stays open in corral.
struct SlotGuard {
    #[allow(dead_code)] // held for the lock
    slots: std::sync::MutexGuard<'static, Option<bool>>,
    placeholder: RawFd,
    /// The slots given another descriptor (bit n: SLOT_BASE + n).
    taken: u32,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        for slot in SLOT_BASE..SLOT_END {
            if self.taken & (1 << (slot - SLOT_BASE)) != 0 {
                // SAFETY: as in `take`: the slot numbers are ours.
                unsafe { libc::dup3(self.placeholder, slot, libc::O_CLOEXEC) };
            }
        }
    }
}

/// Puts `null` (/dev/null) at every slot number, if they are all free.
fn reserve_slots(null: RawFd) -> bool {
    let free = (SLOT_BASE..SLOT_END).all(|fd| {
        // SAFETY: fcntl only queries the descriptor table.
        unsafe { libc::fcntl(fd, libc::F_GETFD) == -1 }
    });
    // SAFETY: dup3 onto free numbers, kept for the life of corral.
    free && (SLOT_BASE..SLOT_END)
        .all(|slot| unsafe { libc::dup3(null, slot, libc::O_CLOEXEC) } == slot)
}

/// `clone3(CLONE_INTO_CGROUP)` turned out not to work here (an old kernel,
/// or a seccomp filter that refuses clone3): fork and move instead.
static NO_CLONE3: AtomicBool = AtomicBool::new(false);

/// Whether a child shares corral's memory until it execs (`clone3_vm`, on
/// x86-64, while clone3 works here).
fn shares_memory() -> bool {
    cfg!(target_arch = "x86_64") && !NO_CLONE3.load(Ordering::Relaxed)
}

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Linux 5.5: the child starts with every handled signal at its default.
#[cfg(target_arch = "x86_64")]
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// Signals 1-64, one bit each (bit n-1 for signal n).
const ALL_SIGNALS: u64 = u64::MAX;

/// `CLONE_CLEAR_SIGHAND` was refused (a kernel before 5.5): the child
/// resets every signal itself.
#[cfg(target_arch = "x86_64")]
static NO_CLEAR_SIGHAND: AtomicBool = AtomicBool::new(false);

/// The signals corral ignores (SIG_IGN): Rust's SIGPIPE and whatever was
/// ignored when corral was started (`nohup`, a shell's `trap ''`). They
/// stay ignored across clone and exec, so a child resets them itself;
/// `CLONE_CLEAR_SIGHAND` resets only handled ones. Read once: corral sets
/// no signal to SIG_IGN after it starts (handlers it installs are reset by
/// the flag, whenever they came).
#[cfg(target_arch = "x86_64")]
fn ignored_signals() -> u64 {
    static IGNORED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *IGNORED.get_or_init(|| {
        let mut ignored = 0;
        for sig in 1..=64 {
            let mut old = KernelSigaction::default();
            // SAFETY: no new action: the call only reads into `old`.
            let r = unsafe { rt_sigaction(sig, std::ptr::null(), &mut old) };
            if r == 0 && old[0] == libc::SIG_IGN as u64 {
                ignored |= 1 << (sig - 1);
            }
        }
        ignored
    })
}

/// The kernel's `struct sigaction` (handler, flags, restorer, mask): what
/// the raw system call takes, whatever libc's own struct looks like.
type KernelSigaction = [u64; 4];

/// The raw `rt_sigaction` (libc's wrapper refuses the signals it keeps for
/// itself); async-signal-safe, so the child may call it.
///
/// # Safety
/// `new` and `old` are null or point to a `KernelSigaction`.
unsafe fn rt_sigaction(
    sig: libc::c_int,
    new: *const KernelSigaction,
    old: *mut KernelSigaction,
) -> libc::c_long {
    // SAFETY: as the caller promises; 8 is the size of the kernel's sigset.
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, new, old, 8usize) }
}

/// Starts the child, which runs `child` and never returns; returns its pid.
///
/// On x86-64 the child shares corral's memory until it execs, as with
/// vfork (`clone3(CLONE_VM | CLONE_VFORK)`, on a stack of its own): no page
/// table is copied, which is most of what a fork of a big process costs.
/// Elsewhere, or where clone3 is refused, it is a plain fork.
fn fork_into(
    cgroup: Option<RawFd>,
    child: &Child<'_>,
    share_table: bool,
    shared: bool,
) -> std::io::Result<Option<libc::pid_t>> {
    if !NO_CLONE3.load(Ordering::Relaxed) {
        match clone3(cgroup, child, share_table) {
            Some(Ok(pid)) => return Ok(Some(pid)),
            Some(Err(e)) => match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG) => {
                    NO_CLONE3.store(true, Ordering::Relaxed);
                    if shared {
                        // Set up for a child sharing memory: not for a fork.
                        return Ok(None);
                    }
                }
                _ => return Err(e),
            },
            None => {}
        }
    }
    child.reset.store(ALL_SIGNALS, Ordering::Relaxed);
    // SAFETY: the child runs only `run_child`, which execs or exits.
    match unsafe { libc::fork() } {
        0 => run_child(child, cgroup),
        -1 => Err(std::io::Error::last_os_error()),
        pid => Ok(Some(pid)),
    }
}

/// The child's stack while it shares corral's memory: a static area (in
/// .bss: only the pages a child uses are ever touched, the same ones each
/// time), one spawn at a time. Not on the parent's stack: 32 KB there
/// would push every frame below it onto pages of their own.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(16))]
struct ChildStack([u8; 32 * 1024]);

#[cfg(target_arch = "x86_64")]
struct StackArea(std::cell::UnsafeCell<std::mem::MaybeUninit<ChildStack>>);

// SAFETY: only used under STACK_LOCK, by one child at a time.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for StackArea {}

#[cfg(target_arch = "x86_64")]
static STACK: StackArea = StackArea(std::cell::UnsafeCell::new(std::mem::MaybeUninit::uninit()));

#[cfg(target_arch = "x86_64")]
static STACK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `clone3(CLONE_VM | CLONE_VFORK [| CLONE_INTO_CGROUP])`. The child starts
/// on its own stack in `child_entry`; the parent resumes once it has
/// exec'd (or exited). Every signal is blocked meanwhile, and the kernel
/// resets corral's handlers in the child (`CLONE_CLEAR_SIGHAND`, or the
/// child does before it unblocks them), so that no handler of corral's
/// runs in the child.
#[cfg(target_arch = "x86_64")]
fn clone3(
    cgroup: Option<RawFd>,
    child: &Child<'_>,
    share_table: bool,
) -> Option<std::io::Result<libc::pid_t>> {
    let clear = !NO_CLEAR_SIGHAND.load(Ordering::Relaxed);
    match clone3_vm(cgroup, child, share_table, clear) {
        Err(e) if clear && e.raw_os_error() == Some(libc::EINVAL) => {
            // Before Linux 5.5: without the flag, the child resets them all.
            NO_CLEAR_SIGHAND.store(true, Ordering::Relaxed);
            Some(clone3_vm(cgroup, child, share_table, false))
        }
        result => Some(result),
    }
}

/// One `clone3(CLONE_VM | CLONE_VFORK ...)`; `clear`: with
/// `CLONE_CLEAR_SIGHAND`.
#[cfg(target_arch = "x86_64")]
fn clone3_vm(
    cgroup: Option<RawFd>,
    child: &Child<'_>,
    share_table: bool,
    clear: bool,
) -> std::io::Result<libc::pid_t> {
    let _one_at_a_time = STACK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let stack = STACK.0.get();
    let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    if cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    if share_table {
        flags |= libc::CLONE_FILES as u64;
    }
    let reset = if clear {
        flags |= CLONE_CLEAR_SIGHAND;
        ignored_signals()
    } else {
        ALL_SIGNALS
    };
    child.reset.store(reset, Ordering::Relaxed);
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: std::mem::size_of::<ChildStack>() as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    let entry: extern "C" fn(*const Child<'_>) -> ! = child_entry;
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask fill
    // and apply it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let ret: i64;
    // SAFETY: the raw system call, so that the child never returns through
    // a frame of the parent: it starts on `stack` (the kernel sets its
    // stack pointer to the top, 16-byte aligned), which no one else uses
    // while STACK_LOCK is held, and calls `entry(child)`, which execs or
    // exits. The parent waits meanwhile (CLONE_VFORK), so `child` and
    // everything it points to stay valid and unchanged; rcx and r11 are
    // clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child as *const Child<'_>,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if ret < 0 {
        Err(std::io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// Where the child of `clone3` starts, on its own stack.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(child: *const Child<'_>) -> ! {
    // SAFETY: the parent passed a live `Child` and waits until we exec or exit.
    run_child(unsafe { &*child }, None)
}

/// Elsewhere: clone3 only to be created in a cgroup (a fork, no CLONE_VM).
#[cfg(not(target_arch = "x86_64"))]
fn clone3(
    cgroup: Option<RawFd>,
    child: &Child<'_>,
    _share_table: bool,
) -> Option<std::io::Result<libc::pid_t>> {
    let dir = cgroup?;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of
    // this address space and runs only `run_child`, which execs or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    Some(match pid {
        0 => run_child(child, None),
        p if p > 0 => Ok(p as libc::pid_t),
        _ => Err(std::io::Error::last_os_error()),
    })
}

/// The child: only system calls on what the parent prepared, no allocation,
/// no locks. `join`: a cgroup directory to move into (the fork fallback).
fn run_child(child: &Child<'_>, join: Option<RawFd>) -> ! {
    let fds = child.fds;
    let fail = |errno: libc::c_int| -> ! {
        // Read by the parent if this child shares its memory; else the
        // status pipe tells it (with shared memory, that is /dev/null).
        child.failed.store(errno, Ordering::Release);
        let bytes = errno.to_ne_bytes();
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(fds.status, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        }
    };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let check = |r: libc::c_long| {
        if r == -1 {
            fail(errno());
        }
    };
    // SAFETY: plain system calls on descriptors and memory the parent set up.
    unsafe {
        if let Some(below) = child.own_table_below {
            // A table of our own before anything else, holding the entries
            // below `below` only (our descriptors are among them).
            let own = libc::syscall(
                libc::SYS_close_range,
                below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            );
            if own == -1 {
                // Before Linux 5.9: a copy of the whole table.
                check(libc::unshare(libc::CLONE_FILES).into());
            }
        }
        if let Some(dir) = join {
            // Slow (an RCU grace period), only without clone3. Failing leaves
            // the process in corral's cgroup, tracked by its marker.
            let procs = libc::openat(
                dir,
                c"cgroup.procs".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if procs >= 0 {
                libc::write(procs, b"0".as_ptr().cast(), 1);
            }
        }
        check(libc::setsid().into());
        check(libc::dup2(fds.stdin, 0).into());
        check(libc::dup2(fds.stdout, 1).into());
        check(libc::dup2(fds.stderr, 2).into());
        // The sockets first go above every number they and the notify fd
        // go to, so that no placing overwrites another's source.
        let mut moved = [0 as RawFd; MAX_LISTEN];
        let count = fds.listen.len().min(MAX_LISTEN);
        let above = fds
            .notify
            .map_or(0, |(_, target)| target + 1)
            .max(LISTEN_FDS_START + count as RawFd);
        for (slot, &fd) in moved.iter_mut().zip(fds.listen) {
            *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
            check((*slot).into());
        }
        if let Some((fd, target)) = fds.notify {
            if fd == target {
                check(libc::fcntl(fd, libc::F_SETFD, 0).into());
            } else {
                // dup2 clears close-on-exec on the new descriptor.
                check(libc::dup2(fd, target).into());
            }
        }
        for (i, &fd) in moved[..count].iter().enumerate() {
            check(libc::dup2(fd, LISTEN_FDS_START + i as RawFd).into());
        }
        if !child.plan.pid_slots.is_empty() {
            let digits = pid_digits(libc::getpid());
            for &slot in &child.plan.pid_slots {
                // The parent set PID_DIGITS + 1 bytes aside here (the +1
                // is the string's own NUL).
                std::ptr::copy_nonoverlapping(digits.as_ptr(), slot, digits.len());
            }
        }
        // Every signal at its default and none blocked, whatever corral (it
        // ignores SIGPIPE) or whoever started corral had: the raw system
        // call, as libc refuses to touch the signals it keeps for itself.
        // With CLONE_CLEAR_SIGHAND the kernel reset the handled ones: only
        // the ignored ones are left, one system call for all of them.
        let default = KernelSigaction::default(); // SIG_DFL, no flags, empty mask
        let reset = child.reset.load(Ordering::Relaxed);
        for sig in 1..=64 {
            if reset & (1 << (sig - 1)) != 0 && sig != libc::SIGKILL && sig != libc::SIGSTOP {
                rt_sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        let none = 0u64;
        check(libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            0usize,
            8usize,
        ));
        if let Some((uid, gid, groups)) = child.ids {
            // Raw system calls: credentials are per thread in the kernel, and
            // this process has one thread; libc's wrappers would try to reach
            // the threads of the parent, which the child does not have.
            check(libc::syscall(
                libc::SYS_setgroups,
                groups.len(),
                groups.as_ptr(),
            ));
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid));
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid));
        }
        // After the credential change, which would clear it.
        check(
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
            .into(),
        );
        if libc::getppid() != child.parent {
            // corral died before the signal was armed.
            fail(libc::ESRCH);
        }
        if let Some(dir) = child.plan.dir {
            if libc::chdir(dir) == -1 {
                fail(errno() | IN_WORKING_DIR);
            }
        }
        fail(exec_first(
            &child.plan.candidates,
            &child.plan.argv_ptrs,
            &child.plan.envp_ptrs,
        ))
    }
}

/// Tries each candidate path as execvp does: a missing one is skipped, a
/// denied one remembered; the first other failure ends the search. Returns
/// only when nothing could be exec'd, with the errno to report.
fn exec_first(
    candidates: &[*const libc::c_char],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> libc::c_int {
    let mut denied = false;
    let mut last = libc::ENOENT;
    for &path in candidates {
        // SAFETY: NUL-terminated strings and NULL-terminated arrays of them.
        unsafe { libc::execve(path, argv.as_ptr(), envp.as_ptr()) };
        last = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        match last {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => denied = true,
            _ => break,
        }
    }
    if denied && matches!(last, libc::ENOENT | libc::ENOTDIR) {
        libc::EACCES
    } else {
        last
    }
}

/// /dev/null, opened once for every spawn (stdin of every service). In a
/// root without it (a bare image, no /dev), the read end of a pipe whose
/// writer is closed: it reads as empty, as /dev/null does.
fn dev_null() -> std::io::Result<&'static std::fs::File> {
    static NULL: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(null) = NULL.get() {
        return Ok(null);
    }
    let null = match std::fs::File::open("/dev/null") {
        Ok(null) => null,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (read, _write) = pipe()?;
            std::fs::File::from(read)
        }
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("/dev/null: {e}"))),
    };
    Ok(NULL.get_or_init(|| null))
}

/// A pipe for one output stream, or /dev/null for it: (corral's read end,
/// the child's write end).
fn output_pipe(
    output: Output,
    null: &std::fs::File,
) -> std::io::Result<(Option<OwnedFd>, OwnedFd)> {
    match output {
        Output::Null => Ok((None, null.try_clone()?.into())),
        Output::Pipes | Output::Merged => {
            let (r, w) = pipe()?;
            Ok((Some(r), w))
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// Waits for the child to exec (EOF: Ok) or to report why it could not.
fn read_status(status: &OwnedFd) -> Option<libc::c_int> {
    let mut buf = [0u8; 4];
    loop {
        // SAFETY: reads into a buffer we own.
        let n = unsafe { libc::read(status.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            4 => return Some(libc::c_int::from_ne_bytes(buf)),
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
}

/// Occupies fd number `target` with /dev/null (close-on-exec) if it is free.
/// `pid` in decimal, NUL-padded to PID_DIGITS + 1 bytes, without allocating.
fn pid_digits(pid: libc::pid_t) -> [u8; PID_DIGITS + 1] {
    let mut out = [0u8; PID_DIGITS + 1];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        len += 1;
        n /= 10;
        if n == 0 || len == PID_DIGITS {
            break;
        }
    }
    let mut n = pid.unsigned_abs();
    for i in (0..len).rev() {
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out
}

fn reserve_fd(target: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: fcntl only queries the descriptor table.
    if unsafe { libc::fcntl(target, libc::F_GETFD) } != -1 {
        return None;
    }
    let null = dev_null().ok()?;
    // SAFETY: dup3 onto a free descriptor number; the new fd is owned below.
    let fd = unsafe { libc::dup3(null.as_raw_fd(), target, libc::O_CLOEXEC) };
    // SAFETY: dup3 returned a fresh descriptor that nothing else owns.
    (fd == target).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
