//! Engine transitions, tested without any process.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::*;
use crate::config::{Backoff, Condition, RestartPolicy};

pub(super) fn spec(name: &str) -> Spec {
    Spec {
        name: name.into(),
        oneshot: false,
        has_pre: false,
        has_post: false,
        restart: RestartPolicy::OnFailure,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(10),
        },
        max_restarts: None,
        essential: false,
        stop_signal: Signal::SIGTERM,
        stop_timeout: Duration::from_secs(5),
        depends_on: vec![],
        ready: None,
        health: None,
        provides: false,
        require_timeout: Duration::from_secs(60),
        group: name.split('.').next().unwrap_or(name).into(),
        change_wait: (Duration::from_millis(100), Duration::from_secs(1)),
        job: None,
        watchdog_signal: Signal::SIGABRT,
        start_first: false,
    }
}

/// Drives an engine like the runtime does: every Spawn is answered with a fresh pid.
pub(super) struct Harness {
    pub(super) engine: Engine,
    pub(super) now: Instant,
    next_pid: Pid,
    /// Every effect, in the order the engine asked for them.
    pub(super) effects: Vec<Effect>,
    /// (svc, step, pid) of every spawn, in order.
    pub(super) spawns: Vec<(usize, Step, Pid)>,
    pub(super) timers: Vec<(Instant, Timer)>,
    pub(super) exit: Option<i32>,
}

impl Harness {
    pub(super) fn new(specs: Vec<Spec>) -> Harness {
        let edges: Vec<Vec<usize>> = specs
            .iter()
            .map(|s| s.depends_on.iter().map(|d| d.service).collect())
            .collect();
        let order = crate::config::topological_order(&edges);
        Harness {
            engine: Engine::new(specs, order, Duration::from_secs(30)),
            now: Instant::now(),
            next_pid: 100,
            effects: vec![],
            spawns: vec![],
            timers: vec![],
            exit: None,
        }
    }

    pub(super) fn send(&mut self, event: Event) {
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(ev) = queue.pop_front() {
            for effect in self.engine.handle(ev, self.now) {
                match &effect {
                    &Effect::Spawn { svc, step } => {
                        self.next_pid += 1;
                        let pid = self.next_pid;
                        self.spawns.push((svc, step, pid));
                        queue.push_back(Event::Spawned { svc, pid });
                    }
                    &Effect::ArmTimer { at, timer } => self.timers.push((at, timer)),
                    &Effect::Exit { code } => self.exit = Some(code),
                    Effect::SignalGroup { .. }
                    | Effect::Retire { .. }
                    | Effect::RunProbe { .. }
                    | Effect::Register { .. }
                    | Effect::Withdraw { .. }
                    | Effect::ApplyChange { .. }
                    | Effect::Report { .. } => {}
                }
                self.effects.push(effect);
            }
        }
    }

    /// Signals sent, in order (SIGCONT, which follows every stop signal, left out).
    pub(super) fn signals(&self) -> Vec<(usize, Signal)> {
        self.effects
            .iter()
            .filter_map(|e| match *e {
                Effect::SignalGroup { svc, signal, .. } if signal != Signal::SIGCONT => {
                    Some((svc, signal))
                }
                _ => None,
            })
            .collect()
    }

    fn probes(&self) -> Vec<(usize, ProbeRole, u64)> {
        self.effects
            .iter()
            .filter_map(|e| match *e {
                Effect::RunProbe { svc, role, epoch } => Some((svc, role, epoch)),
                _ => None,
            })
            .collect()
    }

