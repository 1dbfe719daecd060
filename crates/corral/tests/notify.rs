//! sd_notify: services tell corral through NOTIFY_SOCKET that they are
//! ready, reloading, stopping, what they are doing, which process is their
//! main one, and that they are alive (the watchdog). Real servers (redis,
//! haproxy) and a small program that sends what each test needs.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::os::linux::net::SocketAddrExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const NOTIFIER: &str = include_str!("programs/notifier.py");

/// A project whose `notifier.py` is at hand.
fn project(config: &str) -> Project {
    let project = Project::new(config);
    project.write("notifier.py", NOTIFIER);
    project
}

/// The `python3 notifier.py STEPS...` command as a TOML array.
fn notifier(steps: &[&str]) -> String {
    let mut words = vec!["\"python3\"".to_string(), "\"notifier.py\"".to_string()];
    words.extend(steps.iter().map(|s| format!("{s:?}")));
    format!("[{}]", words.join(", "))
}

fn service_json(project: &Project, name: &str) -> serde_json::Value {
    get_json(project, &format!("/v1/services/{name}"))
}

#[test]
fn ready_1_gates_dependents_and_status_shows_in_ps() {
    let project = project(&format!(
        r#"
[services.provider]
command = {}
notify = true

[services.dependent]
command = ["sh", "-c", "echo dependent up; exec sleep 60"]
depends-on = {{ provider = "ready" }}
"#,
        notifier(&[
            "env:NOTIFY_SOCKET",
            "sleep:1",
            "send:STATUS=warming up",
            "print:ready now",
            "send:READY=1",
            "wait"
        ])
    ));
    let mut corral = project.up();
    let socket = corral.wait_for_output("provider", "NOTIFY_SOCKET=@corral/", SECS5);
    assert!(socket.contains("NOTIFY_SOCKET=@"), "{socket}");
    corral.wait_for_service_event("provider", "ready after", SECS10);
    corral.wait_for_output("dependent", "dependent up", SECS5);
    // Its output may reach the console before corral's event of its start.
    corral.wait_for_service_event("dependent", "started", SECS5);
    let lines = corral.lines();
    let at = |svc: &str, sep: char, what: &str| {
        lines
            .iter()
            .position(|l| is_line_of(l, svc, sep, what))
            .unwrap_or_else(|| panic!("no {svc} {what}"))
    };
    // (Its own output and corral's events reach the console by different
    // paths: only the events' order is fixed.)
    assert!(at("provider", '*', "ready after") < at("dependent", '*', "started"));
    assert_eq!(service_json(&project, "provider")["status"], "warming up");
    let (code, ps, _) = project.run(&["ps"]);
    assert_eq!(code, 0);
    assert!(has_row(&ps, "provider", "warming up"), "{ps}");
    assert_eq!(corral.stop(), 0);
}

