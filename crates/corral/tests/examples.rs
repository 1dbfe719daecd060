//! Every example config is valid, and the basic one really serves.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_passes_check() {
    let mut seen = 0;
    // examples/NAME/corral.toml, and examples/NAME/HOST/corral.toml for the
    // examples that stand for several hosts.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(examples_dir())
        .expect("examples dir")
        .flatten()
    {
        files.push(entry.path().join("corral.toml"));
        for sub in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(sub.path().join("corral.toml"));
        }
    }
    for file in files {
        if !file.exists() {
            continue;
        }
        seen += 1;
        let out = Command::new(BIN)
            .args(["check", "-f"])
            .arg(&file)
            .output()
            .expect("run corral check");
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(seen > 0, "no example found");
}

/// `corral up` on a copy of an example's `files` (so its generated files
/// stay out of the source tree), with WEB_PORT a free port: the copy's
/// directory, the port, the daemon.
fn start_example(name: &str, files: &[&str]) -> (tempfile::TempDir, String, Running) {
    let work = tempfile::tempdir().expect("temp dir");
    for file in files {
        std::fs::copy(examples_dir().join(name).join(file), work.path().join(file)).expect("copy");
    }
    let port = free_port().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["up"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WEB_PORT", &port);
    (work, port, Running::start(cmd))
}

#[test]
fn basic_example_serves_http_and_stops_cleanly() {
    let (_work, port, mut corral) = start_example("basic", &["corral.toml"]);
    corral.wait_for_service_event("web", "started", SECS10);
    let addr = format!("127.0.0.1:{port}");
    let mut body = String::new();
    assert!(
        eventually(SECS10, || {
            body.clear();
            TcpStream::connect(&addr)
                .and_then(|mut s| {
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                    s.read_to_string(&mut body)
                })
                .is_ok()
                && body.contains("served under corral")
        }),
        "no page from {addr}: {body:?}"
    );
    corral.wait_for("-> 200", SECS10);
    assert_eq!(corral.stop(), 0);
}

#[test]
fn two_hosts_example_connects_through_etcd() {
    let etcd = Etcd::start();
    let port = free_port().to_string();
    let copy = |host: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(
            examples_dir()
                .join("two-hosts")
                .join(host)
                .join("corral.toml"),
            dir.path().join("corral.toml"),
        )
        .expect("copy");
        dir
    };
    let (a, b) = (copy("a"), copy("b"));
    let start = |dir: &tempfile::TempDir| {
        let mut cmd = Command::new(BIN);
        cmd.args(["up"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ETCD_ADDR", &etcd.client)
            .env("WEB_PORT", &port);
        Running::start(cmd)
    };
    let client = start(&b);
    client.wait_for_service_event("client", "waiting for endpoints of web", SECS10);
    let _server = start(&a);
    client.wait_for(
        &format!("from 127.0.0.2:{port}: hello from host A"),
        Duration::from_secs(20),
    );
}

/// The pid of a direct child of `parent`, if it has one.
fn child_of(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| parent_of(pid) == Some(parent))
}

/// The commands of every process in the PID namespace of `pid`.
fn commands_in_namespace_of(pid: i32) -> Vec<String> {
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(target) = ns(pid) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| ns(p).as_ref() == Some(&target))
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn backup_example_runs_a_periodic_job_with_corral_as_pid_1_and_no_cron() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: a PID namespace (unshare --pid) needs root");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    for file in ["corral.toml", "db.py", "backup.py"] {
        std::fs::copy(
            examples_dir().join("backup").join(file),
            work.path().join(file),
        )
        .expect("copy the example");
    }
    let socket = work.path().join("corral.sock");
    let port = free_port().to_string();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", BIN, "up", "--socket"])
        .arg(&socket)
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DB_PORT", &port)
        .env("BACKUP_SCHEDULE", "*/2 * * * * *");
    let mut unshare = Running::start(cmd);
    unshare.wait_for_service_event("db", "ready", SECS10);
    // Three base backups, each a dump of the database's rows.
    let backups = work.path().join("backups");
    let count = || {
        std::fs::read_dir(&backups)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".sql"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(15), || count() >= 3),
        "three backups"
    );
    let newest = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .max()
        .unwrap();
    let dump = std::fs::read_to_string(&newest).unwrap();
    assert!(
        dump.lines().count() > 5 && dump.contains("event 1\n"),
        "{dump}"
    );
    unshare.wait_for_output("base-backup", "rows,", SECS5);

    // corral is PID 1 of the namespace; nothing else runs there but the
    // database (and a backup run): no cron, syslog or mail daemon.
    let init = child_of(unshare.pid()).expect("unshare's child");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    let commands = commands_in_namespace_of(init);
    assert!(commands.contains(&"corrald".to_string()), "{commands:?}");
    for c in &commands {
        assert!(
            ["corrald", "python3"].contains(&c.as_str()),
            "unexpected process {c:?} in the container: {commands:?}"
        );
    }

    // ps shows the job's last and next run; its output is bounded: the ring
    // keeps at most ring-lines, the file stays under max-size.
    let sock = socket.to_str().unwrap();
    let ps = Command::new(BIN)
        .args(["ps", "--socket", sock])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(has_row(&ps, "base-backup", "*/2 * * * * *"), "{ps}");
    assert!(has_row(&ps, "base-backup", "exit code 0"), "{ps}");
    let logs = Command::new(BIN)
        .args(["logs", "--socket", sock, "-n", "100000", "base-backup"])
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&logs.stdout).lines().count();
    assert!((4..=200).contains(&lines), "{lines} lines in the ring");
    let file = work.path().join("logs/base-backup.log");
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0 && size <= 64 * 1024, "log file of {size} bytes");

    // SIGTERM to PID 1: an orderly shutdown, exit 0, nothing left.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(unshare.wait_exit(Duration::from_secs(40)), 0);
    assert!(commands_in_namespace_of(init).is_empty());
}

#[test]
fn socket_activation_example_restarts_without_refusing_a_connection() {
    let (work, port, mut corral) =
        start_example("socket-activation", &["corral.toml", "server.py"]);
    corral.wait_for_service_event("web", "ready after", SECS10);
    let addr = format!("127.0.0.1:{port}");
    let get = |addr: &str| -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    assert!(get(&addr)
        .unwrap()
        .contains("hello from a socket corral holds"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match get(&addr) {
                    Ok(body) if body.starts_with("HTTP/1.0 200") => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    for _ in 0..3 {
        let status = Command::new(BIN)
            .args(["restart", "web"])
            .current_dir(work.path())
            .status()
            .expect("corral restart");
        assert!(status.success());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().expect("client");
    assert!(
        ok > 0 && failed.is_empty(),
        "{ok} answered, failed: {failed:?}"
    );
    assert_eq!(corral.stop(), 0);
}
