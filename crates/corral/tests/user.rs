//! Running services as another user.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_service_runs_with_nobodys_uid_gid_groups_and_home() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let project = Project::new(
        r#"
[services.unprivileged]
command = ["sleep", "60"]
user = "nobody"
"#,
    );
    let corral = project.up();
    let pid = corral.started_pid("unprivileged", SECS5);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let nobody: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("nobody in /etc/passwd")
        .split(':')
        .collect();
    let (uid, gid, home) = (nobody[2], nobody[3], nobody[5]);
    assert_eq!(status_field(pid, "Uid"), format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(status_field(pid, "Gid"), format!("{gid} {gid} {gid} {gid}"));
    // initgroups: nobody's groups only, none of root's.
    assert_eq!(status_field(pid, "Groups"), gid);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|e| e == format!("HOME={home}")),
        "{environ}"
    );
    assert!(environ.split('\0').any(|e| e == "USER=nobody"), "{environ}");
}

#[test]
fn an_unknown_user_is_a_config_error() {
    let project = Project::new(
        r#"
[services.app]
command = ["true"]
user = "no-such-user-here"
"#,
    );
    let (code, _, err) = project.run(&["up"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("corral.toml:4:8: error: no such user \"no-such-user-here\""),
        "{err}"
    );
}

#[test]
fn switching_users_without_root_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to nobody first");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let project = Project::new(
        r#"
[services.app]
command = ["true"]
user = "root"
"#,
    );
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let out = project
        .command(&["check"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run corral as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("only root can switch users"), "{err}");
}

/// A working dir the service's user may not enter is named as the cause,
/// not taken for the program's fault.
#[test]
fn a_working_dir_the_user_cannot_enter_is_named() {
    if !is_root() {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let project = Project::new(
        r#"
[services.locked]
command = ["sleep", "60"]
user = "nobody"
working-dir = "private"
restart = "never"
"#,
    );
    let private = project.file("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut corral = project.up();
    corral.wait_for_service_event(
        "locked",
        &format!(
            "cannot enter the working dir {}: Permission denied",
            private.display()
        ),
        SECS5,
    );
    corral.stop();
}
