//! What a service speaks with its supervisor, as systemd defines it: the
//! notify socket (`notify`, `watchdog`), listening sockets corral holds
//! for it (`sockets`), and the order of an update (`update`).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use toml::de::DeValue;

use super::diag::Diagnostics;
use super::host::HostChecks;
use super::interp::Vars;
use super::values::{read_fields, string, text, type_error, uint, Field, Text, Value};

/// The most sockets a service may hold (fds 3 .. 3 + this).
pub const MAX_SOCKETS: usize = 32;

/// A service's protocols, kept boxed in the service (most speak none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocols {
    /// It gets NOTIFY_SOCKET and corral reads what it sends there.
    pub notify: bool,
    /// It must send WATCHDOG=1 at least this often.
    pub watchdog: Option<Duration>,
    /// Sent when the watchdog deadline passes (then it is restarted).
    pub watchdog_signal: Signal,
    /// Listening sockets corral binds and passes as fds 3.. (LISTEN_FDS);
    /// the replicas of a service share them.
    pub sockets: Vec<Listen>,
    pub update: Update,
}

/// One socket of `sockets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listen {
    pub address: ListenAddress,
    /// Its LISTEN_FDNAMES entry.
    pub name: String,
    pub backlog: u32,
    /// Unix sockets: the file's mode and owner (uid, gid).
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "tcp://{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// What a restart or a changed definition does first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Update {
    /// Stop the running instance, then start the new one.
    #[default]
    StopFirst,
    /// Start the new instance, wait until it is ready, then stop the old one.
    StartFirst,
}

/// The keys as read, before the service is expanded.
#[derive(Debug, Clone, Default)]
pub struct ProtocolsDraft {
    pub notify: Option<bool>,
    pub watchdog: Option<(Duration, Range<usize>)>,
    pub watchdog_signal: Option<Signal>,
    pub sockets: Vec<SocketDraft>,
    pub update: Option<Update>,
}

#[derive(Debug, Clone, Default)]
pub struct SocketDraft {
    listen: Option<Text>,
    name: Option<String>,
    backlog: Option<u32>,
    mode: Option<u32>,
    owner: Option<Text>,
    span: Range<usize>,
}

const SOCKET_FIELDS: [Field<SocketDraft>; 5] = [
    ("listen", |s, d, v| s.listen = text(d, v)),
    ("name", read_socket_name),
    ("backlog", |s, d, v| match uint(d, v) {
        Some(0) => d.error(v.span(), "backlog must be at least 1"),
        n => s.backlog = n,
    }),
    ("mode", read_mode),
    ("owner", |s, d, v| s.owner = text(d, v)),
];

fn read_socket_name(s: &mut SocketDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let Some(name) = string(d, v) else { return };
    // LISTEN_FDNAMES is a colon-separated list of at most 255 characters each.
    if name.is_empty()
        || name.len() > 255
        || name.contains(':')
        || name.chars().any(char::is_control)
    {
        d.error(
            v.span(),
            format!("a socket name is 1-255 characters, no ':' nor control characters: {name:?}"),
        );
        return;
    }
    s.name = Some(name.to_string());
}

/// `mode = "0660"` (octal, as chmod takes it) or a number.
fn read_mode(s: &mut SocketDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let mode = match v.get_ref() {
        DeValue::String(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8).ok(),
        DeValue::Integer(_) => uint(d, v),
        _ => None,
    };
    match mode {
        Some(m) if m <= 0o777 => s.mode = Some(m),
        _ => d.error(v.span(), "mode is an octal file mode such as \"0660\""),
    }
}

/// `notify = true`.
pub fn read_notify(p: &mut ProtocolsDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.notify = super::values::boolean(d, v);
}

/// `watchdog = "10s"`: at least 10ms (the service pings at half of it).
pub fn read_watchdog(p: &mut ProtocolsDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    match super::values::duration(d, v) {
        Some(t) if t < Duration::from_millis(10) => {
            d.error(v.span(), "watchdog must be at least 10ms")
        }
        Some(t) => p.watchdog = Some((t, v.span())),
        None => {}
    }
}

pub fn read_watchdog_signal(p: &mut ProtocolsDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    p.watchdog_signal = super::values::signal(d, v);
}

/// `update = "start-first"` or `"stop-first"`.
pub fn read_update(p: &mut ProtocolsDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    match string(d, v) {
        Some("stop-first") => p.update = Some(Update::StopFirst),
        Some("start-first") => p.update = Some(Update::StartFirst),
        Some(other) => d.error(
            v.span(),
            format!("update is \"stop-first\" or \"start-first\", found {other:?}"),
        ),
        None => {}
    }
}

/// `sockets = ["tcp://0.0.0.0:8080", { listen = "unix:///run/app.sock", mode = "0660" }]`.
pub fn read_sockets(p: &mut ProtocolsDraft, d: &mut Diagnostics<'_>, v: &Value<'_>) {
    let DeValue::Array(items) = v.get_ref() else {
        type_error(d, v, "a list of addresses such as [\"tcp://0.0.0.0:8080\"]");
        return;
    };
    if items.len() > MAX_SOCKETS {
        d.error(
            v.span(),
            format!(
                "a service holds at most {MAX_SOCKETS} sockets, found {}",
                items.len()
            ),
        );
        return;
    }
    for item in items {
        let mut draft = SocketDraft {
            span: item.span(),
            ..SocketDraft::default()
        };
        match item.get_ref() {
            DeValue::String(_) => draft.listen = text(d, item),
            DeValue::Table(t) => {
                read_fields(d, t, &SOCKET_FIELDS, &mut draft, "in a socket");
                if draft.listen.is_none() {
                    d.error(
                        item.span(),
                        "a socket needs `listen` (such as \"tcp://0.0.0.0:8080\")",
                    );
                    continue;
                }
            }
            _ => {
                type_error(d, item, "an address or a { listen, name, backlog } table");
                continue;
            }
        }
        p.sockets.push(draft);
    }
}

