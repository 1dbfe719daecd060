//! The command line: parses arguments and runs one command.

mod check;
mod client;
mod commands;
mod detach;
mod exec;
mod top;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use corral_proto::ErrorBody;

use crate::config::{self, Config, LoadFailure};
use crate::control;
use crate::logs::LogHub;
use crate::process::tracking::{self, Swept};
use crate::runtime;
use client::Client;

/// corral: run, supervise and connect the processes of a service.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about)]
pub struct Cli {
    /// The config file, for any command (`corral -f x.toml logs -f web`);
    /// default: corral.toml here or in a parent directory, else a Procfile here.
    #[arg(
        short = 'f',
        long = "file",
        env = "CORRAL_FILE",
        value_name = "FILE",
        value_delimiter = ':'
    )]
    file: Vec<PathBuf>,
    /// Variables for `${...}` in the config that corral's environment does
    /// not set (default: .env beside the config, when there is one).
    #[arg(long = "env-file", env = "CORRAL_ENV_FILE", value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Which config, and so which daemon.
#[derive(Debug, Args)]
struct Target {
    /// The config file (default: corral.toml, else a Procfile, in this
    /// directory); the daemon's socket is found beside it. Repeated, the
    /// files are merged in order (later wins).
    #[arg(short = 'f', long = "file")]
    file: Vec<PathBuf>,
    /// The control socket (default: corral.sock in the state directory).
    #[arg(long, env = "CORRAL_SOCKET")]
    socket: Option<PathBuf>,
    /// Where the daemon keeps its socket, lock and run record (default:
    /// [corral] state-dir, else .corral/ beside the config when writable,
    /// else a private directory under $XDG_RUNTIME_DIR, /run/corral or the
    /// temp dir).
    #[arg(long = "state-dir", env = "CORRAL_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl Target {
    /// The daemon's state directory, created (for `up`): --state-dir, else
    /// the loaded config's `[corral] state-dir`, else the default list.
    fn create_state(&self, configured: Option<&Path>) -> Result<PathBuf, CliError> {
        let given = self.state_dir.as_deref().or(configured);
        crate::state::create(&self.file(), given).map_err(|e| CliError::Failed(e.to_string()))
    }

    /// Where a command looks for the daemon's state: --state-dir, else the
    /// files' `[corral] state-dir`, else the default list.
    fn find_state(&self) -> PathBuf {
        let given = self
            .state_dir
            .clone()
            .or_else(|| crate::state::configured(&self.files()));
        crate::state::find(&self.file(), given.as_deref())
    }

    /// The daemon's socket in `state_dir`, unless --socket names another.
    fn socket_in(&self, state_dir: &Path) -> PathBuf {
        match &self.socket {
            Some(socket) => socket.clone(),
            None => short_enough(state_dir.join("corral.sock")),
        }
    }

    /// Every config file, merged in order: the ones given, or the one found.
    fn files(&self) -> Vec<PathBuf> {
        if self.file.is_empty() {
            vec![self.file()]
        } else {
            self.file.clone()
        }
    }

    /// The config file: as given (after the command, else before it, else
    /// CORRAL_FILE), else corral.toml here or in the nearest parent that has
    /// one (as compose and git look), else a Procfile here (as foreman
    /// does), else corral.toml (to say it is missing).
    fn file(&self) -> PathBuf {
        if let Some(file) = self.file.first() {
            return file.clone();
        }
        let here = PathBuf::from("corral.toml");
        if here.exists() {
            return here;
        }
        if let Ok(cwd) = std::env::current_dir() {
            if let Some(found) = cwd
                .ancestors()
                .skip(1)
                .map(|dir| dir.join("corral.toml"))
                .find(|file| file.is_file())
            {
                return found;
            }
        }
        let procfile = PathBuf::from("Procfile");
        if procfile.exists() {
            procfile
        } else {
            here
        }
    }
}

/// How a foreground `up` ends (for CI runs, as compose has them).
#[derive(Debug, Args, Clone, Default)]
struct RunArgs {
    /// Stop everything as soon as any service ends by itself (a oneshot's
    /// success excepted); exit with its code.
    #[arg(long)]
    abort_on_exit: bool,
    /// Exit with this service's exit code (implies --abort-on-exit).
    #[arg(long, value_name = "SERVICE")]
    exit_code_from: Option<String>,
}

