//! The pure lifecycle state machine: (state, event) -> effects. No I/O, no clock.
//!
//! Events from the outside world are routed here to the service they concern
//! (stale ones dropped by pid and epoch) and handed to that service's one
//! transition, `transition.rs`, which decides every (state, input) pair. What
//! is wanted of a service (`Want`) lives beside its state, so a request that
//! arrives while a process is still stopping is never lost. The table of
//! states and inputs is in docs/lifecycle.md.

mod change;
mod transition;
mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_jobs;
#[cfg(test)]
mod tests_protocols;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use types::{
    Ask, Effect, Event, Exit, HealthStatus, Input, Launch, Notified, Outcome, Pid, ProbeRole,
    Report, State, Step, StopCause, Timer, TimerKind, Want,
};

use crate::config::{Backoff, Condition, Config, Overlap, RestartPolicy};
use nix::sys::signal::Signal;

/// The part of a service's config the lifecycle needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    /// The service as named in the file: replicas share it (rolling restarts
    /// take one instance of a group at a time).
    pub group: String,
    pub oneshot: bool,
    pub has_pre: bool,
    pub has_post: bool,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub max_restarts: Option<u32>,
    pub essential: bool,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub depends_on: Vec<Edge>,
    /// Boxed, like `health`: most services have neither, and a Spec is
    /// kept per instance.
    pub ready: Option<Box<ReadyPlan>>,
    pub health: Option<Box<HealthPlan>>,
    /// It publishes endpoints when ready.
    pub provides: bool,
    /// How long it may wait for required endpoints before it fails.
    pub require_timeout: Duration,
    /// Debounce of endpoint changes: a quiet period, and the longest wait.
    pub change_wait: (Duration, Duration),
    /// Set for a job: its ticks start runs (the runtime keeps the clock).
    pub job: Option<JobPlan>,
    /// Sent when it misses its watchdog (`watchdog-signal`).
    pub watchdog_signal: Signal,
    /// `update = "start-first"`: a restart starts the new process first.
    pub start_first: bool,
}

/// What the lifecycle needs of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPlan {
    pub overlap: Overlap,
    /// Run once as soon as its dependencies allow, before any tick.
    pub run_on_start: bool,
}

/// This service waits for `service` to reach `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub service: usize,
    pub condition: Condition,
    /// Restart this service when the dependency restarts.
    pub restart: bool,
    /// Declared in the file; the implicit file-order chain only orders the
    /// first start and never blocks anything.
    pub explicit: bool,
}

/// When readiness is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyPlan {
    /// The runtime runs the probe on a timer (exec, tcp, http); otherwise the
    /// service's output reports readiness by itself (log line, notify fd).
    pub active: bool,
    pub initial_delay: Duration,
    pub interval: Duration,
    pub start_timeout: Duration,
}

/// When liveness is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPlan {
    pub initial_delay: Duration,
    pub interval: Duration,
    pub retries: u32,
}

impl Spec {
    pub fn from_config(config: &Config) -> Vec<Spec> {
        config
            .services
            .iter()
            .map(|s| Spec {
                name: s.name.clone(),
                group: s.group.clone(),
                oneshot: s.oneshot,
                has_pre: s.pre.is_some(),
                has_post: s.post.is_some(),
                restart: s.restart,
                backoff: s.backoff,
                max_restarts: s.max_restarts,
                essential: s.essential,
                stop_signal: s.stop_signal,
                stop_timeout: s.stop_timeout,
                depends_on: s
                    .depends_on
                    .iter()
                    .map(|d| Edge {
                        service: d.service,
                        condition: d.condition,
                        restart: d.restart,
                        explicit: d.explicit,
                    })
                    .collect(),
                ready: s.ready.as_ref().map(|r| {
                    Box::new(ReadyPlan {
                        active: r.probe.is_active(),
                        initial_delay: r.initial_delay,
                        interval: r.interval,
                        start_timeout: r.start_timeout,
                    })
                }),
                health: s.health.as_ref().map(|h| {
                    Box::new(HealthPlan {
                        initial_delay: h.initial_delay,
                        interval: h.interval,
                        retries: h.retries,
                    })
                }),
                provides: !s.links().provides.is_empty(),
                require_timeout: s.links().require_timeout,
                change_wait: s.links().change_wait,
                job: s.job.as_ref().map(|j| JobPlan {
                    overlap: j.overlap,
                    run_on_start: j.run_on_start,
                }),
                watchdog_signal: s
                    .protocols
                    .as_ref()
                    .map_or(Signal::SIGABRT, |p| p.watchdog_signal),
                start_first: s.starts_first() && !s.oneshot && s.job.is_none(),
            })
            .collect()
    }
}