    /// (svc, registered) for every Register (true) and Withdraw (false).
    fn published(&self) -> Vec<(usize, bool)> {
        self.effects
            .iter()
            .filter_map(|e| match *e {
                Effect::Register { svc } => Some((svc, true)),
                Effect::Withdraw { svc } => Some((svc, false)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn reports(&self) -> Vec<(Option<usize>, Report)> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Report { svc, report } => Some((*svc, report.clone())),
                _ => None,
            })
            .collect()
    }

    pub(super) fn pid(&self, svc: usize) -> Pid {
        self.engine.units()[svc].state.pid().unwrap_or(-1)
    }

    pub(super) fn state(&self, svc: usize) -> &State {
        &self.engine.units()[svc].state
    }

    pub(super) fn exit(&mut self, svc: usize, exit: Exit) {
        let pid = self.pid(svc);
        self.send(Event::Reaped { svc, pid, exit });
    }

    /// Advances the clock to the earliest timer and fires it.
    pub(super) fn fire_next_timer(&mut self) -> Option<Timer> {
        self.timers.sort_by_key(|(at, _)| *at);
        if self.timers.is_empty() {
            return None;
        }
        let (at, timer) = self.timers.remove(0);
        self.now = self.now.max(at);
        self.send(Event::TimerFired(timer));
        Some(timer)
    }

    pub(super) fn started(&self) -> Vec<usize> {
        self.spawns
            .iter()
            .filter(|(_, step, _)| *step == Step::Main)
            .map(|(svc, _, _)| *svc)
            .collect()
    }
}

pub(super) fn depends(mut s: Spec, on: &[(usize, Condition)]) -> Spec {
    s.depends_on = on
        .iter()
        .map(|&(service, condition)| Edge {
            service,
            condition,
            restart: false,
            explicit: true,
        })
        .collect();
    s
}

#[test]
fn chain_starts_in_dependency_order() {
    let mut h = Harness::new(vec![
        depends(spec("c"), &[(1, Condition::Started)]),
        depends(spec("b"), &[(2, Condition::Started)]),
        spec("a"),
    ]);
    h.send(Event::Boot);
    assert_eq!(h.started(), vec![2, 1, 0]);
}

#[test]
fn oneshot_gates_on_completion_and_failure_blocks() {
    let mut migrate = spec("migrate");
    migrate.oneshot = true;
    migrate.restart = RestartPolicy::Never;
    let mut h = Harness::new(vec![
        migrate.clone(),
        depends(spec("app"), &[(0, Condition::Completed)]),
    ]);
    h.send(Event::Boot);
    assert_eq!(h.started(), vec![0]);
    h.exit(0, Exit::Code(0));
    assert_eq!(h.started(), vec![0, 1]);
    assert_eq!(h.state(0), &State::Completed);

    let mut h = Harness::new(vec![
        migrate,
        depends(spec("app"), &[(0, Condition::Completed)]),
    ]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(3));
    assert_eq!(h.started(), vec![0]);
    assert_eq!(h.state(1), &State::Blocked { dependency: 0 });
    assert!(matches!(
        h.state(0),
        State::Failed {
            exit: Exit::Code(3)
        }
    ));
    // Nothing is left to run: corral ends with a failure code.
    assert_eq!(h.exit, Some(1));
}

#[test]
fn backoff_doubles_up_to_the_cap_then_gives_up() {
    let mut s = spec("flaky");
    s.max_restarts = Some(4);
    let mut h = Harness::new(vec![s]);
    h.send(Event::Boot);
    let mut delays = vec![];
    for _ in 0..5 {
        h.exit(0, Exit::Code(1));
        if let State::Backoff { until, .. } = *h.state(0) {
            delays.push(until - h.now);
            h.fire_next_timer();
        }
    }
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![100, 200, 400, 400]);
    assert!(matches!(h.state(0), State::Failed { .. }));
    assert_eq!(h.started().len(), 5);
}

#[test]
fn stable_run_resets_the_backoff() {
    let mut h = Harness::new(vec![spec("svc")]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(1));
    h.fire_next_timer();
    h.exit(0, Exit::Code(1));
    assert!(matches!(h.state(0), State::Backoff { attempt: 2, .. }));
    h.fire_next_timer();
    h.now += Duration::from_secs(11);
    h.exit(0, Exit::Code(1));
    assert!(matches!(h.state(0), State::Backoff { attempt: 1, .. }));
}

#[test]
fn restart_policies() {
    for (policy, exit, restarted) in [
        (RestartPolicy::Always, Exit::Code(0), true),
        (RestartPolicy::Always, Exit::Code(1), true),
        (RestartPolicy::OnFailure, Exit::Code(0), false),
        (RestartPolicy::OnFailure, Exit::Signal(9), true),
        (RestartPolicy::Never, Exit::Code(1), false),
    ] {
        let mut s = spec("svc");
        s.restart = policy;
        let mut h = Harness::new(vec![s, spec("other")]);
        h.send(Event::Boot);
        h.exit(0, exit);
        assert_eq!(
            matches!(h.state(0), State::Backoff { .. }),
            restarted,
            "{policy:?} {exit:?}"
        );
    }
}

#[test]
fn essential_failure_shuts_down_with_its_code() {
    let mut app = spec("app");
    app.essential = true;
    app.restart = RestartPolicy::Never;
    let mut h = Harness::new(vec![spec("sidecar"), app]);
    h.send(Event::Boot);
    h.exit(1, Exit::Code(7));
    assert!(h.engine.is_shutting_down());
    assert!(h.signals().contains(&(0, Signal::SIGTERM)));
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.exit, Some(7));
}

