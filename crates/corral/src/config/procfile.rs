//! Procfiles, as foreman and honcho run them: one service per process
//! type, each command under `sh -c` with the whole environment, PORT from
//! a base (5000, or PORT from `.env` or the environment) in steps of 100
//! by type (+1 per instance), `.env` loaded.
//!
//! A Procfile is turned into corral.toml text and loaded like any config,
//! so what runs is exactly what `corral check -f Procfile` prints; what
//! loading that text finds is reported at the Procfile's lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::diag::{ConfigErrors, Diagnostic, Severity};
use super::env::{self, HostEnv};

/// How `up` was asked to run a Procfile (foreman's -p, -e and -m).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcfileOptions {
    /// PORT of the first process type; each next type gets 100 more.
    /// None: PORT from the env file, else from corral's environment, else
    /// 5000 (foreman's order).
    pub port: Option<u16>,
    /// The env file (default: `.env` beside the Procfile, when it exists).
    pub env_file: Option<PathBuf>,
    /// `web=2,worker=1` (`all=N` for every type); None: one of each.
    pub formation: Option<String>,
}

/// The base PORT when neither `--port`, the env file nor the environment sets one.
const DEFAULT_PORT: u16 = 5000;

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
    /// Its line in the Procfile.
    line: usize,
}

/// What a Procfile stands for.
pub struct Generated {
    /// corral.toml text.
    pub toml: String,
    /// The Procfile line each line of `toml` stands for (0: none), by index.
    pub lines: Vec<usize>,
    /// Lines skipped.
    pub warnings: Vec<Diagnostic>,
}

impl Generated {
    /// Moves a diagnostic about `toml` to the Procfile line it stands for.
    pub fn locate(&self, d: &mut Diagnostic) {
        if d.line > 0 {
            d.line = self.lines.get(d.line - 1).copied().unwrap_or(0);
            d.column = usize::from(d.line > 0);
        }
    }
}

