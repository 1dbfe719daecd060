//! Procfile mode: a Procfile runs as foreman runs it, and `check` turns it
//! into a corral.toml.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

const PROCFILE: &str = r#"# three process types
web: echo "web port=$PORT greeting=$GREETING shell=$FROM_SHELL"; exec sleep 1000
worker: echo "worker port=$PORT greeting=$GREETING"; exec sleep 1000

clock: echo "clock port=${PORT} greeting=${GREETING}"; exec sleep 1000
"#;

/// A project with a Procfile and a .env, and no corral.toml.
fn procfile_project() -> Project {
    let project = Project::new("");
    std::fs::remove_file(project.file("corral.toml")).unwrap();
    project.write("Procfile", PROCFILE);
    project.write(".env", "GREETING=hello\n");
    project
}

#[test]
fn up_in_a_directory_with_a_procfile_runs_each_type_with_its_port_and_the_env_file() {
    let project = procfile_project();
    let mut corral = project.up_with(&[("FROM_SHELL", "yes")], &[]);
    corral.wait_for_output("web", "web port=5000 greeting=hello shell=yes", SECS10);
    corral.wait_for_output("worker", "worker port=5100 greeting=hello", SECS10);
    corral.wait_for_output("clock", "clock port=5200 greeting=hello", SECS10);
    // The daemon is found from the same directory, no -f needed.
    let (code, ps, err) = project.run(&["ps"]);
    assert_eq!(code, 0, "{err}");
    for name in ["web", "worker", "clock"] {
        assert!(has_row(&ps, name, "running"), "{ps}");
    }
    assert_eq!(corral.stop(), 0);
}

#[test]
fn formation_port_and_env_options_as_foreman_takes_them() {
    let project = procfile_project();
    project.write("other.env", "GREETING=bonjour\n");
    let mut corral = project.up_with(
        &[],
        &[
            "-f",
            "Procfile",
            "--formation",
            "web=2,worker=1,clock=0",
            "-p",
            "6000",
            "-e",
            "other.env",
        ],
    );
    corral.wait_for_output("web.0", "web port=6000 greeting=bonjour", SECS10);
    corral.wait_for_output("web.1", "web port=6001 greeting=bonjour", SECS10);
    corral.wait_for_output("worker", "worker port=6100 greeting=bonjour", SECS10);
    let services = get_json(&project, "/v1/services");
    let names: Vec<&str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["web.0", "web.1", "worker"], "clock=0 leaves it out");
    // A reload reads the Procfile the same way (same formation and port).
    let (code, out, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "unchanged: web.0, web.1, worker");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn check_prints_a_corral_toml_that_corral_accepts() {
    let project = procfile_project();
    let (code, toml, err) = project.run(&["check", "-f", "Procfile", "--formation", "web=2"]);
    assert_eq!(code, 0, "{err}");
    assert!(toml.contains("[services.web]"), "{toml}");
    assert!(toml.contains("port = 5100"), "{toml}");
    assert!(toml.contains("replicas = 2"), "{toml}");
    assert!(toml.contains("env-file = \".env\""), "{toml}");
    // Graduating: the printed file is a valid corral.toml with the same plan.
    project.write("corral.toml", &toml);
    let (code, plan, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("ok, 4 service(s)"), "{plan}");
    let mut corral = project.up_with(&[("FROM_SHELL", "still")], &[]);
    corral.wait_for_output("web.1", "web port=5001 greeting=hello shell=still", SECS10);
    corral.wait_for_output("clock", "clock port=5200 greeting=hello", SECS10);
    assert_eq!(corral.stop(), 0);
}

#[test]
fn bad_procfiles_and_options_are_clear_errors() {
    let project = procfile_project();
    // As foreman and honcho: a line that is not a process is passed over.
    project.write("Procfile", "web: run\nthis is not a process line\n");
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Procfile:2:1: warning: skipped: not a process"),
        "{err}"
    );
    // What the generated text cannot do is reported at the Procfile's line.
    project.write("Procfile", "# comment\nweb: run\n");
    let (code, _, err) = project.run(&["check", "-p", "65500", "--formation", "web=100"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("Procfile:2:1: error: service \"web\": the port of replica 99"),
        "{err}"
    );
    project.write("Procfile", PROCFILE);
    let (code, _, err) = project.run(&["up", "--formation", "wbe=2"]);
    assert_eq!(code, 2);
    assert!(err.contains("the formation names \"wbe\""), "{err}");
    let (code, _, err) = project.run(&["up", "-e", "missing.env"]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.env: not found"), "{err}");
    // Procfile options make no sense for a corral.toml.
    project.write("corral.toml", "[services.a]\ncommand = [\"true\"]\n");
    let (code, _, err) = project.run(&["up", "-p", "6000"]);
    assert_eq!(code, 2);
    assert!(err.contains("apply to a Procfile"), "{err}");
}

/// PORT in `.env` is the base, as foreman and honcho take it, and each
/// process still gets its own PORT (not the file's).
#[test]
fn port_in_dot_env_sets_the_base() {
    let project = procfile_project();
    project.write(".env", "GREETING=hello\nPORT=7000\n");
    let mut corral = project.up_with(&[("PORT", "9000")], &["--formation", "web=2"]);
    corral.wait_for_output("web.1", "web port=7001 greeting=hello", SECS10);
    corral.wait_for_output("worker", "worker port=7100 greeting=hello", SECS10);
    assert_eq!(corral.stop(), 0);
}
