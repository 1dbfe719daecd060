//! The event loop: owns the engine and carries out its effects.
//!
//! Every wake-up is a signal, a child exit (SIGCHLD), a due timer, or pipe
//! output; with nothing due, the loop sleeps in the kernel.

mod discover;
mod listen;
mod notify;
mod probe;
mod protocols;
mod reload;
mod report;
mod requests;
mod schedule;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::config::{Config, Probe};
use crate::control::{self, Api, Request, Socket};
use crate::discovery::LocalRegistry;
use crate::engine::{Effect, Engine, Event, Exit, Pid, ProbeRole, Spec, Step, Timer};
use corral_proto::LogStream;
use protocols::Spoken;

use crate::logs::{ConsoleOptions, FileSpec, Format, LogHub, LogWatch, PipeReader, ServiceLog};
use crate::process::{self, Launch, Output};

/// How `up` was asked to run.
pub struct Options {
    /// Start nothing (break glass); set when the configured variable is present.
    pub break_glass: Option<String>,
    /// `up SERVICE...`: only these (and what they depend on) run, across reloads.
    pub selection: Vec<String>,
    /// `up --profile`: the profiles whose services run, across reloads.
    pub profiles: Vec<String>,
    /// This run's marker and cgroups (what a SIGKILL of corral must not leave).
    pub tracking: process::tracking::Run,
    /// `up --abort-on-exit` / `--exit-code-from SERVICE` (an index).
    pub abort_on_exit: Option<crate::engine::AbortOnExit>,
    /// The state directory (src/state.rs): endpoint files go there.
    pub state_dir: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the output reader: {0}")]
    Pipes(#[source] std::io::Error),
}

/// How long orphans left after shutdown get between SIGTERM and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// How long a clean exit waits for etcd to revoke this corral's lease.
const REVOKE_WAIT: Duration = Duration::from_secs(2);

/// A burst of at least this many spawns ends with a trim of the heap.
const TRIM_AFTER: usize = 16;

/// Spawns carried out per wake-up of the loop.
const SPAWN_BATCH: usize = 32;

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
    winch: SignalStream,
    /// Signals corral neither acts on nor passes on: each is said, once a
    /// receipt, where it would otherwise end a corral that is not PID 1.
    alrm: SignalStream,
    pwr: SignalStream,
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
            winch: signal(SignalKind::window_change())?,
            alrm: signal(SignalKind::alarm())?,
            pwr: signal(SignalKind::from_raw(libc::SIGPWR))?,
        })
    }
}

/// A signal sent to corral itself, as the loop sees it.
enum Received {
    Child,
    Stop(Signal),
    Forward(Signal),
    Ignored(Signal),
    Hangup,
}

/// What a child process of corral is.
#[derive(Debug, Clone, Copy)]
enum Child {
    /// A pre step, a service, or a post step of this service.
    Service(usize),
    /// An exec probe; `id` tells it apart from a later probe with a reused pid.
    Probe {
        svc: usize,
        role: ProbeRole,
        epoch: u64,
        id: u64,
    },
    /// A probe that timed out and was killed; its exit means nothing.
    Abandoned,
    /// An on-change command of this service: a non-zero exit restarts it.
    Action { svc: usize },
}

/// Messages from tasks the loop started (probes, output watchers).
#[derive(Debug)]
enum Notice {
    /// A service said something on its notify socket (`pid`: the
    /// process corral started, whose socket it is).
    Notify {
        svc: usize,
        pid: Pid,
        message: notify::Message,
    },
    /// A replaced process had its stop-timeout: SIGKILL it if it is still there.
    RetireDeadline { pid: Pid },
    /// A network probe finished.
    Probe {
        svc: usize,
        epoch: u64,
        role: ProbeRole,
        result: Result<(), String>,
    },
    /// The process `pid` of `svc` said it is ready (log line or notify fd).
    Ready { svc: usize, pid: Pid },
    /// An exec probe's time is up.
    ProbeDeadline { pid: Pid, id: u64 },
}