impl RunArgs {
    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if self.abort_on_exit {
            args.push("--abort-on-exit".into());
        }
        if let Some(name) = &self.exit_code_from {
            args.extend(["--exit-code-from".into(), name.into()]);
        }
        args
    }

    /// The engine's rule, with the service's index in `config`.
    fn rule(&self, config: &Config) -> Result<Option<crate::engine::AbortOnExit>, CliError> {
        let exit_code_from = match &self.exit_code_from {
            None if !self.abort_on_exit => return Ok(None),
            None => None,
            Some(name) => {
                let found: Vec<usize> = (0..config.services.len())
                    .filter(|&i| {
                        config.services[i].name == *name || config.services[i].group == *name
                    })
                    .collect();
                match found[..] {
                    [i] => Some(i),
                    [] => {
                        return Err(CliError::Usage(format!(
                            "--exit-code-from: unknown service {name:?} in {}",
                            config.path.display()
                        )))
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                            "--exit-code-from: {name:?} has several instances; name one (e.g. {name}.0)"
                        )))
                    }
                }
            }
        };
        Ok(Some(crate::engine::AbortOnExit { exit_code_from }))
    }
}

/// How to read a Procfile, as foreman's options say it.
#[derive(Debug, Args, Clone, Default)]
struct ProcfileArgs {
    /// With a Procfile: PORT of the first process type; each next type
    /// gets 100 more (foreman's -p). Default: PORT from the env file, else
    /// from the environment, else 5000.
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// With a Procfile: the env file to load (default: .env beside it).
    #[arg(short = 'e', long = "env")]
    env_file: Option<PathBuf>,
    /// With a Procfile: how many of each type, e.g. web=2,worker=1
    /// (all=N for every type; a type not named runs once).
    #[arg(short = 'm', long)]
    formation: Option<String>,
}

impl ProcfileArgs {
    /// How to read `file`: None for a corral.toml (where these options
    /// have no meaning, so giving one is a usage error).
    fn options(&self, file: &Path) -> Result<Option<config::ProcfileOptions>, CliError> {
        if !config::is_procfile(file) {
            if self.port.is_some() || self.env_file.is_some() || self.formation.is_some() {
                return Err(CliError::Usage(format!(
                    "--port, --env and --formation apply to a Procfile; {} is not one",
                    file.display()
                )));
            }
            return Ok(None);
        }
        Ok(Some(config::ProcfileOptions {
            port: self.port,
            env_file: self.env_file.clone(),
            formation: self.formation.clone(),
        }))
    }

    /// The same options as arguments, for the daemon or a background `up`.
    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        if let Some(port) = self.port {
            args.extend(["--port".into(), port.to_string().into()]);
        }
        if let Some(env) = &self.env_file {
            args.extend(["--env".into(), env.clone().into_os_string()]);
        }
        if let Some(formation) = &self.formation {
            args.extend(["--formation".into(), formation.into()]);
        }
        args
    }
}

