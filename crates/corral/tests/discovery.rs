//! Discovery on one host: requires/provides, injected endpoints, change actions.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

/// A provider of `db` on `port` (a plain sleep: registered as soon as it runs).
fn provider(port: u16) -> String {
    format!(
        r#"
[services.db]
command = ["sleep", "60"]
provides = [{{ name = "db", port = {port}, tags = ["primary"] }}]
"#
    )
}

#[test]
fn a_dependent_gets_the_endpoints_and_restarts_when_they_move() {
    let app = r#"
[services.app]
command = ["sh", "-c", "echo addr=$DB_ADDR host=$DB_HOST port=$DB_PORT all=$DB_ADDRS; cat $CORRAL_ENDPOINTS_FILE; exec sleep 60"]
requires = ["db"]
change-wait = { min = "50ms", max = "500ms" }
"#;
    let project = Project::new(&(provider(30001) + app));
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for(
        "addr=127.0.0.1:30001 host=127.0.0.1 port=30001 all=127.0.0.1:30001",
        SECS5,
    );
    daemon.wait_for("\"instance\":", SECS5);
    let (_, endpoints, _) = project.run(&["endpoints", "db"]);
    assert!(
        endpoints.contains("127.0.0.1:30001") && endpoints.contains("primary"),
        "{endpoints}"
    );
    // The provider moves to another port: the dependent restarts with the new address.
    project.write("corral.toml", &(provider(30002) + app));
    let (code, _, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{err}");
    daemon.wait_for("addr=127.0.0.1:30002", SECS5);
    daemon.wait_for_service_event("app", "endpoints changed (db: 1): restarting", SECS5);
}

#[test]
fn signal_action_comes_after_the_template_is_rendered() {
    let project = Project::new(
        r#"
[services.db]
command = ["sleep", "60"]
replicas = 1
port = 31000
provides = [{ name = "db", port = "${PORT}" }]

[services.proxy]
command = ["sh", "-c", "trap 'echo reloaded: $(cat servers.cfg)' HUP; echo up; while :; do sleep 0.1; done"]
requires = ["db"]
templates = [{ source = "servers.tmpl", target = "servers.cfg" }]
on-change = "signal:SIGHUP"
change-wait = { min = "100ms", max = "1s" }
"#,
    );
    project.write(
        "servers.tmpl",
        "{% for e in endpoints.db %}{{ e.addr }} {% endfor %}",
    );
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_output("proxy", "up", SECS5);
    assert_eq!(project.read("servers.cfg"), "127.0.0.1:31000 ");
    let proxy = daemon.started_pid("proxy", SECS5);
    let (code, _, err) = project.run(&["scale", "db", "3"]);
    assert_eq!(code, 0, "{err}");
    daemon.wait_for(
        "reloaded: 127.0.0.1:31000 127.0.0.1:31001 127.0.0.1:31002",
        SECS10,
    );
    assert!(alive(proxy), "a signal action does not restart");
}

#[test]
fn a_command_action_sees_the_new_environment_and_changes_are_debounced() {
    let project = Project::new(
        r#"
[services.db]
command = ["sleep", "60"]
replicas = 1
port = 32000
provides = [{ name = "db", port = "${PORT}" }]

[services.app]
command = ["sleep", "60"]
requires = ["db"]
on-change = ["sh", "-c", "echo $DB_ADDRS >> changes.log"]
change-wait = { min = "1s", max = "10s" }
"#,
    );
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("app", "started", SECS5);
    // Ten new endpoints within the quiet period: one action.
    let (code, _, err) = project.run(&["scale", "db", "11"]);
    assert_eq!(code, 0, "{err}");
    assert!(eventually(SECS10, || !project
        .read("changes.log")
        .is_empty()));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let log = project.read("changes.log");
    assert_eq!(log.lines().count(), 1, "{log}");
    let addrs: Vec<&str> = log.trim().split(',').collect();
    assert_eq!(addrs.len(), 11, "{log}");
    assert!(addrs.contains(&"127.0.0.1:32010"));
    assert_eq!(
        daemon
            .lines()
            .iter()
            .filter(|l| l.contains("endpoints changed"))
            .count(),
        1
    );
}

#[test]
fn a_requirement_never_met_fails_the_dependent_with_its_name() {
    let project = Project::new(
        r#"
[services.app]
command = ["sh", "-c", "touch ran; sleep 60"]
requires = ["ghost", { name = "db", tags = ["primary"] }]
require-timeout = "500ms"

[services.db]
command = ["sleep", "60"]
provides = [{ name = "db", port = 33000, tags = ["replica"] }]

# Provides ghost once ready, which it never is.
[services.ghost]
command = ["sleep", "60"]
provides = [{ name = "ghost", port = 33001 }]
ready = { log = "never printed", start-timeout = "10m" }
"#,
    );
    let mut daemon = project.up();
    daemon.wait_for_service_event("app", "waiting for endpoints of db, ghost", SECS5);
    daemon.wait_for_service_event(
        "app",
        "no endpoint for db, ghost within require-timeout 500ms: not started",
        SECS5,
    );
    assert!(!project.file("ran").exists());
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn restart_on_change_rolls_through_replicas_one_at_a_time() {
    let project = Project::new(
        r#"
[services.db]
command = ["sleep", "60"]
replicas = 1
port = 34000
provides = [{ name = "db", port = "${PORT}" }]

[services.app]
command = ["sh", "-c", "sleep 0.3; printf '\n' >&3; exec sleep 60"]
replicas = 3
ready = { notify-fd = 3 }
requires = ["db"]
change-wait = { min = "100ms", max = "1s" }
"#,
    );
    let daemon = project.up();
    wait_for_socket(&project);
    for i in 0..3 {
        daemon.wait_for_service_event(&format!("app.{i}"), "ready after", SECS10);
    }
    let (code, _, err) = project.run(&["scale", "db", "2"]);
    assert_eq!(code, 0, "{err}");
    for i in 0..3 {
        daemon.wait_for_service_event_nth(&format!("app.{i}"), "ready after", 2, SECS10);
    }
    // Never two instances down at once: each is stopped only while no other
    // one is between its stop and its readiness.
    let lines = daemon.lines();
    let mut down: Option<String> = None;
    for line in lines.iter().filter(|l| l.starts_with("app.")) {
        let svc = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if line.contains("* stopping") {
            assert!(
                down.is_none(),
                "{svc} stopped while {down:?} was down:\n{}",
                lines.join("\n")
            );
            down = Some(svc);
        } else if line.contains("* ready after") && down.as_deref() == Some(svc.as_str()) {
            down = None;
        }
    }
    assert!(down.is_none());
}

#[test]
fn endpoint_changes_appear_in_the_event_stream() {
    use std::io::{BufRead, BufReader, Write};
    let project = Project::new(
        r#"
[services.db]
command = ["sleep", "60"]
replicas = 1
port = 35000
provides = [{ name = "db", port = "${PORT}" }]
"#,
    );
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("db.0", "registered db", SECS5);
    let mut stream = std::os::unix::net::UnixStream::connect(socket_of(&project)).expect("connect");
    stream.set_read_timeout(Some(SECS5)).expect("read timeout");
    stream
        .write_all(b"GET /v1/events HTTP/1.0\r\nHost: corral\r\n\r\n")
        .expect("request");
    let mut reader = BufReader::new(stream);
    // The stream is open once the status line arrives.
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains("200"), "{status}");
    let (code, _, err) = project.run(&["scale", "db", "2"]);
    assert_eq!(code, 0, "{err}");
    let seen = reader
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("\"message\":\"endpoints changed: db\""));
    assert!(seen, "no endpoint change in the event stream");
}

