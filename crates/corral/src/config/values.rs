//! Readers of single TOML values (numbers, durations, signals, strings to be
//! interpolated...), each reporting a clear error at the value's position,
//! and the table walker that dispatches keys through a field table.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use nix::sys::signal::Signal;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::{suggestion, Diagnostics};
use super::interp::{self, Vars};
use super::{Condition, RestartPolicy};

pub type Value<'i> = Spanned<DeValue<'i>>;
pub type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

/// One key of a table and how it is read into `T`. The known keys of a
/// table are the names of its fields, so dispatch and suggestions agree.
pub type Field<T> = (&'static str, fn(&mut T, &mut Diagnostics<'_>, &Value<'_>));

/// Reads every key of `t` through `fields`; an unknown key is an error that
/// suggests the nearest field.
pub fn read_fields<T>(
    d: &mut Diagnostics<'_>,
    t: &DeTable<'_>,
    fields: &[Field<T>],
    out: &mut T,
    where_: &str,
) {
    for (key, v) in t.iter() {
        let name = key.get_ref().as_ref();
        match fields.iter().find(|(k, _)| *k == name) {
            Some((_, read)) => read(out, d, v),
            None => unknown_key(d, key, name, where_, fields.iter().map(|(k, _)| *k)),
        }
    }
}

/// A string of the file whose `${VAR}`s are expanded later, per instance.
#[derive(Debug, Clone)]
pub struct Text {
    pub raw: String,
    pub span: Range<usize>,
}

impl Text {
    /// Expands `${VAR}`s; an unset variable is a warning, a malformed
    /// reference an error.
    pub fn expand(&self, d: &mut Diagnostics<'_>, vars: &dyn Vars) -> Option<String> {
        match interp::expand(&self.raw, vars) {
            Ok(e) => {
                for name in e.unset {
                    d.warning(
                        self.span.clone(),
                        format!("${{{name}}} is not set; using an empty string"),
                    );
                }
                Some(e.value)
            }
            Err(e) => {
                d.error(self.span.clone(), e.to_string());
                None
            }
        }
    }
}

/// Expands every text; None if any fails.
pub fn expand_all(d: &mut Diagnostics<'_>, texts: &[Text], vars: &dyn Vars) -> Option<Vec<String>> {
    texts.iter().map(|t| t.expand(d, vars)).collect()
}

/// A string to be interpolated.
pub fn text(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Text> {
    string(d, v).map(|s| Text {
        raw: s.to_string(),
        span: v.span(),
    })
}

/// A string, or an array of strings, to be interpolated.
pub fn texts(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<Text> {
    match v.get_ref() {
        DeValue::String(_) => text(d, v).into_iter().collect(),
        DeValue::Array(items) => items.iter().filter_map(|item| text(d, item)).collect(),
        _ => {
            type_error(d, v, "a string or an array of strings");
            Vec::new()
        }
    }
}

/// A service, process type or profile name: letters, digits, `-` and `_`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c == '-' || c == '_' || c.is_ascii_alphanumeric())
}

/// Whether a program is a shell that runs its `-c` argument.
fn is_shell(program: &str) -> bool {
    let name = program.rsplit('/').next().unwrap_or(program);
    matches!(
        name,
        "sh" | "bash" | "dash" | "zsh" | "ash" | "ksh" | "busybox"
    )
}

/// `$NAME` not written `${NAME}` (nor `$$`): the shell's syntax, which
/// nothing expands in a command run without a shell.
fn bare_variable(word: &str) -> Option<&str> {
    let mut rest = word;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let len = after
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(after.len());
        if len > 0 && after.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic()) {
            return Some(&after[..len]);
        }
        rest = after;
    }
    None
}

