//! Property tests: random services and random sequences of events (process
//! ends, timers, probes, operator requests, reloads, endpoint changes,
//! shutdown) against the invariants the rest of corral relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proptest::prelude::*;

use super::*;
use crate::config::{Backoff, Condition, Overlap, RestartPolicy};

const MAX_UNITS: usize = 5;

fn arb_spec() -> impl Strategy<Value = (Spec, Vec<(usize, u8, bool, bool)>)> {
    (
        any::<[bool; 6]>(),
        0u8..3,
        0u8..3,
        prop::option::of(0u32..3),
        prop::collection::vec(
            (0usize..MAX_UNITS, 0u8..3, any::<bool>(), any::<bool>()),
            0..3,
        ),
        prop::option::of((0u8..3, any::<bool>())),
        any::<bool>(),
    )
        .prop_map(
            |(flags, restart, probe, max_restarts, edges, job, start_first)| {
                let mut spec = Spec {
                    name: String::new(),
                    group: String::new(),
                    oneshot: flags[0],
                    has_pre: flags[1],
                    has_post: flags[2],
                    restart: [
                        RestartPolicy::Always,
                        RestartPolicy::OnFailure,
                        RestartPolicy::Never,
                    ][restart as usize],
                    backoff: Backoff {
                        initial: if flags[3] {
                            Duration::ZERO
                        } else {
                            Duration::from_millis(100)
                        },
                        max: Duration::from_secs(1),
                        reset_after: Duration::from_secs(10),
                    },
                    max_restarts,
                    essential: flags[4],
                    stop_signal: Signal::SIGTERM,
                    stop_timeout: Duration::from_secs(5),
                    depends_on: Vec::new(),
                    ready: (probe > 0).then_some(Box::new(ReadyPlan {
                        active: probe == 1,
                        initial_delay: Duration::ZERO,
                        interval: Duration::from_millis(100),
                        start_timeout: Duration::from_secs(2),
                    })),
                    health: flags[5].then_some(Box::new(HealthPlan {
                        initial_delay: Duration::ZERO,
                        interval: Duration::from_secs(1),
                        retries: 2,
                    })),
                    provides: flags[5],
                    require_timeout: Duration::from_secs(3),
                    change_wait: (Duration::from_millis(200), Duration::from_secs(1)),
                    job: None,
                    watchdog_signal: Signal::SIGABRT,
                    start_first: start_first && !flags[0],
                };
                // A job as the config allows it: no restarts, probes, endpoints.
                if let Some((overlap, run_on_start)) = job {
                    spec.job = Some(JobPlan {
                        overlap: [Overlap::Skip, Overlap::Queue, Overlap::Replace]
                            [overlap as usize],
                        run_on_start,
                    });
                    spec.oneshot = false;
                    spec.restart = RestartPolicy::Never;
                    spec.max_restarts = None;
                    spec.essential = false;
                    spec.ready = None;
                    spec.health = None;
                    spec.provides = false;
                    spec.start_first = false;
                }
                (spec, edges)
            },
        )
}

