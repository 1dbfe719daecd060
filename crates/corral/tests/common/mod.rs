//! Test support: runs the real corral binary on a config in a temp dir and
//! watches its console output.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A scratch directory with a corral.toml in it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(config: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("corral.toml"), config).expect("write config");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.file(name), text).expect("write file");
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_default()
    }

    /// A command running corral with a clean environment (PATH only) in the project dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1");
        cmd
    }

    /// Starts `corral up` and begins collecting its output.
    pub fn up(&self) -> Running {
        self.up_with(&[], &[])
    }

    pub fn up_with(&self, env: &[(&str, &str)], args: &[&str]) -> Running {
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        let mut cmd = self.command(&all);
        cmd.envs(env.iter().copied());
        Running::start(cmd)
    }

    /// Runs corral to completion: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_with_env(args, &[])
    }

    /// `run` with these variables in corral's environment.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run corral");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Console lines with the time they were read.
#[derive(Default)]
struct Output {
    lines: Vec<(Instant, String)>,
    closed: bool,
}

/// A running corral whose stdout is being collected.
pub struct Running {
    pub child: Child,
    output: Arc<(Mutex<Output>, Condvar)>,
    status: Option<ExitStatus>,
}

impl Running {
    pub fn start(cmd: Command) -> Running {
        Running::start_with_stderr(cmd, Stdio::inherit())
    }