/// Target for `logs`, where -f means follow (as in docker compose).
#[derive(Debug, Args)]
struct LogsTarget {
    /// The config file; the daemon's socket is found beside it.
    #[arg(long = "file")]
    file: Vec<PathBuf>,
    /// The control socket.
    #[arg(long, env = "CORRAL_SOCKET")]
    socket: Option<PathBuf>,
    /// The daemon's state directory.
    #[arg(long = "state-dir", env = "CORRAL_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the services and supervise them (in the foreground, or with -d in the background).
    Up {
        #[command(flatten)]
        target: Target,
        /// Run in the background; return once every service is started (or ready).
        #[arg(short = 'd', long)]
        detach: bool,
        /// Return once every service runs (or is ready, or completed), as
        /// compose's up --wait: implies -d.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        run: RunArgs,
        /// Also run the services that have this profile (repeat it, or
        /// a,b; CORRAL_PROFILES too); services without a profile always run.
        #[arg(
            long = "profile",
            env = "CORRAL_PROFILES",
            value_delimiter = ',',
            value_name = "PROFILE"
        )]
        profiles: Vec<String>,
        #[command(flatten)]
        procfile: ProcfileArgs,
        /// Start only these services (and what they depend on).
        services: Vec<String>,
        /// (Set by `up -d` for the daemon it starts.) Keep the console in
        /// this file, rotated as `[corral] log` says.
        #[arg(long, hide = true)]
        console_log: Option<PathBuf>,
    },
    /// Stop everything in reverse dependency order and end the daemon.
    Down {
        #[command(flatten)]
        target: Target,
    },
    /// Show each service: state, pid, uptime, restarts, CPU, memory,
    /// processes, open files, health, last exit.
    Ps {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table (the same as --format json).
        #[arg(long)]
        json: bool,
        /// table or json.
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
        /// Redraw the table every --interval until Ctrl-C.
        #[arg(short, long)]
        watch: bool,
        /// How often --watch redraws (e.g. 1s, 500ms).
        #[arg(long, default_value = "2s", requires = "watch")]
        interval: String,
    },
    /// Start services (also failed or stopped ones; all without a name)
    /// and wait until they run. Names may be globs: 'web*'.
    Start {
        #[command(flatten)]
        target: Target,
        services: Vec<String>,
    },
    /// Stop services (a name, a glob, or --all) and wait until they are
    /// stopped; others are not touched.
    Stop {
        #[command(flatten)]
        target: Target,
        /// Every service (in reverse order).
        #[arg(long, conflicts_with = "services")]
        all: bool,
        /// Seconds (or "500ms", "2m") between the stop signal and SIGKILL,
        /// instead of each service's stop-timeout.
        #[arg(short = 't', long = "timeout", value_name = "SECS")]
        timeout: Option<String>,
        services: Vec<String>,
    },
    /// Restart services (all without a name) and wait until they run again.
    Restart {
        #[command(flatten)]
        target: Target,
        /// Seconds (or "500ms", "2m") between the stop signal and SIGKILL,
        /// instead of each service's stop-timeout.
        #[arg(short = 't', long = "timeout", value_name = "SECS")]
        timeout: Option<String>,
        services: Vec<String>,
    },
    /// Send a signal to services (to their whole process group): a name, a
    /// glob, or --all.
    Kill {
        #[command(flatten)]
        target: Target,
        /// The signal, e.g. HUP or SIGUSR1.
        #[arg(short = 's', long = "signal", default_value = "SIGTERM")]
        signal: String,
        /// Every running service.
        #[arg(long, conflicts_with = "services")]
        all: bool,
        services: Vec<String>,
    },
    /// Print recent output of services (all by default), merged in time order.
    Logs {
        #[command(flatten)]
        target: LogsTarget,
        #[command(flatten)]
        options: commands::LogsOptions,
        services: Vec<String>,
    },
    /// Wait until services (all without a name) run, are ready, or
    /// completed; fail naming those that cannot get there.
    Wait {
        #[command(flatten)]
        target: Target,
        /// Give up after this long (seconds, or "2m").
        #[arg(
            short = 't',
            long = "timeout",
            value_name = "SECS",
            default_value = "300"
        )]
        timeout: String,
        services: Vec<String>,
    },
    /// Run a command in a service's environment (its env, discovery
    /// variables, working dir, user), attached: `corral exec web -- ls -l`.
    Exec {
        #[command(flatten)]
        target: Target,
        /// Do not attach stdin (as compose's -T).
        #[arg(short = 'T')]
        no_tty: bool,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Run a fresh, attached instance of a service's command (ARGS
    /// appended), after starting what it depends on: `corral run migrate -- --dry-run`.
    Run {
        #[command(flatten)]
        target: Target,
        /// Do not attach stdin (as compose's -T).
        #[arg(short = 'T')]
        no_tty: bool,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the config as corral reads it: the files merged, ${...}
    /// interpolated, secrets masked.
    Config {
        #[command(flatten)]
        target: Target,
        /// Show the values that look secret as they are.
        #[arg(long)]
        unmask: bool,
    },
    /// Print a completion script: `corral completions bash > /etc/bash_completion.d/corral`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `corral man | man -l -`.
    Man,
    /// A live view in the terminal: services, resources, logs; keys to
    /// start, stop, restart, signal and scale (? lists them).
    Top {
        #[command(flatten)]
        target: Target,
    },
    /// Print lifecycle events as they happen (starts, exits, readiness...).
    Events {
        #[command(flatten)]
        target: Target,
        /// One JSON object per line, as the API sends them.
        #[arg(long)]
        json: bool,
    },
    /// Run N instances of a service that has `replicas` (api.0 .. api.N-1).
    Scale {
        #[command(flatten)]
        target: Target,
        service: String,
        replicas: u32,
    },
    /// What discovery knows: every endpoint, or those of NAME.
    Endpoints {
        #[command(flatten)]
        target: Target,
        name: Option<String>,
    },
    /// Re-read the config; restart only what changed.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Validate the config and print the resolved plan (for a Procfile:
    /// the equivalent corral.toml).
    Check {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        procfile: ProcfileArgs,
    },
}

/// Why a command failed, and so which exit code corral returns.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(#[from] runtime::RuntimeError),
    #[error("{0}")]
    Socket(#[from] control::SocketError),
    #[error("no corral running for {} (socket {})", dir.display(), socket.display())]
    NoDaemon { dir: PathBuf, socket: PathBuf },
    #[error("permission denied on {}: only root, the user corral runs as and members of its [corral] socket-group may use it", .0.display())]
    Denied(PathBuf),
    #[error("{}", api_message(body))]
    Api { status: u16, body: ErrorBody },
    #[error("{0}")]
    Protocol(String),
    /// The daemon went away in the middle of a request (it is stopping).
    #[error("the daemon closed the connection: {0}")]
    Closed(String),
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn api_message(body: &ErrorBody) -> String {
    let mut msg = body.error.clone();
    if !body.known.is_empty() {
        msg.push_str(&format!(" (services: {})", body.known.join(", ")));
    }
    for d in &body.details {
        msg.push('\n');
        msg.push_str(d);
    }
    msg
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            // A reload the daemon rejected for config errors.
            CliError::Api { status: 422, .. } => 2,
            _ => 1,
        }
    }
}

