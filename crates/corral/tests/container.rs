//! corral in the smallest image people build: a root that holds only the
//! static corral, busybox, /etc/passwd, /etc/group and a corral.toml (no C
//! library, no /dev), mounted read-only but for a tmpfs on /run, with
//! corral as PID 1 of its own PID namespace.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The static executable: CORRAL_STATIC, else the musl release build that
/// scripts/test makes. None (the test says skipped) where neither is built
/// and CI is not set; under CI a missing build fails the test.
fn static_corral() -> Option<PathBuf> {
    let path = std::env::var_os("CORRAL_STATIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-musl/release/corral")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no static build at {}: scripts/test makes it (scripts/build-static)",
        path.display()
    );
    eprintln!(
        "skipped: no static build at {} (scripts/build-static makes it)",
        path.display()
    );
    None
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

const CONFIG: &str = r#"[corral]
stop-grace = "3s"

[services.web]
command = ["sh", "-c", "echo web up; exec sleep 1000"]

[services.worker]
command = ["sh", "-c", "echo worker uid $(id -u) gid $(id -g) home $HOME; trap 'echo worker got USR1' USR1; while true; do sleep 1; done"]
user = "app"
forward-signals = ["SIGUSR1"]

[services.stubborn]
command = ["sh", "-c", "trap '' TERM; echo stubborn up; while true; do sleep 1; done"]
stop-timeout = "30s"
post = ["sh", "-c", "echo post ran"]
"#;

/// The image: / with bin (busybox and its links), usr/bin/corral, etc,
/// app/corral.toml, and empty run, proc and tmp to mount on.
fn build_root(root: &Path, corral: &Path) {
    for dir in [
        "bin", "usr/bin", "etc", "app", "run", "proc", "tmp", "home/app",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "sleep", "id", "echo", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::copy(corral, root.join("usr/bin/corral")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nthis line is not a passwd entry\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    std::fs::write(root.join("app/corral.toml"), CONFIG).unwrap();
}

/// The host pid of the process that `unshare --fork` started (corral, once
/// its shell has exec'd it).
fn child_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the corral of the image from a second process that enters its
/// root, mount and PID namespaces, as `docker exec` does.
fn exec_in(init: i32, wd: &str, args: &[&str]) -> (i32, String) {
    // nsenter opens --wd=DIR before it enters the root: the image's shell
    // changes directory instead.
    let out = Command::new("nsenter")
        .arg(format!("--target={init}"))
        .args(["--pid", "--mount", "--root", "--wd", "/bin/sh", "-c"])
        .arg(format!("cd {wd} && exec /usr/bin/corral \"$@\"",))
        .arg("sh")
        .args(args)
        .env_clear()
        .env("PATH", "/bin:/usr/bin")
        .env("NO_COLOR", "1")
        .output()
        .expect("run nsenter");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_static_corral_runs_a_read_only_image_as_pid1() {
    let Some(corral) = static_corral() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: new mount and PID namespaces need root");
        return;
    }
    let elf = std::fs::read(&corral).unwrap();
    assert!(
        !has_interpreter(&elf),
        "{} needs a dynamic loader",
        corral.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    build_root(&root, &corral);
    let root_s = root.to_str().unwrap();
    // The root bound read-only on itself, a tmpfs on /run for the state
    // directory, /proc of the new PID namespace; then the shell (PID 1)
    // execs corral in the root: corral is PID 1.
    let script = format!(
        "mount --bind {root_s} {root_s} && mount -o remount,bind,ro {root_s} \
         && mount -t tmpfs -o mode=755 tmpfs {root_s}/run && mount -t proc proc {root_s}/proc \
         && cd {root_s} && exec chroot {root_s} /usr/bin/corral -f /app/corral.toml up"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--propagation",
        "private",
    ])
    .args(["sh", "-c"])
    .arg(&script)
    .env_clear()
    .env("PATH", "/bin:/usr/bin:/sbin:/usr/sbin")
    .env("NO_COLOR", "1");
    let mut image = Running::start(cmd);
    image.wait_for_output("web", "web up", SECS10);
    image.wait_for_output("stubborn", "stubborn up", SECS10);
    // The worker runs as the image's non-root user, found in /etc/passwd
    // without NSS (the broken line before it skipped).
    image.wait_for_output("worker", "worker uid 1000 gid 1000 home /home/app", SECS10);
    image.wait_for("state directory: /run/corral/app-", SECS5);
    // No /sys in the image: one line says which guarantee is weaker.
    image.wait_for("no writable cgroup v2 tree here", SECS5);

    let init = child_of(image.pid()).expect("unshare's child");
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{init}/comm"))
            .unwrap()
            .trim(),
        "corrald"
    );

    // `docker exec c corral ps`: from the config's directory, with -f from
    // elsewhere, and from a directory without a config (the PID-1 link).
    for (wd, args) in [
        ("/app", &["ps"][..]),
        ("/", &["-f", "/app/corral.toml", "ps"][..]),
        ("/tmp", &["ps"][..]),
    ] {
        let (code, out) = exec_in(init, wd, args);
        assert_eq!(code, 0, "corral {args:?} in {wd}:\n{out}");
        for name in ["web", "worker", "stubborn"] {
            assert!(has_row(&out, name, "running"), "{args:?} in {wd}:\n{out}");
        }
    }

    // SIGUSR1 goes only to the service that asks for it; nothing restarts.
    let web = image.started_pid("web", SECS5);
    // SAFETY: kill(2) on corral's host pid, a process this test started.
    unsafe { libc::kill(init, libc::SIGUSR1) };
    image.wait_for_output("worker", "worker got USR1", SECS10);
    image.wait_for("SIGUSR1 received: passed on to worker", SECS5);
    let (_, out) = exec_in(init, "/app", &["ps"]);
    assert!(has_row(&out, "web", "running"), "{out}");
    assert_eq!(image.started_pid("web", SECS5), web);
    assert!(
        !image
            .lines()
            .iter()
            .any(|l| l.contains("SIGUSR1") && l.contains("exited")),
        "a service ended on SIGUSR1"
    );

    // SIGTERM, as docker stop sends: the stubborn service ignores it, its
    // 30 s stop-timeout is cut to fit the 3 s grace, its post step still
    // runs, and corral exits 0 inside the grace.
    let asked = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(init, libc::SIGTERM) };
    let code = image.wait_exit(Duration::from_secs(20));
    let took = asked.elapsed();
    assert_eq!(code, 0, "exit code of a clean SIGTERM shutdown");
    assert!(
        took < Duration::from_secs(3),
        "the shutdown took {took:?}, past the 3 s grace"
    );
    let lines = image.lines().join("\n");
    assert!(
        lines.contains("fitting the shutdown into stop-grace 3s"),
        "{lines}"
    );
    assert!(lines.contains("post ran"), "the post step ran:\n{lines}");
    // Nothing is left of the image: no process has its root there.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == root))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "processes left in the image: {left:?}");
}
