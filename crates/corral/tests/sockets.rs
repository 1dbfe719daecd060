//! Sockets held by corral: bound before the first start, passed as fds 3..
//! with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, kept open across restarts;
//! with `update = "start-first"`, restarts and reloads of a real server
//! (gunicorn) under load drop no request.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Serves fd 3 (TCP) and fd 4 (a unix socket) one connection at a time,
/// answering with its pid; says what systemd's variables held.
const SERVER: &str = r#"
import os, selectors, socket
print("LISTEN_PID", os.environ.get("LISTEN_PID"), "pid", os.getpid(),
      "LISTEN_FDS", os.environ.get("LISTEN_FDS"),
      "LISTEN_FDNAMES", os.environ.get("LISTEN_FDNAMES"), flush=True)
sel = selectors.DefaultSelector()
for fd in range(3, 3 + int(os.environ["LISTEN_FDS"])):
    sel.register(socket.socket(fileno=fd), selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + str(os.getpid()).encode())
        conn.close()
"#;

/// A WSGI app: its process and the VERSION it was started with.
const APP: &str = r#"
import os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("ok %s %s\n" % (os.getpid(), os.environ.get("VERSION", ""))).encode()]
"#;

fn get(stream: &mut impl ReadWrite) -> std::io::Result<String> {
    stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn get_tcp(port: u16) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    get(&mut s)
}

#[test]
fn sockets_are_passed_with_listen_fds_and_held_while_the_service_is_down() {
    let port = free_port();
    let project = Project::new(&format!(
        r#"
[services.web]
command = ["python3", "server.py"]
sockets = ["tcp://127.0.0.1:{port}", {{ listen = "unix://web.sock", name = "local", mode = "0600", owner = "nobody" }}]
"#
    ));
    project.write("server.py", SERVER);
    let (code, plan, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.contains(&format!(
            "socket: fd 3 tcp://127.0.0.1:{port} (name web, backlog 1024)"
        )),
        "{plan}"
    );
    assert!(plan.contains("socket: fd 4 unix://"), "{plan}");
    let mut corral = project.up();
    let pid = corral.started_pid("web", SECS5);
    corral.wait_for_output(
        "web",
        &format!("LISTEN_PID {pid} pid {pid} LISTEN_FDS 2 LISTEN_FDNAMES web:local"),
        SECS5,
    );
    assert!(get_tcp(port).unwrap().ends_with(&pid.to_string()));
    let mut unix = std::os::unix::net::UnixStream::connect(project.file("web.sock")).unwrap();
    assert!(get(&mut unix).unwrap().ends_with(&pid.to_string()));
    let meta = std::fs::metadata(project.file("web.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let nobody = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), nobody);
    let json = get_json(&project, "/v1/services/web");
    let sockets: Vec<&str> = json["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        sockets,
        [
            format!("tcp://127.0.0.1:{port}"),
            format!("unix://{}", project.file("web.sock").display())
        ]
    );
    let (code, ps, _) = project.run(&["ps"]);
    assert_eq!(code, 0);
    assert!(
        has_row(&ps, "web", &format!("tcp://127.0.0.1:{port},unix://")),
        "{ps}"
    );
    // Stopped, the service's port still takes connections: they wait in
    // the kernel's queue for the next process.
    let (code, _, err) = project.run(&["stop", "web"]);
    assert_eq!(code, 0, "{err}");
    let waiting = std::thread::spawn(move || get_tcp(port));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiting.is_finished(), "answered while nothing runs");
    let (code, _, err) = project.run(&["start", "web"]);
    assert_eq!(code, 0, "{err}");
    let second = corral.started_pid_nth("web", 2);
    let answer = waiting
        .join()
        .unwrap()
        .expect("the waiting request is answered");
    assert!(answer.ends_with(&second.to_string()), "{answer}");
    assert_eq!(corral.stop(), 0);
    // The socket file goes with corral.
    assert!(!project.file("web.sock").exists());
}

#[test]
fn a_port_in_use_is_one_clear_line_and_a_retry() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let project = Project::new(&format!(
        r#"
[services.web]
command = ["sleep", "60"]
sockets = ["tcp://127.0.0.1:{port}"]
backoff = {{ initial = "100ms", max = "100ms" }}
"#
    ));
    let mut corral = project.up();
    corral.wait_for_service_event(
        "web",
        &format!("cannot listen on tcp://127.0.0.1:{port}: the address is in use"),
        SECS5,
    );
    // Once the port is free, the next try gets it.
    drop(taken);
    corral.started_pid("web", SECS5);
    assert_eq!(corral.stop(), 0);
}

