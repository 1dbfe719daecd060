//! `corral up -d`: start the daemon in the background, wait for the services,
//! print their status.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use corral_proto::{Event, ServiceList};
use hyper::Method;

use super::{client_for, commands, load_with, CliError, ProcfileArgs, Target};

/// How long the daemon may take to open its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How long services may take to start (or get ready).
const START_WAIT: Duration = Duration::from_secs(300);

pub fn up_detached(
    target: &Target,
    procfile: &ProcfileArgs,
    profiles: &[String],
    services: &[String],
) -> Result<ExitCode, CliError> {
    // Bad config is reported here, before anything runs in the background.
    let config = load_with(&target.files(), procfile.options(&target.file())?.as_ref())?;
    let configured_state = config.global.state_dir.clone();
    if services.is_empty() {
        config
            .clone()
            .with_profiles(profiles)
            .map_err(CliError::Usage)?;
    } else {
        config.select(services).map_err(|unknown| {
            CliError::Usage(format!(
                "unknown service {unknown:?} in {}",
                target.file().display()
            ))
        })?;
    }
    let socket = super::socket_path(target);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return reconcile(target, services);
    }
    let state_dir = target.create_state(configured_state.as_deref())?;
    let socket = target.socket_in(&state_dir);
    let log_path = state_dir.join("corral.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|source| {
            CliError::Failed(format!("cannot open {}: {source}", log_path.display()))
        })?;
    let err_log = log.try_clone().map_err(|source| CliError::Io {
        context: "cannot open the console log",
        source,
    })?;
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        context: "cannot find the corral executable",
        source,
    })?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up");
    for file in target.files() {
        cmd.arg("-f")
            .arg(std::fs::canonicalize(&file).unwrap_or(file));
    }
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--console-log")
        .arg(&log_path)
        .args(procfile.args())
        .args(profiles.iter().flat_map(|p| ["--profile", p.as_str()]))
        .args(services)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .env("NO_COLOR", "1");
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our
    // terminal and process group.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| CliError::Io {
        context: "cannot start the daemon",
        source,
    })?;
    let client = client_for(target);
    let rt = super::event_loop()?;
    rt.block_on(async {
        // Wait for the socket, or for the daemon to die trying.
        let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CliError::Failed(format!(
                    "the daemon exited ({status}) before it was up; its output:\n{}",
                    tail(&log_path)
                )));
            }
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CliError::Failed(format!(
                    "the daemon did not open {} within {SOCKET_WAIT:?}",
                    socket.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_for_services(&client).await
    })?;
    let list: ServiceList = rt.block_on(client.json(Method::GET, "/services", None))?;
    print!("{}", commands::table(&list.services));
    println!(
        "corral is running in the background (log: {})",
        log_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `up -d` with corral already running, as compose does: the config file's
/// changes are applied (a reload), services that are not running (stopped,
/// failed, exited) are started, then it waits for them as a first `up -d`.
fn reconcile(target: &Target, services: &[String]) -> Result<ExitCode, CliError> {
    let client = client_for(target);
    let rt = super::event_loop()?;
    rt.block_on(async {
        super::serves_this_config(&client, target).await?;
        let changes: corral_proto::ReloadResult =
            client.json(Method::POST, "/reload", None).await?;
        let list: ServiceList = client.json(Method::GET, "/services", None).await?;
        let named = |s: &corral_proto::ServiceStatus| {
            services.is_empty() || services.iter().any(|n| *n == s.name || *n == s.group)
        };
        let mut started = Vec::new();
        for s in list.services.iter().filter(|s| named(s)) {
            use corral_proto::ServiceState as S;
            if matches!(s.state, S::Stopped | S::Failed | S::Exited | S::Blocked) {
                let path = format!("/services/{}/start?wait=false", s.name);
                let _: corral_proto::ActionResult = client.json(Method::POST, &path, None).await?;
                started.push(s.name.clone());
            }
        }
        wait_for_services(&client).await?;
        let mut what = Vec::new();
        for (label, names) in [
            ("added", &changes.added),
            ("changed", &changes.changed),
            ("removed", &changes.removed),
            ("started", &started),
        ] {
            if !names.is_empty() {
                what.push(format!("{label} {}", names.join(", ")));
            }
        }
        let list: ServiceList = client.json(Method::GET, "/services", None).await?;
        print!("{}", commands::table(&list.services));
        if what.is_empty() {
            println!("corral is already running; nothing to change");
        } else {
            println!("corral is already running; {}", what.join("; "));
        }
        Ok::<(), CliError>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Returns once every service is up (running and ready, or completed), or
/// fails as soon as one cannot start.
async fn wait_for_services(client: &super::Client) -> Result<(), CliError> {
    wait_until_up(client, &[], START_WAIT).await
}

/// `corral wait [SERVICE...]`: returns once these services (every one
/// without names) are up, fails naming the first that cannot get there or
/// those still not up after `limit`.
pub async fn wait_until_up(
    client: &super::Client,
    names: &[String],
    limit: Duration,
) -> Result<(), CliError> {
    let wanted = |s: &corral_proto::ServiceStatus| {
        names.is_empty() || names.iter().any(|n| *n == s.name || *n == s.group)
    };
    // Names are checked first; the states only once the event stream is
    // open, below, so no change in between is missed.
    let first: ServiceList = if names.is_empty() {
        ServiceList {
            services: Vec::new(),
            discovery: None,
            scaled_to_zero: Vec::new(),
        }
    } else {
        client.json(Method::GET, "/services", None).await?
    };
    if let Some(unknown) = names.iter().find(|n| {
        !first
            .services
            .iter()
            .any(|s| s.name == **n || s.group == **n)
    }) {
        let known: Vec<&str> = first.services.iter().map(|s| s.name.as_str()).collect();
        return Err(CliError::Usage(format!(
            "unknown service {unknown:?} (services: {})",
            known.join(", ")
        )));
    }
    let verdict = || async {
        let list: ServiceList = client.json(Method::GET, "/services", None).await?;
        let list: Vec<_> = list.services.into_iter().filter(|s| wanted(s)).collect();
        if let Some(s) = list.iter().find(|s| {
            use corral_proto::ServiceState as S;
            matches!(s.state, S::Failed | S::Blocked | S::Backoff)
                || (s.state == S::Exited && s.last_exit_code != Some(0))
        }) {
            return Err(CliError::Failed(format!(
                "{} did not start: it is {}{}",
                s.name,
                s.state,
                s.last_exit
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (last: {e})"))
            )));
        }
        let waiting: Vec<String> = list
            .iter()
            .filter(|s| !s.is_up())
            .map(|s| format!("{} ({})", s.name, s.state))
            .collect();
        Ok::<Vec<String>, CliError>(waiting)
    };
    // Subscribe before the first look, so a change in between is not missed;
    // then check again on each change as it happens.
    let events = client.open_lines(Method::GET, "/events").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = events.each(move |_: Event| {
        let _ = tx.send(());
    });
    tokio::pin!(watcher);
    let deadline = tokio::time::Instant::now() + limit;
    // Stopped meanwhile (`corral down`, a signal): said as such, not as
    // "no corral running", which reads as if it never started.
    let gone = || {
        CliError::Failed(
            "corral stopped before the services were up (corral down, or a signal)".into(),
        )
    };
    loop {
        let waiting = verdict().await.map_err(|e| match e {
            CliError::NoDaemon { .. } | CliError::Closed(_) => gone(),
            other => other,
        })?;
        if waiting.is_empty() {
            return Ok(());
        }
        tokio::select! {
            _ = &mut watcher => return Err(gone()),
            changed = rx.recv() => if changed.is_none() {
                return Err(gone());
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(CliError::Failed(format!(
                    "not up within {}: {}",
                    humantime::format_duration(limit),
                    waiting.join(", ")
                )));
            }
        }
    }
}

/// The last lines of the daemon's log, for an error message.
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    /// A stand-in daemon that records the order of requests: the event
    /// stream is opened (and stays open) before the first look at the states.
    async fn recording_daemon(listener: UnixListener, seen: Arc<Mutex<Vec<String>>>) {
        let mut open = Vec::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.clone());
            if path == "/v1/events" {
                let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = stream.write_all(answer).await;
                open.push(stream);
            } else {
                let body = r#"{"services":[{"name":"a","state":"running","restarts":0,"ready":true,"oneshot":false}]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        }
    }

    #[test]
    fn up_d_subscribes_before_its_first_look() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let socket = dir.path().join("corral.sock");
        let rt = super::super::event_loop().unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(recording_daemon(listener, seen.clone()));
            let client = super::super::Client::new(socket.clone(), dir.path());
            let waited = wait_for_services(&client).await;
            assert!(waited.is_ok(), "{waited:?}");
        });
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            seen.first().map(String::as_str),
            Some("/v1/events"),
            "{seen:?}"
        );
        assert!(seen.iter().any(|p| p == "/v1/services"), "{seen:?}");
    }
}
