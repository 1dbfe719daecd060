//! Health probes: hung services are restarted, healthy ones left alone; no
//! probe, no wake-up.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_hung_server_is_restarted_and_a_healthy_one_never_touched() {
    let (sick, well) = (free_port(), free_port());
    let project = Project::new(&format!(
        r#"
[services.sick]
command = ["python3", "server.py", "{sick}", "0", "sick-stamp"]
ready = {{ http = "http://127.0.0.1:{sick}/", interval = "50ms" }}
health = {{ http = "http://127.0.0.1:{sick}/", interval = "200ms", timeout = "200ms", retries = 3 }}
stop-timeout = "1s"

[services.well]
command = ["python3", "server.py", "{well}", "0", "well-stamp"]
ready = {{ http = "http://127.0.0.1:{well}/", interval = "50ms" }}
health = {{ http = "http://127.0.0.1:{well}/", interval = "200ms", timeout = "500ms", retries = 3 }}
"#
    ));
    project.write("server.py", HTTP_SERVER);
    let mut corral = project.up();
    corral.wait_for_service_event("sick", "ready after", SECS10);
    corral.wait_for_service_event("well", "ready after", SECS10);
    let pid = corral.started_pid("sick", SECS5);
    // Let a few checks pass first, then hang the server.
    std::thread::sleep(Duration::from_millis(600));
    // SAFETY: kill(2) on a pid corral reported.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    corral.wait_for_service_event("sick", "health check failed (1/3)", SECS5);
    corral.wait_for_service_event("sick", "unhealthy after 3 failed checks: restarting", SECS5);
    corral.wait_for_service_event_nth("sick", "started", 2, SECS10);
    corral.wait_for_service_event_nth("sick", "ready after", 2, SECS10);
    assert!(!alive(pid), "the hung process is gone");
    let touched: Vec<String> = corral
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("well") && (l.contains("health") || l.contains("stopping")))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    assert_eq!(
        corral
            .lines()
            .iter()
            .filter(|l| l.starts_with("well") && l.contains("* started"))
            .count(),
        1
    );
    assert_eq!(corral.stop(), 0);
}

#[test]
fn fifty_services_without_probes_cost_no_wakeups() {
    let config: String = (0..50)
        .map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"60\"]\n\n"))
        .collect::<String>()
        + "[corral]\nparallel = true\n";
    let project = Project::new(&config);
    let mut corral = project.up();
    corral.wait_for_service_event("s49", "started", SECS10);
    // Let start-up settle (console output, pipe readers registering).
    std::thread::sleep(Duration::from_millis(500));
    let before = context_switches(corral.pid());
    std::thread::sleep(Duration::from_secs(3));
    let after = context_switches(corral.pid());
    assert_eq!(after - before, 0, "corral woke up while idle");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn probe_config_errors_are_reported() {
    let project = Project::new(
        r#"
[services.a]
command = ["true"]
ready = { tcp = "nohost", log = "(" }

[services.b]
command = ["true"]
ready = { notify-fd = 1 }
health = { log = "x" }

[services.c]
command = ["true"]
oneshot = true
ready = { http = "https://example.com" }
"#,
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "corral.toml:4:17: error: expected \"host:port\", found \"nohost\"",
        "corral.toml:4:33: error: invalid regex",
        "corral.toml:4:9: error: ready takes one probe, found tcp and log",
        "corral.toml:8:23: error: notify-fd must be between 3 and 1023",
        "corral.toml:9:12: error: unknown key `log` in health",
        "corral.toml:14:1: error: service \"c\" is a oneshot",
        "https probes are not supported",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