/// `corral`: parses the command line and runs it.
pub fn main_cli() -> ExitCode {
    use clap::Parser;
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version (exit 0) or a usage error (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    finish("corral", run(cli))
}

/// `corrald`: the daemon, with what `corral up` resolved:
/// `[--daemon] -f FILE [--socket PATH] [--console-log PATH] [SERVICE...]`. Parsed by
/// hand: this is an interface between `corral up` and the daemon it execs,
/// and clap's code would be paged into the daemon.
pub fn main_daemon() -> ExitCode {
    crate::process::one_heap();
    // The kernel named the process after the file (`corral`); `ps`, `top`
    // and /proc/PID/comm tell the daemon from a command by this name.
    let _ = nix::sys::prctl::set_name(c"corrald");
    let mut files: Vec<PathBuf> = Vec::new();
    let mut file = None;
    let mut socket = None;
    let mut state_dir = None;
    let mut console_log = None;
    let (mut port, mut env_file, mut formation) = (None, None, None);
    let mut run = RunArgs::default();
    let mut exit_code_from = None;
    let mut profiles = Vec::new();
    let mut services = Vec::new();
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().and_then(|a| a.to_str()) == Some(crate::DAEMON_FLAG) {
        args.next();
    }
    while let Some(arg) = args.next() {
        let slot = match arg.to_str() {
            Some("-f") => &mut file,
            Some("--socket") => &mut socket,
            Some("--state-dir") => &mut state_dir,
            Some("--console-log") => &mut console_log,
            Some("--port") => &mut port,
            Some("--env") => &mut env_file,
            Some("--formation") => &mut formation,
            Some("--exit-code-from") => &mut exit_code_from,
            Some("--abort-on-exit") => {
                run.abort_on_exit = true;
                continue;
            }
            Some("--profile") => {
                match args.next() {
                    Some(p) => profiles.push(p.to_string_lossy().into_owned()),
                    None => {
                        eprintln!("corrald: \"--profile\" needs a value");
                        return ExitCode::from(2);
                    }
                }
                continue;
            }
            Some(name) if !name.starts_with('-') => {
                services.push(name.to_string());
                continue;
            }
            _ => {
                eprintln!(
                    "corrald: unexpected argument {arg:?}; corrald is started by `corral up`"
                );
                return ExitCode::from(2);
            }
        };
        match args.next() {
            Some(value) => {
                *slot = Some(PathBuf::from(value));
                // -f may come several times: the files merged in order.
                if let Some(f) = file.take() {
                    files.push(f);
                }
            }
            None => {
                eprintln!("corrald: {arg:?} needs a value");
                return ExitCode::from(2);
            }
        }
    }
    let target = Target {
        file: files,
        socket,
        state_dir,
    };
    let port = match port.map(|p: PathBuf| p.to_string_lossy().parse::<u16>()) {
        Some(Ok(port)) => Some(port),
        Some(Err(_)) => {
            eprintln!("corrald: --port needs a port number");
            return ExitCode::from(2);
        }
        None => None,
    };
    let procfile = ProcfileArgs {
        port,
        env_file,
        formation: formation.map(|f: PathBuf| f.to_string_lossy().into_owned()),
    };
    run.exit_code_from = exit_code_from.map(|n: PathBuf| n.to_string_lossy().into_owned());
    finish(
        "corrald",
        up(&target, &procfile, &run, &profiles, &services, console_log),
    )
}

/// The exit code of a command, after printing its error.
fn finish(me: &str, result: Result<ExitCode, CliError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(CliError::Config(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{me}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `corral up` in the foreground: becomes the daemon (exec, so the pid,
/// PID 1 included, and the terminal stay the same).
fn exec_daemon(
    target: &Target,
    procfile: &ProcfileArgs,
    run: &RunArgs,
    profiles: &[String],
    services: &[String],
    console_log: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    // Bad options are refused before the daemon starts.
    procfile.options(&target.file())?;
    use std::os::unix::process::CommandExt;
    let mut cmd = crate::daemon_command();
    for file in target.files() {
        cmd.arg("-f").arg(file);
    }
    if let Some(socket) = &target.socket {
        cmd.arg("--socket").arg(socket);
    }
    if let Some(dir) = &target.state_dir {
        cmd.arg("--state-dir").arg(dir);
    }
    cmd.args(procfile.args());
    cmd.args(run.args());
    for profile in profiles {
        cmd.arg("--profile").arg(profile);
    }
    if let Some(log) = console_log {
        cmd.arg("--console-log").arg(log);
    }
    cmd.args(services);
    let source = cmd.exec();
    Err(CliError::Failed(format!(
        "cannot start the daemon from {}: {source}",
        cmd.get_program().to_string_lossy()
    )))
}

impl Command {
    /// The config files given after the command (None: a command without any).
    fn file_mut(&mut self) -> Option<&mut Vec<PathBuf>> {
        Some(match self {
            Command::Up { target, .. }
            | Command::Down { target }
            | Command::Ps { target, .. }
            | Command::Start { target, .. }
            | Command::Stop { target, .. }
            | Command::Restart { target, .. }
            | Command::Kill { target, .. }
            | Command::Scale { target, .. }
            | Command::Endpoints { target, .. }
            | Command::Reload { target }
            | Command::Events { target, .. }
            | Command::Top { target }
            | Command::Wait { target, .. }
            | Command::Exec { target, .. }
            | Command::Config { target, .. }
            | Command::Run { target, .. }
            | Command::Check { target, .. } => &mut target.file,
            Command::Logs { target, .. } => &mut target.file,
            Command::Completions { .. } | Command::Man => return None,
        })
    }
}

/// Runs the parsed command; Ok is corral's exit code on success.
pub fn run(mut cli: Cli) -> Result<ExitCode, CliError> {
    // -f after the command wins over -f before it (and CORRAL_FILE).
    if let Some(file) = cli.command.file_mut() {
        if file.is_empty() {
            *file = std::mem::take(&mut cli.file);
        }
    }
    // The daemon and every reload read the same file: it goes in the
    // environment, absolute (no thread runs yet).
    if let Some(env_file) = cli.env_file.take() {
        let env_file = std::path::absolute(&env_file).unwrap_or(env_file);
        std::env::set_var("CORRAL_ENV_FILE", env_file);
    }
    if !matches!(
        cli.command,
        Command::Up {
            detach: false,
            wait: false,
            ..
        }
    ) {
        // A client whose reader went away (`corral ps | head`) ends quietly,
        // as Unix tools do; the daemon keeps ignoring SIGPIPE.
        // SAFETY: no other thread runs yet, and SIG_DFL is a valid disposition.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    match cli.command {
        Command::Up {
            detach, wait, run, ..
        } if (detach || wait) && (run.abort_on_exit || run.exit_code_from.is_some()) => {
            Err(CliError::Usage(
                "--abort-on-exit and --exit-code-from need a foreground up (no -d, no --wait)"
                    .into(),
            ))
        }
        Command::Up {
            target,
            detach,
            wait,
            procfile,
            profiles,
            services,
            ..
        } if detach || wait => detach::up_detached(&target, &procfile, &profiles, &services),
        Command::Up {
            target,
            procfile,
            run,
            profiles,
            services,
            console_log,
            ..
        } => exec_daemon(&target, &procfile, &run, &profiles, &services, console_log),
        Command::Check { target, procfile } => {
            let file = target.file();
            match procfile.options(&file)? {
                // What a Procfile stands for, checked: a corral.toml to start from.
                Some(options) => {
                    load_with(std::slice::from_ref(&file), Some(&options))?;
                    print!("{}", procfile_text(&file, &options)?);
                }
                None => {
                    let config = load_with(&target.files(), None)?;
                    if let Some(warning) = config.stop_grace_warning() {
                        eprintln!("{}: {warning}", target.file().display());
                    }
                    print!("{}", check::plan(&config));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Down { target } => down(&target),
        Command::Ps {
            target,
            json,
            format,
            watch,
            interval,
        } => {
            let every = config::parse_duration(&interval)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "invalid --interval {interval:?}: a duration above zero such as 2s or 500ms"
                    ))
                })?;
            let json = json || format == "json";
            client_call(&target, |c| {
                Box::pin(async move { commands::ps(&c, json, watch.then_some(every)).await })
            })
        }
        Command::Start { target, services } => client_call(&target, |c| {
            Box::pin(async move { commands::act(&c, "start", &services, None).await })
        }),
        Command::Stop {
            target,
            all,
            timeout,
            services,
        } => {
            if services.is_empty() && !all {
                return Err(CliError::Usage(
                    "stop what? name services (globs work: 'web*'), or --all for every one".into(),
                ));
            }
            let timeout = grace(timeout)?;
            client_call(&target, |c| {
                Box::pin(async move { commands::act(&c, "stop", &services, timeout).await })
            })
        }
        Command::Restart {
            target,
            timeout,
            services,
        } => {
            let timeout = grace(timeout)?;
            client_call(&target, |c| {
                Box::pin(async move { commands::act(&c, "restart", &services, timeout).await })
            })
        }
        Command::Kill {
            target,
            signal,
            all,
            services,
        } => {
            if config::parse_signal(&signal).is_none() {
                return Err(CliError::Usage(format!("unknown signal {signal:?}")));
            }
            if services.is_empty() && !all {
                return Err(CliError::Usage(
                    "kill what? name services (globs work: 'web*'), or --all for every one".into(),
                ));
            }
            client_call(&target, |c| {
                Box::pin(async move { commands::kill(&c, &signal, &services).await })
            })
        }
        Command::Logs {
            target,
            options,
            services,
        } => {
            let target = Target {
                file: target.file,
                socket: target.socket,
                state_dir: target.state_dir,
            };
            let window = options.window()?;
            client_call(&target, |c| {
                Box::pin(async move { commands::logs(&c, &options, window, &services).await })
            })
        }
        Command::Wait {
            target,
            timeout,
            services,
        } => {
            let limit = grace(Some(timeout))?.unwrap_or_default();
            client_call(&target, |c| {
                Box::pin(async move {
                    detach::wait_until_up(&c, &services, limit).await?;
                    println!(
                        "up: {}",
                        if services.is_empty() {
                            "every service".to_string()
                        } else {
                            services.join(", ")
                        }
                    );
                    Ok(())
                })
            })
        }
        Command::Exec {
            target,
            no_tty,
            service,
            command,
        } => exec::exec(&target, &service, &command, no_tty),
        Command::Run {
            target,
            no_tty,
            service,
            args,
        } => exec::run(&target, &service, &args, no_tty),
        Command::Config { target, unmask } => {
            let files = target.files();
            let file = target.file();
            // Checked first: a config with errors is reported, not printed.
            if config::is_procfile(&file) {
                let options = config::ProcfileOptions::default();
                load_with(&files, Some(&options))?;
                print!("{}", procfile_text(&file, &options)?);
            } else {
                load_with(&files, None)?;
                let host = config::host_env(&file).map_err(failure)?;
                print!(
                    "{}",
                    config::merged_toml(&files, &host, unmask).map_err(failure)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "corral", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|source| CliError::Io {
                    context: "cannot write the manual page",
                    source,
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top { target } => client_call(&target, |c| Box::pin(top::top(c))),
        Command::Events { target, json } => client_call(&target, |c| {
            Box::pin(async move { commands::events(&c, json).await })
        }),
        Command::Endpoints { target, name } => client_call(&target, |c| {
            Box::pin(async move { commands::endpoints(&c, name.as_deref()).await })
        }),
        Command::Scale {
            target,
            service,
            replicas,
        } => client_call(&target, |c| {
            Box::pin(async move { commands::scale(&c, &service, replicas).await })
        }),
        Command::Reload { target } => client_call(&target, |c| {
            Box::pin(async move { commands::reload(&c).await })
        }),
    }
}

/// `-t/--timeout`: checked here, passed on as milliseconds.
fn grace(timeout: Option<String>) -> Result<Option<std::time::Duration>, CliError> {
    timeout
        .map(|t| {
            config::parse_duration(&t)
                .map_err(|e| CliError::Usage(format!("invalid --timeout {t:?}: {e}")))
        })
        .transpose()
}

/// How long what a killed run left gets between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// `corral down`: asks the daemon to stop; without one, stops what a killed
/// daemon of this config left behind, if anything.
fn down(target: &Target) -> Result<ExitCode, CliError> {
    let asked = client_call(target, |c| {
        Box::pin(async move { commands::down(&c).await })
    });
    // Nothing running is what `down` asks for: say so, and succeed.
    match asked {
        Err(CliError::NoDaemon { dir, socket }) => {
            let swept = target.socket.is_none().then(|| sweep_leftovers(target));
            match swept.flatten() {
                Some(message) => println!("corral is not running; {message}"),
                None => println!(
                    "corral is not running for {} (socket {}): nothing to stop",
                    dir.display(),
                    socket.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

/// Sweeps the record of a run that did not end by itself, under the lock.
fn sweep_leftovers(target: &Target) -> Option<String> {
    let record = target.find_state().join("corral.run");
    if !record.exists() {
        return None;
    }
    let _lock = control::lock(&record.with_extension("lock")).ok()?;
    let swept = tracking::sweep_previous(&record, LEFTOVER_GRACE)?;
    Some(describe_sweep(&swept).unwrap_or_else(|| {
        "an earlier run did not end by itself, but none of its processes is left".into()
    }))
}

fn describe_sweep(swept: &Swept) -> Option<String> {
    let killed = match swept.killed {
        0 => String::new(),
        n => format!(
            ", {n} of them with SIGKILL after {}s",
            LEFTOVER_GRACE.as_secs()
        ),
    };
    (swept.found > 0).then(|| {
        format!(
            "stopped {} process(es) left by an earlier run of this config that did not end by itself{killed}",
            swept.found
        )
    })
}

type ClientFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CliError>>>>;

/// Runs one client command on a small event loop.
fn client_call(
    target: &Target,
    command: impl FnOnce(Client) -> ClientFuture,
) -> Result<ExitCode, CliError> {
    let client = client_for(target);
    let rt = event_loop()?;
    rt.block_on(async {
        serves_this_config(&client, target).await?;
        command(client).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses a daemon that serves another config than the one this command
/// is for (a shared `--socket`). Without a config file here (`docker exec
/// CONTAINER corral ps`), any daemon reached is the one meant.
async fn serves_this_config(client: &Client, target: &Target) -> Result<(), CliError> {
    let Ok(ours) = std::fs::canonicalize(target.file()) else {
        return Ok(());
    };
    let version: corral_proto::Version = client.json(hyper::Method::GET, "/version", None).await?;
    match version.config {
        Some(theirs) if Path::new(&theirs) != ours => Err(CliError::Failed(format!(
            "the daemon at {} serves {theirs}, not {}",
            client.socket.display(),
            ours.display()
        ))),
        _ => Ok(()),
    }
}

fn event_loop() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            context: "cannot start the event loop",
            source,
        })
}

/// Where a command finds the daemon for `target`: --socket, else the
/// socket in its state directory; where no config file is found (`docker
/// exec CONTAINER corral ps`), the PID-1 daemon's link /run/corral.sock.
fn socket_path(target: &Target) -> PathBuf {
    if let Some(s) = &target.socket {
        return s.clone();
    }
    let pid1 = PathBuf::from(PID1_SOCKET);
    if !target.file().exists() && pid1.exists() {
        return pid1;
    }
    short_enough(target.find_state().join("corral.sock"))
}

/// A link to the socket of the daemon that is PID 1, for commands run in
/// its container without a config file.
const PID1_SOCKET: &str = "/run/corral.sock";

/// A Unix socket path holds at most 107 bytes. A longer one (a deep
/// project directory) is replaced by a short path named after it, under
/// $XDG_RUNTIME_DIR (else /tmp/corral-UID): the daemon and every command
/// compute the same one, and the daemon says where it is.
fn short_enough(path: PathBuf) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() <= 107 {
        return path;
    }
    // FNV-1a: the same on every build (std's hasher is not promised to be).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/corral-{}", nix::unistd::getuid())));
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
    }
    dir.join(format!("corral-{hash:016x}.sock"))
}

fn client_for(target: &Target) -> Client {
    let socket = socket_path(target);
    if target.socket.is_none() && !target.file().exists() && socket.exists() {
        eprintln!(
            "corral: no {} here; using the daemon at {}",
            target.file().display(),
            socket.display()
        );
    }
    Client::new(socket, &config::dir_of(&target.file()))
}

/// Loads and validates a config, printing warnings; errors come back all at once.
fn load(file: &Path) -> Result<Config, CliError> {
    let procfile = config::is_procfile(file).then(config::ProcfileOptions::default);
    load_with(&[file.to_path_buf()], procfile.as_ref())
}

/// As `load`, for several files merged in order, or a Procfile read with
/// these options.
fn load_with(
    files: &[PathBuf],
    procfile: Option<&config::ProcfileOptions>,
) -> Result<Config, CliError> {
    let Some(file) = files.first() else {
        return Err(CliError::Usage("no config file".into()));
    };
    let host = config::host_env(file).map_err(failure)?;
    let scale = std::collections::BTreeMap::new();
    match config::load_files(files, &host, &scale, procfile) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded.config)
        }
        Err(e) => Err(failure(e)),
    }
}

/// The corral.toml a Procfile stands for (its warnings were printed by
/// the load before).
fn procfile_text(file: &Path, options: &config::ProcfileOptions) -> Result<String, CliError> {
    let host = config::host_env(file).map_err(failure)?;
    Ok(config::procfile_toml(file, options, &host)
        .map_err(failure)?
        .toml)
}

/// A failed load: its warnings printed, its errors as the command's error.
fn failure(LoadFailure { errors, warnings }: LoadFailure) -> CliError {
    for w in &warnings {
        eprintln!("{w}");
    }
    CliError::Config(errors)
}

fn up(
    target: &Target,
    procfile: &ProcfileArgs,
    run: &RunArgs,
    profiles: &[String],
    only: &[String],
    console_log: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    let file = target.file();
    let mut config = load_with(&target.files(), procfile.options(&file)?.as_ref())?;
    let console_file = match console_log {
        Some(path) => Some(
            crate::logs::ConsoleFile::start(crate::logs::FileSpec {
                path,
                max_size: config.global.console_log.max_size,
                keep: config.global.console_log.keep,
            })
            .map_err(|source| CliError::Io {
                context: "cannot keep the console log",
                source,
            })?,
        ),
        None => None,
    };
    if !only.is_empty() {
        config = config.select(only).map_err(|unknown| {
            CliError::Usage(format!(
                "unknown service {unknown:?} in {}",
                target.file().display()
            ))
        })?;
    } else {
        // Services named on the command line run whatever their profiles.
        config = config.with_profiles(profiles).map_err(CliError::Usage)?;
    }
    let abort_on_exit = run.rule(&config)?;
    let break_glass = config
        .global
        .break_glass
        .clone()
        .filter(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    let sinks = runtime::log_sinks(&config.services);
    let console = runtime::console_options(&config);
    let rt = event_loop()?;
    let state_dir = target.create_state(config.global.state_dir.as_deref())?;
    let socket_at = target.socket_in(&state_dir);
    // One daemon per config: the lock is held until this function returns.
    let _lock = control::lock(&state_dir.join("corral.lock"))?;
    // Under the lock, a run record is an earlier daemon's that was killed.
    let record = state_dir.join("corral.run");
    let swept = tracking::sweep_previous(&record, LEFTOVER_GRACE);
    let tracking = tracking::Run::begin(record, config.global.cgroup);
    // The socket is bound inside the event loop (tokio's listener needs it).
    let socket = {
        let _guard = rt.enter();
        // Metrics first: a busy port must not leave a socket file behind.
        let metrics = config
            .global
            .metrics
            .map(control::bind_metrics)
            .transpose()?;
        let mut socket = control::bind(&socket_at, config.global.socket_group.as_deref())?;
        socket.metrics = metrics;
        socket
    };
    let hub = LogHub::start(sinks, console).map_err(|source| CliError::Io {
        context: "cannot start the log hub",
        source,
    })?;
    if let Some(message) = swept.as_ref().and_then(describe_sweep) {
        hub.event(None, message);
    }
    if let Some(warning) = config.stop_grace_warning() {
        hub.event(None, warning);
    }
    if config.global.cgroup && !tracking.has_cgroup() {
        hub.event(
            None,
            "no writable cgroup v2 tree here (not mounted, read-only, or not delegated to \
             this user): services share corral's cgroup, and what one leaves behind is \
             found by the run's marker, which a process that clears its environment escapes"
                .into(),
        );
    }
    let in_state = state_dir.join("corral.sock");
    if target.socket.is_none() && socket_at != in_state {
        hub.event(
            None,
            format!(
                "control socket at {}: {} is longer than a Unix socket path may be",
                socket_at.display(),
                in_state.display()
            ),
        );
    }
    if state_dir != config::dir_of(&target.file()).join(".corral") {
        hub.event(None, format!("state directory: {}", state_dir.display()));
    }
    let pid1_link = (std::process::id() == 1 && target.socket.is_none())
        .then(|| link_pid1_socket(&socket_at))
        .flatten();
    let result = rt.block_on(runtime::run(
        config,
        runtime::Options {
            break_glass,
            selection: only.to_vec(),
            profiles: profiles.to_vec(),
            tracking,
            abort_on_exit,
            state_dir,
        },
        &hub,
        Some(socket),
    ));
    if let Some(link) = pid1_link {
        let _ = std::fs::remove_file(link);
    }
    // Dropping the runtime ends the pipe readers, so the hub can drain and stop.
    drop(rt);
    hub.finish();
    if let Some(console_file) = console_file {
        console_file.finish();
    }
    let code = result?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// As PID 1, links /run/corral.sock to the daemon's socket (when /run is
/// writable and nothing else is there), so `docker exec CONTAINER corral
/// ps` finds it from any directory. Returns the link to remove at exit.
fn link_pid1_socket(socket: &Path) -> Option<PathBuf> {
    let link = PathBuf::from(PID1_SOCKET);
    if link
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        let _ = std::fs::remove_file(&link);
    }
    let target = std::path::absolute(socket).ok()?;
    std::os::unix::fs::symlink(target, &link).ok()?;
    Some(link)
}