    /// As `start`, with corral's stderr going to `stderr` (null for a test
    /// that expects many refusals).
    pub fn start_with_stderr(mut cmd: Command, stderr: Stdio) -> Running {
        cmd.stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn corral");
        let stdout = child.stdout.take().expect("stdout");
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let shared = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("  | {line}");
                let (lock, cv) = &*shared;
                lock.lock()
                    .expect("lock")
                    .lines
                    .push((Instant::now(), line));
                cv.notify_all();
            }
            let (lock, cv) = &*shared;
            lock.lock().expect("lock").closed = true;
            cv.notify_all();
        });
        Running {
            child,
            output,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until a line containing `needle` appears; returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> String {
        self.wait_for_line(n, timeout, &format!("{n}x {needle:?}"), |l| {
            l.contains(needle)
        })
    }

    /// Waits until `n` lines satisfy `pred`; returns the n-th. `what` names
    /// the line in the failure message, which shows everything corral printed.
    pub fn wait_for_line(
        &self,
        n: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.output;
        let mut out = lock.lock().expect("lock");
        loop {
            if let Some((_, l)) = out.lines.iter().filter(|(_, l)| pred(l)).nth(n - 1) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline || out.closed {
                let all: Vec<&str> = out.lines.iter().map(|(_, l)| l.as_str()).collect();
                panic!("no {what} in corral output:\n{}", all.join("\n"));
            }
            out = cv.wait_timeout(out, deadline - now).expect("wait").0;
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        let (lock, _) = &*self.output;
        lock.lock()
            .expect("lock")
            .lines
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Index of the first line containing `needle`.
    pub fn position(&self, needle: &str) -> Option<usize> {
        self.lines().iter().position(|l| l.contains(needle))
    }

    /// Pid from a "<name> * started (pid N)" line.
    pub fn started_pid(&self, service: &str, timeout: Duration) -> i32 {
        let line = self.wait_for_service_event(service, "started (pid ", timeout);
        line.rsplit("pid ")
            .next()
            .and_then(|s| s.trim_end_matches(')').parse().ok())
            .expect("pid in started line")
    }

    /// Pid from the n-th "<name> * started (pid N)" line.
    pub fn started_pid_nth(&self, service: &str, n: usize) -> i32 {
        let line = self.wait_for_service_event_nth(service, "started (pid ", n, SECS5);
        line.rsplit("pid ")
            .next()
            .and_then(|s| s.trim_end_matches(')').parse().ok())
            .expect("pid in started line")
    }

    /// Waits for an output line `service | <text...>`.
    pub fn wait_for_output(&self, service: &str, text: &str, timeout: Duration) -> String {
        let what = format!("`{service} | ...{text}`");
        self.wait_for_line(1, timeout, &what, |l| is_line_of(l, service, '|', text))
    }

    /// Index of the n-th event line `service * <text...>`, if there is one yet.
    pub fn event_position(&self, service: &str, text: &str, n: usize) -> Option<usize> {
        self.lines()
            .iter()
            .enumerate()
            .filter(|(_, l)| is_line_of(l, service, '*', text))
            .nth(n - 1)
            .map(|(i, _)| i)
    }

    /// Waits for an event line `service * <text...>`.
    pub fn wait_for_service_event(&self, service: &str, text: &str, timeout: Duration) -> String {
        self.wait_for_service_event_nth(service, text, 1, timeout)
    }

    /// Waits for the n-th event line `service * <text...>`.
    pub fn wait_for_service_event_nth(
        &self,
        service: &str,
        text: &str,
        n: usize,
        timeout: Duration,
    ) -> String {
        let what = format!("`{service} * ...{text}`");
        self.wait_for_line(n, timeout, &what, |l| is_line_of(l, service, '*', text))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for corral to exit; returns its exit code (128+signal if killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            if Instant::now() >= deadline {
                panic!("corral did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks corral to shut down and waits for it.
    pub fn stop(&mut self) -> i32 {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a console line is `service | <text...>` or `service * <text...>`
/// (`sep` is '|' or '*'), whatever the padding of the name column.
pub fn is_line_of(line: &str, service: &str, sep: char, text: &str) -> bool {
    line.split_once(&format!(" {sep} "))
        .is_some_and(|(name, rest)| name.trim_end() == service && rest.contains(text))
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Every process that has `marker` in its command line (a test's own tag).
pub fn pids_with_marker(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// The parent pid of a process, from /proc.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A shell loop whose command line carries `tag`, so a test can find it.
pub fn looping(tag: &str) -> String {
    format!("sh -c 'while :; do sleep 1; done' {tag}")
}

/// The shell loop tagged `tag` (its last argument), not a fork of it on its
/// way to exec `sleep`, nor a fork of the service's script (whose text holds
/// every tag) on its way to exec a loop.
pub fn loop_of(tag: &str) -> Option<i32> {
    let last_arg = |pid: i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let last = cmdline.split(|&b| b == 0).rfind(|a| !a.is_empty())?;
        Some(String::from_utf8_lossy(last).into_owned())
    };
    pids_with_marker(tag).into_iter().find(|&pid| {
        last_arg(pid).as_deref() == Some(tag)
            && parent_of(pid).and_then(last_arg).as_deref() != Some(tag)
    })
}

/// A marker unique to one test, to find its processes in /proc.
pub fn marker(name: &str) -> String {
    format!("corraltest-{name}-{}", std::process::id())
}

/// Seconds since the epoch as float, read from a file a service wrote with `date +%s.%N`.
pub fn read_times(project: &Project, name: &str) -> Vec<f64> {
    project
        .read(name)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits (bounded) until `cond` holds, checking every 20 ms.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub const SECS5: Duration = Duration::from_secs(5);
pub const SECS10: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tiny HTTP server for tests: `python3 server.py PORT DELAY STAMP` sleeps
/// DELAY seconds, writes the time to STAMP, then binds PORT and answers 200.
pub const HTTP_SERVER: &str = r#"
import http.server, sys, time
port, delay, stamp = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(delay)
with open(stamp, "w") as f:
    f.write(repr(time.time()))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// Context switches of every thread of a process so far.
pub fn context_switches(pid: i32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches")
                || line.starts_with("nonvoluntary_ctxt_switches")
            {
                total += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// The control socket of a project's daemon.
pub fn socket_of(project: &Project) -> PathBuf {
    project.path().join(".corral").join("corral.sock")
}

/// One raw HTTP/1.0 request over the control socket: (status, body).
pub fn raw_http(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).expect("connect to the control socket");
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write request");
    // The daemon may answer (413) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `GET path` on the project's control socket; the JSON answer (status 200 asserted).
pub fn get_json(project: &Project, path: &str) -> serde_json::Value {
    let (status, body) = raw_http(&socket_of(project), "GET", path, b"");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a JSON answer")
}

/// The state of a service as the API reports it.
pub fn state_of(project: &Project, name: &str) -> String {
    get_json(project, &format!("/v1/services/{name}"))["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until the daemon's socket accepts connections.
pub fn wait_for_socket(project: &Project) {
    let socket = socket_of(project);
    assert!(
        eventually(SECS10, || std::os::unix::net::UnixStream::connect(&socket)
            .is_ok()),
        "no control socket at {}",
        socket.display()
    );
}

/// Whether a table (`corral ps`) has a row for `name` that mentions `text`.
pub fn has_row(table: &str, name: &str, text: &str) -> bool {
    table
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name) && l.contains(text))
}

/// An etcd of one test's own (Debian's etcd-server): its own data dir and
/// free client and peer ports; killed (by pid) when dropped.
pub struct Etcd {
    child: Child,
    pub client: String,
    peer: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let child = Etcd::spawn(&dir, &client, &peer);
        let etcd = Etcd {
            child,
            client,
            peer,
            dir,
        };
        etcd.wait_ready();
        etcd
    }

    fn spawn(dir: &tempfile::TempDir, client: &str, peer: &str) -> Child {
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcd (scripts/test installs Debian's etcd-server)")
    }

    /// Waits until etcd answers a range request.
    pub fn wait_ready(&self) {
        assert!(
            eventually(Duration::from_secs(10), || self.keys("corral/").is_some()),
            "etcd did not come up on {}",
            self.client
        );
    }

    /// SIGKILLs etcd.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same data and ports.
    pub fn start_again(&mut self) {
        self.child = Etcd::spawn(&self.dir, &self.client, &self.peer);
        self.wait_ready();
    }

    /// The keys under `prefix` (decoded), through etcd's JSON gateway with curl.
    pub fn keys(&self, prefix: &str) -> Option<Vec<String>> {
        let b64 = |s: &[u8]| base64_encode(s);
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = format!(
            r#"{{"key":"{}","range_end":"{}","keys_only":true}}"#,
            b64(prefix.as_bytes()),
            b64(&end)
        );
        let out = Command::new("curl")
            .args(["-sf", "-m", "2", "-X", "POST", "-d", &body])
            .arg(format!("http://{}/v3/kv/range", self.client))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
        Some(
            kvs.iter()
                .filter_map(|kv| base64_decode(kv["key"].as_str()?))
                .collect(),
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(text: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = bits << 6 | B64.iter().position(|&b| b == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// A process's resident memory in kB (VmRSS), 0 if it cannot be read.
pub fn rss_of(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}
