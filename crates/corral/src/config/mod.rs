//! The configuration model (corral.toml), and loading it with full validation.

mod diag;
mod document;
mod dotenv;
mod env;
pub mod files;
mod graph;
mod host;
pub mod interp;
mod job;
mod links;
mod probe;
mod procfile;
mod protocols;
mod service;
mod user;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

pub use diag::{ConfigErrors, Diagnostic, Severity};
pub use env::{glob_match, masked, Env, HostEnv};
pub use job::{Job, Overlap};
pub use procfile::{is_procfile, ProcfileOptions};
pub use protocols::{Listen, ListenAddress, Protocols, Update, MAX_SOCKETS};
pub use user::{Accounts, Identity};
pub use values::{parse_duration, parse_signal};

/// The directory of a config file, absolute when it can be: relative paths
/// in the file are relative to it, and the daemon's state lives beside it.
pub fn dir_of(file: &Path) -> PathBuf {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// A start order of a graph given as dependency lists (ties in index order).
pub fn topological_order(edges: &[Vec<usize>]) -> Vec<usize> {
    graph::topological_order(edges)
}

pub use graph::longest_stop_chain;

/// A loaded, validated configuration: everything needed to run, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub global: Global,
    /// Services in file order.
    pub services: Vec<Service>,
    /// A start order consistent with the dependency graph (indices into `services`).
    pub start_order: Vec<usize>,
    /// Read from a Procfile with these options (a reload reads it the same way).
    pub procfile: Option<ProcfileOptions>,
    /// Every file given (`-f` repeated), merged in order; `path` is the first.
    pub files: Vec<PathBuf>,
}

/// The `[corral]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    pub shutdown_timeout: Duration,
    /// What the container runtime gives between its SIGTERM and its SIGKILL
    /// (`docker stop`: 10 s): a SIGTERM shutdown is planned to end within it.
    pub stop_grace: Duration,
    /// Name of the environment variable that freezes start-up.
    pub break_glass: Option<String>,
    /// Start services without depends-on in parallel instead of in file order.
    pub parallel: bool,
    /// Group that may use the control socket (mode 0660); None = owner only (0600).
    pub socket_group: Option<String>,
    /// Default directory for service log files (<log-dir>/<name>.log).
    pub log_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Prefix console lines with a timestamp.
    pub log_timestamps: bool,
    /// Bounds of a detached daemon's console log (`.corral/corral.log`):
    /// rotated past `max_size`, `keep` older files kept.
    pub console_log: ConsoleLog,
    /// Run each service in its own cgroup v2 when the machine allows it.
    pub cgroup: bool,
    pub discovery: Discovery,
    /// Names or globs of corral's variables every service gets (before its
    /// own `inherit-env`): the locale and the terminal by default.
    pub inherit_env: Vec<String>,
    /// Where to serve `/metrics` over TCP (Prometheus), when set.
    pub metrics: Option<std::net::SocketAddr>,
    /// `state-dir`: where the daemon keeps its socket, lock and run record.
    pub state_dir: Option<PathBuf>,
}

/// What every service inherits unless `[corral] inherit-env` says otherwise.
pub const DEFAULT_INHERIT: [&str; 4] = ["LANG", "LC_*", "TZ", "TERM"];

/// The `[corral] log` table: how a detached daemon's console log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLog {
    pub max_size: u64,
    pub keep: u32,
}

