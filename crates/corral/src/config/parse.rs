//! Walks the spanned TOML tree into the config model, collecting every error.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use corral_proto::MAX_REPLICAS;
use nix::sys::signal::Signal;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::{suggestion, Diagnostics};
use super::env::{self, EnvParts, HostEnv};
use super::interp::{self, Vars};
use super::user::{self, Identity};
use super::{
    Backoff, Condition, Discovery, Global, Health, LogConfig, LogFormat, OnChange, Probe, Provide,
    Readiness, Require, RestartPolicy, Service, Template,
};

type Value<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: [&str; 3] = ["corral", "services", "discovery"];
const GLOBAL_KEYS: [&str; 7] = [
    "shutdown-timeout",
    "break-glass",
    "parallel",
    "socket-group",
    "log-dir",
    "log-format",
    "log-timestamps",
];
const LOG_KEYS: [&str; 6] = [
    "file",
    "max-size",
    "keep",
    "ring-lines",
    "ring-bytes",
    "max-line",
];
const SERVICE_KEYS: [&str; 27] = [
    "command",
    "oneshot",
    "working-dir",
    "env",
    "env-file",
    "inherit-env",
    "user",
    "pre",
    "post",
    "restart",
    "backoff",
    "max-restarts",
    "essential",
    "stop-signal",
    "stop-timeout",
    "depends-on",
    "ready",
    "health",
    "log",
    "replicas",
    "port",
    "provides",
    "requires",
    "require-timeout",
    "on-change",
    "change-wait",
    "templates",
];
const TOP_DISCOVERY_KEYS: [&str; 2] = ["backend", "advertise"];
const PROVIDE_KEYS: [&str; 5] = ["name", "port", "host", "tags", "attrs"];
const REQUIRE_KEYS: [&str; 3] = ["name", "tags", "attrs"];
const TEMPLATE_KEYS: [&str; 3] = ["source", "target", "mode"];
const CHANGE_WAIT_KEYS: [&str; 2] = ["min", "max"];
const BACKOFF_KEYS: [&str; 3] = ["initial", "max", "reset-after"];
const DEPENDENCY_KEYS: [&str; 2] = ["condition", "restart"];
const PROBE_KINDS: [&str; 5] = ["exec", "tcp", "http", "log", "notify-fd"];
const READY_KEYS: [&str; 10] = [
    "exec",
    "tcp",
    "http",
    "status",
    "log",
    "notify-fd",
    "initial-delay",
    "interval",
    "timeout",
    "start-timeout",
];
const HEALTH_KEYS: [&str; 8] = [
    "exec",
    "tcp",
    "http",
    "status",
    "initial-delay",
    "interval",
    "timeout",
    "retries",
];

/// The parsed file before dependency names are resolved.
pub struct RawConfig {
    pub global: Global,
    pub services: Vec<RawService>,
}

pub struct RawService {
    pub service: Service,
    pub name_span: Range<usize>,
    pub depends_on: Vec<RawDependency>,
}

pub struct RawDependency {
    pub name: String,
    pub span: Range<usize>,
    pub condition: Condition,
    pub restart: bool,
}

/// Parses the document; None when it is not even valid TOML or lacks services.
pub fn parse(
    source: &str,
    base_dir: &Path,
    host: &HostEnv,
    overrides: &BTreeMap<String, u32>,
    d: &mut Diagnostics<'_>,
) -> Option<RawConfig> {
    let (root, syntax_errors) = DeTable::parse_recoverable(source);
    let syntax_failed = !syntax_errors.is_empty();
    for e in syntax_errors {
        let msg = e.message().trim().to_string();
        d.error(e.span().unwrap_or(0..0), format!("invalid TOML: {msg}"));
    }
    if syntax_failed {
        return None;
    }
    let mut global = Global::default();
    let mut discovery = Discovery::default();
    let mut services = Vec::new();
    let mut saw_services = false;
    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            "corral" => {
                if let Some(table) = table(d, value, "[corral]") {
                    global = parse_global(d, table, host, base_dir);
                }
            }
            "discovery" => {
                if let Some(table) = table(d, value, "[discovery]") {
                    discovery = parse_discovery(d, table, host);
                }
            }
            "services" => {
                saw_services = true;
                if let Some(table) = table(d, value, "[services]") {
                    for (name, svc) in table.iter() {
                        services.extend(parse_service(d, name, svc, base_dir, host, overrides));
                    }
                }
            }
            other => unknown_key(d, key, other, "at the top level", &TOP_KEYS),
        }
    }
    if !saw_services {
        d.error(0..0, "no services defined: add a [services.NAME] table");
        return None;
    }
    global.discovery = discovery;
    // Without a file of its own, a service logs to <log-dir>/<name>.log.
    if let Some(dir) = &global.log_dir {
        for s in &mut services {
            if s.service.log.file.is_none() {
                s.service.log.file = Some(dir.join(format!("{}.log", s.service.name)));
            }
        }
    }
    Some(RawConfig { global, services })
}

