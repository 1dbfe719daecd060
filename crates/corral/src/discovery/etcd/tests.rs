//! The gateway client against a real etcd (Debian's etcd-server), one
//! private etcd per test: its own data dir, client and peer ports.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gateway::{Change, Gateway, KeyValue, WatchMessage};

/// An etcd of this test's own; killed (by pid) when dropped.
struct TestEtcd {
    child: Child,
    client: String,
    peer: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl TestEtcd {
    fn start() -> TestEtcd {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let child = TestEtcd::spawn(&dir, &client, &peer);
        TestEtcd {
            child,
            client,
            peer,
            dir,
        }
    }

    /// Kills etcd and starts it again on the same data and ports.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = TestEtcd::spawn(&self.dir, &self.client, &self.peer);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): scripts/test installs it (Debian's etcd-server)")
            })
    }

    fn gateway(&self) -> Gateway {
        Gateway::new(vec![self.client.clone()], Duration::from_secs(5))
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of etcd members on loopback, each with its own data dir and
/// ports; members are killed and restarted by index.
struct TestCluster {
    members: Vec<Option<Child>>,
    clients: Vec<String>,
    peers: Vec<String>,
    dir: tempfile::TempDir,
}

impl TestCluster {
    fn start(n: usize) -> TestCluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clients: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let mut cluster = TestCluster {
            members: (0..n).map(|_| None).collect(),
            clients,
            peers,
            dir,
        };
        for i in 0..n {
            cluster.restart(i);
        }
        cluster
    }

    /// Starts member `i` (again, on its data, if it ran before).
    fn restart(&mut self, i: usize) {
        self.kill(i);
        let initial: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .map(|(k, p)| format!("m{k}=http://{p}"))
            .collect();
        let (client, peer) = (
            format!("http://{}", self.clients[i]),
            format!("http://{}", self.peers[i]),
        );
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(self.dir.path().join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", "corral-test"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run etcd ({e})"));
        self.members[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.members[i] {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("{signal}: {e}"));
        }
    }

    /// A gateway to every member.
    fn gateway(&self) -> Gateway {
        Gateway::new(self.clients.clone(), Duration::from_secs(2))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A current-thread loop, as corral's own.
fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .block_on(f)
}

