//! The discovery scenario with a real haproxy: 4 API replicas behind a proxy
//! whose config corral renders from the live endpoints.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A base port with `n` free ports after it.
fn free_range(n: u16) -> u16 {
    for _ in 0..50 {
        let base = free_port();
        if base > 65000 {
            continue;
        }
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} free ports in a row");
}

/// GET / through the proxy: the body ("replica N"), or None on any failure.
fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: corral\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
}

fn replicas_seen(port: u16, requests: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..requests)
        .map(|_| get(port).unwrap_or_else(|| "FAILED".into()))
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

#[test]
fn haproxy_routes_only_to_live_ready_replicas() {
    assert!(
        Command::new("haproxy").arg("-v").output().is_ok(),
        "haproxy is needed for this test (.ci/run installs it)"
    );
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/haproxy");
    let project = Project::new("");
    for file in ["corral.toml", "api.py", "haproxy.cfg.tmpl"] {
        std::fs::copy(example.join(file), project.file(file)).expect("copy the example");
    }
    let api = free_range(6);
    let proxy = free_port();
    let (api_port, proxy_port) = (api.to_string(), proxy.to_string());
    let daemon = project.up_with(&[("API_PORT", &api_port), ("PROXY_PORT", &proxy_port)], &[]);
    daemon.wait_for_service_event("proxy", "ready after", Duration::from_secs(20));
    // All 4 replicas serve through haproxy.
    assert!(
        eventually(SECS10, || replicas_seen(proxy, 16)
            == ["replica 0", "replica 1", "replica 2", "replica 3"]),
        "{:?}",
        replicas_seen(proxy, 16)
    );

    // kill -9 one replica: haproxy's config drops it once the change is
    // applied, and requests keep succeeding on the others.
    let victim = daemon.started_pid("api.2", SECS5);
    // SAFETY: kill(2) on a pid corral reported.
    unsafe {
        libc::kill(victim, libc::SIGKILL);
    }
    assert!(
        eventually(SECS5, || !project.read("haproxy.cfg").contains("api.2 ")),
        "haproxy.cfg still lists api.2:\n{}",
        project.read("haproxy.cfg")
    );
    daemon.wait_for_service_event(
        "proxy",
        "endpoints changed (api: 3): sending SIGUSR2",
        SECS5,
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = replicas_seen(proxy, 12);
    assert_eq!(
        seen,
        ["replica 0", "replica 1", "replica 3"],
        "only live replicas answer"
    );

    // Scale out: the new replicas get traffic.
    let (code, out, err) = project.run(&["scale", "api", "6"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        eventually(SECS10, || {
            let cfg = project.read("haproxy.cfg");
            cfg.contains("api.4 ") && cfg.contains("api.5 ")
        }),
        "{}",
        project.read("haproxy.cfg")
    );
    assert!(
        eventually(SECS10, || {
            let seen = replicas_seen(proxy, 24);
            seen.contains(&"replica 4".to_string()) && seen.contains(&"replica 5".to_string())
        }),
        "{:?}",
        replicas_seen(proxy, 24)
    );
    assert!(!replicas_seen(proxy, 12).contains(&"FAILED".to_string()));
}
