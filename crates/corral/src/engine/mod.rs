//! The pure lifecycle state machine: (state, event) -> effects. No I/O, no clock.

mod operate;
mod probes;
mod types;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use types::{
    Effect, Event, Exit, HealthStatus, Outcome, Pid, ProbeRole, Report, State, Step, StopReason,
    Timer, TimerKind,
};

use crate::config::{Backoff, Condition, Config, RestartPolicy};

/// The part of a service's config the lifecycle needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
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
    pub ready: Option<ReadyPlan>,
    pub health: Option<HealthPlan>,
    /// It publishes endpoints when ready.
    pub provides: bool,
    /// How long it may wait for required endpoints before it fails.
    pub require_timeout: Duration,
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
                ready: s.ready.as_ref().map(|r| ReadyPlan {
                    active: r.probe.is_active(),
                    initial_delay: r.initial_delay,
                    interval: r.interval,
                    start_timeout: r.start_timeout,
                }),
                health: s.health.as_ref().map(|h| HealthPlan {
                    initial_delay: h.initial_delay,
                    interval: h.interval,
                    retries: h.retries,
                }),
                provides: !s.provides.is_empty(),
                require_timeout: s.require_timeout,
            })
            .collect()
    }
}

/// A reloaded config, aligned with the engine's indices: services that stay
/// keep their index, new ones are appended, removed ones keep theirs, retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    pub specs: Vec<Spec>,
    /// Start order of the services in the new config.
    pub order: Vec<usize>,
    pub changed: Vec<usize>,
    pub added: Vec<usize>,
    pub removed: Vec<usize>,
    pub shutdown_timeout: Duration,
}

/// One service's live bookkeeping.
#[derive(Debug, Clone)]
pub struct Unit {
    pub state: State,
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
    /// Stopped by an operator: stays down, and does not count as ended by itself.
    pub held: bool,
    /// Removed from the config by a reload.
    pub retired: bool,
    /// Required names without an endpoint; it does not start while any is missing.
    pub missing: Vec<String>,
    /// Its endpoints are published.
    registered: bool,
    /// The require-timeout timer runs for the current wait.
    require_armed: bool,
}

impl Unit {
    fn new() -> Unit {
        Unit {
            state: State::Waiting,
            epoch: 0,
            failures: 0,
            restarts: 0,
            last_exit: None,
            health: HealthStatus::default(),
            last_ready_error: None,
            held: false,
            retired: false,
            missing: Vec::new(),
            registered: false,
            require_armed: false,
        }
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
    shutdown_timeout: Duration,
    phase: Phase,
    booted: bool,
}

impl Engine {
    pub fn new(specs: Vec<Spec>, order: Vec<usize>, shutdown_timeout: Duration) -> Engine {
        let dependents = dependents_of(&specs);
        let units = specs.iter().map(|_| Unit::new()).collect();
        Engine {
            specs,
            units,
            dependents,
            order,
            shutdown_timeout,
            phase: Phase::Running,
            booted: false,
        }
    }