#[test]
fn shutdown_stops_dependents_first() {
    let mut h = Harness::new(vec![
        spec("db"),
        depends(spec("api"), &[(0, Condition::Started)]),
        depends(spec("web"), &[(1, Condition::Started)]),
    ]);
    h.send(Event::Boot);
    h.send(Event::Shutdown {
        code: 0,
        reason: "test",
        within: None,
    });
    assert_eq!(h.signals(), vec![(2, Signal::SIGTERM)]);
    h.exit(2, Exit::Signal(15));
    assert_eq!(h.signals().last(), Some(&(1, Signal::SIGTERM)));
    h.exit(1, Exit::Signal(15));
    assert_eq!(h.signals().last(), Some(&(0, Signal::SIGTERM)));
    assert_eq!(h.exit, None);
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.exit, Some(0));
}

/// corral exits once nothing runs, whatever the order the services end
/// in, a post step included (the look for a running one starts where the
/// last one found it).
#[test]
fn shutdown_ends_when_the_last_process_ends_in_any_order() {
    let mut with_post = spec("b");
    with_post.has_post = true;
    let mut h = Harness::new(vec![spec("a"), with_post, spec("c"), spec("d")]);
    h.send(Event::Boot);
    h.send(Event::Shutdown {
        code: 0,
        reason: "test",
        within: None,
    });
    h.exit(0, Exit::Signal(15)); // a: the next look finds b
    h.exit(1, Exit::Signal(15)); // b: its post step runs
    assert!(matches!(h.state(1), State::Post { .. }));
    h.exit(3, Exit::Signal(15)); // d
    h.exit(2, Exit::Signal(15)); // c
    assert_eq!(h.exit, None, "b's post step still runs");
    h.exit(1, Exit::Code(0));
    assert_eq!(h.exit, Some(0));
}

#[test]
fn stop_timeout_escalates_to_sigkill() {
    let mut h = Harness::new(vec![spec("stubborn")]);
    h.send(Event::Boot);
    h.send(Event::Shutdown {
        code: 0,
        reason: "test",
        within: None,
    });
    let timer = h.fire_next_timer();
    assert_eq!(timer.map(|t| t.kind), Some(TimerKind::StopTimeout));
    assert_eq!(
        h.signals(),
        vec![(0, Signal::SIGTERM), (0, Signal::SIGKILL)]
    );
    h.exit(0, Exit::Signal(9));
    assert_eq!(h.exit, Some(0));
}

#[test]
fn a_shutdown_within_a_grace_cuts_every_stop_timeout_to_fit_its_longest_chain() {
    // b depends on a: b stops first, then a: 5 s + 5 s along the chain.
    let mut b = spec("b");
    b.depends_on = vec![Edge {
        service: 0,
        condition: Condition::Started,
        restart: false,
        explicit: true,
    }];
    let mut h = Harness::new(vec![spec("a"), b]);
    h.send(Event::Boot);
    h.send(Event::Shutdown {
        code: 0,
        reason: "SIGTERM",
        within: Some(Duration::from_secs(2)),
    });
    // Grace 2 s less a tenth kept for the last SIGKILLs: 1.8 s for 10 s, 18%.
    let fitted = h.effects.iter().find_map(|e| match e {
        Effect::Report {
            report: Report::ShutdownFitted {
                percent, deadline, ..
            },
            ..
        } => Some((*percent, *deadline)),
        _ => None,
    });
    assert_eq!(fitted, Some((18, Duration::from_millis(1800))));
    let timer_at = |h: &Harness, kind: TimerKind| {
        h.timers
            .iter()
            .rev()
            .find(|(_, t)| t.kind == kind)
            .map(|(at, _)| *at - h.now)
    };
    assert_eq!(
        timer_at(&h, TimerKind::ShutdownDeadline),
        Some(Duration::from_millis(1800))
    );
    assert_eq!(
        timer_at(&h, TimerKind::StopTimeout),
        Some(Duration::from_millis(900)),
        "b's 5 s cut to 18%"
    );
    h.exit(1, Exit::Signal(15));
    assert_eq!(
        timer_at(&h, TimerKind::StopTimeout),
        Some(Duration::from_millis(900)),
        "then a's"
    );
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.exit, Some(0));
}

#[test]
fn a_shutdown_without_a_grace_or_that_fits_keeps_the_stop_timeouts() {
    for within in [None, Some(Duration::from_secs(10))] {
        let mut h = Harness::new(vec![spec("a")]);
        h.send(Event::Boot);
        h.send(Event::Shutdown {
            code: 0,
            reason: "test",
            within,
        });
        let stop = h
            .timers
            .iter()
            .find(|(_, t)| t.kind == TimerKind::StopTimeout)
            .map(|(at, _)| *at - h.now);
        assert_eq!(stop, Some(Duration::from_secs(5)), "{within:?}");
        assert!(!h.effects.iter().any(|e| matches!(
            e,
            Effect::Report {
                report: Report::ShutdownFitted { .. },
                ..
            }
        )));
    }
}

