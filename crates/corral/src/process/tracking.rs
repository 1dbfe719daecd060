//! What a run of corral started, kept track of so that nothing outlives it,
//! not even a SIGKILL of corral itself.
//!
//! Two mechanisms, used together:
//! - a cgroup v2 per service instance, under one cgroup for the run, when the
//!   unified hierarchy is mounted and writable (root, or a delegated
//!   subtree): `cgroup.kill` ends everything a service started, wherever it
//!   went (a new session, a double fork, a cleared environment);
//! - a marker in the environment of every process corral starts
//!   (`CORRAL_RUN_ID`, random per run), which whatever a service forks and
//!   execs inherits unless it drops or overwrites its environment.
//!
//! A run is recorded in the runtime dir while it lasts (`corral.run`: boot id,
//! run id, cgroup). A record left behind means that run did not end by itself:
//! the next `up` or `down` for the same config sweeps what it left, processes
//! in its cgroups or carrying its marker, SIGTERM then SIGKILL after a grace.
//! Each process is pinned by a pidfd before it is checked and signalled only
//! through that pidfd, so a pid reused by a stranger is never signalled.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable that marks every process of a run.
pub const RUN_ID_VAR: &str = "CORRAL_RUN_ID";

/// This run: its marker, its cgroup (when it has one), and its record.
#[derive(Debug)]
pub struct Run {
    id: String,
    cgroup: Option<PathBuf>,
    /// The run's cgroup, open: leaves are made, opened, read and removed
    /// relative to it, a lookup of one or two names rather than of the
    /// whole cgroupfs path.
    cgroup_dir: Option<OwnedFd>,
    record: PathBuf,
    /// Per instance, the leaf cgroup its processes are created in now. A
    /// cgroup that was killed kills every process later cloned into it
    /// (Linux compares kill sequence numbers), so a kill moves the instance
    /// on to a fresh leaf: `<instance>/<n>`.
    leaves: std::collections::HashMap<String, u32>,
    /// Leaves that were killed and are removed once empty.
    retired: Vec<PathBuf>,
    /// During a shutdown, the cgroups of instances that ended are removed
    /// on a thread of their own while the others end: each rmdir holds the
    /// kernel's cgroup mutex, and all of them at `end` would come last.
    sweeper: Option<Sweeper>,
    /// The instances handed to the sweeper, which also kills what they left.
    released: std::collections::HashSet<String>,
}

/// The thread that removes released instances' cgroups.
#[derive(Debug)]
struct Sweeper {
    leaves: std::sync::mpsc::Sender<String>,
    thread: std::thread::JoinHandle<()>,
}