/// The supervisor: engine state plus the live resources it refers to.
pub(crate) struct Supervisor<'c> {
    config: Config,
    engine: Engine,
    hub: &'c LogHub,
    /// Every pid corral spawned and has not reaped yet.
    children: HashMap<Pid, Child>,
    notices_tx: mpsc::UnboundedSender<Notice>,
    notices: mpsc::UnboundedReceiver<Notice>,
    /// Control API requests, answered one at a time by this loop.
    requests: mpsc::Receiver<Request>,
    /// Lifecycle changes for `GET /v1/events` and waiting handlers.
    subscribers: Vec<crate::control::api::Subscriber>,
    /// `corral scale` choices: service -> replicas, applied on every reload.
    scale: std::collections::BTreeMap<String, u32>,
    /// The services `up` was given (empty: all); every reload keeps to them.
    selection: Vec<String>,
    /// The profiles `up` was given; every reload keeps to them.
    profiles: Vec<String>,
    /// Who provides what (the built-in, one-host backend).
    registry: LocalRegistry,
    /// Identifies this corral in endpoint instances (`<host-id>:<service>`).
    host_id: String,
    /// The etcd agent, when discovery spans hosts.
    remote: Option<discover::Remote>,
    /// Where endpoint files go (the state directory).
    runtime_dir: std::path::PathBuf,
    /// The endpoint sets each dependent last acted on.
    applied: HashMap<usize, discover::EndpointSets>,
    probe_seq: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    /// When each job's next tick is due.
    schedule: schedule::Schedule,
    /// The pipe readers; drained before exit so no output line is lost.
    pipes: Arc<PipeReader>,
    timer_seq: u64,
    queue: VecDeque<Event>,
    /// Spawns the engine asked for, carried out a batch per wake-up so that a
    /// big scale or reload never keeps the loop from signals and requests.
    spawns: VecDeque<(usize, Step)>,
    /// Spawns since the queue was last empty.
    burst: usize,
    exit: Option<i32>,
    tracking: process::tracking::Run,
    /// Per service, the CPU time of its processes that ended (pre and post
    /// steps included), for the CPU counters that only grow.
    cpu_ended: Vec<Duration>,
    /// Listening sockets held for services (`sockets`).
    listeners: listen::Listeners,
    /// Names the notify sockets apart.
    notify_seq: u64,
    /// The task reading each process's notify socket, by the pid corral
    /// follows for it.
    notify_tasks: HashMap<Pid, tokio::task::AbortHandle>,
    /// What services said of themselves (STATUS=) and how many of their
    /// notify messages were ignored.
    said: HashMap<usize, Said>,
    /// A process corral started -> the main process it named (MAINPID=).
    followed: HashMap<Pid, Pid>,
    /// Processes replaced by an update, on their way out: their service.
    retiring: HashMap<Pid, usize>,
    /// A reload reading the config on a thread of its own, and who waits
    /// for its result (None: SIGHUP, said on the console).
    reloading: Option<Reloading>,
}

type ReloadReply = Option<control::api::Reply<corral_proto::ReloadResult>>;

/// A config being read again off the loop.
struct Reloading {
    read: tokio::task::JoinHandle<Result<crate::config::Loaded, control::api::ApiError>>,
    replies: Vec<ReloadReply>,
    /// Asked for while it was read: the config is read again after it.
    next: Vec<ReloadReply>,
}

/// What a service said on its notify socket that `ps` shows.
#[derive(Debug, Default)]
pub(crate) struct Said {
    pub status: Option<String>,
    pub ignored: u64,
}

/// How the log hub keeps each service's output.
pub fn log_sinks(services: &[crate::config::Service]) -> Vec<ServiceLog> {
    services
        .iter()
        .map(|s| ServiceLog {
            name: s.name.clone(),
            ring_lines: s.log().ring_lines,
            ring_bytes: s.log().ring_bytes,
            file: s.log().file.clone().map(|path| FileSpec {
                path,
                max_size: s.log().max_size,
                keep: s.log().keep,
            }),
        })
        .collect()
}

