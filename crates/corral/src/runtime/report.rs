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

pub fn describe(report: &Report) -> String {
    match report {
        Report::PreStarted { pid } => format!("pre step started (pid {pid})"),
        Report::Started { pid } => format!("started (pid {pid})"),
        Report::PostStarted { pid } => format!("post step started (pid {pid})"),
        Report::SpawnFailed { step, error } => {
            format!("{} did not start: {error}", step_name(*step))
        }
        Report::StepFailed { step, exit } => format!("{} failed with {exit}", step_name(*step)),
        Report::Exited { exit } => format!("exited with {exit}"),
        Report::Completed => "completed".into(),
        Report::Restarting { delay, attempt } => {
            format!(
                "restarting in {} (restart {attempt})",
                format_duration(*delay)
            )
        }
        Report::GaveUp { restarts, exit } => {
            format!("failed: gave up after {restarts} restarts (last: {exit})")
        }
        Report::Failed { exit } => format!("failed with {exit}"),
        Report::Blocked { dependency } => format!("not started: dependency {dependency} failed"),
        Report::Stopping { signal, timeout } => format!(
            "stopping with {} (SIGKILL after {})",
            signal.as_str(),
            format_duration(*timeout)
        ),
        Report::Killing { reason } => format!("sending SIGKILL: {reason}"),
        Report::Stopped => "stopped".into(),
        Report::ShuttingDown { reason } => format!("shutting down: {reason}"),
        Report::ShutdownTimeout => "shutdown-timeout reached: killing what is left".into(),
    }
}