#[test]
fn an_operators_grace_applies_to_the_stop_it_causes_only() {
    let mut h = Harness::new(vec![spec("svc")]);
    h.send(Event::Boot);
    let stop_timer = |h: &Harness| {
        h.timers
            .iter()
            .rev()
            .find(|(_, t)| t.kind == TimerKind::StopTimeout)
            .map(|(at, _)| *at)
    };
    h.send(Event::StopWithin {
        svc: 0,
        timeout: Duration::from_secs(1),
    });
    h.send(Event::StopRequested { svc: 0 });
    assert_eq!(stop_timer(&h), Some(h.now + Duration::from_secs(1)));
    h.exit(0, Exit::Signal(15));
    // A grace asked for a service that is not running is dropped.
    h.send(Event::StopWithin {
        svc: 0,
        timeout: Duration::from_secs(2),
    });
    h.send(Event::StopRequested { svc: 0 });
    h.send(Event::StartRequested { svc: 0 });
    h.send(Event::StopRequested { svc: 0 });
    // The next stop has the service's own stop-timeout (5 s) again.
    assert_eq!(stop_timer(&h), Some(h.now + Duration::from_secs(5)));
}

#[test]
fn force_stop_kills_everything() {
    let mut h = Harness::new(vec![spec("a"), spec("b")]);
    h.send(Event::Boot);
    h.send(Event::Shutdown {
        code: 0,
        reason: "test",
        within: None,
    });
    h.send(Event::ForceStop { code: 130 });
    let kills = h
        .signals()
        .iter()
        .filter(|(_, s)| *s == Signal::SIGKILL)
        .count();
    assert_eq!(kills, 2);
}

#[test]
fn pre_failure_counts_as_failed_start_and_post_runs_after_exit() {
    let mut s = spec("svc");
    s.has_pre = true;
    s.has_post = true;
    let mut h = Harness::new(vec![s]);
    h.send(Event::Boot);
    assert_eq!(h.spawns[0].1, Step::Pre);
    h.exit(0, Exit::Code(1));
    assert!(matches!(h.state(0), State::Backoff { attempt: 1, .. }));
    h.fire_next_timer();
    h.exit(0, Exit::Code(0)); // pre ok
    assert!(matches!(h.state(0), State::Running { .. }));
    h.exit(0, Exit::Code(2)); // main fails
    assert!(matches!(h.state(0), State::Post { .. }));
    h.exit(0, Exit::Code(0)); // post done
    assert!(matches!(h.state(0), State::Backoff { attempt: 2, .. }));
    let steps: Vec<Step> = h.spawns.iter().map(|s| s.1).collect();
    assert_eq!(steps, vec![Step::Pre, Step::Pre, Step::Main, Step::Post]);
}

#[test]
fn zero_backoff_restarts_without_a_timer() {
    let mut s = spec("fast");
    s.backoff.initial = Duration::ZERO;
    s.backoff.max = Duration::ZERO;
    let mut h = Harness::new(vec![s]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(1));
    assert!(matches!(h.state(0), State::Running { .. }));
    assert!(h.timers.is_empty());
    assert_eq!(h.engine.units()[0].restarts, 1);
}

#[test]
fn stale_timers_are_ignored() {
    let mut h = Harness::new(vec![spec("svc")]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(1));
    let stale = h.timers[0].1;
    h.fire_next_timer();
    let spawned = h.spawns.len();
    h.send(Event::TimerFired(stale));
    assert_eq!(h.spawns.len(), spawned);
}

#[test]
fn a_program_that_cannot_run_fails_at_once_whatever_the_policy() {
    // (web keeps corral up: with nothing left running, corral would end.)
    let mut h = Harness::new(vec![spec("ghost"), spec("web")]);
    // The spawns are answered by hand, ghost's with a failure.
    h.engine.handle(Event::Boot, h.now);
    h.engine.handle(
        Event::SpawnFailed {
            svc: 0,
            error: "cannot run \"ghost\": No such file or directory".into(),
            permanent: true,
        },
        h.now,
    );
    h.engine.handle(Event::Spawned { svc: 1, pid: 42 }, h.now);
    assert_eq!(
        h.state(0),
        &State::Failed {
            exit: Exit::Code(127)
        }
    );
    assert_eq!(h.engine.units()[0].restarts, 0);
    assert!(h.engine.units()[0].error.is_some());
    // Started again (say, after the program was installed): the error goes.
    h.send(Event::StartRequested { svc: 0 });
    assert!(
        matches!(h.state(0), State::Running { .. }),
        "{:?}",
        h.state(0)
    );
    assert_eq!(h.engine.units()[0].error, None);
}

