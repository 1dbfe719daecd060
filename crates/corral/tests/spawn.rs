//! What a service process starts with: corral forks by hand (clone3 into its
//! cgroup), so the exec lookup, directory, signals and errors std used to
//! give are checked here.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

#[test]
fn a_service_starts_clean_where_it_is_told_and_found_on_its_own_path() {
    let project = Project::new("");
    let bin = project.file("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(project.file("work")).unwrap();
    let tool = bin.join("hello-tool");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho \"dir=$(pwd)\"\ngrep -E '^Sig(Blk|Ign)' /proc/self/status\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    project.write(
        "corral.toml",
        &format!(
            r#"
[services.tool]
command = ["hello-tool"]
working-dir = "work"
restart = "never"
env = {{ PATH = "{}:/usr/bin:/bin" }}
"#,
            bin.display()
        ),
    );
    let mut corral = project.up();
    let dir = corral.wait_for_output("tool", "dir=", SECS5);
    let work = std::fs::canonicalize(project.file("work")).unwrap();
    assert!(dir.ends_with(&format!("dir={}", work.display())), "{dir}");
    // No signal blocked, none ignored: corral's own SIGPIPE disposition and
    // its threads' masks stay with corral.
    let blocked = corral.wait_for_output("tool", "SigBlk:", SECS5);
    assert!(blocked.ends_with("0000000000000000"), "{blocked}");
    let ignored = corral.wait_for_output("tool", "SigIgn:", SECS5);
    assert!(ignored.ends_with("0000000000000000"), "{ignored}");
    corral.wait_for_service_event("tool", "exited with exit code 0", SECS5);
    // Every service has ended: corral exits by itself.
    assert_eq!(corral.wait_exit(SECS5), 0);
}

/// Signals ignored by whoever started corral (as `nohup` or a shell's
/// `trap ''` leave them) are not ignored in its services, nor the ones
/// corral handles itself; nor after a restart.
#[test]
fn signals_ignored_when_corral_started_are_at_their_default_in_services() {
    use std::os::unix::process::CommandExt;
    let project = Project::new(
        r#"
[services.tool]
command = ["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; sleep 0.2"]
restart = "always"
backoff = { initial = "0s", max = "0s" }
"#,
    );
    let mut cmd = project.command(&["up"]);
    // SAFETY: signal(2) only, between fork and exec of the test's child.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGALRM, libc::SIGWINCH, libc::SIGUSR1, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let mut corral = Running::start(cmd);
    for run in 1..=2 {
        let ignored = corral.wait_for_nth("SigIgn:", run, SECS5);
        assert!(
            ignored.ends_with("0000000000000000"),
            "run {run}: {ignored}"
        );
        let blocked = corral.wait_for_nth("SigBlk:", run, SECS5);
        assert!(
            blocked.ends_with("0000000000000000"),
            "run {run}: {blocked}"
        );
    }
    assert_eq!(corral.stop(), 0);
}

#[test]
fn exec_failures_name_the_program_and_the_reason() {
    let project = Project::new("");
    project.write("not-executable", "#!/bin/sh\n");
    project.write(
        "corral.toml",
        r#"
[services.missing]
command = ["no-such-program-anywhere"]
restart = "never"

[services.denied]
command = ["./not-executable"]
restart = "never"

[services.nul]
command = ["echo", "x\u0000y"]
restart = "never"

[services.nul-env]
command = ["echo", "fine"]
restart = "never"
env = { V = "p\u0000q" }
"#,
    );
    let mut corral = project.up();
    let missing = corral.wait_for_service_event("missing", "did not start", SECS5);
    assert!(
        missing.contains("cannot run \"no-such-program-anywhere\": No such file or directory"),
        "{missing}"
    );
    let denied = corral.wait_for_service_event("denied", "did not start", SECS5);
    assert!(
        denied.contains("cannot run \"./not-executable\": Permission denied"),
        "{denied}"
    );
    for name in ["nul", "nul-env"] {
        let nul = corral.wait_for_service_event(name, "did not start", SECS5);
        assert!(
            nul.contains("cannot run \"echo\": a NUL byte in its command, environment"),
            "{nul}"
        );
    }
    corral.stop();
}