impl Default for ConsoleLog {
    fn default() -> Self {
        ConsoleLog {
            max_size: 5 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// How corral prints lines on its stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `log` table of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The service's log file (rotated by size); None = no file.
    pub file: Option<PathBuf>,
    pub max_size: u64,
    /// Rotated files kept beside the current one.
    pub keep: u32,
    /// Bounds of the in-memory ring behind `corral logs`.
    pub ring_lines: usize,
    pub ring_bytes: usize,
    /// Longer lines are cut into pieces of this size.
    pub max_line: usize,
    /// stderr shares stdout's pipe (`merge-stderr`): one descriptor per
    /// process in corral instead of two, lines in the order written.
    pub merge_stderr: bool,
}

/// The log settings of a service that sets none.
static DEFAULT_LOG: LogConfig = LogConfig {
    file: None,
    max_size: 10 * 1024 * 1024,
    keep: 5,
    ring_lines: 1000,
    ring_bytes: 1024 * 1024,
    max_line: 64 * 1024,
    merge_stderr: false,
};

impl Default for LogConfig {
    fn default() -> Self {
        DEFAULT_LOG.clone()
    }
}

impl Default for Global {
    fn default() -> Self {
        Global {
            shutdown_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            // As in Ground Control: it works with no config.
            break_glass: Some("BREAK_GLASS".into()),
            parallel: false,
            socket_group: None,
            log_dir: None,
            log_format: LogFormat::Text,
            log_timestamps: false,
            console_log: ConsoleLog::default(),
            cgroup: true,
            discovery: Discovery::default(),
            inherit_env: DEFAULT_INHERIT.iter().map(|s| s.to_string()).collect(),
            metrics: None,
            state_dir: None,
        }
    }
}

impl Config {
    /// The worst case of a shutdown (the stop-timeouts along its longest
    /// chain) and that chain's services in stop order.
    pub fn worst_shutdown(&self) -> (Duration, Vec<&str>) {
        // A oneshot has completed by then (a migration, a setup step).
        let weights: Vec<Duration> = self
            .services
            .iter()
            .map(|s| {
                if s.oneshot {
                    Duration::ZERO
                } else {
                    s.stop_timeout
                }
            })
            .collect();
        let mut dependents = vec![Vec::new(); self.services.len()];
        for (i, s) in self.services.iter().enumerate() {
            for e in &s.depends_on {
                dependents[e.service].push(i);
            }
        }
        let (total, chain) = longest_stop_chain(&weights, &dependents, &self.start_order);
        let names = chain
            .iter()
            .map(|&i| self.services[i].name.as_str())
            .collect();
        (total, names)
    }

    /// A warning when the worst case of a shutdown does not fit in
    /// `stop-grace`, naming the chain that does not.
    pub fn stop_grace_warning(&self) -> Option<String> {
        let (worst, chain) = self.worst_shutdown();
        let grace = self.global.stop_grace;
        (worst > grace).then(|| {
            format!(
                "warning: a shutdown may take {} (stop-timeout along {}), more than stop-grace {}: \
                 on SIGTERM corral cuts each stop-timeout to {}% to fit; raise stop-grace (and the \
                 runtime's: docker stop -t, terminationGracePeriodSeconds) or lower stop-timeout",
                humantime::format_duration(worst),
                chain.join(" -> "),
                humantime::format_duration(grace),
                grace_percent(shutdown_budget(grace), worst)
            )
        })
    }
    /// Keeps only the named services and everything they depend on; Err names
    /// the first unknown service.
    /// Leaves out the services whose profiles are not among `active`
    /// (unless an enabled service depends on or requires them). Err when
    /// that leaves nothing to run.
    pub fn with_profiles(self, active: &[String]) -> Result<Config, String> {
        let enabled: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.profiles.is_empty() || s.profiles.iter().any(|p| active.contains(p)))
            .map(|s| s.name.clone())
            .collect();
        if enabled.len() == self.services.len() {
            return Ok(self);
        }
        if enabled.is_empty() {
            let mut profiles: Vec<&str> = self
                .services
                .iter()
                .flat_map(|s| s.profiles.iter().map(String::as_str))
                .collect();
            profiles.sort_unstable();
            profiles.dedup();
            return Err(format!(
                "no service to run: each one has a profile and none is active (profiles: {}; use --profile or CORRAL_PROFILES)",
                profiles.join(", ")
            ));
        }
        self.select(&enabled)
            .map_err(|name| format!("unknown service {name:?}"))
    }

    pub fn select(mut self, names: &[String]) -> Result<Config, String> {
        let mut keep = vec![false; self.services.len()];
        let mut todo = Vec::new();
        for name in names {
            let before = todo.len();
            todo.extend(
                (0..self.services.len())
                    .filter(|&i| &self.services[i].name == name || &self.services[i].group == name),
            );
            if todo.len() == before {
                return Err(name.clone());
            }
        }
        while let Some(i) = todo.pop() {
            if !keep[i] {
                keep[i] = true;
                // Declared dependencies only: the implicit file-order chain
                // orders a start, it does not make one service need another.
                todo.extend(
                    self.services[i]
                        .depends_on
                        .iter()
                        .filter(|d| d.explicit)
                        .map(|d| d.service),
                );
                // What it requires, from the services of this file that
                // provide it (as compose starts a service's dependencies).
                for require in &self.services[i].links().requires {
                    todo.extend((0..self.services.len()).filter(|&p| {
                        self.services[p]
                            .links()
                            .provides
                            .iter()
                            .any(|provide| provide.name == require.name)
                    }));
                }
            }
        }
        let mut new_index = vec![usize::MAX; keep.len()];
        let mut n = 0;
        for (i, k) in keep.iter().enumerate() {
            if *k {
                new_index[i] = n;
                n += 1;
            }
        }
        let services: Vec<Service> = std::mem::take(&mut self.services)
            .into_iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(mut s, _)| {
                // An implicit edge to a service left out goes with it.
                s.depends_on.retain(|d| keep[d.service]);
                for d in &mut s.depends_on {
                    d.service = new_index[d.service];
                }
                s
            })
            .collect();
        let start_order = self
            .start_order
            .iter()
            .filter(|&&i| keep[i])
            .map(|&i| new_index[i])
            .collect();
        Ok(Config {
            services,
            start_order,
            ..self
        })
    }
}

