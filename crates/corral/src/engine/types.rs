//! The engine's vocabulary: lifecycle states, events in, effects out.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// A process id as the kernel gives it.
pub type Pid = i32;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// Which of a service's processes: the pre step, the service itself, or the post step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Pre,
    Main,
    Post,
}

/// What a spawn under way is for: a step, and for the post step what
/// follows it (the outcome of the run it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    Pre,
    Main,
    Post(Outcome),
}

impl Launch {
    pub fn step(self) -> Step {
        match self {
            Launch::Pre => Step::Pre,
            Launch::Main => Step::Main,
            Launch::Post(_) => Step::Post,
        }
    }
}

/// What happens once a service's run (and its post step) is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A oneshot that exited 0.
    Completed,
    /// Ended cleanly and is not restarted.
    Done(Exit),
    /// Restart after the given delay (restart number `attempt`).
    Restart { delay: Duration, attempt: u32 },
    /// Wait for the dependencies again (a `restart = true` dependency restarted).
    Wait,
    /// Ended for good with a failure.
    Failed(Exit),
    /// Stopped on request or at shutdown.
    Stopped,
}

/// The lifecycle of one service; each state carries what only it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started: waiting for its dependencies (or for boot).
    Waiting,
    /// A spawn was requested; the runtime answers with Spawned or SpawnFailed at once.
    Launching(Launch),
    /// The pre step runs.
    Pre { pid: Pid },
    /// The service runs but is not ready yet (its readiness probe has not passed).
    Starting { pid: Pid, since: Instant },
    /// The service runs and is ready.
    Running { pid: Pid, since: Instant },
    /// The stop signal was sent to the pre step or the service; SIGKILL follows at the deadline.
    Stopping {
        pid: Pid,
        step: Step,
        cause: StopCause,
    },
    /// The post step runs; `then` applies once it is done.
    Post { pid: Pid, then: Outcome },
    /// Waiting to be restarted.
    Backoff { until: Instant, attempt: u32 },
    /// A oneshot that finished with exit code 0.
    Completed,
    /// Ended cleanly and not restarted.
    Exited { exit: Exit },
    /// Ended for good with a failure (or gave up after max-restarts).
    Failed { exit: Exit },
    /// Never started because a dependency failed.
    Blocked { dependency: usize },
    /// Stopped on request or at shutdown.
    Stopped,
    /// A job between runs: its next tick starts the next run.
    Scheduled,
}

impl State {
    /// A process of the service exists (or is being spawned).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            State::Launching(_)
                | State::Pre { .. }
                | State::Starting { .. }
                | State::Running { .. }
                | State::Stopping { .. }
                | State::Post { .. }
        )
    }

    /// Nothing more will happen to the service by itself.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            State::Completed
                | State::Exited { .. }
                | State::Failed { .. }
                | State::Blocked { .. }
                | State::Stopped
        )
    }

    /// The pid of the process that currently exists, if any.
    pub fn pid(&self) -> Option<Pid> {
        match self {
            State::Pre { pid }
            | State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. }
            | State::Post { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// The state as the control API names it.
    pub fn public(&self) -> corral_proto::ServiceState {
        use corral_proto::ServiceState as P;
        match self {
            State::Waiting => P::Waiting,
            State::Launching(_) => P::Launching,
            State::Pre { .. } => P::Pre,
            State::Starting { .. } => P::Starting,
            State::Running { .. } => P::Running,
            State::Stopping { .. } => P::Stopping,
            State::Post { .. } => P::Post,
            State::Backoff { .. } => P::Backoff,
            State::Completed => P::Completed,
            State::Exited { .. } => P::Exited,
            State::Failed { .. } => P::Failed,
            State::Blocked { .. } => P::Blocked,
            State::Stopped => P::Stopped,
            State::Scheduled => P::Scheduled,
        }
    }

    pub fn name(&self) -> &'static str {
        self.public().as_str()
    }
}

/// What is wanted of a service, kept apart from where its process is: what
/// follows an exit is decided from this, at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Run it (to completion, for a oneshot), under its restart policy.
    Up,
    /// An operator stopped it: it stays down until an operator starts it.
    Down,
    /// Gone from the config after a reload: down, and no longer listed.
    Removed,
}

/// An operator's or a reload's request about one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Run it (also one that failed or was stopped); in backoff: now.
    Start,
    /// Stop it and keep it down.
    Stop,
    /// Stop it if it runs, then start it again.
    Restart,
    /// Its definition changed on reload: restart it if it is wanted up.
    Redefine,
    /// It is gone from the config.
    Remove,
}

/// Why corral sent a service its stop signal; what follows the exit is
/// decided from what is wanted then, and this only says whether the run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// Asked for: an operator, a reload, a restarting dependency, or shutdown.
    Asked,
    /// It never became ready within start-timeout: a failed start.
    NotReady,
    /// Its health probe failed `retries` times in a row.
    Unhealthy,
    /// It did not send WATCHDOG=1 in time: the watchdog signal, not the stop signal.
    Watchdog,
}

