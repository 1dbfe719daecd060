//! The control plane: every CLI command against a real daemon, the raw API,
//! socket security, bad requests, and load.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const STACK: &str = r#"
[services.init]
command = ["sh", "-c", "echo init done"]
oneshot = true

[services.web]
command = ["sh", "-c", "trap 'echo got usr1' USR1; echo web up; while :; do sleep 0.1; done"]
depends-on = { init = "completed" }

[services.worker]
command = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
depends-on = { init = "completed" }

[services.broken]
command = ["sh", "-c", "sleep 0.2; exit 3"]
restart = "never"
ready = { exec = ["false"], start-timeout = "5s" }
"#;

fn corral(project: &Project, args: &[&str]) -> (i32, String, String) {
    project.run(args)
}

#[test]
fn every_cli_command_against_a_foreground_daemon() {
    let project = Project::new(STACK);
    let mut daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("worker", "started", SECS10);
    daemon.wait_for_service_event("broken", "failed with exit code 3", SECS10);

    let (code, out, _) = corral(&project, &["ps"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    for (name, state) in [
        ("init", "completed"),
        ("web", "running"),
        ("worker", "running"),
        ("broken", "failed"),
    ] {
        assert!(has_row(&out, name, state), "{name} {state} in\n{out}");
    }
    let (code, json, _) = corral(&project, &["ps", "--json"]);
    assert_eq!(code, 0);
    assert!(json.contains("\"name\": \"web\""), "{json}");

    let web = daemon.started_pid("web", SECS5);
    let (code, out, err) = corral(&project, &["stop", "worker"]);
    assert_eq!((code, out.trim()), (0, "worker is stopped"), "{err}");
    let (code, out, _) = corral(&project, &["start", "worker"]);
    assert_eq!((code, out.trim()), (0, "worker is running"));
    assert!(alive(web), "stopping another service must not touch web");

    let (code, out, _) = corral(&project, &["restart", "web"]);
    assert_eq!((code, out.trim()), (0, "web is running"));
    assert!(!alive(web));

    daemon.wait_for("web up", SECS5);
    let (code, out, _) = corral(&project, &["kill", "-s", "USR1", "web"]);
    assert_eq!(code, 0, "{out}");
    daemon.wait_for("got usr1", SECS5);

    let (code, out, _) = corral(&project, &["logs", "-n", "2", "worker"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.starts_with("worker")), "{out}");
    let (_, merged, _) = corral(&project, &["logs", "-n", "50", "web", "worker"]);
    let has = |service, sep, text| merged.lines().any(|l| is_line_of(l, service, sep, text));
    assert!(
        has("web", '*', "started") && has("worker", '|', "tick"),
        "{merged}"
    );

    // logs -f: new lines keep coming.
    let mut follow = project
        .command(&["logs", "-f", "-n", "0", "worker"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    for _ in 0..3 {
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(line.starts_with("worker | tick"), "{line}");
    }
    let _ = follow.kill();
    let _ = follow.wait();

    let (code, out, err) = corral(&project, &["start", "broken"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("broken did not start: it is failed"), "{out}");
    assert!(err.contains("start failed for broken"), "{err}");

    let (code, out, _) = corral(&project, &["down"]);
    assert_eq!(code, 0);
    assert!(out.contains("corral stopped"), "{out}");
    assert_eq!(daemon.wait_exit(SECS10), 0);
    assert!(!socket_of(&project).exists(), "socket removed at exit");
}

#[test]
fn up_detached_returns_once_everything_is_ready() {
    let port = free_port();
    let m = marker("detached");
    let project = Project::new(&format!(
        r#"
[services.api]
command = ["python3", "server.py", "{port}", "0.5", "api-stamp", "{m}"]
ready = {{ tcp = "127.0.0.1:{port}", interval = "50ms" }}

[services.worker]
command = ["sh", "-c", "while :; do sleep 1; done", "{m}"]
depends-on = {{ api = "ready" }}
"#
    ));
    project.write("server.py", HTTP_SERVER);
    let (code, out, err) = corral(&project, &["up", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    // By the time up -d returns, the api is ready and the worker runs.
    assert!(project.file("api-stamp").exists());
    assert!(has_row(&out, "api", "running"), "{out}");
    assert!(has_row(&out, "worker", "running"), "{out}");
    let (code, out, _) = corral(&project, &["restart", "worker"]);
    assert_eq!((code, out.trim()), (0, "worker is running"));
    let (code, out, _) = corral(&project, &["stop", "worker"]);
    assert_eq!((code, out.trim()), (0, "worker is stopped"));
    let (code, out, _) = corral(&project, &["ps"]);
    assert_eq!(code, 0);
    assert!(has_row(&out, "worker", "stopped"), "{out}");
    assert!(has_row(&out, "api", "running"), "{out}");
    let (code, out, _) = corral(&project, &["start", "worker"]);
    assert_eq!((code, out.trim()), (0, "worker is running"));
    let (code, out, _) = corral(&project, &["logs", "-n", "20", "worker"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("worker * stopped") && out.contains("worker * started"),
        "{out}"
    );
    let (code, out, _) = corral(&project, &["kill", "-s", "CONT", "api"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = corral(&project, &["reload"]);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged: api, worker"), "{out}");
    let (code, _, _) = corral(&project, &["down"]);
    assert_eq!(code, 0);
    assert!(
        eventually(SECS10, || pids_with_marker(&m).is_empty()),
        "left: {:?}",
        pids_with_marker(&m)
    );
    assert!(!socket_of(&project).exists());
}

#[test]
fn up_detached_reports_a_service_that_cannot_start() {
    let project = Project::new(
        r#"
[services.bad]
command = ["sh", "-c", "echo cannot bind >&2; exit 5"]
restart = "never"
# Without a readiness probe a service counts as up while it runs, however briefly.
ready = { exec = ["false"], start-timeout = "10s" }

[services.other]
command = ["sleep", "60"]
"#,
    );
    let (code, _, err) = corral(&project, &["up", "-d"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad did not start: it is failed (last: exit code 5)"),
        "{err}"
    );
    let _ = corral(&project, &["down"]);
}

#[test]
fn up_detached_with_bad_config_fails_before_starting_anything() {
    let project = Project::new("[services.a]\ncomand = \"true\"\n");
    let (code, _, err) = corral(&project, &["up", "-d"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown key `comand`"), "{err}");
    assert!(!socket_of(&project).exists());
}

#[test]
fn reload_restarts_only_what_changed() {
    let v1 = r#"
[services.same]
command = ["sh", "-c", "echo same said hi; exec sleep 60"]

[services.edited]
command = ["sleep", "60"]
env = { VERSION = "1" }

[services.dropped]
command = ["sh", "-c", "echo dropped said hi; exec sleep 60"]
"#;
    let project = Project::new(v1);
    let mut daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("dropped", "started", SECS5);
    daemon.wait_for_output("same", "same said hi", SECS5);
    daemon.wait_for_output("dropped", "dropped said hi", SECS5);
    let same = daemon.started_pid("same", SECS5);
    let edited = daemon.started_pid("edited", SECS5);
    let dropped = daemon.started_pid("dropped", SECS5);

    // An invalid file changes nothing and reports every error.
    project.write(
        "corral.toml",
        "[services.same]\ncomand = 1\n[services.x]\ncommand = \"true\"\nstop-signal = \"NOPE\"\n",
    );
    let (code, _, err) = corral(&project, &["reload"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `comand`") && err.contains("unknown signal \"NOPE\""),
        "{err}"
    );
    assert!(alive(same) && alive(edited) && alive(dropped));

    let v2 = r#"
[services.same]
command = ["sh", "-c", "echo same said hi; exec sleep 60"]

[services.edited]
command = ["sleep", "60"]
env = { VERSION = "2" }

[services.added]
command = ["sleep", "60"]
"#;
    project.write("corral.toml", v2);
    let (code, out, err) = corral(&project, &["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added: added"), "{out}");
    assert!(out.contains("changed (restarted): edited"), "{out}");
    assert!(out.contains("removed (stopped): dropped"), "{out}");
    assert!(out.contains("unchanged: same"), "{out}");
    daemon.wait_for_service_event("added", "started", SECS5);
    daemon.wait_for_service_event_nth("edited", "started", 2, SECS5);
    assert!(alive(same), "unchanged service keeps its pid");
    assert!(eventually(SECS5, || !alive(edited) && !alive(dropped)));
    let environ = std::fs::read(format!(
        "/proc/{}/environ",
        daemon.started_pid_nth("edited", 2)
    ))
    .unwrap_or_default();
    assert!(String::from_utf8_lossy(&environ).contains("VERSION=2"));
    let (_, ps, _) = corral(&project, &["ps"]);
    assert!(!ps.contains("dropped"), "{ps}");
    // The unchanged service keeps what it said; the service added in the
    // removed one's place starts with nothing of the removed one's.
    let (_, logs, _) = corral(&project, &["logs", "same"]);
    assert!(logs.contains("same said hi"), "{logs}");
    let (_, logs, _) = corral(&project, &["logs", "added"]);
    assert!(!logs.contains("dropped said hi"), "{logs}");
    assert!(logs.contains("started"), "{logs}");
    assert!(ps.contains("added"), "{ps}");
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn the_socket_is_private_and_other_users_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let _daemon = project.up();
    wait_for_socket(&project);
    let socket = socket_of(&project);
    let mode = std::fs::metadata(&socket)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped the peer check: needs root to act as nobody");
        return;
    }
    // The project is readable, the runtime dir (0700) is not: the CLI says
    // so, rather than that nothing runs.
    let _ = std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755));
    let refused_as_nobody = || {
        let out = project
            .command(&["ps"])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run ps as nobody");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("permission denied") && err.contains("socket-group"),
            "{err}"
        );
    };
    refused_as_nobody();
    // Open the path up so only the peer-uid check stands in the way.
    for p in [
        project.path().to_path_buf(),
        project.path().join(".corral"),
        socket.clone(),
    ] {
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777));
    }
    refused_as_nobody();
    let (status, _) = raw_http(&socket, "GET", "/v1/services", b"");
    assert_eq!(status, 200, "root is still allowed");
}

#[test]
fn two_hundred_concurrent_ps_requests_are_all_answered() {
    let project = Project::new(
        "[services.a]\ncommand = [\"sleep\", \"60\"]\n[services.b]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let daemon = project.up();
    wait_for_socket(&project);
    let a = daemon.started_pid("a", SECS5);
    let socket = socket_of(&project);
    let threads: Vec<_> = (0..200)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || raw_http(&socket, "GET", "/v1/services", b""))
        })
        .collect();
    let answers: Vec<(u16, String)> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    assert!(answers
        .iter()
        .all(|(s, b)| *s == 200 && b.contains("\"name\":\"a\"")));
    assert!(alive(a));
}

#[test]
fn without_a_daemon_commands_fail_fast_and_clearly() {
    let project = Project::new("[services.a]\ncommand = [\"true\"]\n");
    for args in [&["ps"][..], &["stop", "a"], &["logs"], &["reload"]] {
        let started = Instant::now();
        let (code, _, err) = corral(&project, args);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(code, 1);
        let expected = format!(
            "corral: no corral running for {} (socket {})",
            project.path().canonicalize().unwrap_or_default().display(),
            project
                .path()
                .canonicalize()
                .unwrap_or_default()
                .join(".corral/corral.sock")
                .display()
        );
        assert_eq!(err.trim(), expected);
    }
    // `down` with nothing running has nothing to do: it says so and succeeds.
    let (code, out, err) = corral(&project, &["down"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("corral is not running for"), "{out}");
    assert!(out.contains("nothing to stop"), "{out}");
}

#[test]
fn bad_requests_get_clear_errors_and_disturb_nothing() {
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let daemon = project.up();
    wait_for_socket(&project);
    let a = daemon.started_pid("a", SECS5);
    let socket = socket_of(&project);
    let (status, body) = raw_http(&socket, "POST", "/v1/services/nope/stop", b"");
    assert_eq!(status, 404);
    assert!(
        body.contains("no service named \\\"nope\\\"") && body.contains("\"known\":[\"a\"]"),
        "{body}"
    );
    let (status, body) = raw_http(&socket, "POST", "/v1/services/a/signal", b"{not json");
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON body"), "{body}");
    let (status, body) = raw_http(
        &socket,
        "POST",
        "/v1/services/a/signal",
        br#"{"signal":"SIGNOPE"}"#,
    );
    assert_eq!(status, 400, "{body}");
    // A number, as docs/api.md allows (18 is SIGCONT: harmless).
    let (status, body) = raw_http(
        &socket,
        "POST",
        "/v1/services/a/signal",
        br#"{"signal":18}"#,
    );
    assert_eq!(status, 200, "{body}");
    let big = vec![b'x'; 100 * 1024];
    let (status, body) = raw_http(&socket, "POST", "/v1/services/a/signal", &big);
    assert_eq!(status, 413, "{body}");
    let (status, _) = raw_http(&socket, "GET", "/v1/nothing", b"");
    assert_eq!(status, 404);
    let (status, _) = raw_http(&socket, "DELETE", "/v1/services", b"");
    assert_eq!(status, 405);
    let (status, _) = raw_http(&socket, "GET", "/v2/services", b"");
    assert_eq!(status, 404);
    let (code, _, err) = corral(&project, &["stop", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no service named \"nope\" (services: a)"),
        "{err}"
    );
    let (code, _, err) = corral(&project, &["kill", "-s", "SIGNOPE", "a"]);
    assert_eq!(code, 2, "{err}");
    assert!(alive(a), "bad requests must not disturb the service");
}

/// Runs the curl examples of docs/api.md against a real daemon.
#[test]
fn curl_against_the_documented_api() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("curl is needed (.ci/run installs it)");
    }
    let project =
        Project::new("[services.web]\ncommand = [\"sh\", \"-c\", \"echo hello; sleep 60\"]\n");
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("hello", SECS5);
    let socket = socket_of(&project);
    let curl = |args: &[&str]| -> String {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--unix-socket"])
            .arg(&socket)
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version = curl(&["http://corral/v1/version"]);
    assert!(version.contains("\"api\":1"), "{version}");
    let services = curl(&["http://corral/v1/services"]);
    assert!(
        services.contains("\"name\":\"web\"") && services.contains("\"state\":\"running\""),
        "{services}"
    );
    let one = curl(&["http://corral/v1/services/web"]);
    assert!(one.contains("\"pid\":"), "{one}");
    let logs = curl(&["http://corral/v1/logs?service=web&n=10"]);
    assert!(
        logs.contains("\"line\":\"hello\"") && logs.contains("\"stream\":\"stdout\""),
        "{logs}"
    );
    let signalled = curl(&[
        "-X",
        "POST",
        "-d",
        r#"{"signal":"SIGCONT"}"#,
        "http://corral/v1/services/web/signal",
    ]);
    assert!(signalled.contains("\"name\":\"web\""), "{signalled}");
    let restarted = curl(&["-X", "POST", "http://corral/v1/services/web/restart"]);
    assert!(restarted.contains("\"ok\":true"), "{restarted}");
    let stopped = curl(&["-X", "POST", "http://corral/v1/services/web/stop"]);
    assert!(stopped.contains("\"state\":\"stopped\""), "{stopped}");
    let reloaded = curl(&["-X", "POST", "http://corral/v1/reload"]);
    assert!(reloaded.contains("\"unchanged\":[\"web\"]"), "{reloaded}");
    let down = curl(&["-X", "POST", "http://corral/v1/shutdown"]);
    assert!(down.contains("shutting down"), "{down}");
}

#[test]
fn sighup_reloads_the_config() {
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    let daemon = project.up();
    wait_for_socket(&project);
    let a = daemon.started_pid("a", SECS5);
    project.write(
        "corral.toml",
        "[services.a]\ncommand = [\"sleep\", \"60\"]\nstop-signal = \"BOGUS\"\n",
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("reload failed: ", SECS5);
    daemon.wait_for("unknown signal \"BOGUS\"", SECS5);
    assert!(alive(a));
    project.write(
        "corral.toml",
        "[services.a]\ncommand = [\"sleep\", \"60\"]\n[services.b]\ncommand = [\"sleep\", \"60\"]\n",
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_service_event("b", "started", SECS5);
    assert!(alive(a), "unchanged service untouched");
}

#[test]
fn socket_group_opens_the_socket_to_that_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: changing the socket's group needs root");
        return;
    }
    let group = std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("nogroup:"))
        .and_then(|l| l.split(':').nth(2)?.parse::<u32>().ok())
        .expect("nogroup in /etc/group");
    let project = Project::new(
        "[corral]\nsocket-group = \"nogroup\"\n\n[services.a]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let _daemon = project.up();
    wait_for_socket(&project);
    let meta = std::fs::metadata(socket_of(&project)).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group);
}

#[test]
fn members_of_the_socket_group_may_use_the_api() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as nobody");
        return;
    }
    // nobody's primary group is nogroup (65534) on Debian.
    let project = Project::new(
        "[corral]\nsocket-group = \"nogroup\"\n\n[services.a]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let _daemon = project.up();
    wait_for_socket(&project);
    for p in [project.path().to_path_buf(), project.path().join(".corral")] {
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
    }
    let out = project
        .command(&["ps"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run ps as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("running"));
}