impl Service {
    /// CORRAL_SERVICE, and for replicas CORRAL_REPLICA and PORT: they win
    /// over every other source.
    pub fn own_env(&self) -> Vec<(String, String)> {
        env::own_vars(&self.group, self.replica, self.port.map(u32::from))
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// The complete environment the service gets, sorted by name.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut all = self.env.to_vec();
        all.extend(self.own_env());
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn log(&self) -> &LogConfig {
        self.log.as_deref().unwrap_or(&DEFAULT_LOG)
    }

    pub fn log_mut(&mut self) -> &mut LogConfig {
        self.log
            .get_or_insert_with(|| Box::new(DEFAULT_LOG.clone()))
    }

    pub fn links(&self) -> &Links {
        self.links.as_deref().unwrap_or(&NO_LINKS)
    }

    /// The sockets corral holds for it (shared by its replicas).
    pub fn sockets(&self) -> &[Listen] {
        self.protocols
            .as_ref()
            .map_or(&[], |p| p.sockets.as_slice())
    }

    /// Whether a restart starts the new instance before it stops the old one.
    pub fn starts_first(&self) -> bool {
        self.protocols
            .as_ref()
            .is_some_and(|p| p.update == Update::StartFirst)
    }

    /// Whether two services, each read with its own config's indices, are
    /// defined the same. Dependencies are compared by service (group) name,
    /// so scaling a dependency does not change its dependents, and only
    /// declared ones count.
    pub fn same_definition(
        &self,
        groups: &[String],
        other: &Service,
        other_groups: &[String],
    ) -> bool {
        let deps = |s: &Service, groups: &[String]| -> Vec<(String, Condition, bool)> {
            // The implicit file-order chain only orders the first start:
            // removing the service before this one changes nothing here.
            let mut deps: Vec<_> = s
                .depends_on
                .iter()
                .filter(|d| d.explicit)
                .map(|d| {
                    (
                        groups.get(d.service).cloned().unwrap_or_default(),
                        d.condition,
                        d.restart,
                    )
                })
                .collect();
            deps.sort_by(|a, b| a.0.cmp(&b.0));
            deps.dedup();
            deps
        };
        let strip = |s: &Service| Service {
            depends_on: Vec::new(),
            ..s.clone()
        };
        strip(self) == strip(other) && deps(self, groups) == deps(other, other_groups)
    }
}

/// One `[services.NAME]` table, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The instance name: the service's name, or `name.N` for replica N.
    pub name: String,
    /// The name in the file (what depends-on and `corral scale` use).
    pub group: String,
    /// With `replicas`: this instance's index.
    pub replica: Option<u32>,
    /// This instance's PORT (`port` + replica index).
    pub port: Option<u16>,
    pub command: Vec<String>,
    pub oneshot: bool,
    /// Defaults to the config file's directory.
    pub working_dir: Option<PathBuf>,
    /// The environment the service gets, in a stable order, without its
    /// own variables (`own_env`); shared with the services that have the
    /// same. `environment()` is the whole.
    pub env: std::sync::Arc<Env>,
    pub user: Option<Box<Identity>>,
    pub pre: Option<Vec<String>>,
    pub post: Option<Vec<String>>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// Consecutive failed starts allowed before the service is failed; None = no limit.
    pub max_restarts: Option<u32>,
    pub essential: bool,
    /// The signals corral passes on to it when it receives them.
    pub forward_signals: ForwardSignals,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub depends_on: Vec<Dependency>,
    /// How corral learns that the service works; None = ready once started.
    /// (Boxed, like `health` and `user`: most services have none, and a
    /// Service is kept per instance for as long as corral runs.)
    pub ready: Option<Box<Readiness>>,
    /// Liveness checks once ready; None = never checked.
    pub health: Option<Box<Health>>,
    /// Its log settings (`log()`); None: the defaults, as for most
    /// services (64 bytes of every instance otherwise).
    log: Option<Box<LogConfig>>,
    /// What it provides and requires, and how it follows endpoint changes
    /// (`links()`). None: none of it, all defaults, as for most services;
    /// boxed, they would take 144 bytes of every instance.
    links: Option<Box<Links>>,
    /// With `schedule`: it is a job, run at each tick.
    pub job: Option<Box<Job>>,
    /// It runs only when `up` names one of these (`--profile`,
    /// CORRAL_PROFILES) or names the service itself; empty: always.
    pub profiles: Vec<String>,
    /// sd_notify, held sockets, the update order (`protocols()`); None:
    /// none of them, as for most services.
    pub protocols: Option<Box<Protocols>>,
}