#[test]
fn an_essential_oneshot_that_completes_ends_the_run_with_0() {
    let mut tests = spec("tests");
    tests.oneshot = true;
    tests.essential = true;
    tests.restart = RestartPolicy::Never;
    let mut h = Harness::new(vec![spec("db"), depends(tests, &[(0, Condition::Started)])]);
    h.send(Event::Boot);
    h.exit(1, Exit::Code(0));
    // db is stopped, then corral exits 0.
    assert_eq!(h.signals(), vec![(0, Signal::SIGTERM)]);
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.exit, Some(0));
}

#[test]
fn abort_on_exit_ends_the_run_at_the_first_end_with_its_code_or_the_named_ones() {
    let mut migrate = spec("migrate");
    migrate.oneshot = true;
    let specs = vec![migrate, spec("db"), spec("worker")];
    let mut h = Harness::new(specs.clone());
    h.engine.abort_on_exit(AbortOnExit {
        exit_code_from: None,
    });
    h.send(Event::Boot);
    // A oneshot's success is not an end.
    h.exit(0, Exit::Code(0));
    assert!(!h.engine.is_shutting_down());
    h.exit(2, Exit::Code(4));
    assert!(h.engine.is_shutting_down());
    // Not restarted: db is stopped, and corral exits with worker's code.
    assert_eq!(h.signals(), vec![(1, Signal::SIGTERM)]);
    h.exit(1, Exit::Signal(15));
    assert_eq!(h.exit, Some(4));

    let mut h = Harness::new(specs);
    h.engine.abort_on_exit(AbortOnExit {
        exit_code_from: Some(1),
    });
    h.send(Event::Boot);
    h.exit(2, Exit::Code(0));
    h.exit(1, Exit::Signal(15));
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.exit, Some(143), "db's code, though worker ended first");
}

#[test]
fn spawn_failure_is_a_failed_start() {
    let mut s = spec("missing");
    s.restart = RestartPolicy::Never;
    let mut h = Harness::new(vec![s]);
    h.engine.handle(Event::Boot, h.now);
    let fx = h.engine.handle(
        Event::SpawnFailed {
            svc: 0,
            error: "not found".into(),
            permanent: false,
        },
        h.now,
    );
    assert!(matches!(
        h.state(0),
        State::Failed {
            exit: Exit::Code(127)
        }
    ));
    assert!(fx.contains(&Effect::Exit { code: 1 }));
}

#[test]
fn break_glass_engine_never_boots_and_shutdown_exits_clean() {
    let mut h = Harness::new(vec![spec("a")]);
    h.send(Event::Shutdown {
        code: 0,
        reason: "test",
        within: None,
    });
    assert!(h.spawns.is_empty());
    assert_eq!(h.exit, Some(0));
}

fn with_ready(mut s: Spec, active: bool) -> Spec {
    s.ready = Some(Box::new(ReadyPlan {
        active,
        initial_delay: Duration::ZERO,
        interval: Duration::from_millis(100),
        start_timeout: Duration::from_secs(2),
    }));
    s
}

impl Harness {
    fn probe_result(&mut self, svc: usize, role: ProbeRole, result: Result<(), String>) {
        let epoch = self.engine.units()[svc].epoch;
        self.send(Event::ProbeResult {
            svc,
            epoch,
            role,
            result,
        });
    }
}

#[test]
fn ready_condition_waits_for_the_probe() {
    let mut h = Harness::new(vec![
        with_ready(spec("db"), true),
        depends(spec("api"), &[(0, Condition::Ready)]),
        depends(spec("logger"), &[(0, Condition::Started)]),
    ]);
    h.send(Event::Boot);
    assert!(matches!(h.state(0), State::Starting { .. }));
    // "started" is enough for the logger, the api waits.
    assert_eq!(h.started(), vec![0, 2]);
    h.fire_next_timer(); // first readiness probe
    assert_eq!(h.probes().last().map(|p| p.1), Some(ProbeRole::Ready));
    h.probe_result(0, ProbeRole::Ready, Err("refused".into()));
    assert_eq!(h.started(), vec![0, 2]);
    h.probe_result(0, ProbeRole::Ready, Ok(()));
    assert!(matches!(h.state(0), State::Running { .. }));
    assert_eq!(h.started(), vec![0, 2, 1]);
}

#[test]
fn never_ready_is_a_failed_start_and_dependents_never_start() {
    let mut db = with_ready(spec("db"), false);
    db.max_restarts = Some(1);
    let mut h = Harness::new(vec![db, depends(spec("api"), &[(0, Condition::Ready)])]);
    h.send(Event::Boot);
    for _ in 0..2 {
        // start-timeout fires: stop with SIGTERM, the exit counts as a failure.
        let t = h.fire_next_timer();
        assert_eq!(t.map(|t| t.kind), Some(TimerKind::StartTimeout));
        assert!(matches!(h.state(0), State::Stopping { .. }));
        h.exit(0, Exit::Signal(15));
        if matches!(h.state(0), State::Backoff { .. }) {
            h.fire_next_timer();
        }
    }
    assert!(matches!(h.state(0), State::Failed { .. }));
    assert_eq!(h.state(1), &State::Blocked { dependency: 0 });
    assert_eq!(h.started(), vec![0, 0]);
}

