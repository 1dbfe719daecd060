//! Discovery across hosts through a real etcd (Debian's etcd-server, one per
//! test on free loopback ports): corrals with their own host-id and
//! advertise address find each other's endpoints, follow them as they come
//! and go, and ride out an etcd restart.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;

fn config(etcd: &Etcd, host: &str, advertise: &str, services: &str) -> String {
    format!(
        r#"
[discovery]
backend = "etcd"
host-id = "{host}"
advertise = "{advertise}"
etcd = {{ endpoints = ["http://{client}"], ttl = "2s" }}
{services}"#,
        client = etcd.client
    )
}

const PROVIDER: &str = r#"
[services.db]
command = ["sleep", "600"]
provides = [{ name = "db", port = 5432 }]
"#;

const DEPENDENT: &str = r#"
[services.app]
command = ["sh", "-c", "echo addr=$DB_ADDRS; exec sleep 600"]
requires = ["db"]
change-wait = { min = "50ms", max = "200ms" }
on-change = ["sh", "-c", "echo \"$DB_ADDRS\" >> changes"]
"#;

fn endpoints(project: &Project) -> String {
    project.run(&["endpoints"]).1
}

#[test]
fn corrals_on_two_hosts_follow_each_others_endpoints() {
    let mut etcd = Etcd::start();
    let a = Project::new(&config(&etcd, "host-a", "127.0.0.2", PROVIDER));
    let b = Project::new(&config(&etcd, "host-b", "127.0.0.3", DEPENDENT));

    // B's app waits for a db; A brings one.
    let corral_b = b.up();
    wait_for_socket(&b);
    let mut corral_a = a.up();
    corral_b.wait_for("addr=127.0.0.2:5432", SECS10);
    let table = endpoints(&b);
    assert!(
        table.lines().any(|l| l.contains("db")
            && l.contains("127.0.0.2:5432")
            && l.contains("host-a")
            && l.contains("host-a:db")),
        "{table}"
    );
    let keys = etcd.keys("corral/").unwrap();
    assert_eq!(keys, ["corral/svc/db/host-a:db"]);
    let (_, json, _) = b.run(&["ps", "--json"]);
    assert!(json.contains("\"backend\": \"etcd\""), "{json}");
    let (_, table, _) = b.run(&["ps"]);
    assert!(table.contains("discovery: etcd (connected)"), "{table}");

    // etcd goes away for longer than the lease: both keep what they know, B
    // says discovery is degraded, and nothing acts on the outage itself.
    etcd.kill();
    corral_b.wait_for("discovery degraded", SECS10);
    let (_, json, _) = b.run(&["ps", "--json"]);
    assert!(json.contains("degraded_since"), "{json}");
    let (_, table, _) = b.run(&["ps"]);
    assert!(table.contains("discovery: etcd DEGRADED for"), "{table}");
    assert!(endpoints(&b).contains("127.0.0.2:5432"));
    std::thread::sleep(Duration::from_secs(3));
    etcd.start_again();
    corral_b.wait_for("discovery healthy", SECS10);
    assert!(
        eventually(SECS10, || etcd.keys("corral/").unwrap_or_default()
            == ["corral/svc/db/host-a:db"]),
        "A did not register again after etcd came back"
    );
    assert!(
        b.read("changes").is_empty(),
        "an outage alone acted: {}",
        b.read("changes")
    );
    assert!(endpoints(&b).contains("127.0.0.2:5432"));

    // A stops cleanly: its lease is revoked, B acts at once.
    assert_eq!(corral_a.stop(), 0);
    assert!(
        eventually(SECS5, || b.read("changes").lines().count() == 1),
        "B did not see A go"
    );
    assert_eq!(b.read("changes").trim(), "");
    assert!(!endpoints(&b).contains("5432"));

    // A comes back, then dies by SIGKILL: its endpoint vanishes when the
    // lease runs out (TTL 2 s), plus the debounce.
    let mut corral_a = a.up();
    assert!(
        eventually(SECS10, || b.read("changes").lines().count() == 2),
        "B did not see A come back"
    );
    assert_eq!(b.read("changes").lines().nth(1), Some("127.0.0.2:5432"));
    corral_a.signal(libc::SIGKILL);
    corral_a.wait_exit(SECS5);
    let killed = Instant::now();
    assert!(
        eventually(SECS10, || b.read("changes").lines().count() == 3),
        "A's endpoint outlived A"
    );
    let took = killed.elapsed();
    // TTL 2 s + debounce 0.2 s + 1 s, with room for a loaded machine.
    assert!(
        took < Duration::from_secs(5),
        "gone after {took:?} (TTL 2 s)"
    );
    // The killed run's leftovers and record.
    a.run(&["down"]);
    drop(corral_b);
}

/// A corral watches only the names its services require: one that requires
/// nothing does not list other hosts' endpoints; a reload that adds a
/// dependent makes it watch that name, and the dependent starts.
#[test]
fn a_corral_watches_the_names_it_requires_and_a_reload_adds_them() {
    let etcd = Etcd::start();
    let a = Project::new(&config(&etcd, "host-a", "127.0.0.2", PROVIDER));
    let idle = "\n[services.idle]\ncommand = [\"sleep\", \"600\"]\n";
    let b = Project::new(&config(&etcd, "host-b", "127.0.0.3", idle));
    let corral_a = a.up();
    corral_a.wait_for_service_event("db", "registered db", SECS10);
    let corral_b = b.up();
    corral_b.started_pid("idle", SECS5);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !endpoints(&b).contains("host-a:db"),
        "b requires nothing: {}",
        endpoints(&b)
    );
    b.write(
        "corral.toml",
        &config(&etcd, "host-b", "127.0.0.3", &format!("{idle}{DEPENDENT}")),
    );
    let (code, out, err) = b.run(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    corral_b.wait_for("addr=127.0.0.2:5432", SECS10);
    assert!(endpoints(&b).contains("host-a:db"), "{}", endpoints(&b));
}
