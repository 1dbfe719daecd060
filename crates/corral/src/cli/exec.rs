//! `corral exec` and `corral run`: a command in a service's environment,
//! attached to this terminal.
//!
//! The daemon says how the service runs (`GET /v1/services/NAME/exec`: its
//! environment with the discovery variables, working dir, user); the
//! command then replaces this process, so stdin, the terminal, signals and
//! the exit code are the caller's, as with `docker compose exec`. Without a
//! daemon the config gives the same, less what discovery would inject.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use corral_proto::{ExecSpec, ExecUser};
use hyper::Method;

use super::{client_for, event_loop, load, CliError, Target};

/// `corral exec SERVICE -- CMD...`: CMD in the service's environment.
pub fn exec(
    target: &Target,
    service: &str,
    command: &[String],
    no_tty: bool,
) -> Result<ExitCode, CliError> {
    let spec = spec_of(target, service, false)?;
    replace_with(&spec, command, no_tty)
}

/// `corral run SERVICE [-- ARGS...]`: a fresh, attached instance of the
/// service's command with ARGS appended, its dependencies started first.
pub fn run(
    target: &Target,
    service: &str,
    args: &[String],
    no_tty: bool,
) -> Result<ExitCode, CliError> {
    let spec = spec_of(target, service, true)?;
    let mut command = spec.command.clone();
    command.extend(args.iter().cloned());
    replace_with(&spec, &command, no_tty)
}

/// How `service` runs: from the daemon (after starting what it depends on,
/// when `start_dependencies`), else from the config.
fn spec_of(target: &Target, service: &str, start_dependencies: bool) -> Result<ExecSpec, CliError> {
    let client = client_for(target);
    let rt = event_loop()?;
    let from_daemon = rt.block_on(async {
        let path = format!("/services/{service}/exec");
        let spec: ExecSpec = client.json(Method::GET, &path, None).await?;
        if start_dependencies && !spec.depends_on.is_empty() {
            for dependency in &spec.depends_on {
                let path = format!("/services/{dependency}/start");
                let result: corral_proto::ActionResult =
                    client.json(Method::POST, &path, None).await?;
                if !result.ok {
                    return Err(CliError::Failed(format!(
                        "dependency {dependency} did not start: {}",
                        result.message
                    )));
                }
            }
            // Again, now that they run: what discovery tells it has changed.
            return client.json(Method::GET, &path, None).await;
        }
        Ok(spec)
    });
    match from_daemon {
        Err(CliError::NoDaemon { .. }) => {
            eprintln!(
                "corral: not running; using {}'s environment from {} (no discovery variables{})",
                service,
                target.file().display(),
                if start_dependencies {
                    ", dependencies not started"
                } else {
                    ""
                }
            );
            from_config(target, service)
        }
        other => other,
    }
}

/// The service as the config defines it (an instance name, or a service
/// name standing for its first instance).
fn from_config(target: &Target, service: &str) -> Result<ExecSpec, CliError> {
    let config = load(&target.file())?;
    let found = config
        .services
        .iter()
        .find(|s| s.name == service)
        .or_else(|| config.services.iter().find(|s| s.group == service))
        .ok_or_else(|| {
            let known: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
            CliError::Usage(format!(
                "unknown service {service:?} (services: {})",
                known.join(", ")
            ))
        })?;
    Ok(ExecSpec {
        command: found.command.clone(),
        env: found.environment(),
        working_dir: found.working_dir.as_ref().map(|d| d.display().to_string()),
        user: found.user.as_ref().map(|u| ExecUser {
            name: u.name.clone(),
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }),
        depends_on: Vec::new(),
    })
}

/// Becomes `command` in `spec`'s environment (returns only on failure).
fn replace_with(spec: &ExecSpec, command: &[String], no_tty: bool) -> Result<ExitCode, CliError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| CliError::Usage("no command to run".into()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    if no_tty {
        cmd.stdin(std::process::Stdio::null());
    }
    if let Some(user) = &spec.user {
        let me = nix::unistd::geteuid().as_raw();
        if me != user.uid {
            if me != 0 {
                return Err(CliError::Failed(format!(
                    "the service runs as {}: running its commands needs root",
                    user.name
                )));
            }
            let (uid, gid) = (user.uid, user.gid);
            let groups: Vec<libc::gid_t> = user.groups.clone();
            // SAFETY: only async-signal-safe calls between fork and exec
            // (the groups were made before the fork).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    let error = cmd.exec();
    eprintln!("corral: cannot run {program:?}: {error}");
    // What a shell answers for a command it cannot run.
    Ok(ExitCode::from(127))
}
