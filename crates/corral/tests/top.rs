//! `corral top`, driven in a real terminal: tmux, keys sent with send-keys,
//! the screen read with capture-pane. Each test has its own tmux server
//! (a socket in its temp dir), ended when the test ends.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A tmux server of this test's own, with one pane.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Runs `script` (sh) in a 150x40 pane of a new server.
    fn start(project: &Project, script: &str) -> Tmux {
        let tmux = Tmux {
            socket: project.file("tmux.sock"),
        };
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&tmux.socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "150",
                "-y",
                "40",
            ])
            .arg(script)
            .args([";", "set-option", "-g", "remain-on-exit", "on"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color")
            .current_dir(project.path())
            .status()
            .expect("tmux (scripts/test installs it)");
        assert!(status.success());
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn display(&self, format: &str) -> String {
        self.run(&["display-message", "-p", format])
            .trim()
            .to_string()
    }

    /// Waits until the screen shows `cond`; the screen as last seen.
    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        let seen = eventually(SECS10, || {
            screen = self.screen();
            cond(&screen)
        });
        assert!(seen, "{what}; the screen:\n{screen}");
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The shell line that runs top for the project, then records the
/// terminal's modes once it has left, and stays (a dead pane's notice
/// would hide the cursor tmux reports).
fn top_script() -> String {
    format!("{BIN} top; stty -a > stty.txt; echo left > done.txt; exec sleep 600")
}

const CONFIG: &str = r#"
[services.alpha]
command = ["sleep", "600"]

[services.beta]
command = ["sh", "-c", "trap 'echo beta got the signal' USR1; while :; do sleep 0.1; done"]

[services.broken]
command = ["sh", "-c", "exit 4"]
restart = "never"
"#;

/// A row of the table: the service's name first, then its cells (a line
/// of the log pane has `|` or `*` after the name).
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        let mut cells = l.split_whitespace();
        cells.next() == Some(name) && !matches!(cells.next(), Some("|" | "*"))
    })
}

fn pid_of(project: &Project, name: &str) -> i64 {
    get_json(project, &format!("/v1/services/{name}"))["pid"]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn top_lists_every_service_restarts_one_and_shows_its_output() {
    let project = Project::new(CONFIG);
    let daemon = project.up();
    daemon.wait_for_service_event("broken", "exit code 4", SECS5);
    daemon.started_pid("beta", SECS5);
    let tmux = Tmux::start(&project, &top_script());

    let screen = tmux.wait_screen("every service with its state", |s| {
        row(s, "alpha").is_some_and(|r| r.contains("running"))
            && row(s, "beta").is_some_and(|r| r.contains("running"))
            && row(s, "broken").is_some_and(|r| r.contains("failed") && r.contains("exit code 4"))
    });
    assert!(
        screen.contains("3 services: 2 running, 1 failed"),
        "{screen}"
    );

    // The second row, restarted from the UI after a confirmation.
    let before = pid_of(&project, "beta");
    tmux.keys(&["j", "r"]);
    tmux.wait_screen("a confirmation", |s| s.contains("restart beta?"));
    tmux.keys(&["y"]);
    assert!(
        eventually(SECS10, || {
            let now = pid_of(&project, "beta");
            now != 0 && now != before
        }),
        "beta kept pid {before}"
    );
    let after = pid_of(&project, "beta");
    tmux.wait_screen("the new pid's start in the log pane", |s| {
        s.contains(&format!("started (pid {after})"))
    });

    // A line the service prints now shows in the log pane (of beta alone).
    tmux.keys(&["l"]);
    tmux.wait_screen("the pane following beta", |s| s.contains("logs: beta"));
    // The signal, sent from the UI: z, its name, Enter, then y.
    tmux.keys(&["z"]);
    tmux.wait_screen("the signal prompt", |s| {
        s.contains("signal to send to beta")
    });
    tmux.keys(&["-l", "usr1"]);
    tmux.keys(&["Enter"]);
    tmux.wait_screen("a confirmation", |s| s.contains("send USR1 to beta?"));
    tmux.keys(&["y"]);
    tmux.wait_screen("beta's line", |s| {
        s.lines()
            .any(|l| l.starts_with("beta") && l.contains("| beta got the signal"))
    });

    // Search keeps the matching lines only.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "got the"]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_screen("the search", |s| s.contains("lines with \"got the\""));
    let pane = screen.split("logs: beta").nth(1).unwrap();
    assert!(
        pane.lines()
            .filter(|l| l.starts_with("beta ") && (l.contains(" | ") || l.contains(" * ")))
            .all(|l| l.contains("got the")),
        "{screen}"
    );

    // Refused with anything but y: nothing is stopped.
    tmux.keys(&["x"]);
    tmux.wait_screen("a confirmation", |s| s.contains("stop beta?"));
    tmux.keys(&["n"]);
    tmux.wait_screen("cancelled", |s| s.contains("cancelled"));
    assert_eq!(state_of(&project, "beta"), "running");
}

/// Leaves top with `how`, then checks the terminal is as it was: the main
/// screen back, line editing and echo on.
fn leaves_the_terminal_clean(how: &str) {
    let project = Project::new(CONFIG);
    let _daemon = project.up();
    wait_for_socket(&project);
    let tmux = Tmux::start(&project, &top_script());
    tmux.wait_screen("the table", |s| row(s, "alpha").is_some());
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "top uses the alternate screen"
    );
    match how {
        "q" => tmux.keys(&["q"]),
        "ctrl-c" => tmux.keys(&["C-c"]),
        _ => {
            // SIGTERM to top itself, the shell's child.
            let shell: i32 = tmux.display("#{pane_pid}").parse().unwrap();
            let top = (1..)
                .take(100)
                .find_map(|_| {
                    let found = std::fs::read_dir("/proc").ok()?.find_map(|e| {
                        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                        (parent_of(pid) == Some(shell)).then_some(pid)
                    });
                    if found.is_none() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    found
                })
                .expect("top's pid");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(top),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        }
    }
    assert!(
        eventually(SECS10, || project.read("done.txt").contains("left")),
        "top did not leave on {how}:\n{}",
        tmux.screen()
    );
    let stty = project.read("stty.txt");
    let modes: Vec<&str> = stty.split_whitespace().collect();
    for mode in ["icanon", "echo", "icrnl", "opost", "isig"] {
        assert!(modes.contains(&mode), "{mode} is off after {how}: {stty}");
    }
    // tmux reads what top wrote last on its own time: wait for it.
    let mut flags = String::new();
    let restored = eventually(SECS5, || {
        flags = tmux.display("alternate #{alternate_on} cursor #{cursor_flag}");
        flags == "alternate 0 cursor 1"
    });
    assert!(
        restored,
        "after {how}: {flags} (the main screen and a visible cursor expected)"
    );
}