/// A service's part in discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Names this instance provides once it is ready.
    pub provides: Vec<Provide>,
    /// Names it needs before it starts (and follows afterwards).
    pub requires: Vec<Require>,
    pub require_timeout: Duration,
    pub on_change: OnChange,
    /// Debounce of endpoint changes: a quiet period, and the longest wait.
    pub change_wait: (Duration, Duration),
    pub templates: Vec<Template>,
}

/// The links of a service that declares none.
static NO_LINKS: Links = Links {
    provides: Vec::new(),
    requires: Vec::new(),
    require_timeout: Duration::from_secs(60),
    on_change: OnChange::Restart,
    change_wait: (Duration::from_millis(200), Duration::from_secs(2)),
    templates: Vec::new(),
};

impl Links {
    /// Kept only when it differs from `NO_LINKS`.
    fn boxed(self) -> Option<Box<Links>> {
        (self != NO_LINKS).then(|| Box::new(self))
    }
}

/// One `provides` entry, resolved for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub port: u16,
    /// None: the advertise address.
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub attrs: BTreeMap<String, String>,
}

/// One `requires` entry: a name, and tags and attributes an endpoint must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Require {
    pub name: String,
    pub tags: Vec<String>,
    pub attrs: BTreeMap<String, String>,
}

impl Require {
    pub fn matches(&self, e: &corral_proto::Endpoint) -> bool {
        e.name == self.name
            && self.tags.iter().all(|t| e.tags.contains(t))
            && self.attrs.iter().all(|(k, v)| e.attrs.get(k) == Some(v))
    }
}

/// What happens to a running dependent when its endpoints change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnChange {
    Restart,
    Signal(Signal),
    /// Run this command with the updated environment; non-zero exit: restart.
    Command(Vec<String>),
    None,
}