/// How the console looks.
pub fn console_options(config: &Config) -> ConsoleOptions {
    ConsoleOptions {
        format: match config.global.log_format {
            crate::config::LogFormat::Text => Format::Text,
            crate::config::LogFormat::Json => Format::Json,
        },
        timestamps: config.global.log_timestamps,
    }
}

/// Runs the services of `config` until shutdown; returns corral's exit code.
/// `hub` must have been started with `log_sinks` of the config; `socket`, when
/// given, serves the control API for as long as corral runs.
pub async fn run(
    config: Config,
    options: Options,
    hub: &LogHub,
    socket: Option<Socket>,
) -> Result<i32, RuntimeError> {
    // Handlers first, so no SIGCHLD or SIGTERM can be missed once children exist.
    let mut signals = Signals::install().map_err(RuntimeError::Signals)?;
    if let Err(e) = process::become_subreaper() {
        eprintln!("corral: warning: cannot become a child subreaper: {e}");
    }
    let mut engine = Engine::new(
        Spec::from_config(&config),
        config.start_order.clone(),
        config.global.shutdown_timeout,
    );
    if let Some(rule) = options.abort_on_exit {
        engine.abort_on_exit(rule);
    }
    let (notices_tx, notices) = mpsc::unbounded_channel();
    let (requests_tx, requests) = mpsc::channel(256);
    let (stop_server, server_stop) = watch::channel(false);
    let socket_path = socket.as_ref().map(|s| s.path.clone());
    let server = socket.map(|socket| {
        let identity = corral_proto::Version {
            api: corral_proto::API_VERSION,
            corral: env!("CARGO_PKG_VERSION").to_string(),
            config: std::fs::canonicalize(&config.path)
                .ok()
                .map(|p| p.display().to_string()),
            pid: Some(std::process::id()),
            started: Some(crate::unix_now()),
        };
        let api = Api {
            requests: requests_tx,
            hub: hub.handle(),
            identity: Arc::new(identity),
            usage: Arc::default(),
        };
        tokio::spawn(control::serve(socket, api, server_stop))
    });
    let runtime_dir = options.state_dir.clone();
    let pipes = Arc::new(PipeReader::start(hub.handle()).map_err(RuntimeError::Pipes)?);
    let host_id = config.global.discovery.host_id.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    });
    let remote = config
        .global
        .discovery
        .etcd
        .as_ref()
        .map(|etcd| discover::Remote::start(etcd, &host_id, &config.services));
    let mut sup = Supervisor {
        config,
        engine,
        hub,
        children: HashMap::new(),
        notices_tx,
        notices,
        requests,
        subscribers: Vec::new(),
        scale: std::collections::BTreeMap::new(),
        selection: options.selection.clone(),
        profiles: options.profiles.clone(),
        registry: LocalRegistry::default(),
        host_id: host_id.clone(),
        remote,
        runtime_dir,
        applied: HashMap::new(),
        probe_seq: 0,
        timers: BinaryHeap::new(),
        schedule: schedule::Schedule::default(),
        pipes,
        timer_seq: 0,
        queue: VecDeque::new(),
        spawns: VecDeque::new(),
        burst: 0,
        exit: None,
        tracking: options.tracking,
        cpu_ended: Vec::new(),
        listeners: listen::Listeners::default(),
        notify_seq: 0,
        notify_tasks: HashMap::new(),
        said: HashMap::new(),
        followed: HashMap::new(),
        retiring: HashMap::new(),
        reloading: None,
    };
    match &options.break_glass {
        Some(var) => sup.hub.event(
            None,
            format!(
                "BREAK GLASS: {var} is set, so no service is started. corral stays up for repairs; \
                 unset {var} and restart corral to start services (SIGTERM ends it)"
            ),
        ),
        None => {
            sup.refresh_requirements();
            sup.queue.push_back(Event::Boot);
            sup.schedule.sync(&sup.config.services, |_| false);
        }
    }
    let code = sup.run_loop(&mut signals).await;
    sup.sweep_orphans(&mut signals).await;
    sup.listeners.close_all();
    sup.tracking.end();
    if let Some(remote) = sup.remote.take() {
        remote.stop(REVOKE_WAIT).await;
    }
    // Every process is gone: the pipes reach EOF once their last bytes are read.
    sup.pipes.drained(PIPE_DRAIN).await;
    // The path goes first, so whoever sees the event streams end (`corral
    // down` reads until then) finds corral gone; then the server stops.
    if let Some(path) = &socket_path {
        let _ = std::fs::remove_file(path);
    }
    // The event streams end now, each with its last line, before the
    // server stops (the rest of `sup` lives until the end of this function).
    sup.subscribers.clear();
    // The config and the engine's state are only memory, which the exit
    // frees at once; freed piece by piece, each emptied group costs musl's
    // allocator a munmap, thousands of them for a thousand services.
    // The rest (channels, handles) is dropped.
    let Supervisor { config, engine, .. } = sup;
    std::mem::forget(config);
    std::mem::forget(engine);
    let _ = stop_server.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
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
                        self.hub.event(
                            None,
                            format!("{} received again: killing everything", sig.as_str()),
                        );
                        Event::ForceStop {
                            code: 128 + sig as i32,
                        }
                    } else {
                        self.hub.event(None, format!("{} received", sig.as_str()));
                        // SIGTERM is how runtimes stop a container; their
                        // SIGKILL follows after a grace the plan must fit.
                        Event::Shutdown {
                            code: 0,
                            reason: "signal received",
                            within: (sig == Signal::SIGTERM)
                                .then_some(self.config.global.stop_grace),
                        }
                    };
                    self.queue.push_back(event);
                }
                Wakeup::Signal(Received::Forward(sig)) => self.forward(sig),
                Wakeup::Signal(Received::Ignored(sig)) => self.hub.event(
                    None,
                    format!(
                        "{} received: corral does not act on it; ignored",
                        sig.as_str()
                    ),
                ),
                Wakeup::Signal(Received::Hangup) => {
                    self.hub
                        .event(None, "SIGHUP received: reloading the config".into());
                    self.start_reload(None);
                }
                Wakeup::Reloaded(read) => self.reloaded(*read).await,
                Wakeup::Timer => self.fire_due_timers(),
                Wakeup::Spawn => {
                    // The output pipes of the batch go to their reader
                    // thread together, at the end of it.
                    let pipes = self.pipes.clone();
                    let batch = pipes.batch();
                    for _ in 0..SPAWN_BATCH {
                        let Some((svc, step)) = self.spawns.pop_front() else {
                            break;
                        };
                        self.spawn(svc, step);
                        self.burst += 1;
                    }
                    drop(batch);
                    if self.spawns.is_empty() {
                        // The end of a start-up or a big reload: what they
                        // used for a while goes back to the system.
                        if self.burst >= TRIM_AFTER {
                            process::give_back_free_memory();
                        }
                        self.burst = 0;
                    }
                    // Let the API server and the output readers run between
                    // batches: they are other tasks of this one thread.
                    tokio::task::yield_now().await;
                }
                Wakeup::Notice(notice) => self.on_notice(notice),
                Wakeup::HubRoom => self.hub.flush(),
                Wakeup::Discovery(report) => self.on_discovery(report),
                Wakeup::Request(request) => self.on_request(request).await,
            }
        }
    }

    async fn next_wakeup(&mut self, signals: &mut Signals) -> Wakeup {
        let deadline = match (self.timers.peek(), self.schedule.deadline()) {
            (Some(Reverse((at, _, _))), Some(tick)) => Some((*at).min(tick)),
            (Some(Reverse((at, _, _))), None) => Some(*at),
            (None, tick) => tick,
        };
        tokio::select! {
            _ = signals.child.recv() => Wakeup::Signal(Received::Child),
            _ = signals.term.recv() => Wakeup::Signal(Received::Stop(Signal::SIGTERM)),
            _ = signals.int.recv() => Wakeup::Signal(Received::Stop(Signal::SIGINT)),
            _ = signals.quit.recv() => Wakeup::Signal(Received::Stop(Signal::SIGQUIT)),
            _ = signals.hup.recv() => Wakeup::Signal(Received::Hangup),
            _ = signals.usr1.recv() => Wakeup::Signal(Received::Forward(Signal::SIGUSR1)),
            _ = signals.usr2.recv() => Wakeup::Signal(Received::Forward(Signal::SIGUSR2)),
            _ = signals.winch.recv() => Wakeup::Signal(Received::Forward(Signal::SIGWINCH)),
            _ = signals.alrm.recv() => Wakeup::Signal(Received::Ignored(Signal::SIGALRM)),
            _ = signals.pwr.recv() => Wakeup::Signal(Received::Ignored(Signal::SIGPWR)),
            _ = sleep_until_opt(deadline) => Wakeup::Timer,
            _ = std::future::ready(()), if !self.spawns.is_empty() => Wakeup::Spawn,
            Some(notice) = self.notices.recv() => Wakeup::Notice(notice),
            Some(request) = self.requests.recv() => Wakeup::Request(request),
            Some(report) = discover::Remote::next(&mut self.remote) => Wakeup::Discovery(report),
            () = self.hub.room(), if self.hub.has_waiting() => Wakeup::HubRoom,
            read = read_done(&mut self.reloading), if self.reloading.is_some() => {
                Wakeup::Reloaded(Box::new(read))
            }
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
            Effect::Spawn { svc, step } => self.spawns.push_back((svc, step)),
            Effect::RunProbe { svc, role, epoch } => self.run_probe(svc, role, epoch),
            Effect::Register { svc } => self.register(svc),
            Effect::Withdraw { svc } => self.withdraw(svc),
            Effect::ApplyChange { svc } => self.apply_change(svc),
            Effect::SignalGroup { svc, pid, signal } => {
                if signal == Signal::SIGKILL {
                    // What left the group (setsid, a double fork) goes too.
                    self.tracking.kill_instance(&self.config.services[svc].name);
                }
                if let Err(e) = process::signal_group(pid, signal) {
                    self.hub.event(
                        Some(svc),
                        format!("cannot send {} to pid {pid}: {e}", signal.as_str()),
                    );
                }
            }
            Effect::Retire {
                svc,
                pid,
                signal,
                timeout,
            } => self.retire(svc, pid, signal, timeout),
            Effect::ArmTimer { at, timer } => {
                self.timer_seq += 1;
                self.timers
                    .push(Reverse((Instant::from_std(at), self.timer_seq, timer)));
            }
            Effect::Report { svc, report } => {
                let message = report::describe(&report);
                if !self.subscribers.is_empty() {
                    let event = corral_proto::Event {
                        time: crate::unix_now(),
                        service: svc.map(|i| self.config.services[i].name.clone()),
                        state: svc.map(|i| self.engine.units()[i].state.public()),
                        message: message.clone(),
                        kind: None,
                        missed: None,
                    };
                    self.publish(&event);
                }
                self.hub.event(svc, message);
            }
            Effect::Exit { code } => self.exit = Some(code),
        }
    }

    /// Hands a lifecycle change to every subscriber (`/v1/events`, waiting
    /// handlers); forgets those that are gone.
    pub(crate) fn publish(&mut self, event: &corral_proto::Event) {
        self.subscribers.retain(|s| s.offer(event));
    }

    /// How to start a process for `svc`: its user and working dir, in its
    /// cgroup, with the run's marker; its environment, its own variables,
    /// then `discovery` (what discovery tells it now, when it gets that).
    pub(crate) fn launch<'a>(
        &'a self,
        svc: usize,
        argv: &'a [String],
        discovery: Vec<(String, String)>,
    ) -> Launch<'a> {
        let service = &self.config.services[svc];
        let mut extra_env = service.own_env();
        extra_env.extend(discovery);
        Launch {
            argv,
            env: &service.env,
            extra_env,
            working_dir: service.working_dir.as_deref(),
            user: service.user.as_deref(),
            output: if service.log().merge_stderr {
                Output::Merged
            } else {
                Output::Pipes
            },
            notify: None,
            listen: &[],
            pid_vars: &[],
            run_id: Some(self.tracking.id()),
            cgroup: self.tracking.join_fd(&service.name),
        }
    }

    fn spawn(&mut self, svc: usize, step: Step) {
        // What its protocols need, bound before anything borrows the config.
        let protocols = match step {
            Step::Main => self.protocols_of(svc),
            Step::Pre | Step::Post => Ok(Spoken::default()),
        };
        let spoken = match protocols {
            Ok(spoken) => spoken,
            Err(error) => {
                self.queue.push_back(Event::SpawnFailed {
                    svc,
                    error,
                    permanent: false,
                });
                return;
            }
        };

        // The service's own environment, plus what discovery tells it now:
        // only the service itself gets discovery, not its pre and post steps.
        let discovery = match step {
            Step::Main => self.discovery_env(svc),
            Step::Pre | Step::Post => Vec::new(),
        };
        let service = &self.config.services[svc];
        let argv = match step {
            Step::Pre => service.pre.as_deref(),
            Step::Main => Some(service.command.as_slice()),
            Step::Post => service.post.as_deref(),
        }
        .unwrap_or_default();
        let ready_probe = service
            .ready
            .as_ref()
            .map(|r| &r.probe)
            .filter(|_| step == Step::Main);
        let mut notify_reader = None;
        let notify = match ready_probe {
            Some(&Probe::NotifyFd(target)) => {
                match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                    Ok((read, write)) => {
                        notify_reader = Some(read);
                        Some((write, target))
                    }
                    Err(e) => {
                        self.queue.push_back(Event::SpawnFailed {
                            svc,
                            error: format!("cannot create the notify-fd pipe: {e}"),
                            permanent: false,
                        });
                        return;
                    }
                }
            }
            _ => None,
        };
        let mut launch = Launch {
            notify,
            listen: &spoken.listen,
            pid_vars: spoken.pid_vars,
            ..self.launch(svc, argv, discovery)
        };
        launch.extra_env.extend(spoken.env);
        let spawned = match process::spawn(launch) {
            Ok(spawned) => spawned,
            Err(e) => {
                self.queue.push_back(Event::SpawnFailed {
                    svc,
                    error: e.to_string(),
                    permanent: e.is_permanent(),
                });
                return;
            }
        };
        let pid = spawned.pid;
        self.children.insert(pid, Child::Service(svc));
        let watch = match ready_probe {
            Some(Probe::Log(pattern)) => regex_lite::Regex::new(pattern).ok().map(|regex| {
                let tx = self.notices_tx.clone();
                Arc::new(LogWatch {
                    regex,
                    on_match: Box::new(move || {
                        let _ = tx.send(Notice::Ready { svc, pid });
                    }),
                    fired: false.into(),
                })
            }),
            _ => None,
        };
        if let Some(read) = notify_reader {
            tokio::spawn(watch_notify_fd(read, svc, pid, self.notices_tx.clone()));
        }
        if let Some(socket) = spoken.notify {
            let watchdog = self.config.services[svc]
                .protocols
                .as_ref()
                .and_then(|p| p.watchdog);
            let task = tokio::spawn(notify::watch(
                socket,
                svc,
                pid,
                watchdog,
                self.notices_tx.clone(),
            ));
            self.notify_tasks.insert(pid, task.abort_handle());
        }
        self.pump_output(svc, spawned, watch);
        self.queue.push_back(Event::Spawned { svc, pid });
    }

    /// Has a process's stdout and stderr read into the logs.
    fn pump_output(&mut self, svc: usize, spawned: process::Spawned, watch: Option<Arc<LogWatch>>) {
        let max_line = self.config.services[svc].log().max_line;
        for (fd, stream) in [
            (spawned.stdout, LogStream::Stdout),
            (spawned.stderr, LogStream::Stderr),
        ] {
            if let Some(fd) = fd {
                self.pipes.add(fd, svc, stream, watch.clone(), max_line);
            }
        }
    }

    /// Runs the service's readiness or health probe for the process of `epoch`.
    fn run_probe(&mut self, svc: usize, role: ProbeRole, epoch: u64) {
        let service = &self.config.services[svc];
        let (probe, limit) = match role {
            ProbeRole::Ready => match &service.ready {
                Some(r) => (r.probe.clone(), r.timeout),
                None => return,
            },
            ProbeRole::Health => match &service.health {
                Some(h) => (h.probe.clone(), h.timeout),
                None => return,
            },
        };
        let tx = self.notices_tx.clone();
        let report = move |result| {
            let _ = tx.send(Notice::Probe {
                svc,
                epoch,
                role,
                result,
            });
        };
        match probe {
            Probe::Tcp(addr) => {
                tokio::spawn(async move { report(probe::tcp(&addr, limit).await) });
            }
            Probe::Http { url, status } => {
                tokio::spawn(async move { report(probe::http(&url, &status, limit).await) });
            }
            Probe::Exec(argv) => {
                let launch = Launch {
                    output: Output::Null,
                    ..self.launch(svc, &argv, Vec::new())
                };
                match process::spawn(launch) {
                    Ok(spawned) => {
                        self.probe_seq += 1;
                        let id = self.probe_seq;
                        self.children.insert(
                            spawned.pid,
                            Child::Probe {
                                svc,
                                role,
                                epoch,
                                id,
                            },
                        );
                        let tx = self.notices_tx.clone();
                        let pid = spawned.pid;
                        tokio::spawn(async move {
                            tokio::time::sleep(limit).await;
                            let _ = tx.send(Notice::ProbeDeadline { pid, id });
                        });
                    }
                    Err(e) => report(Err(format!("probe did not start: {e}"))),
                }
            }
            // Passive readiness: the output watchers or the notify socket report it.
            Probe::Log(_) | Probe::NotifyFd(_) | Probe::Notify => {}
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Probe {
                svc,
                epoch,
                role,
                result,
            } => self.queue.push_back(Event::ProbeResult {
                svc,
                epoch,
                role,
                result,
            }),
            Notice::Ready { svc, pid } => self.said_ready(svc, pid),
            Notice::Notify { svc, pid, message } => self.on_notify(svc, pid, message),
            Notice::RetireDeadline { pid } => {
                if let Some(&svc) = self.retiring.get(&pid) {
                    self.hub.event(
                        Some(svc),
                        format!("the old process (pid {pid}) outlived its stop-timeout: sending SIGKILL"),
                    );
                    let _ = process::signal_group(pid, Signal::SIGKILL);
                }
            }
            Notice::ProbeDeadline { pid, id } => {
                if let Some(&Child::Probe {
                    svc,
                    role,
                    epoch,
                    id: live,
                }) = self.children.get(&pid)
                {
                    if live == id {
                        let _ = process::signal_group(pid, Signal::SIGKILL);
                        self.children.insert(pid, Child::Abandoned);
                        self.queue.push_back(Event::ProbeResult {
                            svc,
                            epoch,
                            role,
                            result: Err("probe command timed out".into()),
                        });
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        for process::Reaped { pid, exit, cpu } in process::reap_exited() {
            if let Some(task) = self.notify_tasks.remove(&pid) {
                task.abort();
            }
            if self.followed.values().any(|&main| main == pid) {
                self.followed.retain(|_, main| *main != pid);
            }
            match self.children.remove(&pid) {
                Some(Child::Service(svc)) if self.retiring.remove(&pid).is_some() => {
                    self.hub.event(
                        Some(svc),
                        format!("the old process (pid {pid}) ended with {exit}"),
                    );
                    let _ = process::signal_group(pid, Signal::SIGKILL);
                }
                Some(Child::Service(svc)) => {
                    if self.cpu_ended.len() <= svc {
                        self.cpu_ended.resize(svc + 1, Duration::ZERO);
                    }
                    self.cpu_ended[svc] += cpu;
                    self.queue.push_back(Event::Reaped { svc, pid, exit });
                    // Shutting down, a service without a post step is done:
                    // its cgroup can go while the others end.
                    let service = &self.config.services[svc];
                    if self.engine.is_shutting_down() && service.post.is_none() {
                        self.tracking.release_instance(&service.name);
                    }
                }
                Some(Child::Probe {
                    svc, role, epoch, ..
                }) => {
                    // Whatever the probe started goes with it.
                    let _ = process::signal_group(pid, Signal::SIGKILL);
                    let result = match exit {
                        Exit::Code(0) => Ok(()),
                        other => Err(format!("probe command ended with {other}")),
                    };
                    self.queue.push_back(Event::ProbeResult {
                        svc,
                        epoch,
                        role,
                        result,
                    });
                }
                Some(Child::Action { svc }) => {
                    if exit != Exit::Code(0) {
                        self.hub.event(
                            Some(svc),
                            format!("on-change command ended with {exit}: restarting"),
                        );
                        self.queue.push_back(Event::ChangeRestart { svc });
                    }
                }
                Some(Child::Abandoned) | None => {}
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
        for svc in self.schedule.due(&self.config.services) {
            self.queue.push_back(Event::Tick { svc });
        }
    }

    /// Passes SIGUSR1, SIGUSR2 or SIGWINCH on to the running services that
    /// ask for it (`forward-signals`); when none does, to the one essential
    /// service if there is exactly one (as tini passes every signal to its
    /// one child); else to none. Says which.
    fn forward(&mut self, sig: Signal) {
        let services = &self.config.services;
        let asked: Vec<usize> = (0..services.len())
            .filter(|&i| services[i].forward_signals.contains(sig))
            .collect();
        let takers = if asked.is_empty() {
            let essential: Vec<usize> = (0..services.len())
                .filter(|&i| services[i].essential)
                .collect();
            let one_group = essential
                .iter()
                .all(|&i| services[i].group == services[essential[0]].group);
            if one_group {
                essential
            } else {
                Vec::new()
            }
        } else {
            asked
        };
        let mut sent = Vec::new();
        for svc in takers {
            if let crate::engine::State::Running { pid, .. } = self.engine.units()[svc].state {
                if process::signal_group(pid, sig).is_ok() {
                    sent.push(services[svc].name.as_str());
                }
            }
        }
        let message = if sent.is_empty() {
            format!(
                "{} received: no running service takes it (forward-signals); ignored",
                sig.as_str()
            )
        } else {
            format!(
                "{} received: passed on to {}",
                sig.as_str(),
                sent.join(", ")
            )
        };
        self.hub.event(None, message);
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
        self.hub.event(
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
    /// Spawns are waiting: carry out the next batch.
    Spawn,
    /// The etcd agent reported.
    Discovery(crate::discovery::etcd::agent::Report),
    Notice(Notice),
    Request(Request),
    /// Lifecycle messages wait, and the log hub has room for them now.
    HubRoom,
    /// A reload finished reading the config (boxed: a config is large).
    Reloaded(Box<Result<crate::config::Loaded, control::api::ApiError>>),
}

/// The config a reload read, once read.
async fn read_done(
    reloading: &mut Option<Reloading>,
) -> Result<crate::config::Loaded, control::api::ApiError> {
    match reloading {
        Some(r) => match (&mut r.read).await {
            Ok(read) => read,
            Err(e) => Err(control::api::ApiError::new(
                500,
                format!("reading the config failed: {e}"),
            )),
        },
        None => std::future::pending().await,
    }
}

/// Reads a notify fd until the service writes a newline (it is ready) or closes it.
async fn watch_notify_fd(
    fd: OwnedFd,
    svc: usize,
    pid: Pid,
    notices: mpsc::UnboundedSender<Notice>,
) {
    use tokio::io::AsyncReadExt;
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = [0u8; 64];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if buf[..n].contains(&b'\n') => {
                let _ = notices.send(Notice::Ready { svc, pid });
                return;
            }
            Ok(_) => {}
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
