//! Replicas: instances with their own PORT, addressed one by one or together, scaled at runtime.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

const CONFIG: &str = r#"
[services.api]
command = ["sh", "-c", "echo serving on ${PORT} as replica $CORRAL_REPLICA of $CORRAL_SERVICE; exec sleep 60"]
replicas = 3
port = 20000

[services.web]
command = ["sleep", "60"]
depends-on = ["api"]
"#;

fn pids_of(project: &Project) -> Vec<(String, i32)> {
    let (_, json, _) = project.run(&["ps", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("ps json");
    v["services"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s["pid"].as_i64().unwrap_or(0) as i32,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn each_replica_gets_its_port_and_index() {
    let project = Project::new(CONFIG);
    let daemon = project.up();
    wait_for_socket(&project);
    for i in 0..3 {
        daemon.wait_for(
            &format!("serving on {} as replica {i} of api", 20000 + i),
            SECS5,
        );
    }
    // web waits for every instance of api.
    daemon.wait_for_service_event("web", "started", SECS5);
    let lines = daemon.lines();
    let web = lines
        .iter()
        .position(|l| l.starts_with("web") && l.contains("* started"));
    for i in 0..3 {
        let api = lines
            .iter()
            .position(|l| l.starts_with(&format!("api.{i}")) && l.contains("* started"));
        assert!(api < web, "api.{i} must start before web");
    }
    let names: Vec<String> = pids_of(&project).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["api.0", "api.1", "api.2", "web"]);
    let (_, check, _) = project.run(&["check"]);
    assert!(
        check.contains("PORT=20001") && check.contains("CORRAL_REPLICA=1"),
        "{check}"
    );
}

#[test]
fn one_instance_or_all_of_them() {
    let project = Project::new(CONFIG);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("web", "started", SECS5);
    let before = pids_of(&project);
    let (code, out, _) = project.run(&["restart", "api.1"]);
    assert_eq!((code, out.trim()), (0, "api.1 is running"));
    let after = pids_of(&project);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.1 == a.1, b.0 != "api.1", "{b:?} -> {a:?}");
    }
    let (code, out, _) = project.run(&["stop", "api"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "api.0 is stopped\napi.1 is stopped\napi.2 is stopped\n"
    );
    let (code, out, _) = project.run(&["logs", "-n", "100", "api"]);
    assert_eq!(code, 0);
    for i in 0..3 {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("api.{i} ")) && l.ends_with("* stopped")),
            "{out}"
        );
    }
}

#[test]
fn scale_adds_and_removes_instances_and_survives_reload() {
    let project = Project::new(CONFIG);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("web", "started", SECS5);
    let before = pids_of(&project);
    let (code, out, err) = project.run(&["scale", "api", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added: api.3, api.4"), "{out}");
    daemon.wait_for("serving on 20004 as replica 4 of api", SECS5);
    let after = pids_of(&project);
    for (name, pid) in &before {
        assert!(
            after.contains(&(name.clone(), *pid)),
            "{name} kept its process"
        );
    }
    let (code, out, _) = project.run(&["scale", "api", "2"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("removed (stopped): api.2, api.3, api.4"),
        "{out}"
    );
    let (_, out, _) = project.run(&["reload"]);
    assert!(out.contains("unchanged: api.0, api.1, web"), "{out}");
    let names: Vec<String> = pids_of(&project).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["api.0", "api.1", "web"]);
    // Back again: added, as they were the first time (not "changed").
    let (code, out, err) = project.run(&["scale", "api", "4"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added: api.2, api.3"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("changed")), "{out}");
    let (code, _, err) = project.run(&["scale", "web", "2"]);
    assert_eq!(code, 1);
    assert!(err.contains("web has no `replicas`"), "{err}");
}

#[test]
fn the_api_addresses_one_instance_or_all() {
    let project = Project::new(CONFIG);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("web", "started", SECS5);
    let socket = socket_of(&project);
    let before = pids_of(&project);
    let (status, body) = raw_http(&socket, "POST", "/v1/services/api/restart", b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ok"], true, "{body}");
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(3), "{body}");
    let after = pids_of(&project);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.1 == a.1, b.0 == "web", "{b:?} -> {a:?}");
    }
    let (status, body) = raw_http(&socket, "POST", "/v1/services/api.1/stop", b"");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"name\":\"api.1\"") && !body.contains("\"instances\""),
        "{body}"
    );
    let (status, body) = raw_http(
        &socket,
        "POST",
        "/v1/services/api/signal",
        br#"{"signal":"SIGCONT"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.matches("\"group\":\"api\"").count(),
        2,
        "two running instances: {body}"
    );
}

/// `corral scale` past the bound is refused at once, changes nothing, and the
/// daemon keeps answering.
#[test]
fn scale_is_bounded_and_refused_cleanly() {
    let project = Project::new(CONFIG);
    let daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("web", "started", SECS5);
    let before = pids_of(&project);
    for n in ["100000", "100000000"] {
        let (code, out, err) = project.run(&["scale", "api", n]);
        assert_eq!(code, 1, "{out}");
        assert!(
            err.contains("replicas must be at most 1024, found"),
            "{err}"
        );
    }
    assert_eq!(pids_of(&project), before, "nothing started or stopped");
    let (code, _, _) = project.run(&["ps"]);
    assert_eq!(code, 0);
}

/// A scale to the bound does not hold the daemon: the answer and the next
/// request come while instances are still being spawned, in batches.
#[test]
fn a_big_scale_keeps_the_daemon_answering() {
    let project = Project::new("[services.many]\ncommand = [\"sleep\", \"600\"]\nreplicas = 1\n");
    let mut daemon = project.up();
    wait_for_socket(&project);
    daemon.wait_for_service_event("many.0", "started", SECS5);
    let socket = socket_of(&project);
    let (status, body) = raw_http(
        &socket,
        "POST",
        "/v1/services/many/scale",
        br#"{"replicas":1024}"#,
    );
    assert_eq!(status, 200, "{body}");
    let states = || -> Vec<String> {
        get_json(&project, "/v1/services")["services"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|s| s["state"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = states();
    assert_eq!(first.len(), 1024);
    assert!(
        first.iter().any(|s| s != "running"),
        "answered only after every spawn"
    );
    // And every instance does come up.
    assert!(eventually(SECS10 * 3, || states()
        .iter()
        .all(|s| s == "running")));
    assert_eq!(daemon.stop(), 0);
}