fn parse_global(
    d: &mut Diagnostics<'_>,
    t: &DeTable<'_>,
    host: &HostEnv,
    base_dir: &Path,
) -> Global {
    let mut g = Global::default();
    let vars = |n: &str| host.get(n).map(str::to_string);
    for (key, value) in t.iter() {
        match key.get_ref().as_ref() {
            "shutdown-timeout" => set(&mut g.shutdown_timeout, duration(d, value)),
            "break-glass" => {
                if let Some(name) = expand(d, value, &vars) {
                    if name.is_empty()
                        || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                    {
                        d.error(
                            value.span(),
                            format!(
                                "break-glass must name an environment variable, found {name:?}"
                            ),
                        );
                    } else {
                        g.break_glass = Some(name);
                    }
                }
            }
            "parallel" => set(&mut g.parallel, boolean(d, value)),
            "socket-group" => g.socket_group = expand(d, value, &vars),
            "log-dir" => g.log_dir = expand(d, value, &vars).map(|p| base_dir.join(p)),
            "log-format" => match string(d, value) {
                Some("text") => g.log_format = LogFormat::Text,
                Some("json") => g.log_format = LogFormat::Json,
                Some(other) => d.error(
                    value.span(),
                    format!("unknown log-format {other:?}: expected \"text\" or \"json\""),
                ),
                None => {}
            },
            "log-timestamps" => set(&mut g.log_timestamps, boolean(d, value)),
            other => unknown_key(d, key, other, "in [corral]", &GLOBAL_KEYS),
        }
    }
    g
}

/// Which replica of a service is being read.
#[derive(Clone, Copy)]
struct Instance {
    /// None for a service without `replicas`.
    replica: Option<u32>,
    /// PORT of this instance: `port` + replica index.
    port: Option<u32>,
}

/// Reads a service table into its instances: one, or `replicas` of them
/// (`name.0`, `name.1`...), each with its own PORT and CORRAL_REPLICA.
fn parse_service(
    d: &mut Diagnostics<'_>,
    name_key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Value<'_>,
    base_dir: &Path,
    host: &HostEnv,
    overrides: &BTreeMap<String, u32>,
) -> Vec<RawService> {
    let name = name_key.get_ref().as_ref();
    let (mut replicas, mut port) = (None, None);
    if let DeValue::Table(t) = value.get_ref() {
        if let Some(v) = t.get("replicas") {
            replicas = uint(d, v).filter(|&n| {
                let ok = n <= MAX_REPLICAS;
                if !ok {
                    d.error(
                        v.span(),
                        format!("replicas must be at most {MAX_REPLICAS}, found {n}"),
                    );
                }
                ok
            });
        }
        if let Some(v) = t.get("port") {
            let vars = |n: &str| host.get(n).map(str::to_string);
            let number = match v.get_ref() {
                DeValue::String(_) => expand(d, v, &vars).and_then(|s| match s.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        d.error(v.span(), format!("port must be a number, found {s:?}"));
                        None
                    }
                }),
                _ => uint(d, v),
            };
            port = number.filter(|&p| {
                let ok = (1..=65535).contains(&p);
                if !ok {
                    d.error(
                        v.span(),
                        format!("port must be between 1 and 65535, found {p}"),
                    );
                }
                ok
            });
        }
    }
    let replicas = overrides.get(name).copied().or(replicas);
    match replicas {
        None => parse_instance(
            d,
            name_key,
            value,
            base_dir,
            host,
            Instance {
                replica: None,
                port,
            },
        )
        .into_iter()
        .collect(),
        Some(n) if port.is_some_and(|p| p + n.saturating_sub(1) > 65535) => {
            let p = port.unwrap_or_default();
            let last = n - 1;
            let message = format!(
                "service {name:?}: the port of replica {last} (port {p} + {last}) would be above 65535"
            );
            d.error(name_key.span(), message);
            Vec::new()
        }
        Some(n) => (0..n.min(MAX_REPLICAS))
            .filter_map(|i| {
                let port = port.map(|p| p + i);
                parse_instance(
                    d,
                    name_key,
                    value,
                    base_dir,
                    host,
                    Instance {
                        replica: Some(i),
                        port,
                    },
                )
            })
            .collect(),
    }
}