/// A reloaded config, aligned with the engine's indices: services that stay
/// keep their index, new ones are appended, removed ones keep theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    pub specs: Vec<Spec>,
    /// Start order of the services in the new config.
    pub order: Vec<usize>,
    pub changed: Vec<usize>,
    pub added: Vec<usize>,
    pub removed: Vec<usize>,
    pub shutdown_timeout: Duration,
    /// Required names without an endpoint now, by service (those with
    /// requirements): an added dependent waits for them from the start.
    pub missing: Vec<(usize, Vec<String>)>,
}

/// One service's live bookkeeping.
#[derive(Debug, Clone)]
pub struct Unit {
    pub state: State,
    /// What is wanted of it, whatever its process is doing now.
    pub want: Want,
    /// A restart was asked for and has not happened yet: once the current
    /// process is gone, it starts again whatever its restart policy says.
    restart_pending: bool,
    /// Bumped for every new process and every stop; timers and probe results
    /// from an older epoch are stale.
    pub epoch: u64,
    /// Consecutive restarts since the last stable run.
    failures: u32,
    /// Restarts in total.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    pub health: HealthStatus,
    /// Why the readiness probe last failed (for the start-timeout message).
    last_ready_error: Option<String>,
    /// Required names without an endpoint; it does not start while any is missing.
    pub missing: Vec<String>,
    /// Its endpoints are published.
    registered: bool,
    /// The require-timeout timer runs for the current wait.
    require_armed: bool,
    /// An endpoint change waiting out its quiet period.
    change: Option<change::Pending>,
    /// A job's run is due: it starts once its dependencies allow (first
    /// run) or the current run ends (`overlap = "queue"`).
    pub due: bool,
    /// When the current run of a job began (its first step's launch).
    run_started: Option<Instant>,
    /// A job's last finished run (boxed: only jobs have one, and a Unit
    /// is kept per instance).
    pub last_run: Option<Box<LastRun>>,
    /// Why its program could not be run at all (until it starts again).
    pub error: Option<String>,
    /// The last exit followed corral's own stop signal (a stop, a restart,
    /// a reload, shutdown), not a crash.
    pub last_exit_asked: bool,
    /// An operator's stop or restart asked for this grace instead of
    /// stop-timeout; it applies to the stop that request causes.
    stop_within: Option<Duration>,
    /// During a start-first update: the old process (and since when it
    /// ran), serving until the new one is ready.
    outgoing: Option<(Pid, Instant)>,
    /// EXTEND_TIMEOUT_USEC= moved the current start or stop deadline to this.
    extended_until: Option<Instant>,
}

/// How a job's run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRun {
    pub started: Instant,
    pub took: Duration,
    pub exit: Exit,
}

impl Unit {
    fn new(spec: &Spec) -> Unit {
        Unit {
            state: State::Waiting,
            want: Want::Up,
            restart_pending: false,
            epoch: 0,
            failures: 0,
            restarts: 0,
            last_exit: None,
            health: HealthStatus::default(),
            last_ready_error: None,
            missing: Vec::new(),
            registered: false,
            require_armed: false,
            change: None,
            due: spec.job.is_some_and(|j| j.run_on_start),
            run_started: None,
            last_run: None,
            error: None,
            last_exit_asked: false,
            stop_within: None,
            outgoing: None,
            extended_until: None,
        }
    }

