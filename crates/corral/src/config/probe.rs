//! The `ready` and `health` tables: read once, expanded per instance.

use std::ops::Range;
use std::time::Duration;

use toml::de::DeValue;

use super::diag::Diagnostics;
use super::interp::Vars;
use super::values::{
    argv, check_http_url, duration, expand_all, read_fields, set, split_host_port, string, table,
    text, uint, Field, Text, Value,
};
use super::{Health, Probe, Readiness};

/// A probe as written, its strings not yet interpolated.
#[derive(Debug, Clone)]
enum Check {
    Exec(Vec<Text>),
    Tcp(Text),
    Http(Text),
    Log(String),
    NotifyFd(i32),
    Notify,
}

/// A `ready` or `health` table as read.
#[derive(Debug, Clone, Default)]
pub struct ProbeDraft {
    check: Option<Check>,
    /// Every probe kind given (exactly one is allowed).
    kinds: Vec<&'static str>,
    status: Vec<u16>,
    status_span: Option<Range<usize>>,
    initial_delay: Duration,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    start_timeout: Option<Duration>,
    retries: Option<u32>,
}

const READY_FIELDS: [Field<ProbeDraft>; 11] = [
    ("exec", read_exec),
    ("tcp", read_tcp),
    ("http", read_http),
    ("status", read_status),
    ("log", read_log),
    ("notify-fd", read_notify_fd),
    ("notify", read_notify),
    ("initial-delay", read_initial_delay),
    ("interval", read_interval),
    ("timeout", read_timeout),
    ("start-timeout", read_start_timeout),
];

const HEALTH_FIELDS: [Field<ProbeDraft>; 8] = [
    ("exec", read_exec),
    ("tcp", read_tcp),
    ("http", read_http),
    ("status", read_status),
    ("initial-delay", read_initial_delay),
    ("interval", read_interval),
    ("timeout", read_timeout),
    ("retries", read_retries),
];

fn read_exec(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.kinds.push("exec");
    p.check = argv(d, v, "exec").map(Check::Exec);
}

fn read_tcp(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.kinds.push("tcp");
    p.check = text(d, v)
        .filter(|t| literal_ok(d, t, check_tcp))
        .map(Check::Tcp);
}

fn read_http(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.kinds.push("http");
    p.check = text(d, v)
        .filter(|t| literal_ok(d, t, check_http_url))
        .map(Check::Http);
}

/// A text without `${...}` is checked as soon as it is read, so its error
/// comes with every other one; one with variables is checked once expanded.
fn literal_ok(d: &mut Diagnostics<'_>, t: &Text, check: fn(&str) -> Result<(), String>) -> bool {
    if t.raw.contains('$') {
        return true;
    }
    match check(&t.raw) {
        Ok(()) => true,
        Err(message) => {
            d.error(t.span.clone(), message);
            false
        }
    }
}

fn check_tcp(addr: &str) -> Result<(), String> {
    match split_host_port(addr) {
        Some(_) => Ok(()),
        None => Err(format!("expected \"host:port\", found {addr:?}")),
    }
}

fn read_status(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.status_span = Some(v.span());
    let mut code = |v: &Value<'_>| match uint(d, v) {
        Some(n @ 100..=599) => u16::try_from(n).ok(),
        Some(n) => {
            let message = format!("an HTTP status code is between 100 and 599, found {n}");
            d.error(v.span(), message);
            None
        }
        None => None,
    };
    p.status = match v.get_ref() {
        DeValue::Array(items) => items.iter().filter_map(&mut code).collect(),
        _ => code(v).into_iter().collect(),
    };
}

fn read_log(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.kinds.push("log");
    p.check = string(d, v).and_then(|re| match regex_lite::Regex::new(re) {
        Ok(_) => Some(Check::Log(re.to_string())),
        Err(e) => {
            d.error(v.span(), format!("invalid regex: {e}"));
            None
        }
    });
}

fn read_notify_fd(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.kinds.push("notify-fd");
    p.check = uint(d, v).and_then(|fd| {
        if (3..1024).contains(&fd) {
            i32::try_from(fd).ok().map(Check::NotifyFd)
        } else {
            let message =
                format!("notify-fd must be between 3 and 1023 (0-2 are stdio), found {fd}");
            d.error(v.span(), message);
            None
        }
    });
}

/// `notify = true`: READY=1 on NOTIFY_SOCKET (sd_notify).
fn read_notify(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    match super::values::boolean(d, v) {
        Some(true) => {
            p.kinds.push("notify");
            p.check = Some(Check::Notify);
        }
        Some(false) => d.error(
            v.span(),
            "leave `notify` out instead of setting it to false",
        ),
        None => {}
    }
}