#[test]
fn health_failures_up_to_retries_restart_the_service() {
    let mut s = spec("api");
    s.health = Some(Box::new(HealthPlan {
        initial_delay: Duration::ZERO,
        interval: Duration::from_secs(1),
        retries: 3,
    }));
    let mut h = Harness::new(vec![s]);
    h.send(Event::Boot);
    for n in 1..=3 {
        let t = h.fire_next_timer();
        assert_eq!(t.map(|t| t.kind), Some(TimerKind::HealthProbe));
        if n == 2 {
            // A pass in between resets the count.
            h.probe_result(0, ProbeRole::Health, Ok(()));
            continue;
        }
        h.probe_result(0, ProbeRole::Health, Err("timeout".into()));
    }
    assert!(matches!(h.state(0), State::Running { .. }));
    for _ in 0..2 {
        h.fire_next_timer();
        h.probe_result(0, ProbeRole::Health, Err("timeout".into()));
    }
    assert!(matches!(
        h.state(0),
        State::Stopping {
            cause: StopCause::Unhealthy,
            ..
        }
    ));
    h.exit(0, Exit::Signal(15));
    assert!(matches!(h.state(0), State::Backoff { attempt: 1, .. }));
}

#[test]
fn stale_probe_results_are_ignored() {
    let mut h = Harness::new(vec![with_ready(spec("db"), true)]);
    h.send(Event::Boot);
    let old = h.engine.units()[0].epoch;
    h.exit(0, Exit::Code(1));
    // Timers of the old process fire, then the backoff: all stale but the last.
    while !matches!(h.state(0), State::Starting { .. }) {
        h.fire_next_timer();
    }
    h.send(Event::ProbeResult {
        svc: 0,
        epoch: old,
        role: ProbeRole::Ready,
        result: Ok(()),
    });
    assert!(matches!(h.state(0), State::Starting { .. }));
}

#[test]
fn restart_true_dependents_follow_their_dependency() {
    let mut api = spec("api");
    api.depends_on = vec![Edge {
        service: 0,
        condition: Condition::Ready,
        restart: true,
        explicit: true,
    }];
    let mut h = Harness::new(vec![
        with_ready(spec("db"), true),
        api,
        depends(spec("cron"), &[(0, Condition::Ready)]),
    ]);
    h.send(Event::Boot);
    h.probe_result(0, ProbeRole::Ready, Ok(()));
    assert_eq!(h.started(), vec![0, 1, 2]);
    h.exit(0, Exit::Code(1)); // db crashes
    assert!(matches!(
        h.state(1),
        State::Stopping {
            cause: StopCause::Asked,
            ..
        }
    ));
    assert!(
        matches!(h.state(2), State::Running { .. }),
        "cron keeps running"
    );
    h.exit(1, Exit::Signal(15));
    assert_eq!(h.state(1), &State::Waiting);
    // db comes back; api starts again only once db is ready.
    h.timers.retain(|(_, t)| t.kind == TimerKind::Backoff);
    h.fire_next_timer();
    assert!(matches!(h.state(0), State::Starting { .. }));
    assert_eq!(h.state(1), &State::Waiting);
    h.probe_result(0, ProbeRole::Ready, Ok(()));
    assert!(matches!(h.state(1), State::Running { .. }));
}

#[test]
fn operator_stop_holds_the_service_and_start_brings_it_back() {
    let mut h = Harness::new(vec![spec("a"), spec("b")]);
    h.send(Event::Boot);
    h.send(Event::StopRequested { svc: 0 });
    assert!(matches!(
        h.state(0),
        State::Stopping {
            cause: StopCause::Asked,
            ..
        }
    ));
    h.exit(0, Exit::Signal(15));
    assert_eq!(h.state(0), &State::Stopped);
    // b is untouched, and corral does not end because a is down.
    assert!(matches!(h.state(1), State::Running { .. }));
    h.exit(1, Exit::Code(0));
    assert_eq!(h.exit, None, "an operator-stopped service keeps corral up");
    h.send(Event::StartRequested { svc: 0 });
    assert!(matches!(h.state(0), State::Running { .. }));
    assert_eq!(h.started(), vec![0, 1, 0]);
}

