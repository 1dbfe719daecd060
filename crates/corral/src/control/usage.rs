//! What each instance's processes use, read from /proc when a client asks
//! (`?resources=true`, `/metrics`): nothing is sampled while nobody looks.
//!
//! An instance's processes are its session: corral starts every service in
//! a session of its own (setsid), and what it forks stays there unless it
//! makes a session itself (a daemon that detaches; cgroups would catch it,
//! the session reading does not). CPU time counts the live processes and,
//! through their cutime, the children they waited for; what ended before
//! (earlier runs, pre and post steps) the supervisor adds from wait4.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral_proto::ServiceStatus;

/// A CPU share needs two readings at least this far apart...
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// ...and a reading older than this is too old to measure from.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The last reading per instance, so that the next request can measure a
/// CPU share over the time between them, and counters never go back.
#[derive(Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, Last>>,
}

#[derive(Clone, Copy)]
struct Last {
    at: Instant,
    pid: i32,
    /// CPU time of the live processes then.
    live: Duration,
    /// The counter as last reported.
    total: f64,
}

/// What the processes of one session use.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Usage {
    cpu: Duration,
    rss_bytes: u64,
    processes: u32,
    fds: u32,
}

impl Sampler {
    /// Adds what /proc says to every status that asks for resources (the
    /// supervisor set their CPU time of ended processes). Blocking: it
    /// reads /proc. `complete`: the list holds every instance (forget the
    /// others).
    ///
    /// The CPU share is measured since the last reading of the same process
    /// (top and `ps --watch` read every few seconds), or, without one in the
    /// last minute, over the process's life, as ps(1) does.
    pub fn fill(&self, services: &mut [ServiceStatus], complete: bool) {
        let sessions: HashSet<i32> = services
            .iter()
            .filter(|s| s.resources.is_some())
            .filter_map(|s| s.pid)
            .collect();
        let at = Instant::now();
        let now = read_sessions(&sessions);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for s in services.iter_mut() {
            let usage = s.pid.and_then(|pid| now.get(&pid)).copied();
            let usage = usage.unwrap_or_default();
            let since = usable(s, &last, at)
                .map(|l| (at.saturating_duration_since(l.at).as_secs_f64(), l.live))
                .or_else(|| Some((s.uptime_secs?, Duration::ZERO)));
            let running = s.pid.is_some();
            let Some(resources) = s.resources.as_mut() else {
                continue;
            };
            resources.cpu_percent = since.filter(|_| running).map(|(wall, cpu)| {
                let used = usage.cpu.saturating_sub(cpu).as_secs_f64();
                if wall > 0.0 {
                    (used / wall * 100.0 * 10.0).round() / 10.0
                } else {
                    0.0
                }
            });
            // Ended runs plus the live ones; never below what was reported
            // (an orphan corral reaped takes its CPU time with it).
            let floor = last.get(&s.name).map_or(0.0, |l| l.total);
            resources.cpu_seconds = (resources.cpu_seconds + usage.cpu.as_secs_f64()).max(floor);
            resources.rss_bytes = usage.rss_bytes;
            resources.processes = usage.processes;
            resources.fds = usage.fds;
            last.insert(
                s.name.clone(),
                Last {
                    at,
                    pid: s.pid.unwrap_or(0),
                    live: usage.cpu,
                    total: resources.cpu_seconds,
                },
            );
        }
        if complete {
            last.retain(|name, _| services.iter().any(|s| &s.name == name));
        }
    }
}

/// The earlier reading of this instance, if a CPU share can be measured from it.
fn usable(s: &ServiceStatus, last: &HashMap<String, Last>, at: Instant) -> Option<Last> {
    last.get(&s.name).copied().filter(|l| {
        let age = at.saturating_duration_since(l.at);
        Some(l.pid) == s.pid && (MIN_INTERVAL..=MAX_INTERVAL).contains(&age)
    })
}

/// Sums what the processes of each of `sessions` use, in one pass over /proc.
fn read_sessions(sessions: &HashSet<i32>) -> HashMap<i32, Usage> {
    let mut found: HashMap<i32, Usage> = HashMap::new();
    if sessions.is_empty() {
        return found;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let (tick, page) = units();
    let mut buf = Vec::with_capacity(512);
    let mut path = String::with_capacity(32);
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        path.clear();
        path.push_str("/proc/");
        path.push_str(pid);
        let base = path.len();
        path.push_str("/stat");
        buf.clear();
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut buf));
        if read.is_err() {
            continue; // It ended meanwhile.
        }
        let Some(stat) = parse_stat(&buf) else {
            continue;
        };
        if !sessions.contains(&stat.session) {
            continue;
        }
        path.truncate(base);
        path.push_str("/fd");
        let fds = std::fs::read_dir(&path).map_or(0, |d| d.count());
        let usage = found.entry(stat.session).or_default();
        usage.cpu += Duration::from_secs_f64(stat.ticks as f64 / tick);
        usage.rss_bytes += stat.rss_pages * page;
        usage.processes += 1;
        usage.fds += u32::try_from(fds).unwrap_or(u32::MAX);
    }
    found
}

/// Clock ticks per second and the page size.
fn units() -> (f64, u64) {
    // SAFETY: sysconf only reads system constants.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        if tick > 0 { tick as f64 } else { 100.0 },
        u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
    )
}

#[derive(Debug, PartialEq)]
struct Stat {
    session: i32,
    /// utime + stime + cutime + cstime.
    ticks: u64,
    rss_pages: u64,
}

/// The fields of /proc/PID/stat that matter here. The command name (2nd
/// field) may hold spaces and parentheses: the fields after it are read
/// from its last ')'.
fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = memchr::memrchr(b')', stat)?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(22).collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
    // After the name: state ppid pgrp session ... utime(11) stime cutime
    // cstime ... rss(21).
    let ticks = (11..=14).map(num).sum::<Option<i64>>()?;
    Some(Stat {
        session: i32::try_from(num(3)?).ok()?,
        ticks: u64::try_from(ticks).unwrap_or(0),
        rss_pages: u64::try_from(num(21)?).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_after_a_name_with_spaces_and_parentheses() {
        let line = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                     7 3 20 10 20 0 1 0 12345 10000000 250 18446744073709551615 1 1 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                session: 4242,
                ticks: 40,
                rss_pages: 250,
            })
        );
        assert_eq!(parse_stat(b"4242 (cut"), None);
        assert_eq!(parse_stat(b"4242 (x) S 1 2"), None);
    }

    #[test]
    fn sums_a_session_of_real_processes() {
        // This test's own process is in some session: it must be found
        // with at least one process and some memory.
        let sid = nix::unistd::getsid(None).map(|p| p.as_raw()).unwrap_or(0);
        let found = read_sessions(&HashSet::from([sid]));
        let usage = found.get(&sid).copied().unwrap_or_default();
        assert!(usage.processes >= 1, "{usage:?}");
        assert!(usage.rss_bytes > 0 && usage.fds > 0, "{usage:?}");
    }
}