/// Parses `tcp://HOST:PORT` (an IP address, v6 in brackets) or
/// `unix://PATH` (relative to `base`).
pub fn parse_address(text: &str, base: &Path) -> Result<ListenAddress, String> {
    if let Some(addr) = text.strip_prefix("tcp://") {
        return addr
            .parse::<SocketAddr>()
            .map(ListenAddress::Tcp)
            .map_err(|_| {
                format!(
                    "{text:?} is not tcp://IP:PORT (an IP address, [v6] in brackets, and a port)"
                )
            });
    }
    if let Some(path) = text.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(format!("{text:?} has no path"));
        }
        let path = base.join(path);
        // sockaddr_un holds 107 bytes and a NUL.
        if path.as_os_str().len() > 107 {
            return Err(format!(
                "the socket path {} is longer than 107 bytes",
                path.display()
            ));
        }
        return Ok(ListenAddress::Unix(path));
    }
    let scheme = text.split("://").next().filter(|_| text.contains("://"));
    Err(match scheme {
        Some(s) => format!("unknown socket scheme {s:?} in {text:?}: use tcp:// or unix://"),
        None => format!("{text:?} is not an address: use tcp://IP:PORT or unix://PATH"),
    })
}

impl ProtocolsDraft {
    /// The protocols of one service; None when it speaks none.
    /// `${VAR}`s in addresses and owners are expanded with `vars`.
    pub fn finish(
        &self,
        d: &mut Diagnostics<'_>,
        vars: &dyn Vars,
        base: &Path,
        checks: &mut HostChecks,
        service: &str,
    ) -> Option<Box<Protocols>> {
        let mut sockets = Vec::with_capacity(self.sockets.len());
        for (i, s) in self.sockets.iter().enumerate() {
            let Some(text) = s.listen.as_ref().and_then(|t| t.expand(d, vars)) else {
                continue;
            };
            let address = match parse_address(&text, base) {
                Ok(a) => a,
                Err(message) => {
                    d.error(s.span.clone(), message);
                    continue;
                }
            };
            if sockets.iter().any(|l: &Listen| l.address == address) {
                d.error(s.span.clone(), format!("{address} is listed twice"));
                continue;
            }
            let unix = matches!(address, ListenAddress::Unix(_));
            if !unix && (s.mode.is_some() || s.owner.is_some()) {
                d.error(
                    s.span.clone(),
                    "mode and owner apply to unix:// sockets only",
                );
            }
            let owner = s.owner.as_ref().and_then(|t| {
                let spec = t.expand(d, vars)?;
                checks
                    .user(d, &spec, t.span.clone(), service)
                    .map(|id| (id.uid, id.gid))
            });
            sockets.push(Listen {
                address,
                name: s.name.clone().unwrap_or_else(|| {
                    if i == 0 {
                        service.to_string()
                    } else {
                        format!("{service}-{i}")
                    }
                }),
                backlog: s.backlog.unwrap_or(1024),
                mode: s.mode,
                owner,
            });
        }
        let protocols = Protocols {
            // A watchdog is pinged through the notify socket.
            notify: self.notify.unwrap_or(false) || self.watchdog.is_some(),
            watchdog: self.watchdog.as_ref().map(|(t, _)| *t),
            watchdog_signal: self.watchdog_signal.unwrap_or(Signal::SIGABRT),
            sockets,
            update: self.update.unwrap_or_default(),
        };
        let none = Protocols {
            notify: false,
            watchdog: None,
            watchdog_signal: Signal::SIGABRT,
            sockets: Vec::new(),
            update: Update::StopFirst,
        };
        (protocols != none).then(|| Box::new(protocols))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let base = Path::new("/srv");
        assert_eq!(
            parse_address("tcp://127.0.0.1:80", base),
            Ok(ListenAddress::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            parse_address("tcp://[::]:8443", base),
            Ok(ListenAddress::Tcp("[::]:8443".parse().unwrap()))
        );
        assert_eq!(
            parse_address("unix://app.sock", base),
            Ok(ListenAddress::Unix("/srv/app.sock".into()))
        );
        assert_eq!(
            parse_address("unix:///run/app.sock", base),
            Ok(ListenAddress::Unix("/run/app.sock".into()))
        );
        let err = parse_address("udp://0.0.0.0:53", base).unwrap_err();
        assert!(err.contains("unknown socket scheme \"udp\""), "{err}");
        let err = parse_address("tcp://localhost:80", base).unwrap_err();
        assert!(err.contains("tcp://IP:PORT"), "{err}");
        assert!(parse_address("0.0.0.0:80", base).is_err());
        assert!(parse_address("tcp://0.0.0.0:99999", base).is_err());
    }
}
