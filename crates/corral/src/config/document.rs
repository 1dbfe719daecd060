//! The whole file: the top-level tables, `[corral]` and `[discovery]`; each
//! `[services.NAME]` is read by `service.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use toml::de::DeTable;

use super::diag::Diagnostics;
use super::env::HostEnv;
use super::host::HostChecks;
use super::service::{self, Context, RawService};
use super::values::{
    boolean, duration, read_fields, set, size, string, table, text, uint, unknown_key, Field, Text,
    Value,
};
use super::{ConsoleLog, Discovery, Global, LogFormat};

/// The parsed file before dependency names are resolved.
pub struct RawConfig {
    pub global: Global,
    pub services: Vec<RawService>,
}

const TOP_KEYS: [&str; 3] = ["corral", "services", "discovery"];

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
    let mut checks = HostChecks::default();
    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            "corral" => {
                if let Some(t) = table(d, value, "[corral]") {
                    global = parse_global(d, t, host, base_dir);
                }
            }
            "discovery" => {
                if let Some(t) = table(d, value, "[discovery]") {
                    discovery = parse_discovery(d, t, host);
                }
            }
            "services" => {
                saw_services = true;
                if let Some(t) = table(d, value, "[services]") {
                    let mut cx = Context {
                        base_dir,
                        host,
                        checks: &mut checks,
                    };
                    for (name, svc) in t.iter() {
                        let scaled = overrides.get(name.get_ref().as_ref()).copied();
                        services.extend(service::read(d, name, svc, scaled, &mut cx));
                    }
                }
            }
            other => unknown_key(d, key, other, "at the top level", TOP_KEYS),
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

/// `[corral]` as read; its strings are interpolated from corral's environment.
#[derive(Default)]
struct GlobalDraft {
    global: Global,
    break_glass: Option<Text>,
    socket_group: Option<Text>,
    log_dir: Option<Text>,
}

const GLOBAL_FIELDS: [Field<GlobalDraft>; 9] = [
    ("shutdown-timeout", |g, d, v| {
        set(&mut g.global.shutdown_timeout, duration(d, v))
    }),
    ("break-glass", |g, d, v| g.break_glass = text(d, v)),
    ("parallel", |g, d, v| {
        set(&mut g.global.parallel, boolean(d, v))
    }),
    ("socket-group", |g, d, v| g.socket_group = text(d, v)),
    ("log-dir", |g, d, v| g.log_dir = text(d, v)),
    ("log-format", read_log_format),
    ("log-timestamps", |g, d, v| {
        set(&mut g.global.log_timestamps, boolean(d, v))
    }),
    ("log", read_console_log),
    ("cgroup", |g, d, v| set(&mut g.global.cgroup, boolean(d, v))),
];

const CONSOLE_LOG_FIELDS: [Field<ConsoleLog>; 2] = [
    ("max-size", |l, d, v| match size(d, v) {
        Some(0) => d.error(v.span(), "max-size must be at least 1 byte"),
        n => set(&mut l.max_size, n),
    }),
    ("keep", |l, d, v| set(&mut l.keep, uint(d, v))),
];

fn read_console_log(g: &mut GlobalDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    if let Some(t) = table(d, v, "log") {
        read_fields(
            d,
            t,
            &CONSOLE_LOG_FIELDS,
            &mut g.global.console_log,
            "in [corral] log",
        );
    }
}

fn read_log_format(g: &mut GlobalDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    match string(d, v) {
        Some("text") => g.global.log_format = LogFormat::Text,
        Some("json") => g.global.log_format = LogFormat::Json,
        Some(other) => d.error(
            v.span(),
            format!("unknown log-format {other:?}: expected \"text\" or \"json\""),
        ),
        None => {}
    }
}

fn parse_global(
    d: &mut Diagnostics<'_>,
    t: &DeTable<'_>,
    host: &HostEnv,
    base_dir: &Path,
) -> Global {
    let mut g = GlobalDraft::default();
    read_fields(d, t, &GLOBAL_FIELDS, &mut g, "in [corral]");
    let vars = |n: &str| host.get(n).map(str::to_string);
    if let Some(name) = g.break_glass.as_ref().and_then(|t| t.expand(d, &vars)) {
        let valid = !name.is_empty() && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
        match (valid, &g.break_glass) {
            (true, _) => g.global.break_glass = Some(name),
            (false, Some(t)) => d.error(
                t.span.clone(),
                format!("break-glass must name an environment variable, found {name:?}"),
            ),
            (false, None) => {}
        }
    }
    if let Some(t) = &g.socket_group {
        if let Some(name) = t.expand(d, &vars) {
            if HostChecks::group_exists(&name) {
                g.global.socket_group = Some(name);
            } else {
                d.error(
                    t.span.clone(),
                    format!("socket-group {name:?} does not exist"),
                );
            }
        }
    }
    g.global.log_dir = g
        .log_dir
        .and_then(|t| t.expand(d, &vars))
        .map(|p| base_dir.join(p));
    g.global
}

/// `[discovery]` as read.
#[derive(Default)]
struct DiscoveryDraft {
    advertise: Option<Text>,
}

const DISCOVERY_FIELDS: [Field<DiscoveryDraft>; 2] = [
    ("backend", |_, d, v| match string(d, v) {
        Some("local") | None => {}
        Some(other) => d.error(
            v.span(),
            format!(
                "unknown discovery backend {other:?}: only \"local\" is available in this version"
            ),
        ),
    }),
    ("advertise", |g, d, v| g.advertise = text(d, v)),
];

fn parse_discovery(d: &mut Diagnostics<'_>, t: &DeTable<'_>, host: &HostEnv) -> Discovery {
    let mut draft = DiscoveryDraft::default();
    read_fields(d, t, &DISCOVERY_FIELDS, &mut draft, "in [discovery]");
    let vars = |n: &str| host.get(n).map(str::to_string);
    let mut out = Discovery::default();
    set(
        &mut out.advertise,
        draft.advertise.and_then(|t| t.expand(d, &vars)),
    );
    out
}