/// A file rendered from the endpoints before start and before each change action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: PathBuf,
    pub target: PathBuf,
    pub mode: Option<u32>,
}

/// The `[discovery]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The host written into this corral's endpoints.
    pub advertise: String,
    /// This corral's name in endpoint instances; None: the hostname.
    pub host_id: Option<String>,
    /// The etcd backend; None: the built-in one-host registry.
    pub etcd: Option<Etcd>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            advertise: "127.0.0.1".into(),
            host_id: None,
            etcd: None,
        }
    }
}

/// `[discovery] etcd = { ... }`.
#[derive(Clone, PartialEq, Eq)]
pub struct Etcd {
    /// "host:port" of each member's client URL.
    pub endpoints: Vec<String>,
    /// Keys live under `<prefix>/svc/`.
    pub prefix: String,
    pub ttl: Duration,
    /// Username and password (read from `password-file`).
    pub credentials: Option<(String, String)>,
    /// TLS to every endpoint.
    pub tls: Option<EtcdTls>,
}

/// `etcd = { tls = { ca, cert, key } }`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    /// The client certificate and its key, for an etcd that asks for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl EtcdTls {
    /// Reads the files into what connections need.
    pub fn load(&self) -> Result<crate::tcp::Tls, String> {
        crate::tcp::Tls::load(
            &self.ca,
            self.client
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )
    }
}

impl Default for Etcd {
    fn default() -> Self {
        Etcd {
            endpoints: Vec::new(),
            prefix: "corral".into(),
            ttl: Duration::from_secs(10),
            credentials: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for Etcd {
    /// Without the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("tls", &self.tls)
            .finish()
    }
}

/// One way of checking a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A command that exits 0 when the check passes (run with the service's env and user).
    Exec(Vec<String>),
    /// A TCP connect to "host:port" succeeds.
    Tcp(String),
    /// A GET answers with one of `status` (any 2xx when empty).
    Http { url: String, status: Vec<u16> },
    /// A line of the service's output matches this regex (readiness only).
    Log(String),
    /// The service writes a newline on this fd (readiness only; the s6 protocol).
    NotifyFd(i32),
    /// The service sends READY=1 to NOTIFY_SOCKET (readiness only; sd_notify).
    Notify,
}

impl Probe {
    /// Whether corral runs it on a timer (else the service's output tells).
    pub fn is_active(&self) -> bool {
        matches!(self, Probe::Exec(_) | Probe::Tcp(_) | Probe::Http { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Probe::Exec(argv) => format!("exec {}", argv.join(" ")),
            Probe::Tcp(addr) => format!("tcp {addr}"),
            Probe::Http { url, .. } => format!("http {url}"),
            Probe::Log(re) => format!("log /{re}/"),
            Probe::NotifyFd(fd) => format!("notify-fd {fd}"),
            Probe::Notify => "notify (READY=1)".to_string(),
        }
    }
}

/// The `ready` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub probe: Probe,
    pub initial_delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    /// Not ready by then: the start failed.
    pub start_timeout: Duration,
}

/// The `health` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub probe: Probe,
    pub initial_delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make the service unhealthy (and restarted).
    pub retries: u32,
}

/// When a service that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub const NAMES: [&'static str; 3] = ["always", "on-failure", "never"];

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// Exponential restart delay: initial, doubled each time, capped at max, and
/// reset once a run has lasted `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Delay before restart number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// An edge of the start graph: this service waits for `service` to reach `condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Index into `Config::services`.
    pub service: usize,
    pub condition: Condition,
    /// When the dependency restarts, restart this service too (once it is ready again).
    pub restart: bool,
    /// Declared by the user (false for the implicit file-order chain).
    pub explicit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The dependency's process has been spawned.
    Started,
    /// The dependency is ready (its readiness probe passed; without one, started).
    Ready,
    /// The dependency ran to completion with exit code 0.
    Completed,
}

