//! Jobs in the engine: ticks, overlap, manual runs, stops, failures.

use std::time::Duration;

use super::tests::{depends, spec, Harness};
use super::*;
use crate::config::{Condition, Overlap, RestartPolicy};

fn job(name: &str, overlap: Overlap, run_on_start: bool) -> Spec {
    let mut s = spec(name);
    s.restart = RestartPolicy::Never;
    s.job = Some(JobPlan {
        overlap,
        run_on_start,
    });
    s
}

fn runs(h: &Harness, svc: usize) -> usize {
    h.started().iter().filter(|&&s| s == svc).count()
}

fn tick(h: &mut Harness, svc: usize) {
    h.send(Event::Tick { svc });
}

#[test]
fn a_job_waits_for_its_tick_and_each_tick_runs_it() {
    let mut h = Harness::new(vec![job("backup", Overlap::Skip, false)]);
    h.send(Event::Boot);
    assert_eq!(h.state(0), &State::Scheduled);
    assert_eq!(runs(&h, 0), 0);
    tick(&mut h, 0);
    assert!(matches!(h.state(0), State::Running { .. }));
    h.now += Duration::from_millis(1500);
    h.exit(0, Exit::Code(0));
    assert_eq!(h.state(0), &State::Scheduled);
    let last = h.engine.units()[0]
        .last_run
        .as_deref()
        .copied()
        .expect("a run is recorded");
    assert_eq!(last.exit, Exit::Code(0));
    assert_eq!(last.took, Duration::from_millis(1500));
    tick(&mut h, 0);
    assert_eq!(runs(&h, 0), 2);
    // A failed run is a result: the job stays scheduled, corral runs on.
    h.exit(0, Exit::Code(3));
    assert_eq!(h.state(0), &State::Scheduled);
    assert_eq!(
        h.engine.units()[0].last_run.as_deref().map(|r| r.exit),
        Some(Exit::Code(3))
    );
    assert_eq!(h.exit, None);
    assert!(h
        .reports()
        .iter()
        .all(|(_, r)| !matches!(r, Report::Failed { .. } | Report::GaveUp { .. })));
}

#[test]
fn overlap_skip_queue_and_replace() {
    // skip: a tick during a run is dropped.
    let mut h = Harness::new(vec![job("j", Overlap::Skip, false)]);
    h.send(Event::Boot);
    tick(&mut h, 0);
    tick(&mut h, 0);
    tick(&mut h, 0);
    assert_eq!(runs(&h, 0), 1);
    h.exit(0, Exit::Code(0));
    assert_eq!(h.state(0), &State::Scheduled);
    assert_eq!(runs(&h, 0), 1);

    // queue: ticks during a run coalesce into one run right after it.
    let mut h = Harness::new(vec![job("j", Overlap::Queue, false)]);
    h.send(Event::Boot);
    tick(&mut h, 0);
    tick(&mut h, 0);
    tick(&mut h, 0);
    assert_eq!(runs(&h, 0), 1);
    h.exit(0, Exit::Code(0));
    assert_eq!(runs(&h, 0), 2);
    assert!(matches!(h.state(0), State::Running { .. }));
    h.exit(0, Exit::Code(0));
    assert_eq!(h.state(0), &State::Scheduled);

    // replace: the run is stopped and a new one starts once it is gone.
    let mut h = Harness::new(vec![job("j", Overlap::Replace, false)]);
    h.send(Event::Boot);
    tick(&mut h, 0);
    let first = h.pid(0);
    tick(&mut h, 0);
    assert!(matches!(h.state(0), State::Stopping { .. }));
    assert_eq!(h.signals(), vec![(0, Signal::SIGTERM)]);
    h.exit(0, Exit::Signal(15));
    assert_eq!(runs(&h, 0), 2);
    assert_ne!(h.pid(0), first);
    assert_eq!(
        h.engine.units()[0].last_run.as_deref().map(|r| r.exit),
        Some(Exit::Signal(15))
    );
}

#[test]
fn a_manual_start_runs_now_and_honours_overlap() {
    let mut h = Harness::new(vec![job("j", Overlap::Skip, false)]);
    h.send(Event::Boot);
    h.send(Event::StartRequested { svc: 0 });
    assert_eq!(runs(&h, 0), 1);
    // A second start while it runs is skipped, as a tick would be.
    h.send(Event::StartRequested { svc: 0 });
    assert_eq!(runs(&h, 0), 1);
    assert!(h.reports().contains(&(
        Some(0),
        Report::RunSkipped {
            manual: true,
            queued: false
        }
    )));
    // A restart replaces the run.
    h.send(Event::RestartRequested { svc: 0 });
    h.exit(0, Exit::Signal(15));
    assert_eq!(runs(&h, 0), 2);
    h.exit(0, Exit::Code(0));
    assert_eq!(h.state(0), &State::Scheduled);
}