/// A service that never sends READY=1 is not ready: start-timeout fails it.
#[test]
fn without_ready_1_the_start_times_out() {
    let project = project(&format!(
        r#"
[services.mute]
command = {}
ready = {{ notify = true, start-timeout = "500ms" }}
restart = "never"
"#,
        notifier(&["send:STATUS=still thinking", "wait"])
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("mute", "not ready within start-timeout 500ms", SECS5);
    corral.stop();
}

#[test]
fn redis_with_supervised_systemd_becomes_ready_through_ready_1() {
    assert!(
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok(),
        "redis-server is needed for this test (scripts/test installs it)"
    );
    let port = free_port();
    let project = Project::new(&format!(
        r#"
[services.redis]
command = ["redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--supervised", "systemd", "--dir", "."]
ready = "notify"

[services.app]
command = ["sh", "-c", "echo app up; exec sleep 60"]
depends-on = {{ redis = "ready" }}
"#
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("redis", "ready after", SECS10);
    corral.wait_for_output("app", "app up", SECS5);
    corral.wait_for_service_event("app", "started", SECS5);
    let lines = corral.lines();
    let accepting = lines
        .iter()
        .position(|l| is_line_of(l, "redis", '|', "Ready to accept connections"))
        .expect("redis said it accepts connections");
    let ready = lines
        .iter()
        .position(|l| is_line_of(l, "redis", '*', "ready after"))
        .unwrap();
    let app = lines
        .iter()
        .position(|l| is_line_of(l, "app", '*', "started"))
        .unwrap();
    // Only the events' order is fixed (redis's own line comes by its pipe).
    let _ = accepting;
    assert!(ready < app, "{lines:#?}");
    // redis says what it is doing (STATUS=).
    assert!(
        service_json(&project, "redis")["status"]
            .as_str()
            .is_some_and(|s| s.contains("Ready to accept connections")),
        "{}",
        service_json(&project, "redis")
    );
    assert_eq!(corral.stop(), 0);
}

#[test]
fn haproxy_in_master_worker_mode_becomes_ready_through_ready_1() {
    let port = free_port();
    let project = Project::new(
        r#"
[services.proxy]
command = ["haproxy", "-Ws", "-f", "haproxy.cfg"]
notify = true

[services.app]
command = ["sh", "-c", "echo app up; exec sleep 60"]
depends-on = { proxy = "ready" }
"#,
    );
    project.write(
        "haproxy.cfg",
        &format!(
            "global\n  maxconn 64\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             frontend web\n  bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string ok\n"
        ),
    );
    let mut corral = project.up();
    corral.wait_for_service_event("proxy", "ready after", SECS10);
    corral.wait_for_output("app", "app up", SECS5);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(corral.stop(), 0);
}

#[test]
fn a_pinged_watchdog_keeps_running_and_a_missed_one_aborts_and_restarts() {
    let project = project(&format!(
        r#"
[services.alive]
command = {}
notify = true
watchdog = "1s"

[services.hung]
command = {}
watchdog = "1s"
backoff = {{ initial = "100ms" }}
"#,
        notifier(&["env:WATCHDOG_USEC", "send:READY=1", "pet:0.1"]),
        notifier(&["env:WATCHDOG_PID", "send:READY=1", "wait"]),
    ));
    let mut corral = project.up();
    corral.wait_for_output("alive", "WATCHDOG_USEC=1000000", SECS5);
    let hung = corral.started_pid("hung", SECS5);
    corral.wait_for_output("hung", &format!("WATCHDOG_PID={hung}"), SECS5);
    corral.wait_for_service_event(
        "hung",
        "no WATCHDOG=1 within the watchdog period: sending SIGABRT",
        SECS5,
    );
    // It is restarted, as a failure.
    corral.wait_for_service_event("hung", "restarting in", SECS5);
    corral.started_pid_nth("hung", 2);
    let json = service_json(&project, "hung");
    assert_eq!(json["last_exit"], "signal SIGABRT", "{json}");
    std::thread::sleep(Duration::from_millis(1500));
    let alive = service_json(&project, "alive");
    assert_eq!(alive["state"], "running", "{alive}");
    assert_eq!(alive["restarts"], 0, "{alive}");
    assert!(corral.event_position("alive", "WATCHDOG", 1).is_none());
    corral.stop();
}

#[test]
fn mainpid_is_followed_for_exit_and_stop() {
    let project = project(&format!(
        r#"
[services.forking]
command = {}
notify = true
restart = "never"
"#,
        notifier(&["fork:0.3", "print:child running", "send:READY=1", "wait"])
    ));
    let mut corral = project.up();
    let parent = corral.started_pid("forking", SECS5);
    let line = corral.wait_for_service_event("forking", "main process is now pid ", SECS5);
    let main: i32 = line
        .rsplit("pid ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("a pid");
    assert_ne!(main, parent);
    corral.wait_for_service_event("forking", "ready after", SECS5);
    // The parent's exit is not the service's.
    assert!(eventually(SECS5, || !alive(parent)));
    std::thread::sleep(Duration::from_millis(300));
    let json = service_json(&project, "forking");
    assert_eq!(json["state"], "running", "{json}");
    assert_eq!(json["pid"], main, "{json}");
    // Signals and stop go to the main process.
    let (code, _, err) = project.run(&["stop", "forking"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        eventually(SECS5, || !alive(main)),
        "pid {main} outlived its stop"
    );
    corral.wait_for_service_event("forking", "stopped", SECS5);
    corral.stop();
}

#[test]
fn mainpid_that_exits_by_itself_ends_the_service() {
    let project = project(&format!(
        r#"
[services.forking]
command = {}
notify = true
restart = "never"
"#,
        notifier(&["fork:0.2", "send:READY=1", "sleep:1", "print:child leaving"])
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("forking", "main process is now pid ", SECS5);
    corral.wait_for_output("forking", "child leaving", SECS5);
    corral.wait_for_service_event("forking", "exited with exit code 0", SECS5);
    corral.stop();
}

#[test]
fn reloading_makes_it_not_ready_until_ready_again() {
    let project = project(&format!(
        r#"
[services.server]
command = {}
notify = true
"#,
        notifier(&[
            "send:READY=1",
            "sleep:0.5",
            "send:RELOADING=1\\nSTATUS=reloading",
            "print:reloading",
            "sleep:1.5",
            "send:READY=1\\nSTATUS=serving",
            "print:reloaded",
            "wait"
        ])
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("server", "ready after", SECS5);
    corral.wait_for_output("server", "reloading", SECS5);
    corral.wait_for_service_event("server", "reloading (RELOADING=1)", SECS5);
    let json = service_json(&project, "server");
    assert_eq!(json["state"], "starting", "{json}");
    assert_eq!(json["ready"], false, "{json}");
    corral.wait_for_output("server", "reloaded", SECS5);
    corral.wait_for_service_event_nth("server", "ready after", 2, SECS5);
    assert!(eventually(SECS5, || service_json(&project, "server")
        ["status"]
        == "serving"));
    assert_eq!(service_json(&project, "server")["state"], "running");
    corral.stop();
}

#[test]
fn extend_timeout_gives_a_slow_start_more_time() {
    let project = project(&format!(
        r#"
[services.slow]
command = {}
ready = {{ notify = true, start-timeout = "500ms" }}
restart = "never"
"#,
        notifier(&[
            "send:EXTEND_TIMEOUT_USEC=3000000",
            "sleep:1.5",
            "send:READY=1",
            "wait"
        ])
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("slow", "timeout extended by 3s", SECS5);
    corral.wait_for_service_event("slow", "ready after", SECS5);
    assert!(corral.event_position("slow", "not ready", 1).is_none());
    corral.stop();
}

#[test]
fn stopping_and_errno_are_said() {
    let project = project(&format!(
        r#"
[services.quitter]
command = {}
notify = true
restart = "never"
"#,
        notifier(&[
            "send:READY=1",
            "sleep:0.3",
            "send:STOPPING=1",
            "send:ERRNO=2",
            "sleep:0.3"
        ])
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("quitter", "stopping by itself (STOPPING=1)", SECS5);
    corral.wait_for_service_event("quitter", "ERRNO=2", SECS5);
    corral.wait_for_service_event("quitter", "exited with exit code 0", SECS5);
    corral.stop();
}

/// Messages from outside the instance, malformed, oversized and unknown
/// ones are counted and ignored: the service stays as it is.
#[test]
fn bad_messages_are_counted_and_ignored() {
    let project = project(&format!(
        r#"
[services.target]
command = {}
notify = true
"#,
        notifier(&[
            "env:NOTIFY_SOCKET",
            "big:5000",
            "raw:ff00fe",
            "send:NO_EQUALS_SIGN",
            "send:FDSTORE=1",
            "send:MAINPID=1",
            "sleep:0.3",
            "print:sent",
            "wait"
        ])
    ));
    let mut corral = project.up();
    let line = corral.wait_for_output("target", "NOTIFY_SOCKET=@", SECS5);
    let name = line
        .rsplit("NOTIFY_SOCKET=@")
        .next()
        .unwrap()
        .trim()
        .to_string();
    corral.wait_for_output("target", "sent", SECS5);
    // This test's own process is not of the instance: READY=1 from it is not heard.
    let stranger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    for _ in 0..3 {
        stranger.send_to_addr(b"READY=1", &addr).unwrap();
    }
    assert!(eventually(SECS5, || {
        service_json(&project, "target")["notify_ignored"].as_u64() == Some(8)
    }));
    let json = service_json(&project, "target");
    assert_eq!(json["state"], "starting", "{json}");
    assert!(json.get("status").is_none(), "{json}");
    corral.wait_for_service_event("target", "from processes outside the instance", SECS5);
    // Then the real thing still works.
    assert_eq!(corral.stop(), 0);
}

/// A service that floods its notify socket gets a bounded share of corral:
/// another service is still supervised and the API answers.
#[test]
fn a_flood_of_notify_messages_leaves_the_rest_supervised() {
    let project = project(&format!(
        r#"
[services.flood]
command = {}
notify = true

[services.crashy]
command = ["sh", "-c", "sleep 0.2; exit 3"]
backoff = {{ initial = "50ms", max = "50ms" }}
"#,
        notifier(&["send:READY=1", "flood"])
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("flood", "ready after", SECS5);
    let cpu = |pid: i32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };
    let start_cpu = cpu(corral.pid());
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    // The crash loop went on, each exit reaped and restarted.
    assert!(corral.event_position("crashy", "started", 5).is_some());
    let t = Instant::now();
    let (code, _, _) = project.run(&["ps"]);
    assert_eq!(code, 0);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "ps took {:?}",
        t.elapsed()
    );
    let share = (cpu(corral.pid()) - start_cpu) / start.elapsed().as_secs_f64();
    eprintln!(
        "corral's CPU during the flood: {:.0}% of one core",
        share * 100.0
    );
    assert!(share < 0.5, "corral used {:.0}% of a core", share * 100.0);
    corral.stop();
}
