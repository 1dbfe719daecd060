//! The event loop: owns the engine and carries out its effects.
//!
//! Every wake-up is a signal, a child exit (SIGCHLD), a due timer, or pipe
//! output; with nothing due, the loop sleeps in the kernel.

mod report;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::config::Config;
use crate::engine::{Effect, Engine, Event, Pid, Spec, Step, Timer};
use crate::logs::{pump, Console, Stream};
use crate::process::{self, Launch};

/// How `up` was asked to run.
pub struct Options {
    /// Start nothing (break glass); set when the configured variable is present.
    pub break_glass: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
}

/// How long orphans left after shutdown get between SIGTERM and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// How long to wait at exit for output still in the pipes of ended processes.
const PIPE_DRAIN: Duration = Duration::from_secs(2);

struct Signals {
    child: SignalStream,
    term: SignalStream,
    int: SignalStream,
    quit: SignalStream,
    hup: SignalStream,
    usr1: SignalStream,
    usr2: SignalStream,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            child: signal(SignalKind::child())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// A signal sent to corral itself, as the loop sees it.
enum Received {
    Child,
    Stop(Signal),
    Forward(Signal),
    Hangup,
}

/// The supervisor: engine state plus the live resources it refers to.
struct Supervisor<'c> {
    config: Config,
    engine: Engine,
    console: &'c Console,
    /// Every pid corral spawned and has not reaped yet.
    children: HashMap<Pid, usize>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    /// The pipe readers; drained before exit so no output line is lost.
    pumps: JoinSet<()>,
    timer_seq: u64,
    queue: VecDeque<Event>,
    exit: Option<i32>,
}