/// Waits until etcd answers (it starts in well under a second).
async fn ready(g: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.range_prefix("ping/").await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

#[test]
fn put_range_and_delete_stay_within_their_prefix() {
    let etcd = TestEtcd::start();
    run(async {
        let g = etcd.gateway();
        ready(&g).await;
        let r1 = g
            .put("corral/svc/db/h1:db", b"{\"port\":5432}", 0)
            .await
            .unwrap_or_default();
        let r2 = g
            .put("corral/svc/db/h2:db", b"two", 0)
            .await
            .unwrap_or_default();
        g.put("corral/svcx", b"outside", 0)
            .await
            .unwrap_or_default();
        g.put("other/svc/db", b"outside", 0)
            .await
            .unwrap_or_default();
        assert!(r2 > r1, "revisions grow: {r1} {r2}");
        let (kvs, rev) = g.range_prefix("corral/svc/").await.unwrap_or_default();
        assert_eq!(keys(&kvs), ["corral/svc/db/h1:db", "corral/svc/db/h2:db"]);
        assert_eq!(kvs[0].value, b"{\"port\":5432}");
        assert!(rev >= r2);
        g.delete("corral/svc/db/h1:db").await.unwrap_or_default();
        let (kvs, _) = g.range_prefix("corral/svc/").await.unwrap_or_default();
        assert_eq!(keys(&kvs), ["corral/svc/db/h2:db"]);
        g.delete_prefix("corral/").await.unwrap_or_default();
        let (kvs, _) = g.range_prefix("corral").await.unwrap_or_default();
        assert!(kvs.is_empty(), "{kvs:?}");
        let (kvs, _) = g.range_prefix("other/").await.unwrap_or_default();
        assert_eq!(keys(&kvs), ["other/svc/db"]);
    });
}

#[test]
fn a_lease_keeps_its_keys_until_revoked_or_expired() {
    let etcd = TestEtcd::start();
    run(async {
        let g = etcd.gateway();
        ready(&g).await;
        let lease = g
            .grant(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(lease.ttl >= 4, "{lease:?}");
        g.put("corral/svc/a/x", b"1", lease.id)
            .await
            .unwrap_or_default();
        let (kvs, _) = g.range_prefix("corral/").await.unwrap_or_default();
        assert_eq!(kvs[0].lease, lease.id);
        assert!(g.keep_alive(lease.id).await.unwrap_or_default() > 0);
        g.revoke(lease.id).await.unwrap_or_else(|e| panic!("{e}"));
        let (kvs, _) = g.range_prefix("corral/").await.unwrap_or_default();
        assert!(kvs.is_empty(), "revoking the lease deletes its keys");
        assert!(
            g.keep_alive(lease.id).await.unwrap_or(0) <= 0,
            "a revoked lease is gone"
        );
        // A lease nobody renews expires with its keys.
        let short = g
            .grant(Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        g.put("corral/svc/b/y", b"1", short.id)
            .await
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (kvs, _) = g.range_prefix("corral/").await.unwrap_or_default();
            if kvs.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the key outlived its lease");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// The next watch message, within 5 s.
async fn next(w: &mut super::gateway::Watch) -> Option<WatchMessage> {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap_or_else(|_| panic!("no watch message"))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_watch_sees_every_change_after_its_start_revision() {
    let etcd = TestEtcd::start();
    run(async {
        let g = etcd.gateway();
        ready(&g).await;
        let before = g.put("corral/svc/a/1", b"old", 0).await.unwrap_or_default();
        let mut watch = g
            .watch("corral/svc/", before + 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            next(&mut watch).await,
            Some(WatchMessage::Created { .. })
        ));
        let put = g.put("corral/svc/a/2", b"new", 0).await.unwrap_or_default();
        g.put("elsewhere/x", b"-", 0).await.unwrap_or_default();
        let deleted = g.delete("corral/svc/a/1").await.unwrap_or_default();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match next(&mut watch).await {
                Some(WatchMessage::Events { revision, changes }) => {
                    assert!(revision >= put);
                    seen.extend(changes);
                }
                Some(WatchMessage::Progress { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            matches!(&seen[0], Change::Put(kv) if kv.key == "corral/svc/a/2" && kv.value == b"new" && kv.mod_revision == put)
        );
        assert_eq!(
            seen[1],
            Change::Delete {
                key: "corral/svc/a/1".into(),
                mod_revision: deleted
            }
        );
    });
}

#[test]
fn a_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let etcd = TestEtcd::start();
    run(async {
        let g = etcd.gateway();
        ready(&g).await;
        let first = g.put("corral/svc/a/1", b"1", 0).await.unwrap_or_default();
        let last = g.put("corral/svc/a/1", b"2", 0).await.unwrap_or_default();
        let _: serde_json::Value = g
            .call(
                "/v3/kv/compaction",
                &serde_json::json!({ "revision": last.to_string() }),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut watch = g
            .watch("corral/svc/", first)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut canceled = None;
        for _ in 0..3 {
            let message = next(&mut watch).await;
            if let Some(WatchMessage::Canceled {
                compact_revision, ..
            }) = message
            {
                canceled = Some(compact_revision);
                break;
            }
        }
        assert_eq!(canceled, Some(last), "canceled, naming the compaction");
    });
}

#[test]
fn the_next_endpoint_answers_when_the_first_is_down() {
    let etcd = TestEtcd::start();
    run(async {
        let closed = format!("127.0.0.1:{}", free_port());
        let g = Gateway::new(
            vec![closed.clone(), etcd.client.clone()],
            Duration::from_secs(5),
        );
        ready(&g).await;
        assert!(g.put("corral/x", b"1", 0).await.is_ok());
        let down = Gateway::new(vec![closed.clone()], Duration::from_secs(1));
        let err = down
            .put("corral/x", b"1", 0)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(&closed)),
            "the error names the endpoint: {err:?}"
        );
    });
}

/// A watch catching up on more than 1,000 revisions gets them in several
/// messages, each with the header at the current revision; one broken
/// after the first message and resumed from `seen_up_to` misses nothing.
#[test]
fn a_catching_up_watch_resumed_after_its_first_message_misses_nothing() {
    const CHANGES: i64 = 1500;
    let etcd = TestEtcd::start();
    run(async {
        let g = etcd.gateway();
        ready(&g).await;
        let mut first = 0;
        for i in 0..CHANGES {
            let revision = g
                .put(&format!("corral/svc/k/{i}"), b"v", 0)
                .await
                .unwrap_or_default();
            if i == 0 {
                first = revision;
            }
        }
        let mut watch = g
            .watch("corral/svc/", first)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (header, events, resume) = loop {
            match next(&mut watch).await {
                Some(message @ WatchMessage::Events { .. }) => {
                    let resume = message.seen_up_to().unwrap_or_default();
                    let WatchMessage::Events { revision, changes } = message else {
                        unreachable!()
                    };
                    break (revision, changes.len() as i64, resume);
                }
                Some(_) => continue,
                None => panic!("the watch ended"),
            }
        };
        // The premise: a partial batch, the header already at the end.
        assert!(events < CHANGES, "{events} events in the first message");
        assert_eq!(header, first + CHANGES - 1);
        assert_eq!(resume, first + events - 1);
        drop(watch);
        // Resumed at what was seen (that event again), the rest follows.
        let mut watch = g
            .watch("corral/svc/", resume)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut seen = events - 1;
        while seen < CHANGES {
            match next(&mut watch).await {
                Some(WatchMessage::Events { changes, .. }) => seen += changes.len() as i64,
                Some(_) => {}
                None => panic!("the watch ended after {seen}"),
            }
        }
        assert_eq!(seen, CHANGES);
    });
}

/// A member that drops packets (a listener whose accept queue is full: the
/// kernel drops further SYNs, as a firewall's DROP rule would): a call
/// costs the connect bound, then goes to the next member.
#[test]
fn a_member_that_drops_packets_is_passed_over_within_the_connect_bound() {
    let etcd = TestEtcd::start();
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let dead = blackhole
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Fill its accept queue (std listens with a backlog of 128).
    let _queued: Vec<std::net::TcpStream> = (0..140)
        .filter_map(|_| {
            let addr = dead.parse().ok()?;
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok()
        })
        .collect();
    run(async {
        ready(&etcd.gateway()).await;
        let g = Gateway::new(
            vec![dead.clone(), etcd.client.clone()],
            Duration::from_secs(5),
        );
        let started = Instant::now();
        let put = g.put("corral/x", b"1", 0).await;
        assert!(put.is_ok(), "{put:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // The member that answered is tried first from then on.
        let started = Instant::now();
        assert!(g.put("corral/y", b"1", 0).await.is_ok());
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    });
}

/// A member that answers 503 (no leader, no quorum) hands the call on.
#[test]
fn a_member_without_quorum_hands_the_call_to_the_next() {
    let etcd = TestEtcd::start();
    let sick = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let sick_addr = sick.local_addr().map(|a| a.to_string()).unwrap_or_default();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in sick.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 46\r\n\r\n{\"error\":\"etcdserver: no leader\",\"code\":14}\r\n\r\n",
            );
        }
    });
    run(async {
        ready(&etcd.gateway()).await;
        let g = Gateway::new(vec![sick_addr, etcd.client.clone()], Duration::from_secs(5));
        let put = g.put("corral/x", b"1", 0).await;
        assert!(put.is_ok(), "{put:?}");
    });
}

/// Unary calls share one connection: keep-alives do not open a TCP
/// connection (and a TLS handshake) each.
#[test]
fn unary_calls_share_one_connection() {
    let etcd = TestEtcd::start();
    let proxy = Proxy::start(&etcd.client);
    run(async {
        ready(&etcd.gateway()).await;
        let g = Gateway::new(vec![proxy.addr.clone()], Duration::from_secs(5));
        let lease = g
            .grant(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..20 {
            assert!(g.keep_alive(lease.id).await.unwrap_or(0) > 0);
            assert!(g.put(&format!("corral/k{i}"), b"v", lease.id).await.is_ok());
        }
        assert_eq!(proxy.accepted(), 1);
    });
}

/// A TCP relay in front of etcd that counts the connections it accepted
/// (its threads end with the test process).
struct Proxy {
    addr: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, target) = (accepted.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                for (from, to) in pairs {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        Proxy { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[test]
fn with_auth_enabled_calls_need_the_token() {
    let etcd = TestEtcd::start();
    run(async {
        let mut g = etcd.gateway();
        ready(&g).await;
        for (path, body) in [
            ("/v3/auth/role/add", serde_json::json!({ "name": "root" })),
            (
                "/v3/auth/user/add",
                serde_json::json!({ "name": "root", "password": "secret" }),
            ),
            (
                "/v3/auth/user/grant",
                serde_json::json!({ "user": "root", "role": "root" }),
            ),
            ("/v3/auth/enable", serde_json::json!({})),
        ] {
            let _: serde_json::Value = g
                .call(path, &body)
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let refused = g.put("corral/x", b"1", 0).await;
        assert!(refused.is_err(), "no token, no write: {refused:?}");
        let wrong = g.authenticate("root", "wrong").await;
        assert!(wrong.is_err(), "{wrong:?}");
        g.authenticate("root", "secret")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(g.put("corral/x", b"1", 0).await.is_ok());
        let (kvs, _) = g.range_prefix("corral/").await.unwrap_or_default();
        assert_eq!(keys(&kvs), ["corral/x"]);
    });
}

mod agent {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use corral_proto::Endpoint;
    use tokio::sync::mpsc;

    use super::super::agent::{run as run_agent, Command, Report, Settings};
    use super::{ready, run, TestCluster, TestEtcd};

    fn settings(etcd: &TestEtcd, host_id: &str) -> Settings {
        Settings {
            endpoints: vec![etcd.client.clone()],
            prefix: "corral".into(),
            ttl: Duration::from_secs(2),
            host_id: host_id.into(),
            credentials: None,
            tls: None,
            names: watched(),
        }
    }

    /// The names the tests' corrals require (the contract's and these tests').
    fn watched() -> BTreeSet<String> {
        ["api", "admin", "db", "cache"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn endpoint(name: &str, host_id: &str, service: &str, port: u16) -> Endpoint {
        Endpoint {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            tags: vec!["primary".into()],
            attrs: Default::default(),
            instance: format!("{host_id}:{service}"),
            host_id: host_id.into(),
        }
    }

    /// An agent task and the view it reports, kept up to date.
    struct Peer {
        commands: mpsc::UnboundedSender<Command>,
        reports: mpsc::UnboundedReceiver<Report>,
        task: tokio::task::JoinHandle<()>,
        /// (name, instance, port) of every endpoint in the view.
        view: BTreeSet<(String, String, u16)>,
        degraded: bool,
        /// Every (name, instance) a report took out of the view.
        removed: Vec<(String, String)>,
    }

    impl Peer {
        fn start(settings: Settings) -> Peer {
            let (commands, rx) = mpsc::unbounded_channel();
            let (tx, reports) = mpsc::unbounded_channel();
            let task = tokio::spawn(run_agent(settings, rx, tx));
            Peer {
                commands,
                reports,
                task,
                view: BTreeSet::new(),
                degraded: false,
                removed: Vec::new(),
            }
        }

        fn key(e: &Endpoint) -> (String, String, u16) {
            (e.name.clone(), e.instance.clone(), e.port)
        }

        /// Applies reports until `cond` holds of the view (or 10 s pass).
        async fn until(&mut self, what: &str, cond: impl Fn(&Peer) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !cond(self) {
                let left = deadline.saturating_duration_since(Instant::now());
                let report = tokio::time::timeout(left, self.reports.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: not within 10 s; view {:?}", self.view));
                match report {
                    Some(Report::Reset(all)) => {
                        let view: BTreeSet<_> = all.iter().map(Peer::key).collect();
                        for (n, i, _) in self.view.difference(&view) {
                            self.removed.push((n.clone(), i.clone()));
                        }
                        self.view = view;
                    }
                    Some(Report::Changed { upserts, removed }) => {
                        self.removed.extend(removed.iter().cloned());
                        for (name, instance) in removed {
                            self.view
                                .retain(|(n, i, _)| !(n == &name && i == &instance));
                        }
                        for e in upserts {
                            self.view
                                .retain(|(n, i, _)| !(n == &e.name && i == &e.instance));
                            self.view.insert(Peer::key(&e));
                        }
                    }
                    Some(Report::Degraded(_)) => self.degraded = true,
                    Some(Report::Healthy) => self.degraded = false,
                    None => panic!("{what}: the agent ended"),
                }
            }
        }

        fn has(&self, instance: &str, port: u16) -> bool {
            self.view
                .iter()
                .any(|(_, i, p)| i == instance && *p == port)
        }
    }

    /// The Registry contract of Step 5, through etcd: what one agent
    /// publishes is looked up in what another agent reads back from etcd.
    struct ThroughEtcd {
        rt: tokio::runtime::Runtime,
        writer: Peer,
        reader: Peer,
    }

    impl crate::discovery::Registry for ThroughEtcd {
        fn register(&mut self, e: Endpoint) -> Vec<String> {
            let before = self.lookup(&e.name);
            let _ = self.writer.commands.send(Command::Register(e.clone()));
            let (instance, port) = (e.instance.clone(), e.port);
            self.rt
                .block_on(self.reader.until("registered", |p| p.has(&instance, port)));
            let changed = self.lookup(&e.name) != before;
            if changed {
                vec![e.name]
            } else {
                Vec::new()
            }
        }

        fn withdraw(&mut self, instance: &str) -> Vec<String> {
            let names: BTreeSet<String> = self
                .reader
                .view
                .iter()
                .filter(|(_, i, _)| i == instance)
                .map(|(n, _, _)| n.clone())
                .collect();
            let _ = self
                .writer
                .commands
                .send(Command::Withdraw(instance.into()));
            self.rt.block_on(self.reader.until("withdrawn", |p| {
                p.view.iter().all(|(_, i, _)| i != instance)
            }));
            names.into_iter().collect()
        }

        fn lookup(&self, name: &str) -> Vec<Endpoint> {
            let mut found: Vec<Endpoint> = self
                .reader
                .view
                .iter()
                .filter(|(n, _, _)| n == name)
                .map(|(n, i, p)| crate::discovery::contract::ep(n, i, *p))
                .collect();
            found.sort_by(|a, b| (&a.instance, a.port).cmp(&(&b.instance, b.port)));
            found
        }

        fn all(&self) -> Vec<Endpoint> {
            self.reader
                .view
                .iter()
                .map(|(n, i, p)| crate::discovery::contract::ep(n, i, *p))
                .collect()
        }
    }

    #[test]
    fn the_registry_contract_holds_through_etcd() {
        let etcd = TestEtcd::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (writer, reader) = rt.block_on(async {
            ready(&etcd.gateway()).await;
            (
                Peer::start(settings(&etcd, "h")),
                Peer::start(settings(&etcd, "observer")),
            )
        });
        let mut registry = ThroughEtcd { rt, writer, reader };
        crate::discovery::contract::check(&mut registry);
    }

    #[test]
    fn a_provider_on_one_host_is_seen_by_another_until_withdrawn() {
        let etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let a = Peer::start(settings(&etcd, "a"));
            let mut b = Peer::start(settings(&etcd, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 5432)));
            b.until("b sees a's db", |p| p.has("a:db", 5432)).await;
            // A restarted instance replaces its entry (same key).
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 5433)));
            b.until("b sees the new port only", |p| {
                p.has("a:db", 5433) && !p.has("a:db", 5432)
            })
            .await;
            let _ = a.commands.send(Command::Withdraw("a:db".into()));
            b.until("a's db is withdrawn", |p| p.view.is_empty()).await;
        });
    }

    /// A corral sees only the names it requires: one that requires
    /// nothing watches nothing, and a change of names (a reload) lists and
    /// watches the new ones.
    #[test]
    fn a_corral_watches_only_the_names_it_requires() {
        let etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let a = Peer::start(settings(&etcd, "a"));
            let mut b = Peer::start(Settings {
                names: ["db".to_string()].into(),
                ..settings(&etcd, "b")
            });
            let mut none = Peer::start(Settings {
                names: BTreeSet::new(),
                ..settings(&etcd, "none")
            });
            for (service, port) in [("db", 1), ("cache", 2)] {
                let _ = a
                    .commands
                    .send(Command::Register(endpoint(service, "a", service, port)));
            }
            b.until("db", |p| p.has("a:db", 1)).await;
            // What b got by then: db, not cache; the other, nothing.
            none.until("its empty view", |p| p.reports.is_empty()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            while let Ok(report) = none.reports.try_recv() {
                assert!(
                    matches!(&report, Report::Reset(all) if all.is_empty())
                        || matches!(report, Report::Healthy),
                    "a corral that requires nothing got {report:?}"
                );
            }
            assert!(!b.has("a:cache", 2), "{:?}", b.view);
            let _ = none
                .commands
                .send(Command::Names(["cache".to_string()].into()));
            none.until("cache, after the names changed", |p| p.has("a:cache", 2))
                .await;
            assert!(!none.has("a:db", 1), "{:?}", none.view);
        });
    }

    #[test]
    fn a_dead_host_vanishes_within_its_ttl_and_a_clean_stop_at_once() {
        let etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let a = Peer::start(settings(&etcd, "a"));
            let c = Peer::start(settings(&etcd, "c"));
            let mut b = Peer::start(settings(&etcd, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1)));
            let _ = c
                .commands
                .send(Command::Register(endpoint("db", "c", "db", 2)));
            b.until("both", |p| p.has("a:db", 1) && p.has("c:db", 2))
                .await;
            // a dies without a word (like kill -9): gone once its lease expires.
            a.task.abort();
            let died = Instant::now();
            b.until("a expired", |p| !p.has("a:db", 1)).await;
            assert!(
                died.elapsed() < Duration::from_secs(2 + 3),
                "{:?}",
                died.elapsed()
            );
            // c stops cleanly: its lease is revoked, its endpoint gone at once.
            let _ = c.commands.send(Command::Stop);
            let stopped = Instant::now();
            b.until("c revoked", |p| p.view.is_empty()).await;
            assert!(
                stopped.elapsed() < Duration::from_secs(1),
                "{:?}",
                stopped.elapsed()
            );
        });
    }

    #[test]
    fn a_new_run_of_a_host_deletes_what_its_last_run_left() {
        let etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let mut long = settings(&etcd, "a");
            long.ttl = Duration::from_secs(60);
            let old = Peer::start(long.clone());
            let mut b = Peer::start(settings(&etcd, "b"));
            let _ = old
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1)));
            b.until("old run's endpoint", |p| p.has("a:db", 1)).await;
            old.task.abort();
            // The next run of host "a" starts long before the old lease expires.
            let _again = Peer::start(long);
            b.until("stale key deleted", |p| p.view.is_empty()).await;
        });
    }

    /// A put that fails (etcd is down) is remembered and sent once etcd
    /// answers again, under the same lease (etcd keeps leases across a
    /// restart).
    #[test]
    fn a_put_that_failed_is_sent_again_when_etcd_answers() {
        let mut etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let mut slow = settings(&etcd, "a");
            // Long enough that the lease outlives the freeze.
            slow.ttl = Duration::from_secs(6);
            let mut a = Peer::start(slow);
            let mut b = Peer::start(settings(&etcd, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1)));
            b.until("db", |p| p.has("a:db", 1)).await;
            etcd.kill();
            let _ = a
                .commands
                .send(Command::Register(endpoint("cache", "a", "cache", 2)));
            a.until("the put failed", |p| p.degraded).await;
            etcd.restart();
            b.until("the put sent again", |p| {
                p.has("a:cache", 2) && p.has("a:db", 1)
            })
            .await;
        });
    }

    /// A delete that fails is sent again too: a withdrawn instance is not
    /// left advertised under a lease that is still kept alive.
    #[test]
    fn a_delete_that_failed_is_sent_again_when_etcd_answers() {
        let mut etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let mut slow = settings(&etcd, "a");
            slow.ttl = Duration::from_secs(6);
            let mut a = Peer::start(slow);
            let mut b = Peer::start(settings(&etcd, "b"));
            for (service, port) in [("db", 1), ("cache", 2)] {
                let _ = a
                    .commands
                    .send(Command::Register(endpoint(service, "a", service, port)));
            }
            b.until("both", |p| p.has("a:db", 1) && p.has("a:cache", 2))
                .await;
            etcd.kill();
            let _ = a.commands.send(Command::Withdraw("a:cache".into()));
            a.until("the delete failed", |p| p.degraded).await;
            etcd.restart();
            b.until("the delete sent again", |p| {
                !p.has("a:cache", 2) && p.has("a:db", 1)
            })
            .await;
        });
    }

    fn cluster_settings(cluster: &TestCluster, host_id: &str) -> Settings {
        Settings {
            endpoints: cluster.clients.clone(),
            prefix: "corral".into(),
            ttl: Duration::from_secs(2),
            host_id: host_id.into(),
            credentials: None,
            tls: None,
            names: watched(),
        }
    }

    /// The lease etcd holds `instance`'s key under (0: no such key).
    async fn lease_of(cluster: &TestCluster, instance: &str) -> i64 {
        let (kvs, _) = cluster
            .gateway()
            .range_prefix("corral/svc/")
            .await
            .unwrap_or_default();
        kvs.iter()
            .find(|kv| kv.key.ends_with(instance))
            .map_or(0, |kv| kv.lease)
    }

    /// Three members; the one every corral talks to (the first) is killed
    /// while a provider changes its port again and again: the corrals move
    /// to the others, the consumer ends with etcd's view, and the
    /// provider's lease lives on.
    #[test]
    fn a_member_killed_under_changes_loses_nothing() {
        let mut cluster = TestCluster::start(3);
        run(async {
            ready(&cluster.gateway()).await;
            let a = Peer::start(cluster_settings(&cluster, "a"));
            let mut b = Peer::start(cluster_settings(&cluster, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1000)));
            b.until("first", |p| p.has("a:db", 1000)).await;
            let lease = lease_of(&cluster, "a:db").await;
            for port in 1001..1040 {
                if port == 1010 {
                    cluster.kill(0);
                }
                let _ = a
                    .commands
                    .send(Command::Register(endpoint("db", "a", "db", port)));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            b.until("the last change", |p| {
                p.has("a:db", 1039) && p.view.len() == 1
            })
            .await;
            assert_eq!(
                lease_of(&cluster, "a:db").await,
                lease,
                "the lease lived on"
            );
        });
    }

    /// The member both corrals talk to freezes (as if cut off: connections
    /// stay open, nothing answers): calls move to the others within their
    /// bound (a third of the TTL), and so does the consumer's watch, so a
    /// change made meanwhile reaches it.
    #[test]
    fn a_frozen_member_is_left_by_calls_and_by_the_watch() {
        let cluster = TestCluster::start(3);
        run(async {
            ready(&cluster.gateway()).await;
            let a = Peer::start(cluster_settings(&cluster, "a"));
            let mut b = Peer::start(cluster_settings(&cluster, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1)));
            b.until("registered", |p| p.has("a:db", 1)).await;
            cluster.signal(0, nix::sys::signal::Signal::SIGSTOP);
            let frozen = Instant::now();
            let _ = a
                .commands
                .send(Command::Register(endpoint("cache", "a", "cache", 2)));
            b.until("the change, through another member", |p| {
                p.has("a:cache", 2)
            })
            .await;
            let took = frozen.elapsed();
            cluster.signal(0, nix::sys::signal::Signal::SIGCONT);
            // A keep-alive interval (TTL/3) to notice, one call bound to move.
            assert!(took < Duration::from_secs(4), "{took:?}");
        });
    }

    /// Quorum lost (two of three members down) for longer than the TTL:
    /// both corrals say degraded, nothing is withdrawn from the consumer's
    /// view meanwhile, and once quorum is back everything catches up under
    /// the same lease.
    #[test]
    fn quorum_lost_for_a_while_withdraws_nothing() {
        let mut cluster = TestCluster::start(3);
        run(async {
            ready(&cluster.gateway()).await;
            let mut a = Peer::start(cluster_settings(&cluster, "a"));
            let mut b = Peer::start(cluster_settings(&cluster, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1)));
            b.until("registered", |p| p.has("a:db", 1)).await;
            let lease = lease_of(&cluster, "a:db").await;
            cluster.kill(1);
            cluster.kill(2);
            a.until("a degraded", |p| p.degraded).await;
            b.until("b degraded", |p| p.degraded).await;
            // Twice the TTL without quorum.
            tokio::time::sleep(Duration::from_secs(4)).await;
            cluster.restart(1);
            cluster.restart(2);
            b.until("healthy again", |p| !p.degraded && p.has("a:db", 1))
                .await;
            assert!(b.removed.is_empty(), "withdrawn meanwhile: {:?}", b.removed);
            let _ = a
                .commands
                .send(Command::Register(endpoint("cache", "a", "cache", 2)));
            b.until("a later change", |p| p.has("a:cache", 2)).await;
            assert_eq!(
                lease_of(&cluster, "a:db").await,
                lease,
                "the lease lived on"
            );
        });
    }

    /// Compaction and defragmentation while corrals watch: the watches go
    /// on, later changes arrive, and the view ends equal to etcd's.
    #[test]
    fn compaction_and_defragmentation_under_watches_change_nothing() {
        let etcd = TestEtcd::start();
        run(async {
            let g = etcd.gateway();
            ready(&g).await;
            let a = Peer::start(settings(&etcd, "a"));
            let mut b = Peer::start(settings(&etcd, "b"));
            for port in 1..=50 {
                let _ = a
                    .commands
                    .send(Command::Register(endpoint("db", "a", "db", port)));
            }
            b.until("the last port", |p| p.has("a:db", 50)).await;
            let (_, revision) = g.range_prefix("corral/").await.unwrap_or_default();
            for (path, body) in [
                (
                    "/v3/kv/compaction",
                    serde_json::json!({ "revision": revision.to_string(), "physical": true }),
                ),
                ("/v3/maintenance/defragment", serde_json::json!({})),
            ] {
                let _: serde_json::Value = g
                    .call(path, &body)
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
            }
            let _ = a
                .commands
                .send(Command::Register(endpoint("cache", "a", "cache", 2)));
            b.until("a change after", |p| p.has("a:cache", 2)).await;
            let (kvs, _) = g.range_prefix("corral/svc/").await.unwrap_or_default();
            let mut in_etcd: Vec<String> = kvs.iter().map(|kv| kv.key.clone()).collect();
            in_etcd.sort();
            let view: Vec<String> = b
                .view
                .iter()
                .map(|(n, i, _)| format!("corral/svc/{n}/{i}"))
                .collect();
            assert_eq!(view, in_etcd);
            assert!(!b.degraded);
        });
    }

    #[test]
    fn etcd_restarting_loses_nothing_and_later_changes_still_arrive() {
        let mut etcd = TestEtcd::start();
        run(async {
            ready(&etcd.gateway()).await;
            let a = Peer::start(settings(&etcd, "a"));
            let mut b = Peer::start(settings(&etcd, "b"));
            let _ = a
                .commands
                .send(Command::Register(endpoint("db", "a", "db", 1)));
            b.until("before", |p| p.has("a:db", 1)).await;
            etcd.kill();
            b.until("degraded", |p| p.degraded).await;
            assert!(b.has("a:db", 1), "the last view is kept while etcd is away");
            etcd.restart();
            b.until("healthy again", |p| !p.degraded && p.has("a:db", 1))
                .await;
            let _ = a
                .commands
                .send(Command::Register(endpoint("cache", "a", "cache", 2)));
            b.until("a later change", |p| {
                p.has("a:cache", 2) && p.has("a:db", 1)
            })
            .await;
        });
    }
}