#[test]
fn bad_sockets_are_config_errors_with_their_place() {
    let project = Project::new(
        r#"
[services.web]
command = ["sleep", "60"]
sockets = ["udp://0.0.0.0:53", "tcp://localhost:80", { listen = "tcp://127.0.0.1:8080", backlog = 0 }, { name = "x" }]
"#,
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "corral.toml:4:12: error: unknown socket scheme \"udp\"",
        "corral.toml:4:32: error: \"tcp://localhost:80\" is not tcp://IP:PORT",
        "backlog must be at least 1",
        "a socket needs `listen`",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
}

/// Requests on new connections from two threads until stopped: (answered
/// well, failed, what failed first).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Option<String>>>,
    started: Instant,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut first = None;
                    while !stop.load(Ordering::Relaxed) {
                        match get_tcp(port) {
                            Ok(a)
                                if a.starts_with("HTTP/1.")
                                    && a.contains(" 200 ")
                                    && a.contains("\r\n\r\nok ") =>
                            {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                first.get_or_insert_with(|| format!("{other:?}"));
                            }
                        }
                    }
                    first
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
            started: Instant::now(),
        }
    }

    fn finish(self) -> (u64, u64, f64, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = None;
        for t in self.threads {
            if let Some(f) = t.join().unwrap() {
                first.get_or_insert(f);
            }
        }
        let ok = self.ok.load(Ordering::Relaxed);
        let rate = ok as f64 / self.started.elapsed().as_secs_f64();
        (ok, self.failed.load(Ordering::Relaxed), rate, first)
    }
}

fn gunicorn_project(port: u16, replicas: u32, version: &str) -> (Project, String) {
    let replicas = if replicas > 1 {
        format!("replicas = {replicas}")
    } else {
        String::new()
    };
    let config = |version: &str| {
        format!(
            r#"
[services.web]
command = ["/usr/bin/python3", "-m", "gunicorn", "--workers", "2", "--graceful-timeout", "5", "app:app"]
{replicas}
sockets = ["tcp://127.0.0.1:{port}"]
notify = true
update = "start-first"
stop-timeout = "6s"
env = {{ VERSION = "{version}" }}
"#
        )
    };
    let project = Project::new(&config(version));
    project.write("app.py", APP);
    (project, config("{VERSION}"))
}

fn assert_gunicorn() {
    assert!(
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import gunicorn"])
            .status()
            .is_ok_and(|s| s.success()),
        "gunicorn is needed for this test (scripts/test installs python3-gunicorn)"
    );
}

#[test]
fn gunicorn_restarts_and_reloads_under_load_drop_no_request() {
    assert_gunicorn();
    let port = free_port();
    let (project, template) = gunicorn_project(port, 1, "v0");
    let mut corral = project.up();
    corral.wait_for_service_event("web", "ready after", SECS10);
    assert!(get_tcp(port).unwrap().contains("ok "));
    let load = Load::start(port);
    for i in 1..=20 {
        let (code, _, err) = project.run(&["restart", "web"]);
        assert_eq!(code, 0, "restart {i}: {err}");
    }
    for v in 1..=5 {
        project.write(
            "corral.toml",
            &template.replace("{VERSION}", &format!("v{v}")),
        );
        let (code, _, err) = project.run(&["reload"]);
        assert_eq!(code, 0, "reload {v}: {err}");
        assert!(
            eventually(SECS10, || get_tcp(port)
                .is_ok_and(|a| a.contains(&format!(" v{v}\n")))),
            "v{v} never answered"
        );
    }
    let (ok, failed, rate, first) = load.finish();
    eprintln!(
        "{ok} requests answered ({rate:.0}/s), {failed} failed over 20 restarts and 5 reloads"
    );
    assert_eq!(failed, 0, "first failure: {first:?}");
    assert!(
        rate > 200.0,
        "the load was {rate:.0} requests/s, not a steady load"
    );
    corral.wait_for_service_event_nth("web", "update: the new process is ready", 25, SECS10);
    assert_eq!(corral.stop(), 0);
}

