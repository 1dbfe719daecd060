//! The supervisor's side of the control API: one handler per operation.

use std::time::Instant;

use corral_proto::{Action, ErrorBody, ReloadResult, ServiceStatus};
use nix::sys::signal::Signal;

use super::reload::realign;
use super::Supervisor;
use crate::config;
use crate::control::{ApiError, Request};
use crate::discovery::Registry;
use crate::engine::{Event, State, Want};
use crate::process;

impl Supervisor<'_> {
    /// Answers one API request on its own reply channel.
    pub(super) async fn on_request(&mut self, request: Request) {
        match request {
            Request::List { resources, reply } => {
                let live = (0..self.config.services.len())
                    .filter(|&i| !self.engine.units()[i].is_removed())
                    .map(|i| self.status_with(i, resources))
                    .collect();
                let _ = reply.send(Ok(corral_proto::ServiceList {
                    services: live,
                    discovery: self.discovery_status(),
                    scaled_to_zero: self.scaled_to_zero().map(str::to_string).collect(),
                }));
            }
            Request::Get {
                name,
                resources,
                reply,
            } => {
                let _ = reply.send(self.find(&name).map(|i| self.status_with(i, resources)));
            }
            Request::Exec { name, reply } => {
                let _ = reply.send(self.find(&name).map(|i| self.exec_spec(i)));
            }
            Request::Act {
                name,
                action,
                stop_timeout,
                reply,
            } => {
                let _ = reply.send(self.act(&name, action, stop_timeout));
            }
            Request::Signal {
                name,
                signal,
                reply,
            } => {
                let _ = reply.send(self.signal(&name, signal));
            }
            Request::Reload { reply } => self.start_reload(Some(reply)),
            Request::Scale {
                service,
                replicas,
                reply,
            } => {
                let _ = reply.send(self.scale(&service, replicas).await);
            }
            Request::Subscribe { reply } => {
                let (subscriber, feed) = crate::control::api::subscription();
                self.subscribers.push(subscriber);
                let _ = reply.send(Ok(feed));
            }
            Request::Expand { name, reply } => {
                let names = self.find_all(&name).map(|all| {
                    all.into_iter()
                        .map(|i| self.config.services[i].name.clone())
                        .collect()
                });
                let _ = reply.send(names);
            }
            Request::Endpoints { name, reply } => {
                let endpoints = match name {
                    Some(name) => self.registry.lookup(&name),
                    None => self.registry.all(),
                };
                let _ = reply.send(Ok(endpoints));
            }
            Request::Shutdown { reply } => {
                self.queue.push_back(Event::Shutdown {
                    code: 0,
                    reason: "requested through the control API",
                    within: None,
                });
                let _ = reply.send(Ok(()));
            }
            Request::Resolve { names, reply } => {
                let _ = reply.send(self.resolve(&names));
            }
        }
    }

    /// Log queries: names to service indices; None for all.
    fn resolve(&self, names: &[String]) -> Result<Option<Vec<usize>>, ApiError> {
        if names.is_empty() {
            return Ok(None);
        }
        let mut found = Vec::new();
        for name in names {
            found.extend(self.find_all(name)?);
        }
        Ok(Some(found))
    }

    /// Index of a live service by name, or 404 listing the known names.
    fn find(&self, name: &str) -> Result<usize, ApiError> {
        self.config
            .services
            .iter()
            .enumerate()
            .position(|(i, s)| s.name == name && !self.engine.units()[i].is_removed())
            .ok_or_else(|| ApiError {
                status: 404,
                body: ErrorBody {
                    error: format!("no service named {name:?}"),
                    known: self.live_names(),
                    details: Vec::new(),
                },
            })
    }

    /// A live instance by name, or every instance of a service (`api` for api.0..).
    fn find_all(&self, name: &str) -> Result<Vec<usize>, ApiError> {
        let all: Vec<usize> = (0..self.config.services.len())
            .filter(|&i| !self.engine.units()[i].is_removed())
            .filter(|&i| {
                let s = &self.config.services[i];
                s.name == name || s.group == name
            })
            .collect();
        if all.is_empty() {
            // `corral scale NAME 0`: still a service, with no instance now.
            if self.scaled_to_zero().any(|g| g == name) {
                return Ok(Vec::new());
            }
            return self.find(name).map(|i| vec![i]);
        }
        Ok(all)
    }

    /// The services `corral scale` took to 0 instances.
    fn scaled_to_zero(&self) -> impl Iterator<Item = &str> {
        self.scale
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(group, _)| group.as_str())
    }

    /// `corral scale`: the service runs `replicas` instances from now on; the
    /// choice outlives reloads (the file's `replicas` no longer applies).
    async fn scale(&mut self, group: &str, replicas: u32) -> Result<ReloadResult, ApiError> {
        if replicas > corral_proto::MAX_REPLICAS {
            return Err(ApiError::new(
                400,
                format!(
                    "replicas must be at most {}, found {replicas}; nothing was changed",
                    corral_proto::MAX_REPLICAS
                ),
            ));
        }
        let scalable = self
            .config
            .services
            .iter()
            .any(|s| s.group == group && s.replica.is_some());
        if !scalable && !self.scale.contains_key(group) {
            let known = self.config.services.iter().any(|s| s.group == group);
            return Err(if known {
                ApiError::new(
                    409,
                    format!("{group} has no `replicas` in the config; add `replicas = 1` to make it scalable"),
                )
            } else {
                self.find(group)
                    .err()
                    .unwrap_or_else(|| ApiError::new(404, "unknown service"))
            });
        }
        self.scale.insert(group.to_string(), replicas);
        self.hub
            .event(None, format!("scaling {group} to {replicas}"));
        self.reload().await
    }

    fn live_names(&self) -> Vec<String> {
        self.config
            .services
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.engine.units()[*i].is_removed())
            .map(|(_, s)| s.name.clone())
            .collect()
    }

    /// Feeds an operator's request to the engine now, and answers with the new state.
    fn act(
        &mut self,
        name: &str,
        action: Action,
        stop_timeout: Option<std::time::Duration>,
    ) -> Result<ServiceStatus, ApiError> {
        let svc = self.find(name)?;
        if self.engine.is_shutting_down() {
            return Err(ApiError::new(409, "corral is shutting down"));
        }
        if let Some(timeout) = stop_timeout.filter(|_| action != Action::Start) {
            self.queue.push_back(Event::StopWithin { svc, timeout });
        }
        self.queue.push_back(match action {
            Action::Start => Event::StartRequested { svc },
            Action::Stop => Event::StopRequested { svc },
            Action::Restart => Event::RestartRequested { svc },
        });
        self.drain_queue();
        Ok(self.status(svc))
    }

    fn signal(&mut self, name: &str, signal: Signal) -> Result<ServiceStatus, ApiError> {
        let svc = self.find(name)?;
        let Some(pid) = self.engine.units()[svc].state.pid() else {
            return Err(ApiError::new(409, format!("{name} has no running process")));
        };
        process::signal_group(pid, signal)
            .map_err(|e| ApiError::new(500, format!("cannot send {}: {e}", signal.as_str())))?;
        self.hub
            .event(Some(svc), format!("sent {} (requested)", signal.as_str()));
        Ok(self.status(svc))
    }

    /// Re-reads the config file; on any error changes nothing.
    pub(super) async fn reload(&mut self) -> Result<ReloadResult, ApiError> {
        let loaded = self.read_config()();
        self.apply_config(loaded).await
    }

    /// Reads the config again on a thread of its own (a 16 MiB file takes
    /// a while to parse; the loop goes on supervising and answering
    /// meanwhile), then applies it (`reloaded`). One asked for while a
    /// read is on reads again after it.
    pub(super) fn start_reload(&mut self, reply: super::ReloadReply) {
        if let Some(reloading) = &mut self.reloading {
            reloading.next.push(reply);
            return;
        }
        let read = self.read_config();
        self.reloading = Some(super::Reloading {
            read: tokio::task::spawn_blocking(read),
            replies: vec![reply],
            next: Vec::new(),
        });
    }

    /// The config was read: applied, and the answer to each who asked.
    pub(super) async fn reloaded(&mut self, read: Result<config::Loaded, ApiError>) {
        let Some(reloading) = self.reloading.take() else {
            return;
        };
        let answer = if self.engine.is_shutting_down() {
            Err(ApiError::new(409, "corral is shutting down"))
        } else {
            self.apply_config(read).await
        };
        for reply in reloading.replies {
            match reply {
                Some(reply) => {
                    let _ = reply.send(match &answer {
                        Ok(result) => Ok(result.clone()),
                        Err(e) => Err(ApiError {
                            status: e.status,
                            body: e.body.clone(),
                        }),
                    });
                }
                None => {
                    if let Err(e) = &answer {
                        self.hub
                            .event(None, format!("reload failed: {}", e.body.error));
                        for detail in &e.body.details {
                            self.hub.event(None, detail.clone());
                        }
                    }
                }
            }
        }
        let mut next = reloading.next.into_iter();
        if let Some(first) = next.next() {
            self.start_reload(first);
            if let Some(reloading) = &mut self.reloading {
                reloading.replies.extend(next);
            }
        }
    }

    /// What reading the config again takes, ready to run on any thread: a
    /// big file is parsed without holding up the loop (`start_reload`).
    pub(super) fn read_config(
        &self,
    ) -> impl FnOnce() -> Result<config::Loaded, ApiError> + Send + 'static {
        let path = self.config.path.clone();
        let files = self.config.files.clone();
        let scale = self.scale.clone();
        let procfile = self.config.procfile.clone();
        move || {
            let host = config::host_env(&path).map_err(|failure| ApiError {
                status: 422,
                body: ErrorBody {
                    error: format!("{}; nothing was changed", failure.errors),
                    known: Vec::new(),
                    details: Vec::new(),
                },
            })?;
            config::load_files(&files, &host, &scale, procfile.as_ref()).map_err(|failure| {
                ApiError {
                    status: 422,
                    body: ErrorBody {
                        error: format!(
                            "{} has {} error(s); nothing was changed",
                            path.display(),
                            failure.errors.0.len()
                        ),
                        known: Vec::new(),
                        details: failure.errors.0.iter().map(ToString::to_string).collect(),
                    },
                }
            })
        }
    }

    /// Applies a config read again: restarts what changed, starts what is
    /// new, stops what is gone.
    pub(super) async fn apply_config(
        &mut self,
        loaded: Result<config::Loaded, ApiError>,
    ) -> Result<ReloadResult, ApiError> {
        let loaded = loaded?;
        let loaded = self.keep_selection(loaded.config)?;
        let retired: Vec<bool> = self.engine.units().iter().map(|u| u.is_removed()).collect();
        // No copy of the new config is kept beside the one realigned: each
        // copy of every service stayed in the heap as holes after a reload.
        let realigned = realign(&self.config.services, &retired, loaded);
        self.config = realigned.config;
        self.hub
            .configure(super::log_sinks(&self.config.services))
            .await;
        let result = realigned.result;
        self.hub.event(
            None,
            format!(
                "reloaded: {} added, {} changed, {} removed, {} unchanged",
                result.added.len(),
                result.changed.len(),
                result.removed.len(),
                result.unchanged.len()
            ),
        );
        let mut plan = realigned.plan;
        // What each dependent still lacks, before any is started: a
        // dependent the reload adds waits for its names like any other.
        plan.missing = (0..self.config.services.len())
            .filter(|&svc| !self.config.services[svc].links().requires.is_empty())
            .map(|svc| (svc, self.missing(svc)))
            .collect();
        self.queue.push_back(Event::Reload(Box::new(plan)));
        self.drain_queue();
        self.release_sockets();
        if self.engine.is_booted() {
            let units = self.engine.units();
            self.schedule
                .sync(&self.config.services, |svc| units[svc].is_removed());
        }
        self.refresh_requirements();
        self.drain_queue();
        // The backend stays the one corral started with; its certificates
        // are read again, so renewed files are used without a restart.
        if let Some(remote) = &self.remote {
            remote.require(&self.config.services);
        }
        if let (Some(remote), Some(etcd)) = (&self.remote, &self.config.global.discovery.etcd) {
            if let Err(e) = remote.renew_tls(etcd) {
                self.hub
                    .event(None, format!("etcd tls: {e}; the certificates in use stay"));
            }
        }
        Ok(result)
    }

    /// Narrows a reloaded config to the services `up` was given (and what
    /// they depend on). Selected names gone from the file are dropped with a
    /// message; if none is left, the reload is refused.
    fn keep_selection(&self, config: config::Config) -> Result<config::Config, ApiError> {
        if self.selection.is_empty() {
            return config
                .with_profiles(&self.profiles)
                .map_err(|e| ApiError::new(422, format!("{e}; nothing was changed")));
        }
        let (known, gone): (Vec<String>, Vec<String>) =
            self.selection.iter().cloned().partition(|name| {
                config
                    .services
                    .iter()
                    .any(|s| &s.name == name || &s.group == name)
            });
        if !gone.is_empty() {
            self.hub.event(
                None,
                format!(
                    "reload: {} no longer in {}; the selection keeps {}",
                    gone.join(", "),
                    config.path.display(),
                    known.join(", ")
                ),
            );
        }
        if known.is_empty() {
            return Err(ApiError::new(
                422,
                format!(
                    "none of the services corral was started with ({}) is in {} any more; nothing was changed",
                    self.selection.join(", "),
                    config.path.display()
                ),
            ));
        }
        config
            .select(&known)
            .map_err(|name| ApiError::new(422, format!("unknown service {name:?}")))
    }

    /// How the service's process is run now: its command, and the
    /// environment a new process of it would get (discovery included).
    fn exec_spec(&self, svc: usize) -> corral_proto::ExecSpec {
        let service = &self.config.services[svc];
        let mut env = service.environment();
        // What discovery tells it now (without writing or rendering anything).
        if !service.links().requires.is_empty() {
            env.extend(crate::discovery::endpoint_env(&self.endpoint_sets(svc)));
        }
        corral_proto::ExecSpec {
            command: service.command.clone(),
            env,
            working_dir: service
                .working_dir
                .as_ref()
                .map(|d| d.display().to_string()),
            user: service.user.as_ref().map(|u| corral_proto::ExecUser {
                name: u.name.clone(),
                uid: u.uid,
                gid: u.gid,
                groups: u.groups.clone(),
            }),
            depends_on: service
                .depends_on
                .iter()
                .filter(|d| d.explicit)
                .map(|d| self.config.services[d.service].name.clone())
                .collect(),
        }
    }

    /// What `corral ps` shows for one service.
    /// The status, with the CPU time of the ended processes when `resources`
    /// (the API handler adds what /proc says of the live ones).
    fn status_with(&self, svc: usize, resources: bool) -> ServiceStatus {
        let mut status = self.status(svc);
        if resources {
            let ended = self.cpu_ended.get(svc).copied().unwrap_or_default();
            status.resources = Some(corral_proto::Resources {
                cpu_seconds: ended.as_secs_f64(),
                ..Default::default()
            });
        }
        status
    }

    pub(super) fn status(&self, svc: usize) -> ServiceStatus {
        let unit = &self.engine.units()[svc];
        let service = &self.config.services[svc];
        let uptime_secs = match unit.state {
            State::Running { since, .. } | State::Starting { since, .. } => Some(
                Instant::now()
                    .saturating_duration_since(since)
                    .as_secs_f64(),
            ),
            _ => None,
        };
        ServiceStatus {
            name: service.name.clone(),
            group: service.group.clone(),
            replica: service.replica,
            state: unit.state.public(),
            pid: unit.state.pid(),
            uptime_secs,
            restarts: unit.restarts,
            last_exit: unit.last_exit.map(|e| {
                if unit.last_exit_asked {
                    format!("stopped by corral ({e})")
                } else {
                    e.to_string()
                }
            }),
            last_exit_code: unit.last_exit.map(|e| e.code()),
            error: unit.error.clone(),
            ready: matches!(unit.state, State::Running { .. }),
            health: service.health.as_ref().map(|_| corral_proto::Health {
                healthy: unit.health.healthy,
                failures: unit.health.failures,
                last_failure: unit.health.last_failure.clone(),
            }),
            oneshot: service.oneshot,
            restart: Some(service.restart.as_str().to_string()).filter(|_| service.job.is_none()),
            job: service.job.as_ref().map(|job| {
                let ticking = unit.want == Want::Up && !self.engine.is_shutting_down();
                corral_proto::JobStatus {
                    schedule: job.schedule.clone(),
                    timezone: job.timezone_name.clone(),
                    overlap: job.overlap.as_str().into(),
                    last_run: unit.last_run.as_deref().map(|run| corral_proto::JobRun {
                        started: crate::unix_now()
                            - Instant::now()
                                .saturating_duration_since(run.started)
                                .as_secs_f64(),
                        duration_secs: run.took.as_secs_f64(),
                        result: run.exit.to_string(),
                        exit_code: run.exit.code(),
                    }),
                    next_run: self.schedule.next(svc).filter(|_| ticking),
                    queued: unit.due,
                }
            }),
            resources: None,
            status: self.said.get(&svc).and_then(|s| s.status.clone()),
            notify_ignored: self.said.get(&svc).map_or(0, |s| s.ignored),
            sockets: if service.sockets().is_empty() {
                Vec::new()
            } else {
                self.listeners.addresses(&service.group, service.sockets())
            },
        }
    }
}