fn parse_instance(
    d: &mut Diagnostics<'_>,
    name_key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Value<'_>,
    base_dir: &Path,
    host: &HostEnv,
    instance: Instance,
) -> Option<RawService> {
    let name = name_key.get_ref().to_string();
    let name_span = name_key.span();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c == '-' || c == '_' || c.is_ascii_alphanumeric())
    {
        d.error(
            name_span.clone(),
            format!("invalid service name {name:?}: use letters, digits, '-' and '_'"),
        );
    } else if name == "corral" {
        d.error(
            name_span.clone(),
            "the service name \"corral\" is reserved for corral's own messages",
        );
    }
    let t = table(d, value, &format!("service {name:?}"))?;
    let where_ = format!("in service {name:?}");
    let mut own = vec![("CORRAL_SERVICE", name.clone())];
    if let Some(i) = instance.replica {
        own.push(("CORRAL_REPLICA", i.to_string()));
    }
    if let Some(p) = instance.port {
        own.push(("PORT", p.to_string()));
    }
    let vars = |n: &str| {
        own.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
            .or_else(|| host.get(n).map(str::to_string))
    };

    let mut command = None;
    let mut oneshot = false;
    let mut working_dir = None;
    let mut explicit_env = Vec::new();
    let mut env_files = Vec::new();
    let mut inherit = Vec::new();
    let mut user_spec: Option<(String, Range<usize>)> = None;
    let mut pre = None;
    let mut post = None;
    let mut restart = None;
    let mut backoff = Backoff::default();
    let mut max_restarts = None;
    let mut essential = false;
    let mut stop_signal = Signal::SIGTERM;
    let mut stop_timeout = Duration::from_secs(10);
    let mut depends_on = Vec::new();
    let mut ready = None;
    let mut health = None;
    let mut log = LogConfig::default();
    let mut provides = Vec::new();
    let mut requires = Vec::new();
    let mut require_timeout = Duration::from_secs(60);
    let mut on_change = OnChange::Restart;
    let mut change_wait = (Duration::from_millis(200), Duration::from_secs(2));
    let mut templates = Vec::new();

    for (key, v) in t.iter() {
        match key.get_ref().as_ref() {
            "command" => command = argv(d, v, &vars, "command"),
            "oneshot" => set(&mut oneshot, boolean(d, v)),
            "working-dir" => working_dir = expand(d, v, &vars).map(|p| base_dir.join(p)),
            "env" => explicit_env = env_table(d, v, &vars),
            "env-file" => {
                for (path, span) in string_or_list(d, v, &vars) {
                    let path = base_dir.join(path);
                    match env::read_env_file(&path) {
                        Ok(pairs) => env_files.extend(pairs),
                        Err((0, msg)) => d.error(span, msg),
                        Err((line, msg)) => d.error_in(&path, line, msg),
                    }
                }
            }
            "inherit-env" => {
                inherit = string_or_list(d, v, &vars)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            }
            "user" => user_spec = expand(d, v, &vars).map(|s| (s, v.span())),
            "pre" => pre = argv(d, v, &vars, "pre"),
            "post" => post = argv(d, v, &vars, "post"),
            "restart" => restart = restart_policy(d, v),
            "backoff" => {
                if let Some(b) = table(d, v, "backoff") {
                    backoff = parse_backoff(d, b);
                }
            }
            "max-restarts" => max_restarts = uint(d, v),
            "essential" => set(&mut essential, boolean(d, v)),
            "stop-signal" => set(&mut stop_signal, signal(d, v)),
            "stop-timeout" => set(&mut stop_timeout, duration(d, v)),
            "depends-on" => depends_on = dependencies(d, v),
            // Read by parse_service, for all instances.
            "replicas" | "port" => {}
            "provides" => provides = provide_list(d, v, &vars),
            "requires" => requires = require_list(d, v),
            "require-timeout" => set(&mut require_timeout, duration(d, v)),
            "on-change" => set(&mut on_change, on_change_action(d, v, &vars)),
            "change-wait" => {
                if let Some(t) = table(d, v, "change-wait") {
                    for (k, w) in t.iter() {
                        match k.get_ref().as_ref() {
                            "min" => set(&mut change_wait.0, duration(d, w)),
                            "max" => set(&mut change_wait.1, duration(d, w)),
                            other => unknown_key(d, k, other, "in change-wait", &CHANGE_WAIT_KEYS),
                        }
                    }
                    if change_wait.1 < change_wait.0 {
                        let (min, max) = (change_wait.0, change_wait.1);
                        let message = format!(
                            "change-wait max ({}) is shorter than min ({})",
                            humantime::format_duration(max),
                            humantime::format_duration(min)
                        );
                        d.error(v.span(), message);
                    }
                }
            }
            "templates" => templates = template_list(d, v, &vars, base_dir),
            "ready" => ready = readiness(d, v, &vars),
            "health" => health = health_check(d, v, &vars),
            "log" => {
                if let Some(t) = table(d, v, "log") {
                    log = log_table(d, t, &vars, base_dir);
                }
            }
            other => unknown_key(d, key, other, &where_, &SERVICE_KEYS),
        }
    }
    if let (true, Some(key)) = (oneshot, t.get_key_value("ready").map(|(k, _)| k)) {
        d.error(
            key.span(),
            format!("service {name:?} is a oneshot: it has no readiness, depend on it with condition \"completed\""),
        );
    }
    if command.is_none() && !t.contains_key("command") {
        d.error(
            name_span.clone(),
            format!("service {name:?} has no `command`"),
        );
    }

    let identity = match &user_spec {
        Some((spec, span)) => {
            match user::resolve(spec).and_then(|id| user::can_switch_to(&id).map(|_| id)) {
                Ok(id) => Some(id),
                Err(msg) => {
                    d.error(span.clone(), format!("{msg} (service {name:?})"));
                    None
                }
            }
        }
        None => None,
    };
    let env_identity: &Identity = identity.as_ref().unwrap_or(&host.identity);
    let env = env::assemble(EnvParts {
        host,
        identity: env_identity,
        inherit: &inherit,
        files: env_files,
        explicit: explicit_env,
        own: own
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    });
    let instance_name = match instance.replica {
        Some(i) => format!("{name}.{i}"),
        None => name.clone(),
    };
    let restart = restart.unwrap_or(if oneshot {
        RestartPolicy::Never
    } else {
        RestartPolicy::OnFailure
    });
    Some(RawService {
        service: Service {
            name: instance_name,
            group: name,
            replica: instance.replica,
            port: instance.port.map(|p| p as u16),
            command: command.unwrap_or_default(),
            oneshot,
            working_dir: working_dir.or_else(|| Some(base_dir.to_path_buf())),
            env,
            user: identity,
            pre,
            post,
            restart,
            backoff,
            max_restarts,
            essential,
            stop_signal,
            stop_timeout,
            depends_on: Vec::new(),
            ready,
            health,
            log,
            provides,
            requires,
            require_timeout,
            on_change,
            change_wait,
            templates,
        },
        name_span,
        depends_on,
    })
}