#[test]
fn operator_restart_relaunches_without_counting_a_failure() {
    let mut h = Harness::new(vec![spec("a")]);
    h.send(Event::Boot);
    let first = h.pid(0);
    h.send(Event::RestartRequested { svc: 0 });
    h.exit(0, Exit::Signal(15));
    assert!(matches!(h.state(0), State::Running { .. }));
    assert_ne!(h.pid(0), first);
    assert_eq!(h.engine.units()[0].restarts, 0);
}

#[test]
fn start_of_a_failed_service_retries_it() {
    let mut s = spec("a");
    s.restart = RestartPolicy::Never;
    let mut h = Harness::new(vec![s, spec("b")]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(1));
    assert!(matches!(h.state(0), State::Failed { .. }));
    h.send(Event::StartRequested { svc: 0 });
    assert!(matches!(h.state(0), State::Running { .. }));
}

#[test]
fn reload_restarts_changed_starts_added_stops_removed() {
    let mut h = Harness::new(vec![spec("keep"), spec("change"), spec("drop")]);
    h.send(Event::Boot);
    let keep = h.pid(0);
    let mut changed = spec("change");
    changed.stop_timeout = Duration::from_secs(1);
    let mut retired = spec("drop");
    retired.depends_on.clear();
    let plan = ReloadPlan {
        specs: vec![spec("keep"), changed, retired, spec("new")],
        order: vec![0, 1, 3],
        changed: vec![1],
        added: vec![3],
        removed: vec![2],
        shutdown_timeout: Duration::from_secs(30),
        missing: Vec::new(),
    };
    h.send(Event::Reload(Box::new(plan)));
    assert_eq!(h.pid(0), keep);
    assert!(matches!(
        h.state(1),
        State::Stopping {
            cause: StopCause::Asked,
            ..
        }
    ));
    assert!(matches!(
        h.state(2),
        State::Stopping {
            cause: StopCause::Asked,
            ..
        }
    ));
    assert!(matches!(h.state(3), State::Running { .. }));
    h.exit(1, Exit::Signal(15));
    assert!(
        matches!(h.state(1), State::Running { .. }),
        "changed service runs again"
    );
    h.exit(2, Exit::Signal(15));
    assert_eq!(h.state(2), &State::Stopped);
    assert!(h.engine.units()[2].is_removed());
}

#[test]
fn break_glass_allows_starting_by_hand() {
    let mut h = Harness::new(vec![spec("a"), spec("b")]);
    h.send(Event::StartRequested { svc: 1 });
    assert_eq!(h.started(), vec![1]);
}

#[test]
fn providers_register_when_ready_and_withdraw_before_the_stop_signal() {
    let mut db = with_ready(spec("db"), true);
    db.provides = true;
    let mut h = Harness::new(vec![db]);
    h.send(Event::Boot);
    assert!(h.published().is_empty(), "not before it is ready");
    h.probe_result(0, ProbeRole::Ready, Ok(()));
    assert_eq!(h.published(), vec![(0, true)]);
    let from = h.effects.len();
    h.send(Event::StopRequested { svc: 0 });
    assert_eq!(h.published(), vec![(0, true), (0, false)]);
    let after: Vec<&Effect> = h.effects[from..]
        .iter()
        .filter(|e| matches!(e, Effect::Withdraw { .. } | Effect::SignalGroup { .. }))
        .collect();
    assert!(
        matches!(
            after.as_slice(),
            [
                Effect::Withdraw { svc: 0 },
                Effect::SignalGroup {
                    signal: Signal::SIGTERM,
                    ..
                },
                ..
            ]
        ),
        "the endpoint is withdrawn before the stop signal is sent: {after:?}"
    );
    // A crash withdraws at once.
    h.send(Event::StartRequested { svc: 0 });
    h.exit(0, Exit::Signal(15));
    h.send(Event::StartRequested { svc: 0 });
    h.probe_result(0, ProbeRole::Ready, Ok(()));
    h.exit(0, Exit::Signal(9));
    assert_eq!(h.published().last(), Some(&(0, false)));
}

#[test]
fn requirements_gate_the_start_and_time_out() {
    let mut app = spec("app");
    app.require_timeout = Duration::from_secs(5);
    let mut h = Harness::new(vec![app]);
    h.send(Event::RequirementsChanged {
        svc: 0,
        missing: vec!["db".into()],
    });
    h.send(Event::Boot);
    assert!(h.spawns.is_empty());
    h.send(Event::RequirementsChanged {
        svc: 0,
        missing: vec![],
    });
    assert_eq!(h.started(), vec![0]);

    let mut h = Harness::new(vec![spec("app")]);
    h.send(Event::RequirementsChanged {
        svc: 0,
        missing: vec!["db".into()],
    });
    h.send(Event::Boot);
    let t = h.fire_next_timer();
    assert_eq!(t.map(|t| t.kind), Some(TimerKind::RequireTimeout));
    assert!(matches!(h.state(0), State::Failed { .. }));
    assert!(h.reports().iter().any(|(_, r)| matches!(r, Report::RequireTimeout { missing, .. } if missing == &vec!["db".to_string()])));
}

