//! Discovery across real network hosts: network namespaces on a bridge (the
//! bridge in a namespace of its own), etcd in one, corrals in the others,
//! each advertising its own address by interface name. Needs root (`ip
//! netns`); skipped with a message otherwise. CI runs as root.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Namespaces of this test: deleted (after their processes) when dropped.
struct Net {
    prefix: String,
    names: Vec<String>,
}

impl Net {
    /// A bridge namespace and one namespace per host, host k at 10.77.0.k/24.
    fn new(tag: &str, hosts: &[&str]) -> Net {
        let prefix = format!("corral-{tag}-{}", std::process::id());
        let mut net = Net {
            prefix: prefix.clone(),
            names: Vec::new(),
        };
        let br = net.add("br");
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (k, host) in hosts.iter().enumerate() {
            let ns = net.add(host);
            let port = format!("p{k}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.0.{}/24", k + 1),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn add(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns]);
        self.names.push(ns.clone());
        ns
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// A command run inside host `name`'s namespace.
    fn exec(&self, name: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name), program]);
        cmd
    }

    /// Cuts (or restores) host `name`'s link to the bridge.
    fn link(&self, name: &str, up: bool, index: usize) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.ns("br"),
            "link",
            "set",
            &format!("p{index}"),
            state,
        ]);
        let _ = name;
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// etcd inside the "etcd" namespace, on 10.77.0.1; killed when dropped.
struct NsEtcd {
    child: Child,
    dir: tempfile::TempDir,
}

impl NsEtcd {
    fn start(net: &Net) -> NsEtcd {
        let dir = tempfile::tempdir().unwrap();
        let child = NsEtcd::spawn(net, &dir);
        let etcd = NsEtcd { child, dir };
        assert!(
            eventually(Duration::from_secs(10), || etcd_call(
                net,
                "/v3/kv/range",
                r#"{"key":"AA=="}"#
            )
            .is_some()),
            "etcd did not come up in its namespace"
        );
        etcd
    }

