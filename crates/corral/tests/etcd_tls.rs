//! TLS to etcd: a real etcd that serves only TLS and asks for a client
//! certificate, with a CA, server and client certificates made by openssl
//! for this test.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ca.pem, server.pem/server.key (for 127.0.0.1), client.pem/client.key.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=corral-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (who, ext) in [
        // etcd 3.4 dials its own gRPC server with this certificate too.
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        let mut req = vec!["req", "-subj"];
        let subject = format!("/CN=corral-test-{who}");
        req.push(&subject);
        req.extend(ec);
        let (key, csr) = (format!("{who}.key"), format!("{who}.csr"));
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        let (pem, ext) = (format!("{who}.pem"), format!("{who}.ext"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

/// other-ca.pem, and other.pem/other.key: a client certificate that CA
/// signed, which etcd (trusting ca.pem only) refuses.
fn make_other_ca(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=corral-other-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "other-ca.key", "-out", "other-ca.pem"]);
    openssl(dir, &ca);
    let mut req = vec!["req", "-subj", "/CN=corral-other-client"];
    req.extend(ec);
    req.extend(["-keyout", "other.key", "-out", "other.csr"]);
    openssl(dir, &req);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "other.csr",
            "-CA",
            "other-ca.pem",
            "-CAkey",
            "other-ca.key",
            "-CAcreateserial",
            "-extfile",
            "client.ext",
            "-out",
            "other.pem",
        ],
    );
}

struct TlsEtcd {
    child: Child,
    client: String,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(dir: &Path) -> TlsEtcd {
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let url = format!("https://{client}");
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("t={peer}")])
        .args(["--cert-file", "server.pem", "--key-file", "server.key"])
        .args(["--trusted-ca-file", "ca.pem", "--client-cert-auth"])
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run etcd");
    TlsEtcd { child, client }
}

/// The keys under corral/, asked with curl over TLS with the client cert.
fn keys(dir: &Path, etcd: &TlsEtcd) -> Option<String> {
    let body = format!(
        r#"{{"key":"{}","range_end":"{}","keys_only":true}}"#,
        base64_encode(b"corral/"),
        base64_encode(b"corral0")
    );
    let out = Command::new("curl")
        .args([
            "-sf",
            "-m",
            "2",
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
        ])
        .args(["--key", "client.key", "-X", "POST", "-d", &body])
        .arg(format!("https://{}/v3/kv/range", etcd.client))
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Certificates made for this test, and an etcd serving only TLS with them.
fn tls_etcd() -> (tempfile::TempDir, TlsEtcd) {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    make_other_ca(certs.path());
    let etcd = start_etcd(certs.path());
    assert!(
        eventually(Duration::from_secs(10), || keys(certs.path(), &etcd)
            .is_some()),
        "etcd (TLS) did not come up"
    );
    (certs, etcd)
}

#[test]
fn corral_registers_through_an_etcd_that_speaks_only_tls() {
    let (certs, etcd) = tls_etcd();
    let tls = |name: &str| certs.path().join(name).display().to_string();
    let project = Project::new(&format!(
        r#"
[discovery]
backend = "etcd"
host-id = "secure"
etcd = {{ endpoints = ["https://{client}"], ttl = "2s", tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }} }}

[services.db]
command = ["sleep", "600"]
provides = [{{ name = "db", port = 5432 }}]
"#,
        client = etcd.client,
        ca = tls("ca.pem"),
        cert = tls("client.pem"),
        key = tls("client.key"),
    ));
    let corral = project.up();
    corral.wait_for_service_event("db", "registered db", SECS5);
    let key = base64_encode(b"corral/svc/db/secure:db");
    assert!(
        eventually(SECS5, || keys(certs.path(), &etcd)
            .is_some_and(|k| k.contains(&key))),
        "the key did not reach etcd over TLS: {:?}",
        keys(certs.path(), &etcd)
    );

    // Without the client certificate, etcd refuses: corral says so, degraded.
    let refused = Project::new(&format!(
        r#"
[discovery]
backend = "etcd"
etcd = {{ endpoints = ["https://{client}"], tls = {{ ca = "{ca}" }} }}

[services.app]
command = ["sleep", "600"]
"#,
        client = etcd.client,
        ca = tls("ca.pem"),
    ));
    let other = refused.up();
    other.wait_for("discovery degraded", SECS10);
}

/// A CA that did not sign etcd's certificate, and a client certificate etcd
/// refuses: each is one line naming the file to look at. Certificates
/// renewed in place are used at the next `reload`, no restart.
#[test]
fn bad_certificates_are_named_and_renewed_ones_are_used_after_a_reload() {
    let (certs, etcd) = tls_etcd();
    let tls = |name: &str| certs.path().join(name).display().to_string();

    let wrong_ca = Project::new(&format!(
        r#"
[discovery]
backend = "etcd"
etcd = {{ endpoints = ["https://{client}"], tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }} }}

[services.app]
command = ["sleep", "600"]
"#,
        client = etcd.client,
        ca = tls("other-ca.pem"),
        cert = tls("client.pem"),
        key = tls("client.key"),
    ));
    let corral = wrong_ca.up();
    let line = corral.wait_for("discovery degraded", SECS10);
    assert!(
        line.contains("certificate is not accepted") && line.contains("other-ca.pem"),
        "{line}"
    );
    drop(corral);

    // The client certificate in use is one etcd refuses; then renewed.
    let project = Project::new(&format!(
        r#"
[discovery]
backend = "etcd"
host-id = "renewed"
etcd = {{ endpoints = ["https://{client}"], ttl = "2s", tls = {{ ca = "{ca}", cert = "renew.pem", key = "renew.key" }} }}

[services.db]
command = ["sleep", "600"]
provides = [{{ name = "db", port = 5432 }}]
"#,
        client = etcd.client,
        ca = tls("ca.pem"),
    ));
    let copy = |from: &str, to: &str| {
        std::fs::copy(certs.path().join(from), project.file(to)).unwrap();
    };
    copy("other.pem", "renew.pem");
    copy("other.key", "renew.key");
    let corral = project.up();
    let line = corral.wait_for("discovery degraded", SECS10);
    assert!(
        line.contains("refused the client certificate") && line.contains("renew.pem"),
        "{line}"
    );
    copy("client.pem", "renew.pem");
    copy("client.key", "renew.key");
    let (code, out, err) = project.run(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    corral.wait_for_service_event("db", "registered db", SECS10);
    let key = base64_encode(b"corral/svc/db/renewed:db");
    assert!(
        eventually(SECS5, || keys(certs.path(), &etcd)
            .is_some_and(|k| k.contains(&key))),
        "the key did not reach etcd with the renewed certificate"
    );
}