/// Out of descriptors (two pipes per running service), a spawn fails with
/// a message that says so and how to raise the limit; the services that
/// did start keep running and corral keeps answering.
#[test]
fn running_out_of_descriptors_says_so() {
    let project = Project::new(&started_at_once(40, r#"["sleep", "60"]"#));
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", BIN, "up"])
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let daemon = Running::start(cmd);
    let line = daemon.wait_for("out of file descriptors", SECS10);
    assert!(
        line.contains("(limit 64)") && line.contains("ulimit -n"),
        "{line}"
    );
    let (code, ps, err) = project.run(&["ps"]);
    assert_eq!(code, 0, "{err}");
    assert!(ps.contains(" running "), "{ps}");
}

#[test]
fn a_burst_of_services_that_end_at_once_is_seen_to_end() {
    // 300 services that end as soon as they start, all started at once:
    // every exit is seen (none lost to a reap racing the bookkeeping of
    // its spawn), and corral ends by itself.
    let project = Project::new(&started_at_once(300, r#"["true"]"#));
    let mut corral = project.up();
    // Corral ends by itself only once it has seen every one end.
    assert_eq!(corral.wait_exit(SECS10), 0);
    // Each end is told: a burst of lifecycle messages waits its turn for
    // the log hub (it never blocks supervision), none is left out.
    let lines = corral.lines();
    let told = lines
        .iter()
        .filter(|l| l.contains(" * exited with exit code 0"))
        .count();
    assert_eq!(told, 300, "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("were not shown")));
}

/// A config of `n` services s0, s1... running `command` (a TOML array), all
/// started at once and never restarted.
fn started_at_once(n: usize, command: &str) -> String {
    let mut config = String::from("[corral]\nparallel = true\n");
    for i in 0..n {
        config.push_str(&format!(
            "\n[services.s{i}]\ncommand = {command}\nrestart = \"never\"\n"
        ));
    }
    config
}

/// Where clone3 is refused (an old kernel, or a seccomp filter as some
/// container runtimes install), corral forks instead: services start, in
/// their cgroup when there is one, and a failed exec is still told with its
/// reason (a forked child reports it through a pipe, not shared memory).
#[cfg(target_arch = "x86_64")]
#[test]
fn without_clone3_services_still_start_and_exec_failures_are_told() {
    use std::os::unix::process::CommandExt;
    let project = Project::new(
        r#"
[services.missing]
command = ["no-such-program-anywhere"]
restart = "never"

[services.app]
command = ["sh", "-c", "echo app-up; exec sleep 60"]
"#,
    );
    let mut cmd = project.command(&["up"]);
    // SAFETY: prctl only, between fork and exec of the test's child.
    unsafe {
        cmd.pre_exec(refuse_clone3);
    }
    let mut corral = Running::start(cmd);
    let missing = corral.wait_for_service_event("missing", "did not start", SECS5);
    assert!(
        missing.contains("cannot run \"no-such-program-anywhere\": No such file or directory"),
        "{missing}"
    );
    corral.wait_for_output("app", "app-up", SECS5);
    let app = corral.started_pid("app", SECS5);
    let tracked = std::fs::read_to_string(format!("/proc/{app}/cgroup")).unwrap();
    let corral_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", corral.pid())).unwrap();
    // In a cgroup of the run when corral could make one, as with clone3.
    if tracked != corral_cgroup {
        assert!(tracked.contains("/corral-"), "{tracked}");
    }
    assert_eq!(corral.stop(), 0);
}

/// Installs a seccomp filter on this process (inherited by what it execs)
/// that fails clone3 with ENOSYS and allows everything else.
#[cfg(target_arch = "x86_64")]
fn refuse_clone3() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SYS_CLONE3: u32 = 435;
    // Classic BPF: ld word at offset; jeq k, jt, jf; ret k.
    let ld = |offset: u32| libc::sock_filter {
        code: 0x20, // BPF_LD | BPF_W | BPF_ABS
        jt: 0,
        jf: 0,
        k: offset,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: 0x15, // BPF_JMP | BPF_JEQ | BPF_K
        jt,
        jf,
        k,
    };
    let ret = |k: u32| libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k,
    };
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    let mut program = [
        ld(4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        ret(ALLOW),
        ld(0), // seccomp_data.nr
        jeq(SYS_CLONE3, 0, 1),
        ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ret(ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl with a filter program that outlives the call.
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) == 0
    };
    if installed {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