/// What a service said on its notify socket that the lifecycle acts on
/// (READY=1 comes as a readiness probe's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// RELOADING=1: not ready until READY=1.
    Reloading,
    /// STOPPING=1: it is on its way out; its endpoints go now.
    Stopping,
    /// MAINPID=: this process of the instance is the one to follow.
    MainPid(Pid),
    /// EXTEND_TIMEOUT_USEC=: the start (or stop) may take this much longer from now.
    ExtendTimeout(Duration),
    /// No WATCHDOG=1 within the watchdog period.
    WatchdogMissed,
}

/// Which probe of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeRole {
    Ready,
    Health,
}

/// What the health probe has found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthStatus {
    /// None until the first check after readiness.
    pub healthy: Option<bool>,
    /// Consecutive failures.
    pub failures: u32,
    pub last_failure: Option<String>,
}

/// What the outside world tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start every service along the graph.
    Boot,
    /// The runtime spawned the requested process (which step it is, the
    /// unit's `Launching` state says).
    Spawned { svc: usize, pid: Pid },
    /// The runtime could not spawn it (bad path, permission...).
    /// `permanent`: the program cannot be run at all (not found, not
    /// executable): trying again would fail the same way.
    SpawnFailed {
        svc: usize,
        error: String,
        permanent: bool,
    },
    /// A process of a service was reaped.
    Reaped { svc: usize, pid: Pid, exit: Exit },
    /// A timer armed by an earlier effect is due.
    TimerFired(Timer),
    /// A probe ran (or, for log and notify-fd readiness, the service said it is ready).
    ProbeResult {
        svc: usize,
        epoch: u64,
        role: ProbeRole,
        result: Result<(), String>,
    },
    /// Orderly shutdown (SIGTERM, SIGINT...): exit with `code` unless a
    /// failure overrides it. `within`: the runtime's grace (SIGTERM), which
    /// the whole shutdown is fitted into.
    Shutdown {
        code: i32,
        reason: &'static str,
        within: Option<Duration>,
    },
    /// Kill everything now (second signal during shutdown); corral exits
    /// with `code` unless a failure already set one.
    ForceStop { code: i32 },
    /// An operator asked to start a service (also one that failed or was stopped).
    StartRequested { svc: usize },
    /// An operator asked to stop a service; it stays down until started.
    StopRequested { svc: usize },
    /// An operator asked to restart a service (start it if it is not running).
    RestartRequested { svc: usize },
    /// A new config was loaded: see [`ReloadPlan`].
    Reload(Box<crate::engine::ReloadPlan>),
    /// Which required names of a service have no endpoint (empty: all have one).
    RequirementsChanged { svc: usize, missing: Vec<String> },
    /// Endpoints of names these services require changed: debounce, then act.
    EndpointsChanged { svcs: Vec<usize> },
    /// A dependent's change action is a restart (or its command failed):
    /// restart it, one instance of its service at a time.
    ChangeRestart { svc: usize },
    /// A job's schedule ticked.
    Tick { svc: usize },
    /// The operator's stop or restart that follows gives the service this
    /// long after its stop signal, instead of its stop-timeout.
    StopWithin { svc: usize, timeout: Duration },
    /// The process `pid` of a service said something on its notify socket.
    Notified {
        svc: usize,
        pid: Pid,
        what: Notified,
    },
}

/// What one service's transition is given: an event of the outside world,
/// already routed to the service it concerns and checked for staleness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The requested process was spawned.
    Launched { pid: Pid },
    /// The requested process could not be spawned.
    LaunchFailed { error: String, permanent: bool },
    /// The service's current process ended.
    Ended { exit: Exit },
    /// A timer of the current epoch is due.
    Timer(TimerKind),
    /// A probe of the current epoch answered.
    Probe {
        role: ProbeRole,
        result: Result<(), String>,
    },
    /// What is wanted changed (its `want` is already updated).
    Asked(Ask),
    /// Dependencies or endpoints may have changed: start if all are met.
    Poll,
    /// A dependency this one declared `restart = true` on is restarting.
    DependencyRestarting { dependency: usize },
    /// corral is shutting down; `dependents_done`: nothing that depends on
    /// this service still runs, so it may stop now.
    Shutdown { dependents_done: bool },
    /// Kill now (a second signal during shutdown, or shutdown-timeout).
    Kill { reason: &'static str },
    /// A job's schedule ticked, or (`manual`) an operator asked for a run now.
    Tick { manual: bool },
    /// The current process said something on its notify socket.
    Notified(Notified),
}

