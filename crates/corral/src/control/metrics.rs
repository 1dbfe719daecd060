//! `GET /v1/metrics` and the `[corral] metrics` TCP listener: what corral
//! knows, in Prometheus's text exposition format (version 0.0.4).

use std::fmt::Write;

use corral_proto::{Endpoint, ServiceList, ServiceStatus};

/// The content type Prometheus expects of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What one scrape reads.
pub struct Scrape<'a> {
    /// Every live instance, with resources filled in.
    pub list: &'a ServiceList,
    /// Lines per service since corral started: (name, stdout, stderr).
    pub lines: &'a [(String, [u64; 2])],
    pub endpoints: &'a [Endpoint],
    /// When corral started (seconds since the Unix epoch).
    pub started: f64,
}

/// Renders a scrape: every family with its HELP and TYPE, then its samples.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut out = Exposition(String::with_capacity(
        256 + 1024 * scrape.list.services.len(),
    ));
    let services = &scrape.list.services;
    out.family(
        "corral_start_time_seconds",
        "gauge",
        "When corral started, in seconds since the Unix epoch.",
    );
    out.sample("corral_start_time_seconds", &[], scrape.started);
    out.family(
        "corral_services",
        "gauge",
        "Service instances corral supervises.",
    );
    out.sample("corral_services", &[], services.len() as f64);

    type Gauge = fn(&ServiceStatus) -> Option<f64>;
    let per_service: [(&str, &str, &str, Gauge); 12] = [
        (
            "corral_service_up",
            "gauge",
            "1 when the instance is where a start aims (running, completed, scheduled).",
            |s| Some(flag(s.is_up())),
        ),
        (
            "corral_service_ready",
            "gauge",
            "1 when the instance runs and passed its readiness probe.",
            |s| Some(flag(s.ready)),
        ),
        (
            "corral_service_healthy",
            "gauge",
            "1 when the last health check passed (instances with a health probe, once checked).",
            |s| s.health.as_ref()?.healthy.map(flag),
        ),
        (
            "corral_service_restarts_total",
            "counter",
            "Restarts of the instance since corral started.",
            |s| Some(f64::from(s.restarts)),
        ),
        (
            "corral_service_last_exit_code",
            "gauge",
            "Exit code of the instance's last run (128 + signal when killed).",
            |s| s.last_exit_code.map(f64::from),
        ),
        (
            "corral_service_uptime_seconds",
            "gauge",
            "Seconds since the instance's current process started.",
            |s| s.uptime_secs,
        ),
        (
            "corral_service_cpu_seconds_total",
            "counter",
            "CPU time of the instance's processes, those that ended included.",
            |s| Some(s.resources.as_ref()?.cpu_seconds),
        ),
        (
            "corral_service_memory_rss_bytes",
            "gauge",
            "Resident memory of the instance's processes, summed.",
            |s| Some(s.resources.as_ref()?.rss_bytes as f64),
        ),
        (
            "corral_service_processes",
            "gauge",
            "Processes in the instance's session.",
            |s| Some(f64::from(s.resources.as_ref()?.processes)),
        ),
        (
            "corral_service_open_fds",
            "gauge",
            "Open file descriptors of the instance's processes, summed.",
            |s| Some(f64::from(s.resources.as_ref()?.fds)),
        ),
        (
            "corral_job_last_run_timestamp_seconds",
            "gauge",
            "When the job's last finished run started, in seconds since the Unix epoch.",
            |s| Some(s.job.as_ref()?.last_run.as_ref()?.started),
        ),
        (
            "corral_job_next_run_timestamp_seconds",
            "gauge",
            "When the job's next run is due, in seconds since the Unix epoch.",
            |s| s.job.as_ref()?.next_run,
        ),
    ];
    for (name, kind, help, value) in per_service {
        out.family(name, kind, help);
        for s in services {
            if let Some(v) = value(s) {
                out.sample(name, &[("service", &s.name)], v);
            }
        }
    }
    let name = "corral_job_last_run_duration_seconds";
    out.family(name, "gauge", "How long the job's last finished run took.");
    for s in services {
        if let Some(run) = s.job.as_ref().and_then(|j| j.last_run.as_ref()) {
            out.sample(name, &[("service", &s.name)], run.duration_secs);
        }
    }
    let name = "corral_service_state";
    out.family(
        name,
        "gauge",
        "The instance's state, as a label (always 1).",
    );
    for s in services {
        out.sample(
            name,
            &[("service", &s.name), ("state", s.state.as_str())],
            1.0,
        );
    }

    let name = "corral_log_lines_total";
    out.family(
        name,
        "counter",
        "Lines each service wrote since corral started.",
    );
    for (service, counts) in scrape.lines {
        for (stream, count) in ["stdout", "stderr"].into_iter().zip(counts) {
            out.sample(
                name,
                &[("service", service), ("stream", stream)],
                *count as f64,
            );
        }
    }

    let name = "corral_discovery_endpoints";
    out.family(
        name,
        "gauge",
        "Endpoints discovery knows, by the name they provide.",
    );
    let mut names: Vec<&str> = scrape.endpoints.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    for group in names.chunk_by(|a, b| a == b) {
        out.sample(name, &[("name", group[0])], group.len() as f64);
    }
    if let Some(d) = &scrape.list.discovery {
        let name = "corral_discovery_degraded";
        out.family(
            name,
            "gauge",
            "1 while the discovery backend cannot be reached.",
        );
        out.sample(
            name,
            &[("backend", &d.backend)],
            flag(d.degraded_since.is_some()),
        );
    }
    out.0
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        for (i, (key, val)) in labels.iter().enumerate() {
            self.0.push(if i == 0 { '{' } else { ',' });
            self.0.push_str(key);
            self.0.push_str("=\"");
            for c in val.chars() {
                match c {
                    '\\' => self.0.push_str("\\\\"),
                    '"' => self.0.push_str("\\\""),
                    '\n' => self.0.push_str("\\n"),
                    c => self.0.push(c),
                }
            }
            self.0.push('"');
        }
        if !labels.is_empty() {
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_plain() {
        let mut out = Exposition(String::new());
        out.sample("m", &[("a", "x\"y\\z\nw"), ("b", "c")], 3.0);
        out.sample("n", &[], 0.25);
        assert_eq!(out.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 3\nn 0.25\n");
    }
}