    fn spawn(net: &Net, dir: &tempfile::TempDir) -> Child {
        net.exec("etcd", "etcd")
            .args(["--name", "n", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", "http://10.77.0.1:2379"])
            .args(["--advertise-client-urls", "http://10.77.0.1:2379"])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "n=http://127.0.0.1:2380"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for NsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs to etcd's gateway from inside its namespace; the answer's body.
fn etcd_call(net: &Net, path: &str, body: &str) -> Option<String> {
    let out = net
        .exec("etcd", "curl")
        .args(["-sf", "-m", "2", "-X", "POST", "-d", body])
        .arg(format!("http://10.77.0.1:2379{path}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn corral_config(host: &str, services: &str) -> String {
    format!(
        r#"
[discovery]
backend = "etcd"
host-id = "{host}"
advertise = "eth0"
etcd = {{ endpoints = ["http://10.77.0.1:2379"], ttl = "2s" }}
{services}"#
    )
}

fn provider(port: u16) -> String {
    format!(
        r#"
[services.db]
command = ["sleep", "600"]
provides = [{{ name = "db", port = {port} }}]
"#
    )
}

const DEPENDENT: &str = r#"
[services.app]
command = ["sh", "-c", "echo addrs=$DB_ADDRS; exec sleep 600"]
requires = ["db"]
change-wait = { min = "50ms", max = "200ms" }
on-change = ["sh", "-c", "echo \"$DB_ADDRS\" >> changes"]
"#;

fn up_in(net: &Net, host: &str, project: &Project) -> Running {
    let mut cmd = net.exec(host, BIN);
    cmd.arg("up")
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1");
    Running::start(cmd)
}

fn last_change(project: &Project) -> String {
    project
        .read("changes")
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn hosts_on_a_bridge_follow_each_other_through_crashes_outages_and_cuts() {
    if !is_root() {
        eprintln!("skipped: network namespaces (ip netns) need root");
        return;
    }
    // Hosts: etcd 10.77.0.1, a .2, b .3, c .4 (link indexes 0..3).
    let net = Net::new("disco", &["etcd", "a", "b", "c"]);
    let mut etcd = NsEtcd::start(&net);
    let a = Project::new(&corral_config("a", &provider(5432)));
    let b = Project::new(&corral_config("b", DEPENDENT));
    let c = Project::new(&corral_config("c", &provider(6000)));

    // B starts with A's endpoint, advertised by A's interface address.
    let mut corral_a = up_in(&net, "a", &a);
    let corral_b = up_in(&net, "b", &b);
    corral_b.wait_for("addrs=10.77.0.2:5432", SECS10);

    // A provider started by C joins B's view.
    let mut corral_c = up_in(&net, "c", &c);
    assert!(
        eventually(SECS10, || last_change(&b)
            == "10.77.0.2:5432,10.77.0.4:6000"),
        "C's provider did not reach B: {:?}",
        b.read("changes")
    );

    // kill -9 of corral A: its endpoint vanishes from B within TTL (2 s) +
    // debounce + 1 s (with room for a loaded machine).
    corral_a.signal(libc::SIGKILL);
    corral_a.wait_exit(SECS5);
    let killed = Instant::now();
    assert!(
        eventually(SECS10, || last_change(&b) == "10.77.0.4:6000"),
        "A's endpoint outlived A: {:?}",
        b.read("changes")
    );
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let (code, out, err) = a.run(&["down"]);
    assert_eq!(code, 0, "sweeping A's killed run: {out}{err}");

    // etcd killed and restarted: nothing lost, no action, changes still arrive.
    let changes = b.read("changes");
    let _ = etcd.child.kill();
    let _ = etcd.child.wait();
    corral_b.wait_for("discovery degraded", SECS10);
    std::thread::sleep(Duration::from_secs(3));
    etcd.child = NsEtcd::spawn(&net, &etcd.dir);
    corral_b.wait_for("discovery healthy", Duration::from_secs(20));
    assert_eq!(b.read("changes"), changes, "the outage alone acted");
    let mut corral_a = up_in(&net, "a", &a);
    assert!(
        eventually(SECS10, || last_change(&b)
            == "10.77.0.2:5432,10.77.0.4:6000"),
        "a change after etcd's restart did not arrive: {:?}; etcd has {:?}; B shows {}",
        b.read("changes"),
        etcd_call(
            &net,
            "/v3/kv/range",
            r#"{"key":"Y29ycmFsLw==","range_end":"Y29ycmFsMA=="}"#
        ),
        b.run(&["endpoints"]).1
    );

    // B's link is cut for longer than the TTL: B keeps its last endpoints
    // (its own lease runs out meanwhile); A goes away and the history is
    // compacted while B cannot see it; when the link returns, B re-lists
    // and converges.
    net.link("b", false, 2);
    corral_b.wait_for_nth("discovery degraded", 2, SECS10);
    let changes = b.read("changes");
    assert_eq!(corral_a.stop(), 0);
    let status = etcd_call(&net, "/v3/kv/range", r#"{"key":"AA=="}"#).unwrap();
    let revision: String = status
        .split("\"revision\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    etcd_call(
        &net,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{revision}","physical":true}}"#),
    )
    .expect("compaction");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.read("changes"), changes, "B acted while cut off");
    let (_, table, _) = b.run(&["endpoints"]);
    assert!(
        table.contains("10.77.0.2:5432"),
        "B dropped its last view: {table}"
    );
    net.link("b", true, 2);
    assert!(
        eventually(Duration::from_secs(20), || last_change(&b)
            == "10.77.0.4:6000"),
        "B did not converge after the cut: {:?}",
        b.read("changes")
    );
    corral_b.wait_for_nth("discovery healthy", 2, SECS10);
    assert_eq!(corral_c.stop(), 0);
    drop(corral_b);
}
