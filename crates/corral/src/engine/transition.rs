//! One service's transition: every (state, input) pair is decided in the one
//! match below; there is no catch-all arm, so a new state or input does not
//! compile until each pair is decided. What follows a process's end is
//! computed in `finish_run` from what is wanted at that moment.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{
    report, DepStatus, Effect, Engine, Exit, HealthStatus, Input, LastRun, Launch, Notified,
    Outcome, Phase, Pid, ProbeRole, Report, State, Step, StopCause, TimerKind, Want,
};
use crate::config::{Overlap, RestartPolicy};

impl Engine {
    pub(super) fn transition(
        &mut self,
        svc: usize,
        input: Input,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        use State as S;
        if let Some(touched) = &mut self.touched {
            touched.push(svc);
        }
        let state = self.units[svc].state;
        match (state, input) {
            // A spawn was asked for; the runtime answers at once.
            (S::Launching(Launch::Pre), Input::Launched { pid }) => {
                self.units[svc].state = S::Pre { pid };
                fx.push(report(svc, Report::PreStarted { pid }));
                if self.units[svc].want != Want::Up {
                    self.stop(svc, pid, Step::Pre, StopCause::Asked, now, fx);
                }
            }
            (S::Launching(Launch::Main), Input::Launched { pid }) => {
                self.main_launched(svc, pid, now, fx)
            }
            (S::Launching(Launch::Post(then)), Input::Launched { pid }) => {
                self.units[svc].state = S::Post { pid, then };
                fx.push(report(svc, Report::PostStarted { pid }));
            }
            (S::Launching(launch), Input::LaunchFailed { error, permanent }) => {
                let step = launch.step();
                fx.push(report(
                    svc,
                    Report::SpawnFailed {
                        step,
                        error: error.clone(),
                    },
                ));
                // 127 is what a shell reports for a command it cannot run.
                let exit = Exit::Code(127);
                // The new process of an update: the old one goes on.
                if step != Step::Post && self.update_failed(svc, Some(exit), None, now, fx) {
                    return;
                }
                // A service whose program cannot be run fails at once: a
                // restart would fail the same way. (A job's run is a result.)
                if permanent && step != Step::Post && self.specs[svc].job.is_none() {
                    let unit = &mut self.units[svc];
                    unit.last_exit = Some(exit);
                    unit.error = Some(error);
                    self.finish_run(svc, Outcome::Failed(exit), now, fx);
                    return;
                }
                match launch {
                    Launch::Pre => self.pre_ended(svc, exit, None, now, fx),
                    Launch::Main => self.main_ended(svc, exit, None, Duration::ZERO, None, now, fx),
                    Launch::Post(then) => self.post_ended(svc, exit, then, now, fx),
                }
            }
            // No spawn is outstanding in these states, so no answer can come.
            (
                S::Waiting
                | S::Pre { .. }
                | S::Starting { .. }
                | S::Running { .. }
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Launched { .. } | Input::LaunchFailed { .. },
            ) => {}

            // The current process ended (the router matched its pid).
            (S::Pre { .. }, Input::Ended { exit }) => self.pre_ended(svc, exit, None, now, fx),
            (S::Starting { pid, since } | S::Running { pid, since }, Input::Ended { exit }) => {
                let ran_for = now.saturating_duration_since(since);
                self.main_ended(svc, exit, Some(pid), ran_for, None, now, fx)
            }
            (
                S::Stopping {
                    step: Step::Pre,
                    cause,
                    ..
                },
                Input::Ended { exit },
            ) => self.pre_ended(svc, exit, Some(cause), now, fx),
            (
                S::Stopping {
                    pid,
                    step: Step::Main,
                    cause,
                },
                Input::Ended { exit },
            ) => self.main_ended(svc, exit, Some(pid), Duration::ZERO, Some(cause), now, fx),
            // A post step is never stopped, only killed with everything.
            (
                S::Stopping {
                    step: Step::Post, ..
                },
                Input::Ended { exit },
            ) => self.post_ended(svc, exit, Outcome::Stopped, now, fx),
            (S::Post { then, .. }, Input::Ended { exit }) => {
                self.post_ended(svc, exit, then, now, fx)
            }
            // No process: the router passes only the current process's end.
            (
                S::Waiting
                | S::Launching(_)
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Ended { .. },
            ) => {}

            // Timers of the current epoch.
            (S::Backoff { .. }, Input::Timer(TimerKind::Backoff)) => {
                let first = self.first_step(svc);
                self.launch(svc, first, fx);
            }
            (
                S::Starting { .. } | S::Stopping { .. },
                Input::Timer(TimerKind::StartTimeout | TimerKind::StopTimeout),
            ) if self.units[svc].extended_until.is_some_and(|at| at > now) => {
                // EXTEND_TIMEOUT_USEC= moved the deadline; its own timer comes then.
            }
            (S::Stopping { pid, .. }, Input::Timer(TimerKind::StopTimeout)) => {
                let reason = "stop-timeout reached";
                fx.push(report(svc, Report::Killing { reason }));
                fx.push(kill(svc, pid));
            }
            (S::Starting { .. }, Input::Timer(TimerKind::ReadyProbe)) => {
                let epoch = self.units[svc].epoch;
                fx.push(Effect::RunProbe {
                    svc,
                    role: ProbeRole::Ready,
                    epoch,
                });
            }
            (S::Starting { pid, .. }, Input::Timer(TimerKind::StartTimeout)) => {
                let timeout = self.specs[svc]
                    .ready
                    .as_deref()
                    .map(|p| p.start_timeout)
                    .unwrap_or_default();
                let last_error = self.units[svc].last_ready_error.take();
                fx.push(report(
                    svc,
                    Report::NotReady {
                        timeout,
                        last_error,
                    },
                ));
                self.stop(svc, pid, Step::Main, StopCause::NotReady, now, fx);
            }
            (S::Running { .. }, Input::Timer(TimerKind::HealthProbe)) => {
                let epoch = self.units[svc].epoch;
                fx.push(Effect::RunProbe {
                    svc,
                    role: ProbeRole::Health,
                    epoch,
                });
            }
            (S::Waiting, Input::Timer(TimerKind::RequireTimeout)) => {
                let unit = &mut self.units[svc];
                if unit.require_armed && !unit.missing.is_empty() {
                    unit.require_armed = false;
                    let missing = unit.missing.clone();
                    let timeout = self.specs[svc].require_timeout;
                    fx.push(report(svc, Report::RequireTimeout { missing, timeout }));
                    self.finish_run(svc, Outcome::Failed(Exit::Code(1)), now, fx);
                }
            }
            (S::Starting { .. } | S::Running { .. }, Input::Timer(TimerKind::ChangeDue)) => {
                self.change_due(svc, now, fx)
            }
            // A timer for another state than the current one: stale.
            (
                S::Waiting
                | S::Launching(_)
                | S::Pre { .. }
                | S::Starting { .. }
                | S::Running { .. }
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Timer(_),
            ) => {}

            // Probe answers of the current epoch.
            (
                S::Starting { pid, since },
                Input::Probe {
                    role: ProbeRole::Ready,
                    result: Ok(()),
                },
            ) => {
                self.units[svc].state = S::Running { pid, since };
                let after = now.saturating_duration_since(since);
                fx.push(report(svc, Report::Ready { after }));
                self.on_ready(svc, now, fx);
            }
            (
                S::Starting { .. },
                Input::Probe {
                    role: ProbeRole::Ready,
                    result: Err(reason),
                },
            ) => {
                self.units[svc].last_ready_error = Some(reason);
                if let Some(plan) = self.specs[svc]
                    .ready
                    .as_deref()
                    .copied()
                    .filter(|p| p.active)
                {
                    self.arm(svc, TimerKind::ReadyProbe, now + plan.interval, fx);
                }
            }
            (
                S::Running { pid, .. },
                Input::Probe {
                    role: ProbeRole::Health,
                    result,
                },
            ) => self.health_checked(svc, pid, result, now, fx),
            // A probe of a role this state does not run: stale.
            (
                S::Waiting
                | S::Launching(_)
                | S::Pre { .. }
                | S::Starting { .. }
                | S::Running { .. }
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Probe { .. },
            ) => {}

            // What is wanted changed (`ask` updated `want` already).
            (S::Waiting, Input::Asked(_)) => {
                if self.units[svc].want == Want::Up {
                    self.units[svc].restart_pending = false;
                    self.try_start(svc, now, fx);
                } else {
                    self.units[svc].state = S::Stopped;
                    fx.push(report(svc, Report::Stopped));
                }
            }
            (S::Pre { pid }, Input::Asked(_)) => {
                if self.units[svc].want != Want::Up || self.units[svc].restart_pending {
                    self.stop(svc, pid, Step::Pre, StopCause::Asked, now, fx);
                }
            }
            // start-first: the new process starts while this one serves.
            (S::Running { pid, since }, Input::Asked(_))
                if self.specs[svc].start_first
                    && self.units[svc].want == Want::Up
                    && self.units[svc].restart_pending
                    && self.phase == Phase::Running =>
            {
                let unit = &mut self.units[svc];
                unit.restart_pending = false;
                unit.outgoing = Some((pid, since));
                fx.push(report(svc, Report::StartingFirst { old: pid }));
                let first = self.first_step(svc);
                self.launch(svc, first, fx);
            }
            (S::Starting { pid, .. } | S::Running { pid, .. }, Input::Asked(_)) => {
                if self.units[svc].want != Want::Up || self.units[svc].restart_pending {
                    self.stop(svc, pid, Step::Main, StopCause::Asked, now, fx);
                }
            }
            // The process is on its way: what follows is decided once it is
            // there (Launched) or gone (finish_run), from what is wanted then.
            (S::Launching(_) | S::Stopping { .. } | S::Post { .. }, Input::Asked(_)) => {}
            (S::Backoff { .. }, Input::Asked(_)) => {
                if self.units[svc].want == Want::Up {
                    // Asked to run: no point waiting out the backoff.
                    self.units[svc].restart_pending = false;
                    let first = self.first_step(svc);
                    self.launch(svc, first, fx);
                } else {
                    self.units[svc].state = S::Stopped;
                    fx.push(report(svc, Report::Stopped));
                }
            }
            (
                S::Completed | S::Exited { .. } | S::Failed { .. } | S::Blocked { .. } | S::Stopped,
                Input::Asked(_),
            ) => {
                if self.units[svc].want == Want::Up {
                    self.units[svc].restart_pending = false;
                    self.wait(svc);
                    self.try_start(svc, now, fx);
                }
            }

            // A job between runs: a restart is a run now; stopped, it stays down.
            (S::Scheduled, Input::Asked(_)) => {
                let unit = &mut self.units[svc];
                if unit.want != Want::Up {
                    unit.state = S::Stopped;
                    fx.push(report(svc, Report::Stopped));
                } else if std::mem::take(&mut unit.restart_pending) {
                    self.begin_run(svc, now, fx);
                }
            }

            // A job's tick, or an operator's start of a job.
            (S::Scheduled | S::Backoff { .. }, Input::Tick { .. }) => self.begin_run(svc, now, fx),
            // Its first run waits for its dependencies.
            (S::Waiting, Input::Tick { .. }) => {
                self.units[svc].due = true;
                self.try_start(svc, now, fx);
            }
            (
                S::Launching(_)
                | S::Pre { .. }
                | S::Starting { .. }
                | S::Running { .. }
                | S::Stopping { .. }
                | S::Post { .. },
                Input::Tick { manual },
            ) => self.overlap(svc, manual, now, fx),
            // Only an operator's start (which wanted it up again) runs it.
            (
                S::Completed | S::Exited { .. } | S::Failed { .. } | S::Blocked { .. } | S::Stopped,
                Input::Tick { manual },
            ) => {
                if manual {
                    self.units[svc].due = true;
                    self.wait(svc);
                    self.try_start(svc, now, fx);
                }
            }

            // Something it waits for may have changed.
            (S::Waiting, Input::Poll) => self.try_start(svc, now, fx),
            (
                S::Launching(_)
                | S::Pre { .. }
                | S::Starting { .. }
                | S::Running { .. }
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Poll,
            ) => {}

            // A `restart = true` dependency restarts: go down with it, and
            // wait (wanted up) until it is back.
            (
                S::Pre { pid } | S::Starting { pid, .. } | S::Running { pid, .. },
                Input::DependencyRestarting { dependency },
            ) => {
                let step = if matches!(state, S::Pre { .. }) {
                    Step::Pre
                } else {
                    Step::Main
                };
                let dependency = self.specs[dependency].name.clone();
                fx.push(report(svc, Report::DependencyRestarting { dependency }));
                // All of it goes down, an update's old process too.
                self.retire_outgoing(svc, false, fx);
                self.stop(svc, pid, step, StopCause::Asked, now, fx);
            }
            (S::Backoff { .. }, Input::DependencyRestarting { .. }) => {
                self.wait(svc);
            }
            (
                S::Waiting
                | S::Launching(_)
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::DependencyRestarting { .. },
            ) => {}

            // Shutdown: what has not started never will; what runs stops once
            // nothing running depends on it.
            (S::Waiting | S::Backoff { .. } | S::Scheduled, Input::Shutdown { .. }) => {
                self.units[svc].state = S::Stopped;
            }
            (
                S::Pre { pid },
                Input::Shutdown {
                    dependents_done: true,
                },
            ) => self.stop(svc, pid, Step::Pre, StopCause::Asked, now, fx),
            (
                S::Starting { pid, .. } | S::Running { pid, .. },
                Input::Shutdown {
                    dependents_done: true,
                },
            ) => self.stop(svc, pid, Step::Main, StopCause::Asked, now, fx),
            (
                S::Pre { .. } | S::Starting { .. } | S::Running { .. },
                Input::Shutdown {
                    dependents_done: false,
                },
            ) => {}
            (
                S::Launching(_)
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped,
                Input::Shutdown { .. },
            ) => {}

            // What the process said on its notify socket.
            (S::Running { pid, since }, Input::Notified(Notified::Reloading)) => {
                let unit = &mut self.units[svc];
                unit.state = S::Starting { pid, since };
                // Health checks pause; READY=1 starts them again.
                unit.epoch += 1;
                fx.push(report(svc, Report::Reloading));
            }
            (S::Starting { .. } | S::Running { .. }, Input::Notified(Notified::Stopping)) => {
                self.withdraw(svc, fx);
                fx.push(report(svc, Report::SaysStopping));
            }
            (
                S::Starting { since, .. } | S::Running { since, .. },
                Input::Notified(Notified::MainPid(main)),
            ) => {
                self.units[svc].state = match state {
                    S::Starting { .. } => S::Starting { pid: main, since },
                    _ => S::Running { pid: main, since },
                };
                fx.push(report(svc, Report::MainPid { pid: main }));
            }
            (S::Stopping { step, cause, .. }, Input::Notified(Notified::MainPid(main))) => {
                self.units[svc].state = S::Stopping {
                    pid: main,
                    step,
                    cause,
                };
                fx.push(report(svc, Report::MainPid { pid: main }));
            }
            (S::Starting { .. }, Input::Notified(Notified::ExtendTimeout(by))) => {
                self.extend(svc, TimerKind::StartTimeout, by, now, fx)
            }
            (S::Stopping { .. }, Input::Notified(Notified::ExtendTimeout(by))) => {
                self.extend(svc, TimerKind::StopTimeout, by, now, fx)
            }
            (
                S::Starting { pid, .. } | S::Running { pid, .. },
                Input::Notified(Notified::WatchdogMissed),
            ) => {
                let signal = self.specs[svc].watchdog_signal;
                fx.push(report(svc, Report::WatchdogMissed { signal }));
                self.stop(svc, pid, Step::Main, StopCause::Watchdog, now, fx);
            }
            // Nothing to follow, extend or check in these states.
            (
                S::Waiting
                | S::Launching(_)
                | S::Pre { .. }
                | S::Starting { .. }
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Notified(Notified::Reloading),
            )
            | (
                S::Waiting
                | S::Launching(_)
                | S::Pre { .. }
                | S::Stopping { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Notified(Notified::Stopping | Notified::WatchdogMissed),
            )
            | (
                S::Waiting
                | S::Launching(_)
                | S::Pre { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Notified(Notified::MainPid(_)),
            )
            | (
                S::Waiting
                | S::Launching(_)
                | S::Pre { .. }
                | S::Running { .. }
                | S::Post { .. }
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Notified(Notified::ExtendTimeout(_)),
            ) => {}

            // Kill now: the whole process group, whatever step runs.
            (S::Pre { pid }, Input::Kill { reason }) => {
                fx.push(report(svc, Report::Killing { reason }));
                fx.push(kill(svc, pid));
                self.units[svc].state = S::Stopping {
                    pid,
                    step: Step::Pre,
                    cause: StopCause::Asked,
                };
            }
            (S::Starting { pid, .. } | S::Running { pid, .. }, Input::Kill { reason }) => {
                self.retire_outgoing(svc, true, fx);
                self.withdraw(svc, fx);
                fx.push(report(svc, Report::Killing { reason }));
                fx.push(kill(svc, pid));
                self.units[svc].state = S::Stopping {
                    pid,
                    step: Step::Main,
                    cause: StopCause::Asked,
                };
            }
            (S::Stopping { pid, .. } | S::Post { pid, .. }, Input::Kill { reason }) => {
                self.retire_outgoing(svc, true, fx);
                fx.push(report(svc, Report::Killing { reason }));
                fx.push(kill(svc, pid));
            }
            (
                S::Waiting
                | S::Launching(_)
                | S::Backoff { .. }
                | S::Completed
                | S::Exited { .. }
                | S::Failed { .. }
                | S::Blocked { .. }
                | S::Stopped
                | S::Scheduled,
                Input::Kill { .. },
            ) => {}
        }
    }

    fn main_launched(&mut self, svc: usize, pid: Pid, now: Instant, fx: &mut Vec<Effect>) {
        let unit = &mut self.units[svc];
        unit.error = None;
        unit.epoch += 1;
        unit.health = HealthStatus::default();
        unit.last_ready_error = None;
        let wanted = unit.want == Want::Up;
        if self.specs[svc].job.is_some() {
            fx.push(report(svc, Report::RunStarted { pid }));
        } else {
            fx.push(report(svc, Report::Started { pid }));
        }
        let ready = self.specs[svc].ready.as_deref().copied();
        self.units[svc].state = match ready {
            Some(_) => State::Starting { pid, since: now },
            None => State::Running { pid, since: now },
        };
        if !wanted {
            // Stopped while it was being spawned.
            self.stop(svc, pid, Step::Main, StopCause::Asked, now, fx);
            return;
        }
        match ready {
            Some(plan) => {
                self.arm(svc, TimerKind::StartTimeout, now + plan.start_timeout, fx);
                if plan.active {
                    self.arm(svc, TimerKind::ReadyProbe, now + plan.initial_delay, fx);
                }
            }
            None => self.on_ready(svc, now, fx),
        }
        self.poll_all(now, fx);
    }

    /// The service just became ready (or has no readiness probe).
    fn on_ready(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        // A start-first update is through: the old process goes. Its
        // endpoint is the instance's, which the new one takes over as is.
        if let Some((old, _)) = self.units[svc].outgoing {
            let signal = self.specs[svc].stop_signal;
            fx.push(report(svc, Report::Replaced { old, signal }));
            self.retire_outgoing(svc, false, fx);
        }
        if self.specs[svc].provides && !self.units[svc].registered {
            self.units[svc].registered = true;
            fx.push(Effect::Register { svc });
        }
        if let Some(plan) = self.specs[svc].health.as_deref().copied() {
            let first = now + plan.initial_delay + plan.interval;
            self.arm(svc, TimerKind::HealthProbe, first, fx);
        }
        self.poll_all(now, fx);
    }

    fn health_checked(
        &mut self,
        svc: usize,
        pid: Pid,
        result: Result<(), String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(plan) = self.specs[svc].health.as_deref().copied() else {
            return;
        };
        let health = &mut self.units[svc].health;
        match result {
            Ok(()) => {
                if health.failures > 0 {
                    fx.push(report(svc, Report::Recovered));
                }
                health.healthy = Some(true);
                health.failures = 0;
            }
            Err(reason) => {
                health.failures += 1;
                let failures = health.failures;
                health.last_failure = Some(reason.clone());
                let retries = plan.retries;
                fx.push(report(
                    svc,
                    Report::HealthFailed {
                        failures,
                        retries,
                        reason,
                    },
                ));
                if failures >= retries {
                    self.units[svc].health.healthy = Some(false);
                    fx.push(report(svc, Report::Unhealthy { failures }));
                    self.stop(svc, pid, Step::Main, StopCause::Unhealthy, now, fx);
                    return;
                }
            }
        }
        self.arm(svc, TimerKind::HealthProbe, now + plan.interval, fx);
    }

    /// The pre step ended; `cause` is set when corral had stopped it.
    fn pre_ended(
        &mut self,
        svc: usize,
        exit: Exit,
        cause: Option<StopCause>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if !exit.success() && self.update_failed(svc, Some(exit), None, now, fx) {
            return;
        }
        let go_on = self.phase == Phase::Running && self.units[svc].want == Want::Up;
        if self.specs[svc].job.is_some() {
            self.units[svc].last_exit = Some(exit);
        }
        match cause {
            Some(_) => self.finish_run(svc, Outcome::Stopped, now, fx),
            None if exit.success() && go_on => self.launch(svc, Launch::Main, fx),
            None if exit.success() => self.finish_run(svc, Outcome::Stopped, now, fx),
            None => {
                fx.push(report(
                    svc,
                    Report::StepFailed {
                        step: Step::Pre,
                        exit,
                    },
                ));
                let outcome = self.failure_outcome(svc, exit);
                self.finish_run(svc, outcome, now, fx);
            }
        }
    }

    /// The service's process ended: by itself (`cause` None) or after corral
    /// stopped it. `pid` is None when it never started.
    #[allow(clippy::too_many_arguments)]
    fn main_ended(
        &mut self,
        svc: usize,
        exit: Exit,
        pid: Option<Pid>,
        ran_for: Duration,
        cause: Option<StopCause>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.update_failed(svc, Some(exit), pid, now, fx) {
            return;
        }
        let unit = &mut self.units[svc];
        unit.last_exit = Some(exit);
        unit.last_exit_asked = cause == Some(StopCause::Asked);
        unit.change = None;
        let wanted = self.phase == Phase::Running && unit.want == Want::Up;
        let mut abort = false;
        // A crashed provider is withdrawn at once.
        self.withdraw(svc, fx);
        let outcome = match cause {
            None => {
                if ran_for >= self.specs[svc].backoff.reset_after {
                    self.units[svc].failures = 0;
                }
                // A job's run result is reported once the run is over.
                let spec = &self.specs[svc];
                let ended = !(spec.oneshot && exit.success()) && spec.job.is_none();
                if ended {
                    fx.push(report(svc, Report::Ended { exit }));
                }
                let from = self.abort_on_exit.and_then(|a| a.exit_code_from);
                let aborts = self.abort_on_exit.is_some() && (ended || from == Some(svc));
                if wanted && aborts {
                    // `up --abort-on-exit`: the first service to end ends the
                    // run (once this run is over, below).
                    abort = true;
                    if exit.success() {
                        Outcome::Done(exit)
                    } else {
                        Outcome::Failed(exit)
                    }
                } else if wanted {
                    self.run_outcome(svc, exit)
                } else {
                    Outcome::Stopped
                }
            }
            Some(StopCause::Asked) => Outcome::Stopped,
            Some(StopCause::NotReady | StopCause::Unhealthy | StopCause::Watchdog) if wanted => {
                self.failure_outcome(svc, exit)
            }
            Some(StopCause::NotReady | StopCause::Unhealthy | StopCause::Watchdog) => {
                Outcome::Stopped
            }
        };
        // Whatever the service left in its process group goes with it.
        if let (Some(pid), Outcome::Restart { .. } | Outcome::Stopped | Outcome::Wait) =
            (pid, outcome)
        {
            fx.push(kill(svc, pid));
        }
        if self.specs[svc].has_post {
            self.launch(svc, Launch::Post(outcome), fx);
        } else {
            self.finish_run(svc, outcome, now, fx);
        }
        if abort {
            let name = &self.specs[svc].name;
            let reason = format!("{name} ended (--abort-on-exit)");
            self.begin_shutdown(exit.code(), reason, None, now, fx);
        }
    }

    fn post_ended(
        &mut self,
        svc: usize,
        exit: Exit,
        then: Outcome,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if !exit.success() {
            fx.push(report(
                svc,
                Report::StepFailed {
                    step: Step::Post,
                    exit,
                },
            ));
        }
        self.finish_run(svc, then, now, fx);
    }

    /// What a main-process exit leads to under the restart policy.
    fn run_outcome(&mut self, svc: usize, exit: Exit) -> Outcome {
        let spec = &self.specs[svc];
        if (spec.oneshot || spec.job.is_some()) && exit.success() {
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
            Outcome::Done(exit)
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

    /// A run is over (process and post step gone): the next state follows
    /// from the outcome, corrected by what is wanted now. A pending restart
    /// starts it again; a service wanted down stays down; one stopped while
    /// it was wanted down but wanted up again by now starts again.
    fn finish_run(&mut self, svc: usize, outcome: Outcome, now: Instant, fx: &mut Vec<Effect>) {
        let running = self.phase == Phase::Running;
        let wanted = running && self.units[svc].want == Want::Up;
        // A job's run ending is a result, not the service's end.
        let outcome = match (self.specs[svc].job, wanted) {
            (Some(_), true) => return self.end_run(svc, outcome, now, fx),
            (Some(_), false) => {
                self.record_run(svc, outcome, now, fx);
                Outcome::Stopped
            }
            (None, _) => outcome,
        };
        let unit = &mut self.units[svc];
        let outcome = match outcome {
            _ if wanted && unit.restart_pending => {
                unit.restart_pending = false;
                unit.failures = 0;
                Outcome::Wait
            }
            Outcome::Failed(_) | Outcome::Completed => outcome,
            _ if !wanted => Outcome::Stopped,
            Outcome::Stopped => Outcome::Wait,
            Outcome::Done(_) | Outcome::Restart { .. } | Outcome::Wait => outcome,
        };
        match outcome {
            Outcome::Completed => {
                self.units[svc].state = State::Completed;
                fx.push(report(svc, Report::Completed));
                // An essential oneshot (a test run, a batch) that succeeds
                // is the end of the run: everything stops, exit 0.
                if self.specs[svc].essential && running {
                    let name = &self.specs[svc].name;
                    let reason = format!("essential service {name} completed");
                    self.begin_shutdown(0, reason, None, now, fx);
                } else {
                    self.poll_all(now, fx);
                }
            }
            Outcome::Done(exit) => {
                self.units[svc].state = State::Exited { exit };
                // An essential service's end ends everything: nothing starts after it.
                if self.specs[svc].essential {
                    let name = &self.specs[svc].name;
                    let reason = format!("essential service {name} exited");
                    self.begin_shutdown(exit.code(), reason, None, now, fx);
                } else {
                    self.poll_all(now, fx);
                }
            }
            Outcome::Restart { delay, attempt } => {
                self.units[svc].restarts += 1;
                fx.push(report(svc, Report::Restarting { delay, attempt }));
                self.restart_dependents(svc, now, fx);
                if delay.is_zero() {
                    // No timer round trip when there is nothing to wait for.
                    let first = self.first_step(svc);
                    self.launch(svc, first, fx);
                } else {
                    self.units[svc].state = State::Backoff {
                        until: now + delay,
                        attempt,
                    };
                    self.arm(svc, TimerKind::Backoff, now + delay, fx);
                }
            }
            Outcome::Wait => {
                self.wait(svc);
                self.try_start(svc, now, fx);
                self.poll_all(now, fx);
            }
            Outcome::Failed(exit) => {
                let unit = &mut self.units[svc];
                unit.state = State::Failed { exit };
                if unit.failures > 0 && self.specs[svc].restart != RestartPolicy::Never {
                    let restarts = unit.failures - 1;
                    fx.push(report(svc, Report::GaveUp { restarts, exit }));
                } else {
                    fx.push(report(svc, Report::Failed { exit }));
                }
                self.block_dependents(svc, now, fx);
                if self.specs[svc].essential && running {
                    let name = &self.specs[svc].name;
                    let reason = format!("essential service {name} failed");
                    self.begin_shutdown(exit.code(), reason, None, now, fx);
                } else {
                    self.poll_all(now, fx);
                }
            }
            Outcome::Stopped => {
                self.units[svc].state = State::Stopped;
                fx.push(report(svc, Report::Stopped));
            }
        }
    }

    /// Launches a waiting service if its dependencies are met, or blocks it if
    /// one of them can no longer be met.
    fn try_start(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        let unit = &self.units[svc];
        if unit.state != State::Waiting || unit.want != Want::Up || self.phase != Phase::Running {
            return;
        }
        let mut all_met = true;
        for e in &self.specs[svc].depends_on {
            match self.dependency_status(e) {
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
        if self.specs[svc].job.is_none() {
            let first = self.first_step(svc);
            self.launch(svc, first, fx);
        } else if unit.due {
            self.begin_run(svc, now, fx);
        } else {
            // Between runs a job counts as set up: its dependents may go.
            unit.state = State::Scheduled;
            self.poll_all(now, fx);
        }
    }

    /// A job's run begins (with its pre step, if it has one).
    fn begin_run(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        let unit = &mut self.units[svc];
        unit.due = false;
        unit.run_started = Some(now);
        unit.last_exit = None;
        let first = self.first_step(svc);
        self.launch(svc, first, fx);
    }

    /// A tick (or an operator's start) while a job's run is still going.
    fn overlap(&mut self, svc: usize, manual: bool, now: Instant, fx: &mut Vec<Effect>) {
        let Some(job) = self.specs[svc].job else {
            return;
        };
        let unit = &mut self.units[svc];
        match job.overlap {
            Overlap::Queue if !unit.due => {
                unit.due = true;
                fx.push(report(svc, Report::RunQueued { manual }));
            }
            // One queued run stands for every tick until it starts.
            Overlap::Skip | Overlap::Queue => {
                let queued = unit.due;
                fx.push(report(svc, Report::RunSkipped { manual, queued }));
            }
            Overlap::Replace => {
                unit.due = true;
                fx.push(report(svc, Report::RunReplaced { manual }));
                match unit.state {
                    State::Pre { pid } => self.stop(svc, pid, Step::Pre, StopCause::Asked, now, fx),
                    State::Starting { pid, .. } | State::Running { pid, .. } => {
                        self.stop(svc, pid, Step::Main, StopCause::Asked, now, fx)
                    }
                    // Ending already, or about to run: the new run follows.
                    _ => {}
                }
            }
        }
    }

    /// A job's run is over: record it, then run again if one is due, or
    /// wait for the next tick.
    fn end_run(&mut self, svc: usize, outcome: Outcome, now: Instant, fx: &mut Vec<Effect>) {
        self.record_run(svc, outcome, now, fx);
        let unit = &mut self.units[svc];
        if std::mem::take(&mut unit.restart_pending) || unit.due {
            self.begin_run(svc, now, fx);
        } else {
            unit.state = State::Scheduled;
            self.poll_all(now, fx);
        }
    }

    /// Keeps how a job's run went, and reports it.
    fn record_run(&mut self, svc: usize, outcome: Outcome, now: Instant, fx: &mut Vec<Effect>) {
        let unit = &mut self.units[svc];
        if let Some(started) = unit.run_started.take() {
            let exit = match outcome {
                Outcome::Completed => Exit::Code(0),
                Outcome::Done(exit) | Outcome::Failed(exit) => exit,
                Outcome::Restart { .. } | Outcome::Wait | Outcome::Stopped => {
                    unit.last_exit.unwrap_or(Exit::Signal(libc::SIGKILL))
                }
            };
            let took = now.saturating_duration_since(started);
            unit.last_run = Some(Box::new(LastRun {
                started,
                took,
                exit,
            }));
            fx.push(report(svc, Report::RunEnded { exit, took }));
        }
    }

    /// A dependency is restarting: dependents that asked for it restart with it.
    fn restart_dependents(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        for k in 0..self.dependents[svc].len() {
            let d = self.dependents[svc][k];
            let follows = self.specs[d]
                .depends_on
                .iter()
                .any(|e| e.service == svc && e.restart);
            if follows {
                self.transition(d, Input::DependencyRestarting { dependency: svc }, now, fx);
            }
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
            let name = &self.specs[svc].name;
            let reason = format!("essential service {name} cannot start");
            self.begin_shutdown(code, reason, None, now, fx);
        }
    }

    /// Sends the stop signal: endpoints are withdrawn first, so clients drain
    /// before the process hears of it.
    fn stop(
        &mut self,
        svc: usize,
        pid: Pid,
        step: Step,
        cause: StopCause,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        self.withdraw(svc, fx);
        // Stopped during a start-first update because it is wanted down:
        // the old process goes too. (A new one stopped for any other reason
        // leaves the old one serving: `update_failed`.)
        if self.phase != Phase::Running || self.units[svc].want != Want::Up {
            self.retire_outgoing(svc, false, fx);
        }
        let spec = &self.specs[svc];
        let unit = &mut self.units[svc];
        unit.extended_until = None;
        let (signal, timeout) = (
            if cause == StopCause::Watchdog {
                spec.watchdog_signal
            } else {
                spec.stop_signal
            },
            unit.stop_within
                .take()
                .unwrap_or(spec.stop_timeout)
                .mul_f64(f64::from(self.stop_percent) / 100.0),
        );
        unit.epoch += 1;
        unit.change = None;
        unit.state = State::Stopping { pid, step, cause };
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

    /// EXTEND_TIMEOUT_USEC=: the current start or stop may last until `by`
    /// from now (never less than it had).
    fn extend(
        &mut self,
        svc: usize,
        kind: TimerKind,
        by: Duration,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let until = now + by;
        let unit = &mut self.units[svc];
        if unit.extended_until.is_none_or(|at| at < until) {
            unit.extended_until = Some(until);
            fx.push(report(svc, Report::TimeoutExtended { by }));
            self.arm(svc, kind, until, fx);
        }
    }

    /// Ends the old process of a start-first update, if there is one:
    /// its stop signal and stop-timeout, or (`kill`) SIGKILL now.
    fn retire_outgoing(&mut self, svc: usize, kill: bool, fx: &mut Vec<Effect>) {
        if let Some((pid, _)) = self.units[svc].outgoing.take() {
            let spec = &self.specs[svc];
            let (signal, timeout) = if kill {
                (Signal::SIGKILL, Duration::ZERO)
            } else {
                let timeout = spec
                    .stop_timeout
                    .mul_f64(f64::from(self.stop_percent) / 100.0);
                (spec.stop_signal, timeout)
            };
            fx.push(Effect::Retire {
                svc,
                pid,
                signal,
                timeout,
            });
        }
    }

    /// The new process of a start-first update ended (or its pre step
    /// failed, or it could not be spawned) while the old one still serves
    /// and is wanted: the old one goes on as the service's process, and
    /// what the new one left is killed. False when there is no such update.
    fn update_failed(
        &mut self,
        svc: usize,
        exit: Option<Exit>,
        pid: Option<Pid>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> bool {
        let unit = &mut self.units[svc];
        let Some((old, since)) = unit.outgoing else {
            return false;
        };
        if self.phase != Phase::Running || unit.want != Want::Up {
            return false;
        }
        unit.outgoing = None;
        unit.epoch += 1;
        unit.extended_until = None;
        unit.state = State::Running { pid: old, since };
        fx.push(report(svc, Report::UpdateFailed { old, exit }));
        if let Some(pid) = pid {
            fx.push(Effect::Retire {
                svc,
                pid,
                signal: Signal::SIGKILL,
                timeout: Duration::ZERO,
            });
        }
        // Its health checks go on (its endpoints never went).
        if let Some(plan) = self.specs[svc].health.as_deref().copied() {
            self.arm(svc, TimerKind::HealthProbe, now + plan.interval, fx);
        }
        // A restart asked for meanwhile: another try.
        if self.units[svc].restart_pending {
            self.transition(svc, Input::Asked(super::Ask::Restart), now, fx);
        }
        true
    }

    /// Takes back the service's endpoints if they are published.
    pub(super) fn withdraw(&mut self, svc: usize, fx: &mut Vec<Effect>) {
        if std::mem::take(&mut self.units[svc].registered) {
            fx.push(Effect::Withdraw { svc });
        }
    }

    /// A start begins with the pre step, if there is one.
    fn first_step(&self, svc: usize) -> Launch {
        if self.specs[svc].has_pre {
            Launch::Pre
        } else {
            Launch::Main
        }
    }

    fn launch(&mut self, svc: usize, launch: Launch, fx: &mut Vec<Effect>) {
        self.units[svc].state = State::Launching(launch);
        fx.push(Effect::Spawn {
            svc,
            step: launch.step(),
        });
    }

    /// Arms a timer for the service's current epoch.
    pub(super) fn arm(&mut self, svc: usize, kind: TimerKind, at: Instant, fx: &mut Vec<Effect>) {
        let epoch = self.units[svc].epoch;
        fx.push(Effect::ArmTimer {
            at,
            timer: super::Timer {
                svc: Some(svc),
                kind,
                epoch,
            },
        });
    }
}

fn kill(svc: usize, pid: Pid) -> Effect {
    Effect::SignalGroup {
        svc,
        pid,
        signal: Signal::SIGKILL,
    }
}