fn parse_discovery(d: &mut Diagnostics<'_>, t: &DeTable<'_>, host: &HostEnv) -> Discovery {
    let vars = |n: &str| host.get(n).map(str::to_string);
    let mut out = Discovery::default();
    for (key, v) in t.iter() {
        match key.get_ref().as_ref() {
            "backend" => match string(d, v) {
                Some("local") | None => {}
                Some(other) => d.error(
                    v.span(),
                    format!("unknown discovery backend {other:?}: only \"local\" is available in this version"),
                ),
            },
            "advertise" => set(&mut out.advertise, expand(d, v, &vars)),
            other => unknown_key(d, key, other, "in [discovery]", &TOP_DISCOVERY_KEYS),
        }
    }
    out
}

fn entries<'a, 'i>(d: &mut Diagnostics<'_>, v: &'a Value<'i>, what: &str) -> Vec<&'a Value<'i>> {
    match v.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => {
            type_error(d, v, &format!("an array of {what}"));
            Vec::new()
        }
    }
}

fn string_list(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<String> {
    entries(d, v, "strings")
        .into_iter()
        .filter_map(|s| string(d, s).map(str::to_string))
        .collect()
}

fn string_map(d: &mut Diagnostics<'_>, v: &Value<'_>) -> BTreeMap<String, String> {
    let Some(t) = table(d, v, "attrs") else {
        return BTreeMap::new();
    };
    t.iter()
        .filter_map(|(k, val)| string(d, val).map(|s| (k.get_ref().to_string(), s.to_string())))
        .collect()
}

fn provide_list(d: &mut Diagnostics<'_>, v: &Value<'_>, vars: &dyn Vars) -> Vec<Provide> {
    let mut out = Vec::new();
    for item in entries(d, v, "tables like { name = \"api\", port = 8000 }") {
        let Some(t) = table(d, item, "a provides entry") else {
            continue;
        };
        let (mut name, mut port, mut host) = (None, None, None);
        let (mut tags, mut attrs) = (Vec::new(), BTreeMap::new());
        for (key, pv) in t.iter() {
            match key.get_ref().as_ref() {
                "name" => name = string(d, pv).map(str::to_string),
                "port" => {
                    let text = match pv.get_ref() {
                        DeValue::Integer(i) => Some(i.as_str().to_string()),
                        DeValue::String(_) => expand(d, pv, vars),
                        _ => {
                            type_error(d, pv, "a port number or \"${PORT}\"");
                            None
                        }
                    };
                    port = text.and_then(|t| match t.parse::<u16>() {
                        Ok(p) if p > 0 => Some(p),
                        _ => {
                            d.error(pv.span(), format!("invalid port {t:?}"));
                            None
                        }
                    });
                }
                "host" => host = expand(d, pv, vars),
                "tags" => tags = string_list(d, pv),
                "attrs" => attrs = string_map(d, pv),
                other => unknown_key(d, key, other, "in a provides entry", &PROVIDE_KEYS),
            }
        }
        match (name, port) {
            (Some(name), Some(port)) => out.push(Provide {
                name,
                port,
                host,
                tags,
                attrs,
            }),
            (None, _) => d.error(item.span(), "a provides entry needs a `name`"),
            (_, None) if !t.contains_key("port") => {
                d.error(item.span(), "a provides entry needs a `port`")
            }
            _ => {}
        }
    }
    out
}

fn require_list(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<Require> {
    let mut out = Vec::new();
    for item in entries(
        d,
        v,
        "names or tables like { name = \"api\", tags = [\"v2\"] }",
    ) {
        match item.get_ref() {
            DeValue::String(s) => out.push(Require {
                name: s.to_string(),
                tags: Vec::new(),
                attrs: BTreeMap::new(),
            }),
            DeValue::Table(t) => {
                let mut req = Require {
                    name: String::new(),
                    tags: Vec::new(),
                    attrs: BTreeMap::new(),
                };
                for (key, rv) in t.iter() {
                    match key.get_ref().as_ref() {
                        "name" => set(&mut req.name, string(d, rv).map(str::to_string)),
                        "tags" => req.tags = string_list(d, rv),
                        "attrs" => req.attrs = string_map(d, rv),
                        other => unknown_key(d, key, other, "in a requires entry", &REQUIRE_KEYS),
                    }
                }
                if req.name.is_empty() {
                    d.error(item.span(), "a requires entry needs a `name`");
                } else {
                    out.push(req);
                }
            }
            _ => type_error(d, item, "a name or a table"),
        }
    }
    out
}

fn on_change_action(d: &mut Diagnostics<'_>, v: &Value<'_>, vars: &dyn Vars) -> Option<OnChange> {
    match v.get_ref() {
        DeValue::String(s) => match s.as_ref() {
            "restart" => Some(OnChange::Restart),
            "none" => Some(OnChange::None),
            other => match other.strip_prefix("signal:") {
                Some(sig) => match parse_signal(sig) {
                    Some(sig) => Some(OnChange::Signal(sig)),
                    None => {
                        d.error(v.span(), format!("unknown signal {sig:?} in on-change"));
                        None
                    }
                },
                None => {
                    d.error(
                        v.span(),
                        format!("unknown on-change {other:?}: use \"restart\", \"signal:SIGHUP\", \"none\" or a command array"),
                    );
                    None
                }
            },
        },
        DeValue::Array(_) => argv(d, v, vars, "on-change").map(OnChange::Command),
        _ => {
            type_error(
                d,
                v,
                "\"restart\", \"signal:SIG\", \"none\" or a command array",
            );
            None
        }
    }
}

fn template_list(
    d: &mut Diagnostics<'_>,
    v: &Value<'_>,
    vars: &dyn Vars,
    base_dir: &Path,
) -> Vec<Template> {
    let mut out = Vec::new();
    for item in entries(d, v, "tables like { source = \"x.tmpl\", target = \"x\" }") {
        let Some(t) = table(d, item, "a templates entry") else {
            continue;
        };
        let (mut source, mut target, mut mode) = (None, None, None);
        for (key, tv) in t.iter() {
            match key.get_ref().as_ref() {
                "source" => source = expand(d, tv, vars).map(|p| base_dir.join(p)),
                "target" => target = expand(d, tv, vars).map(|p| base_dir.join(p)),
                "mode" => {
                    mode = match tv.get_ref() {
                        DeValue::String(s) => {
                            match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
                                Ok(m) => Some(m),
                                Err(_) => {
                                    d.error(
                                        tv.span(),
                                        format!(
                                            "invalid mode {s:?}: write it in octal, like \"0644\""
                                        ),
                                    );
                                    None
                                }
                            }
                        }
                        _ => {
                            type_error(d, tv, "an octal mode such as \"0644\"");
                            None
                        }
                    }
                }
                other => unknown_key(d, key, other, "in a templates entry", &TEMPLATE_KEYS),
            }
        }
        match (source, target) {
            (Some(source), Some(target)) => {
                if !source.exists() {
                    d.error(
                        item.span(),
                        format!("template source {} does not exist", source.display()),
                    );
                }
                out.push(Template {
                    source,
                    target,
                    mode,
                });
            }
            _ => d.error(item.span(), "a templates entry needs `source` and `target`"),
        }
    }
    out
}

fn log_table(
    d: &mut Diagnostics<'_>,
    t: &DeTable<'_>,
    vars: &dyn Vars,
    base_dir: &Path,
) -> LogConfig {
    let mut log = LogConfig::default();
    for (key, v) in t.iter() {
        match key.get_ref().as_ref() {
            "file" => log.file = expand(d, v, vars).map(|p| base_dir.join(p)),
            "max-size" => match size(d, v) {
                Some(0) => d.error(v.span(), "max-size must be at least 1 byte"),
                n => set(&mut log.max_size, n),
            },
            "keep" => set(&mut log.keep, uint(d, v)),
            "ring-lines" => set(&mut log.ring_lines, uint(d, v).map(|n| n as usize)),
            "ring-bytes" => set(&mut log.ring_bytes, size(d, v).map(|n| n as usize)),
            "max-line" => match size(d, v) {
                Some(n) if n >= 64 => log.max_line = n as usize,
                Some(_) => d.error(v.span(), "max-line must be at least 64 bytes"),
                None => {}
            },
            other => unknown_key(d, key, other, "in log", &LOG_KEYS),
        }
    }
    log
}

/// "10MB", "512KiB", "1GB" or a number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

fn size(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<u64> {
    match v.get_ref() {
        DeValue::Integer(_) => uint(d, v).map(u64::from),
        DeValue::String(s) => {
            let parsed = parse_size(s);
            if parsed.is_none() {
                d.error(
                    v.span(),
                    format!(
                        "invalid size {s:?} (write e.g. \"10MB\", \"512KiB\" or a number of bytes)"
                    ),
                );
            }
            parsed
        }
        _ => {
            type_error(d, v, "a size such as \"10MB\"");
            None
        }
    }
}

fn parse_backoff(d: &mut Diagnostics<'_>, t: &DeTable<'_>) -> Backoff {
    let mut b = Backoff::default();
    let mut max_set = false;
    for (key, v) in t.iter() {
        match key.get_ref().as_ref() {
            "initial" => set(&mut b.initial, duration(d, v)),
            "max" => {
                max_set = true;
                set(&mut b.max, duration(d, v));
            }
            "reset-after" => set(&mut b.reset_after, duration(d, v)),
            other => unknown_key(d, key, other, "in backoff", &BACKOFF_KEYS),
        }
    }
    if !max_set && b.initial > b.max {
        b.max = b.initial;
    }
    b
}

fn dependencies(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<RawDependency> {
    let mut out = Vec::new();
    match v.get_ref() {
        DeValue::Array(items) => {
            for item in items.iter() {
                if let DeValue::String(s) = item.get_ref() {
                    out.push(RawDependency {
                        name: s.to_string(),
                        span: item.span(),
                        condition: Condition::Started,
                        restart: false,
                    });
                } else {
                    type_error(d, item, "a service name");
                }
            }
        }
        DeValue::Table(t) => {
            for (name, cond) in t.iter() {
                let mut restart = false;
                let condition = match cond.get_ref() {
                    DeValue::String(_) => condition(d, cond),
                    DeValue::Table(ct) => {
                        let mut c = Some(Condition::Started);
                        for (k, cv) in ct.iter() {
                            match k.get_ref().as_ref() {
                                "condition" => c = condition(d, cv),
                                "restart" => set(&mut restart, boolean(d, cv)),
                                other => unknown_key(
                                    d,
                                    k,
                                    other,
                                    "in a depends-on entry",
                                    &DEPENDENCY_KEYS,
                                ),
                            }
                        }
                        c
                    }
                    _ => {
                        type_error(
                            d,
                            cond,
                            "a condition (\"started\", \"ready\" or \"completed\")",
                        );
                        None
                    }
                };
                if let Some(condition) = condition {
                    out.push(RawDependency {
                        name: name.get_ref().to_string(),
                        span: name.span(),
                        condition,
                        restart,
                    });
                }
            }
        }
        _ => type_error(d, v, "a list of service names or a table of conditions"),
    }
    out
}

/// The probe-specific keys of a `ready` or `health` table.
struct ProbeTable {
    probe: Option<Probe>,
    initial_delay: Duration,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    start_timeout: Option<Duration>,
    retries: Option<u32>,
}

fn probe_table(
    d: &mut Diagnostics<'_>,
    v: &Value<'_>,
    vars: &dyn Vars,
    what: &str,
    known: &[&str],
) -> Option<ProbeTable> {
    let t = table(d, v, what)?;
    let mut out = ProbeTable {
        probe: None,
        initial_delay: Duration::ZERO,
        interval: None,
        timeout: None,
        start_timeout: None,
        retries: None,
    };
    let mut kinds = Vec::new();
    let mut status = Vec::new();
    let mut status_span = None;
    for (key, pv) in t.iter() {
        let k = key.get_ref().as_ref();
        if !known.contains(&k) {
            unknown_key(d, key, k, &format!("in {what}"), known);
            continue;
        }
        match k {
            "exec" => {
                kinds.push(k);
                out.probe = argv(d, pv, vars, "exec").map(Probe::Exec);
            }
            "tcp" => {
                kinds.push(k);
                out.probe = expand(d, pv, vars).and_then(|addr| match split_host_port(&addr) {
                    Some(_) => Some(Probe::Tcp(addr)),
                    None => {
                        d.error(pv.span(), format!("expected \"host:port\", found {addr:?}"));
                        None
                    }
                });
            }
            "http" => {
                kinds.push(k);
                out.probe = expand(d, pv, vars).and_then(|url| match check_http_url(&url) {
                    Ok(()) => Some(Probe::Http {
                        url,
                        status: Vec::new(),
                    }),
                    Err(msg) => {
                        d.error(pv.span(), msg);
                        None
                    }
                });
            }
            "status" => {
                status_span = Some(pv.span());
                let mut code = |v: &Value<'_>| match uint(d, v) {
                    Some(n @ 100..=599) => u16::try_from(n).ok(),
                    Some(n) => {
                        let message =
                            format!("an HTTP status code is between 100 and 599, found {n}");
                        d.error(v.span(), message);
                        None
                    }
                    None => None,
                };
                status = match pv.get_ref() {
                    DeValue::Array(items) => items.iter().filter_map(&mut code).collect(),
                    _ => code(pv).into_iter().collect(),
                };
            }
            "log" => {
                kinds.push(k);
                out.probe = string(d, pv).and_then(|re| match regex_lite::Regex::new(re) {
                    Ok(_) => Some(Probe::Log(re.to_string())),
                    Err(e) => {
                        d.error(pv.span(), format!("invalid regex: {e}"));
                        None
                    }
                });
            }
            "notify-fd" => {
                kinds.push(k);
                out.probe = uint(d, pv).and_then(|fd| {
                    if (3..1024).contains(&fd) {
                        Some(Probe::NotifyFd(fd as i32))
                    } else {
                        d.error(
                            pv.span(),
                            format!(
                                "notify-fd must be between 3 and 1023 (0-2 are stdio), found {fd}"
                            ),
                        );
                        None
                    }
                });
            }
            "initial-delay" => set(&mut out.initial_delay, duration(d, pv)),
            "interval" => out.interval = duration(d, pv),
            "timeout" => out.timeout = duration(d, pv),
            "start-timeout" => out.start_timeout = duration(d, pv),
            "retries" => match uint(d, pv) {
                Some(0) => d.error(pv.span(), "retries must be at least 1"),
                n => out.retries = n,
            },
            _ => {}
        }
    }
    match kinds.as_slice() {
        [] => d.error(
            v.span(),
            format!(
                "{what} needs one of: {}",
                PROBE_KINDS
                    .iter()
                    .filter(|k| known.contains(k))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        [_] => {}
        many => d.error(
            v.span(),
            format!("{what} takes one probe, found {}", many.join(" and ")),
        ),
    }
    match (&mut out.probe, status_span) {
        (Some(Probe::Http { status: s, .. }), _) => *s = status,
        (_, Some(span)) => d.error(span, "`status` only applies to an http probe"),
        _ => {}
    }
    Some(out)
}

fn readiness(d: &mut Diagnostics<'_>, v: &Value<'_>, vars: &dyn Vars) -> Option<Readiness> {
    let t = probe_table(d, v, vars, "ready", &READY_KEYS)?;
    Some(Readiness {
        probe: t.probe?,
        initial_delay: t.initial_delay,
        interval: t.interval.unwrap_or(Duration::from_millis(500)),
        timeout: t.timeout.unwrap_or(Duration::from_secs(1)),
        start_timeout: t.start_timeout.unwrap_or(Duration::from_secs(60)),
    })
}

fn health_check(d: &mut Diagnostics<'_>, v: &Value<'_>, vars: &dyn Vars) -> Option<Health> {
    let t = probe_table(d, v, vars, "health", &HEALTH_KEYS)?;
    Some(Health {
        probe: t.probe?,
        initial_delay: t.initial_delay,
        interval: t.interval.unwrap_or(Duration::from_secs(10)),
        timeout: t.timeout.unwrap_or(Duration::from_secs(5)),
        retries: t.retries.unwrap_or(3),
    })
}

/// Splits "host:port" (or "[v6]:port"); None if malformed.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

fn check_http_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(()),
        (Some("https"), _) => Err(format!(
            "{url:?}: https probes are not supported; probe the plain-HTTP port"
        )),
        _ => Err(format!(
            "expected a URL like \"http://127.0.0.1:8080/health\", found {url:?}"
        )),
    }
}

fn condition(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Condition> {
    let s = string(d, v)?;
    match s {
        "started" => Some(Condition::Started),
        "ready" => Some(Condition::Ready),
        "completed" => Some(Condition::Completed),
        other => {
            d.error(
                v.span(),
                format!(
                    "unknown condition {other:?}: expected one of {}{}",
                    Condition::NAMES.join(", "),
                    suggestion(other, Condition::NAMES)
                ),
            );
            None
        }
    }
}

fn restart_policy(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<RestartPolicy> {
    let s = string(d, v)?;
    match s {
        "always" => Some(RestartPolicy::Always),
        "on-failure" => Some(RestartPolicy::OnFailure),
        "never" => Some(RestartPolicy::Never),
        other => {
            d.error(
                v.span(),
                format!(
                    "unknown restart policy {other:?}: expected one of {}{}",
                    RestartPolicy::NAMES.join(", "),
                    suggestion(other, RestartPolicy::NAMES)
                ),
            );
            None
        }
    }
}

/// Parses "SIGTERM", "TERM", "term" or a number.
pub fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().ok()
}

fn signal(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Signal> {
    let text = match v.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => i.as_str().to_string(),
        _ => {
            type_error(d, v, "a signal name such as \"SIGTERM\"");
            return None;
        }
    };
    let sig = parse_signal(&text);
    if sig.is_none() {
        let names: Vec<&str> = Signal::iterator().map(|s| s.as_str()).collect();
        d.error(
            v.span(),
            format!(
                "unknown signal {text:?}{}",
                suggestion(&text.to_ascii_uppercase(), names)
            ),
        );
    }
    sig
}

fn duration(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Duration> {
    let s = string(d, v)?;
    match humantime::parse_duration(s) {
        Ok(dur) => Some(dur),
        Err(e) => {
            d.error(
                v.span(),
                format!("invalid duration {s:?}: {e} (write e.g. \"250ms\", \"10s\", \"5m\")"),
            );
            None
        }
    }
}

fn uint(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<u32> {
    match v.get_ref() {
        DeValue::Integer(i) => match u32::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                d.error(
                    v.span(),
                    format!("expected a non-negative whole number, found {}", i.as_str()),
                );
                None
            }
        },
        _ => {
            type_error(d, v, "a whole number");
            None
        }
    }
}

fn boolean(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            type_error(d, v, "true or false");
            None
        }
    }
}

fn string<'a>(d: &mut Diagnostics<'_>, v: &'a Value<'_>) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            type_error(d, v, "a string");
            None
        }
    }
}