/// Found by the property tests: a dependent waiting on an essential service
/// was launched in the same step that began the shutdown its exit caused.
#[test]
fn nothing_starts_after_an_essential_service_exits() {
    let mut app = spec("app");
    app.essential = true;
    let mut h = Harness::new(vec![
        app,
        depends(spec("after"), &[(0, Condition::Completed)]),
    ]);
    h.send(Event::Boot);
    h.exit(0, Exit::Code(0));
    assert_eq!(h.started(), vec![0]);
    assert_eq!(h.state(1), &State::Stopped);
    assert_eq!(h.exit, Some(0));
}

fn dependent(change_wait: (Duration, Duration)) -> Spec {
    let mut app = spec("app");
    app.change_wait = change_wait;
    app
}

/// Times of the ApplyChange effects so far.
fn applied(h: &Harness) -> usize {
    h.effects
        .iter()
        .filter(|e| matches!(e, Effect::ApplyChange { .. }))
        .count()
}

#[test]
fn endpoint_changes_are_debounced_and_bounded_by_the_longest_wait() {
    let quiet = Duration::from_millis(200);
    let mut h = Harness::new(vec![dependent((quiet, Duration::from_secs(1)))]);
    h.send(Event::Boot);
    let start = h.now;
    // A change every 100 ms keeps the quiet period from ever passing...
    for _ in 0..15 {
        h.send(Event::EndpointsChanged { svcs: vec![0] });
        h.now += Duration::from_millis(100);
        let due: Vec<Timer> = h
            .timers
            .iter()
            .filter(|(at, t)| t.kind == TimerKind::ChangeDue && *at <= h.now)
            .map(|(_, t)| *t)
            .collect();
        h.timers
            .retain(|(at, t)| !(t.kind == TimerKind::ChangeDue && *at <= h.now));
        for t in due {
            h.send(Event::TimerFired(t));
        }
    }
    // ...but the longest wait (1 s, plus a splay under quiet/4) does: one action.
    assert_eq!(applied(&h), 1);
    assert!(h.now - start >= Duration::from_secs(1));
    // Then quiet: one more change acts once its quiet period is over.
    h.timers.clear();
    h.send(Event::EndpointsChanged { svcs: vec![0] });
    h.fire_next_timer();
    assert_eq!(applied(&h), 2);
}

#[test]
fn a_change_for_a_stopped_dependent_is_dropped_and_its_restart_refused() {
    let mut h = Harness::new(vec![dependent((
        Duration::from_millis(200),
        Duration::from_secs(1),
    ))]);
    h.send(Event::Boot);
    h.send(Event::EndpointsChanged { svcs: vec![0] });
    h.send(Event::StopRequested { svc: 0 });
    h.exit(0, Exit::Signal(15));
    while h.fire_next_timer().is_some() {}
    assert_eq!(
        applied(&h),
        0,
        "no action for a service an operator stopped"
    );
    h.send(Event::ChangeRestart { svc: 0 });
    assert_eq!(h.state(0), &State::Stopped);
    assert_eq!(h.started(), vec![0]);
}

#[test]
fn change_restarts_roll_through_a_group_one_at_a_time() {
    let mut specs: Vec<Spec> = (0..3).map(|i| spec(&format!("api.{i}"))).collect();
    for s in &mut specs {
        *s = with_ready(s.clone(), true);
    }
    let mut h = Harness::new(specs);
    h.send(Event::Boot);
    for svc in 0..3 {
        h.probe_result(svc, ProbeRole::Ready, Ok(()));
    }
    for svc in 0..3 {
        h.send(Event::ChangeRestart { svc });
    }
    let stopping = |h: &Harness| {
        (0..3)
            .filter(|&i| matches!(h.state(i), State::Stopping { .. }))
            .count()
    };
    for turn in 0..3 {
        assert_eq!(stopping(&h), 1, "turn {turn}: one instance at a time");
        let svc = (0..3)
            .find(|&i| matches!(h.state(i), State::Stopping { .. }))
            .unwrap_or(0);
        h.exit(svc, Exit::Signal(15));
        assert!(matches!(h.state(svc), State::Starting { .. }));
        // The next one waits until this one is ready again.
        assert_eq!(stopping(&h), 0);
        h.probe_result(svc, ProbeRole::Ready, Ok(()));
    }
    assert_eq!(stopping(&h), 0);
    assert_eq!(h.started().len(), 6);
}
