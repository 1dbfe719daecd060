//! Stopping: stop-timeout escalation, process groups, escaped daemons, PDEATHSIG.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn service_ignoring_sigterm_is_killed_after_stop_timeout() {
    let m = marker("stubborn");
    let project = Project::new(&format!(
        r#"
[services.stubborn]
command = ["sh", "-c", "trap '' TERM; echo ignoring; while :; do sleep 0.1; done", "{m}"]
stop-timeout = "700ms"
"#
    ));
    let mut corral = project.up();
    corral.wait_for("ignoring", SECS5);
    let asked = Instant::now();
    assert_eq!(corral.stop(), 0);
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "stopped after {took:?}, before stop-timeout"
    );
    corral.wait_for_service_event("stubborn", "sending SIGKILL: stop-timeout reached", SECS5);
    assert!(pids_with_marker(&m).is_empty());
}

#[test]
fn grandchildren_and_double_forked_daemons_are_gone_after_shutdown() {
    let m = marker("tree");
    let script = format!(
        "{kid} & {kid2} & (setsid {daemon} &) ; echo forked; wait",
        kid = looping(&format!("{m}-kid")),
        kid2 = looping(&format!("{m}-kid2")),
        daemon = looping(&format!("{m}-daemon")),
    );
    let project = Project::new(&format!(
        r#"
[services.forker]
command = ["sh", "-c", "{}"]
"#,
        script.replace('"', "\\\"")
    ));
    let mut corral = project.up();
    corral.wait_for("forked", SECS5);
    assert!(
        // The service's own shell (its script names the tag) plus the three loops.
        eventually(SECS5, || pids_with_marker(&m).len() == 4),
        "expected 4 tagged processes, found {:?}",
        pids_with_marker(&m)
    );
    // The daemon left the service's session: it is now corral's child (subreaper).
    // (The loop itself: a fork of it on its way to exec `sleep` carries the
    // tag for a moment too.)
    // (Looked for until found: `setsid` may fork on its way, and for a
    // moment the loop's parent is that fork, under load long enough to see.)
    let daemon_tag = format!("{m}-daemon");
    assert!(
        eventually(SECS5, || loop_of(&daemon_tag)
            .is_some_and(|daemon| parent_of(daemon) == Some(corral.pid()))),
        "the daemon loop is not corral's child: {:?}",
        loop_of(&daemon_tag).map(|d| (d, parent_of(d)))
    );
    // The run's cgroup, if it has one: the daemon's instance cgroup was busy
    // when its service ended; it goes with the rest.
    let cgroup = project
        .read(".corral/corral.run")
        .lines()
        .find_map(|l| l.strip_prefix("cgroup ").map(std::path::PathBuf::from));
    assert_eq!(corral.stop(), 0);
    let left = pids_with_marker(&m);
    assert!(left.is_empty(), "left behind: {left:?}");
    if let Some(cgroup) = cgroup {
        assert!(!cgroup.exists(), "{} is left", cgroup.display());
    }
}

#[test]
fn sigkill_of_corral_kills_its_direct_children() {
    let m = marker("orphaned");
    let project = Project::new(&format!(
        r#"
[services.one]
command = "{one}"

[services.two]
command = "{two}"
"#,
        one = looping(&format!("{m}-1")),
        two = looping(&format!("{m}-2")),
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("two", "started", SECS5);
    assert!(eventually(SECS5, || pids_with_marker(&m).len() == 2));
    corral.signal(libc::SIGKILL);
    assert_eq!(corral.wait_exit(SECS5), 128 + libc::SIGKILL);
    assert!(
        eventually(SECS5, || pids_with_marker(&m).is_empty()),
        "children survived corral: {:?}",
        pids_with_marker(&m)
    );
    // The killed run's record (and cgroup) is cleared by the next `down`.
    let (code, out, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("corral is not running; "), "{out}");
    assert!(!project.file(".corral/corral.run").exists());
}

#[test]
fn second_signal_kills_everything_at_once() {
    let m = marker("force");
    let project = Project::new(&format!(
        r#"
[services.slow]
command = ["sh", "-c", "trap '' TERM INT; echo ready; while :; do sleep 0.1; done", "{m}"]
stop-timeout = "30s"
"#
    ));
    let mut corral = project.up();
    corral.wait_for("ready", SECS5);
    corral.signal(libc::SIGTERM);
    corral.wait_for_service_event("slow", "stopping with SIGTERM", SECS5);
    let asked = Instant::now();
    corral.signal(libc::SIGINT);
    // Forced: not a clean shutdown, so not 0, but 128 + the signal (as a shell).
    assert_eq!(corral.wait_exit(SECS5), 128 + libc::SIGINT);
    assert!(asked.elapsed() < Duration::from_secs(5));
    corral.wait_for("SIGINT received again: killing everything", SECS5);
    assert!(pids_with_marker(&m).is_empty());
}

#[test]
fn shutdown_timeout_bounds_the_whole_shutdown() {
    let project = Project::new(
        r#"
[corral]
shutdown-timeout = "600ms"

[services.slow]
command = ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]
stop-timeout = "30s"
"#,
    );
    let mut corral = project.up();
    corral.wait_for("ready", SECS5);
    let asked = Instant::now();
    assert_eq!(corral.stop(), 0);
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(10),
        "{took:?}"
    );
    corral.wait_for("shutdown-timeout reached", SECS5);
}