fn expand(d: &mut Diagnostics<'_>, v: &Value<'_>, vars: &dyn Vars) -> Option<String> {
    let s = string(d, v)?;
    expand_text(d, v.span(), s, vars)
}

fn expand_text(
    d: &mut Diagnostics<'_>,
    span: Range<usize>,
    s: &str,
    vars: &dyn Vars,
) -> Option<String> {
    match interp::expand(s, vars) {
        Ok(e) => {
            for name in e.unset {
                d.warning(
                    span.clone(),
                    format!("${{{name}}} is not set; using an empty string"),
                );
            }
            Some(e.value)
        }
        Err(e) => {
            d.error(span, e.to_string());
            None
        }
    }
}

/// A command: an array is argv as is; a string is split like a shell would, without a shell.
fn argv(
    d: &mut Diagnostics<'_>,
    v: &Value<'_>,
    vars: &dyn Vars,
    what: &str,
) -> Option<Vec<String>> {
    let words: Vec<String> = match v.get_ref() {
        DeValue::String(s) => match shlex::split(s) {
            Some(words) => words,
            None => {
                d.error(
                    v.span(),
                    format!("cannot split {what} {s:?}: unbalanced quotes or trailing backslash"),
                );
                return None;
            }
        },
        DeValue::Array(items) => {
            let mut words = Vec::with_capacity(items.len());
            for item in items.iter() {
                words.push(string(d, item)?.to_string());
            }
            words
        }
        _ => {
            type_error(d, v, "a string or an array of strings");
            return None;
        }
    };
    if words.is_empty() || words[0].is_empty() {
        d.error(v.span(), format!("{what} is empty"));
        return None;
    }
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        out.push(expand_text(d, v.span(), &w, vars)?);
    }
    Some(out)
}

