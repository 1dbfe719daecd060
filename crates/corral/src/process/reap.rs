//! The one place child exit statuses are collected.

use crate::engine::Exit;

/// One reaped child: its pid, how it ended, and the CPU time it and the
/// descendants it waited for used (from wait4's rusage).
pub struct Reaped {
    pub pid: i32,
    pub exit: Exit,
    pub cpu: std::time::Duration,
}

/// Reaps every child that has exited, without blocking. Statuses of
/// children corral did not spawn (orphans it inherited) are returned too;
/// the caller ignores pids it does not know.
pub fn reap_exited() -> Vec<Reaped> {
    let mut out = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes the status and the rusage we own; WNOHANG
        // never blocks.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
        if pid <= 0 {
            break;
        }
        let exit = if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            continue;
        };
        out.push(Reaped {
            pid,
            exit,
            cpu: cpu_time(&usage.ru_utime) + cpu_time(&usage.ru_stime),
        });
    }
    out
}

fn cpu_time(t: &libc::timeval) -> std::time::Duration {
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
    )
}

/// Pids whose parent is `parent`: the kernel's lists of each of its
/// threads' children (/proc/PID/task/TID/children), or, without those
/// (CONFIG_PROC_CHILDREN), a scan of every process's stat. The lists cost
/// a read per thread; the scan one per process on the machine (a tenth of
/// corral's time stopping 1,000 services went to it).
pub fn children_of(parent: u32) -> Vec<i32> {
    listed_children(parent).unwrap_or_else(|| scanned_children(parent))
}

fn scanned_children(parent: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')')? + 1..];
        let mut fields = after.split_whitespace();
        let _state = fields.next()?;
        let ppid: u32 = fields.next()?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
    .collect()
}

fn listed_children(parent: u32) -> Option<Vec<i32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{parent}/task"))
        .ok()?
        .flatten()
    {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(list) => out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            // No list while the thread is there: a kernel without them.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && task.path().exists() => {
                return None
            }
            // A thread that ended meanwhile.
            Err(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listed_children_are_the_scanned_ones() {
        let mut kids: Vec<std::process::Child> = (0..3)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let me = std::process::id();
        // Other tests start processes meanwhile: ours must be in both.
        let listed = super::listed_children(me).unwrap_or_default();
        let scanned = super::scanned_children(me);
        for k in &kids {
            let pid = k.id() as i32;
            assert!(listed.contains(&pid), "{pid} not in {listed:?}");
            assert!(scanned.contains(&pid), "{pid} not in {scanned:?}");
        }
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}