impl Run {
    /// Starts tracking a run: makes its cgroup when `use_cgroup` and the
    /// machine allows it, and writes the record at `record` (0600).
    pub fn begin(record: PathBuf, use_cgroup: bool) -> Run {
        let id = random_id();
        let cgroup = use_cgroup.then(|| make_run_cgroup(&id)).flatten();
        let cgroup_dir = cgroup
            .as_ref()
            .and_then(|cg| fs::File::open(cg).ok())
            .map(OwnedFd::from);
        let run = Run {
            id,
            cgroup: cgroup.filter(|_| cgroup_dir.is_some()),
            cgroup_dir,
            record,
            leaves: std::collections::HashMap::new(),
            retired: Vec::new(),
            sweeper: None,
            released: std::collections::HashSet::new(),
        };
        run.write_record();
        run
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether each instance gets a cgroup of this run (else every process
    /// stays in corral's, found later by its marker alone).
    pub fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    fn write_record(&self) {
        if self.record.as_os_str().is_empty() {
            return;
        }
        let mut text = format!("boot {}\nrun {}\n", boot_id(), self.id);
        if let Some(cg) = &self.cgroup {
            text.push_str(&format!("cgroup {}\n", cg.display()));
        }
        let tmp = self.record.with_extension("run.tmp");
        let written = write_private(&tmp, &text).and_then(|()| fs::rename(&tmp, &self.record));
        if let Err(e) = written {
            eprintln!(
                "corral: warning: cannot record this run in {}: {e}; \
                 what a SIGKILL of corral leaves cannot be found later",
                self.record.display()
            );
        }
    }

    /// An instance's cgroup (its current leaf), opened, for its processes to
    /// be created in; None without cgroups.
    pub fn join_fd(&self, instance: &str) -> Option<OwnedFd> {
        use nix::errno::Errno;
        use nix::sys::stat::{mkdirat, Mode};
        let run = self.cgroup_dir.as_ref()?;
        let leaf = self.leaf(instance);
        let mode = Mode::from_bits_truncate(0o755);
        match mkdirat(run, &leaf, mode) {
            Ok(()) | Err(Errno::EEXIST) => {}
            // `<instance>/<n>` after a kill, if `<instance>` went meanwhile.
            Err(Errno::ENOENT) => {
                let _ = mkdirat(run, Path::new(instance), mode);
                mkdirat(run, &leaf, mode).ok()?;
            }
            Err(_) => return None,
        }
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::openat(run, &leaf, flags, Mode::empty()).ok()
    }

    /// `<instance>` until its first kill, then `<instance>/<n>`, under the
    /// run's cgroup.
    fn leaf(&self, instance: &str) -> PathBuf {
        match self.leaves.get(instance) {
            None | Some(0) => PathBuf::from(instance),
            Some(n) => Path::new(instance).join(n.to_string()),
        }
    }

    /// SIGKILLs whatever is left in an instance's cgroup (a no-op without
    /// one, or when nothing is left).
    pub fn kill_instance(&mut self, instance: &str) {
        let Some(run) = &self.cgroup_dir else {
            return;
        };
        if self.released.contains(instance) {
            // The sweeper kills what is left before it removes the cgroup.
            return;
        }
        self.retired.retain(|leaf| {
            use nix::unistd::{unlinkat, UnlinkatFlags};
            unlinkat(run, leaf, UnlinkatFlags::RemoveDir) == Err(nix::errno::Errno::EBUSY)
        });
        let dir = Path::new(instance);
        if !populated_at(run, dir) {
            return;
        }
        let _ = write_at(run, &dir.join("cgroup.kill"), "1");
        let n = self.leaves.entry(instance.to_string()).or_insert(0);
        if *n > 0 {
            self.retired.push(dir.join(n.to_string()));
        }
        *n += 1;
    }

    /// An instance ended for good (corral is shutting down): its cgroup is
    /// removed now, on the sweeper thread, rather than at `end`; what its
    /// service left there (a double-forked daemon) is killed there too, and
    /// that cgroup removed at `end`. Looking from this thread would cost an
    /// open and a read of the cgroup's `cgroup.events` per instance, each
    /// waiting on the sweeper's removals (the same kernel lock).
    pub fn release_instance(&mut self, instance: &str) {
        let (Some(cg), Some(run)) = (&self.cgroup, &self.cgroup_dir) else {
            return;
        };
        if self.sweeper.is_none() {
            let Ok(dir) = run.try_clone() else {
                return;
            };
            let root = cg.clone();
            let (leaves, inbox) = std::sync::mpsc::channel::<String>();
            let thread = std::thread::Builder::new()
                .name("cgroup-sweep".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    for leaf in inbox {
                        sweep_instance(&dir, &root, Path::new(&leaf));
                    }
                });
            let Ok(thread) = thread else {
                return;
            };
            self.sweeper = Some(Sweeper { leaves, thread });
        }
        if let Some(sweeper) = &self.sweeper {
            if sweeper.leaves.send(instance.to_string()).is_ok() {
                self.released.insert(instance.to_string());
            }
        }
    }

    /// The run ended by itself: kills whatever is still in its cgroup, removes
    /// the cgroup and the record.
    pub fn end(&mut self) {
        if let Some(sweeper) = self.sweeper.take() {
            drop(sweeper.leaves);
            let _ = sweeper.thread.join();
        }
        if let (Some(cg), Some(run)) = (&self.cgroup, &self.cgroup_dir) {
            let _ = write_at(run, Path::new("cgroup.kill"), "1");
            wait_unpopulated(cg, Duration::from_secs(2));
            for leaf in subdirs(cg) {
                remove_tree_at(run, cg, Path::new(&leaf));
            }
            let _ = fs::remove_dir(cg);
        }
        if !self.record.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.record);
        }
    }
}

/// What sweeping an earlier run found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Processes of that run that were still alive.
    pub found: usize,
    /// Of those, how many outlived the grace and were SIGKILLed.
    pub killed: usize,
}

/// Sweeps the run recorded at `record`, if one is (it did not end by itself):
/// SIGTERM to every process in its cgroup or with its marker, SIGKILL to any
/// still alive after `grace`. Removes its cgroup and the record. Call it only
/// under the config's lock, so the record cannot be a live daemon's.
pub fn sweep_previous(record: &Path, grace: Duration) -> Option<Swept> {
    let text = fs::read_to_string(record).ok()?;
    let earlier = Record::parse(&text);
    let swept = if earlier.boot == boot_id() {
        sweep(&earlier, grace)
    } else {
        // Another boot: nothing of that run can be alive.
        Swept::default()
    };
    if let Some(cg) = &earlier.cgroup {
        remove_cgroup_tree(cg);
    }
    let _ = fs::remove_file(record);
    Some(swept)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Record {
    boot: String,
    run: String,
    cgroup: Option<PathBuf>,
}

impl Record {
    fn parse(text: &str) -> Record {
        let mut record = Record::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("boot", v)) => record.boot = v.to_string(),
                Some(("run", v)) => record.run = v.to_string(),
                Some(("cgroup", v)) => record.cgroup = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        record
    }
}

