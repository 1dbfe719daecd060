//! A `[services.NAME]` table: read once into a draft (structure, types and
//! values checked), then expanded into one service per replica, where the
//! `${PORT}`, `${CORRAL_REPLICA}` and host variables are interpolated.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::MAX_REPLICAS;
use nix::sys::signal::Signal;
use toml::de::DeValue;

use super::diag::Diagnostics;
use super::env::{self, EnvParts, HostEnv};
use super::host::HostChecks;
use super::interp::Vars;
use super::job::JobDraft;
use super::links::{
    dependencies, on_change_action, provide_list, require_list, template_list, OnChangeDraft,
    ProvideDraft, RawDependency, TemplateDraft,
};
use super::probe::{self, ProbeDraft};
use super::protocols::{self, ProtocolsDraft};
use super::values::{
    argv, boolean, duration, expand_all, read_fields, restart_policy, set, signal, size, table,
    text, texts, type_error, uint, Field, Key, Text, Value,
};
use super::NO_LINKS;
use super::{Backoff, Identity, LogConfig, OnChange, RestartPolicy, Service};

/// A service instance read from the file, its dependencies not yet resolved.
pub struct RawService {
    pub service: Service,
    pub name_span: Range<usize>,
    pub depends_on: Vec<RawDependency>,
}

/// A service table as read, before it is expanded per replica.
#[derive(Default)]
struct Draft {
    command: Option<Vec<Text>>,
    oneshot: bool,
    working_dir: Option<Text>,
    env: Vec<(String, Text)>,
    /// Each env file, and whether it must exist.
    env_files: Vec<(Text, bool)>,
    inherit: Vec<Text>,
    user: Option<Text>,
    pre: Option<Vec<Text>>,
    post: Option<Vec<Text>>,
    restart: Option<RestartPolicy>,
    backoff: Backoff,
    max_restarts: Option<u32>,
    essential: bool,
    forward_signals: super::ForwardSignals,
    stop_signal: Option<Signal>,
    stop_timeout: Option<Duration>,
    depends_on: Vec<RawDependency>,
    ready: Option<ProbeDraft>,
    health: Option<ProbeDraft>,
    log: LogDraft,
    provides: Vec<ProvideDraft>,
    requires: Vec<super::Require>,
    require_timeout: Option<Duration>,
    on_change: Option<OnChangeDraft>,
    change_wait: Option<(Duration, Duration)>,
    templates: Vec<TemplateDraft>,
    job: JobDraft,
    profiles: Vec<String>,
    protocols: ProtocolsDraft,
}

const SERVICE_FIELDS: [Field<Draft>; 38] = [
    ("command", |s, d, v| s.command = argv(d, v, "command")),
    ("oneshot", |s, d, v| set(&mut s.oneshot, boolean(d, v))),
    ("working-dir", |s, d, v| s.working_dir = text(d, v)),
    ("env", read_env),
    ("env-file", read_env_files),
    ("inherit-env", |s, d, v| s.inherit = texts(d, v)),
    ("user", |s, d, v| s.user = text(d, v)),
    ("pre", |s, d, v| s.pre = argv(d, v, "pre")),
    ("post", |s, d, v| s.post = argv(d, v, "post")),
    ("restart", |s, d, v| s.restart = restart_policy(d, v)),
    ("backoff", read_backoff),
    ("max-restarts", |s, d, v| s.max_restarts = uint(d, v)),
    ("essential", |s, d, v| set(&mut s.essential, boolean(d, v))),
    ("stop-signal", |s, d, v| s.stop_signal = signal(d, v)),
    ("forward-signals", read_forward_signals),
    ("stop-timeout", |s, d, v| s.stop_timeout = duration(d, v)),
    ("depends-on", |s, d, v| s.depends_on = dependencies(d, v)),
    ("ready", |s, d, v| s.ready = probe::read(d, v, false)),
    ("health", |s, d, v| s.health = probe::read(d, v, true)),
    ("log", read_log),
    // Read before the table, for the replicas as a whole.
    ("replicas", |_, _, _| {}),
    ("port", |_, _, _| {}),
    ("provides", |s, d, v| s.provides = provide_list(d, v)),
    ("requires", |s, d, v| s.requires = require_list(d, v)),
    ("require-timeout", |s, d, v| {
        s.require_timeout = duration(d, v)
    }),
    ("on-change", |s, d, v| s.on_change = on_change_action(d, v)),
    ("change-wait", read_change_wait),
    ("templates", |s, d, v| s.templates = template_list(d, v)),
    ("schedule", |s, d, v| s.job.schedule(d, v)),
    ("timezone", |s, d, v| s.job.timezone(d, v)),
    ("overlap", |s, d, v| s.job.overlap(d, v)),
    ("run-on-start", |s, d, v| s.job.run_on_start(d, v)),
    ("profiles", read_profiles),
    ("notify", |s, d, v| {
        protocols::read_notify(&mut s.protocols, d, v)
    }),
    ("watchdog", |s, d, v| {
        protocols::read_watchdog(&mut s.protocols, d, v)
    }),
    ("watchdog-signal", |s, d, v| {
        protocols::read_watchdog_signal(&mut s.protocols, d, v)
    }),
    ("sockets", |s, d, v| {
        protocols::read_sockets(&mut s.protocols, d, v)
    }),
    ("update", |s, d, v| {
        protocols::read_update(&mut s.protocols, d, v)
    }),
];