/// Warnings for a command that will not do what it looks like: shell
/// syntax in a string command (no shell runs it), or `$VAR` in a command
/// that no shell expands.
fn lint_command(d: &mut Diagnostics<'_>, v: &Value<'_>, words: &[String], what: &str) {
    if words.first().is_some_and(|p| is_shell(p)) {
        return;
    }
    if let DeValue::String(s) = v.get_ref() {
        let operators = [";", "|", "&&", "||", ">", "<", "$(", "`", "&"];
        let keywords = ["while", "for", "if", "export", "cd"];
        let syntax = operators
            .iter()
            .find(|op| s.contains(**op))
            .copied()
            .or_else(|| {
                words
                    .first()
                    .map(String::as_str)
                    .filter(|w| keywords.contains(w))
            });
        if let Some(token) = syntax {
            d.warning(
                v.span(),
                format!(
                    "{what} {s:?} has shell syntax ({token:?}) but runs without a shell: \
                     write [\"sh\", \"-c\", {s:?}] for a shell to run it"
                ),
            );
            return;
        }
    }
    if let Some(name) = words.iter().find_map(|w| bare_variable(w)) {
        d.warning(
            v.span(),
            format!(
                "${name} in {what} is not expanded (no shell runs it): write ${{{name}}} for \
                 corral to expand it, or run it under [\"sh\", \"-c\", ...]"
            ),
        );
    }
}

/// A command: an array is argv as is; a string is split like a shell would,
/// without a shell. Each word is interpolated later.
pub fn argv(d: &mut Diagnostics<'_>, v: &Value<'_>, what: &str) -> Option<Vec<Text>> {
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
    if words.first().is_none_or(String::is_empty) {
        d.error(v.span(), format!("{what} is empty"));
        return None;
    }
    lint_command(d, v, &words, what);
    Some(
        words
            .into_iter()
            .map(|raw| Text {
                raw,
                span: v.span(),
            })
            .collect(),
    )
}

pub fn entries<'a, 'i>(
    d: &mut Diagnostics<'_>,
    v: &'a Value<'i>,
    what: &str,
) -> Vec<&'a Value<'i>> {
    match v.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        _ => {
            type_error(d, v, &format!("an array of {what}"));
            Vec::new()
        }
    }
}

pub fn string_list(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Vec<String> {
    entries(d, v, "strings")
        .into_iter()
        .filter_map(|s| string(d, s).map(str::to_string))
        .collect()
}

pub fn string_map(d: &mut Diagnostics<'_>, v: &Value<'_>) -> BTreeMap<String, String> {
    let Some(t) = table(d, v, "attrs") else {
        return BTreeMap::new();
    };
    t.iter()
        .filter_map(|(k, val)| string(d, val).map(|s| (k.get_ref().to_string(), s.to_string())))
        .collect()
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

pub fn size(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<u64> {
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

pub fn check_http_url(url: &str) -> Result<(), String> {
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

pub fn condition(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Condition> {
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

pub fn restart_policy(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<RestartPolicy> {
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

pub fn signal(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Signal> {
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

/// A duration as the command line and the API take it: "250ms", "10s",
/// "5m", or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write e.g. \"10\", \"250ms\", \"5m\")"))
}

/// A duration in the config: a string like "10s", or a bare number of
/// seconds (accepted, with a hint to write the unit).
pub fn duration(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Duration> {
    if let DeValue::Integer(i) = v.get_ref() {
        if let Ok(secs) = i.as_str().parse::<u64>() {
            d.warning(
                v.span(),
                format!("a bare number is taken as seconds: write \"{secs}s\" to say so"),
            );
            return Some(Duration::from_secs(secs));
        }
    }
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

pub fn uint(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<u32> {
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

pub fn boolean(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        _ => {
            type_error(d, v, "true or false");
            None
        }
    }
}

pub fn string<'a>(d: &mut Diagnostics<'_>, v: &'a Value<'_>) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            type_error(d, v, "a string");
            None
        }
    }
}

pub fn table<'a, 'i>(
    d: &mut Diagnostics<'_>,
    v: &'a Value<'i>,
    what: &str,
) -> Option<&'a DeTable<'i>> {
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

pub fn unknown_key<'k>(
    d: &mut Diagnostics<'_>,
    key: &Key<'_>,
    name: &str,
    where_: &str,
    known: impl IntoIterator<Item = &'k str>,
) {
    d.error(
        key.span(),
        format!("unknown key `{name}` {where_}{}", suggestion(name, known)),
    );
}

pub fn type_error(d: &mut Diagnostics<'_>, v: &Value<'_>, expected: &str) {
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

/// Keeps the default when the value was bad (its error is already reported).
pub fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
