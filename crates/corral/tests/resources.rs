//! Resource figures per instance: CPU, memory, processes and descriptors of
//! the whole session a service runs in, in `ps`, its JSON and the API.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

const MIB: u64 = 1024 * 1024;

fn config() -> String {
    String::from(
        r#"
[services.family]
command = ["sh", "-c", "sleep 600 & sleep 601 & python3 -c \"import time; x = b'x' * (48 << 20); print('allocated', flush=True); time.sleep(600)\" & wait"]

[services.busy]
command = ["sh", "-c", "while :; do :; done"]
"#,
    )
}

/// The session's processes as /proc has them: (pid, rss bytes).
fn session_of(sid: i32) -> Vec<(i32, u64)> {
    let page = 4096;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            let session: i32 = fields[3].parse().ok()?;
            let rss: u64 = fields[21].parse().ok()?;
            (session == sid).then_some((pid, rss * page))
        })
        .collect()
}

fn resources(project: &Project, name: &str) -> serde_json::Value {
    let (code, out, err) = project.run(&["ps", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("ps json");
    list["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {out}"))["resources"]
        .clone()
}

#[test]
fn ps_sums_the_whole_session_of_a_service_that_forks() {
    let project = Project::new(&config());
    let daemon = project.up();
    daemon.wait_for_output("family", "allocated", SECS10);
    let pid = daemon.started_pid("family", SECS5);
    let members = session_of(pid);
    assert_eq!(members.len(), 4, "sh, two sleeps and python3: {members:?}");

    let r = resources(&project, "family");
    assert_eq!(r["processes"], 4, "{r}");
    let rss = r["rss_bytes"].as_u64().unwrap();
    let expected: u64 = members.iter().map(|(_, rss)| rss).sum();
    assert!(rss >= 48 * MIB, "the children's memory counts: {rss}");
    // Read moments apart: the same figure within a few pages.
    assert!(
        rss.abs_diff(expected) < 2 * MIB,
        "{rss} vs {expected} from /proc"
    );
    let fds: u64 = members
        .iter()
        .map(|(p, _)| {
            std::fs::read_dir(format!("/proc/{p}/fd"))
                .map(|d| d.count() as u64)
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(r["fds"].as_u64(), Some(fds), "{r}");

    // The table has the columns, with the figures of the same session.
    let (_, table, _) = project.run(&["ps"]);
    let header = table.lines().next().unwrap();
    for column in ["CPU%", "CPU TIME", "MEM", "PROCS", "FDS"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().find(|l| l.starts_with("family")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"4"), "{row}");
    assert!(
        cells
            .iter()
            .any(|c| c.ends_with('M') && c.starts_with(['4', '5', '6'])),
        "about 50M of memory: {row}"
    );
}

#[test]
fn cpu_share_and_time_of_a_busy_service_only_grow_across_restarts() {
    let project = Project::new(&config());
    let daemon = project.up();
    daemon.wait_for_output("family", "allocated", SECS10);
    let first = daemon.started_pid("busy", SECS5);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = resources(&project, "busy");
    let share = r["cpu_percent"].as_f64().unwrap();
    // One core spinning; the machine is shared, so only "clearly busy".
    assert!(share > 30.0, "{r}");
    let before = r["cpu_seconds"].as_f64().unwrap();
    assert!(before > 0.2, "{r}");

    // A new process: the time of the ended one stays in the figure.
    let (code, _, err) = project.run(&["restart", "busy"]);
    assert_eq!(code, 0, "{err}");
    let second = daemon.started_pid_nth("busy", 2);
    assert_ne!(first, second);
    let after = resources(&project, "busy")["cpu_seconds"].as_f64().unwrap();
    assert!(after >= before, "{after} < {before}");

    // An idle service has a share of about nothing.
    let idle = resources(&project, "family");
    assert!(idle["cpu_percent"].as_f64().unwrap() < 20.0, "{idle}");
}

#[test]
fn the_api_gives_resources_only_when_asked_and_rejects_a_bad_value() {
    let project = Project::new(&config());
    let _daemon = project.up();
    wait_for_socket(&project);
    let socket = socket_of(&project);
    let plain = get_json(&project, "/v1/services/busy");
    assert!(plain.get("resources").is_none(), "{plain}");
    let (status, body) = raw_http(&socket, "GET", "/v1/services/busy?resources=true", b"");
    assert_eq!(status, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(one["resources"]["processes"], 1, "{one}");
    let (status, body) = raw_http(&socket, "GET", "/v1/services?resources=maybe", b"");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("resources"), "{body}");
}

#[test]
fn ps_watch_redraws_until_interrupted_and_rejects_a_bad_interval() {
    use std::io::Read;
    let project = Project::new(&config());
    let _daemon = project.up();
    wait_for_socket(&project);
    let mut watch = project
        .command(&["ps", "--watch", "--interval", "200ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let status = watch.wait().unwrap();
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Piped, each table follows the last: several in 1.5 s at 200 ms.
    let tables = out.lines().filter(|l| l.starts_with("NAME")).count();
    assert!((3..=9).contains(&tables), "{tables} tables:\n{out}");
    assert!(out.contains("family") && out.contains("busy"), "{out}");

    for bad in [
        &["ps", "--watch", "--interval", "0s"][..],
        &["ps", "--watch", "--interval", "soon"],
    ] {
        let (code, _, err) = project.run(bad);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("invalid --interval"), "{err}");
    }
    let (code, _, err) = project.run(&["ps", "--interval", "1s"]);
    assert_eq!(code, 2, "--interval needs --watch: {err}");
}
