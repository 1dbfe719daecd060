//! Bad config: every error at once, each with file:line:col, exit code 2, no panic.

mod common;

use common::*;

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
