//! Logs: lossless, bounded, rotated, and never in the way of supervision.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Every line of `name`'s rotated files, oldest file first.
fn file_lines(project: &Project, name: &str) -> Vec<String> {
    let dir = project.path().join("logs");
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .expect("log dir")
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let rest = file.strip_prefix(&format!("{name}.log"))?;
            let n = if rest.is_empty() {
                0
            } else {
                rest.strip_prefix('.')?.parse().ok()?
            };
            Some((n, e.path()))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files
        .iter()
        .flat_map(|(_, p)| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_million_lines_from_four_services_arrive_exactly_once_in_order() {
    let services: String = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            format!(
                "[services.{n}]\ncommand = [\"seq\", \"-f\", \"{n}-%.0f\", \"1\", \"250000\"]\noneshot = true\n\n"
            )
        })
        .collect();
    let project = Project::new(&format!(
        "[corral]\nparallel = true\nlog-dir = \"logs\"\n\n{services}\
         [services.a.log]\nmax-size = \"512KB\"\nkeep = 100\n\
         [services.b.log]\nmax-size = \"512KB\"\nkeep = 100\n\
         [services.c.log]\nmax-size = \"512KB\"\nkeep = 100\n\
         [services.d.log]\nmax-size = \"512KB\"\nkeep = 100\n"
    ));
    let status = project
        .command(&["up"])
        .stdout(Stdio::null())
        .status()
        .expect("run corral");
    assert_eq!(status.code(), Some(0));
    for name in ["a", "b", "c", "d"] {
        let lines = file_lines(&project, name);
        assert_eq!(lines.len(), 250_000, "{name}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line, &format!("{name}-{}", i + 1), "{name} line {i}");
        }
        assert!(
            project.path().join(format!("logs/{name}.log.3")).exists(),
            "{name} rotated"
        );
        for entry in std::fs::read_dir(project.path().join("logs"))
            .expect("dir")
            .flatten()
        {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            assert!(size <= 512_000, "{:?} is {size} bytes", entry.file_name());
        }
    }
}