/// The corral.toml equivalent of a Procfile. As foreman and honcho do, a
/// line that is not `name: command` is skipped (with a warning here).
pub fn to_toml(
    path: &Path,
    text: &str,
    options: &ProcfileOptions,
    host: &HostEnv,
) -> Result<Generated, ConfigErrors> {
    let at = |severity: Severity, line: usize, column: usize, message: String| Diagnostic {
        severity,
        file: path.to_path_buf(),
        line,
        column,
        message,
    };
    let error =
        |line: usize, column: usize, message: String| at(Severity::Error, line, column, message);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut processes: Vec<Process> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let entry = trimmed
            .split_once(':')
            .map(|(name, command)| (name.trim(), command.trim()))
            .filter(|(name, command)| super::values::is_name(name) && !command.is_empty());
        let Some((name, command)) = entry else {
            warnings.push(at(
                Severity::Warning,
                i + 1,
                1,
                format!(
                    "skipped: not a process (`name: command`, the name of letters, digits, '-' and '_'): {trimmed:?}"
                ),
            ));
            continue;
        };
        if processes.iter().any(|p| p.name == name) {
            errors.push(error(
                i + 1,
                1,
                format!("process type {name:?} is defined twice"),
            ));
            continue;
        }
        processes.push(Process {
            name: name.to_string(),
            command: command.to_string(),
            line: i + 1,
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
    let base = match options.port {
        Some(port) => port,
        None => match base_port(&super::dir_of(path), env_file.as_deref(), host) {
            Ok(port) => port,
            Err(e) => {
                errors.push(e);
                DEFAULT_PORT
            }
        },
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let name = path
        .file_name()
        .map_or("Procfile".into(), |n| n.to_string_lossy().into_owned());
    let mut out = Lines::default();
    out.push(
        0,
        format!(
            "# corral.toml for {name}, as foreman runs it: each process type a service,\n\
             # its command under sh -c with corral's whole environment (inherit-env),\n\
             # PORT = {base} + 100 x the type's index (+1 per instance).\n\n\
             [corral]\n\
             parallel = true"
        ),
    );
    for (index, p) in processes.iter().enumerate() {
        let count = counts.get(&p.name).copied().unwrap_or(1);
        let port = u32::from(base) + 100 * index as u32;
        let line = p.line;
        out.push(0, String::new());
        if count == 0 {
            out.push(
                line,
                format!("# {}: left out by the formation ({}=0)", p.name, p.name),
            );
            continue;
        }
        out.push(line, format!("[services.{}]", p.name));
        // `$` is the shell's to expand, from the service's environment.
        let command = super::document::quote(&p.command.replace('$', "$$"));
        out.push(line, format!("command = [\"sh\", \"-c\", {command}]"));
        if port <= 65535 {
            out.push(line, format!("port = {port}"));
        }
        if count > 1 {
            out.push(line, format!("replicas = {count}"));
        }
        out.push(line, "inherit-env = [\"*\"]".into());
        if let Some(file) = &env_file {
            let file = super::document::quote(&file.to_string_lossy().replace('$', "$$"));
            out.push(line, format!("env-file = {file}"));
        }
    }
    Ok(Generated {
        toml: out.text,
        lines: out.lines,
        warnings,
    })
}

/// TOML text being written, and the Procfile line each of its lines stands for.
#[derive(Default)]
struct Lines {
    text: String,
    lines: Vec<usize>,
}

impl Lines {
    /// Adds `text` (one line or several) for the Procfile's `line`.
    fn push(&mut self, line: usize, text: String) {
        for one in text.split('\n') {
            self.text.push_str(one);
            self.text.push('\n');
            self.lines.push(line);
        }
    }
}

/// The base PORT as foreman takes it: from the env file, else from corral's
/// environment, else 5000. A PORT that is not a port number is an error.
fn base_port(dir: &Path, env_file: Option<&Path>, host: &HostEnv) -> Result<u16, Diagnostic> {
    let parse = |value: &str, file: PathBuf, line: usize, whence: &str| {
        value.trim().parse::<u16>().map_err(|_| Diagnostic {
            severity: Severity::Error,
            file,
            line,
            column: usize::from(line > 0),
            message: format!(
                "PORT {whence} is {value:?}, not a port number (the Procfile's base port)"
            ),
        })
    };
    if let Some(file) = env_file {
        let file = dir.join(file);
        // A file that cannot be read is reported where it is loaded.
        let entries = env::read_env_file(&file).unwrap_or_default();
        let port = entries
            .iter()
            .rev()
            .find_map(|e| (e.name == "PORT").then(|| (e.value.as_written(), e.line)));
        // A name alone (PORT inherited) leaves it to the environment.
        if let Some((Some(value), line)) = port {
            return parse(value, file, line, "in the env file");
        }
    }
    match host.get("PORT") {
        Some(value) if !value.is_empty() => parse(
            value,
            PathBuf::from("(environment)"),
            0,
            "in corral's environment",
        ),
        _ => Ok(DEFAULT_PORT),
    }
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

    fn host(vars: &[(&str, &str)]) -> HostEnv {
        HostEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..HostEnv::default()
        }
    }

    fn toml(text: &str, options: &ProcfileOptions) -> String {
        to_toml(
            Path::new("/nonexistent/Procfile"),
            text,
            options,
            &host(&[]),
        )
        .unwrap()
        .toml
    }

    #[test]
    fn types_ports_formation_and_quoting() {
        let text = "# app\nweb: bundle exec puma -p $PORT\n\nworker: echo \"a\\b\" ${QUEUE}\nclock: ./clock\n";
        let options = ProcfileOptions {
            port: Some(6000),
            env_file: None,
            formation: Some("all=2, worker=1, clock=0".into()),
        };
        let toml = toml(text, &options);
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

    /// foreman and honcho read a Procfile line with `^([A-Za-z0-9_-]+):\s*(.+)$`
    /// and pass over any other; corral does too, and says so.
    #[test]
    fn lines_that_are_not_processes_are_skipped_with_a_warning() {
        let text =
            "web: run\nnot a process\nbad name: x\nempty:\nweb.1: dotted\n  worker :  work  \n";
        let generated = to_toml(
            Path::new("Procfile"),
            text,
            &ProcfileOptions::default(),
            &host(&[]),
        )
        .unwrap();
        let warned: Vec<String> = generated.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warned.len(), 4, "{warned:?}");
        for (i, line) in [2, 3, 4, 5].iter().enumerate() {
            assert!(
                warned[i].starts_with(&format!(
                    "Procfile:{line}:1: warning: skipped: not a process"
                )),
                "{warned:?}"
            );
        }
        assert!(generated.toml.contains("[services.web]"));
        assert!(generated
            .toml
            .contains("[services.worker]\ncommand = [\"sh\", \"-c\", \"work\"]"));
        // Each line of the text knows its Procfile line.
        let at = |needle: &str| {
            let i = generated
                .toml
                .lines()
                .position(|l| l.starts_with(needle))
                .unwrap();
            generated.lines[i]
        };
        assert_eq!(
            (
                at("[services.web]"),
                at("[services.worker]"),
                at("[corral]")
            ),
            (1, 6, 0)
        );
    }

    #[test]
    fn a_type_defined_twice_and_a_bad_formation_are_errors() {
        let run = |text: &str, formation: Option<&str>| {
            let options = ProcfileOptions {
                formation: formation.map(str::to_string),
                ..ProcfileOptions::default()
            };
            to_toml(Path::new("Procfile"), text, &options, &host(&[]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let errors = run("web: run\nweb: again\n", None);
        assert!(
            errors.contains("Procfile:2:1: error: process type \"web\" is defined twice"),
            "{errors}"
        );
        let errors = run("web: run\n", Some("wbe=2"));
        assert!(errors.contains("the formation names \"wbe\""), "{errors}");
        assert!(run("# nothing\n", None).contains("defines no process type"));
    }

    /// A formation that names some types runs one of each other type
    /// (honcho's reading; foreman runs none of them).
    #[test]
    fn types_a_formation_does_not_name_run_once() {
        let options = ProcfileOptions {
            formation: Some("web=2".into()),
            ..ProcfileOptions::default()
        };
        let toml = toml("web: a\nworker: b\n", &options);
        assert!(toml.contains("[services.web]"), "{toml}");
        assert!(toml.contains("replicas = 2"), "{toml}");
        assert!(toml.contains("[services.worker]"), "{toml}");
    }

    /// The base port: --port, else PORT of the env file, else of corral's
    /// environment, else 5000 (foreman's order; honcho's too).
    #[test]
    fn the_base_port_comes_from_the_option_the_env_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let procfile = dir.path().join("Procfile");
        std::fs::write(dir.path().join(".env"), "A=1\nPORT=3000\n").unwrap();
        std::fs::write(dir.path().join("other.env"), "B=2\n").unwrap();
        std::fs::write(dir.path().join("bad.env"), "PORT=http\n").unwrap();
        let base = |option: Option<u16>, file: Option<&str>, env: &[(&str, &str)]| {
            let options = ProcfileOptions {
                port: option,
                env_file: file.map(PathBuf::from),
                formation: None,
            };
            match to_toml(&procfile, "web: run\n", &options, &host(env)) {
                Ok(g) => g
                    .toml
                    .lines()
                    .find(|l| l.starts_with("port = "))
                    .unwrap_or("")
                    .to_string(),
                Err(e) => e.to_string(),
            }
        };
        assert_eq!(base(None, None, &[("PORT", "4000")]), "port = 3000");
        assert_eq!(base(Some(7000), None, &[]), "port = 7000");
        assert_eq!(
            base(None, Some("other.env"), &[("PORT", "4000")]),
            "port = 4000"
        );
        assert_eq!(base(None, Some("other.env"), &[]), "port = 5000");
        let bad = base(None, Some("bad.env"), &[]);
        assert!(
            bad.contains("bad.env:1:1: error: PORT in the env file is \"http\""),
            "{bad}"
        );
    }
}
