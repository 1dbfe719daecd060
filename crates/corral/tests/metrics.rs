//! Prometheus metrics: `/v1/metrics` on the control socket and the opt-in
//! TCP listener, checked by Prometheus's own parser (promtool).
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::*;

fn config(port: u16) -> String {
    format!(
        r#"
[corral]
metrics = "127.0.0.1:{port}"

[services.db]
command = ["sh", "-c", "echo db up; echo warming >&2; exec sleep 600"]
provides = [{{ name = "db", port = 5432 }}]

[services.web]
command = ["sh", "-c", "echo web up; sleep 1; exit 3"]
health = {{ exec = ["true"], interval = "1s" }}

[services.tick]
command = ["echo", "tick"]
schedule = "* * * * * *"
"#
    )
}

/// Prometheus's own parser and linter; the test suite's script installs it.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Samples by their whole name with labels: `name{a="b"}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// One plain HTTP/1.1 request over TCP: (status, headers, body).
fn http(port: u16, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn scrape(project: &Project) -> String {
    let (status, body) = raw_http(&socket_of(project), "GET", "/v1/metrics", b"");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn metrics_parse_with_promtool_and_counters_only_grow_across_restarts() {
    let port = free_port();
    let project = Project::new(&config(port));
    let daemon = project.up();
    daemon.wait_for_output("db", "db up", SECS5);
    // web exits with 3 after a second and is restarted: a crash restart.
    daemon.wait_for_service_event("web", "exited with exit code 3", SECS10);
    let first = scrape(&project);
    promtool_check(&first);
    let before = samples(&first);
    for wanted in [
        r#"corral_service_up{service="db"}"#,
        r#"corral_service_ready{service="db"}"#,
        r#"corral_service_restarts_total{service="db"}"#,
        r#"corral_service_cpu_seconds_total{service="db"}"#,
        r#"corral_service_memory_rss_bytes{service="db"}"#,
        r#"corral_service_last_exit_code{service="web"}"#,
        r#"corral_job_last_run_timestamp_seconds{service="tick"}"#,
        r#"corral_discovery_endpoints{name="db"}"#,
        r#"corral_log_lines_total{service="db",stream="stdout"}"#,
    ] {
        assert!(before.contains_key(wanted), "{wanted} missing:\n{first}");
    }
    assert_eq!(
        before[r#"corral_service_last_exit_code{service="web"}"#],
        3.0
    );
    assert_eq!(before[r#"corral_service_up{service="db"}"#], 1.0);
    assert_eq!(
        before[r#"corral_log_lines_total{service="db",stream="stderr"}"#],
        1.0
    );
    assert!(before[r#"corral_service_memory_rss_bytes{service="db"}"#] > 0.0);

    // Restarts by hand and by policy, jobs ticking: no counter goes back.
    let (code, _, err) = project.run(&["restart", "db"]);
    assert_eq!(code, 0, "{err}");
    daemon.wait_for_service_event_nth("web", "exited with exit code 3", 2, SECS10);
    let second = scrape(&project);
    promtool_check(&second);
    let after = samples(&second);
    let mut counters = 0;
    for (key, old) in &before {
        if key.split('{').next().unwrap().ends_with("_total") {
            counters += 1;
            let new = after.get(key).unwrap_or_else(|| panic!("{key} vanished"));
            assert!(new >= old, "{key} went from {old} to {new}");
        }
    }
    assert!(counters >= 9, "{counters} counters");
    assert!(
        after[r#"corral_service_restarts_total{service="web"}"#]
            > before[r#"corral_service_restarts_total{service="web"}"#]
    );
    assert!(
        after[r#"corral_log_lines_total{service="db",stream="stdout"}"#]
            > before[r#"corral_log_lines_total{service="db",stream="stdout"}"#]
    );
}

#[test]
fn the_tcp_listener_serves_metrics_and_refuses_control_routes() {
    let port = free_port();
    let project = Project::new(&config(port));
    let daemon = project.up();
    wait_for_socket(&project);
    let db = daemon.started_pid("db", SECS5);

    let (status, head, body) = http(port, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    promtool_check(&body);

    for (method, path) in [
        ("GET", "/v1/services"),
        ("GET", "/v1/metrics"),
        ("POST", "/v1/services/db/stop"),
        ("POST", "/v1/shutdown"),
        ("GET", "/"),
    ] {
        let (status, _, body) = http(port, method, path);
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body.contains("only /metrics"), "{body}");
    }
    let (status, _, body) = http(port, "POST", "/metrics");
    assert_eq!(status, 405, "{body}");
    // Nothing the refused requests asked for happened.
    assert!(alive(db));
    assert_eq!(state_of(&project, "db"), "running");
}

#[test]
fn a_bad_metrics_address_or_a_busy_port_is_a_clear_error() {
    let project = Project::new(
        "[corral]\nmetrics = \"localhost\"\n[services.a]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let (code, _, err) = project.run(&["check"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("corral.toml:2:") && err.contains("metrics must be an address and port"),
        "{err}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let project = Project::new(&config(port));
    let (code, _, err) = project.run(&["up"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("cannot listen for metrics on 127.0.0.1:{port}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Idle connections cannot starve the scrapers: the oldest silent one is
/// closed to make room, as on the control socket; and scrapers beyond the
/// limit wait their turn instead of being reset.
#[test]
fn idle_connections_do_not_starve_scrapers_and_a_crowd_is_not_reset() {
    let port = free_port();
    let project = Project::new(&format!(
        "[corral]\nmetrics = \"127.0.0.1:{port}\"\n[services.a]\ncommand = [\"sleep\", \"600\"]\n"
    ));
    let mut corral = project.up();
    corral.started_pid("a", SECS5);
    assert!(eventually(SECS5, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let idle: Vec<std::net::TcpStream> = (0..32)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for i in 0..20 {
        let (status, _, body) = http(port, "GET", "/metrics");
        assert_eq!(status, 200, "scrape {i}: {body}");
    }
    drop(idle);
    // 50 scrapers at once, 20 scrapes each: every one answered.
    let threads: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                (0..20)
                    .filter(|_| http(port, "GET", "/metrics").0 == 200)
                    .count()
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 1000);
    assert_eq!(corral.stop(), 0);
}
