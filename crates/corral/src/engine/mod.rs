//! The pure lifecycle state machine: (state, event) -> effects. No I/O, no clock.

mod types;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use types::{Effect, Event, Exit, Outcome, Pid, Report, State, Step, Timer, TimerKind};

use crate::config::{Backoff, Condition, Config, RestartPolicy};

/// The part of a service's config the lifecycle needs.
#[derive(Debug, Clone)]
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
    /// (dependency index, condition)
    pub depends_on: Vec<(usize, Condition)>,
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
                    .map(|d| (d.service, d.condition))
                    .collect(),
            })
            .collect()
    }
}

/// One service's live bookkeeping.
#[derive(Debug, Clone)]
pub struct Unit {
    pub state: State,
    /// Bumped whenever a timer is armed; a timer from an older epoch is stale.
    epoch: u64,
    /// Consecutive restarts since the last stable run.
    failures: u32,
    /// Restarts in total.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
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
        let mut dependents = vec![Vec::new(); specs.len()];
        for (i, s) in specs.iter().enumerate() {
            for &(d, _) in &s.depends_on {
                dependents[d].push(i);
            }
        }
        let units = specs
            .iter()
            .map(|_| Unit {
                state: State::Waiting,
                epoch: 0,
                failures: 0,
                restarts: 0,
                last_exit: None,
            })
            .collect();
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
            Event::TimerFired(timer) => self.on_timer(timer, &mut fx),
            Event::Shutdown { code } => {
                let reason = if code == 0 {
                    "signal received".to_string()
                } else {
                    format!("exit code {code}")
                };
                self.begin_shutdown(code, reason, now, &mut fx);
            }
            Event::ForceStop => {
                if self.phase == Phase::Running {
                    self.begin_shutdown(0, "forced".into(), now, &mut fx);
                }
                self.kill_all("forced stop", &mut fx);
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
                self.units[svc].state = State::Running { pid, since: now };
                fx.push(report(svc, Report::Started { pid }));
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
        let stopping =
            matches!(self.units[svc].state, State::Stopping { .. }) || self.is_shutting_down();
        match step {
            Step::Pre if stopping => {
                self.units[svc].state = State::Stopped;
                fx.push(report(svc, Report::Stopped));
            }
            Step::Pre if exit.success() => self.launch(svc, Step::Main, None, fx),
            Step::Pre => {
                fx.push(report(svc, Report::StepFailed { step, exit }));
                let outcome = self.failure_outcome(svc, exit, false);
                self.finish_run(svc, outcome, now, fx);
            }
            Step::Main => self.on_main_ended(svc, exit, stopping, now, fx),
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
        stopping: bool,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let (ran_for, pid) = match self.units[svc].state {
            State::Running { since, pid } => (now.saturating_duration_since(since), Some(pid)),
            State::Stopping { pid, .. } => (Duration::ZERO, Some(pid)),
            _ => (Duration::ZERO, None),
        };
        self.units[svc].last_exit = Some(exit);
        let outcome = if stopping {
            Outcome::Stopped
        } else {
            if ran_for >= self.specs[svc].backoff.reset_after {
                self.units[svc].failures = 0;
            }
            if !(self.specs[svc].oneshot && exit.success()) {
                fx.push(report(svc, Report::Exited { exit }));
            }
            self.run_outcome(svc, exit)
        };
        // Whatever the service left in its process group goes with it.
        if let (Some(pid), Outcome::Restart { .. } | Outcome::Stopped) = (pid, outcome) {
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
            self.failure_outcome(svc, exit, true)
        } else if exit.success() {
            Outcome::Exited(exit)
        } else {
            Outcome::Failed(exit)
        }
    }

    /// Counts one more restart; Failed once max-restarts is exceeded.
    fn failure_outcome(&mut self, svc: usize, exit: Exit, policy_says_restart: bool) -> Outcome {
        let spec = &self.specs[svc];
        let allowed = policy_says_restart || spec.restart != RestartPolicy::Never;
        let unit = &mut self.units[svc];
        unit.failures += 1;
        match spec.max_restarts {
            _ if !allowed => Outcome::Failed(exit),
            Some(max) if unit.failures > max => Outcome::Failed(exit),
            _ => Outcome::Restart {
                delay: spec.backoff.delay(unit.failures),
                attempt: unit.failures,
            },
        }
    }

    /// Moves a service whose run is over into its next state.
    fn finish_run(&mut self, svc: usize, outcome: Outcome, now: Instant, fx: &mut Vec<Effect>) {
        if self.phase != Phase::Running
            && !matches!(outcome, Outcome::Failed(_) | Outcome::Completed)
        {
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
            Outcome::Restart { delay, attempt } if delay.is_zero() => {
                // No timer round trip when there is nothing to wait for.
                self.units[svc].restarts += 1;
                fx.push(report(svc, Report::Restarting { delay, attempt }));
                let step = self.first_step(svc);
                self.launch(svc, step, None, fx);
            }
            Outcome::Restart { delay, attempt } => {
                let unit = &mut self.units[svc];
                unit.restarts += 1;
                unit.epoch += 1;
                unit.state = State::Backoff {
                    until: now + delay,
                    attempt,
                };
                fx.push(report(svc, Report::Restarting { delay, attempt }));
                fx.push(Effect::ArmTimer {
                    at: now + delay,
                    timer: Timer {
                        svc: Some(svc),
                        kind: TimerKind::Backoff,
                        epoch: unit.epoch,
                    },
                });
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

    fn on_timer(&mut self, timer: Timer, fx: &mut Vec<Effect>) {
        match (timer.kind, timer.svc) {
            (TimerKind::ShutdownDeadline, _) => {
                if self.is_shutting_down() {
                    fx.push(report_global(Report::ShutdownTimeout));
                    self.kill_all("shutdown-timeout reached", fx);
                }
            }
            (TimerKind::Backoff, Some(svc)) => {
                let unit = &self.units[svc];
                if unit.epoch == timer.epoch && matches!(unit.state, State::Backoff { .. }) {
                    let step = self.first_step(svc);
                    self.launch(svc, step, None, fx);
                }
            }
            (TimerKind::StopTimeout, Some(svc)) => {
                let unit = &self.units[svc];
                if let State::Stopping { pid, .. } = unit.state {
                    if unit.epoch == timer.epoch {
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
                }
            }
            (_, None) => {}
        }
    }

    /// Starts every waiting service whose dependencies are met, in start order.
    fn start_ready_services(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if !self.booted || self.phase != Phase::Running {
            return;
        }
        for k in 0..self.order.len() {
            let svc = self.order[k];
            if self.units[svc].state != State::Waiting {
                continue;
            }
            let mut all_met = true;
            let mut blocked_by = None;
            for &(dep, cond) in &self.specs[svc].depends_on {
                match dependency_status(&self.units[dep].state, cond) {
                    DepStatus::Met => {}
                    DepStatus::Pending => all_met = false,
                    DepStatus::Broken => {
                        blocked_by = Some(dep);
                        break;
                    }
                }
            }
            if let Some(dep) = blocked_by {
                self.block(svc, dep, now, fx);
            } else if all_met {
                let step = self.first_step(svc);
                self.launch(svc, step, None, fx);
            }
        }
    }

    fn block_dependents(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        for k in 0..self.dependents[svc].len() {
            let dependent = self.dependents[svc][k];
            if self.units[dependent].state == State::Waiting {
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
                State::Running { pid, .. } => (pid, Step::Main),
                State::Pre { pid } => (pid, Step::Pre),
                _ => continue,
            };
            let dependents_done = self.dependents[svc]
                .iter()
                .all(|&d| !self.units[d].state.is_active());
            if dependents_done {
                self.stop(svc, pid, step, now, fx);
            }
        }
    }

    fn stop(&mut self, svc: usize, pid: Pid, step: Step, now: Instant, fx: &mut Vec<Effect>) {
        let spec = &self.specs[svc];
        let unit = &mut self.units[svc];
        unit.epoch += 1;
        unit.state = State::Stopping { pid, step };
        fx.push(report(
            svc,
            Report::Stopping {
                signal: spec.stop_signal,
                timeout: spec.stop_timeout,
            },
        ));
        fx.push(Effect::SignalGroup {
            svc,
            pid,
            signal: spec.stop_signal,
        });
        fx.push(Effect::ArmTimer {
            at: now + spec.stop_timeout,
            timer: Timer {
                svc: Some(svc),
                kind: TimerKind::StopTimeout,
                epoch: unit.epoch,
            },
        });
    }

    fn kill_all(&mut self, reason: &'static str, fx: &mut Vec<Effect>) {
        for svc in 0..self.units.len() {
            if let Some(pid) = self.units[svc].state.pid() {
                fx.push(report(svc, Report::Killing { reason }));
                fx.push(Effect::SignalGroup {
                    svc,
                    pid,
                    signal: Signal::SIGKILL,
                });
                if let State::Running { .. } | State::Pre { .. } = self.units[svc].state {
                    let step = if matches!(self.units[svc].state, State::Pre { .. }) {
                        Step::Pre
                    } else {
                        Step::Main
                    };
                    self.units[svc].state = State::Stopping { pid, step };
                }
            }
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
            Phase::Running if self.booted && self.units.iter().all(|u| u.state.is_final()) => {
                let failed = self
                    .units
                    .iter()
                    .any(|u| matches!(u.state, State::Failed { .. } | State::Blocked { .. }));
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
