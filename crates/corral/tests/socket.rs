//! Which daemon a command reaches: its own project's, and the PID-1 daemon's
//! /run/corral.sock only where no config file is found (`docker exec
//! CONTAINER corral ps`). Runs in a private mount namespace with a tmpfs on
//! /run, so the machine's /run/corral.sock is never touched.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Runs `script` under `sh` in a new mount namespace whose /run is a fresh tmpfs.
/// None when this machine does not allow it (not root).
fn in_private_run(script: &str) -> Option<(i32, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a private mount namespace (unshare --mount) needs root");
        return None;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs tmpfs /run && {script}"))
        .env("CORRAL", BIN)
        .env("NO_COLOR", "1")
        .output()
        .expect("run unshare");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), text))
}

#[test]
fn another_projects_command_never_reaches_the_pid1_socket() {
    let running = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let other = Project::new("[services.b]\ncommand = [\"sleep\", \"60\"]\n");
    let empty = tempfile::tempdir().expect("temp dir");
    let script = format!(
        r#"
cd '{running}' && "$CORRAL" up -d --socket /run/corral.sock >/dev/null || exit 10
cd '{other}'
"$CORRAL" down; echo "down: $?"
"$CORRAL" ps; echo "ps: $?"
"$CORRAL" up -d >/dev/null; echo "up other: $?"
"$CORRAL" down >/dev/null; echo "down other: $?"
cd '{running}' && "$CORRAL" ps --socket /run/corral.sock; echo "still: $?"
cd '{empty}' && "$CORRAL" ps; echo "no config: $?"
"$CORRAL" down --socket /run/corral.sock >/dev/null; echo "cleanup: $?"
"#,
        running = running.path().display(),
        other = other.path().display(),
        empty = empty.path().display(),
    );
    let Some((code, out)) = in_private_run(&script) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    // In the other project, nothing runs: it says so and stops nothing.
    assert!(out.contains("down: 0"), "{out}");
    assert!(out.contains("nothing to stop"), "{out}");
    assert!(out.contains("ps: 1"), "{out}");
    assert!(out.contains("no corral running for"), "{out}");
    // It can run a daemon of its own beside the PID-1 one.
    assert!(out.contains("up other: 0"), "{out}");
    assert!(out.contains("down other: 0"), "{out}");
    assert!(
        out.contains("still: 0"),
        "the PID-1 daemon is untouched:\n{out}"
    );
    assert!(has_row(&out, "a", "running"), "{out}");
    // Where no config file is found, the PID-1 daemon is the one meant.
    assert!(out.contains("no config: 0"), "{out}");
    assert!(
        out.contains("no corral.toml here; using the daemon at /run/corral.sock"),
        "{out}"
    );
    assert!(out.contains("cleanup: 0"), "{out}");
}

/// Four `corral up` for one config at once, over a stale socket left by a
/// SIGKILLed daemon: exactly one runs; the others say so and exit.
#[test]
fn ups_at_once_start_one_daemon() {
    let project = Project::new("[services.a]\ncommand = [\"tail\", \"-f\", \"/dev/null\"]\n");
    let socket = socket_of(&project);
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("runtime dir");
    for round in 0..200 {
        // What a SIGKILLed daemon leaves: a socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
        let up = || Running::start_with_stderr(project.command(&["up"]), Stdio::null());
        let mut both = [up(), up(), up(), up()];
        let settled = eventually(SECS10, || {
            both.iter_mut().all(|d| {
                matches!(d.child.try_wait(), Ok(Some(_))) || d.position("started (pid").is_some()
            })
        });
        assert!(settled, "round {round}: neither ran nor gave up");
        let mut alive = 0;
        for d in &mut both {
            if matches!(d.child.try_wait(), Ok(None)) {
                alive += 1;
            }
        }
        assert_eq!(alive, 1, "round {round}: {alive} daemons for one config");
        for d in &mut both {
            if matches!(d.child.try_wait(), Ok(None)) {
                assert_eq!(d.stop(), 0);
            }
        }
    }
}

/// CPU time (user + system, in clock ticks) a process has used so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    field(11) + field(12)
}

/// Out of file descriptors (nofile = 64, 100 idle clients), corral does not
/// spin on accept, and it answers again once the clients are gone.
#[test]
fn running_out_of_descriptors_does_not_spin() {
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", BIN, "up"])
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    let mut daemon = Running::start(cmd);
    daemon.wait_for_service_event("a", "started", SECS10);
    let socket = socket_of(&project);
    let idle: Vec<std::os::unix::net::UnixStream> = (0..100)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
        .collect();
    assert!(idle.len() >= 60, "only {} connections", idle.len());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = cpu_ticks(daemon.pid());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used = cpu_ticks(daemon.pid()) - before;
    // A spinning accept loop burns the whole second (about 100 ticks).
    assert!(
        used < 30,
        "corral used {used} ticks in 1 s with no descriptors left"
    );
    drop(idle);
    assert!(
        eventually(SECS10, || project.run(&["ps"]).0 == 0),
        "corral does not answer after the clients left"
    );
    assert_eq!(daemon.stop(), 0);
}

