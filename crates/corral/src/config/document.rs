//! The whole file: the top-level tables, `[corral]` and `[discovery]`; each
//! `[services.NAME]` is read by `service.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::diag::Diagnostics;
use super::env::HostEnv;
use super::host::HostChecks;
use super::service::{self, Context, RawService};
use super::values::{
    boolean, duration, read_fields, set, size, split_host_port, string, table, text, texts, uint,
    unknown_key, Field, Text, Value,
};
use super::{ConsoleLog, Discovery, Global, LogFormat};

/// The parsed file before dependency names are resolved.
pub struct RawConfig {
    pub global: Global,
    pub services: Vec<RawService>,
}

const TOP_KEYS: [&str; 4] = ["corral", "services", "discovery", "include"];

/// Merges `from` (a later file) into `into`: a table merges key by key,
/// anything else is replaced, as docker compose merges its files.
fn merge<'i>(into: &mut DeTable<'i>, from: DeTable<'i>) {
    for (key, value) in from {
        let (span, value) = (value.span(), value.into_inner());
        match (into.get_mut(key.get_ref().as_ref()), value) {
            (Some(existing), DeValue::Table(table))
                if matches!(existing.get_ref(), DeValue::Table(_)) =>
            {
                if let DeValue::Table(inner) = existing.get_mut() {
                    merge(inner, table);
                }
            }
            (_, value) => {
                into.insert(key, toml::Spanned::new(span, value));
            }
        }
    }
}

/// One file's text and where it starts in the whole text of all the files.
pub type Source = (usize, String);

/// `t`'s spans (its keys' and values', all the way down) moved `by` bytes:
/// from its file's own text into the whole text of all the files.
fn shift_table(t: DeTable<'_>, by: usize) -> DeTable<'_> {
    t.into_iter()
        .map(|(key, value)| {
            let span = key.span();
            let key = toml::Spanned::new(span.start + by..span.end + by, key.into_inner());
            (key, shift_value(value, by))
        })
        .collect()
}

fn shift_value(value: toml::Spanned<DeValue<'_>>, by: usize) -> toml::Spanned<DeValue<'_>> {
    let span = value.span();
    let inner = match value.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift_table(t, by)),
        DeValue::Array(items) => {
            let mut shifted = toml::de::DeArray::new();
            for item in items {
                shifted.push(shift_value(item, by));
            }
            DeValue::Array(shifted)
        }
        other => other,
    };
    toml::Spanned::new(span.start + by..span.end + by, inner)
}