#[test]
fn long_lines_binary_data_and_a_partial_last_line() {
    let project = Project::new(
        r#"
[services.long]
command = ["python3", "-c", "import sys; sys.stdout.buffer.write(b'x' * 1000000)"]
oneshot = true
log = { file = "logs/long.log" }

[services.binary]
command = ["python3", "-c", "import sys; sys.stdout.buffer.write(b'first\\n\\xff\\xfe bin \\x00 ary\\nno newline at the end')"]
oneshot = true
log = { file = "logs/binary.log" }
"#,
    );
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS10), 0);
    let long = std::fs::read(project.file("logs/long.log")).expect("long.log");
    let pieces: Vec<&[u8]> = long
        .strip_suffix(b"\n")
        .unwrap_or(&long)
        .split(|&b| b == b'\n')
        .collect();
    assert_eq!(pieces.len(), 16, "1,000,000 bytes in 64 KiB pieces");
    assert!(pieces[..15].iter().all(|p| p.len() == 65536));
    assert_eq!(pieces[15].len(), 1_000_000 - 15 * 65536);
    let binary = std::fs::read(project.file("logs/binary.log")).expect("binary.log");
    assert_eq!(
        binary,
        b"first\n\xff\xfe bin \x00 ary\nno newline at the end\n"
    );
    // The console shows the bytes safely.
    corral.wait_for_output("binary", "\u{fffd}\u{fffd} bin \0 ary", SECS5);
    corral.wait_for_output("binary", "no newline at the end", SECS5);
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_blocked_stdout_blocks_the_chatty_service_not_the_supervisor() {
    let project = Project::new(
        r#"
[corral]
parallel = true

[services.chatty]
command = ["yes", "a line that nobody reads, over and over again"]

[services.crasher]
command = ["sh", "-c", "sleep 0.2; exit 1"]
backoff = { initial = "50ms", max = "50ms" }
"#,
    );
    // corral's stdout is a pipe that is never read.
    let mut child = project
        .command(&["up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run corral");
    let pid = child.id() as i32;
    wait_for_socket(&project);
    std::thread::sleep(Duration::from_secs(3));
    let rss = rss_kb(pid);
    assert!(rss < 40 * 1024, "corral RSS {rss} kB with a blocked stdout");
    // The supervisor still works: the crasher is restarted, ps answers.
    let restarts = |project: &Project| -> u64 {
        let (code, json, err) = project.run(&["ps", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("ps json");
        v["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "crasher"))
            .and_then(|s| s["restarts"].as_u64())
            .unwrap_or(0)
    };
    let first = restarts(&project);
    assert!(
        eventually(SECS5, || restarts(&project) >= first + 3),
        "no restarts while stdout is blocked"
    );
    assert!(rss_kb(pid) < 40 * 1024);
    let (code, _, _) = project.run(&["down"]);
    assert_eq!(code, 0);
    // Even with stdout still blocked, corral ends (its log hub gets a bounded wait).
    assert!(
        eventually(Duration::from_secs(15), || matches!(
            child.try_wait(),
            Ok(Some(_))
        )),
        "corral hangs at exit on a blocked stdout"
    );
    drop(child.stdout.take());
}

#[test]
fn the_ring_keeps_the_newest_lines_within_its_bounds() {
    let project = Project::new(
        r#"
[services.counter]
command = ["sh", "-c", "seq 1 3000; exec sleep 60"]
log = { ring-lines = 500 }

[services.wide]
command = ["sh", "-c", "for i in $(seq 1 200); do printf '%099d\n' $i; done; exec sleep 60"]
log = { ring-bytes = "10KB" }
"#,
    );
    let corral = project.up();
    wait_for_socket(&project);
    corral.wait_for_output("counter", "3000", SECS10);
    corral.wait_for_output("wide", &format!("{:0>99}", 200), SECS10);
    let (code, out, _) = project.run(&["logs", "-n", "1000", "counter"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 500);
    assert_eq!(lines[0], "counter | 2501");
    assert_eq!(lines[499], "counter | 3000");
    let (_, out, _) = project.run(&["logs", "-n", "3", "counter"]);
    assert_eq!(out, "counter | 2998\ncounter | 2999\ncounter | 3000\n");
    // 10 KB of 100-byte lines: the newest 100.
    let (_, out, _) = project.run(&["logs", "-n", "1000", "wide"]);
    assert_eq!(out.lines().count(), 100, "{out}");
    assert!(out.ends_with(&format!("{:0>99}\n", 200)));
}

#[test]
fn json_console_format() {
    let project = Project::new(
        r#"
[corral]
log-format = "json"

[services.app]
command = ["sh", "-c", "echo 'say \"hi\"'"]
oneshot = true
"#,
    );
    let mut corral = project.up();
    assert_eq!(corral.wait_exit(SECS5), 0);
    let line = corral.wait_for("say", SECS5);
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["service"], "app");
    assert_eq!(v["stream"], "stdout");
    assert_eq!(v["line"], "say \"hi\"");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let event = corral.wait_for("completed", SECS5);
    let v: serde_json::Value = serde_json::from_str(&event).expect("a JSON event line");
    assert_eq!(v["stream"], "event");
}

/// What corral writes is for its user only: the runtime dir is 0700, log
/// files (a service's, and the detached daemon's console log) are 0600.
#[test]
fn the_runtime_dir_and_log_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let project = Project::new(
        "[services.a]\ncommand = [\"sh\", \"-c\", \"echo hi; exec sleep 60\"]\nlog = { file = \"logs/a.log\" }\n",
    );
    let (code, out, err) = project.run(&["up", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(eventually(SECS5, || project
        .read("logs/a.log")
        .contains("hi")));
    let mode = |name: &str| {
        std::fs::metadata(project.file(name))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode(".corral"), 0o700);
    assert_eq!(mode(".corral/corral.log"), 0o600);
    assert_eq!(mode("logs/a.log"), 0o600);
    assert_eq!(project.run(&["down"]).0, 0);
    // Rotated files keep the mode of the file they were.
    assert_eq!(mode("logs/a.log"), 0o600);
}

/// The detached daemon's console log (`.corral/corral.log`) rotates like a
/// service's log: bounded by `[corral] log = { max-size, keep }`.
#[test]
fn the_detached_console_log_rotates() {
    let project = Project::new(
        r#"
[corral]
log = { max-size = "20KB", keep = 2 }

[services.chatty]
command = ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line $i of a chatty service; i=$((i+1)); done; echo done; exec sleep 60"]
"#,
    );
    let (code, out, err) = project.run(&["up", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let size = |name: &str| {
        std::fs::metadata(project.file(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // ~100 KB went through the console: only the newest 3 x 20 KB are kept.
    assert!(
        eventually(SECS10, || project
            .read(".corral/corral.log")
            .contains("done")),
        "the last line reached the current file"
    );
    assert!(
        size(".corral/corral.log") <= 20_000,
        "{}",
        size(".corral/corral.log")
    );
    assert!(size(".corral/corral.log.1") > 0);
    assert!(size(".corral/corral.log.2") > 0);
    assert!(!project.file(".corral/corral.log.3").exists());
    assert_eq!(project.run(&["down"]).0, 0);
}

/// 200 followers that never read, beside a chatty service: corral drops
/// them once they stop taking data, and its memory comes back down.
#[test]
fn followers_that_never_read_are_dropped_and_memory_returns() {
    use std::io::{Read, Write};
    let project = Project::new(
        "[services.chatty]\ncommand = [\"sh\", \"-c\", \"i=0; while :; do echo a line of output number $i; i=$((i+1)); done\"]\n",
    );
    /// The daemon, stopped (by pid) however the test ends.
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the corral this test started.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let mut cmd = project.command(&["up"]);
    cmd.stdout(std::process::Stdio::null());
    let daemon = Daemon(cmd.spawn().expect("corral up"));
    wait_for_socket(&project);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = daemon.0.id() as i32;
    let before = rss_of(pid);
    let socket = socket_of(&project);
    let mut stuck: Vec<std::os::unix::net::UnixStream> = (0..200)
        .filter_map(|_| {
            let mut s = std::os::unix::net::UnixStream::connect(&socket).ok()?;
            s.write_all(b"GET /v1/logs?follow=true&n=0 HTTP/1.1\r\nHost: corral\r\n\r\n")
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(stuck.len(), 200);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let during = rss_of(pid);
    // Past the stall limit (10 s), every stuck follower has been closed: what
    // it had buffered can still be read, then the end.
    std::thread::sleep(std::time::Duration::from_secs(12));
    let mut closed = 0;
    let mut buf = vec![0u8; 1 << 16];
    for s in &mut stuck {
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(100)));
        // A follower still served would stream for ever: a bounded look.
        let look = std::time::Instant::now();
        while look.elapsed() < std::time::Duration::from_millis(300) {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
    drop(stuck);
    assert_eq!(closed, 200, "followers left open");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let after = rss_of(pid);
    eprintln!("RSS kB: before {before}, with 200 stuck followers {during}, after {after}");
    assert!(
        after < before + 30 * 1024,
        "memory did not come back: before {before} kB, during {during} kB, after {after} kB"
    );
    drop(daemon);
}

/// `merge-stderr`: the service's stderr is its stdout pipe, so lines keep
/// the order they were written in across the two (two pipes read in
/// batches interleave them by chunk) and corral holds one descriptor.
#[test]
fn merge_stderr_keeps_the_order_of_both_streams_in_one_pipe() {
    let project = Project::new(
        r#"
[corral]
log-format = "json"

[services.app]
command = ["sh", "-c", "i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; exec sleep 60"]
log = { merge-stderr = true }

[services.apart]
command = ["sleep", "60"]
"#,
    );
    let mut corral = project.up();
    corral.wait_for("err299", SECS5);
    let events: Vec<serde_json::Value> = corral
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let lines: Vec<&serde_json::Value> = events
        .iter()
        .filter(|v| v["service"] == "app" && v["stream"] != "event")
        .collect();
    let expected: Vec<String> = (0..300)
        .flat_map(|i| [format!("out{i}"), format!("err{i}")])
        .collect();
    let got: Vec<&str> = lines.iter().filter_map(|v| v["line"].as_str()).collect();
    assert_eq!(got, expected);
    assert!(lines.iter().all(|v| v["stream"] == "stdout"));
    // One pipe for both in the service; two apart for a service without it.
    let target = |pid: i32, fd: i32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    // From the API: the console may leave lifecycle lines out when its
    // reader is slow (600 lines arrive at once here), never output.
    let started = |service: &str| -> i32 {
        let path = format!("/v1/services/{service}");
        assert!(eventually(SECS5, || get_json(&project, &path)["pid"]
            .as_i64()
            .is_some()));
        get_json(&project, &path)["pid"].as_i64().expect("a pid") as i32
    };
    wait_for_socket(&project);
    let app = started("app");
    assert!(target(app, 1).is_some_and(|t| t.to_string_lossy().starts_with("pipe:")));
    assert_eq!(target(app, 1), target(app, 2));
    let apart = started("apart");
    assert!(target(apart, 1).is_some());
    assert_ne!(target(apart, 1), target(apart, 2));
    assert_eq!(corral.stop(), 0);
}