/// 200 idle clients against nofile = 128: a crash-looping service keeps its
/// restart schedule (its spawns never run out of descriptors), and `corral
/// ps` is answered at once (the oldest idle client is shed for it), not after
/// the idle clients' header timeout.
#[test]
fn idle_clients_cannot_starve_supervision_or_the_cli() {
    let project = Project::new(
        r#"
[services.crasher]
command = ["sh", "-c", "echo tick; exit 1"]
backoff = { initial = "100ms", max = "100ms" }
"#,
    );
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=128:128", BIN, "up"])
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    let mut daemon = Running::start(cmd);
    daemon.wait_for_output("crasher", "tick", SECS10);
    let socket = socket_of(&project);
    let idle: Vec<std::os::unix::net::UnixStream> = (0..200)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connections", idle.len());
    let ticks = |d: &Running| {
        d.lines()
            .iter()
            .filter(|l| is_line_of(l, "crasher", '|', "tick"))
            .count()
    };
    let before = ticks(&daemon);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let during = ticks(&daemon) - before;
    // One run per ~100 ms of backoff (plus the run itself): 2 s gives ~15.
    assert!(
        during >= 8,
        "only {during} restarts in 2 s with idle clients"
    );
    let failed: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| l.contains("Too many open files"))
        .collect();
    assert!(
        failed.is_empty(),
        "spawns ran out of descriptors: {failed:?}"
    );
    let asked = std::time::Instant::now();
    let (code, out, err) = project.run(&["ps"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "ps took {:?} with idle clients holding the descriptors",
        asked.elapsed()
    );
    drop(idle);
    assert_eq!(daemon.stop(), 0);
}

/// A client that connects and sends nothing (or trickles a request) is
/// closed after the header timeout (5 s), freeing its descriptor.
#[test]
fn idle_clients_are_closed() {
    use std::io::{Read, Write};
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let _daemon = project.up();
    wait_for_socket(&project);
    let socket = socket_of(&project);
    let mut idle = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let mut trickle = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    let _ = trickle.write_all(b"GET /v1/services HTTP/1.1\r\n");
    for stream in [&mut idle, &mut trickle] {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .expect("timeout");
    }
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    for stream in [&mut idle, &mut trickle] {
        // EOF (or an error answer, then EOF) well before our own 15 s timeout.
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("not closed by corral: {e}"),
            }
        }
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A command reaching a daemon through a socket that serves another config
/// refuses, naming both; `GET /v1/version` says which config, pid and since when.
#[test]
fn a_daemon_of_another_config_is_refused() {
    let a = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let b = Project::new("[services.b]\ncommand = [\"sleep\", \"60\"]\n");
    let daemon = a.up();
    wait_for_socket(&a);
    let socket = socket_of(&a);
    let version = get_json(&a, "/v1/version");
    let config = std::fs::canonicalize(a.file("corral.toml")).expect("config path");
    assert_eq!(version["config"].as_str(), config.to_str(), "{version}");
    assert_eq!(
        version["pid"].as_i64(),
        Some(i64::from(daemon.pid())),
        "{version}"
    );
    assert!(
        version["started"].as_f64().is_some_and(|t| t > 1.0e9),
        "{version}"
    );
    let socket_arg = socket.display().to_string();
    let (code, out, err) = b.run(&["ps", "--socket", &socket_arg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("serves") && err.contains(&config.display().to_string()),
        "{err}"
    );
    let (code, _, err) = b.run(&["down", "--socket", &socket_arg]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(a.run(&["ps"]).0, 0, "the other daemon is untouched");
}

/// The daemon's heap, resident (kB): what its allocations hold.
fn heap_kb(pid: i32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut in_heap = false;
    let mut kb = 0;
    for line in smaps.lines() {
        // A mapping's line starts with its address range; its fields follow.
        if line
            .split_whitespace()
            .next()
            .is_some_and(|t| t.contains('-'))
        {
            in_heap = line.ends_with("[heap]");
        } else if in_heap && line.starts_with("Rss:") {
            kb += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    kb
}

/// A connection that ended leaves nothing behind: a daemon that has answered
/// many clients (every `corral` command is one) holds no more memory than
/// after a few. (Each ended connection's task, ~2 kB, was kept until 1,024
/// of them had piled up.)
#[test]
fn ended_connections_are_not_kept() {
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let daemon = project.up();
    wait_for_socket(&project);
    let socket = socket_of(&project);
    for _ in 0..50 {
        raw_http(&socket, "GET", "/v1/version", b"");
    }
    let before = heap_kb(daemon.pid());
    for _ in 0..500 {
        raw_http(&socket, "GET", "/v1/version", b"");
    }
    let after = heap_kb(daemon.pid());
    assert!(
        after < before + 256,
        "the heap grew from {before} to {after} kB over 500 connections"
    );
}