impl Condition {
    pub const NAMES: [&'static str; 3] = ["started", "ready", "completed"];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Completed => "completed",
        }
    }
}

/// Why loading failed: every error at once, plus the warnings seen.
#[derive(Debug)]
pub struct LoadFailure {
    pub errors: ConfigErrors,
    pub warnings: Vec<Diagnostic>,
}

/// A loaded config and the warnings found along the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// corral's environment for interpolating `path`'s file: the process's own
/// variables, then those of an env file that the environment does not set
/// (compose's rule): `CORRAL_ENV_FILE` (`--env-file`), else `.env` beside
/// the config when there is one. `${...}` in the file's values is expanded
/// as compose does: from the environment, then the entries above it. Its
/// values are for `${...}` only; a service gets a variable only through
/// env, env-file or inherit-env.
pub fn host_env(path: &Path) -> Result<HostEnv, LoadFailure> {
    let mut host = HostEnv::from_process();
    let (file, required) = match host.get("CORRAL_ENV_FILE") {
        Some(f) if !f.is_empty() => (PathBuf::from(f), true),
        _ => (dir_of(path).join(".env"), false),
    };
    if !required && !file.is_file() {
        return Ok(host);
    }
    let at = |severity: Severity, line: usize, message: String| Diagnostic {
        severity,
        file: file.clone(),
        line,
        column: usize::from(line > 0),
        message,
    };
    let fail = |line: usize, message: String| LoadFailure {
        errors: ConfigErrors(vec![at(Severity::Error, line, message)]),
        warnings: Vec::new(),
    };
    let entries = env::read_env_file(&file).map_err(|(line, message)| fail(line, message))?;
    let mut from_file: BTreeMap<String, String> = BTreeMap::new();
    for entry in entries {
        let value = match entry.value {
            // The environment's own value wins in any case.
            dotenv::Value::Inherit => continue,
            dotenv::Value::Literal(value) => value,
            dotenv::Value::Text(value) => {
                let vars = |n: &str| {
                    host.get(n)
                        .map(str::to_string)
                        .or_else(|| from_file.get(n).cloned())
                };
                let expanded = interp::expand(&value, &vars)
                    .map_err(|e| fail(entry.line, format!("{}: {e}", entry.name)))?;
                for name in expanded.unset {
                    let message = format!("${{{name}}} is not set; using an empty string");
                    host.warnings
                        .push(at(Severity::Warning, entry.line, message));
                }
                expanded.value
            }
        };
        from_file.insert(entry.name, value);
    }
    for (name, value) in from_file {
        host.vars.entry(name).or_insert(value);
    }
    Ok(host)
}

/// The corral.toml text a Procfile stands for, and the lines it skipped.
pub fn procfile_toml(
    path: &Path,
    options: &ProcfileOptions,
    host: &HostEnv,
) -> Result<procfile::Generated, LoadFailure> {
    let source = read_text(path)?;
    procfile::to_toml(path, &source, options, host).map_err(|errors| LoadFailure {
        errors,
        warnings: Vec::new(),
    })
}