fn sweep(earlier: &Record, grace: Duration) -> Swept {
    let mut pinned: Vec<Pinned> = Vec::new();
    if let Some(cg) = &earlier.cgroup {
        pinned.extend(cgroup_members(cg));
    }
    if !earlier.run.is_empty() {
        let marker = format!("{RUN_ID_VAR}={}", earlier.run);
        for pid in marked_processes(&marker) {
            if pinned.iter().any(|p| p.pid == pid) {
                continue;
            }
            // Pinned first, checked after: the pidfd is then surely the
            // process that carries the marker.
            if let Some(p) = Pinned::open(pid) {
                if carries(pid, &marker) {
                    pinned.push(p);
                }
            }
        }
    }
    let found = pinned.len();
    for p in &pinned {
        p.signal(libc::SIGTERM);
        p.signal(libc::SIGCONT);
    }
    let mut alive = wait_exits(pinned, grace);
    let killed = alive.len();
    if let Some(cg) = &earlier.cgroup {
        let _ = fs::write(cg.join("cgroup.kill"), "1");
    }
    for p in &alive {
        p.signal(libc::SIGKILL);
    }
    alive = wait_exits(alive, Duration::from_secs(2));
    if let Some(cg) = &earlier.cgroup {
        wait_unpopulated(cg, Duration::from_secs(1));
    }
    drop(alive);
    Swept { found, killed }
}

/// A process held by a pidfd: signals reach that process or none.
struct Pinned {
    pid: i32,
    fd: OwnedFd,
}