    /// Removed from the config by a reload.
    pub fn is_removed(&self) -> bool {
        self.want == Want::Removed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    ShuttingDown { code: i32 },
    Done,
}

/// The supervisor's whole lifecycle state.
#[derive(Debug)]
pub struct Engine {
    specs: Vec<Spec>,
    units: Vec<Unit>,
    /// dependents[i]: services that depend on i.
    dependents: Vec<Vec<usize>>,
    /// A topological order, used to start (and, reversed, to stop) deterministically.
    order: Vec<usize>,
    /// position[svc]: where svc stands in `order` (None outside it: removed).
    position: Vec<Option<usize>>,
    shutdown_timeout: Duration,
    /// The share of each stop-timeout a stop gets, in percent: below 100
    /// only in a shutdown fitted into the runtime's grace.
    stop_percent: u32,
    phase: Phase,
    booted: bool,
    /// Rolling restarts by group: the instance restarting now, and those waiting.
    rolling: BTreeMap<String, change::Rolling>,
    /// During shutdown, the services that transitions touched since the last
    /// look (None until the first, full, look).
    touched: Option<Vec<usize>>,
    /// `up --abort-on-exit`: the first service that ends shuts corral down;
    /// with `--exit-code-from`, corral exits with that service's code.
    abort_on_exit: Option<AbortOnExit>,
    /// False only when no service in `order` is Waiting: `poll_all`, run
    /// after every event, then has nothing to offer a start to. Without it,
    /// each event would cost a look at every service, and a start of N
    /// services N^2 looks. Set wherever a unit becomes Waiting (`wait`, new units).
    may_wait: bool,
    /// How many times `wait` made a unit Waiting.
    waits: u64,
    /// Where `any_active` last found an active unit: it looks from there
    /// next. Looking from the first unit after every event made a shutdown
    /// of N services N^2 / 2 looks (callgrind: 500 K for 1,000).
    active_hint: usize,
}

/// How `up --abort-on-exit` / `--exit-code-from` ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortOnExit {
    /// The service whose exit code corral exits with (else the first to end).
    pub exit_code_from: Option<usize>,
}

impl Engine {
    pub fn new(specs: Vec<Spec>, order: Vec<usize>, shutdown_timeout: Duration) -> Engine {
        let dependents = dependents_of(&specs);
        let units = specs.iter().map(Unit::new).collect();
        let position = positions(&order, specs.len());
        Engine {
            specs,
            units,
            dependents,
            position,
            order,
            shutdown_timeout,
            stop_percent: 100,
            phase: Phase::Running,
            booted: false,
            rolling: BTreeMap::new(),
            touched: None,
            abort_on_exit: None,
            may_wait: true,
            waits: 0,
            active_hint: 0,
        }
    }

    /// `up --abort-on-exit` (or `--exit-code-from`): set before boot.
    pub fn abort_on_exit(&mut self, rule: AbortOnExit) {
        self.abort_on_exit = Some(rule);
    }

    pub fn units(&self) -> &[Unit] {
        &self.units
    }

    /// Started (not in break glass): services run by themselves, jobs tick.
    pub fn is_booted(&self) -> bool {
        self.booted
    }

    pub fn is_shutting_down(&self) -> bool {
        !matches!(self.phase, Phase::Running)
    }

