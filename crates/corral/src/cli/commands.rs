//! The client commands: ps, start, stop, restart, kill, logs, reload, down.

use std::io::Write;
use std::time::Duration;

use corral_proto::{
    ActionResult, EndpointList, Event, LogLine, ReloadResult, ScaleRequest, ServiceList,
    ServiceStatus, SignalRequest,
};
use hyper::Method;

use super::client::Client;
use super::CliError;
use crate::config::glob_match;
use crate::logs::{render, Format, Style};

/// `corral ps`: one table, or (`watch`) the table redrawn every `interval`
/// until interrupted, reading fresh resource figures each time.
pub async fn ps(client: &Client, json: bool, watch: Option<Duration>) -> Result<(), CliError> {
    let Some(interval) = watch else {
        print!("{}", ps_text(client, json).await?);
        return Ok(());
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let text = ps_text(client, json).await?;
        let mut out = std::io::stdout().lock();
        let written = if terminal {
            // Home, the table, then clear whatever the last one left below.
            write!(out, "\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"))
        } else {
            writeln!(out, "{text}")
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(()); // The reader went away (`| head`).
        }
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What `ps` prints once: the tables, or the JSON.
async fn ps_text(client: &Client, json: bool) -> Result<String, CliError> {
    let list: ServiceList = client
        .json(Method::GET, "/services?resources=true", None)
        .await?;
    if json {
        return Ok(serde_json::to_string_pretty(&list).unwrap_or_default() + "\n");
    }
    let mut text = table(&list.services);
    if let Some(jobs) = jobs_table(&list.services, crate::unix_now()) {
        text.push('\n');
        text.push_str(&jobs);
    }
    if let Some(d) = &list.discovery {
        text.push_str(&discovery_line(d));
        text.push('\n');
    }
    Ok(text)
}

/// How discovery across hosts is doing, under the `ps` table.
fn discovery_line(d: &corral_proto::DiscoveryStatus) -> String {
    match d.degraded_since {
        None => format!("discovery: {} (connected)", d.backend),
        Some(since) => {
            let ago = (crate::unix_now() - since).max(0.0);
            format!(
                "discovery: {} DEGRADED for {}s ({}): endpoints are the last known",
                d.backend,
                ago as u64,
                d.reason.as_deref().unwrap_or("unreachable")
            )
        }
    }
}

/// Under the `ps` table, for the jobs: schedule, last run, next run.
pub fn jobs_table(services: &[ServiceStatus], now: f64) -> Option<String> {
    let mut rows = vec![[
        "JOB".to_string(),
        "SCHEDULE".into(),
        "LAST RUN".into(),
        "RESULT".into(),
        "TOOK".into(),
        "NEXT RUN".into(),
    ]];
    for s in services {
        let Some(job) = &s.job else {
            continue;
        };
        let zone = if job.timezone == "UTC" || job.timezone == "local" {
            String::new()
        } else {
            format!(" ({})", job.timezone)
        };
        let (last, result, took) = match &job.last_run {
            Some(run) => (
                format!("{} ago", uptime((now - run.started).max(0.0))),
                run.result.clone(),
                format!("{:.1}s", run.duration_secs),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let next = match job.next_run {
            Some(at) => format!("in {}", uptime((at - now).max(0.0))),
            None => "-".into(),
        };
        let next = if job.queued {
            format!("{next} (one queued)")
        } else {
            next
        };
        rows.push([
            s.name.clone(),
            format!("{}{zone}", job.schedule),
            last,
            result,
            took,
            next,
        ]);
    }
    (rows.len() > 1).then(|| aligned(rows))
}

/// Rows of cells as left-aligned columns.
fn aligned<R: AsRef<[String]>>(rows: Vec<R>) -> String {
    let n = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..n)
        .map(|c| rows.iter().map(|r| r.as_ref()[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `ps` table: aligned columns.
pub fn table(services: &[ServiceStatus]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "CPU%".into(),
        "CPU TIME".into(),
        "MEM".into(),
        "PROCS".into(),
        "FDS".into(),
        "HEALTH".into(),
        "LAST EXIT".into(),
        "SOCKETS".into(),
        "STATUS".into(),
    ]];
    for s in services {
        let runs = matches!(
            s.state,
            corral_proto::ServiceState::Running | corral_proto::ServiceState::Starting
        );
        let health = match &s.health {
            // Health is checked only while it runs.
            _ if !runs => "-".to_string(),
            None => "-".to_string(),
            Some(h) => match h.healthy {
                None => "pending".into(),
                Some(true) if h.failures == 0 => "healthy".into(),
                Some(_) if h.failures > 0 => format!("failing ({})", h.failures),
                Some(true) => "healthy".into(),
                Some(false) => "unhealthy".into(),
            },
        };
        let state = match s.state {
            corral_proto::ServiceState::Starting => "starting (not ready)".to_string(),
            other => other.to_string(),
        };
        let r = s.resources.as_ref();
        let live = r.filter(|r| r.processes > 0);
        rows.push([
            s.name.clone(),
            state,
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.uptime_secs.map_or("-".into(), uptime),
            s.restarts.to_string(),
            live.and_then(|r| r.cpu_percent)
                .map_or("-".into(), |p| format!("{p:.1}")),
            r.map_or("-".into(), |r| cpu_time(r.cpu_seconds)),
            live.map_or("-".into(), |r| bytes(r.rss_bytes)),
            live.map_or("-".into(), |r| r.processes.to_string()),
            live.map_or("-".into(), |r| r.fds.to_string()),
            health,
            s.error
                .clone()
                .or_else(|| s.last_exit.clone())
                .unwrap_or_else(|| "-".into()),
            s.sockets.join(","),
            // What the service says of itself (sd_notify STATUS=), one line.
            s.status
                .as_deref()
                .map_or("-".into(), |t| t.replace(['\n', '\r', '\t'], " ")),
        ]);
    }
    // These columns only when a service has them.
    let unused = [
        (12, services.iter().all(|s| s.sockets.is_empty())),
        (13, services.iter().all(|s| s.status.is_none())),
    ];
    for (column, _) in unused.iter().filter(|(_, unused)| *unused) {
        for row in &mut rows {
            row[*column].clear();
        }
    }
    aligned(rows)
}

/// CPU time as `ps` shows it: minutes and seconds, hours past 99 minutes.
pub fn cpu_time(secs: f64) -> String {
    let centis = (secs * 100.0).round() as u64;
    let (s, cs) = (centis / 100, centis % 100);
    match s {
        0..6000 => format!("{}:{:02}.{cs:02}", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A size in binary units, three significant figures: 512K, 12.3M, 1.50G.
pub fn bytes(n: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    match value {
        _ if unit == 0 => format!("{n}B"),
        v if v < 10.0 => format!("{v:.2}{}", units[unit]),
        v if v < 100.0 => format!("{v:.1}{}", units[unit]),
        v => format!("{v:.0}{}", units[unit]),
    }
}

pub fn uptime(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Names as the user gave them, with a replicated service (`api`) standing
/// for each of its instances (`api.0`, `api.1`...) and a glob (`'web*'`)
/// for every service it matches; no name at all stands for every service.
async fn expand(client: &Client, names: &[String]) -> Result<Vec<String>, CliError> {
    let list: ServiceList = client.json(Method::GET, "/services", None).await?;
    if names.is_empty() {
        return Ok(list.services.iter().map(|s| s.name.clone()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &String| {
        if !out.contains(name) {
            out.push(name.clone());
        }
    };
    for name in names {
        if list.scaled_to_zero.contains(name) {
            println!("{name} is scaled to 0: it has no instance (corral scale {name} N runs N)");
            continue;
        }
        if name.contains(['*', '?']) {
            let matched: Vec<&ServiceStatus> = list
                .services
                .iter()
                .filter(|s| glob_match(name, &s.group) || glob_match(name, &s.name))
                .collect();
            if matched.is_empty() {
                let known: Vec<&str> = list.services.iter().map(|s| s.name.as_str()).collect();
                return Err(CliError::Usage(format!(
                    "no service matches {name:?} (services: {})",
                    known.join(", ")
                )));
            }
            matched.iter().for_each(|s| add(&s.name));
            continue;
        }
        if list.services.iter().any(|s| &s.name == name) {
            add(name);
            continue;
        }
        let instances: Vec<&ServiceStatus> =
            list.services.iter().filter(|s| &s.group == name).collect();
        if instances.is_empty() {
            // The daemon answers with the names it knows.
            add(name);
        } else {
            instances.iter().for_each(|s| add(&s.name));
        }
    }
    Ok(out)
}

/// start, stop or restart each service, in order (`stop --all`: in reverse
/// order; one instance at a time for a replicated service); fails if any did not
/// get there. `grace` replaces stop-timeout for the stops this causes.
pub async fn act(
    client: &Client,
    action: &str,
    services: &[String],
    grace: Option<std::time::Duration>,
) -> Result<(), CliError> {
    let every = services.is_empty();
    let mut services = expand(client, services).await?;
    // Everything stops in reverse order; named services in the order given.
    if action == "stop" && every {
        services.reverse();
    }
    let query = match grace {
        // The request waits for the stop: give it the grace and some more.
        Some(g) => format!(
            "?stop_timeout={}ms&timeout={}ms",
            g.as_millis(),
            (g + std::time::Duration::from_secs(30)).as_millis()
        ),
        None => String::new(),
    };
    let mut failed = Vec::new();
    for name in &services {
        let path = format!("/services/{name}/{action}{query}");
        let result: ActionResult = client.json(Method::POST, &path, None).await?;
        println!("{}", result.message);
        if !result.ok {
            failed.push(name.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "{action} failed for {}",
            failed.join(", ")
        )))
    }
}

pub async fn kill(client: &Client, signal: &str, services: &[String]) -> Result<(), CliError> {
    let wide = services.is_empty() || services.iter().any(|n| n.contains(['*', '?']));
    for name in &expand(client, services).await? {
        let body = serde_json::to_vec(&SignalRequest {
            signal: signal.to_string(),
        })
        .unwrap_or_default();
        let path = format!("/services/{name}/signal");
        let sent: Result<ServiceStatus, CliError> =
            client.json(Method::POST, &path, Some(body)).await;
        let status = match sent {
            Ok(status) => status,
            // --all (or a glob): only what runs is signalled.
            Err(CliError::Api { status: 409, .. }) if wide => {
                println!("{name} has no running process: skipped");
                continue;
            }
            Err(e) => return Err(e),
        };
        println!(
            "sent {signal} to {name} (pid {})",
            status.pid.map_or("-".into(), |p| p.to_string())
        );
        // A signal that ends it, on a service its policy restarts.
        let ends = crate::config::parse_signal(signal).is_some_and(|s| {
            use nix::sys::signal::Signal as S;
            matches!(s, S::SIGTERM | S::SIGKILL | S::SIGINT | S::SIGQUIT)
        });
        if let (true, Some(policy @ ("always" | "on-failure"))) = (ends, status.restart.as_deref())
        {
            println!(
                "{name} has restart = \"{policy}\": corral will restart it (`corral stop {name}` keeps it down)"
            );
        }
    }
    Ok(())
}

/// How `corral logs` shows lines (docker compose's flags).
#[derive(Debug, clap::Args)]
pub struct LogsOptions {
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many recent lines (default 100; with --since, every line kept).
    #[arg(short = 'n', long = "tail", visible_alias = "lines", value_name = "N")]
    tail: Option<usize>,
    /// Show each line's time (RFC 3339).
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Lines from this time on: a duration ago ("10m", "90s", "30") or an
    /// RFC 3339 time ("2026-11-26T18:00:00Z").
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Lines up to this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Leave out the `name |` prefix.
    #[arg(long)]
    no_prefix: bool,
    /// No colours, even on a terminal.
    #[arg(long)]
    no_color: bool,
    /// One JSON object per line: time, service, stream, line.
    #[arg(long)]
    json: bool,
    /// With --follow: when the daemon drops the stream because this client
    /// fell behind, say so on stderr and follow again from the newest line
    /// (without it, that ends the command with an error).
    #[arg(long, requires = "follow")]
    retry: bool,
}

/// Seconds since the epoch between which lines are shown.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    since: f64,
    until: f64,
}

impl LogsOptions {
    /// --since and --until as times, checked before anything is asked.
    pub fn window(&self) -> Result<Window, CliError> {
        let now = crate::unix_now();
        let at = |flag: &str, text: &Option<String>, default: f64| -> Result<f64, CliError> {
            let Some(text) = text else {
                return Ok(default);
            };
            if let Ok(ago) = crate::config::parse_duration(text) {
                return Ok(now - ago.as_secs_f64());
            }
            humantime::parse_rfc3339_weak(text)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "invalid {flag} {text:?}: write a duration (\"10m\") or an RFC 3339 time (\"2026-11-26T18:00:00Z\")"
                    ))
                })
        };
        Ok(Window {
            since: at("--since", &self.since, f64::MIN)?,
            until: at("--until", &self.until, f64::MAX)?,
        })
    }
}

pub async fn logs(
    client: &Client,
    options: &LogsOptions,
    window: Window,
    services: &[String],
) -> Result<(), CliError> {
    // With --since, every line the ring keeps; the window picks.
    let last = options.tail.unwrap_or(if options.since.is_some() {
        usize::MAX >> 1
    } else {
        100
    });
    let query = |last: usize| {
        let mut path = format!("/logs?n={last}&follow={}", options.follow);
        for s in services {
            path.push_str("&service=");
            path.push_str(s);
        }
        path
    };
    let mut path = query(last);
    let list: ServiceList = client.json(Method::GET, "/services", None).await?;
    // The names in config order, so each service has the colour `up` gives it.
    let names = list.services.iter().map(|s| s.name.as_str()).collect();
    let format = if options.json {
        Format::Json
    } else {
        Format::Text
    };
    let mut style = Style::for_stdout(names, format, options.timestamps);
    if options.no_color {
        style = Style::new(style.names, format, options.timestamps, false);
    }
    style.prefixed = !options.no_prefix;
    let stdout = std::io::stdout();
    loop {
        let followed = client
            .lines(Method::GET, &path, |line: LogLine| {
                if line.time < window.since || line.time > window.until {
                    return;
                }
                let svc = style.names.iter().position(|n| n == line.service);
                let time =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(line.time.max(0.0));
                let mut out = stdout.lock();
                let _ = render(
                    &mut out,
                    &style,
                    svc,
                    line.stream,
                    time,
                    line.line.as_bytes(),
                );
                let _ = out.flush();
            })
            .await;
        match followed {
            Err(CliError::Failed(why)) if options.retry => {
                eprintln!("corral: {why}; following again from the newest line");
                path = query(0);
            }
            other => return other,
        }
    }
}

/// `corral events`: the API's event stream, one line per event.
pub async fn events(client: &Client, json: bool) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut ended = false;
    client
        .lines(Method::GET, "/events", |event: Event| {
            if event.kind.as_deref() == Some("end") {
                ended = true;
            }
            let mut out = stdout.lock();
            if json {
                let _ = serde_json::to_writer(&mut out, &event);
                let _ = out.write_all(b"\n");
            } else {
                let time =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(event.time.max(0.0));
                let _ = writeln!(
                    out,
                    "{} {} {}{}",
                    humantime::format_rfc3339_millis(time),
                    event.service.as_deref().unwrap_or("corral"),
                    event.state.map_or(String::new(), |s| format!("({s}) ")),
                    event.message
                );
            }
            let _ = out.flush();
        })
        .await?;
    if !ended {
        return Err(cut_short());
    }
    Ok(())
}

pub async fn reload(client: &Client) -> Result<(), CliError> {
    let result: ReloadResult = client.json(Method::POST, "/reload", None).await?;
    print_changes(&result);
    Ok(())
}

/// Runs `replicas` instances of a service from now on.
pub async fn scale(client: &Client, service: &str, replicas: u32) -> Result<(), CliError> {
    let body = serde_json::to_vec(&ScaleRequest { replicas }).unwrap_or_default();
    let path = format!("/services/{service}/scale");
    let result: ReloadResult = client.json(Method::POST, &path, Some(body)).await?;
    print_changes(&result);
    Ok(())
}

fn print_changes(result: &ReloadResult) {
    let show = |what: &str, names: &[String]| {
        if !names.is_empty() {
            println!("{what}: {}", name_list(names));
        }
    };
    show("added", &result.added);
    show("changed (restarted)", &result.changed);
    show("removed (stopped)", &result.removed);
    show("unchanged", &result.unchanged);
}

/// Names joined with commas; past a dozen, the first ten and how many in
/// all (a reload of 10,000 services must not print a 70 KB line).
fn name_list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    if names.len() <= SHOWN + 2 {
        return names.join(", ");
    }
    format!(
        "{}, ... ({} in all)",
        names[..SHOWN].join(", "),
        names.len()
    )
}

/// What discovery knows, as a table.
pub async fn endpoints(client: &Client, name: Option<&str>) -> Result<(), CliError> {
    let path = match name {
        Some(n) => format!("/endpoints?name={n}"),
        None => "/endpoints".to_string(),
    };
    let list: EndpointList = client.json(Method::GET, &path, None).await?;
    let mut rows = vec![[
        "NAME".to_string(),
        "ADDRESS".into(),
        "HOST".into(),
        "INSTANCE".into(),
        "TAGS".into(),
    ]];
    for e in &list.endpoints {
        rows.push([
            e.name.clone(),
            e.addr(),
            e.host_id.clone(),
            e.instance.clone(),
            e.tags.join(","),
        ]);
    }
    print!("{}", aligned(rows));
    Ok(())
}

/// Asks the daemon to shut down and prints its messages until it is gone.
pub async fn down(client: &Client) -> Result<(), CliError> {
    let mut ended = false;
    client
        .lines(Method::POST, "/shutdown", |e: Event| {
            if e.kind.as_deref() == Some("end") {
                ended = true;
                return;
            }
            let who = e.service.as_deref().unwrap_or("corral");
            println!("{who} * {}", e.message);
        })
        .await?;
    if !ended {
        return Err(cut_short());
    }
    println!("corral stopped");
    Ok(())
}

/// An event stream that ended without corral's last line: the connection
/// went before every event reached this client.
fn cut_short() -> CliError {
    CliError::Failed(
        "the event stream ended before corral said it was done: events may be missing".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_name_lists_are_cut_with_a_count() {
        let names = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
        assert_eq!(name_list(&names(3)), "s0, s1, s2");
        assert_eq!(name_list(&names(12)).matches(", ").count(), 11);
        assert_eq!(
            name_list(&names(9000)),
            "s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, ... (9000 in all)"
        );
    }
}
