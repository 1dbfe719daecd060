//! Procfiles, as foreman and honcho run them: one service per process
//! type, each command under `sh -c` with the whole environment, PORT from
//! 5000 in steps of 100 by type (+1 per instance), `.env` loaded.
//!
//! A Procfile is turned into corral.toml text and loaded like any config,
//! so what runs is exactly what `corral check -f Procfile` prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::diag::{ConfigErrors, Diagnostic, Severity};

/// How `up` was asked to run a Procfile (foreman's -p, -e and -m).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcfileOptions {
    /// PORT of the first process type; each next type gets 100 more.
    pub port: u16,
    /// The env file (default: `.env` beside the Procfile, when it exists).
    pub env_file: Option<PathBuf>,
    /// `web=2,worker=1` (`all=N` for every type); None: one of each.
    pub formation: Option<String>,
}

impl Default for ProcfileOptions {
    fn default() -> Self {
        ProcfileOptions {
            port: 5000,
            env_file: None,
            formation: None,
        }
    }
}

/// A file named `Procfile` (or `Procfile.dev`, ...) that is not TOML.
pub fn is_procfile(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("Procfile") && !n.ends_with(".toml"))
}

/// One `name: command` line.
struct Process {
    name: String,
    command: String,
}

/// The corral.toml equivalent of a Procfile.
pub fn to_toml(path: &Path, text: &str, options: &ProcfileOptions) -> Result<String, ConfigErrors> {
    let error = |line: usize, column: usize, message: String| Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line,
        column,
        message,
    };
    let mut errors = Vec::new();
    let mut processes: Vec<Process> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, command)) = trimmed.split_once(':') else {
            errors.push(error(
                i + 1,
                1,
                format!("expected `name: command`, found {trimmed:?}"),
            ));
            continue;
        };
        let name = name.trim();
        let valid = super::values::is_name(name);
        if !valid {
            errors.push(error(
                i + 1,
                1,
                format!("invalid process type {name:?}: use letters, digits, '-' and '_'"),
            ));
            continue;
        }
        if processes.iter().any(|p| p.name == name) {
            errors.push(error(
                i + 1,
                1,
                format!("process type {name:?} is defined twice"),
            ));
            continue;
        }
        let command = command.trim();
        if command.is_empty() {
            errors.push(error(
                i + 1,
                name.len() + 2,
                format!("process type {name:?} has no command"),
            ));
            continue;
        }
        processes.push(Process {
            name: name.to_string(),
            command: command.to_string(),
        });
    }
    if processes.is_empty() && errors.is_empty() {
        errors.push(error(0, 0, "the Procfile defines no process type".into()));
    }
    let counts = match &options.formation {
        Some(spec) => formation(spec, &processes).map_err(|m| error(0, 0, m)),
        None => Ok(BTreeMap::new()),
    };
    let counts = match counts {
        Ok(counts) => counts,
        Err(e) => {
            errors.push(e);
            BTreeMap::new()
        }
    };
    let env_file = match &options.env_file {
        Some(file) => {
            let resolved = super::dir_of(path).join(file);
            if !resolved.is_file() {
                errors.push(error(
                    0,
                    0,
                    format!("cannot read env file {}: not found", resolved.display()),
                ));
            }
            Some(file.clone())
        }
        None => Some(PathBuf::from(".env")).filter(|f| super::dir_of(path).join(f).is_file()),
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let name = path
        .file_name()
        .map_or("Procfile".into(), |n| n.to_string_lossy().into_owned());
    let mut out = format!(
        "# corral.toml for {name}, as foreman runs it: each process type a service,\n\
         # its command under sh -c with corral's whole environment (inherit-env),\n\
         # PORT = {} + 100 x the type's index (+1 per instance).\n\n\
         [corral]\n\
         parallel = true\n",
        options.port
    );
    for (index, p) in processes.iter().enumerate() {
        let count = counts.get(&p.name).copied().unwrap_or(1);
        let port = u32::from(options.port) + 100 * index as u32;
        out.push('\n');
        if count == 0 {
            let _ = writeln!(
                out,
                "# {}: left out by the formation ({}=0)",
                p.name, p.name
            );
            continue;
        }
        let _ = writeln!(out, "[services.{}]", p.name);
        // `$` is the shell's to expand, from the service's environment.
        let command = super::document::quote(&p.command.replace('$', "$$"));
        let _ = writeln!(out, "command = [\"sh\", \"-c\", {command}]");
        if port <= 65535 {
            let _ = writeln!(out, "port = {port}");
        }
        if count > 1 {
            let _ = writeln!(out, "replicas = {count}");
        }
        let _ = writeln!(out, "inherit-env = [\"*\"]");
        if let Some(file) = &env_file {
            let file = super::document::quote(&file.to_string_lossy().replace('$', "$$"));
            let _ = writeln!(out, "env-file = {file}");
        }
    }
    Ok(out)
}

