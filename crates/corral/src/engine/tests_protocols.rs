//! The protocols in the engine: start-first updates and what a service
//! says on its notify socket (READY=1 comes as a readiness probe's answer).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::tests::{spec, Harness};
use super::*;

/// A service that gets ready by a passive probe (READY=1), updated start-first.
fn server(name: &str) -> Spec {
    let mut s = spec(name);
    s.start_first = true;
    s.provides = true;
    s.ready = Some(Box::new(ReadyPlan {
        active: false,
        initial_delay: Duration::ZERO,
        interval: Duration::from_millis(100),
        start_timeout: Duration::from_secs(2),
    }));
    s
}

fn ready(h: &mut Harness, svc: usize) {
    let epoch = h.engine.units()[svc].epoch;
    h.send(Event::ProbeResult {
        svc,
        epoch,
        role: ProbeRole::Ready,
        result: Ok(()),
    });
}

fn retired(h: &Harness) -> Vec<(Pid, Signal)> {
    h.effects
        .iter()
        .filter_map(|e| match *e {
            Effect::Retire { pid, signal, .. } => Some((pid, signal)),
            _ => None,
        })
        .collect()
}

/// Booted and ready: returns the pid.
fn running(h: &mut Harness) -> Pid {
    h.send(Event::Boot);
    ready(h, 0);
    assert!(matches!(h.state(0), State::Running { .. }));
    h.pid(0)
}

#[test]
fn start_first_starts_the_new_process_and_stops_the_old_once_it_is_ready() {
    let mut h = Harness::new(vec![server("web")]);
    let old = running(&mut h);
    h.send(Event::RestartRequested { svc: 0 });
    // The new one runs beside the old one, which nothing stopped.
    let new = h.pid(0);
    assert_ne!(new, old);
    assert!(matches!(h.state(0), State::Starting { .. }));
    assert!(h.signals().is_empty(), "{:?}", h.signals());
    assert!(retired(&h).is_empty());
    ready(&mut h, 0);
    assert_eq!(retired(&h), vec![(old, Signal::SIGTERM)]);
    assert!(matches!(h.state(0), State::Running { pid, .. } if *pid == new));
    // Its endpoint never went away: the instance's stays as it is.
    assert!(!h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Withdraw { .. })));
    // The old one's exit is not the service's.
    h.send(Event::Reaped {
        svc: 0,
        pid: old,
        exit: Exit::Signal(15),
    });
    assert!(matches!(h.state(0), State::Running { pid, .. } if *pid == new));
    assert_eq!(h.engine.units()[0].restarts, 0);
}

#[test]
fn a_new_process_that_never_gets_ready_is_stopped_and_the_old_one_kept() {
    let mut h = Harness::new(vec![server("web")]);
    let old = running(&mut h);
    h.send(Event::RestartRequested { svc: 0 });
    let new = h.pid(0);
    // start-timeout: the new one is stopped...
    while !matches!(h.state(0), State::Stopping { .. }) {
        h.fire_next_timer().expect("a start-timeout");
    }
    assert_eq!(h.signals(), vec![(0, Signal::SIGTERM)]);
    h.send(Event::Reaped {
        svc: 0,
        pid: new,
        exit: Exit::Signal(15),
    });
    // ...and the old one goes on as the service's process.
    assert!(matches!(h.state(0), State::Running { pid, .. } if *pid == old));
    assert!(h
        .reports()
        .iter()
        .any(|(_, r)| matches!(r, Report::UpdateFailed { old: o, .. } if *o == old)));
    // What the new one left is killed, not the old one.
    assert_eq!(retired(&h), vec![(new, Signal::SIGKILL)]);
}

#[test]
fn a_new_process_that_crashes_leaves_the_old_one_serving() {
    let mut h = Harness::new(vec![server("web")]);
    let old = running(&mut h);
    h.send(Event::RestartRequested { svc: 0 });
    h.exit(0, Exit::Code(1));
    assert!(matches!(h.state(0), State::Running { pid, .. } if *pid == old));
}

#[test]
fn a_stop_during_an_update_stops_both_processes() {
    let mut h = Harness::new(vec![server("web")]);
    let old = running(&mut h);
    h.send(Event::RestartRequested { svc: 0 });
    let new = h.pid(0);
    h.send(Event::StopRequested { svc: 0 });
    assert_eq!(retired(&h), vec![(old, Signal::SIGTERM)]);
    assert!(matches!(h.state(0), State::Stopping { pid, .. } if *pid == new));
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.state(0), &State::Stopped);
}

#[test]
fn replicas_updated_start_first_roll_one_at_a_time() {
    let mut h = Harness::new(vec![server("web.0"), server("web.1")]);
    h.send(Event::Boot);
    ready(&mut h, 0);
    ready(&mut h, 1);
    let (old0, old1) = (h.pid(0), h.pid(1));
    h.send(Event::RestartRequested { svc: 0 });
    h.send(Event::RestartRequested { svc: 1 });
    assert_ne!(h.pid(0), old0);
    assert_eq!(h.pid(1), old1, "the second waits for the first");
    ready(&mut h, 0);
    assert_ne!(h.pid(1), old1, "then its turn comes");
    ready(&mut h, 1);
    assert_eq!(
        retired(&h),
        vec![(old0, Signal::SIGTERM), (old1, Signal::SIGTERM)]
    );
}

#[test]
fn a_missed_watchdog_sends_its_signal_and_restarts_as_a_failure() {
    let mut h = Harness::new(vec![server("web")]);
    let pid = running(&mut h);
    h.send(Event::Notified {
        svc: 0,
        pid,
        what: Notified::WatchdogMissed,
    });
    assert_eq!(h.signals(), vec![(0, Signal::SIGABRT)]);
    h.exit(0, Exit::Signal(6));
    assert!(matches!(h.state(0), State::Backoff { .. }));
}

#[test]
fn reloading_is_not_ready_until_ready_again() {
    let mut h = Harness::new(vec![server("web")]);
    let pid = running(&mut h);
    h.send(Event::Notified {
        svc: 0,
        pid,
        what: Notified::Reloading,
    });
    assert!(matches!(h.state(0), State::Starting { .. }));
    ready(&mut h, 0);
    assert!(matches!(h.state(0), State::Running { pid: p, .. } if *p == pid));
}

#[test]
fn mainpid_is_the_process_followed_and_extend_timeout_moves_the_deadline() {
    let mut h = Harness::new(vec![server("web")]);
    h.send(Event::Boot);
    let spawned = h.pid(0);
    h.send(Event::Notified {
        svc: 0,
        pid: spawned,
        what: Notified::MainPid(4242),
    });
    assert_eq!(h.pid(0), 4242);
    // The first process's exit is no longer the service's.
    h.send(Event::Reaped {
        svc: 0,
        pid: spawned,
        exit: Exit::Code(0),
    });
    assert!(matches!(h.state(0), State::Starting { pid: 4242, .. }));
    h.send(Event::Notified {
        svc: 0,
        pid: 4242,
        what: Notified::ExtendTimeout(Duration::from_secs(10)),
    });
    // The 2 s start-timeout fires, but the deadline moved by 10 s.
    h.fire_next_timer();
    assert!(matches!(h.state(0), State::Starting { .. }));
    h.fire_next_timer();
    assert!(matches!(h.state(0), State::Stopping { .. }));
}