/// Readiness by READY=1 with the defaults: `ready = "notify"`, or a
/// service with `notify = true` and no `ready`.
pub fn notify_readiness() -> Readiness {
    ProbeDraft {
        check: Some(Check::Notify),
        ..ProbeDraft::default()
    }
    .finish_readiness(Probe::Notify)
}

fn read_initial_delay(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    set(&mut p.initial_delay, duration(d, v));
}

/// Probes run this often at most: "0s" would run one after another.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

fn read_interval(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    match duration(d, v) {
        Some(i) if i < MIN_INTERVAL => d.error(v.span(), "interval must be at least 10ms"),
        i => p.interval = i,
    }
}

fn read_timeout(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.timeout = duration(d, v);
}

fn read_start_timeout(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.start_timeout = duration(d, v);
}

fn read_retries(p: &mut ProbeDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    match uint(d, v) {
        Some(0) => d.error(v.span(), "retries must be at least 1"),
        n => p.retries = n,
    }
}

/// Reads a `ready` (`health` = false) or `health` table.
pub fn read(d: &mut Diagnostics<'_>, v: &Value<'_>, health: bool) -> Option<ProbeDraft> {
    let (what, fields): (&str, &[Field<ProbeDraft>]) = if health {
        ("health", &HEALTH_FIELDS)
    } else {
        ("ready", &READY_FIELDS)
    };
    if let (false, DeValue::String(s)) = (health, v.get_ref()) {
        if s == "notify" {
            return Some(ProbeDraft {
                check: Some(Check::Notify),
                kinds: vec!["notify"],
                ..ProbeDraft::default()
            });
        }
        d.error(
            v.span(),
            format!(
                "ready is a table such as {{ tcp = \"127.0.0.1:80\" }}, or \"notify\"; found {s:?}"
            ),
        );
        return None;
    }
    let t = table(d, v, what)?;
    let mut p = ProbeDraft::default();
    read_fields(d, t, fields, &mut p, &format!("in {what}"));
    match p.kinds.as_slice() {
        [] => {
            let kinds: Vec<&str> = fields
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| matches!(*k, "exec" | "tcp" | "http" | "log" | "notify-fd" | "notify"))
                .collect();
            d.error(
                v.span(),
                format!("{what} needs one of: {}", kinds.join(", ")),
            );
        }
        [_] => {}
        many => d.error(
            v.span(),
            format!("{what} takes one probe, found {}", many.join(" and ")),
        ),
    }
    if let (Some(span), false) = (&p.status_span, matches!(p.check, Some(Check::Http(_)))) {
        d.error(span.clone(), "`status` only applies to an http probe");
    }
    Some(p)
}

impl ProbeDraft {
    /// The probe of one instance, its strings interpolated and checked.
    fn probe(&self, d: &mut Diagnostics<'_>, vars: &dyn Vars) -> Option<Probe> {
        match self.check.as_ref()? {
            Check::Exec(words) => expand_all(d, words, vars).map(Probe::Exec),
            Check::Tcp(addr) => {
                let expanded = addr.expand(d, vars)?;
                if let Err(message) = check_tcp(&expanded) {
                    d.error(addr.span.clone(), message);
                    return None;
                }
                Some(Probe::Tcp(expanded))
            }
            Check::Http(url) => {
                let expanded = url.expand(d, vars)?;
                if let Err(message) = check_http_url(&expanded) {
                    d.error(url.span.clone(), message);
                    return None;
                }
                Some(Probe::Http {
                    url: expanded,
                    status: self.status.clone(),
                })
            }
            Check::Log(re) => Some(Probe::Log(re.clone())),
            Check::NotifyFd(fd) => Some(Probe::NotifyFd(*fd)),
            Check::Notify => Some(Probe::Notify),
        }
    }

    pub fn readiness(&self, d: &mut Diagnostics<'_>, vars: &dyn Vars) -> Option<Readiness> {
        let probe = self.probe(d, vars)?;
        Some(self.finish_readiness(probe))
    }

    fn finish_readiness(&self, probe: Probe) -> Readiness {
        Readiness {
            probe,
            initial_delay: self.initial_delay,
            interval: self.interval.unwrap_or(Duration::from_millis(500)),
            timeout: self.timeout.unwrap_or(Duration::from_secs(1)),
            start_timeout: self.start_timeout.unwrap_or(Duration::from_secs(60)),
        }
    }

    pub fn health(&self, d: &mut Diagnostics<'_>, vars: &dyn Vars) -> Option<Health> {
        Some(Health {
            probe: self.probe(d, vars)?,
            initial_delay: self.initial_delay,
            interval: self.interval.unwrap_or(Duration::from_secs(10)),
            timeout: self.timeout.unwrap_or(Duration::from_secs(5)),
            retries: self.retries.unwrap_or(3),
        })
    }
}
