//! The control API of corral, version 1: the types the daemon and the CLI exchange.
//!
//! Transport: HTTP/1.1 over a Unix socket, JSON bodies, every path under
//! [`PREFIX`]. Streams (`logs?follow=true`, `events`) are newline-delimited
//! JSON, one object per line. Errors come as [`ErrorBody`] with a 4xx/5xx
//! status. The routes are documented in `docs/api.md` of the repository.
//!
//! Compatibility: fields are only ever added within a version; a client
//! ignores fields it does not know, and optional fields may be absent.

use serde::{Deserialize, Serialize};

/// The API version this crate describes.
pub const API_VERSION: u32 = 1;

/// Every route starts with this.
pub const PREFIX: &str = "/v1";

/// Largest request body the daemon accepts; larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// The most instances one service may have (`replicas` in the file, `scale`
/// through the API); more is refused with a clear error.
pub const MAX_REPLICAS: u32 = 1024;

/// `GET /v1/version`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub api: u32,
    pub corral: String,
    /// The config file this daemon serves (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The daemon's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When it started, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
}

/// Where a service instance is in its lifecycle (docs/lifecycle.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Waiting for its dependencies, its endpoints, or boot.
    Waiting,
    /// A process is being spawned.
    Launching,
    /// The pre step runs.
    Pre,
    /// It runs but is not ready yet.
    Starting,
    /// It runs and is ready.
    Running,
    /// The stop signal was sent; SIGKILL follows at stop-timeout.
    Stopping,
    /// The post step runs.
    Post,
    /// Waiting to be restarted.
    Backoff,
    /// A oneshot that exited 0.
    Completed,
    /// Ended cleanly and not restarted.
    Exited,
    /// Ended for good with a failure.
    Failed,
    /// Never started because a dependency failed.
    Blocked,
    /// Stopped on request or at shutdown.
    Stopped,
    /// A job between runs, waiting for its next tick.
    Scheduled,
    /// A state a newer daemon knows and this client does not.
    #[serde(other)]
    Unknown,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Waiting => "waiting",
            ServiceState::Launching => "launching",
            ServiceState::Pre => "pre",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Stopping => "stopping",
            ServiceState::Post => "post",
            ServiceState::Backoff => "backoff",
            ServiceState::Completed => "completed",
            ServiceState::Exited => "exited",
            ServiceState::Failed => "failed",
            ServiceState::Blocked => "blocked",
            ServiceState::Stopped => "stopped",
            ServiceState::Scheduled => "scheduled",
            ServiceState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/services/{name}/{action}`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Start, Action::Stop, Action::Restart];

    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }

    pub fn from_segment(segment: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == segment)
    }
}

/// One service instance as `corral ps` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The instance: the service's name, or `name.N` for replica N.
    pub name: String,
    /// The service as named in the config (the same as `name` without replicas).
    #[serde(default)]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    pub state: ServiceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Seconds since the current process started (running or starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<f64>,
    pub restarts: u32,
    /// How the last run ended, e.g. "exit code 1" or "signal SIGKILL".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The last run's exit code (128 + signal when killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Why its program could not be run at all (not found, not
    /// executable): it failed at once instead of restarting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Passed readiness (or has no readiness probe) and runs.
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    pub oneshot: bool,
    /// "always", "on-failure" or "never".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// Set for a job (a service with a schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStatus>,
    /// What its processes use, read from /proc when asked for
    /// (`?resources=true`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// What the service last said of itself on its notify socket (STATUS=).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Notify messages ignored: from processes outside the instance,
    /// malformed, oversized or unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notify_ignored: u64,
    /// The listening sockets corral holds for it (`tcp://...`, `unix://...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an instance's processes use: its main process and every process
/// in its session (what it forked, however deep), summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU time of every run of the instance since corral started it, its
    /// ended processes included: it only grows.
    pub cpu_seconds: f64,
    /// Share of one CPU (100 = one core busy) since the daemon last read
    /// this process, if it did in the last minute, else over the process's
    /// life (as ps(1)); absent while nothing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Resident memory, summed over the processes (shared pages count once
    /// per process, as in `ps`).
    pub rss_bytes: u64,
    pub processes: u32,
    /// Open file descriptors, summed over the processes.
    pub fds: u32,
}

/// A job's schedule and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The pattern as written in the config.
    pub schedule: String,
    /// The IANA name of the zone the pattern is read in.
    pub timezone: String,
    /// "skip", "queue" or "replace".
    pub overlap: String,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<JobRun>,
    /// When the next tick is due (seconds since the Unix epoch); absent
    /// when none will come (stopped, `@reboot`, break glass, shutdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<f64>,
    /// A run is queued to follow the current one (`overlap = "queue"`).
    #[serde(default)]
    pub queued: bool,
}

/// One finished run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    /// When it started (seconds since the Unix epoch).
    pub started: f64,
    pub duration_secs: f64,
    /// How it ended, e.g. "exit code 0" or "signal SIGTERM".
    pub result: String,
    /// The exit code (128 + signal when killed).
    pub exit_code: i32,
}

impl ServiceStatus {
    /// Whether the state is one a `start` aims for.
    pub fn is_up(&self) -> bool {
        use ServiceState as S;
        match self.state {
            S::Running | S::Completed | S::Scheduled => true,
            S::Exited => self.last_exit_code == Some(0),
            S::Waiting | S::Launching | S::Pre | S::Starting | S::Stopping | S::Post => false,
            S::Backoff | S::Failed | S::Blocked | S::Stopped | S::Unknown => false,
        }
    }

