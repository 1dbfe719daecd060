//! Readiness and health: what probe results and their timers do to a service.

use std::time::Instant;

use super::{Effect, Engine, ProbeRole, Report, State, Step, StopReason, TimerKind};

impl Engine {
    /// The service just became ready (or has no readiness probe).
    pub(super) fn on_ready(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        if self.specs[svc].provides && !self.units[svc].registered {
            self.units[svc].registered = true;
            fx.push(Effect::Register { svc });
        }
        if let Some(plan) = self.specs[svc].health {
            let first = now + plan.initial_delay + plan.interval;
            self.arm(svc, TimerKind::HealthProbe, first, fx);
        }
        self.start_ready_services(now, fx);
    }

    pub(super) fn on_probe_result(
        &mut self,
        svc: usize,
        epoch: u64,
        role: ProbeRole,
        result: Result<(), String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.units[svc].epoch != epoch {
            return;
        }
        match (role, self.units[svc].state.clone()) {
            (ProbeRole::Ready, State::Starting { pid, since }) => match result {
                Ok(()) => {
                    self.units[svc].state = State::Running { pid, since };
                    fx.push(super::report(svc, Report::Ready { after: now - since }));
                    self.on_ready(svc, now, fx);
                }
                Err(reason) => {
                    self.units[svc].last_ready_error = Some(reason);
                    if let Some(plan) = self.specs[svc].ready.filter(|p| p.active) {
                        self.arm(svc, TimerKind::ReadyProbe, now + plan.interval, fx);
                    }
                }
            },
            (ProbeRole::Health, State::Running { pid, .. }) => {
                let Some(plan) = self.specs[svc].health else {
                    return;
                };
                let health = &mut self.units[svc].health;
                match result {
                    Ok(()) => {
                        if health.failures > 0 {
                            fx.push(super::report(svc, Report::Recovered));
                        }
                        health.healthy = Some(true);
                        health.failures = 0;
                    }
                    Err(reason) => {
                        health.failures += 1;
                        let failures = health.failures;
                        health.last_failure = Some(reason.clone());
                        fx.push(super::report(
                            svc,
                            Report::HealthFailed {
                                failures,
                                retries: plan.retries,
                                reason,
                            },
                        ));
                        if failures >= plan.retries {
                            self.units[svc].health.healthy = Some(false);
                            fx.push(super::report(svc, Report::Unhealthy { failures }));
                            self.stop(svc, pid, Step::Main, StopReason::Unhealthy, now, fx);
                            return;
                        }
                    }
                }
                self.arm(svc, TimerKind::HealthProbe, now + plan.interval, fx);
            }
            _ => {}
        }
    }

    /// start-timeout passed and the service is still not ready: a failed start.
    pub(super) fn on_start_timeout(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        let State::Starting { pid, .. } = self.units[svc].state else {
            return;
        };
        let timeout = self.specs[svc]
            .ready
            .map(|p| p.start_timeout)
            .unwrap_or_default();
        let last_error = self.units[svc].last_ready_error.take();
        fx.push(super::report(
            svc,
            Report::NotReady {
                timeout,
                last_error,
            },
        ));
        self.stop(svc, pid, Step::Main, StopReason::NotReady, now, fx);
    }
}
