//! The gateway client against a real etcd (Debian's etcd-server), one
//! private etcd per test: its own data dir, client and peer ports.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::gateway::{Change, Gateway, KeyValue, WatchMessage};

/// An etcd of this test's own; killed (by pid) when dropped.
struct TestEtcd {
    child: Child,
    client: String,
    _dir: tempfile::TempDir,
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
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
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
            });
        TestEtcd {
            child,
            client: format!("127.0.0.1:{client}"),
            _dir: dir,
        }
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
                serde_json::json!({ "revision": last.to_string() }),
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
                .call(path, body)
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
