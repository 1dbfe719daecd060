//! Input that must neither take corral down, nor freeze it, nor bloat it:
//! files that are not files (FIFOs, devices), files that never end, and
//! `${...}` nested deeper than a stack holds, through `check` and through a
//! running daemon's `reload`.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `corral ARGS` in the project, within `limit`: (exit code, stderr).
fn run_within(project: &Project, args: &[&str], limit: Duration) -> (i32, String) {
    let start = Instant::now();
    let (code, _, err) = project.run(args);
    assert!(
        start.elapsed() < limit,
        "{args:?} took {:?}",
        start.elapsed()
    );
    assert!(
        !err.contains("panicked") && !err.contains("overflow"),
        "{err}"
    );
    (code, err)
}

#[test]
fn a_fifo_or_a_device_is_a_config_error_not_a_wait() {
    let project = Project::new("");
    mkfifo(&project.file("pipe"));
    let cases = [
        (
            "[services.a]\ncommand = [\"true\"]\nenv-file = \"pipe\"\n",
            "it is a FIFO, not a regular file",
        ),
        (
            "include = [\"pipe\"]\n[services.a]\ncommand = [\"true\"]\n",
            "it is a FIFO, not a regular file",
        ),
        (
            "include = [\"/dev/zero\"]\n[services.a]\ncommand = [\"true\"]\n",
            "it is a device, not a regular file",
        ),
        (
            "[services.a]\ncommand = [\"true\"]\nenv-file = \"/dev/zero\"\n",
            "it is a device, not a regular file",
        ),
    ];
    for (config, expected) in cases {
        project.write("corral.toml", config);
        let (code, err) = run_within(&project, &["check"], Duration::from_secs(5));
        assert_eq!(code, 2, "{config}: {err}");
        assert!(err.contains(expected), "{config}: {err}");
    }
    for file in ["/dev/zero", "pipe"] {
        let (code, err) = run_within(&project, &["-f", file, "check"], Duration::from_secs(5));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    let (code, err) = run_within(
        &project,
        &["--env-file", "pipe", "check"],
        Duration::from_secs(5),
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_file_larger_than_16_mib_is_refused() {
    let project = Project::new("[services.a]\ncommand = [\"true\"]\nenv-file = \"big.env\"\n");
    let f = std::fs::File::create(project.file("big.env")).unwrap();
    f.set_len(17 << 20).unwrap();
    let (code, err) = run_within(&project, &["check"], Duration::from_secs(5));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("it is larger than 16 MiB"), "{err}");
}

/// The running daemon: a reload with a FIFO, a device or deep nesting
/// fails at once with the reason; every service keeps running, and the
/// daemon answers and reaps meanwhile.
#[test]
fn a_hostile_reload_is_refused_and_the_daemon_goes_on() {
    let good = "[services.steady]\ncommand = [\"sleep\", \"600\"]\n\
                [services.crashy]\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n\
                backoff = { initial = \"50ms\", max = \"50ms\" }\n";
    let project = Project::new(good);
    mkfifo(&project.file("pipe"));
    let mut corral = project.up();
    let steady = corral.started_pid("steady", SECS5);
    let nested = format!("{}x{}", "${A:-".repeat(20_000), "}".repeat(20_000));
    let hostile = [
        (
            format!("{good}[services.new]\ncommand = [\"true\"]\nenv-file = \"pipe\"\n"),
            "it is a FIFO, not a regular file",
        ),
        (
            format!("include = [\"/dev/zero\"]\n{good}"),
            "it is a device, not a regular file",
        ),
        (
            format!("{good}[services.deep]\ncommand = [\"{nested}\"]\n"),
            "nested deeper than 100 levels",
        ),
    ];
    for (config, expected) in hostile {
        project.write("corral.toml", &config);
        let (code, err) = run_within(&project, &["reload"], Duration::from_secs(10));
        assert_ne!(code, 0, "{err}");
        assert!(err.contains(expected), "{err}");
        let (code, _) = run_within(&project, &["ps"], Duration::from_secs(2));
        assert_eq!(code, 0);
    }
    let json = get_json(&project, "/v1/services/steady");
    assert_eq!(json["pid"], steady, "{json}");
    // The crash loop went on through it all: each exit reaped, restarted.
    corral.wait_for_service_event_nth("crashy", "started", 5, SECS5);
    assert_eq!(corral.stop(), 0);
}