/// `forward-signals = ["SIGUSR1"]`: among the signals corral passes on.
fn read_forward_signals(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let DeValue::Array(items) = v.get_ref() else {
        d.error(
            v.span(),
            "forward-signals must be a list of signal names such as [\"SIGUSR1\"]",
        );
        return;
    };
    for item in items {
        if let Some(sig) = signal(d, item) {
            if !s.forward_signals.insert(sig) {
                d.error(
                    item.span(),
                    format!(
                        "corral passes on only SIGUSR1, SIGUSR2 and SIGWINCH, not {} \
                         (SIGTERM, SIGINT and SIGQUIT stop everything, SIGHUP reloads)",
                        sig.as_str()
                    ),
                );
            }
        }
    }
}

/// `profiles = ["debug"]`: names as service names are written.
fn read_profiles(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let names = super::values::string_list(d, v);
    for name in &names {
        if !super::values::is_name(name) {
            d.error(
                v.span(),
                format!("invalid profile name {name:?}: use letters, digits, '-' and '_'"),
            );
        }
    }
    s.profiles = names;
}

const ENV_FILE_FIELDS: [Field<(Option<Text>, bool)>; 2] = [
    ("path", |f, d, v| f.0 = text(d, v)),
    ("required", |f, d, v| set(&mut f.1, boolean(d, v))),
];

/// `env-file`: a path, a `{ path, required = false }` table, or a list of
/// either.
fn read_env_files(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let one = |d: &mut Diagnostics<'_>, item: &Value<'_>| -> Option<(Text, bool)> {
        match item.get_ref() {
            DeValue::String(_) => text(d, item).map(|t| (t, true)),
            DeValue::Table(t) => {
                let mut file = (None, true);
                read_fields(d, t, &ENV_FILE_FIELDS, &mut file, "in an env-file entry");
                if file.0.is_none() {
                    d.error(item.span(), "an env-file entry needs a `path`");
                }
                file.0.map(|path| (path, file.1))
            }
            _ => {
                type_error(d, item, "a path or { path, required }");
                None
            }
        }
    };
    s.env_files = match v.get_ref() {
        DeValue::Array(items) => items.iter().filter_map(|item| one(d, item)).collect(),
        _ => one(d, v).into_iter().collect(),
    };
}