#[test]
fn three_gunicorns_on_one_socket_roll_one_at_a_time() {
    assert_gunicorn();
    let port = free_port();
    let (project, _) = gunicorn_project(port, 3, "v0");
    let mut corral = project.up();
    for i in 0..3 {
        corral.wait_for_service_event(&format!("web.{i}"), "ready after", SECS10);
    }
    let load = Load::start(port);
    let (code, _, err) = project.run(&["restart", "web"]);
    assert_eq!(code, 0, "{err}");
    let (ok, failed, _, first) = load.finish();
    assert_eq!(failed, 0, "first failure: {first:?}");
    assert!(ok > 0);
    // One at a time: each new instance is ready before the next one starts.
    let lines = corral.lines();
    let at = |svc: String, what: &str| {
        lines
            .iter()
            .position(|l| is_line_of(l, &svc, '*', what))
            .unwrap_or_else(|| panic!("no {svc} {what}"))
    };
    for i in 0..2 {
        assert!(
            at(format!("web.{i}"), "update: the new process is ready")
                < at(format!("web.{}", i + 1), "update: starting the new process"),
            "{lines:#?}"
        );
    }
    assert_eq!(corral.stop(), 0);
}

#[test]
fn a_reload_closes_the_sockets_of_a_removed_service_and_of_a_changed_address() {
    let (a, b) = (free_port(), free_port());
    let config = |web_port: u16, with_web: bool| {
        let mut text = String::from("[services.other]\ncommand = [\"sleep\", \"60\"]\n");
        if with_web {
            text += &format!(
                "[services.web]\ncommand = [\"python3\", \"server.py\"]\nsockets = [\"tcp://127.0.0.1:{web_port}\"]\n"
            );
        }
        text
    };
    let project = Project::new(&config(a, true));
    project.write("server.py", SERVER);
    let mut corral = project.up();
    corral.started_pid("web", SECS5);
    assert!(get_tcp(a).is_ok());
    // A changed address: the old one is closed, the new one served.
    project.write("corral.toml", &config(b, true));
    let (code, _, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{err}");
    corral.started_pid_nth("web", 2);
    assert!(eventually(SECS5, || get_tcp(b).is_ok()));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", a)).is_err(),
        "port {a} still open"
    );
    // Removed: its socket is closed.
    project.write("corral.toml", &config(b, false));
    let (code, _, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{err}");
    corral.wait_for_service_event("web", "stopped", SECS5);
    assert!(
        eventually(SECS5, || std::net::TcpStream::connect(("127.0.0.1", b))
            .is_err()),
        "port {b} still open"
    );
    assert_eq!(corral.stop(), 0);
}

/// A new process that fails during a start-first update leaves the old one
/// serving: no request is lost, and the event says why.
#[test]
fn a_failed_start_first_update_keeps_the_old_process_serving() {
    let port = free_port();
    let config = |command: &str| {
        format!(
            r#"
[services.web]
command = {command}
sockets = ["tcp://127.0.0.1:{port}"]
update = "start-first"
ready = {{ notify = true, start-timeout = "2s" }}
"#
        )
    };
    let project = Project::new(&config(r#"["python3", "server.py"]"#));
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/socket-activation/server.py"),
        project.file("server.py"),
    )
    .unwrap();
    let mut corral = project.up();
    let old = corral.started_pid("web", SECS5);
    corral.wait_for_service_event("web", "ready after", SECS10);
    // The new definition crashes; then one that never says READY=1.
    for (n, broken) in [r#"["sh", "-c", "exit 3"]"#, r#"["sleep", "60"]"#]
        .iter()
        .enumerate()
    {
        project.write("corral.toml", &config(broken));
        let (code, _, err) = project.run(&["reload"]);
        assert_eq!(code, 0, "{err}");
        corral.wait_for_service_event_nth("web", "update failed", n + 1, SECS10);
        let json = get_json(&project, "/v1/services/web");
        assert_eq!(json["pid"], old, "{json}");
        assert_eq!(json["state"], "running", "{json}");
        assert!(get_tcp(port).unwrap().contains(&format!("pid {old}")));
    }
    assert!(corral
        .wait_for_service_event(
            "web",
            "update failed: the new process ended with exit code 3",
            SECS5
        )
        .contains(&format!("pid {old} goes on serving")));
    assert_eq!(corral.stop(), 0);
}
