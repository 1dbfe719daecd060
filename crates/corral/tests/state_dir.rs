//! Where the daemon keeps its socket, lock and run record: chosen by the
//! same rule in the daemon and in every command, so a read-only project
//! and a non-root user work.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::*;

#[test]
fn state_dir_in_the_config_is_used_by_the_daemon_and_every_command() {
    let project = Project::new(
        "[corral]\nstate-dir = \"var/state\"\n[services.a]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let (code, _, err) = project.run(&["up", "-d"]);
    assert_eq!(code, 0, "{err}");
    let state = project.file("var/state");
    assert!(
        state.join("corral.sock").exists(),
        "no socket in {}",
        state.display()
    );
    assert!(state.join("corral.lock").exists());
    assert!(state.join("corral.log").exists(), "the console log");
    assert!(
        !project.file(".corral").exists(),
        "nothing beside the config"
    );
    let (code, out, err) = project.run(&["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(has_row(&out, "a", "running"), "{out}");
    let (code, _, err) = project.run(&["down"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_state_dir_flag_and_variable_win_over_the_config() {
    let project = Project::new(
        "[corral]\nstate-dir = \"unused\"\n[services.a]\ncommand = [\"sleep\", \"60\"]\n",
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().join("s");
    let dir_s = dir.to_str().unwrap();
    let (code, _, err) = project.run(&["up", "-d", "--state-dir", dir_s]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("corral.sock").exists());
    assert!(!project.file("unused").exists());
    let out = project
        .command(&["ps"])
        .env("CORRAL_STATE_DIR", dir_s)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = project.run(&["down", "--state-dir", dir_s]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_non_root_user_runs_a_project_it_cannot_write() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: acting as another user (nobody) needs root");
        return;
    }
    // The project is root's, 0755: nobody reads it and cannot write it.
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // nobody's temp dir: the last place the state may go.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = project
            .command(args)
            .env("TMPDIR", tmp.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = as_nobody(&["up", "-d"]);
    assert_eq!(code, 0, "{out}");
    assert!(!project.file(".corral").exists());
    let state = std::fs::read_dir(tmp.path().join("corral-65534"))
        .unwrap()
        .flatten()
        .next()
        .expect("a private state directory")
        .path();
    assert!(state.join("corral.sock").exists(), "{}", state.display());
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let log = std::fs::read_to_string(state.join("corral.log")).unwrap();
    assert!(
        log.contains(&format!("state directory: {}", state.display())),
        "{log}"
    );
    let (code, out) = as_nobody(&["ps"]);
    assert_eq!(code, 0, "{out}");
    assert!(has_row(&out, "a", "running"), "{out}");
    let (code, out) = as_nobody(&["down"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn no_writable_state_dir_is_one_clear_error() {
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    project.write("blocker", "a file, not a directory");
    let (code, out, err) = project.run(&["up", "-d", "--state-dir", "blocker/state"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with("corral: no writable state directory for corral.toml: blocker/state:"),
        "{err}"
    );
    assert!(err.contains("--state-dir or CORRAL_STATE_DIR"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_lock_that_cannot_be_taken_is_named_as_the_lock() {
    let project = Project::new("[services.a]\ncommand = [\"sleep\", \"60\"]\n");
    // A directory where the lock file goes: it cannot be opened for writing.
    std::fs::create_dir_all(project.file(".corral/corral.lock")).unwrap();
    let (code, out, err) = project.run(&["up"]);
    assert_eq!(code, 1, "{out}{err}");
    let lock = std::fs::canonicalize(project.path())
        .unwrap()
        .join(".corral/corral.lock");
    assert!(
        err.contains(&format!(
            "cannot take the lock {}: Is a directory",
            lock.display()
        )),
        "{err}"
    );
    assert!(!err.contains("control socket"), "{err}");
}
