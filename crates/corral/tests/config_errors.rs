//! Bad config: every error at once, each with file:line:col, exit code 2, no panic.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use std::path::Path;

fn check(config: &str) -> (i32, String) {
    let project = Project::new(config);
    let (code, _, err) = project.run(&["check"]);
    assert!(!err.contains("panicked"), "{err}");
    (code, err)
}

#[track_caller]
fn assert_error(config: &str, expected: &[&str]) {
    let (code, err) = check(config);
    assert_eq!(code, 2, "{err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
}

#[test]
fn unknown_key_suggests_the_nearest() {
    assert_error(
        "[services.web]\ncomand = [\"true\"]\n",
        &[
            "corral.toml:2:1: error: unknown key `comand` in service \"web\" (did you mean `command`?)",
            "corral.toml:1:11: error: service \"web\" has no `command`",
        ],
    );
    assert_error(
        "[corral]\nshutdown-timout = \"1s\"\n[services.a]\ncommand = \"true\"\n",
        &["corral.toml:2:1: error: unknown key `shutdown-timout` in [corral] (did you mean `shutdown-timeout`?)"],
    );
}

#[test]
fn wrong_types_and_bad_values() {
    assert_error(
        r#"[services.a]
command = ["true"]
oneshot = "yes"
stop-timeout = "10 parsecs"
stop-signal = "SIGTREM"
restart = "sometimes"
max-restarts = -1
"#,
        &[
            "corral.toml:3:11: error: expected true or false, found a string",
            "corral.toml:4:16: error: invalid duration \"10 parsecs\"",
            "corral.toml:5:15: error: unknown signal \"SIGTREM\" (did you mean `SIGTERM`?)",
            "corral.toml:6:11: error: unknown restart policy \"sometimes\"",
            "corral.toml:7:16: error: expected a non-negative whole number, found -1",
        ],
    );
}

#[test]
fn dependencies_must_exist_and_not_cycle() {
    assert_error(
        "[services.api]\ncommand = \"true\"\ndepends-on = [\"dbb\"]\n\n[services.db]\ncommand = \"true\"\n",
        &["corral.toml:3:15: error: service \"api\" depends on unknown service \"dbb\" (did you mean `db`?)"],
    );
    assert_error(
        r#"[services.a]
command = "true"
depends-on = ["b"]
[services.b]
command = "true"
depends-on = ["c"]
[services.c]
command = "true"
depends-on = { a = "started" }
"#,
        &["error: dependency cycle: a -> b -> c -> a (each depends on the next)"],
    );
}

#[test]
fn invalid_toml_and_missing_file() {
    assert_error(
        "[services.a\ncommand = \"true\"\n",
        &["corral.toml:1:", "invalid TOML"],
    );
    let project = Project::new("");
    let (code, _, err) = project.run(&["check", "-f", "nope.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nope.toml: error: cannot read config"),
        "{err}"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let (code, err) = check(
        r#"[services.a]
comand = "x"
[services.b]
command = "true"
stop-signal = 99
[services.c]
command = "true"
depends-on = ["zz"]
"#,
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.lines().filter(|l| l.contains(": error: ")).count(),
        4,
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let project = Project::new("[services.a]\ncommand = \"true\"\n");
    let (code, _, err) = project.run(&["up", "--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = project.run(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = project.run(&["up", "ghost"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown service \"ghost\""), "{err}");
}

#[test]
fn bad_env_file_points_at_its_line() {
    let project = Project::new("[services.a]\ncommand = \"true\"\nenv-file = \"a.env\"\n");
    project.write("a.env", "OK=1\nthis is not an assignment\n");
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("a.env:2:1: error: expected KEY=VALUE"),
        "{err}"
    );
}

/// Sizes are bounded: a huge `replicas` is one clear error, found at once
/// (not thousands of lines, not gigabytes).
#[test]
fn replicas_are_bounded() {
    for n in ["100000", "100000000"] {
        let config = format!("[services.api]\ncommand = [\"true\"]\nreplicas = {n}\nport = 9000\n");
        let started = std::time::Instant::now();
        let (code, err) = check(&config);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("corral.toml:3:12: error: replicas must be at most 1024, found"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        // Generous: the old linear de-duplication took 15 s for 100,000.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    // Ports that would run past 65535 are said once, not once per replica.
    let (code, err) =
        check("[services.api]\ncommand = [\"true\"]\nreplicas = 1000\nport = 65000\n");
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("(port 65000 + 999) would be above 65535"),
        "{err}"
    );
}

/// Values that used to be quietly changed are errors now.
#[test]
fn no_silent_coercions() {
    assert_error(
        r#"[services.a]
command = ["true"]
change-wait = { min = "2s", max = "1s" }
log = { max-size = 0 }
health = { exec = ["true"], retries = 0 }

[services.b]
command = ["true"]
ready = { http = "http://127.0.0.1:1/", status = [200, 70000] }
"#,
        &[
            "corral.toml:3:15: error: change-wait max (1s) is shorter than min (2s)",
            "corral.toml:4:20: error: max-size must be at least 1 byte",
            "corral.toml:5:39: error: retries must be at least 1",
            "corral.toml:9:56: error: an HTTP status code is between 100 and 599, found 70000",
        ],
    );
}

/// `corral check | head` ends quietly, as Unix tools do, without a panic.
#[test]
fn output_into_a_closed_pipe_is_no_panic() {
    let project = Project::new("[services.api]\ncommand = [\"true\"]\nreplicas = 500\n");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' check | head -n 1"))
        .current_dir(project.path())
        .output()
        .expect("run sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// Step 8, item 7: values that were accepted and then misbehaved.
#[test]
fn values_that_cannot_work_are_refused() {
    assert_error(
        r#"[corral]
socket-group = "no-such-group-here"

[services.a]
command = ["true"]
backoff = { initial = "10s", max = "1s" }
ready = { exec = ["true"], interval = "0s" }

[services.b]
command = ["true"]
replicas = 0
health = { exec = ["true"], interval = "0s" }
"#,
        &[
            "corral.toml:2:16: error: socket-group \"no-such-group-here\" does not exist",
            "corral.toml:6:11: error: backoff initial (10s) is longer than max (1s)",
            "corral.toml:7:39: error: interval must be at least 10ms",
            "corral.toml:11:12: error: replicas must be at least 1",
            "corral.toml:12:40: error: interval must be at least 10ms",
        ],
    );
}

/// Binary garbage is an error at the first byte that is not UTF-8.
#[test]
fn a_file_that_is_not_text_says_where() {
    let project = Project::new("");
    std::fs::write(
        project.file("corral.toml"),
        b"[services.a]\ncommand = [\"true\"]\n# caf\xe9\n",
    )
    .expect("write");
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("corral.toml:3:6: error: the file is not UTF-8 text"),
        "{err}"
    );
}

/// A cycle through 100,000 services is found in linear time (the name
/// look-up per dependency was a scan: 73 s for this file).
#[test]
fn a_long_dependency_cycle_is_reported_quickly() {
    let n = 100_000;
    let config: String = (0..n)
        .map(|i| {
            format!(
                "[services.s{i}]\ncommand = [\"true\"]\ndepends-on = [\"s{}\"]\n",
                (i + 1) % n
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let (code, err) = check(&config);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("corral.toml:3:15: error: dependency cycle: s0 -> s1 -> s2"),
        "{}",
        &err[..err.len().min(300)]
    );
    // Generous for a debug build on a loaded machine; the scan took minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn etcd_discovery_settings_are_checked() {
    assert_error(
        "[discovery]\nbackend = \"etcd\"\n[services.a]\ncommand = \"true\"\n",
        &["corral.toml:2:11: error: backend = \"etcd\" needs an etcd table"],
    );
    assert_error(
        "[discovery]\netcd = { endpoints = [\"http://127.0.0.1:2379\"] }\n[services.a]\ncommand = \"true\"\n",
        &["corral.toml:2:8: error: an etcd table is given but the backend is local"],
    );
    assert_error(
        r#"[discovery]
backend = "etcd"
etcd = { endpoints = ["https://etcd:2379", "etcd"], ttl = "100ms", tls = { ca = "ca.pem" } }
[services.a]
command = "true"
"#,
        &[
            "corral.toml:3:44: error: \"etcd\" is not an etcd endpoint: use http://host:port",
            "corral.toml:3:59: error: ttl must be at least 1s",
            "corral.toml:3:74: error: tls: ",
        ],
    );
    assert_error(
        r#"[discovery]
backend = "etcd"
etcd = { endpoints = ["https://etcd:2379"] }
[services.a]
command = "true"
"#,
        &["corral.toml:3:23: error: an https:// endpoint needs a tls table"],
    );
    assert_error(
        r#"[discovery]
backend = "etcd"
etcd = { endpoints = ["127.0.0.1:2379"], username = "corral", password-file = "missing.txt" }
[services.a]
command = "true"
"#,
        &["corral.toml:3:79: error: cannot read"],
    );
    assert_error(
        r#"[discovery]
backend = "etcd"
etcd = { endpoints = ["127.0.0.1:2379"], username = "corral" }
[services.a]
command = "true"
"#,
        &["error: etcd username is given without a password-file"],
    );
    assert_error(
        "[discovery]\nbackend = \"zookeeper\"\n[services.a]\ncommand = \"true\"\n",
        &["corral.toml:2:11: error: unknown discovery backend \"zookeeper\": use \"local\" or \"etcd\""],
    );
}

#[test]
fn the_daemon_refuses_arguments_it_does_not_know_under_either_name() {
    // One executable: `corrald` (a link, or argv[0]) and `corral --daemon`
    // are the daemon.
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("corrald");
    std::os::unix::fs::symlink(BIN, &link).expect("link");
    for (program, first) in [(link.as_path(), None), (Path::new(BIN), Some("--daemon"))] {
        for args in [&["--frobnicate"][..], &["-f"][..]] {
            let out = std::process::Command::new(program)
                .args(first)
                .args(args)
                .output()
                .expect("run the daemon");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.starts_with("corrald: "), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}

#[test]
fn bad_schedules_time_zones_and_fields_that_do_not_fit_a_job() {
    assert_error(
        r#"[services.backup]
command = ["true"]
schedule = "61 * * * *"

[services.report]
command = ["true"]
schedule = "0 3 * * *"
timezone = "Mars/Olympus_Mons"
overlap = "sometimes"

[services.web]
command = ["true"]
overlap = "skip"

[services.nightly]
command = ["true"]
schedule = "@daily"
restart = "always"
ready = { tcp = "127.0.0.1:1" }
"#,
        &[
            "corral.toml:3:12: error: invalid schedule \"61 * * * *\"",
            "corral.toml:8:12: error: unknown time zone \"Mars/Olympus_Mons\"",
            "corral.toml:9:11: error: unknown overlap \"sometimes\": expected one of skip, queue, replace",
            "corral.toml:13:1: error: overlap applies only to a job: service \"web\" has no `schedule`",
            "corral.toml:18:1: error: service \"nightly\" is a job (it has a schedule): restart does not apply",
            "corral.toml:19:1: error: service \"nightly\" is a job (it has a schedule): ready does not apply",
        ],
    );
}

#[test]
fn a_required_variable_names_itself_and_where_it_is_needed() {
    assert_error(
        "[services.api]\ncommand = [\"serve\", \"--key\", \"${API_KEY:?set API_KEY to the key of the payment API}\"]\n",
        &["corral.toml:2:11: error: API_KEY is required: set API_KEY to the key of the payment API"],
    );
    // `?` without the colon: unset is an error, set-but-empty is a value.
    assert_error(
        "[services.api]\ncommand = [\"serve\", \"${REGION?name the region}\"]\n",
        &["corral.toml:2:11: error: REGION is required: name the region"],
    );
}

#[test]
fn a_required_name_nothing_provides_is_an_error_with_local_discovery() {
    assert_error(
        "[services.api]\ncommand = [\"true\"]\nrequires = [\"postgres\"]\n\n[services.db]\ncommand = [\"true\"]\nprovides = [{ name = \"postgress\", port = 5432 }]\n",
        &["corral.toml:1:11: error: service \"api\" requires \"postgres\", which no service in this file provides: it would wait for it forever (discovery is local)"],
    );
    // With etcd another host may provide it: a warning, and the file is valid.
    let project = Project::new(
        "[discovery]\nbackend = \"etcd\"\netcd = { endpoints = [\"http://127.0.0.1:2379\"] }\n\n[services.api]\ncommand = [\"true\"]\nrequires = [\"postgres\"]\n",
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: service \"api\" requires \"postgres\", which no service in this file provides: another host must"), "{err}");
}

#[test]
fn check_warns_about_commands_that_will_not_do_what_they_look_like() {
    let project = Project::new(
        r#"[corral]
stop-grace = "1m"
[services.argv]
command = ["echo", "$HOME"]

[services.string]
command = "make build && ./server"

[services.missing]
command = ["no-such-program-anywhere", "--flag"]

[services.fine]
command = ["sh", "-c", "echo $HOME; ls | wc -l"]
"#,
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 0, "warnings only: {err}");
    for expected in [
        "corral.toml:4:11: warning: $HOME in command is not expanded (no shell runs it): write ${HOME}",
        "corral.toml:7:11: warning: command \"make build && ./server\" has shell syntax (\"&&\") but runs without a shell",
        "corral.toml:10:11: warning: command \"no-such-program-anywhere\" is not found on the service's PATH",
    ] {
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    assert!(
        !err.contains("\"fine\"") && err.lines().count() == 3,
        "{err}"
    );
}

#[test]
fn a_bare_number_for_a_duration_is_seconds_with_a_hint() {
    let project = Project::new("[services.a]\ncommand = [\"true\"]\nstop-timeout = 15\n");
    let (code, plan, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "corral.toml:3:16: warning: a bare number is taken as seconds: write \"15s\" to say so"
        ),
        "{err}"
    );
    assert!(plan.contains("SIGKILL after 15s"), "{plan}");
}

#[test]
fn check_warns_when_the_shutdown_plan_does_not_fit_stop_grace() {
    let project = Project::new(
        r#"[corral]
stop-grace = "5s"

[services.db]
command = ["sleep", "60"]
stop-timeout = "4s"

[services.api]
command = ["sleep", "60"]
stop-timeout = "3s"
depends-on = ["db"]

[services.cron]
command = ["sleep", "60"]
stop-timeout = "1s"
depends-on = ["db"]
"#,
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 0, "a warning only: {err}");
    assert!(
        err.contains("warning: a shutdown may take 7s (stop-timeout along api -> db), more than stop-grace 5s: on SIGTERM corral cuts each stop-timeout to 64% to fit"),
        "{err}"
    );
    // What fits says nothing.
    project.write(
        "corral.toml",
        "[corral]\nstop-grace = \"8s\"\n[services.db]\ncommand = [\"sleep\", \"60\"]\nstop-timeout = \"4s\"\n[services.api]\ncommand = [\"sleep\", \"60\"]\nstop-timeout = \"3s\"\ndepends-on = [\"db\"]\n",
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!((code, err.as_str()), (0, ""));
    project.write(
        "corral.toml",
        "[corral]\nstop-grace = \"0s\"\n[services.a]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("corral.toml:2:14: error: stop-grace must be above zero"),
        "{err}"
    );
}

#[test]
fn forward_signals_takes_only_the_signals_corral_passes_on() {
    assert_error(
        "[services.a]\ncommand = \"true\"\nforward-signals = [\"SIGUSR2\", \"SIGHUP\"]\n",
        &["corral.toml:3:31: error: corral passes on only SIGUSR1, SIGUSR2 and SIGWINCH, not SIGHUP (SIGTERM, SIGINT and SIGQUIT stop everything, SIGHUP reloads)"],
    );
    assert_error(
        "[services.a]\ncommand = \"true\"\nforward-signals = \"SIGUSR1\"\n",
        &["corral.toml:3:19: error: forward-signals must be a list of signal names such as [\"SIGUSR1\"]"],
    );
}

/// Every documented nickname is taken; a schedule no time matches is an
/// error at its place, not a job that silently never runs.
#[test]
fn schedules_that_never_run_are_errors_and_midnight_is_daily() {
    let (code, err) = check("[services.a]\ncommand = [\"true\"]\nschedule = \"@midnight\"\n");
    assert_eq!(code, 0, "{err}");
    for never in ["0 12 31 2 *", "0 12 1 * +"] {
        let (code, err) = check(&format!(
            "[services.a]\ncommand = [\"true\"]\nschedule = \"{never}\"\n"
        ));
        assert_eq!(code, 2, "{never}: {err}");
        assert!(
            err.contains("corral.toml:3:12: error:")
                && (err.contains("never runs") || err.contains("invalid schedule")),
            "{never}: {err}"
        );
    }
}