fn read_env(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let Some(t) = table(d, v, "env") else {
        return;
    };
    for (k, val) in t.iter() {
        let key = k.get_ref().to_string();
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            d.error(
                k.span(),
                format!("invalid environment variable name {key:?}"),
            );
            continue;
        }
        let literal = |raw: String| Text {
            raw,
            span: val.span(),
        };
        let value = match val.get_ref() {
            DeValue::String(_) => text(d, val),
            // Numbers and booleans are taken as written ("$" cannot occur).
            DeValue::Integer(i) => Some(literal(i.as_str().to_string())),
            DeValue::Boolean(b) => Some(literal(b.to_string())),
            _ => {
                type_error(d, val, "a string, number or boolean");
                None
            }
        };
        if let Some(value) = value {
            s.env.push((key, value));
        }
    }
}

const BACKOFF_FIELDS: [Field<(Backoff, bool)>; 3] = [
    ("initial", |b, d, v| set(&mut b.0.initial, duration(d, v))),
    ("max", |b, d, v| {
        b.1 = true;
        set(&mut b.0.max, duration(d, v));
    }),
    ("reset-after", |b, d, v| {
        set(&mut b.0.reset_after, duration(d, v))
    }),
];

fn read_backoff(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let Some(t) = table(d, v, "backoff") else {
        return;
    };
    // (backoff, whether max was given)
    let mut b = (Backoff::default(), false);
    read_fields(d, t, &BACKOFF_FIELDS, &mut b, "in backoff");
    if b.0.initial > b.0.max {
        if b.1 {
            let message = format!(
                "backoff initial ({}) is longer than max ({})",
                humantime::format_duration(b.0.initial),
                humantime::format_duration(b.0.max)
            );
            d.error(v.span(), message);
        } else {
            // Only `initial` was given: the default max grows to it.
            b.0.max = b.0.initial;
        }
    }
    s.backoff = b.0;
}

const CHANGE_WAIT_FIELDS: [Field<(Duration, Duration)>; 2] = [
    ("min", |w, d, v| set(&mut w.0, duration(d, v))),
    ("max", |w, d, v| set(&mut w.1, duration(d, v))),
];

fn read_change_wait(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let Some(t) = table(d, v, "change-wait") else {
        return;
    };
    let mut wait = NO_LINKS.change_wait;
    read_fields(d, t, &CHANGE_WAIT_FIELDS, &mut wait, "in change-wait");
    if wait.1 < wait.0 {
        let message = format!(
            "change-wait max ({}) is shorter than min ({})",
            humantime::format_duration(wait.1),
            humantime::format_duration(wait.0)
        );
        d.error(v.span(), message);
    }
    s.change_wait = Some(wait);
}

/// The `log` table: the file's path is interpolated per instance.
#[derive(Default)]
struct LogDraft {
    file: Option<Text>,
    config: LogConfig,
}

const LOG_FIELDS: [Field<LogDraft>; 7] = [
    ("file", |l, d, v| l.file = text(d, v)),
    ("max-size", |l, d, v| match size(d, v) {
        Some(0) => d.error(v.span(), "max-size must be at least 1 byte"),
        n => set(&mut l.config.max_size, n),
    }),
    ("keep", |l, d, v| set(&mut l.config.keep, uint(d, v))),
    ("ring-lines", |l, d, v| {
        set(&mut l.config.ring_lines, uint(d, v).map(|n| n as usize))
    }),
    ("ring-bytes", |l, d, v| {
        set(&mut l.config.ring_bytes, size(d, v).map(|n| n as usize))
    }),
    ("max-line", |l, d, v| match size(d, v) {
        Some(n) if n >= 64 => l.config.max_line = n as usize,
        Some(_) => d.error(v.span(), "max-line must be at least 64 bytes"),
        None => {}
    }),
    ("merge-stderr", |l, d, v| {
        set(&mut l.config.merge_stderr, boolean(d, v))
    }),
];

fn read_log(s: &mut Draft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    if let Some(t) = table(d, v, "log") {
        read_fields(d, t, &LOG_FIELDS, &mut s.log, "in log");
    }
}