    /// Applies one event and returns what must happen as a result, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            Event::Boot => {
                self.booted = true;
                self.poll_all(now, &mut fx);
            }
            Event::Spawned { svc, pid } => {
                self.transition(svc, Input::Launched { pid }, now, &mut fx)
            }
            Event::SpawnFailed {
                svc,
                error,
                permanent,
            } => {
                let input = Input::LaunchFailed { error, permanent };
                self.transition(svc, input, now, &mut fx)
            }
            Event::Reaped { svc, pid, exit } => {
                let unit = &mut self.units[svc];
                if unit.state.pid() == Some(pid) {
                    self.transition(svc, Input::Ended { exit }, now, &mut fx);
                } else if unit.outgoing.is_some_and(|(old, _)| old == pid) {
                    // A failed update now has nothing to fall back on.
                    unit.outgoing = None;
                    fx.push(report(svc, Report::OldEnded { pid, exit }));
                }
            }
            Event::Notified { svc, pid, what } => {
                if self.units[svc].state.pid() == Some(pid) {
                    self.transition(svc, Input::Notified(what), now, &mut fx);
                }
            }
            Event::TimerFired(timer) => match timer.svc {
                None => {
                    if timer.kind == TimerKind::ShutdownDeadline && self.is_shutting_down() {
                        fx.push(report_global(Report::ShutdownTimeout));
                        self.kill_all("shutdown-timeout reached", now, &mut fx);
                    }
                }
                Some(svc) if self.units[svc].epoch == timer.epoch => {
                    self.transition(svc, Input::Timer(timer.kind), now, &mut fx)
                }
                Some(_) => {}
            },
            Event::ProbeResult {
                svc,
                epoch,
                role,
                result,
            } => {
                if self.units[svc].epoch == epoch {
                    self.transition(svc, Input::Probe { role, result }, now, &mut fx);
                }
            }
            Event::Shutdown {
                code,
                reason,
                within,
            } => {
                self.begin_shutdown(code, reason.into(), within, now, &mut fx);
            }
            Event::ForceStop { code } => {
                self.begin_shutdown(code, "forced".into(), None, now, &mut fx);
                // Not a clean shutdown any more: say so in the exit code.
                if let Phase::ShuttingDown { code: clean @ 0 } = &mut self.phase {
                    *clean = code;
                }
                self.kill_all("forced stop", now, &mut fx);
            }
            Event::StartRequested { svc } => {
                self.ask(svc, Ask::Start, now, &mut fx);
                if self.units[svc].state == State::Waiting && self.units[svc].want == Want::Up {
                    let dependencies = self.pending_dependencies(svc);
                    fx.push(report(svc, Report::WaitingFor { dependencies }));
                }
            }
            Event::StopRequested { svc } => self.ask(svc, Ask::Stop, now, &mut fx),
            // Replicas updated start-first roll one at a time, so that
            // every instance but one serves throughout.
            Event::RestartRequested { svc } if self.rolls(svc) => {
                self.rolling_restart(svc, now, &mut fx)
            }
            Event::RestartRequested { svc } => self.ask(svc, Ask::Restart, now, &mut fx),
            Event::Reload(plan) => self.reload(*plan, now, &mut fx),
            Event::RequirementsChanged { svc, missing } => {
                self.units[svc].missing = missing;
                if self.booted {
                    self.transition(svc, Input::Poll, now, &mut fx);
                }
            }
            Event::EndpointsChanged { svcs } => {
                for svc in svcs {
                    self.endpoints_changed(svc, now, &mut fx);
                }
            }
            Event::ChangeRestart { svc } => self.rolling_restart(svc, now, &mut fx),
            Event::StopWithin { svc, timeout } => self.units[svc].stop_within = Some(timeout),
            Event::Tick { svc } => {
                // Break glass (no boot) runs no job by itself, nor does a
                // job an operator stopped.
                let unit = &self.units[svc];
                if self.booted && self.phase == Phase::Running && unit.want == Want::Up {
                    self.transition(svc, Input::Tick { manual: false }, now, &mut fx);
                }
            }
        }
        self.advance_rolling(now, &mut fx);
        self.advance_shutdown(now, &mut fx);
        self.check_finished(&mut fx);
        fx
    }

    /// Records what an operator or a reload wants of a service, then lets
    /// its transition act on it.
    fn ask(&mut self, svc: usize, ask: Ask, now: Instant, fx: &mut Vec<Effect>) {
        if self.phase != Phase::Running {
            return;
        }
        let job = self.specs[svc].job.is_some();
        let unit = &mut self.units[svc];
        match ask {
            // For a job, a start is a run now, as a tick would start it.
            Ask::Start if job => {
                unit.want = Want::Up;
                self.transition(svc, Input::Tick { manual: true }, now, fx);
                return;
            }
            Ask::Start => {
                unit.want = Want::Up;
                unit.failures = 0;
            }
            Ask::Restart => {
                unit.want = Want::Up;
                unit.restart_pending = true;
                unit.failures = 0;
            }
            // An operator's stop holds across reloads; a removed service
            // that comes back is wanted up again.
            // A job's run in progress finishes under the definition it
            // started with; the new one applies from the next run.
            Ask::Redefine => {
                if unit.want == Want::Removed {
                    unit.want = Want::Up;
                }
                unit.restart_pending = unit.want == Want::Up && !job;
                unit.failures = 0;
            }
            // A job stopped forgets a run it had queued.
            Ask::Stop => {
                unit.want = Want::Down;
                unit.restart_pending = false;
                unit.change = None;
                unit.due = false;
            }
            Ask::Remove => {
                unit.want = Want::Removed;
                unit.restart_pending = false;
                unit.change = None;
                unit.due = false;
            }
        }
        self.transition(svc, Input::Asked(ask), now, fx);
        // The request's grace was for the stop it causes (now, or once the
        // process being spawned is there), not for a later one.
        if !matches!(self.units[svc].state, State::Launching(_)) {
            self.units[svc].stop_within = None;
        }
    }

    fn reload(&mut self, plan: ReloadPlan, now: Instant, fx: &mut Vec<Effect>) {
        self.specs = plan.specs;
        while self.units.len() < self.specs.len() {
            self.units.push(Unit::new(&self.specs[self.units.len()]));
        }
        self.may_wait = true;
        self.dependents = dependents_of(&self.specs);
        self.position = positions(&plan.order, self.specs.len());
        self.order = plan.order;
        self.shutdown_timeout = plan.shutdown_timeout;
        for (svc, missing) in plan.missing {
            if let Some(unit) = self.units.get_mut(svc) {
                unit.missing = missing;
            }
        }
        for svc in plan.removed {
            fx.push(report(svc, Report::Removed));
            self.ask(svc, Ask::Remove, now, fx);
        }
        for svc in plan.changed {
            fx.push(report(svc, Report::Changed));
            if self.rolls(svc) {
                self.rolling_restart(svc, now, fx);
            } else {
                self.ask(svc, Ask::Redefine, now, fx);
            }
        }
        for svc in plan.added {
            fx.push(report(svc, Report::Added));
        }
        self.poll_all(now, fx);
    }

    /// Whether a restart of `svc` takes its turn among its service's
    /// instances: a running instance updated start-first.
    fn rolls(&self, svc: usize) -> bool {
        self.specs[svc].start_first
            && self.units[svc].want == Want::Up
            && matches!(self.units[svc].state, State::Running { .. })
    }

    /// Offers every waiting service a start, in start order.
    fn poll_all(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if !self.booted || self.phase != Phase::Running {
            return;
        }
        if !self.may_wait {
            debug_assert!(
                self.order
                    .iter()
                    .all(|&svc| self.units[svc].state != State::Waiting),
                "a unit became Waiting without `wait`"
            );
            return;
        }
        // A transition of this pass may make a unit this pass has already
        // looked at Waiting again (through `wait`), or poll them all itself.
        let waits = self.waits;
        let mut left_waiting = false;
        for k in 0..self.order.len() {
            let svc = self.order[k];
            if self.units[svc].state == State::Waiting {
                self.transition(svc, Input::Poll, now, fx);
                left_waiting |= self.units[svc].state == State::Waiting;
            }
        }
        self.may_wait = left_waiting || self.waits != waits;
    }

    /// Makes `svc` Waiting (for its dependencies, or its turn to start).
    fn wait(&mut self, svc: usize) {
        self.units[svc].state = State::Waiting;
        self.may_wait = true;
        self.waits += 1;
    }

    fn begin_shutdown(
        &mut self,
        code: i32,
        reason: String,
        within: Option<Duration>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::ShuttingDown { code };
        fx.push(report_global(Report::ShuttingDown { reason }));
        let mut deadline = self.shutdown_timeout;
        if let Some(grace) = within {
            deadline = deadline.min(self.fit_shutdown(grace, fx));
        }
        fx.push(Effect::ArmTimer {
            at: now + deadline,
            timer: Timer {
                svc: None,
                kind: TimerKind::ShutdownDeadline,
                epoch: 0,
            },
        });
        self.advance_shutdown(now, fx);
    }

    /// Plans a shutdown that must end within `grace` (the runtime's SIGKILL
    /// follows): the services still active stop along their longest chain
    /// in `grace` less a reserve (the last SIGKILLs, post steps' ends, the
    /// last log lines), each stop-timeout cut in proportion when that chain
    /// takes longer. Returns the deadline of the whole shutdown.
    fn fit_shutdown(&mut self, grace: Duration, fx: &mut Vec<Effect>) -> Duration {
        let budget = crate::config::shutdown_budget(grace);
        let weights: Vec<Duration> = (0..self.units.len())
            .map(|svc| {
                let unit = &self.units[svc];
                if unit.state.is_active() {
                    unit.stop_within.unwrap_or(self.specs[svc].stop_timeout)
                } else {
                    Duration::ZERO
                }
            })
            .collect();
        let (worst, _) = crate::config::longest_stop_chain(&weights, &self.dependents, &self.order);
        let percent = crate::config::grace_percent(budget, worst);
        if percent < 100 {
            self.stop_percent = percent;
            fx.push(report_global(Report::ShutdownFitted {
                grace,
                worst,
                percent,
                deadline: budget,
            }));
        }
        budget
    }

    /// During shutdown: stops every service that nothing running depends on,
    /// in reverse start order. The first pass looks at every service; after
    /// that only the services an event touched, and what they depend on, can
    /// have become ready to stop, so each event costs O(touched), not O(N).
    fn advance_shutdown(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if !self.is_shutting_down() {
            return;
        }
        let candidates: Vec<usize> = match self.touched.take() {
            None => {
                let outside = (0..self.units.len()).filter(|&i| self.units[i].is_removed());
                self.order.iter().rev().copied().chain(outside).collect()
            }
            Some(touched) => {
                let mut list = Vec::with_capacity(touched.len());
                for svc in touched {
                    list.push(svc);
                    list.extend(self.specs[svc].depends_on.iter().map(|e| e.service));
                }
                // Dependents before what they depend on, as in the first pass.
                list.sort_unstable_by_key(|&svc| (std::cmp::Reverse(self.rank(svc)), svc));
                list.dedup();
                list
            }
        };
        for svc in candidates {
            let dependents_done = self.dependents[svc]
                .iter()
                .all(|&d| !self.units[d].state.is_active());
            self.transition(svc, Input::Shutdown { dependents_done }, now, fx);
        }
        // This pass went dependents first, so what it changed is settled;
        // from now on, only what later events touch.
        self.touched = Some(Vec::new());
    }

    /// Where a service stands in the start order; services outside it last.
    fn rank(&self, svc: usize) -> usize {
        self.position[svc].unwrap_or(usize::MAX)
    }

    fn kill_all(&mut self, reason: &'static str, now: Instant, fx: &mut Vec<Effect>) {
        for svc in 0..self.units.len() {
            self.transition(svc, Input::Kill { reason }, now, fx);
        }
    }

    /// Emits Exit once nothing is left to run: at the end of a shutdown, or
    /// when every service wanted up has ended by itself.
    fn check_finished(&mut self, fx: &mut Vec<Effect>) {
        let ended = matches!(self.phase, Phase::ShuttingDown { .. }) && !self.any_active();
        match self.phase {
            Phase::ShuttingDown { code } if ended => {
                self.phase = Phase::Done;
                // --exit-code-from: that service's code, however the run ended.
                let code = match self.abort_on_exit.and_then(|a| a.exit_code_from) {
                    Some(svc) => self.units[svc].last_exit.map_or(0, Exit::code),
                    None => code,
                };
                fx.push(Effect::Exit { code });
            }
            Phase::Running if self.booted && self.all_ended() => {
                let failed = self.units.iter().any(|u| {
                    !u.is_removed()
                        && matches!(u.state, State::Failed { .. } | State::Blocked { .. })
                });
                let reason = if failed {
                    "every service has ended, some failed"
                } else {
                    "every service has ended"
                };
                self.phase = Phase::Done;
                fx.push(report_global(Report::ShuttingDown {
                    reason: reason.into(),
                }));
                fx.push(Effect::Exit {
                    code: i32::from(failed),
                });
            }
            Phase::Running | Phase::ShuttingDown { .. } | Phase::Done => {}
        }
    }

    /// Whether a process of any service exists (or is being made). Looks
    /// from the unit found last time, round to it: during a shutdown that
    /// one usually still runs, so the answer costs one look.
    fn any_active(&mut self) -> bool {
        let n = self.units.len();
        let from = self.active_hint.min(n);
        let found = (from..n)
            .chain(0..from)
            .find(|&i| self.units[i].state.is_active());
        match found {
            Some(i) => {
                self.active_hint = i;
                true
            }
            None => false,
        }
    }

    /// Every service of the config ended by itself; one an operator stopped
    /// keeps corral up, waiting for a start. A removed one still stopping
    /// keeps it up too, until its process is gone.
    fn all_ended(&self) -> bool {
        self.units.iter().all(|u| match u.want {
            Want::Up => u.state.is_final(),
            Want::Down => false,
            Want::Removed => !u.state.is_active(),
        }) && self.units.iter().any(|u| !u.is_removed())
    }

    fn pending_dependencies(&self, svc: usize) -> Vec<String> {
        self.specs[svc]
            .depends_on
            .iter()
            .filter(|e| !matches!(self.dependency_status(e), DepStatus::Met))
            .map(|e| self.specs[e.service].name.clone())
            .collect()
    }

    /// Where a dependency stands for this edge.
    fn dependency_status(&self, edge: &Edge) -> DepStatus {
        let dep = &self.units[edge.service];
        match (&dep.state, edge.condition) {
            // An operator stopped it: wait until an operator starts it again.
            (State::Stopped, _) if dep.want == Want::Down => DepStatus::Pending,
            (State::Failed { .. } | State::Blocked { .. } | State::Stopped, _) => DepStatus::Broken,
            // A job between runs: its first run (if any at start) is done.
            (State::Completed | State::Exited { .. } | State::Scheduled, _) => DepStatus::Met,
            (State::Running { .. }, Condition::Started | Condition::Ready) => DepStatus::Met,
            (State::Starting { .. }, Condition::Started) => DepStatus::Met,
            (
                State::Running { .. } | State::Starting { .. },
                Condition::Completed | Condition::Ready,
            )
            | (
                State::Waiting
                | State::Launching(_)
                | State::Pre { .. }
                | State::Stopping { .. }
                | State::Post { .. }
                | State::Backoff { .. },
                _,
            ) => DepStatus::Pending,
        }
    }
}

/// position[svc]: the index of svc in `order`.
fn positions(order: &[usize], n: usize) -> Vec<Option<usize>> {
    let mut position = vec![None; n];
    for (k, &svc) in order.iter().enumerate() {
        position[svc] = Some(k);
    }
    position
}

/// dependents[i]: the services that depend on service i.
fn dependents_of(specs: &[Spec]) -> Vec<Vec<usize>> {
    let mut dependents = vec![Vec::new(); specs.len()];
    for (i, s) in specs.iter().enumerate() {
        for e in &s.depends_on {
            dependents[e.service].push(i);
        }
    }
    dependents
}

enum DepStatus {
    Met,
    Pending,
    Broken,
}

fn report(svc: usize, report: Report) -> Effect {
    Effect::Report {
        svc: Some(svc),
        report,
    }
}

fn report_global(report: Report) -> Effect {
    Effect::Report { svc: None, report }
}