/// Reads, parses, interpolates and validates the config: corral.toml files
/// merged in order (later wins, key by key; each file's `include`s come
/// before it), or (`procfile` given) a Procfile read with those options.
/// The first file is the project's: relative paths, the socket and
/// `.corral/` are beside it. `overrides` replace some services' `replicas`
/// (`corral scale`).
pub fn load_files(
    files: &[PathBuf],
    host: &HostEnv,
    overrides: &BTreeMap<String, u32>,
    procfile: Option<&ProcfileOptions>,
) -> Result<Loaded, LoadFailure> {
    let Some(path) = files.first() else {
        return Err(LoadFailure {
            errors: ConfigErrors(Vec::new()),
            warnings: Vec::new(),
        });
    };
    if let Some(options) = procfile {
        let generated = procfile_toml(path, options, host)?;
        // What the text holds is reported where the Procfile says it.
        let locate = |mut found: Vec<Diagnostic>| {
            found.iter_mut().for_each(|d| generated.locate(d));
            generated.warnings.iter().cloned().chain(found).collect()
        };
        return match load_str(path, &generated.toml, host, overrides) {
            Ok(mut loaded) => {
                loaded.config.procfile = Some(options.clone());
                loaded.warnings = locate(loaded.warnings);
                Ok(loaded)
            }
            Err(failure) => Err(LoadFailure {
                errors: ConfigErrors(locate(failure.errors.0)),
                warnings: locate(failure.warnings),
            }),
        };
    }
    let (whole, segments, sources) = read_sources(files)?;
    let mut diags = diag::Diagnostics::new(path, &whole).with_segments(segments);
    let base_dir = dir_of(path);
    let parsed = document::parse(&sources, &base_dir, host, overrides, &mut diags);
    let config = parsed.and_then(|raw| graph::resolve(raw, path, &mut diags));
    let (errors, warnings) = finish(diags, host);
    match config {
        Some(mut config) if errors.is_empty() => {
            config.files = files.to_vec();
            Ok(Loaded { config, warnings })
        }
        _ => Err(LoadFailure {
            errors: ConfigErrors(errors),
            warnings,
        }),
    }
}

/// The files to read, includes first, each once: the whole text, where each
/// file starts in it, and each file's own text with where it starts.
type Sources = (String, Vec<(usize, PathBuf)>, Vec<document::Source>);

fn read_sources(files: &[PathBuf]) -> Result<Sources, LoadFailure> {
    let mut order: Vec<(PathBuf, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for file in files {
        gather(file, &mut order, &mut seen, &mut Default::default())?;
    }
    let mut whole = String::new();
    let mut segments = Vec::with_capacity(order.len());
    let mut sources = Vec::with_capacity(order.len());
    for (file, text) in order {
        segments.push((whole.len(), file));
        whole.push_str(&text);
        whole.push('\n');
        sources.push((segments[segments.len() - 1].0, text));
    }
    Ok((whole, segments, sources))
}

/// `corral config`: the files merged, `${...}` interpolated from corral's
/// environment (a service's own PORT, CORRAL_SERVICE and CORRAL_REPLICA
/// kept), as TOML; env values that look secret masked unless `unmask`.
pub fn merged_toml(files: &[PathBuf], host: &HostEnv, unmask: bool) -> Result<String, LoadFailure> {
    let (_, _, sources) = read_sources(files)?;
    Ok(document::render_merged(&sources, host, unmask))
}

/// Adds `file` to `order` after the files it includes (relative to it);
/// `seen` holds the canonical paths already in `order`, `stack` catches a
/// file that includes itself.
fn gather(
    file: &Path,
    order: &mut Vec<(PathBuf, String)>,
    seen: &mut std::collections::HashSet<PathBuf>,
    stack: &mut std::collections::HashSet<PathBuf>,
) -> Result<(), LoadFailure> {
    let fail = |message: String| LoadFailure {
        errors: ConfigErrors(vec![Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }]),
        warnings: Vec::new(),
    };
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    if stack.contains(&canonical) {
        return Err(fail("includes itself (through its includes)".into()));
    }
    if seen.contains(&canonical) {
        return Ok(());
    }
    let text = read_text(file)?;
    let mut includes = Vec::new();
    // Parsed here only for its includes (most files have none); the file
    // is parsed for good with the others.
    let root = text
        .contains("include")
        .then(|| toml::de::DeTable::parse_recoverable(&text).0);
    if let Some(value) = root.as_ref().and_then(|r| r.get_ref().get("include")) {
        let names = match value.get_ref() {
            toml::de::DeValue::Array(items) => items
                .iter()
                .map(|i| match i.get_ref() {
                    toml::de::DeValue::String(s) => Ok(s.to_string()),
                    _ => Err(()),
                })
                .collect::<Result<Vec<String>, ()>>(),
            toml::de::DeValue::String(s) => Ok(vec![s.to_string()]),
            _ => Err(()),
        };
        let Ok(names) = names else {
            return Err(fail("include must be a path or a list of paths".into()));
        };
        includes = names.into_iter().map(|n| dir_of(file).join(n)).collect();
    }
    stack.insert(canonical.clone());
    for included in &includes {
        gather(included, order, seen, stack)?;
    }
    stack.remove(&canonical);
    seen.insert(canonical);
    order.push((file.to_path_buf(), text));
    Ok(())
}