/// `web=2,worker=1` or `all=2,web=1` (a named type overrides `all`).
fn formation(spec: &str, processes: &[Process]) -> Result<BTreeMap<String, u32>, String> {
    let mut all = None;
    let mut named = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, count)) = part.split_once('=') else {
            return Err(format!(
                "invalid formation {part:?}: expected NAME=COUNT, as in web=2,worker=1"
            ));
        };
        let (name, count) = (name.trim(), count.trim());
        let count: u32 = count.parse().map_err(|_| {
            format!("invalid formation {part:?}: {count:?} is not a number of processes")
        })?;
        if count > corral_proto::MAX_REPLICAS {
            return Err(format!(
                "invalid formation {part:?}: at most {} processes of a type",
                corral_proto::MAX_REPLICAS
            ));
        }
        if name == "all" {
            all = Some(count);
        } else if processes.iter().any(|p| p.name == name) {
            named.insert(name.to_string(), count);
        } else {
            let known: Vec<&str> = processes.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "the formation names {name:?}, which the Procfile does not define (it has {})",
                known.join(", ")
            ));
        }
    }
    Ok(processes
        .iter()
        .map(|p| {
            let count = named.get(&p.name).copied().or(all).unwrap_or(1);
            (p.name.clone(), count)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn types_ports_formation_and_quoting() {
        let text = "# app\nweb: bundle exec puma -p $PORT\n\nworker: echo \"a\\b\" ${QUEUE}\nclock: ./clock\n";
        let options = ProcfileOptions {
            port: 6000,
            env_file: None,
            formation: Some("all=2, worker=1, clock=0".into()),
        };
        let toml = to_toml(Path::new("/nonexistent/Procfile"), text, &options).unwrap();
        assert!(toml.contains(
            "[services.web]\ncommand = [\"sh\", \"-c\", \"bundle exec puma -p $$PORT\"]\nport = 6000\nreplicas = 2\n"
        ), "{toml}");
        assert!(toml.contains(
            "[services.worker]\ncommand = [\"sh\", \"-c\", \"echo \\\"a\\\\b\\\" $${QUEUE}\"]\nport = 6100\ninherit-env"
        ), "{toml}");
        assert!(
            toml.contains("# clock: left out by the formation (clock=0)"),
            "{toml}"
        );
        assert!(!toml.contains("[services.clock]"));
    }

    #[test]
    fn bad_lines_and_formations_are_errors_with_positions() {
        let errors = to_toml(
            Path::new("Procfile"),
            "web: run\nnot a process\nweb: again\nbad name: x\n",
            &ProcfileOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("Procfile:2:1: error: expected `name: command`"),
            "{errors}"
        );
        assert!(
            errors.contains("Procfile:3:1: error: process type \"web\" is defined twice"),
            "{errors}"
        );
        assert!(
            errors.contains("Procfile:4:1: error: invalid process type \"bad name\""),
            "{errors}"
        );
        let errors = to_toml(
            Path::new("Procfile"),
            "web: run\n",
            &ProcfileOptions {
                formation: Some("wbe=2".into()),
                ..ProcfileOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(errors.contains("the formation names \"wbe\""), "{errors}");
    }
}
