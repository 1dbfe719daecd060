//! What the operator asks for is never lost: requests that arrive while a
//! process is still stopping, reloads in mid-stop, and discovery's change
//! actions all end where the operator (or the file) said.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;

/// A service that traps TERM and takes `secs` to stop: requests pile up while
/// it is `stopping`.
fn slow(name: &str, secs: &str) -> String {
    format!(
        r#"
[services.{name}]
command = ["sh", "-c", "trap 'sleep {secs}; exit 0' TERM; echo {name} up; while :; do sleep 0.1; done"]
stop-timeout = "10s"
"#
    )
}

fn post(project: &Project, path: &str) -> (u16, String) {
    raw_http(&socket_of(project), "POST", path, b"")
}

#[test]
fn a_start_while_stopping_is_not_lost() {
    let project = Project::new(&slow("slow", "1"));
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("slow up", SECS10);
    let (status, _) = post(&project, "/v1/services/slow/stop?wait=false");
    assert_eq!(status, 200);
    assert_eq!(state_of(&project, "slow"), "stopping");
    // The start arrives while the trap still sleeps; it waits for the outcome.
    let (code, out, err) = project.run(&["start", "slow"]);
    assert_eq!((code, out.trim()), (0, "slow is running"), "{err}");
    daemon.wait_for_nth("slow up", 2, SECS10);
    assert_eq!(state_of(&project, "slow"), "running");
}

#[test]
fn a_restart_while_stopping_is_not_lost() {
    let project = Project::new(&slow("slow", "1"));
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("slow up", SECS10);
    let (status, _) = post(&project, "/v1/services/slow/stop?wait=false");
    assert_eq!(status, 200);
    let (code, out, err) = project.run(&["restart", "slow"]);
    assert_eq!((code, out.trim()), (0, "slow is running"), "{err}");
    daemon.wait_for_nth("slow up", 2, SECS10);
}

#[test]
fn a_stop_after_a_start_request_wins() {
    let project = Project::new(&slow("slow", "1"));
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("slow up", SECS10);
    post(&project, "/v1/services/slow/stop?wait=false");
    post(&project, "/v1/services/slow/start?wait=false");
    let (code, out, _) = project.run(&["stop", "slow"]);
    assert_eq!((code, out.trim()), (0, "slow is stopped"));
    // The last word was stop. Wanted up, it would have gone from stopping
    // straight to waiting and launching; `stopped` means it stays down.
    assert_eq!(state_of(&project, "slow"), "stopped");
    assert_eq!(
        daemon
            .lines()
            .iter()
            .filter(|l| l.contains("slow up"))
            .count(),
        1
    );
}

/// Reload to a file without `slow` (it starts stopping), then back before
/// it has stopped: it runs again, under the definition of the last file.
#[test]
fn a_service_removed_and_added_back_while_stopping_runs_again() {
    let with = slow("slow", "2") + &slow("other", "0");
    let without = slow("other", "0");
    let project = Project::new(&with);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("slow up", SECS10);
    project.write("corral.toml", &without);
    let (code, out, _) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(state_of(&project, "other"), "running");
    project.write("corral.toml", &with);
    let (code, out, _) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("slow"), "{out}");
    daemon.wait_for_nth("slow up", 2, SECS10);
    assert!(eventually(SECS5, || state_of(&project, "slow") == "running"));
}

/// The same with a dependent: the daemon must not decide that every service
/// has ended (and exit) while the file's services are on their way back.
#[test]
fn reloading_away_and_back_keeps_corral_and_the_services_up() {
    let with = slow("slow", "1")
        + r#"
[services.dep]
command = ["sh", "-c", "echo dep up; exec sleep 1000"]
depends-on = { slow = "started" }
"#;
    let only_other = slow("other", "0");
    let project = Project::new(&with);
    let mut daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("dep up", SECS10);
    project.write("corral.toml", &only_other);
    assert_eq!(project.run(&["reload"]).0, 0);
    project.write("corral.toml", &with);
    assert_eq!(project.run(&["reload"]).0, 0);
    daemon.wait_for_nth("slow up", 2, SECS10);
    daemon.wait_for_nth("dep up", 2, SECS10);
    assert!(daemon.child.try_wait().expect("try_wait").is_none());
    assert!(daemon.position("every service has ended").is_none());
    assert_eq!(daemon.stop(), 0);
}

/// A provider goes away; during the dependent's change-wait an operator stops
/// the dependent. The debounced restart must not bring it back.
#[test]
fn an_operator_stop_outlasts_a_pending_change_restart() {
    let port = free_port();
    let config = format!(
        r#"
[services.db]
command = ["sh", "-c", "echo db up; exec sleep 1000"]
provides = [{{ name = "db", port = {port} }}]

[services.app]
command = ["sh", "-c", "echo app up with $DB_ADDR; exec sleep 1000"]
requires = ["db"]
on-change = "restart"
change-wait = {{ min = "700ms", max = "1s" }}
"#
    );
    let project = Project::new(&config);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for("app up with", SECS10);
    let (status, _) = post(&project, "/v1/services/db/stop?wait=false");
    assert_eq!(status, 200);
    let (code, out, _) = project.run(&["stop", "app"]);
    assert_eq!((code, out.trim()), (0, "app is stopped"));
    // Longer than change-wait's max plus its splay.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(state_of(&project, "app"), "stopped");
    assert_eq!(
        daemon
            .lines()
            .iter()
            .filter(|l| l.contains("app up"))
            .count(),
        1
    );
}
