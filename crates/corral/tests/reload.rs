//! Reload keeps what `up` was asked for: the selection of services, and
//! the operator's stops.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

const THREE: &str = r#"
[services.db]
command = ["sh", "-c", "echo db up; exec sleep 1000"]

[services.api]
command = ["sh", "-c", "echo api up; exec sleep 1000"]
depends-on = { db = "started" }

[services.extra]
command = ["sh", "-c", "echo extra up; exec sleep 1000"]
"#;

fn names(project: &Project) -> Vec<String> {
    get_json(project, "/v1/services")["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn reload_keeps_the_selection_given_to_up() {
    let project = Project::new(THREE);
    let (code, out, err) = project.run(&["up", "-d", "api"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(names(&project), ["db", "api"]);
    let (code, out, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(names(&project), ["db", "api"]);
    // A service added to the file is not started either: a selection was given.
    project.write(
        "corral.toml",
        &(THREE.to_string() + "\n[services.later]\ncommand = [\"sleep\", \"1000\"]\n"),
    );
    let (code, out, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(names(&project), ["db", "api"]);
    let log = project.read(".corral/corral.log");
    assert!(!log.contains("extra up"), "{log}");
    let (code, _, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn without_a_selection_reload_starts_added_services() {
    let project = Project::new(THREE);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("extra up", SECS10);
    project.write(
        "corral.toml",
        &(THREE.to_string() + "\n[services.later]\ncommand = [\"sh\", \"-c\", \"echo later up; exec sleep 1000\"]\n"),
    );
    assert_eq!(project.run(&["reload"]).0, 0);
    daemon.wait_for("later up", SECS10);
}

#[test]
fn reload_keeps_an_operator_stop() {
    let project = Project::new(THREE);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("extra up", SECS10);
    let (code, out, _) = project.run(&["stop", "extra"]);
    assert_eq!((code, out.trim()), (0, "extra is stopped"));
    // extra's definition changes: it stays down until an operator starts it.
    project.write("corral.toml", &THREE.replace("extra up", "extra v2 up"));
    let (code, out, _) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = project.run(&["ps"]);
    assert_eq!(code, 0);
    assert!(has_row(&out, "extra", "stopped"), "{out}");
    let (code, out, _) = project.run(&["start", "extra"]);
    assert_eq!((code, out.trim()), (0, "extra is running"));
    daemon.wait_for("extra v2 up", SECS10);
}
