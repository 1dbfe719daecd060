//! corral as PID 1 of a fresh PID namespace: reaps orphans, ends cleanly on SIGTERM.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// `pid`'s children: /proc lists them under the thread that created each,
/// so every thread's list is read.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    out
}

fn state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

#[test]
fn as_pid1_corral_reaps_a_thousand_orphans_and_exits_cleanly() {
    let project = Project::new(
        r#"
[services.orphaner]
command = ["sh", "-c", "for i in $(seq 1000); do (sleep 0.5 &); done; echo spawned; exec sleep 60"]
"#,
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN, "up"])
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let mut unshare = Running::start(cmd);
    unshare.wait_for("spawned", Duration::from_secs(30));
    // corral is unshare's only child, and PID 1 in its namespace.
    let corral = children(unshare.pid())[0];
    let status = std::fs::read_to_string(format!("/proc/{corral}/status")).unwrap_or_default();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or("");
    assert!(
        nspid.ends_with("\t1"),
        "corral is not PID 1 in its namespace: {nspid:?}"
    );
    // The orphans were re-parented to corral...
    let orphans = children(corral).len();
    assert!(
        orphans > 100,
        "expected orphans under corral, found {orphans} children"
    );
    // ...and once they exit, corral reaps every one: no zombie is left.
    let settled = eventually(Duration::from_secs(15), || {
        let kids = children(corral);
        kids.len() == 1 && kids.iter().all(|&k| state(k).as_deref() != Some("Z"))
    });
    let zombies = children(corral)
        .iter()
        .filter(|&&k| state(k).as_deref() == Some("Z"))
        .count();
    assert!(
        settled,
        "{zombies} zombies, {} children left",
        children(corral).len()
    );
    // SIGTERM to PID 1 is an orderly shutdown with exit code 0.
    // SAFETY: kill(2) on a pid read from /proc.
    unsafe {
        libc::kill(corral, libc::SIGTERM);
    }
    assert_eq!(unshare.wait_exit(SECS10), 0);
    unshare.wait_for_service_event("orphaner", "stopped", SECS5);
}
