//! Break glass: the configured variable freezes start-up.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

const CONFIG: &str = r#"
[corral]
break-glass = "BREAK_GLASS"

[services.app]
command = ["sh", "-c", "touch started; sleep 60"]
"#;

#[test]
fn with_the_variable_set_nothing_starts_and_sigterm_ends_it() {
    let project = Project::new(CONFIG);
    let mut corral = project.up_with(&[("BREAK_GLASS", "1")], &[]);
    corral.wait_for(
        "BREAK GLASS: BREAK_GLASS is set, so no service is started",
        SECS5,
    );
    // The loop answers requests only after the boot it would have queued
    // first: a service still waiting now was never started.
    wait_for_socket(&project);
    assert_eq!(state_of(&project, "app"), "waiting");
    assert!(
        matches!(corral.child.try_wait(), Ok(None)),
        "corral must stay up"
    );
    assert!(!project.file("started").exists());
    assert_eq!(corral.stop(), 0);
}

#[test]
fn without_the_variable_services_start() {
    let project = Project::new(CONFIG);
    let mut corral = project.up();
    assert!(eventually(SECS5, || project.file("started").exists()));
    assert_eq!(corral.stop(), 0);
}

/// As in Ground Control: `BREAK_GLASS` works with no config at all, and
/// `break-glass = ""` turns it off.
#[test]
fn break_glass_is_the_default_variable_and_can_be_turned_off() {
    let plain =
        Project::new("[services.app]\ncommand = [\"sh\", \"-c\", \"touch started; sleep 60\"]\n");
    let mut corral = plain.up_with(&[("BREAK_GLASS", "1")], &[]);
    corral.wait_for(
        "BREAK GLASS: BREAK_GLASS is set, so no service is started",
        SECS5,
    );
    wait_for_socket(&plain);
    assert!(!plain.file("started").exists());
    assert_eq!(corral.stop(), 0);

    let off = Project::new(
        "[corral]\nbreak-glass = \"\"\n[services.app]\ncommand = [\"sh\", \"-c\", \"touch started; sleep 60\"]\n",
    );
    let mut corral = off.up_with(&[("BREAK_GLASS", "1")], &[]);
    assert!(eventually(SECS5, || off.file("started").exists()));
    assert_eq!(corral.stop(), 0);
}

#[test]
fn in_break_glass_no_pre_step_nor_job_runs_and_the_api_starts_a_service_by_hand() {
    let project = Project::new(
        r#"
[services.app]
pre = ["sh", "-c", "touch pre-ran"]
command = ["sh", "-c", "touch started; exec sleep 60"]

[services.every-second]
command = ["sh", "-c", "touch job-ran"]
schedule = "* * * * * *"
run-on-start = true
"#,
    );
    let mut corral = project.up_with(&[("BREAK_GLASS", "1")], &[]);
    corral.wait_for("BREAK GLASS: BREAK_GLASS is set", SECS10);
    wait_for_socket(&project);
    // Two ticks' worth of time: no job run, no pre step, no service.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        !project.file("job-ran").exists(),
        "a job ran in break glass"
    );
    assert!(
        !project.file("pre-ran").exists(),
        "a pre step ran in break glass"
    );
    assert!(!project.file("started").exists());
    let job = &get_json(&project, "/v1/services/every-second")["job"];
    assert!(
        job["next_run"].is_null(),
        "no tick is due in break glass: {job}"
    );
    // The operator starts the service by hand, through the API.
    let (code, out, err) = project.run(&["start", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(eventually(SECS5, || project.file("started").exists()));
    assert_eq!(state_of(&project, "app"), "running");
    assert!(!project.file("job-ran").exists());
    assert_eq!(corral.stop(), 0);
}