    /// Whether the state means a start did not succeed.
    pub fn is_down_for_good(&self) -> bool {
        use ServiceState as S;
        match self.state {
            S::Failed | S::Blocked | S::Stopped | S::Backoff => true,
            S::Exited => self.last_exit_code != Some(0),
            S::Waiting | S::Launching | S::Pre | S::Starting | S::Running => false,
            S::Stopping | S::Post | S::Completed | S::Scheduled | S::Unknown => false,
        }
    }

    /// Whether the service has no process and nothing scheduled.
    pub fn is_stopped(&self) -> bool {
        use ServiceState as S;
        match self.state {
            S::Stopped | S::Failed | S::Blocked | S::Exited | S::Completed => true,
            S::Waiting | S::Launching | S::Pre | S::Starting | S::Running => false,
            S::Stopping | S::Post | S::Backoff | S::Scheduled | S::Unknown => false,
        }
    }
}

/// `GET /v1/services/{name}/exec`: how the service's process is run, for
/// `corral exec` and `corral run` (which run a command the same way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The service's command, as it is run.
    pub command: Vec<String>,
    /// Its whole environment, discovery variables included.
    pub env: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user it runs as, when not corral's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ExecUser>,
    /// The instances it declares in depends-on (`corral run` starts them).
    #[serde(default)]
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// What the health probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// None until the first check.
    pub healthy: Option<bool>,
    /// Consecutive failures.
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// `GET /v1/services`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
    /// How discovery across hosts is doing; absent with the one-host backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryStatus>,
    /// Services `corral scale` took to 0 instances: still there, none listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled_to_zero: Vec<String>,
}

/// The state of a discovery backend that spans hosts (etcd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    pub backend: String,
    /// Since when (seconds since the Unix epoch) the backend cannot be
    /// reached; absent while it can. Meanwhile the last known endpoints stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_since: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/services/{name}/signal`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// A name such as "SIGHUP" or "HUP", or a number (as a JSON number or a string).
    #[serde(deserialize_with = "name_or_number")]
    pub signal: String,
}

/// A signal given as a name or as a number: kept as text either way.
fn name_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct NameOrNumber;
    impl serde::de::Visitor<'_> for NameOrNumber {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a signal name or number")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<String, E> {
            Ok(s.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<String, E> {
            Ok(n.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<String, E> {
            Ok(n.to_string())
        }
    }
    d.deserialize_any(NameOrNumber)
}

/// `POST /v1/services/{name}/start|stop|restart`: the state reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The service reached the state the action aims for.
    pub ok: bool,
    /// What happened, in one line.
    pub message: String,
    /// The instance acted on (the last one, for a replicated service).
    pub service: ServiceStatus,
    /// For a replicated service addressed by its name: every instance, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<ServiceStatus>,
}

/// One provided name of one service instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attrs: std::collections::BTreeMap<String, String>,
    /// `<host-id>:<service instance>`: stable, so a restarted instance
    /// replaces its own entry.
    pub instance: String,
    /// The corral (host) that registered it.
    #[serde(default)]
    pub host_id: String,
}

impl Endpoint {
    /// "host:port"
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `GET /v1/endpoints`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointList {
    pub endpoints: Vec<Endpoint>,
}

/// `POST /v1/services/{name}/scale`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// At most [`MAX_REPLICAS`].
    pub replicas: u32,
}

/// `POST /v1/reload`: what the new config changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line that says what went wrong.
    pub error: String,
    /// For an unknown service: the names that exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<String>,
    /// For a rejected reload: every config error, one per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// A lifecycle message of corral about the service.
    Event,
}

/// One line of `GET /v1/logs` (a stream of these, newline-delimited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub service: String,
    pub stream: LogStream,
    /// The line without its newline; bytes that are not UTF-8 are replaced.
    pub line: String,
}

/// One line of `GET /v1/events`: a lifecycle change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// None for corral itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The service's state after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    pub message: String,
    /// Set on a marker that is not a change: "lagged" (this client missed
    /// `missed` events: it did not keep up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// The last line of a stream (`/logs?follow`, `/events`) that the daemon
/// cut short, and why; a stream that simply ends has no such line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCut {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded bodies of version 1: they must keep parsing.
    #[test]
    fn v1_fixtures_parse() {
        let status: ServiceStatus = serde_json::from_str(
            r#"{"name":"api","state":"running","pid":42,"uptime_secs":1.5,"restarts":2,
                "last_exit":"exit code 1","last_exit_code":1,"ready":true,
                "health":{"healthy":true,"failures":0},"oneshot":false,"future_field":1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.pid, Some(42));
        assert!(status.is_up());
        let minimal: ServiceStatus = serde_json::from_str(
            r#"{"name":"db","state":"stopped","restarts":0,"ready":false,"oneshot":false}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(minimal.is_stopped());
        // A state from a newer daemon still parses.
        let newer: ServiceState =
            serde_json::from_str(r#""hibernating""#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(newer, ServiceState::Unknown);
        let line: LogLine = serde_json::from_str(
            r#"{"time":1700000000.25,"service":"api","stream":"stderr","line":"boom"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line.stream, LogStream::Stderr);
    }

    #[test]
    fn signal_request_is_strict() {
        assert!(serde_json::from_str::<SignalRequest>(r#"{"signal":"HUP","x":1}"#).is_err());
        let n: SignalRequest =
            serde_json::from_str(r#"{"signal":9}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.signal, "9");
        assert!(serde_json::from_str::<SignalRequest>(r#"{"signal":[9]}"#).is_err());
    }
}