/// A config file's text; an error with the position where it stops being UTF-8.
fn read_text(path: &Path) -> Result<String, LoadFailure> {
    let fail = |line: usize, column: usize, message: String| LoadFailure {
        errors: ConfigErrors(vec![Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line,
            column,
            message,
        }]),
        warnings: Vec::new(),
    };
    let bytes = files::read(path).map_err(|e| fail(0, 0, format!("cannot read config: {e}")))?;
    let source = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            // Where the text stops being UTF-8: the valid part ends there.
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let text = String::from_utf8_lossy(valid);
            let (line, column) = diag::line_col(&text, text.len());
            return Err(fail(line, column, "the file is not UTF-8 text".into()));
        }
    };
    Ok(source)
}

/// The errors and the warnings found, those of the project's `.env` first.
fn finish(diags: diag::Diagnostics<'_>, host: &HostEnv) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let (errors, mut warnings) = diags.finish();
    warnings.splice(0..0, host.warnings.iter().cloned());
    (errors, warnings)
}

/// Parses and validates config text that came from `path`.
pub fn load_str(
    path: &Path,
    source: &str,
    host: &HostEnv,
    overrides: &BTreeMap<String, u32>,
) -> Result<Loaded, LoadFailure> {
    let mut diags = diag::Diagnostics::new(path, source);
    // Relative paths in the file are relative to the file, wherever corral runs.
    let base_dir = dir_of(path);
    let sources = [(0, source.to_string())];
    let parsed = document::parse(&sources, &base_dir, host, overrides, &mut diags);
    let config = parsed.and_then(|raw| graph::resolve(raw, path, &mut diags));
    let (errors, warnings) = finish(diags, host);
    match config {
        Some(config) if errors.is_empty() => Ok(Loaded { config, warnings }),
        _ => Err(LoadFailure {
            errors: ConfigErrors(errors),
            warnings,
        }),
    }
}

/// What a SIGTERM shutdown may take of the runtime's `grace`: all but a
/// reserve of a tenth of it (at most 1 s) for the last SIGKILLs, post
/// steps' ends and the last log lines.
pub fn shutdown_budget(grace: Duration) -> Duration {
    grace - (grace / 10).min(Duration::from_secs(1))
}

/// The share of each stop-timeout that fits a shutdown of `worst` into
/// `budget`, in percent (100: all of it).
pub fn grace_percent(budget: Duration, worst: Duration) -> u32 {
    if worst <= budget || worst.is_zero() {
        return 100;
    }
    // Rounded down, so the cut timeouts never add up to more than the budget.
    (budget.as_millis() * 100 / worst.as_millis()).min(100) as u32
}

/// `forward-signals`: which of the signals corral passes on (SIGUSR1,
/// SIGUSR2, SIGWINCH) go to a service. Those signals end a process that
/// does not handle them, so none goes to every service by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardSignals(u8);

impl ForwardSignals {
    /// The signals a service may ask for: corral itself acts on SIGTERM,
    /// SIGINT, SIGQUIT (stop), SIGHUP (reload) and SIGCHLD.
    pub const FORWARDABLE: [Signal; 3] = [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH];

    fn bit(sig: Signal) -> Option<u8> {
        Self::FORWARDABLE
            .iter()
            .position(|&s| s == sig)
            .map(|i| 1 << i)
    }

    /// Adds `sig`; false when corral does not pass that signal on.
    pub fn insert(&mut self, sig: Signal) -> bool {
        Self::bit(sig).map(|b| self.0 |= b).is_some()
    }

    pub fn contains(self, sig: Signal) -> bool {
        Self::bit(sig).is_some_and(|b| self.0 & b != 0)
    }
}
