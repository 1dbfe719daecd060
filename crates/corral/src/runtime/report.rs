//! Wording of lifecycle reports on the console.

use humantime::format_duration;

use crate::engine::{Report, Step};

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Pre => "pre step",
        Step::Main => "service",
        Step::Post => "post step",
    }
}

/// Durations on the console: whole milliseconds are enough.
fn short(d: std::time::Duration) -> String {
    let ms = std::time::Duration::from_millis(d.as_millis() as u64);
    format_duration(ms).to_string()
}

pub fn describe(report: &Report) -> String {
    match report {
        Report::PreStarted { pid } => format!("pre step started (pid {pid})"),
        Report::Started { pid } => format!("started (pid {pid})"),
        Report::Ready { after } => format!("ready after {}", short(*after)),
        Report::NotReady {
            timeout,
            last_error,
        } => match last_error {
            Some(e) => format!(
                "not ready within start-timeout {} (last probe: {e}): a failed start",
                short(*timeout)
            ),
            None => format!(
                "not ready within start-timeout {}: a failed start",
                short(*timeout)
            ),
        },
        Report::HealthFailed {
            failures,
            retries,
            reason,
        } => format!("health check failed ({failures}/{retries}): {reason}"),
        Report::Unhealthy { failures } => {
            format!("unhealthy after {failures} failed checks: restarting")
        }
        Report::Recovered => "healthy again".into(),
        Report::DependencyRestarting { dependency } => {
            format!("restarting with its dependency {dependency}")
        }
        Report::PostStarted { pid } => format!("post step started (pid {pid})"),
        Report::SpawnFailed { step, error } => {
            format!("{} did not start: {error}", step_name(*step))
        }
        Report::StepFailed { step, exit } => format!("{} failed with {exit}", step_name(*step)),
        Report::Ended { exit } => format!("exited with {exit}"),
        Report::Completed => "completed".into(),
        Report::RunStarted { pid } => format!("run started (pid {pid})"),
        Report::RunEnded { exit, took } => format!("run ended with {exit} after {}", short(*took)),
        Report::RunSkipped { manual, queued } => format!(
            "{} skipped: {}",
            if *manual { "start" } else { "tick" },
            if *queued {
                "a run is still going and another is queued (overlap = queue)"
            } else {
                "a run is still going (overlap = skip)"
            }
        ),
        Report::RunQueued { manual } => format!(
            "{}: the next run starts when the current one ends (overlap = queue)",
            if *manual {
                "start queued"
            } else {
                "tick queued"
            }
        ),
        Report::RunReplaced { manual } => format!(
            "{}: stopping the current run for a new one (overlap = replace)",
            if *manual { "start" } else { "tick" }
        ),
        Report::Restarting { delay, attempt } => {
            format!("restarting in {} (restart {attempt})", short(*delay))
        }
        Report::GaveUp { restarts, exit } => {
            format!("failed: gave up after {restarts} restarts (last: {exit})")
        }
        Report::Failed { exit } => format!("failed with {exit}"),
        Report::Blocked { dependency, state } => {
            format!("not started: dependency {dependency} {state}")
        }
        Report::WaitingForEndpoints { missing } => {
            format!("waiting for endpoints of {}", missing.join(", "))
        }
        Report::RequireTimeout { missing, timeout } => format!(
            "no endpoint for {} within require-timeout {}: not started",
            missing.join(", "),
            short(*timeout)
        ),
        Report::WaitingFor { dependencies } => {
            format!("waiting for {}", dependencies.join(", "))
        }
        Report::Changed => "definition changed: restarting".into(),
        Report::Added => "added".into(),
        Report::Removed => "removed from the config: stopping".into(),
        Report::Stopping { signal, timeout } => format!(
            "stopping with {} (SIGKILL after {})",
            signal.as_str(),
            short(*timeout)
        ),
        Report::Killing { reason } => format!("sending SIGKILL: {reason}"),
        Report::Stopped => "stopped".into(),
        Report::ShuttingDown { reason } => format!("shutting down: {reason}"),
        Report::ShutdownFitted {
            grace,
            worst,
            percent,
            deadline,
        } => format!(
            "fitting the shutdown into stop-grace {}: its longest chain takes up to {}, so each stop-timeout is cut to {percent}% and what is left at {} is killed",
            short(*grace),
            short(*worst),
            short(*deadline)
        ),
        Report::ShutdownTimeout => "shutdown-timeout reached: killing what is left".into(),
        Report::Reloading => "reloading (RELOADING=1): not ready until READY=1".into(),
        Report::SaysStopping => "stopping by itself (STOPPING=1): endpoints withdrawn".into(),
        Report::MainPid { pid } => format!("main process is now pid {pid} (MAINPID=)"),
        Report::TimeoutExtended { by } => {
            format!("timeout extended by {} (EXTEND_TIMEOUT_USEC=)", short(*by))
        }
        Report::WatchdogMissed { signal } => format!(
            "no WATCHDOG=1 within the watchdog period: sending {}",
            signal.as_str()
        ),
        Report::StartingFirst { old } => {
            format!("update: starting the new process while pid {old} serves (start-first)")
        }
        Report::Replaced { old, signal } => format!(
            "update: the new process is ready; stopping the old one (pid {old}) with {}",
            signal.as_str()
        ),
        Report::UpdateFailed { old, exit } => match exit {
            Some(exit) => format!(
                "update failed: the new process ended with {exit} before it was ready; \
                 pid {old} goes on serving"
            ),
            None => format!("update failed: pid {old} goes on serving"),
        },
        Report::OldEnded { pid, exit } => format!(
            "update: the old process (pid {pid}) ended with {exit} before the new one was ready"
        ),
    }
}