/// The value a list of variables gives `name` (a later entry wins).
fn value_of<K: AsRef<str>>(pairs: &[(K, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v.clone())
}

/// Warns when a program is not found where the service will look for it
/// (its PATH, or its working dir for a relative path): it would fail at once.
fn lint_program(
    d: &mut Diagnostics<'_>,
    checks: &mut HostChecks,
    program: &str,
    env: &super::env::Env,
    dir: &Path,
    span: Range<usize>,
) {
    if program.contains('/') {
        let path = dir.join(program);
        if !super::host::runnable(&path) {
            d.warning(
                span,
                format!(
                    "{program:?} is not an executable file (from {})",
                    dir.display()
                ),
            );
        }
        return;
    }
    let path = env.get("PATH").unwrap_or(super::env::DEFAULT_PATH);
    if !checks.on_path(program, path) {
        d.warning(
            span,
            format!("command {program:?} is not found on the service's PATH ({path})"),
        );
    }
}

/// Which replica of a service is being expanded.
#[derive(Clone, Copy)]
struct Instance {
    /// None for a service without `replicas`.
    replica: Option<u32>,
    /// PORT of this instance: `port` + replica index.
    port: Option<u32>,
}

/// Where expansion gets what it needs from outside the table.
pub struct Context<'a> {
    pub base_dir: &'a Path,
    pub host: &'a HostEnv,
    pub checks: &'a mut HostChecks,
    /// `[corral] inherit-env`: what every service inherits.
    pub inherit_default: &'a [String],
    /// The environments made so far, shared by the services that have the
    /// same (most services of a file differ only in their own variables).
    pub envs: HashSet<Arc<env::Env>>,
    /// What the last environment was made from, and it: the next service
    /// made from the same takes it without assembling and hashing it again
    /// (~18 K instructions a service; most services of a file set none).
    pub last_env: Option<(EnvInputs, Arc<env::Env>)>,
}

/// What `env::assemble` reads, besides corral's environment (the same for
/// the whole file).
#[derive(PartialEq)]
pub struct EnvInputs {
    user: String,
    home: String,
    inherit: Vec<String>,
    files: Vec<(String, String)>,
    explicit: Vec<(String, String)>,
    own: Vec<&'static str>,
}

/// Reads a service table and expands it into its instances: one, or
/// `replicas` of them (`name.0`, `name.1`...), each with its own PORT and
/// CORRAL_REPLICA. `replicas` is taken from `scaled` when `corral scale` set it.
pub fn read(
    d: &mut Diagnostics<'_>,
    name_key: &Key<'_>,
    value: &Value<'_>,
    scaled: Option<u32>,
    cx: &mut Context<'_>,
) -> Vec<RawService> {
    let name = name_key.get_ref().as_ref();
    let name_span = name_key.span();
    check_name(d, name, name_span.clone());
    let Some(t) = table(d, value, &format!("service {name:?}")) else {
        return Vec::new();
    };
    let (replicas, port) = replicas_and_port(d, t.get("replicas"), t.get("port"), cx.host);
    let mut draft = Draft::default();
    read_fields(
        d,
        t,
        &SERVICE_FIELDS,
        &mut draft,
        &format!("in service {name:?}"),
    );
    if let (true, Some(key)) = (draft.oneshot, t.get_key_value("ready").map(|(k, _)| k)) {
        d.error(
            key.span(),
            format!("service {name:?} is a oneshot: it has no readiness, depend on it with condition \"completed\""),
        );
    }
    let host = cx.host;
    let host_vars = |n: &str| host.get(n).map(str::to_string);
    let job = draft.job.finish(d, t, name, &host_vars).map(Box::new);
    if draft.command.is_none() && !t.contains_key("command") {
        d.error(
            name_span.clone(),
            format!("service {name:?} has no `command`"),
        );
    }
    let instances: Vec<Instance> = match scaled.or(replicas) {
        None => vec![Instance {
            replica: None,
            port,
        }],
        Some(n) if port.is_some_and(|p| p + n.saturating_sub(1) > 65535) => {
            let (p, last) = (port.unwrap_or_default(), n - 1);
            d.error(
                name_span.clone(),
                format!("service {name:?}: the port of replica {last} (port {p} + {last}) would be above 65535"),
            );
            Vec::new()
        }
        Some(n) => (0..n.min(MAX_REPLICAS))
            .map(|i| Instance {
                replica: Some(i),
                port: port.map(|p| p + i),
            })
            .collect(),
    };
    instances
        .into_iter()
        .filter_map(|instance| draft.expand(d, name, &name_span, instance, cx))
        .map(|mut raw| {
            raw.service.job = job.clone();
            raw
        })
        .collect()
}

