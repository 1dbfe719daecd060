//! `corral check`: the resolved plan, as a person reads it.

use std::fmt::Write;

use humantime::format_duration;

use crate::config::{masked, Config};

/// The start order and each service's resolved settings, secrets masked.
pub fn plan(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: ok, {} service(s)",
        config.path.display(),
        config.services.len()
    );
    let _ = writeln!(out, "\nstart order:");
    for (n, &i) in config.start_order.iter().enumerate() {
        let s = &config.services[i];
        let mut line = format!("  {}. {}", n + 1, s.name);
        if s.oneshot {
            line.push_str(" (oneshot)");
        }
        let deps: Vec<String> = s
            .depends_on
            .iter()
            .map(|d| {
                let restart = if d.restart { " (restart with it)" } else { "" };
                format!(
                    "{} {}{restart}",
                    config.services[d.service].name,
                    d.condition.as_str()
                )
            })
            .collect();
        if !deps.is_empty() {
            let _ = write!(line, "  after: {}", deps.join(", "));
        }
        let _ = writeln!(out, "{line}");
    }
    for s in &config.services {
        let _ = writeln!(out, "\n[{}]", s.name);
        let _ = writeln!(out, "  command: {}", shell_words(&s.command));
        if let Some(pre) = &s.pre {
            let _ = writeln!(out, "  pre: {}", shell_words(pre));
        }
        if let Some(post) = &s.post {
            let _ = writeln!(out, "  post: {}", shell_words(post));
        }
        if let Some(dir) = &s.working_dir {
            let _ = writeln!(out, "  working-dir: {}", dir.display());
        }
        if let Some(u) = &s.user {
            let _ = writeln!(
                out,
                "  user: {} (uid {}, gid {}, groups {:?})",
                u.name, u.uid, u.gid, u.groups
            );
        }
        let limit = s
            .max_restarts
            .map_or_else(|| "no limit".to_string(), |m| format!("max {m}"));
        match &s.job {
            Some(job) => {
                let _ = writeln!(
                    out,
                    "  schedule: {} ({}), overlap {}{}",
                    job.schedule,
                    job.timezone_name,
                    job.overlap.as_str(),
                    if job.run_on_start {
                        ", runs once at start"
                    } else {
                        ""
                    }
                );
                // So one sees what the pattern means.
                let next = job.next_ticks(jiff::Timestamp::now(), 3);
                if !next.is_empty() {
                    let shown: Vec<String> = next.iter().map(|&t| job.local_time(t)).collect();
                    let _ = writeln!(out, "  next runs: {}", shown.join(", "));
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "  restart: {} (backoff {} to {}, {limit}){}",
                    s.restart.as_str(),
                    format_duration(s.backoff.initial),
                    format_duration(s.backoff.max),
                    if s.essential { ", essential" } else { "" }
                );
            }
        }
        if let Some(r) = &s.ready {
            // A passive probe has no interval: the service tells.
            let every = if r.probe.is_active() {
                format!("every {}, ", format_duration(r.interval))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  ready: {} ({every}start-timeout {})",
                r.probe.describe(),
                format_duration(r.start_timeout)
            );
        }
        if let Some(p) = s.protocols.as_deref() {
            if p.notify {
                let watchdog = p.watchdog.map_or(String::new(), |w| {
                    format!(
                        ", watchdog {} (then {})",
                        format_duration(w),
                        p.watchdog_signal.as_str()
                    )
                });
                let _ = writeln!(out, "  notify: NOTIFY_SOCKET{watchdog}");
            }
            for (i, l) in p.sockets.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  socket: fd {} {} (name {}, backlog {})",
                    3 + i,
                    l.address,
                    l.name,
                    l.backlog
                );
            }
            if p.update == crate::config::Update::StartFirst {
                let _ = writeln!(out, "  update: start-first");
            }
        }
        if let Some(h) = &s.health {
            let _ = writeln!(
                out,
                "  health: {} (every {}, timeout {}, unhealthy after {} failures)",
                h.probe.describe(),
                format_duration(h.interval),
                format_duration(h.timeout),
                h.retries
            );
        }
        let _ = writeln!(
            out,
            "  stop: {} then SIGKILL after {}",
            s.stop_signal.as_str(),
            format_duration(s.stop_timeout)
        );
        let _ = writeln!(out, "  env:");
        for (k, v) in &s.environment() {
            let shown = masked(k, v);
            let _ = writeln!(out, "    {k}={}", shown.as_deref().unwrap_or(v));
        }
    }
    out
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| shlex::try_quote(w).map_or_else(|_| w.clone(), |q| q.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
