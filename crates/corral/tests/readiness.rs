//! Readiness: dependents wait until a service really works.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

/// A provider that becomes ready about one second after it starts (it writes
/// the time to `ready-stamp` just before), and a dependent gated on `ready`.
fn gated(provider_command: &str, ready: &str) -> Project {
    let project = Project::new(&format!(
        r#"
[services.provider]
command = {provider_command}
ready = {ready}

[services.dependent]
command = ["sh", "-c", "date +%s.%N > dependent-start; exec sleep 60"]
depends-on = {{ provider = "ready" }}
"#
    ));
    project.write("server.py", HTTP_SERVER);
    project
}

/// Starts the project and checks the dependent started after the provider got ready.
fn assert_gated(project: &Project) {
    let mut corral = project.up();
    corral.wait_for_service_event("provider", "ready after", SECS10);
    corral.wait_for_service_event("dependent", "started", SECS5);
    let ready_at = read_times(project, "ready-stamp");
    assert!(eventually(SECS5, || !read_times(
        project,
        "dependent-start"
    )
    .is_empty()));
    let started_at = read_times(project, "dependent-start");
    assert!(
        started_at[0] > ready_at[0],
        "dependent started at {} before the provider could be ready at {}",
        started_at[0],
        ready_at[0]
    );
    let lines = corral.lines();
    let pos = |svc: &str, what: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(svc) && l.contains(what))
    };
    assert!(pos("provider", "ready after") < pos("dependent", "* started"));
    assert_eq!(corral.stop(), 0);
}

#[test]
fn tcp_readiness_gates_the_dependent() {
    let port = free_port();
    assert_gated(&gated(
        &format!(r#"["python3", "server.py", "{port}", "1", "ready-stamp"]"#),
        &format!(r#"{{ tcp = "127.0.0.1:{port}", interval = "50ms" }}"#),
    ));
}

#[test]
fn http_readiness_gates_the_dependent() {
    let port = free_port();
    assert_gated(&gated(
        &format!(r#"["python3", "server.py", "{port}", "1", "ready-stamp"]"#),
        &format!(r#"{{ http = "http://127.0.0.1:{port}/health", interval = "50ms" }}"#),
    ));
}

#[test]
fn exec_readiness_gates_the_dependent() {
    assert_gated(&gated(
        r#"["sh", "-c", "sleep 1; date +%s.%N > ready-stamp; touch ready-flag; exec sleep 60"]"#,
        r#"{ exec = ["test", "-f", "ready-flag"], interval = "50ms" }"#,
    ));
}

#[test]
fn log_line_readiness_gates_the_dependent() {
    assert_gated(&gated(
        r#"["sh", "-c", "echo warming up; sleep 1; date +%s.%N > ready-stamp; echo 'listening on port 5432'; exec sleep 60"]"#,
        r#"{ log = "listening on port \\d+" }"#,
    ));
}

#[test]
fn notify_fd_readiness_gates_the_dependent() {
    assert_gated(&gated(
        r#"["sh", "-c", "sleep 1; date +%s.%N > ready-stamp; printf '\\n' >&3; exec sleep 60"]"#,
        r#"{ notify-fd = 3 }"#,
    ));
}

#[test]
fn a_service_that_never_gets_ready_is_retried_then_failed_and_blocks_dependents() {
    let project = Project::new(
        r#"
[services.stuck]
command = ["sleep", "60"]
ready = { exec = ["false"], interval = "50ms", start-timeout = "300ms" }
max-restarts = 2
backoff = { initial = "100ms" }

[services.dependent]
command = ["sh", "-c", "touch dependent-ran; exec sleep 60"]
depends-on = { stuck = "ready" }
"#,
    );
    let mut corral = project.up();
    corral.wait_for_service_event(
        "stuck",
        "not ready within start-timeout 300ms (last probe: probe command ended with exit code 1)",
        SECS5,
    );
    corral.wait_for_service_event("stuck", "restarting in 100ms (restart 1)", SECS5);
    corral.wait_for_service_event("stuck", "restarting in 200ms (restart 2)", SECS5);
    corral.wait_for_service_event("stuck", "failed: gave up after 2 restarts", SECS10);
    corral.wait_for_service_event("dependent", "not started: dependency stuck failed", SECS5);
    assert_eq!(corral.wait_exit(SECS5), 1);
    assert!(!project.file("dependent-ran").exists());
    let starts = corral
        .lines()
        .iter()
        .filter(|l| l.starts_with("stuck") && l.contains("* started"))
        .count();
    assert_eq!(starts, 3);
}

#[test]
fn restart_true_restarts_the_dependent_after_its_dependency_is_ready_again() {
    let port = free_port();
    let project = Project::new(&format!(
        r#"
[services.db]
command = ["python3", "server.py", "{port}", "0.3", "db-stamp"]
ready = {{ tcp = "127.0.0.1:{port}", interval = "50ms" }}
backoff = {{ initial = "100ms" }}

[services.api]
command = ["sleep", "60"]
depends-on = {{ db = {{ condition = "ready", restart = true }} }}

[services.cron]
command = ["sleep", "60"]
depends-on = {{ db = "ready" }}
"#
    ));
    project.write("server.py", HTTP_SERVER);
    let mut corral = project.up();
    corral.wait_for_service_event("api", "started", SECS10);
    let cron = corral.started_pid("cron", SECS5);
    let db = corral.started_pid("db", SECS5);
    // SAFETY: kill(2) on a pid corral reported.
    unsafe {
        libc::kill(db, libc::SIGKILL);
    }
    corral.wait_for_service_event("api", "restarting with its dependency db", SECS5);
    corral.wait_for_service_event_nth("db", "ready after", 2, SECS10);
    corral.wait_for_service_event_nth("api", "started", 2, SECS10);
    assert!(
        corral.event_position("db", "ready after", 2) < corral.event_position("api", "started", 2)
    );
    let lines = corral.lines();
    // Without restart = true, the other dependent kept running.
    assert!(alive(cron));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("cron") && l.contains("* started"))
            .count(),
        1
    );
    assert_eq!(corral.stop(), 0);
}
