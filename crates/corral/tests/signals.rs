//! Signals corral passes on: SIGUSR1, SIGUSR2 and SIGWINCH go only where
//! `forward-signals` (or, without it, the one essential service) says;
//! signals corral does not act on are said and change nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

/// A service that says each SIGUSR1/SIGUSR2/SIGWINCH it gets and goes on.
fn listener(tag: &str) -> String {
    format!(
        r#"["sh", "-c", "trap 'echo {tag} got USR1' USR1; trap 'echo {tag} got USR2' USR2; trap 'echo {tag} got WINCH' WINCH; echo {tag} listening; while true; do sleep 0.1; done"]"#
    )
}

#[test]
fn a_signal_goes_only_to_the_services_that_ask_for_it() {
    let project = Project::new(&format!(
        r#"[corral]
parallel = true

[services.wants]
command = {}
forward-signals = ["SIGUSR1", "WINCH"]

[services.plain]
command = ["sleep", "1000"]

[services.other]
command = {}
"#,
        listener("wants"),
        listener("other")
    ));
    let corral = project.up();
    corral.wait_for_output("wants", "wants listening", SECS10);
    corral.wait_for_output("other", "other listening", SECS10);
    let plain = corral.started_pid("plain", SECS5);
    corral.signal(libc::SIGUSR1);
    corral.wait_for_output("wants", "wants got USR1", SECS10);
    corral.wait_for("SIGUSR1 received: passed on to wants", SECS5);
    corral.signal(libc::SIGWINCH);
    corral.wait_for_output("wants", "wants got WINCH", SECS10);
    // SIGUSR2: nobody asked for it, no service is essential: ignored, said.
    corral.signal(libc::SIGUSR2);
    corral.wait_for(
        "SIGUSR2 received: no running service takes it (forward-signals); ignored",
        SECS5,
    );
    // corral itself survives signals it does not act on.
    corral.signal(libc::SIGALRM);
    corral.wait_for(
        "SIGALRM received: corral does not act on it; ignored",
        SECS5,
    );
    assert!(
        alive(plain),
        "the plain service got a signal it did not ask for"
    );
    assert_eq!(state_of(&project, "plain"), "running");
    let lines = corral.lines().join("\n");
    assert!(!lines.contains("other got"), "{lines}");
    assert!(!lines.contains("exited"), "{lines}");
}

#[test]
fn without_forward_signals_the_one_essential_service_gets_them() {
    let project = Project::new(&format!(
        r#"[corral]
parallel = true

[services.app]
command = {}
essential = true

[services.sidecar]
command = {}
"#,
        listener("app"),
        listener("sidecar")
    ));
    let corral = project.up();
    corral.wait_for_output("app", "app listening", SECS10);
    corral.wait_for_output("sidecar", "sidecar listening", SECS10);
    corral.signal(libc::SIGUSR2);
    corral.wait_for_output("app", "app got USR2", SECS10);
    corral.wait_for("SIGUSR2 received: passed on to app", SECS5);
    assert!(!corral.lines().join("\n").contains("sidecar got"));
}