/// Parses the document: one text per file, with where it starts in the
/// whole text of all the files; every span is moved to point into the
/// whole (each file is parsed alone: a chain of N includes costs N parses
/// of one file, not of the whole). Later files win, key by key; tables
/// merge. None when one is not valid TOML or there are no services.
pub fn parse(
    sources: &[Source],
    base_dir: &Path,
    host: &HostEnv,
    overrides: &BTreeMap<String, u32>,
    d: &mut Diagnostics<'_>,
) -> Option<RawConfig> {
    let mut merged: Option<DeTable<'_>> = None;
    let mut syntax_failed = false;
    for (start, source) in sources {
        let (root, syntax_errors) = DeTable::parse_recoverable(source);
        for e in syntax_errors {
            syntax_failed = true;
            let msg = e.message().trim().to_string();
            let span = e.span().unwrap_or(0..0);
            d.error(
                span.start + start..span.end + start,
                format!("invalid TOML: {msg}"),
            );
        }
        let root = match *start {
            0 => root.into_inner(),
            by => shift_table(root.into_inner(), by),
        };
        match &mut merged {
            None => merged = Some(root),
            Some(into) => merge(into, root),
        }
    }
    if syntax_failed {
        return None;
    }
    let root = toml::Spanned::new(0..0, merged.unwrap_or_default());
    let mut global = Global::default();
    let mut discovery = Discovery::default();
    let mut services = Vec::new();
    let mut saw_services = false;
    let mut checks = HostChecks::default();
    // [corral] first, wherever it is in the file: services use its defaults.
    if let Some(value) = root.get_ref().get("corral") {
        if let Some(t) = table(d, value, "[corral]") {
            global = parse_global(d, t, host, base_dir);
        }
    }
    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            // Read before parsing: the files it names are merged in.
            "corral" | "include" => {}
            "discovery" => {
                if let Some(t) = table(d, value, "[discovery]") {
                    discovery = parse_discovery(d, t, host, base_dir);
                }
            }
            "services" => {
                saw_services = true;
                if let Some(t) = table(d, value, "[services]") {
                    let mut cx = Context {
                        base_dir,
                        host,
                        checks: &mut checks,
                        inherit_default: &global.inherit_env,
                        envs: Default::default(),
                        last_env: None,
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
            if s.service.log().file.is_none() {
                let file = dir.join(format!("{}.log", s.service.name));
                s.service.log_mut().file = Some(file);
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
    inherit_env: Option<Vec<Text>>,
    metrics: Option<Text>,
    state_dir: Option<Text>,
}

const GLOBAL_FIELDS: [Field<GlobalDraft>; 13] = [
    ("shutdown-timeout", |g, d, v| {
        set(&mut g.global.shutdown_timeout, duration(d, v))
    }),
    ("stop-grace", |g, d, v| match duration(d, v) {
        Some(t) if t.is_zero() => d.error(v.span(), "stop-grace must be above zero"),
        t => set(&mut g.global.stop_grace, t),
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
    ("inherit-env", |g, d, v| g.inherit_env = Some(texts(d, v))),
    ("metrics", |g, d, v| g.metrics = text(d, v)),
    ("state-dir", |g, d, v| g.state_dir = text(d, v)),
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
            // `break-glass = ""`: no break-glass variable at all.
            (false, _) if name.is_empty() => g.global.break_glass = None,
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
    // Read again, from the file alone, by every command (src/state.rs).
    g.global.state_dir = g
        .state_dir
        .and_then(|t| t.expand(d, &vars))
        .map(|p| base_dir.join(p));
    if let Some(t) = &g.metrics {
        match t
            .expand(d, &vars)
            .map(|a| (a.parse::<std::net::SocketAddr>(), a))
        {
            Some((Ok(addr), _)) => g.global.metrics = Some(addr),
            Some((Err(_), a)) => d.error(
                t.span.clone(),
                format!(
                    "metrics must be an address and port to listen on, such as \
                     \"127.0.0.1:9100\", found {a:?}"
                ),
            ),
            None => {}
        }
    }
    if let Some(list) = &g.inherit_env {
        g.global.inherit_env = list.iter().filter_map(|t| t.expand(d, &vars)).collect();
    }
    g.global
}

/// `[discovery]` as read.
#[derive(Default)]
struct DiscoveryDraft {
    advertise: Option<Text>,
    host_id: Option<Text>,
    /// Where `backend = "etcd"` was written.
    etcd_backend: Option<std::ops::Range<usize>>,
    /// The `etcd` table, and where it was written.
    etcd: Option<(EtcdDraft, std::ops::Range<usize>)>,
}

/// `[discovery] etcd = { ... }` as read.
#[derive(Default)]
struct EtcdDraft {
    endpoints: Vec<Text>,
    prefix: Option<String>,
    ttl: Option<Duration>,
    username: Option<Text>,
    password_file: Option<Text>,
    tls: Option<(TlsDraft, std::ops::Range<usize>)>,
}

const DISCOVERY_FIELDS: [Field<DiscoveryDraft>; 4] = [
    ("backend", |g, d, v| match string(d, v) {
        Some("local") | None => {}
        Some("etcd") => g.etcd_backend = Some(v.span()),
        Some(other) => d.error(
            v.span(),
            format!("unknown discovery backend {other:?}: use \"local\" or \"etcd\""),
        ),
    }),
    ("advertise", |g, d, v| g.advertise = text(d, v)),
    ("host-id", |g, d, v| g.host_id = text(d, v)),
    ("etcd", |g, d, v| {
        if let Some(t) = table(d, v, "etcd") {
            let mut etcd = EtcdDraft::default();
            read_fields(d, t, &ETCD_FIELDS, &mut etcd, "in [discovery] etcd");
            g.etcd = Some((etcd, v.span()));
        }
    }),
];

const ETCD_FIELDS: [Field<EtcdDraft>; 6] = [
    ("endpoints", |e, d, v| e.endpoints = texts(d, v)),
    ("prefix", |e, d, v| {
        e.prefix = string(d, v).map(|p| p.trim_matches('/').to_string())
    }),
    ("ttl", |e, d, v| match duration(d, v) {
        Some(t) if t < Duration::from_secs(1) => d.error(
            v.span(),
            "ttl must be at least 1s (keep-alives go every ttl/3)",
        ),
        t => e.ttl = t,
    }),
    ("username", |e, d, v| e.username = text(d, v)),
    ("password-file", |e, d, v| e.password_file = text(d, v)),
    ("tls", |e, d, v| {
        if let Some(t) = table(d, v, "tls") {
            let mut tls = TlsDraft::default();
            read_fields(d, t, &TLS_FIELDS, &mut tls, "in [discovery] etcd tls");
            e.tls = Some((tls, v.span()));
        }
    }),
];

/// `etcd = { tls = { ca, cert, key } }` as read.
#[derive(Default)]
struct TlsDraft {
    ca: Option<Text>,
    cert: Option<Text>,
    key: Option<Text>,
}

const TLS_FIELDS: [Field<TlsDraft>; 3] = [
    ("ca", |t, d, v| t.ca = text(d, v)),
    ("cert", |t, d, v| t.cert = text(d, v)),
    ("key", |t, d, v| t.key = text(d, v)),
];

/// The files of a `tls` table, checked by loading them.
fn tls_files(
    d: &mut Diagnostics<'_>,
    draft: TlsDraft,
    span: std::ops::Range<usize>,
    vars: &dyn super::interp::Vars,
    base_dir: &Path,
) -> Option<super::EtcdTls> {
    let mut path = |t: Option<Text>| t.and_then(|t| t.expand(d, vars)).map(|p| base_dir.join(p));
    let (ca, cert, key) = (path(draft.ca), path(draft.cert), path(draft.key));
    let Some(ca) = ca else {
        d.error(
            span,
            "tls needs `ca`, the CA certificate(s) that signed etcd's (PEM)",
        );
        return None;
    };
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            d.error(
                span,
                "tls takes `cert` and `key` together (the client certificate and its key)",
            );
            return None;
        }
    };
    let files = super::EtcdTls { ca, client };
    if let Some(e) = files.load().err() {
        d.error(span, format!("tls: {e}"));
        return None;
    }
    Some(files)
}

/// "http://host:port", "https://host:port" or "host:port" -> ("host:port",
/// whether it said https).
fn etcd_endpoint(url: &str) -> Result<(String, bool), String> {
    let (addr, https) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://").unwrap_or(url), false),
    };
    let addr = addr.trim_end_matches('/');
    match split_host_port(addr) {
        Some(_) if !addr.contains('/') => Ok((addr.to_string(), https)),
        _ => Err(format!(
            "{url:?} is not an etcd endpoint: use http://host:port (or https:// with tls)"
        )),
    }
}

fn parse_discovery(
    d: &mut Diagnostics<'_>,
    t: &DeTable<'_>,
    host: &HostEnv,
    base_dir: &Path,
) -> Discovery {
    let mut draft = DiscoveryDraft::default();
    read_fields(d, t, &DISCOVERY_FIELDS, &mut draft, "in [discovery]");
    let vars = |n: &str| host.get(n).map(str::to_string);
    let mut out = Discovery::default();
    if let Some(advertise) = draft.advertise.and_then(|t| t.expand(d, &vars)) {
        // An interface's name stands for its address.
        out.advertise = super::host::interface_address(&advertise).unwrap_or(advertise);
    }
    out.host_id = draft.host_id.and_then(|t| t.expand(d, &vars));
    match (draft.etcd_backend, draft.etcd) {
        (Some(span), None) => d.error(
            span,
            "backend = \"etcd\" needs an etcd table: etcd = { endpoints = [\"http://127.0.0.1:2379\"] }",
        ),
        (None, Some((_, span))) => d.error(
            span,
            "an etcd table is given but the backend is local: add backend = \"etcd\"",
        ),
        (Some(_), Some((etcd, span))) => {
            out.etcd = etcd_settings(d, etcd, span, &vars, base_dir);
        }
        (None, None) => {}
    }
    out
}

fn etcd_settings(
    d: &mut Diagnostics<'_>,
    draft: EtcdDraft,
    span: std::ops::Range<usize>,
    vars: &dyn super::interp::Vars,
    base_dir: &Path,
) -> Option<super::Etcd> {
    let asked_tls = draft.tls.is_some();
    let tls = draft
        .tls
        .and_then(|(t, at)| tls_files(d, t, at, vars, base_dir));
    let mut endpoints = Vec::new();
    for text in draft.endpoints {
        let at = text.span.clone();
        match text.expand(d, vars).map(|url| etcd_endpoint(&url)) {
            Some(Ok((_, true))) if !asked_tls => d.error(
                at,
                "an https:// endpoint needs a tls table: tls = { ca = \"ca.pem\" }",
            ),
            Some(Ok((addr, _))) => endpoints.push(addr),
            Some(Err(why)) => d.error(at, why),
            None => {}
        }
    }
    if endpoints.is_empty() {
        d.error(
            span.clone(),
            "etcd needs at least one endpoint: endpoints = [\"http://127.0.0.1:2379\"]",
        );
        return None;
    }
    if asked_tls && tls.is_none() {
        return None;
    }
    let username = draft.username.and_then(|t| t.expand(d, vars));
    let password = match (&username, draft.password_file) {
        (Some(_), Some(file)) => {
            let path = base_dir.join(file.expand(d, vars)?);
            match super::files::read_to_string(&path) {
                Ok(text) => Some(text.trim_end_matches(['\r', '\n']).to_string()),
                Err(e) => {
                    d.error(file.span, format!("cannot read {}: {e}", path.display()));
                    return None;
                }
            }
        }
        (Some(_), None) => {
            d.error(span, "etcd username is given without a password-file");
            return None;
        }
        (None, Some(file)) => {
            d.error(file.span, "etcd password-file is given without a username");
            return None;
        }
        (None, None) => None,
    };
    let defaults = super::Etcd::default();
    Some(super::Etcd {
        endpoints,
        prefix: draft.prefix.unwrap_or(defaults.prefix),
        ttl: draft.ttl.unwrap_or(defaults.ttl),
        credentials: username.zip(password),
        tls,
    })
}

/// The merged document as TOML text (`corral config`): strings interpolated
/// from corral's environment, a service's own variables kept as written,
/// `$` escaped so that the text reads back the same; `env` values that look
/// secret masked unless `unmask`.
pub fn render_merged(sources: &[Source], host: &HostEnv, unmask: bool) -> String {
    let mut merged: Option<DeTable<'_>> = None;
    for (_, source) in sources {
        let (root, _) = DeTable::parse_recoverable(source);
        match &mut merged {
            None => merged = Some(root.into_inner()),
            Some(into) => merge(into, root.into_inner()),
        }
    }
    let mut root = merged.unwrap_or_default();
    root.remove("include");
    let r = Render { host, unmask };
    let mut out = String::new();
    r.table(&mut out, &[], &root);
    out.trim_start().to_string()
}

struct Render<'a> {
    host: &'a HostEnv,
    unmask: bool,
}

/// Stands for `${NAME}` of a service's own variables while `$` is escaped.
const OWN_MARK: char = '\u{1}';

impl Render<'_> {
    /// `[a.b]` headers for the top level, each service, and `[corral]` /
    /// `[discovery]`; inline tables below that.
    fn table(&self, out: &mut String, path: &[&str], t: &DeTable<'_>) {
        let header_below = |key: &str| path.is_empty() || (path == ["services"] && !key.is_empty());
        for (key, value) in t.iter() {
            let key = key.get_ref().as_ref();
            if matches!(value.get_ref(), DeValue::Table(_)) && header_below(key) {
                continue;
            }
            out.push_str(&format!("{} = ", bare_key(key)));
            self.value(out, path, key, value.get_ref());
            out.push('\n');
        }
        for (key, value) in t.iter() {
            let key = key.get_ref().as_ref();
            let DeValue::Table(inner) = value.get_ref() else {
                continue;
            };
            if !header_below(key) {
                continue;
            }
            let mut sub: Vec<&str> = path.to_vec();
            sub.push(key);
            let has_scalars = inner
                .iter()
                .any(|(_, v)| !matches!(v.get_ref(), DeValue::Table(_)))
                || sub.len() >= 2;
            if has_scalars {
                let header: Vec<String> = sub.iter().map(|k| bare_key(k)).collect();
                out.push_str(&format!("\n[{}]\n", header.join(".")));
            }
            self.table(out, &sub, inner);
        }
    }

    fn value(&self, out: &mut String, path: &[&str], key: &str, v: &DeValue<'_>) {
        match v {
            DeValue::String(s) => {
                let secret = path.last() == Some(&"env");
                let text = self.interpolate(s);
                let text = match (secret && !self.unmask, super::env::masked(key, &text)) {
                    (true, Some(masked)) => masked,
                    _ => text,
                };
                out.push_str(&quote(&text));
            }
            DeValue::Integer(i) => out.push_str(i.as_str()),
            DeValue::Float(f) => out.push_str(f.as_str()),
            DeValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            DeValue::Datetime(d) => out.push_str(&d.to_string()),
            DeValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.value(out, path, key, item.get_ref());
                }
                out.push(']');
            }
            DeValue::Table(t) => {
                let mut sub: Vec<&str> = path.to_vec();
                sub.push(key);
                out.push_str("{ ");
                for (i, (k, v)) in t.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let k = k.get_ref().as_ref();
                    out.push_str(&format!("{} = ", bare_key(k)));
                    self.value(out, &sub, k, v.get_ref());
                }
                out.push_str(" }");
            }
        }
    }

    /// `${VAR}` from corral's environment; a service's own variables stay.
    fn interpolate(&self, raw: &str) -> String {
        let own = ["PORT", "CORRAL_SERVICE", "CORRAL_REPLICA"];
        let vars = |n: &str| {
            if own.contains(&n) {
                Some(format!("{OWN_MARK}{n}{OWN_MARK}"))
            } else {
                self.host.get(n).map(str::to_string)
            }
        };
        let expanded =
            super::interp::expand(raw, &vars).map_or_else(|_| raw.to_string(), |e| e.value);
        // What is left is literal: `$` escaped, the own variables restored.
        let mut out = expanded.replace('$', "$$");
        for n in own {
            out = out.replace(&format!("{OWN_MARK}{n}{OWN_MARK}"), &format!("${{{n}}}"));
        }
        out
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn bare_key(key: &str) -> String {
    if super::values::is_name(key) {
        key.to_string()
    } else {
        quote(key)
    }
}

/// A TOML basic string.
pub(super) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
