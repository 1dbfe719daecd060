//! Operator requests (start, stop, restart one service) and config reloads.

use std::time::Instant;

use super::{
    dependents_of, Effect, Engine, Phase, ReloadPlan, Report, State, Step, StopReason, Unit,
};

impl Engine {
    pub(super) fn on_start_requested(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        if self.units[svc].retired || self.phase != Phase::Running {
            return;
        }
        let unit = &mut self.units[svc];
        unit.held = false;
        unit.failures = 0;
        match unit.state {
            State::Backoff { .. } => {
                let step = self.first_step(svc);
                self.launch(svc, step, None, fx);
            }
            ref s if s.is_final() || *s == State::Waiting => {
                unit.state = State::Waiting;
                self.try_start(svc, now, fx);
                if self.units[svc].state == State::Waiting {
                    let dependencies = self.pending_dependencies(svc);
                    fx.push(super::report(svc, Report::WaitingFor { dependencies }));
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_stop_requested(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        self.units[svc].held = true;
        self.stop_for(svc, StopReason::Requested, now, fx);
    }

    pub(super) fn on_restart_requested(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        if self.units[svc].retired || self.phase != Phase::Running {
            return;
        }
        self.units[svc].held = false;
        self.units[svc].failures = 0;
        match self.units[svc].state {
            State::Starting { .. } | State::Running { .. } | State::Pre { .. } => {
                self.stop_for(svc, StopReason::Restart, now, fx);
            }
            _ => self.on_start_requested(svc, now, fx),
        }
    }

    /// Stops whatever the service runs now for `reason`; a service with no
    /// process and nothing running (waiting, backoff) is simply stopped.
    fn stop_for(&mut self, svc: usize, reason: StopReason, now: Instant, fx: &mut Vec<Effect>) {
        match self.units[svc].state {
            State::Starting { pid, .. } | State::Running { pid, .. } => {
                self.stop(svc, pid, Step::Main, reason, now, fx);
            }
            State::Pre { pid } => self.stop(svc, pid, Step::Pre, reason, now, fx),
            State::Waiting | State::Backoff { .. } => {
                self.units[svc].state = State::Stopped;
                fx.push(super::report(svc, Report::Stopped));
            }
            // Stopping or running its post step: it ends by itself, and held or
            // retired keeps it down afterwards.
            _ => {}
        }
    }

    fn pending_dependencies(&self, svc: usize) -> Vec<String> {
        self.specs[svc]
            .depends_on
            .iter()
            .filter(|e| {
                !matches!(
                    super::dependency_status(&self.units[e.service].state, e.condition),
                    super::DepStatus::Met
                )
            })
            .map(|e| self.specs[e.service].name.clone())
            .collect()
    }

    pub(super) fn on_reload(&mut self, plan: ReloadPlan, now: Instant, fx: &mut Vec<Effect>) {
        self.specs = plan.specs;
        while self.units.len() < self.specs.len() {
            self.units.push(Unit::new());
        }
        self.dependents = dependents_of(&self.specs);
        self.order = plan.order;
        self.shutdown_timeout = plan.shutdown_timeout;
        for svc in plan.removed {
            fx.push(super::report(svc, Report::Removed));
            self.units[svc].retired = true;
            self.stop_for(svc, StopReason::Removed, now, fx);
        }
        for svc in plan.changed {
            fx.push(super::report(svc, Report::Changed));
            let unit = &mut self.units[svc];
            unit.retired = false;
            unit.held = false;
            unit.failures = 0;
            match unit.state {
                State::Starting { .. } | State::Running { .. } | State::Pre { .. } => {
                    self.stop_for(svc, StopReason::Reload, now, fx);
                }
                ref s if s.is_final() || matches!(s, State::Backoff { .. }) => {
                    unit.state = State::Waiting;
                }
                _ => {}
            }
        }
        for svc in plan.added {
            fx.push(super::report(svc, Report::Added));
        }
        self.start_ready_services(now, fx);
    }
}