#[test]
fn q_leaves_the_terminal_clean() {
    leaves_the_terminal_clean("q");
}

#[test]
fn ctrl_c_leaves_the_terminal_clean() {
    leaves_the_terminal_clean("ctrl-c");
}

#[test]
fn sigterm_leaves_the_terminal_clean() {
    leaves_the_terminal_clean("sigterm");
}

#[test]
fn top_without_a_terminal_is_a_clear_error() {
    let project = Project::new(CONFIG);
    let _daemon = project.up();
    wait_for_socket(&project);
    let (code, out, err) = project.run(&["top"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("corral top needs a terminal"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(out.is_empty(), "{out}");
}

#[test]
fn top_scales_a_replicated_service_up_and_down() {
    let project = Project::new("[services.api]\ncommand = [\"sleep\", \"600\"]\nreplicas = 2\n");
    let daemon = project.up();
    daemon.started_pid("api.1", SECS5);
    let tmux = Tmux::start(&project, &top_script());
    tmux.wait_screen("two instances", |s| {
        row(s, "api.1").is_some_and(|r| r.contains("running")) && row(s, "api.2").is_none()
    });
    tmux.keys(&["+"]);
    tmux.wait_screen("a third instance", |s| {
        row(s, "api.2").is_some_and(|r| r.contains("running"))
    });
    tmux.keys(&["-"]);
    tmux.wait_screen("a confirmation", |s| s.contains("scale api to 2?"));
    tmux.keys(&["y"]);
    tmux.wait_screen("two instances again", |s| {
        row(s, "api.1").is_some() && row(s, "api.2").is_none()
    });
    let (_, ps, _) = project.run(&["ps"]);
    assert!(!ps.contains("api.2"), "{ps}");
}

#[test]
fn top_shows_what_a_service_says_of_itself() {
    let project = Project::new(
        r#"
[services.talker]
command = ["python3", "talker.py"]
notify = true
"#,
    );
    project.write(
        "talker.py",
        "import os, socket, time\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1\\nSTATUS=42 jobs queued', '\\0' + os.environ['NOTIFY_SOCKET'][1:])\n\
         time.sleep(600)\n",
    );
    let daemon = project.up();
    daemon.wait_for_service_event("talker", "ready after", SECS10);
    let tmux = Tmux::start(&project, &top_script());
    tmux.wait_screen("the STATUS column", |s| {
        s.contains("STATUS") && row(s, "talker").is_some_and(|r| r.contains("42 jobs queued"))
    });
}
