//! The clock of jobs: when each job's next tick is due.
//!
//! Each job has one entry in a heap, for its next tick only, so an idle
//! corral sleeps until the earliest tick and never polls. Ticks are
//! computed in wall-clock time (the job's zone, by croner) and waited for
//! on the monotonic clock; a tick that comes due before the wall clock
//! reaches it (the clock was set back) waits again for the rest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use crate::config::{Job, Service};

/// One job's armed tick.
struct Armed {
    /// The pattern and zone it was computed from (a reload that changes
    /// neither keeps the tick).
    schedule: String,
    timezone: String,
    next: Option<Timestamp>,
}

#[derive(Default)]
pub(super) struct Schedule {
    /// By service index; None for services that are not jobs (boxed: 8
    /// bytes per service that is not a job instead of 72).
    armed: Vec<Option<Box<Armed>>>,
    /// (when, service, generation): a stale entry has an older generation.
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    generation: Vec<u64>,
}

impl Schedule {
    /// Arms the next tick of every job, and drops those of services that
    /// are no longer jobs (or no longer there: `retired`).
    pub fn sync(&mut self, services: &[Service], retired: impl Fn(usize) -> bool) {
        self.armed.resize_with(services.len(), || None);
        self.generation.resize(services.len(), 0);
        for (svc, service) in services.iter().enumerate() {
            let job = service.job.as_deref().filter(|_| !retired(svc));
            let same = match (&self.armed[svc], job) {
                (Some(a), Some(j)) => a.schedule == j.schedule && a.timezone == j.timezone_name,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            self.generation[svc] += 1;
            self.armed[svc] = job.map(|job| {
                Box::new(Armed {
                    schedule: job.schedule.clone(),
                    timezone: job.timezone_name.clone(),
                    next: None,
                })
            });
            if let Some(job) = job {
                self.arm(svc, job, wall_now());
            }
        }
    }

    /// When the earliest tick is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The jobs whose tick is due now; each is armed for its following tick.
    pub fn due(&mut self, services: &[Service]) -> Vec<usize> {
        let now = Instant::now();
        let wall = wall_now();
        let mut due = Vec::new();
        while let Some(&Reverse((at, svc, generation))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.generation.get(svc) != Some(&generation) {
                continue;
            }
            let (Some(Some(armed)), Some(job)) =
                (self.armed.get(svc), services[svc].job.as_deref())
            else {
                continue;
            };
            let Some(tick) = armed.next else {
                continue;
            };
            if wall < tick {
                // The wall clock was set back: wait for the rest.
                self.push(svc, until(wall, tick));
                continue;
            }
            due.push(svc);
            // From the tick itself, so a slow loop never skips the next one,
            // and from now if ticks were missed (the clock jumped ahead).
            let from = if wall.duration_since(tick) > jiff::SignedDuration::from_secs(1) {
                wall
            } else {
                tick
            };
            self.arm(svc, job, from);
        }
        due
    }

    /// The next tick of a job, in seconds since the Unix epoch.
    pub fn next(&self, svc: usize) -> Option<f64> {
        let next = self.armed.get(svc)?.as_ref()?.next?;
        Some(next.as_millisecond() as f64 / 1000.0)
    }

    fn arm(&mut self, svc: usize, job: &Job, after: Timestamp) {
        let next = job.next_tick(after);
        if let Some(Some(armed)) = self.armed.get_mut(svc) {
            armed.next = next;
        }
        if let Some(tick) = next {
            self.push(svc, until(wall_now(), tick));
        }
    }

    fn push(&mut self, svc: usize, wait: Duration) {
        let generation = self.generation[svc];
        self.heap
            .push(Reverse((Instant::now() + wait, svc, generation)));
    }
}

/// How long from `now` until `tick` (zero if it has passed).
fn until(now: Timestamp, tick: Timestamp) -> Duration {
    Duration::try_from(tick.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// The wall clock as a jiff Timestamp. (Not `Timestamp::now()`: its
/// `expect` links the text of every jiff error into corral, ~90 KB.)
fn wall_now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(
        since_epoch.as_secs() as i64,
        since_epoch.subsec_nanos() as i32,
    )
    .unwrap_or(Timestamp::UNIX_EPOCH)
}