/// Runs the services of `config` until shutdown; returns corral's exit code.
/// `console` must have been started with the services' names.
pub async fn run(config: Config, options: Options, console: &Console) -> Result<i32, RuntimeError> {
    // Handlers first, so no SIGCHLD or SIGTERM can be missed once children exist.
    let mut signals = Signals::install().map_err(RuntimeError::Signals)?;
    if let Err(e) = process::become_subreaper() {
        eprintln!("corral: warning: cannot become a child subreaper: {e}");
    }
    let engine = Engine::new(
        Spec::from_config(&config),
        config.start_order.clone(),
        config.global.shutdown_timeout,
    );
    let mut sup = Supervisor {
        config,
        engine,
        console,
        children: HashMap::new(),
        timers: BinaryHeap::new(),
        pumps: JoinSet::new(),
        timer_seq: 0,
        queue: VecDeque::new(),
        exit: None,
    };
    match &options.break_glass {
        Some(var) => sup.console.event(
            None,
            format!(
                "BREAK GLASS: {var} is set, so no service is started. corral stays up for repairs; \
                 unset {var} and restart corral to start services (SIGTERM ends it)"
            ),
        ),
        None => sup.queue.push_back(Event::Boot),
    }
    let code = sup.run_loop(&mut signals).await;
    sup.sweep_orphans(&mut signals).await;
    // Every process is gone: the pipes reach EOF once their last bytes are read.
    let pumps = &mut sup.pumps;
    let _ = timeout(PIPE_DRAIN, async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    Ok(code)
}

impl Supervisor<'_> {
    async fn run_loop(&mut self, signals: &mut Signals) -> i32 {
        loop {
            self.drain_queue();
            if let Some(code) = self.exit {
                return code;
            }
            match self.next_wakeup(signals).await {
                Wakeup::Signal(Received::Child) => self.reap(),
                Wakeup::Signal(Received::Stop(sig)) => {
                    let event = if self.engine.is_shutting_down() {
                        self.console.event(
                            None,
                            format!("{} received again: killing everything", sig.as_str()),
                        );
                        Event::ForceStop
                    } else {
                        self.console
                            .event(None, format!("{} received", sig.as_str()));
                        Event::Shutdown { code: 0 }
                    };
                    self.queue.push_back(event);
                }
                Wakeup::Signal(Received::Forward(sig)) => self.forward(sig),
                Wakeup::Signal(Received::Hangup) => self.console.event(
                    None,
                    "SIGHUP received: reloading is not supported yet, ignored".into(),
                ),
                Wakeup::Timer => self.fire_due_timers(),
            }
        }
    }

    async fn next_wakeup(&mut self, signals: &mut Signals) -> Wakeup {
        let deadline = self.timers.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            _ = signals.child.recv() => Wakeup::Signal(Received::Child),
            _ = signals.term.recv() => Wakeup::Signal(Received::Stop(Signal::SIGTERM)),
            _ = signals.int.recv() => Wakeup::Signal(Received::Stop(Signal::SIGINT)),
            _ = signals.quit.recv() => Wakeup::Signal(Received::Stop(Signal::SIGQUIT)),
            _ = signals.hup.recv() => Wakeup::Signal(Received::Hangup),
            _ = signals.usr1.recv() => Wakeup::Signal(Received::Forward(Signal::SIGUSR1)),
            _ = signals.usr2.recv() => Wakeup::Signal(Received::Forward(Signal::SIGUSR2)),
            _ = sleep_until_opt(deadline) => Wakeup::Timer,
        }
    }

    fn drain_queue(&mut self) {
        while let Some(event) = self.queue.pop_front() {
            let effects = self.engine.handle(event, Instant::now().into_std());
            for effect in effects {
                self.apply(effect);
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Spawn { svc, step } => self.spawn(svc, step),
            Effect::SignalGroup { svc, pid, signal } => {
                if let Err(e) = process::signal_group(pid, signal) {
                    self.console.event(
                        Some(svc),
                        format!("cannot send {} to pid {pid}: {e}", signal.as_str()),
                    );
                }
            }
            Effect::ArmTimer { at, timer } => {
                self.timer_seq += 1;
                self.timers
                    .push(Reverse((Instant::from_std(at), self.timer_seq, timer)));
            }
            Effect::Report { svc, report } => self.console.event(svc, report::describe(&report)),
            Effect::Exit { code } => self.exit = Some(code),
        }
    }

    fn spawn(&mut self, svc: usize, step: Step) {
        let service = &self.config.services[svc];
        let argv = match step {
            Step::Pre => service.pre.as_deref(),
            Step::Main => Some(service.command.as_slice()),
            Step::Post => service.post.as_deref(),
        }
        .unwrap_or_default();
        let launch = Launch {
            argv,
            env: &service.env,
            working_dir: service.working_dir.as_deref(),
            user: service.user.as_ref(),
        };
        match process::spawn(&launch) {
            Ok(spawned) => {
                self.children.insert(spawned.pid, svc);
                let console = self.console.handle();
                while self.pumps.try_join_next().is_some() {}
                self.pumps
                    .spawn(pump(spawned.stdout, svc, Stream::Stdout, console.clone()));
                self.pumps
                    .spawn(pump(spawned.stderr, svc, Stream::Stderr, console));
                self.queue.push_back(Event::Spawned {
                    svc,
                    step,
                    pid: spawned.pid,
                });
            }
            Err(e) => self.queue.push_back(Event::SpawnFailed {
                svc,
                step,
                error: e.to_string(),
            }),
        }
    }

    fn reap(&mut self) {
        for (pid, exit) in process::reap_exited() {
            if let Some(svc) = self.children.remove(&pid) {
                self.queue.push_back(Event::Exited { svc, pid, exit });
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.queue.push_back(Event::TimerFired(timer));
        }
    }

    /// Passes SIGUSR1/SIGUSR2 on to every running service.
    fn forward(&mut self, sig: Signal) {
        for unit in self.engine.units() {
            if let crate::engine::State::Running { pid, .. } = unit.state {
                let _ = process::signal_group(pid, sig);
            }
        }
    }

    /// After the last service stopped: anything still alive is a descendant that
    /// escaped its group (a double-forked daemon). SIGTERM, a grace, then SIGKILL.
    async fn sweep_orphans(&mut self, signals: &mut Signals) {
        let me = std::process::id();
        process::reap_exited();
        let first = process::children_of(me);
        if first.is_empty() {
            return;
        }
        self.console.event(
            None,
            format!(
                "stopping {} leftover process(es) that left their service's group",
                first.len()
            ),
        );
        for pid in &first {
            let _ = process::signal_process(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + ORPHAN_GRACE;
        loop {
            process::reap_exited();
            if process::children_of(me).is_empty() {
                return;
            }
            tokio::select! {
                _ = signals.child.recv() => {}
                _ = sleep_until(deadline) => break,
            }
        }
        // Killing one may orphan its children to us: repeat until none is left.
        for _ in 0..64 {
            let left = process::children_of(me);
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = process::signal_process(pid, Signal::SIGKILL);
            }
            tokio::select! {
                _ = signals.child.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            process::reap_exited();
        }
    }
}

enum Wakeup {
    Signal(Received),
    Timer,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