fn check_name(d: &mut Diagnostics<'_>, name: &str, span: Range<usize>) {
    if !super::values::is_name(name) {
        d.error(
            span,
            format!("invalid service name {name:?}: use letters, digits, '-' and '_'"),
        );
    } else if name == "corral" {
        d.error(
            span,
            "the service name \"corral\" is reserved for corral's own messages",
        );
    }
}

/// `replicas` (at most MAX_REPLICAS) and `port` (1-65535, may be "${VAR}").
fn replicas_and_port(
    d: &mut Diagnostics<'_>,
    replicas: Option<&Value<'_>>,
    port: Option<&Value<'_>>,
    host: &HostEnv,
) -> (Option<u32>, Option<u32>) {
    let replicas = replicas.and_then(|v| {
        uint(d, v).filter(|&n| {
            let problem = match n {
                // A service with no instance would never run; `corral scale
                // NAME 0` stops them all at runtime instead.
                0 => Some(
                    "replicas must be at least 1 (corral scale can take a service to 0)".into(),
                ),
                n if n > MAX_REPLICAS => Some(format!(
                    "replicas must be at most {MAX_REPLICAS}, found {n}"
                )),
                _ => None,
            };
            if let Some(message) = &problem {
                d.error(v.span(), message.clone());
            }
            problem.is_none()
        })
    });
    let port = port.and_then(|v| {
        let number = match v.get_ref() {
            DeValue::String(_) => {
                let vars = |n: &str| host.get(n).map(str::to_string);
                text(d, v)
                    .and_then(|t| t.expand(d, &vars))
                    .and_then(|s| match s.parse::<u32>() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            d.error(v.span(), format!("port must be a number, found {s:?}"));
                            None
                        }
                    })
            }
            _ => uint(d, v),
        };
        number.filter(|&p| {
            let ok = (1..=65535).contains(&p);
            if !ok {
                let message = format!("port must be between 1 and 65535, found {p}");
                d.error(v.span(), message);
            }
            ok
        })
    });
    (replicas, port)
}