#[test]
fn stop_ends_the_run_and_holds_the_schedule_until_start() {
    let mut h = Harness::new(vec![job("j", Overlap::Skip, false)]);
    h.send(Event::Boot);
    tick(&mut h, 0);
    h.send(Event::StopRequested { svc: 0 });
    assert!(matches!(h.state(0), State::Stopping { .. }));
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.state(0), &State::Stopped);
    tick(&mut h, 0);
    assert_eq!(runs(&h, 0), 1, "a stopped job does not tick");
    assert_eq!(h.exit, None, "a stopped job keeps corral up");
    h.send(Event::StartRequested { svc: 0 });
    assert_eq!(runs(&h, 0), 2, "start runs it now");
    h.exit(0, Exit::Code(0));
    assert_eq!(h.state(0), &State::Scheduled);
    tick(&mut h, 0);
    assert_eq!(runs(&h, 0), 3, "and its schedule is back");
}

#[test]
fn run_on_start_waits_for_dependencies_and_gates_dependents() {
    let mut h = Harness::new(vec![
        spec("db"),
        depends(job("seed", Overlap::Skip, true), &[(0, Condition::Started)]),
        depends(spec("app"), &[(1, Condition::Completed)]),
    ]);
    h.send(Event::Boot);
    // db starts, then the job's first run, then what waits for it.
    assert_eq!(h.started(), vec![0, 1]);
    h.exit(1, Exit::Code(0));
    assert_eq!(h.started(), vec![0, 1, 2]);
    assert_eq!(h.state(1), &State::Scheduled);
}

#[test]
fn a_tick_before_dependencies_are_met_runs_once_they_are() {
    let mut ready = spec("db");
    ready.ready = Some(Box::new(ReadyPlan {
        active: true,
        initial_delay: Duration::ZERO,
        interval: Duration::from_secs(1),
        start_timeout: Duration::from_secs(60),
    }));
    let mut h = Harness::new(vec![
        ready,
        depends(
            job("backup", Overlap::Skip, false),
            &[(0, Condition::Ready)],
        ),
    ]);
    h.send(Event::Boot);
    tick(&mut h, 1);
    assert_eq!(h.state(1), &State::Waiting);
    let epoch = h.engine.units()[0].epoch;
    h.send(Event::ProbeResult {
        svc: 0,
        epoch,
        role: ProbeRole::Ready,
        result: Ok(()),
    });
    assert_eq!(h.started(), vec![0, 1]);
}

#[test]
fn no_tick_runs_a_job_before_boot_and_shutdown_stops_a_run() {
    let mut h = Harness::new(vec![spec("web"), job("j", Overlap::Queue, false)]);
    // Break glass: no boot, so ticks do nothing.
    tick(&mut h, 1);
    assert_eq!(runs(&h, 1), 0);
    h.send(Event::Boot);
    tick(&mut h, 1);
    tick(&mut h, 1);
    h.send(Event::Shutdown {
        code: 0,
        reason: "test",
        within: None,
    });
    h.exit(0, Exit::Signal(15));
    assert!(matches!(h.state(1), State::Stopping { .. }));
    h.exit(1, Exit::Signal(15));
    // The queued run does not start during shutdown.
    assert_eq!(runs(&h, 1), 1);
    assert_eq!(h.state(1), &State::Stopped);
    assert_eq!(h.exit, Some(0));
}

#[test]
fn only_jobs_keep_corral_up() {
    let mut h = Harness::new(vec![job("j", Overlap::Skip, true)]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(1));
    assert_eq!(h.state(0), &State::Scheduled);
    assert_eq!(h.exit, None);
}

#[test]
fn a_stopped_job_forgets_the_run_it_had_queued() {
    let mut h = Harness::new(vec![job("backup", Overlap::Queue, false)]);
    h.send(Event::Boot);
    tick(&mut h, 0);
    tick(&mut h, 0);
    assert!(h.engine.units()[0].due, "a run is queued");
    h.send(Event::StopRequested { svc: 0 });
    assert!(!h.engine.units()[0].due, "still queued after stop");
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.state(0), &State::Stopped);
    assert_eq!(runs(&h, 0), 1);
}