fn env_table(d: &mut Diagnostics<'_>, v: &Value<'_>, vars: &dyn Vars) -> Vec<(String, String)> {
    let Some(t) = table(d, v, "env") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, val) in t.iter() {
        let key = k.get_ref().to_string();
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            d.error(
                k.span(),
                format!("invalid environment variable name {key:?}"),
            );
            continue;
        }
        let value = match val.get_ref() {
            DeValue::String(_) => expand(d, val, vars),
            DeValue::Integer(i) => Some(i.as_str().to_string()),
            DeValue::Boolean(b) => Some(b.to_string()),
            _ => {
                type_error(d, val, "a string, number or boolean");
                None
            }
        };
        if let Some(value) = value {
            out.push((key, value));
        }
    }
    out
}

fn string_or_list(
    d: &mut Diagnostics<'_>,
    v: &Value<'_>,
    vars: &dyn Vars,
) -> Vec<(String, Range<usize>)> {
    match v.get_ref() {
        DeValue::String(_) => expand(d, v, vars)
            .map(|s| (s, v.span()))
            .into_iter()
            .collect(),
        DeValue::Array(items) => items
            .iter()
            .filter_map(|item| expand(d, item, vars).map(|s| (s, item.span())))
            .collect(),
        _ => {
            type_error(d, v, "a string or an array of strings");
            Vec::new()
        }
    }
}

fn table<'a, 'i>(d: &mut Diagnostics<'_>, v: &'a Value<'i>, what: &str) -> Option<&'a DeTable<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => {
            d.error(
                v.span(),
                format!("{what} must be a table, found {}", type_name(v.get_ref())),
            );
            None
        }
    }
}

fn unknown_key(
    d: &mut Diagnostics<'_>,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    name: &str,
    where_: &str,
    known: &[&str],
) {
    d.error(
        key.span(),
        format!(
            "unknown key `{name}` {where_}{}",
            suggestion(name, known.iter().copied())
        ),
    );
}

fn type_error(d: &mut Diagnostics<'_>, v: &Value<'_>, expected: &str) {
    d.error(
        v.span(),
        format!("expected {expected}, found {}", type_name(v.get_ref())),
    );
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
