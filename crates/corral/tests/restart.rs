//! Restart policies, backoff, max-restarts and essential services.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

fn starts(project: &Project) -> usize {
    project.read("starts").lines().count()
}

#[test]
fn on_failure_restarts_only_failures() {
    let project = Project::new(
        r#"
[services.fails]
command = ["sh", "-c", "echo x >> starts; exit 1"]
restart = "on-failure"
max-restarts = 2
backoff = { initial = "10ms" }

[services.succeeds]
command = ["sh", "-c", "echo x >> ok-starts; exit 0"]
restart = "on-failure"
"#,
    );
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS10), 1);
    assert_eq!(starts(&project), 3, "1 start + 2 restarts");
    assert_eq!(project.read("ok-starts").lines().count(), 1);
    corral.wait_for_service_event("fails", "gave up after 2 restarts", SECS5);
}

#[test]
fn always_restarts_even_clean_exits_and_never_does_not() {
    let project = Project::new(
        r#"
[services.always]
command = ["sh", "-c", "echo x >> starts; exit 0"]
restart = "always"
backoff = { initial = "10ms", max = "10ms" }

[services.never]
command = ["sh", "-c", "echo x >> never-starts; exit 1"]
restart = "never"
"#,
    );
    let mut corral = project.up();
    assert!(eventually(SECS5, || starts(&project) >= 5));
    corral.wait_for_service_event("never", "failed with exit code 1", SECS5);
    assert_eq!(corral.stop(), 0);
    assert_eq!(project.read("never-starts").lines().count(), 1);
}

#[test]
fn backoff_grows_and_is_capped() {
    let project = Project::new(
        r#"
[services.crashy]
command = ["sh", "-c", "date +%s.%N >> starts; exit 1"]
backoff = { initial = "100ms", max = "400ms" }
max-restarts = 5
"#,
    );
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS10), 1);
    let announced: Vec<String> = corral
        .lines()
        .iter()
        .filter_map(|l| {
            l.split("restarting in ")
                .nth(1)
                .map(|r| r.split(' ').next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(announced, ["100ms", "200ms", "400ms", "400ms", "400ms"]);
    // The delays really happened: each gap is at least the announced delay.
    let times = read_times(&project, "starts");
    assert_eq!(times.len(), 6);
    let expected = [0.1, 0.2, 0.4, 0.4, 0.4];
    for (i, want) in expected.iter().enumerate() {
        let gap = times[i + 1] - times[i];
        assert!(
            gap >= want * 0.95,
            "gap {i} was {gap:.3}s, expected >= {want}s"
        );
    }
}

#[test]
fn essential_failure_stops_everything_with_its_exit_code() {
    let m = marker("essential");
    let project = Project::new(&format!(
        r#"
[services.sidecar]
command = ["sh", "-c", "exec sleep 60 # {m}"]

[services.app]
command = ["sh", "-c", "sleep 0.3; exit 42"]
essential = true
restart = "never"
"#
    ));
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS10), 42);
    corral.wait_for("shutting down: essential service app failed", SECS5);
    assert!(pids_with_marker(&m).is_empty(), "sidecar left running");
}

#[test]
fn essential_killed_by_signal_exits_128_plus_signal() {
    let project = Project::new(
        r#"
[services.app]
command = ["sh", "-c", "kill -9 $$$$"]  # $$ is a literal $ in corral.toml
essential = true
restart = "never"
"#,
    );
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS10), 137);
}

#[test]
fn a_program_that_cannot_run_fails_at_once_with_its_reason() {
    let project = Project::new(
        r#"
[services.ghost]
command = ["/nonexistent/program"]
backoff = { initial = "10ms" }

[services.web]
command = ["sleep", "1000"]
"#,
    );
    let mut corral = project.up();
    corral.wait_for_service_event(
        "ghost",
        "did not start: cannot run \"/nonexistent/program\"",
        SECS5,
    );
    // No restart loop: it would fail the same way every time.
    corral.wait_for_service_event("ghost", "failed", SECS5);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = get_json(&project, "/v1/services/ghost");
    assert_eq!(status["state"], "failed");
    assert_eq!(status["restarts"], 0);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot run \"/nonexistent/program\": No such file or directory"),
        "{status}"
    );
    let (_, ps, _) = project.run(&["ps"]);
    assert!(has_row(&ps, "ghost", "No such file or directory"), "{ps}");
    assert_eq!(state_of(&project, "web"), "running");
    assert_eq!(corral.stop(), 0);
}
