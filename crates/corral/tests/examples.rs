//! Every example config is valid, and the basic one really serves.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_passes_check() {
    let mut seen = 0;
    // examples/NAME/corral.toml, and examples/NAME/HOST/corral.toml for the
    // examples that stand for several hosts.
    let mut files = Vec::new();
    for entry in std::fs::read_dir(examples_dir())
        .expect("examples dir")
        .flatten()
    {
        files.push(entry.path().join("corral.toml"));
        for sub in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(sub.path().join("corral.toml"));
        }
    }
    for file in files {
        if !file.exists() {
            continue;
        }
        seen += 1;
        let out = Command::new(BIN)
            .args(["check", "-f"])
            .arg(&file)
            .output()
            .expect("run corral check");
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(seen > 0, "no example found");
}

#[test]
fn basic_example_serves_http_and_stops_cleanly() {
    // Run a copy, so the example's generated files stay out of the source tree.
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        examples_dir().join("basic/corral.toml"),
        work.path().join("corral.toml"),
    )
    .expect("copy");
    let port = free_port().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["up"])
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WEB_PORT", &port);
    let mut corral = Running::start(cmd);
    corral.wait_for_service_event("web", "started", SECS10);
    let addr = format!("127.0.0.1:{port}");
    let mut body = String::new();
    assert!(
        eventually(SECS10, || {
            body.clear();
            TcpStream::connect(&addr)
                .and_then(|mut s| {
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                    s.read_to_string(&mut body)
                })
                .is_ok()
                && body.contains("served under corral")
        }),
        "no page from {addr}: {body:?}"
    );
    corral.wait_for("-> 200", SECS10);
    assert_eq!(corral.stop(), 0);
}

#[test]
fn two_hosts_example_connects_through_etcd() {
    let etcd = Etcd::start();
    let port = free_port().to_string();
    let copy = |host: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(
            examples_dir()
                .join("two-hosts")
                .join(host)
                .join("corral.toml"),
            dir.path().join("corral.toml"),
        )
        .expect("copy");
        dir
    };
    let (a, b) = (copy("a"), copy("b"));
    let start = |dir: &tempfile::TempDir| {
        let mut cmd = Command::new(BIN);
        cmd.args(["up"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ETCD_ADDR", &etcd.client)
            .env("WEB_PORT", &port);
        Running::start(cmd)
    };
    let client = start(&b);
    client.wait_for_service_event("client", "waiting for endpoints of web", SECS10);
    let _server = start(&a);
    client.wait_for(
        &format!("from 127.0.0.2:{port}: hello from host A"),
        Duration::from_secs(20),
    );
}