/// The Registry contract (src/discovery/mod.rs), checked through the daemon:
/// a restarted instance replaces its endpoint, a stopped one withdraws every
/// endpoint it had, and lookups come in a stable order.
#[test]
fn the_registry_keeps_its_contract_through_the_daemon() {
    let project = Project::new(
        r#"
[services.db]
command = ["sleep", "60"]
replicas = 3
port = 32000
provides = [{ name = "db", port = "${PORT}" }, { name = "admin", port = 33000 }]
"#,
    );
    let daemon = project.up();
    wait_for_socket(&project);
    for i in 0..3 {
        daemon.wait_for_service_event(&format!("db.{i}"), "registered admin", SECS5);
    }
    let endpoints = |name: &str| -> Vec<(String, u64)> {
        get_json(&project, &format!("/v1/endpoints?name={name}"))["endpoints"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        let instance = e["instance"].as_str().unwrap_or_default();
                        let service = instance.rsplit(':').next().unwrap_or_default();
                        (service.to_string(), e["port"].as_u64().unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let all = [
        ("db.0".to_string(), 32000),
        ("db.1".to_string(), 32001),
        ("db.2".to_string(), 32002),
    ];
    assert_eq!(endpoints("db"), all, "stable order: by instance");
    // A restart registers the instance again: it replaces, never duplicates.
    let (code, out, _) = project.run(&["restart", "db.1"]);
    assert_eq!((code, out.trim()), (0, "db.1 is running"));
    assert_eq!(endpoints("db"), all);
    assert_eq!(endpoints("admin").len(), 3);
    // A stop withdraws every name of that instance, and only its own.
    let (code, _, _) = project.run(&["stop", "db.2"]);
    assert_eq!(code, 0);
    assert_eq!(endpoints("db"), all[..2]);
    assert_eq!(
        endpoints("admin"),
        [("db.0".to_string(), 33000), ("db.1".to_string(), 33000)]
    );
}