impl Pinned {
    fn open(pid: i32) -> Option<Pinned> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
        Some(Pinned {
            pid,
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: pidfd_send_signal on a pidfd we own; no siginfo is passed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// Waits until every pinned process has exited or `limit` passed; returns
/// those still alive.
fn wait_exits(mut pinned: Vec<Pinned>, limit: Duration) -> Vec<Pinned> {
    let deadline = Instant::now() + limit;
    while !pinned.is_empty() {
        let mut fds: Vec<libc::pollfd> = pinned
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            break;
        }
        let mut exited = fds.iter().map(|f| f.revents != 0);
        pinned.retain(|_| !exited.next().unwrap_or(false));
    }
    pinned
}

/// Processes in the cgroup tree at `cg`, pinned: a pid still listed after its
/// pidfd was opened is the process the pidfd holds.
fn cgroup_members(cg: &Path) -> Vec<Pinned> {
    let first = cgroup_pids(cg);
    let pinned: Vec<Pinned> = first.iter().filter_map(|&pid| Pinned::open(pid)).collect();
    let still = cgroup_pids(cg);
    pinned
        .into_iter()
        .filter(|p| still.contains(&p.pid))
        .collect()
}

fn cgroup_pids(cg: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut dirs = vec![cg.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

/// Pids whose environment holds `marker` ("NAME=value") as one variable.
fn marked_processes(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && carries(pid, marker))
        .collect()
}

fn carries(pid: i32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
}

/// Whether any process is in the cgroup tree at `rel` under the open
/// directory `dir` (or at the path `rel`, with AT_FDCWD): cgroupfs paths
/// are long, and a shutdown looks at every instance's.
fn populated_at(dir: impl std::os::fd::AsFd, rel: &Path) -> bool {
    use std::io::Read;
    let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC;
    let events = rel.join("cgroup.events");
    let Ok(fd) = nix::fcntl::openat(dir, &events, flags, nix::sys::stat::Mode::empty()) else {
        return false;
    };
    let mut text = String::new();
    fs::File::from(fd).read_to_string(&mut text).is_ok() && text.lines().any(|l| l == "populated 1")
}

/// Writes `text` to the file at `rel` under the open directory `dir`.
fn write_at(dir: &OwnedFd, rel: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let flags = nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(dir, rel, flags, nix::sys::stat::Mode::empty())?;
    fs::File::from(fd).write_all(text.as_bytes())
}

/// The names of the cgroups directly under `cg`.
fn subdirs(cg: &Path) -> Vec<std::ffi::OsString> {
    let Ok(entries) = fs::read_dir(cg) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect()
}

/// `remove_cgroup_tree` for the cgroup at `rel` under `dir` (an open
/// directory, the cgroup at `root`; or the working directory, `root` "").
fn remove_tree_at(dir: impl std::os::fd::AsFd + Copy, root: &Path, rel: &Path) {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    if unlinkat(dir, rel, UnlinkatFlags::RemoveDir).is_ok() {
        return;
    }
    for child in subdirs(&root.join(rel)) {
        remove_tree_at(dir, root, &rel.join(child));
    }
    let _ = unlinkat(dir, rel, UnlinkatFlags::RemoveDir);
}

/// Waits until nothing is left in the cgroup tree at `cg`, or `limit` passed.
fn wait_unpopulated(cg: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while populated_at(nix::fcntl::AT_FDCWD, cg) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes the cgroup of an instance that ended during a shutdown (at
/// `rel` under the run's cgroup `dir`, at `root`), or, when its service
/// left something in it, kills that: `end` removes the cgroup once the
/// run's is empty (no wait here, which one stuck process per instance
/// would have made as long as the instances).
fn sweep_instance(dir: &OwnedFd, root: &Path, rel: &Path) {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    if unlinkat(dir, rel, UnlinkatFlags::RemoveDir).is_ok() {
        return;
    }
    if populated_at(dir, rel) {
        let _ = write_at(dir, &rel.join("cgroup.kill"), "1");
        return;
    }
    // Empty but not removed: it holds an older leaf (`<instance>/<n>`).
    remove_tree_at(dir, root, rel);
}

/// Removes a cgroup and its children, deepest first; a busy or missing one
/// is left. Listing a cgroup's directory is costly (a score of interface
/// files), so children are looked for only when removing it fails.
fn remove_cgroup_tree(cg: &Path) {
    remove_tree_at(nix::fcntl::AT_FDCWD, Path::new(""), cg);
}

/// Makes `corral-<id>` under corral's own cgroup v2, when the unified
/// hierarchy is mounted, writable and has `cgroup.kill` (Linux 5.14).
fn make_run_cgroup(id: &str) -> Option<PathBuf> {
    let own = own_cgroup()?;
    let dir = own.join(format!("corral-{id}"));
    fs::create_dir(&dir).ok()?;
    if dir.join("cgroup.kill").exists() {
        Some(dir)
    } else {
        let _ = fs::remove_dir(&dir);
        None
    }
}

/// The directory of corral's own cgroup in the cgroup v2 hierarchy, found
/// from /proc/self/mountinfo (a container has it at /sys/fs/cgroup, a hybrid
/// host at /sys/fs/cgroup/unified).
fn own_cgroup() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    own_cgroup_from(&mountinfo, &cgroups)
}

fn own_cgroup_from(mountinfo: &str, cgroups: &str) -> Option<PathBuf> {
    // "<id> <parent> <dev> <root> <mount point> <options> [tags...] - <type> <source> <options>"
    let (root, point) = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split(' ');
        let root = unescape(fields.nth(3)?);
        let point = unescape(fields.next()?);
        Some((root, point))
    })?;
    let own = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let relative = Path::new(own).strip_prefix(&root).ok()?;
    Some(Path::new(&point).join(relative))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// 128 random bits as hex, from the kernel.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy source: pid and time still make the id unique enough to
        // tell this run's processes from another run's.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!("{:08x}{nanos:024x}", std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_own_cgroup_on_hybrid_and_container_layouts() {
        let hybrid =
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_from(hybrid, "1:cpu:/\n0::/user.slice/s.scope\n"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice/s.scope"))
        );
        let container = "20 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup rw\n";
        assert_eq!(
            own_cgroup_from(container, "0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // A bind of a subtree: the mount's root is stripped from the path.
        let bound = "20 1 0:30 /a/b /mnt/cg\\040x rw - cgroup2 cgroup rw\n";
        assert_eq!(
            own_cgroup_from(bound, "0::/a/b/c\n"),
            Some(PathBuf::from("/mnt/cg x/c"))
        );
        assert_eq!(
            own_cgroup_from("20 1 0:30 / /sys rw - sysfs s rw\n", "0::/\n"),
            None
        );
        assert_eq!(own_cgroup_from(container, "1:cpu:/\n"), None);
    }

    #[test]
    fn a_record_reads_back() {
        let r = Record::parse("boot b-1\nrun abc\ncgroup /sys/fs/cgroup/corral-abc\nnoise\n");
        assert_eq!(
            r,
            Record {
                boot: "b-1".into(),
                run: "abc".into(),
                cgroup: Some(PathBuf::from("/sys/fs/cgroup/corral-abc")),
            }
        );
    }

    #[test]
    fn run_ids_differ() {
        let a = random_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_id());
    }
}
