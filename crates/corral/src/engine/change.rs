//! Discovery's change policy: endpoint changes of a running dependent are
//! debounced (a quiet period, with a longest wait), spread by a splay, and a
//! restart action rolls through a service's instances one at a time. All of
//! it respects what is wanted: a service an operator stopped is not restarted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Ask, Effect, Engine, Phase, State, TimerKind, Want};

/// An endpoint change waiting out its quiet period.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    first: Instant,
    last: Instant,
}

/// A rolling restart of one service's instances.
#[derive(Debug, Clone)]
pub(super) struct Rolling {
    /// The instance restarting now.
    current: usize,
    /// Those waiting for their turn.
    queue: VecDeque<usize>,
}

impl Engine {
    /// Endpoints that a service requires changed: if it runs, (re)start its quiet period.
    pub(super) fn endpoints_changed(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        let unit = &mut self.units[svc];
        let runs = matches!(unit.state, State::Starting { .. } | State::Running { .. });
        if !runs || unit.want != Want::Up || self.phase != Phase::Running {
            return;
        }
        let pending = unit.change.get_or_insert(Pending {
            first: now,
            last: now,
        });
        pending.last = now;
        let pending = *pending;
        let due = self.change_due_at(svc, pending);
        self.arm(svc, TimerKind::ChangeDue, due, fx);
    }

    fn change_due_at(&self, svc: usize, p: Pending) -> Instant {
        let (quiet, max) = self.specs[svc].change_wait;
        let base = (p.last + quiet).min(p.first + max);
        base + splay(svc, quiet)
    }

    /// A ChangeDue timer fired: act if the quiet period is over (a later
    /// change may have moved it; its own timer comes then).
    pub(super) fn change_due(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        let Some(pending) = self.units[svc].change else {
            return;
        };
        if self.change_due_at(svc, pending) <= now {
            self.units[svc].change = None;
            fx.push(Effect::ApplyChange { svc });
        }
    }

    /// Restarts a dependent because its endpoints changed, one instance of
    /// its service at a time; one wanted down is left alone.
    pub(super) fn rolling_restart(&mut self, svc: usize, now: Instant, fx: &mut Vec<Effect>) {
        if self.units[svc].want != Want::Up || self.phase != Phase::Running {
            return;
        }
        let group = self.specs[svc].group.clone();
        match self.rolling.get_mut(&group) {
            Some(rolling) => {
                if rolling.current != svc && !rolling.queue.contains(&svc) {
                    rolling.queue.push_back(svc);
                }
            }
            None => {
                let rolling = Rolling {
                    current: svc,
                    queue: VecDeque::new(),
                };
                self.rolling.insert(group, rolling);
                self.ask(svc, Ask::Restart, now, fx);
            }
        }
    }

    /// Moves rolling restarts along once the instance restarted last is back
    /// (running and ready, or ended for good, or no longer wanted up).
    pub(super) fn advance_rolling(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let done: Vec<String> = self
            .rolling
            .iter()
            .filter(|(_, r)| {
                let unit = &self.units[r.current];
                matches!(unit.state, State::Running { .. })
                    || unit.state.is_final()
                    || unit.want != Want::Up
            })
            .map(|(group, _)| group.clone())
            .collect();
        for group in done {
            let Some(mut rolling) = self.rolling.remove(&group) else {
                continue;
            };
            while let Some(next) = rolling.queue.pop_front() {
                if self.units[next].want == Want::Up && self.phase == Phase::Running {
                    rolling.current = next;
                    self.rolling.insert(group, rolling);
                    self.ask(next, Ask::Restart, now, fx);
                    break;
                }
            }
        }
    }
}

/// A per-service delay within the quiet period, so many dependents of one
/// name do not all act at the same instant.
fn splay(svc: usize, quiet: Duration) -> Duration {
    let spread = quiet.as_millis() as u64 / 4;
    if spread == 0 {
        return Duration::ZERO;
    }
    let hash = (svc as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    Duration::from_millis(hash % spread)
}
