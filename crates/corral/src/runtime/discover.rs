//! The supervisor's side of discovery: publishing endpoints, gating starts
//! on requirements, and carrying out on-change actions (debounced, spread,
//! rolling across replicas).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_proto::Endpoint;
use tokio::sync::mpsc;

use super::{Child, Supervisor};
use crate::config::OnChange;
use crate::discovery::etcd::agent::{self, Command, Report};
use crate::discovery::{endpoint_env, render_templates, write_endpoints_file, Registry};
use crate::engine::Event;
use crate::process;

/// This corral's etcd agent, when discovery spans hosts: it publishes this
/// host's endpoints and reports every host's.
pub(super) struct Remote {
    commands: mpsc::UnboundedSender<Command>,
    reports: mpsc::UnboundedReceiver<Report>,
    task: tokio::task::JoinHandle<()>,
    /// Since when (seconds since the epoch) etcd cannot be reached, and why.
    degraded: Option<(f64, String)>,
}

impl Remote {
    pub(super) fn start(
        etcd: &crate::config::Etcd,
        host_id: &str,
        services: &[crate::config::Service],
    ) -> Remote {
        let settings = agent::Settings {
            names: required_names(services),
            endpoints: etcd.endpoints.clone(),
            prefix: etcd.prefix.clone(),
            ttl: etcd.ttl,
            host_id: host_id.to_string(),
            credentials: etcd.credentials.clone(),
            // Checked when the config was loaded; a file gone since then
            // shows as etcd being unreachable.
            tls: etcd.tls.as_ref().and_then(|t| match t.load() {
                Ok(tls) => Some(tls),
                Err(e) => {
                    eprintln!("corral: etcd tls: {e}");
                    None
                }
            }),
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let (tx, reports) = mpsc::unbounded_channel();
        Remote {
            commands,
            reports,
            task: tokio::spawn(agent::run(settings, rx, tx)),
            degraded: None,
        }
    }

    /// Reads the TLS files again (renewed certificates) for the next
    /// connections; if they cannot be used, the ones in use stay.
    pub(super) fn renew_tls(&self, etcd: &crate::config::Etcd) -> Result<(), String> {
        if let Some(files) = &etcd.tls {
            let tls = files.load()?;
            let _ = self.commands.send(Command::Tls(tls));
        }
        Ok(())
    }

    /// Lists and watches the names `services` require now.
    pub(super) fn require(&self, services: &[crate::config::Service]) {
        let _ = self.commands.send(Command::Names(required_names(services)));
    }

    /// The agent's next report; never, without an agent.
    pub(super) async fn next(remote: &mut Option<Remote>) -> Option<Report> {
        match remote {
            Some(r) => r.reports.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Revokes the lease, so this host's endpoints vanish at once, waiting
    /// at most `limit` for etcd.
    pub(super) async fn stop(self, limit: Duration) {
        let _ = self.commands.send(Command::Stop);
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}

/// Every name some service requires: the names to watch.
fn required_names(services: &[crate::config::Service]) -> BTreeSet<String> {
    services
        .iter()
        .flat_map(|s| s.links().requires.iter().map(|r| r.name.clone()))
        .collect()
}

/// Endpoint sets of a dependent, by required name.
pub type EndpointSets = BTreeMap<String, Vec<Endpoint>>;

impl Supervisor<'_> {
    /// The endpoints matching each of the service's requirements, now.
    pub(super) fn endpoint_sets(&self, svc: usize) -> EndpointSets {
        let mut sets = EndpointSets::new();
        for req in &self.config.services[svc].links().requires {
            let list = self
                .registry
                .lookup(&req.name)
                .into_iter()
                .filter(|e| req.matches(e))
                .collect();
            sets.insert(req.name.clone(), list);
        }
        sets
    }

    /// The environment a spawn of `svc` gets from discovery, and the JSON file
    /// of its endpoints (written now).
    pub(super) fn discovery_env(&mut self, svc: usize) -> Vec<(String, String)> {
        if self.config.services[svc].links().requires.is_empty() {
            return Vec::new();
        }
        let sets = self.endpoint_sets(svc);
        let mut env = endpoint_env(&sets);
        let file = self
            .runtime_dir
            .join("endpoints")
            .join(format!("{}.json", self.config.services[svc].name));
        match write_endpoints_file(&file, &sets) {
            Ok(()) => env.push(("CORRAL_ENDPOINTS_FILE".into(), file.display().to_string())),
            Err(e) => self
                .hub
                .event(Some(svc), format!("cannot write {}: {e}", file.display())),
        }
        self.render(svc, &sets);
        self.applied.insert(svc, sets);
        env
    }

    /// Renders the service's templates from these endpoints; a failure is reported.
    fn render(&self, svc: usize, sets: &EndpointSets) {
        let service = &self.config.services[svc];
        let rendered = render_templates(
            &service.links().templates,
            sets,
            &service.group,
            service.replica,
            &service.environment(),
        );
        if let Err(e) = rendered {
            self.hub.event(Some(svc), e);
        }
    }

    /// Publishes the endpoints of a service that became ready.
    pub(super) fn register(&mut self, svc: usize) {
        let service = &self.config.services[svc];
        let instance = format!("{}:{}", self.host_id, service.name);
        let mut changed = Vec::new();
        for p in &service.links().provides {
            let endpoint = Endpoint {
                name: p.name.clone(),
                host: p
                    .host
                    .clone()
                    .unwrap_or_else(|| self.config.global.discovery.advertise.clone()),
                port: p.port,
                tags: p.tags.clone(),
                attrs: p.attrs.clone(),
                instance: instance.clone(),
                host_id: self.host_id.clone(),
            };
            self.hub.event(
                Some(svc),
                format!("registered {} at {}", endpoint.name, endpoint.addr()),
            );
            if let Some(remote) = &self.remote {
                let _ = remote.commands.send(Command::Register(endpoint.clone()));
            }
            changed.extend(self.registry.register(endpoint));
        }
        self.endpoints_changed(&changed);
    }

    /// Takes back the endpoints of a service that stops or died.
    pub(super) fn withdraw(&mut self, svc: usize) {
        let instance = format!("{}:{}", self.host_id, self.config.services[svc].name);
        if let Some(remote) = &self.remote {
            let _ = remote.commands.send(Command::Withdraw(instance.clone()));
        }
        let changed = self.registry.withdraw(&instance);
        if !changed.is_empty() {
            self.hub
                .event(Some(svc), format!("withdrew {}", changed.join(", ")));
        }
        self.endpoints_changed(&changed);
    }

    /// What the etcd agent saw: other hosts' endpoints join the view (this
    /// host's own are known here first), and an outage is announced. While
    /// etcd is away the view stays as it was: nothing is withdrawn from
    /// dependents because corral lost sight of it.
    pub(super) fn on_discovery(&mut self, report: Report) {
        let own = format!("{}:", self.host_id);
        let changed: Vec<String> = match report {
            Report::Reset(all) => self.registry.replace_others(&self.host_id, all),
            Report::Changed { upserts, removed } => {
                let mut names = BTreeSet::new();
                for e in upserts.into_iter().filter(|e| e.host_id != self.host_id) {
                    names.extend(self.registry.register(e));
                }
                for (name, instance) in removed {
                    if !instance.starts_with(&own) && self.registry.remove(&name, &instance) {
                        names.insert(name);
                    }
                }
                names.into_iter().collect()
            }
            Report::Degraded(reason) => {
                let Some(remote) = &mut self.remote else {
                    return;
                };
                if remote.degraded.is_none() {
                    remote.degraded = Some((crate::unix_now(), reason.clone()));
                    self.announce(format!(
                        "discovery degraded: etcd cannot be reached ({reason}); \
                         keeping the last known endpoints"
                    ));
                }
                return;
            }
            Report::Healthy => {
                let Some(remote) = &mut self.remote else {
                    return;
                };
                if remote.degraded.take().is_some() {
                    self.announce("discovery healthy: etcd answers again".into());
                }
                return;
            }
        };
        self.endpoints_changed(&changed);
    }

    /// A message about corral itself, on the console and the event stream.
    fn announce(&mut self, message: String) {
        self.publish(&corral_proto::Event {
            time: crate::unix_now(),
            service: None,
            state: None,
            message: message.clone(),
            kind: None,
            missed: None,
        });
        self.hub.event(None, message);
    }

    /// How discovery across hosts is doing, for `GET /v1/services`.
    pub(super) fn discovery_status(&self) -> Option<corral_proto::DiscoveryStatus> {
        let remote = self.remote.as_ref()?;
        Some(corral_proto::DiscoveryStatus {
            backend: "etcd".into(),
            degraded_since: remote.degraded.as_ref().map(|d| d.0),
            reason: remote.degraded.as_ref().map(|d| d.1.clone()),
        })
    }

    /// Which required names of `svc` have no matching endpoint.
    pub(super) fn missing(&self, svc: usize) -> Vec<String> {
        self.endpoint_sets(svc)
            .into_iter()
            .filter(|(_, list)| list.is_empty())
            .map(|(name, _)| name)
            .collect()
    }

    /// Tells the engine about requirements, for every service that has some.
    pub(super) fn refresh_requirements(&mut self) {
        for svc in 0..self.config.services.len() {
            if self.config.services[svc].links().requires.is_empty()
                || self.engine.units()[svc].is_removed()
            {
                continue;
            }
            let missing = self.missing(svc);
            if missing != self.engine.units()[svc].missing {
                self.queue
                    .push_back(Event::RequirementsChanged { svc, missing });
            }
        }
    }

    /// Some names' endpoints changed: gate waiting dependents, and schedule
    /// the change action of running ones.
    pub(super) fn endpoints_changed(&mut self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        self.publish(&corral_proto::Event {
            time: crate::unix_now(),
            service: None,
            state: None,
            message: format!("endpoints changed: {}", names.join(", ")),
            kind: None,
            missed: None,
        });
        self.refresh_requirements();
        let svcs = (0..self.config.services.len())
            .filter(|&svc| {
                let requires = &self.config.services[svc].links().requires;
                requires.iter().any(|r| names.contains(&r.name))
            })
            .collect();
        self.queue.push_back(Event::EndpointsChanged { svcs });
    }

    /// Carries out a dependent's on-change action, if its endpoints really changed.
    pub(super) fn apply_change(&mut self, svc: usize) {
        let sets = self.endpoint_sets(svc);
        if self.applied.get(&svc) == Some(&sets) {
            return;
        }
        self.render(svc, &sets);
        let service = &self.config.services[svc];
        let summary: Vec<String> = sets
            .iter()
            .map(|(name, list)| format!("{name}: {}", list.len()))
            .collect();
        self.hub.event(
            Some(svc),
            format!(
                "endpoints changed ({}): {}",
                summary.join(", "),
                describe(&service.links().on_change)
            ),
        );
        let on_change = service.links().on_change.clone();
        self.applied.insert(svc, sets);
        let pid = self.engine.units()[svc].state.pid();
        match on_change {
            OnChange::None => {}
            OnChange::Restart => self.queue.push_back(Event::ChangeRestart { svc }),
            OnChange::Signal(sig) => {
                if let Some(pid) = pid {
                    let _ = process::signal_group(pid, sig);
                }
            }
            OnChange::Command(argv) => self.run_change_command(svc, &argv),
        }
    }

    fn run_change_command(&mut self, svc: usize, argv: &[String]) {
        let discovery = self.discovery_env(svc);
        match process::spawn(self.launch(svc, argv, discovery)) {
            Ok(spawned) => {
                self.children.insert(spawned.pid, Child::Action { svc });
                self.pump_output(svc, spawned, None);
            }
            Err(e) => {
                self.hub.event(
                    Some(svc),
                    format!("on-change command did not start: {e}; restarting"),
                );
                self.queue.push_back(Event::ChangeRestart { svc });
            }
        }
    }
}

fn describe(on_change: &OnChange) -> String {
    match on_change {
        OnChange::Restart => "restarting".into(),
        OnChange::Signal(sig) => format!("sending {}", sig.as_str()),
        OnChange::Command(argv) => format!("running {}", argv.join(" ")),
        OnChange::None => "no action".into(),
    }
}