    pub fn units(&self) -> &[Unit] {
        &self.units
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
                self.start_ready_services(now, &mut fx);
            }
            Event::Spawned { svc, step, pid } => self.on_spawned(svc, step, pid, now, &mut fx),
            Event::SpawnFailed { svc, step, error } => {
                fx.push(report(svc, Report::SpawnFailed { step, error }));
                // 127 is what a shell reports for a command it cannot run.
                self.on_step_ended(svc, step, Exit::Code(127), now, &mut fx);
            }
            Event::Exited { svc, pid, exit } => {
                if self.units[svc].state.pid() == Some(pid) {
                    let step = match self.units[svc].state {
                        State::Pre { .. } => Step::Pre,
                        State::Post { .. } => Step::Post,
                        State::Stopping { step, .. } => step,
                        _ => Step::Main,
                    };
                    self.on_step_ended(svc, step, exit, now, &mut fx);
                }
            }
            Event::TimerFired(timer) => self.on_timer(timer, now, &mut fx),
            Event::ProbeResult {
                svc,
                epoch,
                role,
                result,
            } => self.on_probe_result(svc, epoch, role, result, now, &mut fx),
            Event::Shutdown { code, reason } => {
                self.begin_shutdown(code, reason.into(), now, &mut fx);
            }
            Event::ForceStop => {
                if self.phase == Phase::Running {
                    self.begin_shutdown(0, "forced".into(), now, &mut fx);
                }
                self.kill_all("forced stop", &mut fx);
            }
            Event::StartRequested { svc } => self.on_start_requested(svc, now, &mut fx),
            Event::StopRequested { svc } => self.on_stop_requested(svc, now, &mut fx),
            Event::RestartRequested { svc } => self.on_restart_requested(svc, now, &mut fx),
            Event::Reload(plan) => self.on_reload(*plan, now, &mut fx),
            Event::RequirementsChanged { svc, missing } => {
                self.units[svc].missing = missing;
                if self.booted {
                    self.try_start(svc, now, &mut fx);
                }
            }
        }
        self.advance_shutdown(now, &mut fx);
        self.check_finished(&mut fx);
        fx
    }

    fn on_spawned(&mut self, svc: usize, step: Step, pid: Pid, now: Instant, fx: &mut Vec<Effect>) {
        let State::Launching { then, .. } = self.units[svc].state else {
            return;
        };
        match step {
            Step::Pre => {
                self.units[svc].state = State::Pre { pid };
                fx.push(report(svc, Report::PreStarted { pid }));
            }
            Step::Main => {
                let unit = &mut self.units[svc];
                unit.epoch += 1;
                unit.health = HealthStatus::default();
                unit.last_ready_error = None;
                fx.push(report(svc, Report::Started { pid }));
                match self.specs[svc].ready {
                    Some(plan) => {
                        self.units[svc].state = State::Starting { pid, since: now };
                        self.arm(svc, TimerKind::StartTimeout, now + plan.start_timeout, fx);
                        if plan.active {
                            self.arm(svc, TimerKind::ReadyProbe, now + plan.initial_delay, fx);
                        }
                    }
                    None => {
                        self.units[svc].state = State::Running { pid, since: now };
                        self.on_ready(svc, now, fx);
                    }
                }
                self.start_ready_services(now, fx);
            }
            Step::Post => {
                let then = then.unwrap_or(Outcome::Stopped);
                self.units[svc].state = State::Post { pid, then };
                fx.push(report(svc, Report::PostStarted { pid }));
            }
        }
    }

    /// A process of the service ended (or could not be spawned).
    fn on_step_ended(
        &mut self,
        svc: usize,
        step: Step,
        exit: Exit,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let stop_reason = match self.units[svc].state {
            State::Stopping { reason, .. } => Some(reason),
            _ => None,
        };
        match step {
            Step::Pre if self.is_shutting_down() || stop_reason.is_some() => {
                let outcome = match stop_reason {
                    Some(
                        StopReason::DependencyRestart | StopReason::Restart | StopReason::Reload,
                    ) => Outcome::Wait,
                    _ => Outcome::Stopped,
                };
                self.finish_run(svc, outcome, now, fx);
            }
            Step::Pre if exit.success() => self.launch(svc, Step::Main, None, fx),
            Step::Pre => {
                fx.push(report(svc, Report::StepFailed { step, exit }));
                let outcome = self.failure_outcome(svc, exit);
                self.finish_run(svc, outcome, now, fx);
            }
            Step::Main => self.on_main_ended(svc, exit, stop_reason, now, fx),
            Step::Post => {
                if !exit.success() {
                    fx.push(report(svc, Report::StepFailed { step, exit }));
                }
                let then = match self.units[svc].state {
                    State::Post { then, .. }
                    | State::Launching {
                        then: Some(then), ..
                    } => then,
                    _ => Outcome::Stopped,
                };
                self.finish_run(svc, then, now, fx);
            }
        }
    }

    fn on_main_ended(
        &mut self,
        svc: usize,
        exit: Exit,
        stop_reason: Option<StopReason>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let (ran_for, pid) = match self.units[svc].state {
            State::Running { since, pid } | State::Starting { since, pid } => {
                (now.saturating_duration_since(since), Some(pid))
            }
            State::Stopping { pid, .. } => (Duration::ZERO, Some(pid)),
            _ => (Duration::ZERO, None),
        };
        self.units[svc].last_exit = Some(exit);
        // A crashed provider is withdrawn at once.
        self.withdraw(svc, fx);
        let outcome = match stop_reason {
            _ if self.is_shutting_down() => Outcome::Stopped,
            Some(StopReason::Shutdown | StopReason::Requested | StopReason::Removed) => {
                Outcome::Stopped
            }
            Some(StopReason::DependencyRestart | StopReason::Restart | StopReason::Reload) => {
                Outcome::Wait
            }
            Some(StopReason::NotReady | StopReason::Unhealthy) => self.failure_outcome(svc, exit),
            None => {
                if ran_for >= self.specs[svc].backoff.reset_after {
                    self.units[svc].failures = 0;
                }
                if !(self.specs[svc].oneshot && exit.success()) {
                    fx.push(report(svc, Report::Exited { exit }));
                }
                self.run_outcome(svc, exit)
            }
        };
        // Whatever the service left in its process group goes with it.
        if let (Some(pid), Outcome::Restart { .. } | Outcome::Stopped | Outcome::Wait) =
            (pid, outcome)
        {
            fx.push(Effect::SignalGroup {
                svc,
                pid,
                signal: Signal::SIGKILL,
            });
        }
        if self.specs[svc].has_post {
            self.launch(svc, Step::Post, Some(outcome), fx);
        } else {
            self.finish_run(svc, outcome, now, fx);
        }
    }

    /// What a main-process exit leads to under the restart policy.
    fn run_outcome(&mut self, svc: usize, exit: Exit) -> Outcome {
        let spec = &self.specs[svc];
        if spec.oneshot && exit.success() {
            return Outcome::Completed;
        }
        let restart = match spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if restart {
            self.count_restart(svc, exit)
        } else if exit.success() {
            Outcome::Exited(exit)
        } else {
            Outcome::Failed(exit)
        }
    }

    /// A failed start (pre step failed, never ready, unhealthy): restarted
    /// unless the policy is `never`.
    fn failure_outcome(&mut self, svc: usize, exit: Exit) -> Outcome {
        if self.specs[svc].restart == RestartPolicy::Never {
            Outcome::Failed(exit)
        } else {
            self.count_restart(svc, exit)
        }
    }

    /// Counts one more restart; Failed once max-restarts is exceeded.
    fn count_restart(&mut self, svc: usize, exit: Exit) -> Outcome {
        let spec = &self.specs[svc];
        let unit = &mut self.units[svc];
        unit.failures += 1;
        match spec.max_restarts {
            Some(max) if unit.failures > max => Outcome::Failed(exit),
            _ => Outcome::Restart {
                delay: spec.backoff.delay(unit.failures),
                attempt: unit.failures,
            },
        }
    }

    /// Moves a service whose run is over into its next state.
    fn finish_run(&mut self, svc: usize, outcome: Outcome, now: Instant, fx: &mut Vec<Effect>) {
        let unit = &self.units[svc];
        let stays_down = self.is_shutting_down() || unit.held || unit.retired;
        if stays_down && !matches!(outcome, Outcome::Failed(_) | Outcome::Completed) {
            self.units[svc].state = State::Stopped;
            fx.push(report(svc, Report::Stopped));
            return;
        }
        match outcome {
            Outcome::Completed => {
                self.units[svc].state = State::Completed;
                fx.push(report(svc, Report::Completed));
                self.start_ready_services(now, fx);
            }
            Outcome::Exited(exit) => {
                self.units[svc].state = State::Exited { exit };
                self.start_ready_services(now, fx);
                if self.specs[svc].essential {
                    let name = self.specs[svc].name.clone();
                    self.begin_shutdown(
                        exit.code(),
                        format!("essential service {name} exited"),
                        now,
                        fx,
                    );
                }
            }
            Outcome::Restart { delay, attempt } => {
                self.units[svc].restarts += 1;
                fx.push(report(svc, Report::Restarting { delay, attempt }));
                self.restart_dependents(svc, now, fx);
                if delay.is_zero() {
                    // No timer round trip when there is nothing to wait for.
                    let step = self.first_step(svc);
                    self.launch(svc, step, None, fx);
                } else {
                    self.units[svc].state = State::Backoff {
                        until: now + delay,
                        attempt,
                    };
                    self.arm(svc, TimerKind::Backoff, now + delay, fx);
                }
            }
            Outcome::Wait => {
                self.units[svc].state = State::Waiting;
                self.try_start(svc, now, fx);
                self.start_ready_services(now, fx);
            }
            Outcome::Failed(exit) => {
                let unit = &mut self.units[svc];
                unit.state = State::Failed { exit };
                if unit.failures > 0 && self.specs[svc].restart != RestartPolicy::Never {
                    fx.push(report(
                        svc,
                        Report::GaveUp {
                            restarts: unit.failures - 1,
                            exit,
                        },
                    ));
                } else {
                    fx.push(report(svc, Report::Failed { exit }));
                }
                self.block_dependents(svc, now, fx);
                if self.specs[svc].essential && self.phase == Phase::Running {
                    let name = self.specs[svc].name.clone();
                    self.begin_shutdown(
                        exit.code(),
                        format!("essential service {name} failed"),
                        now,
                        fx,
                    );
                } else {
                    self.start_ready_services(now, fx);
                }
            }
            Outcome::Stopped => {
                self.units[svc].state = State::Stopped;
                fx.push(report(svc, Report::Stopped));
            }
        }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant, fx: &mut Vec<Effect>) {
        let Some(svc) = timer.svc else {
            if timer.kind == TimerKind::ShutdownDeadline && self.is_shutting_down() {
                fx.push(report_global(Report::ShutdownTimeout));
                self.kill_all("shutdown-timeout reached", fx);
            }
            return;
        };
        if self.units[svc].epoch != timer.epoch {
            return;
        }
        match (timer.kind, &self.units[svc].state) {
            (TimerKind::Backoff, State::Backoff { .. }) => {
                let step = self.first_step(svc);
                self.launch(svc, step, None, fx);
            }
            (TimerKind::StopTimeout, &State::Stopping { pid, .. }) => {
                fx.push(report(
                    svc,
                    Report::Killing {
                        reason: "stop-timeout reached",
                    },
                ));
                fx.push(Effect::SignalGroup {
                    svc,
                    pid,
                    signal: Signal::SIGKILL,
                });
            }
            (TimerKind::ReadyProbe, State::Starting { .. }) => fx.push(Effect::RunProbe {
                svc,
                role: ProbeRole::Ready,
                epoch: timer.epoch,
            }),
            (TimerKind::StartTimeout, State::Starting { .. }) => {
                self.on_start_timeout(svc, now, fx)
            }
            (TimerKind::HealthProbe, State::Running { .. }) => fx.push(Effect::RunProbe {
                svc,
                role: ProbeRole::Health,
                epoch: timer.epoch,
            }),
            (TimerKind::RequireTimeout, State::Waiting) if !self.units[svc].missing.is_empty() => {
                let missing = self.units[svc].missing.clone();
                let timeout = self.specs[svc].require_timeout;
                self.units[svc].require_armed = false;
                fx.push(report(svc, Report::RequireTimeout { missing, timeout }));
                self.finish_run(svc, Outcome::Failed(Exit::Code(1)), now, fx);
            }
            _ => {}
        }
    }

    /// Starts every waiting service whose dependencies are met, in start order.
    fn start_ready_services(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if !self.booted || self.phase != Phase::Running {
            return;
        }
        for k in 0..self.order.len() {
            let svc = self.order[k];
            if self.units[svc].state == State::Waiting && !self.units[svc].held {
                self.try_start(svc, now, fx);
            }
        }
    }

    /// Launches a waiting service if its dependencies are met, or blocks it if
    /// one of them can no longer be met.
    fn try_start(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        if self.units[svc].state != State::Waiting || self.phase != Phase::Running {
            return;
        }
        let mut all_met = true;
        for e in &self.specs[svc].depends_on {
            match dependency_status(&self.units[e.service].state, e.condition) {
                DepStatus::Met => {}
                DepStatus::Pending => all_met = false,
                DepStatus::Broken if !e.explicit => {}
                DepStatus::Broken => {
                    let dep = e.service;
                    self.block(svc, dep, now, fx);
                    return;
                }
            }
        }
        if !all_met {
            return;
        }
        let unit = &mut self.units[svc];
        if !unit.missing.is_empty() {
            if !unit.require_armed {
                unit.require_armed = true;
                unit.epoch += 1;
                let missing = unit.missing.clone();
                let at = now + self.specs[svc].require_timeout;
                fx.push(report(svc, Report::WaitingForEndpoints { missing }));
                self.arm(svc, TimerKind::RequireTimeout, at, fx);
            }
            return;
        }
        unit.require_armed = false;
        let step = self.first_step(svc);
        self.launch(svc, step, None, fx);
    }

    /// A dependency is restarting: dependents that asked for it restart with it,
    /// once the dependency is back (they wait in `Waiting` meanwhile).
    fn restart_dependents(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        for k in 0..self.dependents[svc].len() {
            let d = self.dependents[svc][k];
            let follows = self.specs[d]
                .depends_on
                .iter()
                .any(|e| e.service == svc && e.restart);
            if !follows {
                continue;
            }
            let (pid, step) = match self.units[d].state {
                State::Starting { pid, .. } | State::Running { pid, .. } => (pid, Step::Main),
                State::Pre { pid } => (pid, Step::Pre),
                State::Backoff { .. } => {
                    self.units[d].state = State::Waiting;
                    continue;
                }
                _ => continue,
            };
            let dependency = self.specs[svc].name.clone();
            fx.push(report(d, Report::DependencyRestarting { dependency }));
            self.stop(d, pid, step, StopReason::DependencyRestart, now, fx);
        }
    }

    fn block_dependents(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        for k in 0..self.dependents[svc].len() {
            let dependent = self.dependents[svc][k];
            let explicit = self.specs[dependent]
                .depends_on
                .iter()
                .any(|e| e.service == svc && e.explicit);
            if explicit && self.units[dependent].state == State::Waiting {
                self.block(dependent, svc, now, fx);
            }
        }
    }

    fn block(&mut self, svc: usize, dependency: usize, now: Instant, fx: &mut Vec<Effect>) {
        self.units[svc].state = State::Blocked { dependency };
        fx.push(report(
            svc,
            Report::Blocked {
                dependency: self.specs[dependency].name.clone(),
                state: self.units[dependency].state.name(),
            },
        ));
        self.block_dependents(svc, now, fx);
        if self.specs[svc].essential && self.phase == Phase::Running {
            let code = match self.units[dependency].state {
                State::Failed { exit } => exit.code(),
                _ => 1,
            };
            let name = self.specs[svc].name.clone();
            self.begin_shutdown(
                code,
                format!("essential service {name} cannot start"),
                now,
                fx,
            );
        }
    }

    /// Takes back the service's endpoints if they are published.
    fn withdraw(&mut self, svc: usize, fx: &mut Vec<Effect>) {
        if std::mem::take(&mut self.units[svc].registered) {
            fx.push(Effect::Withdraw { svc });
        }
    }

    /// A start begins with the pre step, if there is one.
    fn first_step(&self, svc: usize) -> Step {
        if self.specs[svc].has_pre {
            Step::Pre
        } else {
            Step::Main
        }
    }

    fn launch(&mut self, svc: usize, step: Step, then: Option<Outcome>, fx: &mut Vec<Effect>) {
        self.units[svc].state = State::Launching { step, then };
        fx.push(Effect::Spawn { svc, step });
    }

    /// Arms a timer for the service's current epoch.
    fn arm(&mut self, svc: usize, kind: TimerKind, at: Instant, fx: &mut Vec<Effect>) {
        fx.push(Effect::ArmTimer {
            at,
            timer: Timer {
                svc: Some(svc),
                kind,
                epoch: self.units[svc].epoch,
            },
        });
    }

    fn begin_shutdown(&mut self, code: i32, reason: String, now: Instant, fx: &mut Vec<Effect>) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::ShuttingDown { code };
        fx.push(report_global(Report::ShuttingDown { reason }));
        fx.push(Effect::ArmTimer {
            at: now + self.shutdown_timeout,
            timer: Timer {
                svc: None,
                kind: TimerKind::ShutdownDeadline,
                epoch: 0,
            },
        });
        for unit in &mut self.units {
            if matches!(unit.state, State::Waiting | State::Backoff { .. }) {
                unit.state = State::Stopped;
            }
        }
        self.advance_shutdown(now, fx);
    }

    /// Stops every running service that no running service depends on.
    fn advance_shutdown(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if !self.is_shutting_down() {
            return;
        }
        for k in (0..self.order.len()).rev() {
            let svc = self.order[k];
            let (pid, step) = match self.units[svc].state {
                State::Running { pid, .. } | State::Starting { pid, .. } => (pid, Step::Main),
                State::Pre { pid } => (pid, Step::Pre),
                _ => continue,
            };
            let dependents_done = self.dependents[svc]
                .iter()
                .all(|&d| !self.units[d].state.is_active());
            if dependents_done {
                self.stop(svc, pid, step, StopReason::Shutdown, now, fx);
            }
        }
    }

    fn stop(
        &mut self,
        svc: usize,
        pid: Pid,
        step: Step,
        reason: StopReason,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        self.withdraw(svc, fx);
        let spec = &self.specs[svc];
        let (signal, timeout) = (spec.stop_signal, spec.stop_timeout);
        self.units[svc].epoch += 1;
        self.units[svc].state = State::Stopping { pid, step, reason };
        fx.push(report(svc, Report::Stopping { signal, timeout }));
        fx.push(Effect::SignalGroup { svc, pid, signal });
        // A stopped (SIGSTOP) process only acts on the stop signal once continued.
        fx.push(Effect::SignalGroup {
            svc,
            pid,
            signal: Signal::SIGCONT,
        });
        self.arm(svc, TimerKind::StopTimeout, now + timeout, fx);
    }

    fn kill_all(&mut self, reason: &'static str, fx: &mut Vec<Effect>) {
        for svc in 0..self.units.len() {
            let Some(pid) = self.units[svc].state.pid() else {
                continue;
            };
            fx.push(report(svc, Report::Killing { reason }));
            fx.push(Effect::SignalGroup {
                svc,
                pid,
                signal: Signal::SIGKILL,
            });
            let step = match self.units[svc].state {
                State::Pre { .. } => Step::Pre,
                State::Running { .. } | State::Starting { .. } => Step::Main,
                _ => continue,
            };
            self.units[svc].state = State::Stopping {
                pid,
                step,
                reason: StopReason::Shutdown,
            };
        }
    }

    /// Emits Exit once nothing is left to run: at the end of a shutdown, or when
    /// every service has ended by itself.
    fn check_finished(&mut self, fx: &mut Vec<Effect>) {
        let none_active = self.units.iter().all(|u| !u.state.is_active());
        match self.phase {
            Phase::ShuttingDown { code } if none_active => {
                self.phase = Phase::Done;
                fx.push(Effect::Exit { code });
            }
            Phase::Running
                if self.booted
                    && self.units.iter().all(|u| u.state.is_final())
                    && !self.units.iter().any(|u| u.held && !u.retired) =>
            {
                let failed = self.units.iter().any(|u| {
                    !u.retired && matches!(u.state, State::Failed { .. } | State::Blocked { .. })
                });
                let code = i32::from(failed);
                let reason = if failed {
                    "every service has ended, some failed"
                } else {
                    "every service has ended"
                };
                self.phase = Phase::Done;
                fx.push(report_global(Report::ShuttingDown {
                    reason: reason.into(),
                }));
                fx.push(Effect::Exit { code });
            }
            _ => {}
        }
    }
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

fn dependency_status(state: &State, cond: Condition) -> DepStatus {
    match (state, cond) {
        (State::Failed { .. } | State::Blocked { .. } | State::Stopped, _) => DepStatus::Broken,
        (State::Completed | State::Exited { .. }, _) => DepStatus::Met,
        (State::Running { .. }, Condition::Started | Condition::Ready) => DepStatus::Met,
        (State::Starting { .. }, Condition::Started) => DepStatus::Met,
        _ => DepStatus::Pending,
    }
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