/// A timer the runtime keeps for the engine; stale ones are ignored by epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub svc: Option<usize>,
    pub kind: TimerKind,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// Restart a service in backoff.
    Backoff,
    /// SIGKILL a service that ignored its stop signal.
    StopTimeout,
    /// The whole shutdown took too long.
    ShutdownDeadline,
    /// Run the readiness probe again.
    ReadyProbe,
    /// The service had until now to become ready.
    StartTimeout,
    /// Run the health probe.
    HealthProbe,
    /// A service waited for its required endpoints long enough.
    RequireTimeout,
    /// A debounced endpoint change may be due.
    ChangeDue,
}

/// What the engine asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Spawn {
        svc: usize,
        step: Step,
    },
    /// Publish the service's provided endpoints (it is ready).
    Register {
        svc: usize,
    },
    /// Take them back (before the stop signal, or once it died).
    Withdraw {
        svc: usize,
    },
    /// Run a probe for the process of `epoch`; answer with Event::ProbeResult.
    RunProbe {
        svc: usize,
        role: ProbeRole,
        epoch: u64,
    },
    /// A process that is no longer the service's (replaced by a start-first
    /// update, or a new one that failed): send `signal` to its group, and
    /// SIGKILL after `timeout`; its end is not the service's.
    Retire {
        svc: usize,
        pid: Pid,
        signal: Signal,
        timeout: Duration,
    },
    /// Send a signal to the process group led by `pid`.
    SignalGroup {
        svc: usize,
        pid: Pid,
        signal: Signal,
    },
    ArmTimer {
        at: Instant,
        timer: Timer,
    },
    Report {
        svc: Option<usize>,
        report: Report,
    },
    /// The endpoints a running dependent requires changed (debounced):
    /// re-render its templates and carry out its on-change action, if its
    /// endpoint sets really differ from those it last acted on.
    ApplyChange {
        svc: usize,
    },
    /// Everything is stopped: leave with this code.
    Exit {
        code: i32,
    },
}

/// A lifecycle message for the console (and later the event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    PreStarted {
        pid: Pid,
    },
    Started {
        pid: Pid,
    },
    Ready {
        after: Duration,
    },
    NotReady {
        timeout: Duration,
        last_error: Option<String>,
    },
    HealthFailed {
        failures: u32,
        retries: u32,
        reason: String,
    },
    Unhealthy {
        failures: u32,
    },
    Recovered,
    DependencyRestarting {
        dependency: String,
    },
    PostStarted {
        pid: Pid,
    },
    SpawnFailed {
        step: Step,
        error: String,
    },
    StepFailed {
        step: Step,
        exit: Exit,
    },
    /// It ended cleanly and is not restarted.
    Ended {
        exit: Exit,
    },
    Completed,
    Restarting {
        delay: Duration,
        attempt: u32,
    },
    GaveUp {
        restarts: u32,
        exit: Exit,
    },
    Failed {
        exit: Exit,
    },
    Blocked {
        dependency: String,
        state: &'static str,
    },
    WaitingFor {
        dependencies: Vec<String>,
    },
    WaitingForEndpoints {
        missing: Vec<String>,
    },
    RequireTimeout {
        missing: Vec<String>,
        timeout: Duration,
    },
    Changed,
    Added,
    Removed,
    Stopping {
        signal: Signal,
        timeout: Duration,
    },
    Killing {
        reason: &'static str,
    },
    Stopped,
    RunStarted {
        pid: Pid,
    },
    RunEnded {
        exit: Exit,
        took: Duration,
    },
    /// A tick (or a manual start) found a run still going.
    RunSkipped {
        manual: bool,
        queued: bool,
    },
    RunQueued {
        manual: bool,
    },
    RunReplaced {
        manual: bool,
    },
    ShuttingDown {
        reason: String,
    },
    /// A shutdown fitted into the runtime's grace: every stop-timeout cut
    /// to `percent` of itself, the whole bounded by `deadline`.
    ShutdownFitted {
        grace: Duration,
        worst: Duration,
        percent: u32,
        deadline: Duration,
    },
    ShutdownTimeout,
    /// RELOADING=1.
    Reloading,
    /// STOPPING=1.
    SaysStopping,
    MainPid {
        pid: Pid,
    },
    TimeoutExtended {
        by: Duration,
    },
    WatchdogMissed {
        signal: Signal,
    },
    /// A start-first update: the new process starts while `old` serves.
    StartingFirst {
        old: Pid,
    },
    /// The new process is ready: the old one is stopped.
    Replaced {
        old: Pid,
        signal: Signal,
    },
    /// The new process of a start-first update did not get ready: `old`
    /// goes on serving.
    UpdateFailed {
        old: Pid,
        exit: Option<Exit>,
    },
    /// The old process of a start-first update ended before the new one was ready.
    OldEnded {
        pid: Pid,
        exit: Exit,
    },
}
