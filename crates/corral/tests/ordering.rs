//! Start order follows depends-on; shutdown runs it in reverse.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

/// A service that records when it started, then stays up until stopped, and
/// records its stop in `stops`.
fn recorder(name: &str) -> String {
    format!(
        r#"
[services.{name}]
command = ["sh", "-c", "trap 'echo {name} >> stops; exit 0' TERM; date +%s.%N >> {name}.start; sleep 60 & wait"]
"#
    )
}

#[test]
fn chain_starts_in_order_and_stops_in_reverse() {
    // Declared backwards on purpose: c needs b, b needs a.
    let config = format!(
        "{}depends-on = [\"b\"]\n{}depends-on = [\"a\"]\n{}",
        recorder("c"),
        recorder("b"),
        recorder("a")
    );
    let project = Project::new(&config);
    let mut corral = project.up();
    corral.wait_for_service_event("c", "started", SECS5);
    let lines = corral.lines();
    let pos = |n: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("{n} ")) && l.contains("* started"))
    };
    let (a, b, c) = (pos("a"), pos("b"), pos("c"));
    assert!(a < b && b < c, "start order a, b, c: {a:?} {b:?} {c:?}");
    // Every service recorded its start before we stop.
    assert!(eventually(SECS5, || ["a", "b", "c"].iter().all(|n| {
        !read_times(&project, &format!("{n}.start")).is_empty()
    })));
    assert_eq!(corral.stop(), 0);
    assert_eq!(project.read("stops"), "c\nb\na\n");
}

#[test]
fn diamond_of_oneshots_runs_branches_in_parallel_after_the_root() {
    // root -> (left, right) -> join; each oneshot records start and end.
    let step = |name: &str, deps: &str| {
        format!(
            r#"
[services.{name}]
command = ["sh", "-c", "date +%s.%N >> {name}.start; sleep 0.5; date +%s.%N >> {name}.end"]
oneshot = true
depends-on = {deps}
"#
        )
    };
    let config = [
        step("join", r#"{ left = "completed", right = "completed" }"#),
        step("left", r#"{ root = "completed" }"#),
        step("right", r#"{ root = "completed" }"#),
        step("root", "[]"),
    ]
    .concat();
    let project = Project::new(&config);
    let mut corral = project.up();
    // With only oneshots, corral ends by itself once all completed.
    assert_eq!(corral.wait_exit(SECS10), 0);
    let t = |f: &str| read_times(&project, f).first().copied().expect(f);
    let root_end = t("root.end");
    for branch in ["left", "right"] {
        assert!(
            t(&format!("{branch}.start")) >= root_end,
            "{branch} started before root completed"
        );
        assert!(
            t("join.start") >= t(&format!("{branch}.end")),
            "join started before {branch} completed"
        );
    }
    // Parallel branches overlap.
    assert!(t("left.start") < t("right.end") && t("right.start") < t("left.end"));
}

#[test]
fn failed_oneshot_blocks_its_dependents() {
    let project = Project::new(
        r#"
[services.migrate]
command = ["sh", "-c", "echo migration failed; exit 3"]
oneshot = true

[services.app]
command = ["sh", "-c", "touch app-ran; sleep 60"]
depends-on = { migrate = "completed" }
"#,
    );
    let mut corral = project.up();
    corral.wait_for_service_event("migrate", "failed with exit code 3", SECS5);
    corral.wait_for_service_event("app", "not started: dependency migrate failed", SECS5);
    assert_eq!(corral.wait_exit(SECS5), 1);
    assert!(!project.file("app-ran").exists());
}

#[test]
fn without_depends_on_file_order_is_start_order() {
    let project =
        Project::new(&[recorder("first"), recorder("second"), recorder("third")].concat());
    let mut corral = project.up();
    corral.wait_for_service_event("third", "started", SECS5);
    let lines = corral.lines();
    let pos = |n: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(n) && l.contains("* started"))
    };
    assert!(pos("first") < pos("second") && pos("second") < pos("third"));
    assert!(eventually(SECS5, || ["first", "second", "third"]
        .iter()
        .all(
            |n| !read_times(&project, &format!("{n}.start")).is_empty()
        )));
    assert_eq!(corral.stop(), 0);
    assert_eq!(project.read("stops"), "third\nsecond\nfirst\n");
}

#[test]
fn pre_runs_before_each_start_and_post_after_each_stop() {
    let project = Project::new(
        r#"
[services.app]
command = ["sh", "-c", "echo run >> log; exit 1"]
pre = ["sh", "-c", "echo pre >> log"]
post = ["sh", "-c", "echo post >> log"]
max-restarts = 1
backoff = { initial = "50ms" }
"#,
    );
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS10), 1);
    assert_eq!(project.read("log"), "pre\nrun\npost\npre\nrun\npost\n");
}

#[test]
fn failing_pre_is_a_failed_start() {
    let project = Project::new(
        r#"
[services.app]
command = ["sh", "-c", "touch ran; sleep 60"]
pre = ["sh", "-c", "exit 4"]
restart = "never"
"#,
    );
    let mut corral = project.up();
    corral.wait_for_service_event("app", "pre step failed with exit code 4", SECS5);
    assert_eq!(corral.wait_exit(SECS5), 1);
    assert!(!project.file("ran").exists());
}
