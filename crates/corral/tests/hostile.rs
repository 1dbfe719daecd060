//! Input that must neither take corral down, nor freeze it, nor bloat it:
//! files that are not files (FIFOs, devices), files that never end, and
//! `${...}` nested deeper than a stack holds, through `check` and through a
//! running daemon's `reload`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `corral ARGS` in the project, within `limit`: (exit code, stderr).
fn run_within(project: &Project, args: &[&str], limit: Duration) -> (i32, String) {
    let start = Instant::now();
    let (code, _, err) = project.run(args);
    assert!(
        start.elapsed() < limit,
        "{args:?} took {:?}",
        start.elapsed()
    );
    assert!(
        !err.contains("panicked") && !err.contains("overflow"),
        "{err}"
    );
    (code, err)
}

#[test]
fn a_fifo_or_a_device_is_a_config_error_not_a_wait() {
    let project = Project::new("");
    mkfifo(&project.file("pipe"));
    let cases = [
        (
            "[services.a]\ncommand = [\"true\"]\nenv-file = \"pipe\"\n",
            "it is a FIFO, not a regular file",
        ),
        (
            "include = [\"pipe\"]\n[services.a]\ncommand = [\"true\"]\n",
            "it is a FIFO, not a regular file",
        ),
        (
            "include = [\"/dev/zero\"]\n[services.a]\ncommand = [\"true\"]\n",
            "it is a device, not a regular file",
        ),
        (
            "[services.a]\ncommand = [\"true\"]\nenv-file = \"/dev/zero\"\n",
            "it is a device, not a regular file",
        ),
    ];
    for (config, expected) in cases {
        project.write("corral.toml", config);
        let (code, err) = run_within(&project, &["check"], Duration::from_secs(5));
        assert_eq!(code, 2, "{config}: {err}");
        assert!(err.contains(expected), "{config}: {err}");
    }
    for file in ["/dev/zero", "pipe"] {
        let (code, err) = run_within(&project, &["-f", file, "check"], Duration::from_secs(5));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    let (code, err) = run_within(
        &project,
        &["--env-file", "pipe", "check"],
        Duration::from_secs(5),
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_file_larger_than_16_mib_is_refused() {
    let project = Project::new("[services.a]\ncommand = [\"true\"]\nenv-file = \"big.env\"\n");
    let f = std::fs::File::create(project.file("big.env")).unwrap();
    f.set_len(17 << 20).unwrap();
    let (code, err) = run_within(&project, &["check"], Duration::from_secs(5));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("it is larger than 16 MiB"), "{err}");
}

/// The running daemon: a reload with a FIFO, a device or deep nesting
/// fails at once with the reason; every service keeps running, and the
/// daemon answers and reaps meanwhile.
#[test]
fn a_hostile_reload_is_refused_and_the_daemon_goes_on() {
    let good = "[services.steady]\ncommand = [\"sleep\", \"600\"]\n\
                [services.crashy]\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n\
                backoff = { initial = \"50ms\", max = \"50ms\" }\n";
    let project = Project::new(good);
    mkfifo(&project.file("pipe"));
    let mut corral = project.up();
    let steady = corral.started_pid("steady", SECS5);
    let nested = format!("{}x{}", "${A:-".repeat(20_000), "}".repeat(20_000));
    let hostile = [
        (
            format!("{good}[services.new]\ncommand = [\"true\"]\nenv-file = \"pipe\"\n"),
            "it is a FIFO, not a regular file",
        ),
        (
            format!("include = [\"/dev/zero\"]\n{good}"),
            "it is a device, not a regular file",
        ),
        (
            format!("{good}[services.deep]\ncommand = [\"{nested}\"]\n"),
            "nested deeper than 100 levels",
        ),
    ];
    for (config, expected) in hostile {
        project.write("corral.toml", &config);
        let (code, err) = run_within(&project, &["reload"], Duration::from_secs(10));
        assert_ne!(code, 0, "{err}");
        assert!(err.contains(expected), "{err}");
        let (code, _) = run_within(&project, &["ps"], Duration::from_secs(2));
        assert_eq!(code, 0);
    }
    let json = get_json(&project, "/v1/services/steady");
    assert_eq!(json["pid"], steady, "{json}");
    // The crash loop went on through it all: each exit reaped, restarted.
    corral.wait_for_service_event_nth("crashy", "started", 5, SECS5);
    assert_eq!(corral.stop(), 0);
}

/// A `logs -f` that cannot keep up is dropped by the daemon, and says so:
/// the reason on stderr and a non-zero exit, not the silent end that looks
/// like the daemon's.
#[test]
fn a_follower_that_falls_behind_says_why_and_exits_non_zero() {
    let project = Project::new(
        "[services.loud]\ncommand = [\"sh\", \"-c\", \"sleep 1; yes 'a line of output' | head -n 3000000; exec sleep 600\"]\n",
    );
    let mut corral = project.up();
    corral.started_pid("loud", SECS5);
    let spawn = |args: &[&str]| {
        project
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let follower = spawn(&["logs", "-f", "-n", "0", "loud"]);
    let mut retrying = spawn(&["logs", "-f", "--retry", "-n", "0", "loud"]);
    // Nobody reads their output for a while: they fall behind.
    std::thread::sleep(Duration::from_secs(4));
    // The one that may retry follows again, and says so.
    let mut retrying_out = retrying.stdout.take().unwrap();
    let drain = std::thread::spawn(move || {
        let _ = std::io::copy(&mut retrying_out, &mut std::io::sink());
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(retrying.try_wait().unwrap().is_none(), "--retry ended");
    // SAFETY: kill(2) on a child of this test.
    unsafe { libc::kill(retrying.id() as i32, libc::SIGTERM) };
    let retried = retrying.wait_with_output().unwrap();
    drain.join().unwrap();
    let retried = String::from_utf8_lossy(&retried.stderr);
    assert!(
        retried.contains("of output behind); following again"),
        "{retried}"
    );
    let out = follower.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}, stderr {err}", out.status);
    assert!(
        err.contains("the daemon dropped this stream: it did not keep up (")
            && err.contains("MiB of output behind)"),
        "{err}"
    );
    assert_eq!(corral.stop(), 0);
}

/// A burst of lifecycle events (300 services stopping at once): every one
/// reaches an `events` client (one that cannot keep up is told exactly how
/// many it missed: control/api.rs).
#[test]
fn a_burst_of_events_reaches_a_client_whole() {
    let mut config = String::from("[corral]\nparallel = true\n");
    for i in 0..300 {
        config +=
            &format!("[services.s{i}]\ncommand = [\"sleep\", \"600\"]\nstop-timeout = \"1s\"\n");
    }
    let project = Project::new(&config);
    let mut corral = project.up();
    corral.wait_for_service_event("s299", "started", SECS10);
    let events = project
        .command(&["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes: a client stalled on its own stdout is another case.
    let events = std::thread::spawn(move || events.wait_with_output());
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
    let out = events.join().unwrap().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stopped = lines
        .iter()
        .filter(|e| e["message"] == "stopped" && e["service"].is_string())
        .count();
    let missed: u64 = lines
        .iter()
        .filter(|e| e["kind"] == "lagged")
        .map(|e| e["missed"].as_u64().unwrap())
        .sum();
    // Each service said `stopping` and `stopped`: 600 in all, received or counted.
    let said = lines.iter().filter(|e| e["service"].is_string()).count() as u64;
    assert!(said + missed >= 600, "{said} received, {missed} missed");
    // A client that reads as it should misses nothing: `down` shows every stop.
    assert_eq!((stopped, missed), (300, 0));
    corral.wait_exit(SECS10);
}

/// Stalled followers of a service that writes 60 KB lines: they share the
/// lines, and together hold at most the last 8 MiB of output (each one's
/// connection ~16 KiB more), where each used to keep its own copy of 4,096
/// lines.
#[test]
fn stalled_followers_of_long_lines_hold_a_bounded_amount_of_memory() {
    const FOLLOWERS: usize = 128;
    use std::io::Write;
    let project = Project::new(
        "[services.wide]\ncommand = [\"python3\", \"-c\", \"import sys\\nline = 'x' * 60000 + '\\\\n'\\nwhile True: sys.stdout.write(line)\"]\n",
    );
    let mut corral = project.up();
    corral.started_pid("wide", SECS5);
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_of;
    let before = rss(corral.pid());
    let socket = socket_of(&project);
    let stalled: Vec<std::os::unix::net::UnixStream> = (0..FOLLOWERS)
        .map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            s.write_all(b"GET /v1/logs?follow=true&n=0 HTTP/1.1\r\nHost: corral\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut peak = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(rss(corral.pid()));
    }
    drop(stalled);
    eprintln!("RSS kB: before {before}, peak with 128 stalled followers {peak}");
    // 8 MiB of shared output, ~16 KiB per connection (hyper's buffers),
    // and room for the allocator: 14 MiB (it was 2 GB with 8 followers).
    assert!(
        peak < before + 14 * 1024,
        "before {before} kB, peak {peak} kB"
    );
    assert_eq!(corral.stop(), 0);
}

/// A reload reads the config off the loop: while a big file is parsed and
/// checked, the daemon answers and supervises as usual.
#[test]
fn the_daemon_answers_while_a_reload_reads_a_big_config() {
    let good = "[services.steady]\ncommand = [\"sleep\", \"600\"]\n";
    let project = Project::new(good);
    let mut corral = project.up();
    corral.started_pid("steady", SECS5);
    // 20,000 services of a profile not run: read and checked, none started.
    let mut big = String::from(good);
    for i in 0..20_000 {
        big += &format!(
            "[services.later{i}]\ncommand = [\"sleep\", \"${{DELAY:-600}}\"]\nenv = {{ N = \"{i}\" }}\nprofiles = [\"later\"]\n"
        );
    }
    project.write("corral.toml", &big);
    let socket = socket_of(&project);
    let reload = {
        let mut cmd = project.command(&["reload"]);
        std::thread::spawn(move || cmd.output())
    };
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut answers = 0;
    while !reload.is_finished() && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        let (status, _) = raw_http(&socket, "GET", "/v1/services", b"");
        assert_eq!(status, 200);
        worst = worst.max(t.elapsed());
        answers += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = reload.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("the reload took {took:?}; {answers} answers meanwhile, the slowest {worst:?}");
    assert!(
        worst < Duration::from_millis(500),
        "an answer took {worst:?}"
    );
    assert_eq!(corral.stop(), 0);
}

/// A chain of includes costs each file once: 4,000 files load in about
/// twice the time of 2,000 (they took 4x, and 4,000 took a GB).
#[test]
fn a_long_include_chain_loads_in_linear_time() {
    let project = Project::new("include = [\"f1.toml\"]\n[services.s0]\ncommand = [\"true\"]\n");
    let time = |n: usize| {
        for i in 1..n {
            let include = if i + 1 < n {
                format!("include = [\"f{}.toml\"]\n", i + 1)
            } else {
                String::new()
            };
            project.write(
                &format!("f{i}.toml"),
                &format!("{include}[services.s{i}]\ncommand = [\"true\"]\n"),
            );
        }
        let _ = std::fs::remove_file(project.file(&format!("f{n}.toml")));
        let t = Instant::now();
        let (code, err) = run_within(&project, &["check"], Duration::from_secs(60));
        assert_eq!(code, 0, "{err}");
        t.elapsed()
    };
    let (small, big) = (time(1000), time(4000));
    eprintln!("1,000 files: {small:?}; 4,000 files: {big:?}");
    // Linear would be 4x; the quadratic reading took 16x and more.
    assert!(
        big < small * 8,
        "1,000 files {small:?}, 4,000 files {big:?}"
    );
}

/// An events client that stops reading while thousands of changes happen
/// is told how many it missed, then its stream is cut with the reason (the
/// CLI exits 1), and the logs say so.
#[test]
fn an_events_client_that_falls_behind_is_told_and_cut() {
    use std::io::{Read, Write};
    let mut config = String::from("[corral]\nparallel = true\n");
    for i in 0..40 {
        config += &format!(
            "[services.c{i}]\ncommand = [\"true\"]\nrestart = \"always\"\nbackoff = {{ initial = \"10ms\", max = \"10ms\" }}\n"
        );
    }
    let project = Project::new(&config);
    let mut corral = project.up();
    wait_for_socket(&project);
    let mut stalled = std::os::unix::net::UnixStream::connect(socket_of(&project)).unwrap();
    stalled
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n")
        .unwrap();
    // It reads nothing while the crash loops say far more than its queue
    // (4,096) and the socket hold: counted on corral's console.
    let from = corral.lines().len();
    assert!(
        eventually(Duration::from_secs(60), || corral.lines().len()
            > from + 20_000),
        "the crash loops said too little"
    );
    // Read what came, for a bounded time: the stream must end by itself.
    stalled
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ended = false;
    while Instant::now() < deadline {
        match stalled.read(&mut buf) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let all = String::from_utf8_lossy(&all);
    assert!(ended, "the stream went on");
    assert!(all.contains("\"kind\":\"lagged\""), "no lagged marker");
    assert!(
        all.contains("the daemon dropped this stream: it did not keep up ("),
        "no reason at the end"
    );
    corral.wait_for("an events client did not keep up", SECS5);
    corral.stop();
}

/// An events client stalled on its own output while corral stops: it gets
/// every event and corral's last line, or it says its stream was cut short
/// (exit 1), never a silent end with events missing.
#[test]
fn a_client_stalled_while_corral_stops_is_not_left_with_a_silent_gap() {
    let mut config = String::from("[corral]\nparallel = true\n");
    for i in 0..1000 {
        config +=
            &format!("[services.s{i}]\ncommand = [\"sleep\", \"600\"]\nstop-timeout = \"2s\"\n");
    }
    let project = Project::new(&config);
    let mut corral = project.up();
    corral.wait_for_service_event("s999", "started", SECS10);
    // Its stdout is a pipe nobody reads until corral is gone.
    let mut events = project
        .command(&["events", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (code, _, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
    corral.wait_exit(SECS10);
    let mut stdout = events.stdout.take().unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    let out = events.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stops = text
        .lines()
        .filter(|l| l.contains("\"message\":\"stopped\""))
        .count();
    let ended = text.contains("\"kind\":\"end\"");
    if out.status.success() {
        assert!(
            ended && stops == 1000,
            "exit 0 with {stops} stops, end {ended}"
        );
    } else {
        assert!(
            err.contains("the event stream ended before corral said it was done"),
            "{err}"
        );
    }
    eprintln!(
        "{stops} stops received, end line {ended}, exit {:?}",
        out.status.code()
    );
}