/// Services whose dependencies point only at earlier ones (no cycles).
fn arb_specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(arb_spec(), 1..=MAX_UNITS).prop_map(|raw| {
        let n = raw.len();
        raw.into_iter()
            .enumerate()
            .map(|(i, (mut spec, edges))| {
                spec.name = format!("s{i}");
                spec.group = if i % 2 == 0 {
                    "even".into()
                } else {
                    "odd".into()
                };
                let mut seen = BTreeSet::new();
                for (to, cond, restart, explicit) in edges {
                    let to = to % n;
                    if to < i && seen.insert(to) {
                        spec.depends_on.push(Edge {
                            service: to,
                            condition: [Condition::Started, Condition::Ready, Condition::Completed]
                                [cond as usize],
                            restart,
                            explicit,
                        });
                    }
                }
                spec
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Op {
    /// The current process of a unit ends with this code (or a signal).
    End(usize, i32),
    /// An exit for a pid that is not the unit's current one.
    StaleEnd(usize),
    /// The old process of a start-first update ends.
    EndOld(usize, i32),
    /// Something the process said on its notify socket.
    Notify(usize, u8),
    /// The next spawn fails.
    FailNextSpawn,
    Timer(usize),
    Probe(usize, bool, bool),
    Start(usize),
    Stop(usize),
    Restart(usize),
    /// Reload: a mask of changed units and one of removed units, maybe one added.
    Reload(u8, u8, bool),
    Endpoints(u8),
    ChangeRestart(usize),
    Requirements(usize, bool),
    Shutdown,
    ForceStop,
    /// A job's schedule ticks (ignored by services that are not jobs).
    Tick(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let u = 0usize..MAX_UNITS + 1;
    prop_oneof![
        6 => (u.clone(), -1i32..3).prop_map(|(s, c)| Op::End(s, c)),
        1 => u.clone().prop_map(Op::StaleEnd),
        2 => (u.clone(), -1i32..2).prop_map(|(s, c)| Op::EndOld(s, c)),
        2 => (u.clone(), 0u8..5).prop_map(|(s, k)| Op::Notify(s, k)),
        1 => Just(Op::FailNextSpawn),
        6 => (0usize..8).prop_map(Op::Timer),
        4 => (u.clone(), any::<bool>(), any::<bool>()).prop_map(|(s, r, ok)| Op::Probe(s, r, ok)),
        2 => u.clone().prop_map(Op::Start),
        2 => u.clone().prop_map(Op::Stop),
        2 => u.clone().prop_map(Op::Restart),
        1 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(c, r, a)| Op::Reload(c, r, a)),
        2 => any::<u8>().prop_map(Op::Endpoints),
        1 => u.clone().prop_map(Op::ChangeRestart),
        1 => (u.clone(), any::<bool>()).prop_map(|(s, m)| Op::Requirements(s, m)),
        1 => Just(Op::Shutdown),
        1 => Just(Op::ForceStop),
        3 => u.prop_map(Op::Tick),
    ]
}

/// Plays the runtime's part and checks invariants after every effect.
struct World {
    engine: Engine,
    now: Instant,
    next_pid: Pid,
    /// Processes that exist: pid -> unit.
    live: BTreeMap<Pid, usize>,
    /// Processes a unit gave up (Effect::Retire): they exist until they
    /// die, but are no unit's.
    retired: BTreeMap<Pid, usize>,
    timers: Vec<(Instant, Timer)>,
    fail_next_spawn: bool,
    exit: Option<i32>,
    /// The reason given with the last global ShuttingDown report.
    ended_reason: Option<String>,
    /// A forced stop was sent (its code, 130, may end the run).
    forced: bool,
}

impl World {
    fn new(specs: Vec<Spec>) -> World {
        let order = order_of(&specs, &BTreeSet::new());
        World {
            engine: Engine::new(specs, order, Duration::from_secs(30)),
            now: Instant::now(),
            next_pid: 1000,
            live: BTreeMap::new(),
            retired: BTreeMap::new(),
            timers: Vec::new(),
            fail_next_spawn: false,
            exit: None,
            ended_reason: None,
            forced: false,
        }
    }

    fn units(&self) -> usize {
        self.engine.units().len()
    }

    fn send(&mut self, event: Event) -> Result<(), TestCaseError> {
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for effect in self.engine.handle(event, self.now) {
                prop_assert!(self.exit.is_none(), "effect after Exit: {effect:?}");
                match effect {
                    Effect::Spawn { svc, step } => {
                        let unit = &self.engine.units()[svc];
                        if step != Step::Post {
                            prop_assert_eq!(unit.want, Want::Up, "launched a unit not wanted up");
                            prop_assert!(
                                !self.engine.is_shutting_down(),
                                "launched during shutdown"
                            );
                        }
                        // A second one only while a start-first update runs.
                        let old = unit.outgoing.map(|(pid, _)| pid);
                        prop_assert!(
                            !self.live.iter().any(|(&p, &s)| s == svc && Some(p) != old),
                            "a second process for one unit"
                        );
                        if std::mem::take(&mut self.fail_next_spawn) {
                            let error = "no such file".into();
                            let permanent = self.next_pid % 2 == 0;
                            queue.push_back(Event::SpawnFailed {
                                svc,
                                error,
                                permanent,
                            });
                        } else {
                            self.next_pid += 1;
                            let pid = self.next_pid;
                            self.live.insert(pid, svc);
                            queue.push_back(Event::Spawned { svc, pid });
                        }
                    }
                    Effect::ArmTimer { at, timer } => self.timers.push((at, timer)),
                    Effect::Exit { code } => self.exit = Some(code),
                    Effect::Report {
                        svc: None,
                        report: Report::ShuttingDown { reason },
                    } => self.ended_reason = Some(reason),
                    // SIGKILL also goes to the group of a leader that just
                    // ended (whatever it left behind); anything else only to
                    // a process that exists.
                    Effect::SignalGroup { pid, signal, .. } => {
                        prop_assert!(
                            signal == Signal::SIGKILL || self.live.contains_key(&pid),
                            "{} to a dead pid {pid}",
                            signal.as_str()
                        );
                    }
                    Effect::Retire { svc, pid, .. } => {
                        if let Some(owner) = self.live.remove(&pid) {
                            prop_assert_eq!(owner, svc, "retired another unit's process");
                            self.retired.insert(pid, svc);
                        }
                    }
                    Effect::Report { .. }
                    | Effect::RunProbe { .. }
                    | Effect::Register { .. }
                    | Effect::Withdraw { .. }
                    | Effect::ApplyChange { .. } => {}
                }
            }
        }
        self.check()
    }

    /// Every live process is the current process of its unit, and the other
    /// way round: the engine never loses track of a process.
    fn check(&self) -> Result<(), TestCaseError> {
        let tracked: BTreeMap<Pid, usize> = self
            .engine
            .units()
            .iter()
            .enumerate()
            .flat_map(|(i, u)| {
                let old = u.outgoing.map(|(pid, _)| pid);
                u.state.pid().into_iter().chain(old).map(move |p| (p, i))
            })
            .collect();
        prop_assert_eq!(&tracked, &self.live);
        Ok(())
    }

    fn end(&mut self, svc: usize, exit: Exit) -> Result<(), TestCaseError> {
        let Some(pid) = self.engine.units()[svc].state.pid() else {
            return Ok(());
        };
        self.live.remove(&pid);
        self.send(Event::Reaped { svc, pid, exit })
    }

    fn fire(&mut self, k: usize) -> Result<(), TestCaseError> {
        if self.timers.is_empty() {
            return Ok(());
        }
        self.timers.sort_by_key(|(at, _)| *at);
        let (at, timer) = self.timers.remove(k % self.timers.len());
        self.now = self.now.max(at);
        self.send(Event::TimerFired(timer))
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.units();
        match op {
            Op::End(s, code) => {
                let exit = if code < 0 {
                    Exit::Signal(9)
                } else {
                    Exit::Code(code)
                };
                self.end(s % n, exit)?;
            }
            Op::StaleEnd(s) => self.send(Event::Reaped {
                svc: s % n,
                pid: 1,
                exit: Exit::Code(0),
            })?,
            Op::EndOld(s, code) => {
                let svc = s % n;
                // A retired process, or the old one of an update still on.
                let old = self
                    .retired
                    .iter()
                    .find(|(_, &u)| u == svc)
                    .map(|(&p, _)| p)
                    .or(self.engine.units()[svc].outgoing.map(|(p, _)| p));
                if let Some(pid) = old {
                    self.retired.remove(&pid);
                    self.live.remove(&pid);
                    let exit = if code < 0 {
                        Exit::Signal(9)
                    } else {
                        Exit::Code(code)
                    };
                    self.send(Event::Reaped { svc, pid, exit })?;
                }
            }
            Op::Notify(s, kind) => {
                let svc = s % n;
                // Only the service's own process has a notify socket.
                let main = match self.engine.units()[svc].state {
                    State::Starting { pid, .. }
                    | State::Running { pid, .. }
                    | State::Stopping {
                        pid,
                        step: Step::Main,
                        ..
                    } => Some(pid),
                    _ => None,
                };
                if let Some(pid) = main {
                    let what = match kind {
                        0 => Notified::Reloading,
                        1 => Notified::Stopping,
                        2 => Notified::ExtendTimeout(Duration::from_secs(1)),
                        3 => Notified::WatchdogMissed,
                        _ => {
                            // MAINPID=: another process of it takes over.
                            self.next_pid += 1;
                            let main = self.next_pid;
                            self.live.remove(&pid);
                            self.live.insert(main, svc);
                            Notified::MainPid(main)
                        }
                    };
                    self.send(Event::Notified { svc, pid, what })?;
                }
            }
            Op::FailNextSpawn => self.fail_next_spawn = true,
            Op::Timer(k) => self.fire(k)?,
            Op::Probe(s, ready, ok) => {
                let svc = s % n;
                let epoch = self.engine.units()[svc].epoch;
                let role = if ready {
                    ProbeRole::Ready
                } else {
                    ProbeRole::Health
                };
                let result = if ok { Ok(()) } else { Err("no".into()) };
                self.send(Event::ProbeResult {
                    svc,
                    epoch,
                    role,
                    result,
                })?;
            }
            Op::Start(s) => self.request(s % n, |svc| Event::StartRequested { svc })?,
            Op::Stop(s) => self.request(s % n, |svc| Event::StopRequested { svc })?,
            Op::Restart(s) => self.request(s % n, |svc| Event::RestartRequested { svc })?,
            Op::Reload(changed, removed, add) => self.reload(changed, removed, add)?,
            Op::Endpoints(mask) => {
                let svcs = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                self.send(Event::EndpointsChanged { svcs })?;
            }
            Op::ChangeRestart(s) => self.send(Event::ChangeRestart { svc: s % n })?,
            Op::Requirements(s, missing) => {
                let missing = if missing {
                    vec!["db".to_string()]
                } else {
                    Vec::new()
                };
                self.send(Event::RequirementsChanged {
                    svc: s % n,
                    missing,
                })?;
            }
            Op::Shutdown => self.send(Event::Shutdown {
                code: 0,
                reason: "test",
                within: None,
            })?,
            Op::ForceStop => {
                self.forced = true;
                self.send(Event::ForceStop { code: 130 })?
            }
            // The runtime ticks only jobs still in the config.
            Op::Tick(s) => {
                let svc = s % n;
                if self.engine.specs[svc].job.is_some() && !self.engine.units()[svc].is_removed() {
                    self.send(Event::Tick { svc })?;
                }
            }
        }
        Ok(())
    }

    /// As the API does: only for units still in the config.
    fn request(&mut self, svc: usize, event: fn(usize) -> Event) -> Result<(), TestCaseError> {
        if self.engine.units()[svc].is_removed() || self.engine.is_shutting_down() {
            return Ok(());
        }
        self.send(event(svc))
    }

    /// A reload as `realign` builds it: removed units lose their edges, and
    /// nothing that stays may depend on them.
    fn reload(&mut self, changed: u8, removed: u8, add: bool) -> Result<(), TestCaseError> {
        if self.engine.is_shutting_down() {
            return Ok(());
        }
        let n = self.units();
        let was_removed: Vec<bool> = self.engine.units().iter().map(Unit::is_removed).collect();
        let mut specs = self.engine.specs.clone();
        let gone: BTreeSet<usize> = (0..n)
            .filter(|&i| was_removed[i] || removed & (1 << i) != 0)
            .collect();
        if gone.len() == n {
            return Ok(());
        }
        for (i, spec) in specs.iter_mut().enumerate() {
            if gone.contains(&i) {
                spec.depends_on.clear();
            } else {
                spec.depends_on.retain(|e| !gone.contains(&e.service));
            }
        }
        let mut added = Vec::new();
        if add && n < 8 {
            let mut spec = specs[0].clone();
            spec.name = format!("s{n}");
            spec.depends_on.clear();
            specs.push(spec);
            added.push(n);
        }
        let plan = ReloadPlan {
            order: order_of(&specs, &gone),
            changed: (0..n)
                .filter(|&i| !gone.contains(&i) && (changed & (1 << i) != 0 || was_removed[i]))
                .collect(),
            added,
            removed: (0..n)
                .filter(|&i| !was_removed[i] && gone.contains(&i))
                .collect(),
            specs,
            shutdown_timeout: Duration::from_secs(30),
            missing: Vec::new(),
        };
        self.send(Event::Reload(Box::new(plan)))
    }

    /// Shuts down and plays it out: processes die when signalled (or when
    /// their timers run out), timers fire. Returns the exit code.
    fn shut_down(&mut self) -> Result<i32, TestCaseError> {
        if self.exit.is_none() {
            self.send(Event::Shutdown {
                code: 0,
                reason: "test",
                within: None,
            })?;
        }
        for _ in 0..1000 {
            if let Some(code) = self.exit {
                return Ok(code);
            }
            if let Some((&pid, &svc)) = self.live.iter().chain(&self.retired).next() {
                self.live.remove(&pid);
                self.retired.remove(&pid);
                self.send(Event::Reaped {
                    svc,
                    pid,
                    exit: Exit::Signal(15),
                })?;
            } else {
                prop_assert!(
                    !self.timers.is_empty(),
                    "shutdown stalled with nothing to wait for"
                );
                self.fire(0)?;
            }
        }
        Err(TestCaseError::fail("shutdown did not end"))
    }
}

fn order_of(specs: &[Spec], gone: &BTreeSet<usize>) -> Vec<usize> {
    let edges: Vec<Vec<usize>> = specs
        .iter()
        .map(|s| s.depends_on.iter().map(|d| d.service).collect())
        .collect();
    crate::config::topological_order(&edges)
        .into_iter()
        .filter(|i| !gone.contains(i))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_events(
        specs in arb_specs(),
        boot in any::<bool>(),
        ops in prop::collection::vec(arb_op(), 0..60),
    ) {
        let essential = specs.iter().any(|s| s.essential);
        let mut world = World::new(specs);
        if boot {
            world.send(Event::Boot)?;
        }
        let mut ended_by_itself = false;
        for op in ops {
            if world.exit.is_some() {
                ended_by_itself = true;
                break;
            }
            world.apply(op)?;
        }
        let ended_by_itself = ended_by_itself || world.exit.is_some();
        let code = world.shut_down()?;
        // Every process is gone, and every unit is in a final state.
        prop_assert!(world.live.is_empty());
        for unit in world.engine.units() {
            prop_assert!(unit.state.is_final(), "{:?} is not final", unit.state);
        }
        // Exit codes: an operator's shutdown exits 0 unless an essential
        // service ended it; "every service has ended" is 1 iff some failed.
        match world.ended_reason.as_deref() {
            Some("every service has ended") => prop_assert_eq!(code, 0),
            Some("every service has ended, some failed") => prop_assert_eq!(code, 1),
            _ if !essential && !ended_by_itself && !world.forced => prop_assert_eq!(code, 0),
            _ if !essential && !ended_by_itself => prop_assert!(code == 0 || code == 130),
            _ => {}
        }
    }
}
