//! The everyday commands as compose users type them (Step 10): which config
//! a command is for, and a lifecycle that does what is asked, idempotently.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

const TWO: &str = r#"
[services.web]
command = ["sh", "-c", "echo web up; exec sleep 1000"]

[services.worker]
command = ["sh", "-c", "echo worker up; exec sleep 1000"]
"#;

/// Runs corral in `dir` with a clean environment plus `env`.
fn corral_in(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run corral");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Stops a project's background daemon when the test ends, passed or not.
struct DownOnDrop<'a>(&'a Project);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

/// Kills a child process (by its pid) when the test ends.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// The child's stdout lines up to the first that contains `text` (at
    /// most `limit` lines).
    fn lines_until(&mut self, text: &str, limit: usize) -> Vec<String> {
        use std::io::BufRead;
        let mut seen = Vec::new();
        let Some(stdout) = self.0.stdout.as_mut() else {
            return seen;
        };
        for line in std::io::BufReader::new(stdout).lines().take(limit) {
            let Ok(line) = line else { break };
            let done = line.contains(text);
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_config_is_found_from_a_subdirectory_by_global_f_and_by_corral_file() {
    let project = Project::new(TWO);
    let sub = project.path().join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    // From a subdirectory, as compose and git look: the nearest parent's file.
    let (code, out, err) = corral_in(&sub, &[], &["up", "-d"]);
    let _down = DownOnDrop(&project);
    assert_eq!(code, 0, "{out}{err}");
    let (code, ps, err) = corral_in(&sub, &[], &["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(has_row(&ps, "web", "running"), "{ps}");

    // -f before the command, with `logs -f` meaning follow after it.
    let elsewhere = tempfile::tempdir().unwrap();
    let file = project.file("corral.toml");
    let file = file.to_str().unwrap();
    let mut follow = KillOnDrop(
        std::process::Command::new(BIN)
            .args(["-f", file, "logs", "-f", "-n", "10", "web"])
            .current_dir(elsewhere.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let seen = follow.lines_until("web up", 5);
    assert!(seen.iter().any(|l| l.contains("web up")), "{seen:?}");
    assert!(follow.0.try_wait().unwrap().is_none(), "logs -f follows");
    drop(follow);

    // CORRAL_FILE, as compose's COMPOSE_FILE.
    let (code, ps, err) = corral_in(elsewhere.path(), &[("CORRAL_FILE", file)], &["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(has_row(&ps, "worker", "running"), "{ps}");

    let (code, _, err) = corral_in(elsewhere.path(), &[], &["-f", file, "down"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn up_d_again_applies_changes_and_starts_what_is_missing_and_down_twice_is_fine() {
    let project = Project::new(TWO);
    let (code, out, err) = project.run(&["up", "-d"]);
    let _down = DownOnDrop(&project);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = project.run(&["stop", "worker"]);
    assert_eq!(code, 0);
    // Nothing changed but a stopped service: it is started again.
    let (code, out, err) = project.run(&["up", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("corral is already running; started worker"),
        "{out}"
    );
    assert!(has_row(&out, "worker", "running"), "{out}");
    // A new service in the file: added and started, the others untouched.
    let web = get_json(&project, "/v1/services/web")["pid"]
        .as_i64()
        .unwrap();
    project.write(
        "corral.toml",
        &format!("{TWO}\n[services.cache]\ncommand = [\"sleep\", \"1000\"]\n"),
    );
    let (code, out, err) = project.run(&["up", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added cache"), "{out}");
    assert!(has_row(&out, "cache", "running"), "{out}");
    assert_eq!(
        get_json(&project, "/v1/services/web")["pid"]
            .as_i64()
            .unwrap(),
        web
    );
    // Once more with nothing to do.
    let (code, out, _) = project.run(&["up", "-d"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to change"), "{out}");

    let (code, _, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing to stop"), "{out}");
}

const THREE: &str = r#"
[services.web-a]
command = ["sleep", "1000"]

[services.web-b]
command = ["sleep", "1000"]

[services.stubborn]
command = ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
stop-timeout = "60s"
"#;

fn pid_of(project: &Project, name: &str) -> Option<i64> {
    get_json(project, &format!("/v1/services/{name}"))["pid"].as_i64()
}

#[test]
fn globs_all_and_no_names_target_services_and_stop_t_cuts_the_grace() {
    let project = Project::new(THREE);
    let (code, out, err) = project.run(&["up", "-d"]);
    let _down = DownOnDrop(&project);
    assert_eq!(code, 0, "{out}{err}");

    // stop and kill need a name or --all.
    let (code, _, err) = project.run(&["stop"]);
    assert_eq!(code, 2);
    assert!(err.contains("stop what?"), "{err}");
    let (code, _, err) = project.run(&["kill"]);
    assert_eq!(code, 2);
    assert!(err.contains("kill what?"), "{err}");
    let (code, _, err) = project.run(&["stop", "nothing*"]);
    assert_eq!(code, 2);
    assert!(err.contains("no service matches \"nothing*\""), "{err}");

    // A glob takes the services it matches, and only those.
    let (code, out, err) = project.run(&["stop", "web*"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(state_of(&project, "web-a"), "stopped");
    assert_eq!(state_of(&project, "web-b"), "stopped");
    assert_eq!(state_of(&project, "stubborn"), "running");
    // start with no name starts every service.
    let (code, out, err) = project.run(&["start"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(state_of(&project, "web-a"), "running");
    // restart with no name restarts each.
    let before = pid_of(&project, "web-b");
    let (code, out, err) = project.run(&["restart", "web-a", "web-b"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(pid_of(&project, "web-b"), before);
    // A kill that ends a service its policy restarts says so.
    let killed = pid_of(&project, "web-a");
    let (code, out, _) = project.run(&["kill", "web-a"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("web-a has restart = \"on-failure\": corral will restart it"),
        "{out}"
    );
    // (Running again as a new process: right after the kill the old one may
    // still be seen running.)
    assert!(eventually(SECS5, || {
        let pid = pid_of(&project, "web-a");
        pid.is_some() && pid != killed && state_of(&project, "web-a") == "running"
    }));
    // kill -s with a glob signals each match.
    let (code, out, err) = project.run(&["kill", "-s", "SIGSTOP", "web-?"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sent SIGSTOP to web-a") && out.contains("sent SIGSTOP to web-b"),
        "{out}"
    );
    let (code, _, _) = project.run(&["kill", "-s", "CONT", "--all"]);
    assert_eq!(code, 0);

    // stop -t: SIGKILL after 1 s instead of the service's 60 s.
    let started = std::time::Instant::now();
    let (code, out, err) = project.run(&["stop", "-t", "1", "stubborn"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "stop -t 1 took {:?}",
        started.elapsed()
    );
    assert_eq!(state_of(&project, "stubborn"), "stopped");
    let (code, _, err) = project.run(&["stop", "-t", "soon", "stubborn"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid --timeout \"soon\""), "{err}");

    // --all stops everything, in reverse order.
    let (code, out, err) = project.run(&["stop", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    for name in ["web-a", "web-b", "stubborn"] {
        assert_eq!(state_of(&project, name), "stopped");
    }
}

/// `corral logs ARGS...` for a project: its stdout lines.
fn logs(project: &Project, args: &[&str]) -> Vec<String> {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    let (code, out, err) = project.run(&all);
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_string).collect()
}

#[test]
fn logs_flags_as_compose_has_them_and_the_event_stream() {
    let project = Project::new(
        r#"
[services.talk]
command = ["sh", "-c", "echo early; sleep 1; echo late; exec sleep 1000"]
"#,
    );
    let mut corral = project.up();
    corral.wait_for_output("talk", "early", SECS10);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let between = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    corral.wait_for_output("talk", "late", SECS10);

    let plain = logs(&project, &["--no-prefix", "talk"]);
    assert!(
        plain.contains(&"early".to_string()) && plain.contains(&"late".to_string()),
        "{plain:?}"
    );
    assert_eq!(
        logs(&project, &["-n", "1", "--no-prefix", "talk"]),
        ["late"]
    );
    assert_eq!(
        logs(&project, &["--tail", "1", "--no-prefix", "talk"]),
        ["late"]
    );
    assert_eq!(
        logs(&project, &["--since", &between, "--no-prefix", "talk"]),
        ["late"]
    );
    let until = logs(&project, &["--until", &between, "--no-prefix", "talk"]);
    assert_eq!(until.last().map(String::as_str), Some("early"), "{until:?}");
    assert!(!until.contains(&"late".to_string()));
    // A duration ago: everything of the last hour.
    assert!(logs(&project, &["--since", "1h", "talk"]).len() >= 2);

    let stamped = logs(&project, &["-t", "-n", "1", "talk"]);
    let line = &stamped[0];
    assert!(
        line.len() > 24 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T',
        "{line}"
    );
    assert!(line.ends_with("talk   | late"), "{line}");

    let json = logs(&project, &["--json", "-n", "1", "talk"]);
    let v: serde_json::Value = serde_json::from_str(&json[0]).expect("a JSON line");
    assert_eq!(v["service"], "talk");
    assert_eq!(v["stream"], "stdout");
    assert_eq!(v["line"], "late");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // On a terminal the prefix is coloured, as `up` colours it; --no-color
    // turns it off.
    let file = project.file("corral.toml");
    let on_tty = |extra: &str| {
        let cmd = format!("{BIN} -f {} logs -n 1 {extra} talk", file.display());
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("NO_COLOR")
            .output()
            .expect("run script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(on_tty("").contains("\u{1b}["), "no colour on a terminal");
    let plain = on_tty("--no-color");
    assert!(
        plain.contains("late") && !plain.contains("\u{1b}["),
        "{plain:?}"
    );

    let (code, _, err) = project.run(&["logs", "--since", "yesterday-ish"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid --since \"yesterday-ish\""), "{err}");

    // corral events follows the lifecycle: a restart shows up in it.
    let mut events = KillOnDrop(
        project
            .command(&["events", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, _, _) = project.run(&["restart", "talk"]);
    assert_eq!(code, 0);
    let seen = events.lines_until("started (pid", 20);
    let last: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(last["service"], "talk", "{seen:?}");
    drop(events);
    assert_eq!(corral.stop(), 0);
}

#[test]
fn variables_with_dash_defaults_and_an_essential_oneshot_that_ends_the_run_with_0() {
    let project = Project::new(
        r#"
[services.db]
command = ["sleep", "1000"]

[services.tests]
command = ["sh", "-c", "echo mode=${MODE-fast} empty=[${EMPTY-unused}] given=${GIVEN:?}"]
oneshot = true
essential = true
depends-on = ["db"]
"#,
    );
    let mut corral = project.up_with(&[("EMPTY", ""), ("GIVEN", "yes")], &[]);
    corral.wait_for_output("tests", "mode=fast empty=[] given=yes", SECS10);
    // The essential oneshot completed: everything stops, exit 0.
    assert_eq!(corral.wait_exit(SECS10), 0);
    corral.wait_for("essential service tests completed", SECS5);
}

#[test]
fn wait_returns_once_services_are_up_and_names_those_that_are_not() {
    let project = Project::new(
        r#"
[services.slow]
command = ["sh", "-c", "sleep 1; echo ready now; exec sleep 1000"]
ready = { log = "ready now" }

[services.never]
command = ["sleep", "1000"]
ready = { log = "this is never printed", start-timeout = "10m" }

[services.broken]
command = ["sh", "-c", "exit 3"]
restart = "never"
"#,
    );
    let mut corral = project.up();
    wait_for_socket(&project);
    let (code, out, err) = project.run(&["wait", "slow"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(state_of(&project, "slow"), "running");
    let (code, _, err) = project.run(&["wait", "broken"]);
    assert_eq!(code, 1);
    assert!(err.contains("broken did not start: it is failed"), "{err}");
    let (code, _, err) = project.run(&["wait", "-t", "1", "never", "slow"]);
    assert_eq!(code, 1);
    assert!(err.contains("not up within 1s: never (starting)"), "{err}");
    let (code, _, err) = project.run(&["wait", "nothere"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown service \"nothere\""), "{err}");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn up_wait_returns_once_everything_is_up() {
    let project = Project::new(
        r#"
[services.slow]
command = ["sh", "-c", "sleep 1; echo ready now; exec sleep 1000"]
ready = { log = "ready now" }
"#,
    );
    let (code, out, err) = project.run(&["up", "--wait"]);
    let _down = DownOnDrop(&project);
    assert_eq!(code, 0, "{out}{err}");
    assert!(has_row(&out, "slow", "running"), "{out}");
}

#[test]
fn abort_on_exit_and_exit_code_from_for_ci_runs() {
    let project = Project::new(
        r#"
[services.migrate]
command = ["true"]
oneshot = true

[services.db]
command = ["sleep", "1000"]
depends-on = { migrate = "completed" }

[services.tests]
command = ["sh", "-c", "sleep 0.5; echo testing; exit 3"]
depends-on = ["db"]
"#,
    );
    // The first service to end (tests, 3) ends the run with its code; the
    // migrate oneshot's success did not.
    let mut corral = project.up_with(&[], &["--abort-on-exit"]);
    assert_eq!(corral.wait_exit(SECS10), 3);
    corral.wait_for("tests ended (--abort-on-exit)", SECS5);
    corral.wait_for_service_event("db", "stopped", SECS5);

    // --exit-code-from: the named service's code, even when it did not end
    // first (db is killed by the shutdown: 128 + SIGTERM).
    project.write(
        "corral.toml",
        r#"
[services.db]
command = ["sleep", "1000"]

[services.quick]
command = ["sh", "-c", "exit 0"]
"#,
    );
    let mut corral = project.up_with(&[], &["--exit-code-from", "db"]);
    assert_eq!(corral.wait_exit(SECS10), 143);

    let (code, _, err) = project.run(&["up", "--exit-code-from", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--exit-code-from: unknown service \"nope\""),
        "{err}"
    );
    let (code, _, err) = project.run(&["up", "-d", "--abort-on-exit"]);
    assert_eq!(code, 2);
    assert!(err.contains("need a foreground up"), "{err}");
}

#[test]
fn up_service_also_starts_the_local_providers_of_what_it_requires() {
    let project = Project::new(&format!(
        r#"
[services.db]
command = ["sleep", "1000"]
provides = [{{ name = "db", port = {port} }}]

[services.api]
command = ["sh", "-c", "echo db at $DB_ADDR; exec sleep 1000"]
requires = ["db"]

[services.extra]
command = ["sleep", "1000"]
"#,
        port = free_port()
    ));
    let mut corral = project.up_with(&[], &["api"]);
    corral.wait_for_output("api", "db at 127.0.0.1:", SECS10);
    let names: Vec<String> = get_json(&project, "/v1/services")["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["db", "api"], "extra is not started");
    assert_eq!(corral.stop(), 0);
}

fn names_running(project: &Project) -> Vec<String> {
    get_json(project, "/v1/services")["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn profiles_keep_services_out_of_up_unless_named() {
    let config = r#"
[services.web]
command = ["sleep", "1000"]

[services.debugger]
command = ["sleep", "1000"]
profiles = ["debug"]

[services.seed]
command = ["sleep", "1000"]
profiles = ["dev", "debug"]
"#;
    let project = Project::new(config);
    let mut corral = project.up();
    wait_for_socket(&project);
    assert_eq!(names_running(&project), ["web"]);
    // A reload keeps to the profiles corral was started with.
    let (code, _, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names_running(&project), ["web"]);
    assert_eq!(corral.stop(), 0);

    let mut corral = project.up_with(&[], &["--profile", "debug"]);
    wait_for_socket(&project);
    assert_eq!(names_running(&project), ["web", "debugger", "seed"]);
    assert_eq!(corral.stop(), 0);

    let mut corral = project.up_with(&[("CORRAL_PROFILES", "dev")], &[]);
    wait_for_socket(&project);
    assert_eq!(names_running(&project), ["web", "seed"]);
    assert_eq!(corral.stop(), 0);

    // Named on the command line, a service runs whatever its profiles.
    let mut corral = project.up_with(&[], &["debugger"]);
    wait_for_socket(&project);
    assert_eq!(names_running(&project), ["debugger"]);
    assert_eq!(corral.stop(), 0);

    // Nothing left to run is a clear error.
    project.write(
        "corral.toml",
        "[services.tool]\ncommand = [\"true\"]\nprofiles = [\"tools\"]\n",
    );
    let (code, _, err) = project.run(&["up"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "no service to run: each one has a profile and none is active (profiles: tools"
        ),
        "{err}"
    );
}

#[test]
fn a_project_too_deep_for_a_unix_socket_path_gets_a_short_one_and_says_where() {
    let project = Project::new("");
    let deep = project
        .path()
        .join("a-directory-name-that-is-rather-long/and-another-one-that-is-long-too/and-a-third");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("corral.toml"),
        "[services.web]\ncommand = [\"sleep\", \"1000\"]\n",
    )
    .unwrap();
    assert!(deep.join(".corral/corral.sock").as_os_str().len() > 107);
    let mut up = std::process::Command::new(BIN);
    up.arg("up")
        .current_dir(&deep)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    let mut corral = Running::start(up);
    let line = corral.wait_for("control socket at ", SECS10);
    assert!(
        line.contains("is longer than a Unix socket path may be"),
        "{line}"
    );
    // Every command finds it the same way.
    let (code, ps, err) = corral_in(&deep, &[], &["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(has_row(&ps, "web", "running"), "{ps}");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn ps_says_stopped_by_corral_and_shows_no_health_for_a_stopped_service() {
    let project = Project::new(
        r#"
[services.web]
command = ["sleep", "1000"]
health = { exec = ["true"], interval = "100ms" }

[services.crashy]
command = ["sh", "-c", "sleep 0.2; kill -TERM $$$$"]
restart = "never"
"#,
    );
    let mut corral = project.up();
    wait_for_socket(&project);
    assert!(eventually(SECS5, || {
        let (_, ps, _) = project.run(&["ps"]);
        has_row(&ps, "web", "healthy")
    }));
    let (code, _, _) = project.run(&["restart", "web"]);
    assert_eq!(code, 0);
    let status = get_json(&project, "/v1/services/web");
    assert_eq!(status["last_exit"], "stopped by corral (signal SIGTERM)");
    // A crash by a signal is not corral's doing.
    assert!(eventually(SECS5, || state_of(&project, "crashy") == "failed"));
    assert_eq!(
        get_json(&project, "/v1/services/crashy")["last_exit"],
        "signal SIGTERM"
    );
    let (code, _, _) = project.run(&["stop", "web"]);
    assert_eq!(code, 0);
    let (_, ps, _) = project.run(&["ps"]);
    let row = ps.lines().find(|l| l.starts_with("web ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    // NAME STATE PID UPTIME RESTARTS HEALTH LAST EXIT...
    assert_eq!(cells[1], "stopped", "{ps}");
    assert_eq!(cells[5], "-", "no health for a stopped service: {ps}");
    assert!(row.contains("stopped by corral (signal SIGTERM)"), "{ps}");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn a_service_scaled_to_0_stays_addressable() {
    let project = Project::new(
        r#"
[services.api]
command = ["sleep", "1000"]
replicas = 2

[services.web]
command = ["sleep", "1000"]
"#,
    );
    let (code, out, err) = project.run(&["up", "-d"]);
    let _down = DownOnDrop(&project);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = project.run(&["scale", "api", "0"]);
    assert_eq!(code, 0, "{err}");
    for args in [
        &["start", "api"][..],
        &["stop", "api"],
        &["restart", "api"],
        &["logs", "api"],
    ] {
        let (code, out, err) = project.run(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let (_, out, _) = project.run(&["start", "api"]);
    assert!(
        out.contains("api is scaled to 0: it has no instance"),
        "{out}"
    );
    let list = get_json(&project, "/v1/services");
    assert_eq!(list["scaled_to_zero"], serde_json::json!(["api"]));
    let (code, _, err) = project.run(&["scale", "api", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(eventually(SECS5, || state_of(&project, "api.1") == "running"));
}

#[test]
fn completions_and_the_manual_page() {
    let project = Project::new("[services.a]\ncommand = [\"true\"]\n");
    let (code, bash, err) = project.run(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let script = project.file("corral.bash");
    std::fs::write(&script, &bash).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // The script completes the commands (sourced, it defines its function).
    let listed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(corral lo); COMP_CWORD=1; _corral corral lo corral; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(words.contains("logs"), "{words:?}");
    let (code, zsh, _) = project.run(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef corral"), "{zsh}");
    let (code, fish, _) = project.run(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c corral"), "{fish}");
    let (code, _, err) = project.run(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
    let (code, man, _) = project.run(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH corral 1"), "{man}");
    for command in ["up", "down", "logs", "wait", "events", "completions"] {
        assert!(man.contains(command), "{command} missing from the manual");
    }
}

#[test]
fn exec_and_run_in_a_services_environment() {
    let port = free_port();
    let project = Project::new(&format!(
        r#"
[services.db]
command = ["sleep", "1000"]
provides = [{{ name = "db", port = {port} }}]

[services.api]
command = ["sleep", "1000"]
env = {{ GREETING = "hello" }}
working-dir = "app"
requires = ["db"]

[services.migrate]
command = ["sh", "-c", "echo migrate with: \"$@\" to $DB_ADDR; [ -z \"$1\" ] || exit 3", "migrate"]
depends-on = ["db"]
requires = ["db"]
oneshot = true
"#
    ));
    std::fs::create_dir_all(project.file("app")).unwrap();
    let (code, out, err) = project.run(&["up", "-d"]);
    let _down = DownOnDrop(&project);
    assert_eq!(code, 0, "{out}{err}");

    // exec: the service's env (discovery included), working dir; the exit
    // code passes through.
    let (code, out, err) = project.run(&[
        "exec",
        "api",
        "--",
        "sh",
        "-c",
        "echo $GREETING $DB_ADDR; pwd; exit 7",
    ]);
    assert_eq!(code, 7, "{err}");
    assert!(out.contains(&format!("hello 127.0.0.1:{port}")), "{out}");
    assert!(out.trim_end().ends_with("/app"), "{out}");
    // Without `--` too, as compose takes it.
    let (code, out, _) = project.run(&["exec", "api", "printenv", "GREETING"]);
    assert_eq!((code, out.trim()), (0, "hello"));

    // In a terminal, stdin is the terminal; -T detaches it.
    let file = project.file("corral.toml");
    let in_tty = |flag: &str| {
        let cmd = format!(
            "{BIN} -f {} exec {flag} api -- sh -c 'test -t 0 && echo tty || echo notty'",
            file.display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(in_tty("").contains("tty") && !in_tty("").contains("notty"));
    assert!(in_tty("-T").contains("notty"));

    // run: its dependencies first (db is stopped here), then a fresh,
    // attached instance with the args appended; its exit code is corral's.
    let (code, _, _) = project.run(&["stop", "db"]);
    assert_eq!(code, 0);
    let (code, out, err) = project.run(&["run", "migrate", "--", "--dry-run"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains(&format!("migrate with: --dry-run to 127.0.0.1:{port}")),
        "{out}"
    );
    assert_eq!(state_of(&project, "db"), "running");

    let (code, _, err) = project.run(&["exec", "nope", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("no service named \"nope\""), "{err}");
}

#[test]
fn exec_without_a_daemon_uses_the_config() {
    let project = Project::new(
        "[services.api]\ncommand = [\"sleep\", \"1000\"]\nenv = { GREETING = \"from the file\" }\n",
    );
    let (code, out, err) = project.run(&["exec", "api", "--", "printenv", "GREETING"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "from the file");
    assert!(
        err.contains("not running; using api's environment"),
        "{err}"
    );
    let (code, _, err) = project.run(&["exec", "api", "--", "no-such-program-anywhere"]);
    assert_eq!(code, 127);
    assert!(
        err.contains("cannot run \"no-such-program-anywhere\""),
        "{err}"
    );
}

#[test]
fn several_files_merge_in_order_with_includes_and_corral_config_prints_the_result() {
    let project = Project::new(
        r#"
include = ["common.toml"]

[services.web]
command = ["sh", "-c", "echo web mode=$MODE keep=$KEEP; exec sleep 1000"]
env = { MODE = "dev", KEEP = "kept", API_TOKEN = "s3cr3t-0123456789-ABCDEFabcdef" }
"#,
    );
    project.write(
        "common.toml",
        "[services.db]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    project.write(
        "prod.toml",
        "[services.web]\nenv = { MODE = \"prod\" }\n\n[services.cache]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    // Later files win key by key; tables merge; includes come first.
    let mut corral = project.up_with(&[], &["-f", "corral.toml", "-f", "prod.toml"]);
    corral.wait_for_output("web", "web mode=prod keep=kept", SECS10);
    assert_eq!(names_running(&project), ["db", "web", "cache"]);
    // A reload reads every file again.
    project.write(
        "prod.toml",
        "[services.web]\nenv = { MODE = \"staging\" }\n",
    );
    let (code, out, err) = project.run(&["-f", "corral.toml", "-f", "prod.toml", "reload"]);
    assert_eq!(code, 0, "{out}{err}");
    corral.wait_for_output("web", "web mode=staging keep=kept", SECS10);
    assert_eq!(corral.stop(), 0);

    // corral config: the merged file, secrets masked unless --unmask; it
    // reads back as a config with the same plan.
    let (code, merged, err) = project.run(&["-f", "corral.toml", "-f", "prod.toml", "config"]);
    assert_eq!(code, 0, "{err}");
    assert!(merged.contains("MODE = \"staging\""), "{merged}");
    assert!(merged.contains("API_TOKEN = \"********\""), "{merged}");
    assert!(!merged.contains("include"), "{merged}");
    let (_, unmasked, _) =
        project.run(&["-f", "corral.toml", "-f", "prod.toml", "config", "--unmask"]);
    assert!(
        unmasked.contains("s3cr3t-0123456789-ABCDEFabcdef"),
        "{unmasked}"
    );
    project.write("flat.toml", &unmasked);
    let (code, flat, err) = project.run(&["-f", "flat.toml", "check"]);
    assert_eq!(code, 0, "{err}");
    let (_, both, _) = project.run(&["-f", "corral.toml", "-f", "prod.toml", "check"]);
    let plan = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(plan(&flat), plan(&both));

    // An error in an included file points into that file.
    project.write(
        "common.toml",
        "[services.db]\ncommand = [\"sleep\", \"1000\"]\ncomand = 1\n",
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("common.toml:3:1: error: unknown key `comand`"),
        "{err}"
    );
}

/// `up -d` waiting for its services, cut short by `down`: it says corral
/// was stopped, not that none runs.
#[test]
fn up_d_cut_short_by_down_says_so() {
    let project = Project::new(
        r#"
[services.slow]
command = ["sleep", "600"]
ready = { exec = ["false"], interval = "100ms", start-timeout = "30s" }
"#,
    );
    let up = {
        let mut cmd = project.command(&["up", "-d"]);
        std::thread::spawn(move || cmd.output())
    };
    wait_for_socket(&project);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, _, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
    let out = up.join().unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("corral stopped before the services were up"),
        "{err}"
    );
    assert!(!err.contains("no corral running"), "{err}");
}