impl Draft {
    /// One instance: every `${VAR}` interpolated with the instance's PORT,
    /// CORRAL_SERVICE and CORRAL_REPLICA and corral's environment.
    fn expand(
        &self,
        d: &mut Diagnostics<'_>,
        name: &str,
        name_span: &Range<usize>,
        instance: Instance,
        cx: &mut Context<'_>,
    ) -> Option<RawService> {
        let own = env::own_vars(name, instance.replica, instance.port);
        let host = cx.host;
        let base_dir = cx.base_dir;
        // env-file paths see corral's environment and the instance's own.
        let outer = |n: &str| value_of(&own, n).or_else(|| host.get(n).map(str::to_string));
        let mut env_files = Vec::new();
        for (t, required) in &self.env_files {
            if let Some(path) = t.expand(d, &outer) {
                let path = base_dir.join(path);
                // An optional file that is not there is no file.
                if !required && !path.exists() {
                    continue;
                }
                env_files.extend(cx.checks.env_file(d, &path, t.span.clone(), host));
            }
        }
        // A `${VAR}` of the service resolves to what the service itself
        // gets for VAR: its own (PORT...), then its env (an entry sees the
        // ones above it), then its env files, then corral's environment.
        let lookup = |explicit: &[(String, String)], n: &str| {
            value_of(&own, n)
                .or_else(|| value_of(explicit, n))
                .or_else(|| value_of(&env_files, n))
                .or_else(|| host.get(n).map(str::to_string))
        };
        let mut explicit: Vec<(String, String)> = Vec::with_capacity(self.env.len());
        for (k, t) in &self.env {
            let above = |n: &str| lookup(&explicit, n);
            if let Some(v) = t.expand(d, &above) {
                explicit.push((k.clone(), v));
            }
        }
        let vars = |n: &str| lookup(&explicit, n);
        let vars: &dyn Vars = &vars;
        let argv_of = |d: &mut Diagnostics<'_>, words: &Option<Vec<Text>>| match words {
            Some(w) => expand_all(d, w, vars),
            None => None,
        };
        let command = argv_of(d, &self.command);
        let pre = argv_of(d, &self.pre);
        let post = argv_of(d, &self.post);
        let working_dir = match &self.working_dir {
            Some(t) => t.expand(d, vars).map(|p| base_dir.join(p)),
            None => None,
        };
        let inherit: Vec<String> = cx
            .inherit_default
            .iter()
            .cloned()
            .chain(self.inherit.iter().filter_map(|t| t.expand(d, vars)))
            .collect();
        let identity: Option<Identity> = match &self.user {
            Some(t) => t
                .expand(d, vars)
                .and_then(|spec| cx.checks.user(d, &spec, t.span.clone(), name)),
            None => None,
        };
        let mut log = self.log.config.clone();
        log.file = match &self.log.file {
            Some(t) => t.expand(d, vars).map(|p| base_dir.join(p)),
            None => None,
        };
        let on_change = match &self.on_change {
            Some(draft) => draft.action(d, vars).unwrap_or(OnChange::Restart),
            None => OnChange::Restart,
        };
        let provides = self
            .provides
            .iter()
            .filter_map(|p| p.provide(d, vars))
            .collect();
        let templates = self
            .templates
            .iter()
            .filter_map(|t| t.template(d, vars, base_dir, cx.checks))
            .collect();
        let protocols = self.protocols.finish(d, vars, base_dir, cx.checks, name);
        let notify = protocols.as_ref().is_some_and(|p| p.notify);
        let ready = match &self.ready {
            Some(p) => p.readiness(d, vars),
            // With the notify socket and no probe, READY=1 is readiness.
            None if notify && !self.oneshot => Some(probe::notify_readiness()),
            None => None,
        }
        .map(Box::new);
        if let (Some(r), Some(p)) = (&ready, &protocols) {
            if let crate::config::Probe::NotifyFd(fd) = r.probe {
                if (3..3 + p.sockets.len() as i32).contains(&fd) {
                    d.error(
                        name_span.clone(),
                        format!("service {name:?}: notify-fd {fd} is one of the fds its sockets are passed on (3 to {})", 2 + p.sockets.len()),
                    );
                }
            }
        }
        let protocols = match (protocols, &ready) {
            // `ready = "notify"` asks for the socket by itself.
            (None, Some(r)) if r.probe == crate::config::Probe::Notify => ProtocolsDraft {
                notify: Some(true),
                ..ProtocolsDraft::default()
            }
            .finish(d, vars, base_dir, cx.checks, name),
            (Some(mut p), Some(r)) if r.probe == crate::config::Probe::Notify => {
                p.notify = true;
                Some(p)
            }
            (p, _) => p,
        };
        let health = self
            .health
            .as_ref()
            .and_then(|p| p.health(d, vars))
            .map(Box::new);
        // Last: what follows no longer looks variables up, so the env
        // parts move into the inputs kept for the next service (copied into
        // the environment only when it has to be made).
        let user = identity.as_ref().unwrap_or(&host.identity);
        let inputs = EnvInputs {
            user: user.name.clone(),
            home: user.home.clone(),
            inherit,
            files: env_files,
            explicit,
            own: own.iter().map(|(k, _)| *k).collect(),
        };
        let env = match &cx.last_env {
            Some((last, env)) if *last == inputs => Arc::clone(env),
            _ => {
                let env = env::assemble(EnvParts {
                    host,
                    identity: user,
                    inherit: &inputs.inherit,
                    files: inputs.files.clone(),
                    explicit: inputs.explicit.clone(),
                    own: &inputs.own,
                });
                // One copy of each distinct environment for the whole config.
                let env = match cx.envs.get(&env) {
                    Some(shared) => Arc::clone(shared),
                    None => {
                        let env = Arc::new(env);
                        cx.envs.insert(Arc::clone(&env));
                        env
                    }
                };
                cx.last_env = Some((inputs, Arc::clone(&env)));
                env
            }
        };
        let dir = working_dir.as_deref().unwrap_or(base_dir);
        // Once per service, not per replica.
        let lint = instance.replica.unwrap_or(0) == 0;
        for (words, texts) in [
            (&command, &self.command),
            (&pre, &self.pre),
            (&post, &self.post),
        ] {
            if let (true, Some(program), Some(text)) = (
                lint,
                words.as_ref().and_then(|w| w.first()),
                texts.as_ref().and_then(|t| t.first()),
            ) {
                lint_program(d, cx.checks, program, &env, dir, text.span.clone());
            }
        }
        let instance_name = match instance.replica {
            Some(i) => format!("{name}.{i}"),
            None => name.to_string(),
        };
        let restart = self
            .restart
            .unwrap_or(if self.oneshot || self.job.is_set() {
                RestartPolicy::Never
            } else {
                RestartPolicy::OnFailure
            });
        Some(RawService {
            service: Service {
                name: instance_name,
                group: name.to_string(),
                replica: instance.replica,
                port: instance.port.and_then(|p| u16::try_from(p).ok()),
                command: command.unwrap_or_default(),
                oneshot: self.oneshot,
                working_dir: working_dir.or_else(|| Some(base_dir.to_path_buf())),
                env,
                user: identity.map(Box::new),
                pre,
                post,
                restart,
                backoff: self.backoff,
                max_restarts: self.max_restarts,
                essential: self.essential,
                forward_signals: self.forward_signals,
                stop_signal: self.stop_signal.unwrap_or(Signal::SIGTERM),
                stop_timeout: self.stop_timeout.unwrap_or(Duration::from_secs(10)),
                depends_on: Vec::new(),
                ready,
                health,
                log: (log != super::DEFAULT_LOG).then(|| Box::new(log)),
                links: super::Links {
                    provides,
                    requires: self.requires.clone(),
                    require_timeout: self.require_timeout.unwrap_or(NO_LINKS.require_timeout),
                    on_change,
                    change_wait: self.change_wait.unwrap_or(NO_LINKS.change_wait),
                    templates,
                }
                .boxed(),
                job: None,
                profiles: self.profiles.clone(),
                protocols,
            },
            name_span: name_span.clone(),
            depends_on: self
                .depends_on
                .iter()
                .map(|dep| RawDependency {
                    name: dep.name.clone(),
                    span: dep.span.clone(),
                    condition: dep.condition,
                    restart: dep.restart,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::env::HostEnv;
    use super::super::load_str;

    /// Services made from the same env inputs share one environment; one
    /// that differs, even between two that are the same, gets its own.
    #[test]
    fn environments_are_made_once_per_distinct_inputs() {
        let host = HostEnv::from_process();
        let text = r#"
[services.a]
command = ["true"]
[services.b]
command = ["true"]
env = { X = "1" }
[services.c]
command = ["true"]
[services.d]
command = ["true"]
[services.e]
command = ["true"]
env = { X = "2" }
"#;
        let loaded = load_str(Path::new("/tmp/corral.toml"), text, &host, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let env = |name: &str| {
            let s = loaded.config.services.iter().find(|s| s.name == name);
            std::sync::Arc::clone(&s.unwrap_or_else(|| panic!("{name}")).env)
        };
        assert_eq!(env("b").get("X"), Some("1"));
        assert_eq!(env("e").get("X"), Some("2"));
        for plain in ["a", "c", "d"] {
            assert_eq!(env(plain).get("X"), None, "{plain}");
            assert!(std::sync::Arc::ptr_eq(&env(plain), &env("a")), "{plain}");
        }
    }
}
