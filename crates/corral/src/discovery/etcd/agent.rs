//! The etcd agent: one task per corral that holds a lease, publishes this
//! host's endpoints under it, and reports the endpoints of the names this
//! corral requires, from a list and a watch per name (none when it requires
//! nothing, so a change reaches only the corrals that use it). It
//! reconnects, re-grants and re-registers by itself; while etcd cannot be
//! reached the view stays as it was (degraded).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_proto::Endpoint;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};

use super::gateway::{Change, Gateway, GatewayError, KeyValue, Origin, Watch, WatchMessage};

/// How the agent reaches etcd and names this host.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    /// Keys live under `<prefix>/svc/` (no leading slash).
    pub prefix: String,
    pub ttl: Duration,
    /// This corral's name in every endpoint it publishes.
    pub host_id: String,
    /// Username and password, when etcd has auth enabled.
    pub credentials: Option<(String, String)>,
    /// TLS to every endpoint.
    pub tls: Option<crate::tcp::Tls>,
    /// The names this corral requires: only their endpoints are listed and
    /// watched.
    pub names: BTreeSet<String>,
}

/// Up to this many required names get a watch each (a connection each:
/// the JSON gateway streams one watch per request); more are watched as
/// the whole prefix.
const MAX_WATCHES: usize = 8;

/// What the supervisor asks of the agent.
#[derive(Debug)]
pub enum Command {
    /// Publish (or replace) an endpoint of this host.
    Register(Endpoint),
    /// Take back every endpoint of an instance.
    Withdraw(String),
    /// Revoke the lease (its keys go with it) and end.
    Stop,
    /// TLS as the files say now (renewed certificates), from the next
    /// connection on.
    Tls(crate::tcp::Tls),
    /// The names required now (a reload changed them): listed and watched
    /// instead of the earlier ones.
    Names(BTreeSet<String>),
}

/// What the agent tells the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The whole view, after a (re)list.
    Reset(Vec<Endpoint>),
    /// Endpoints added or replaced, and (name, instance) pairs gone.
    Changed {
        upserts: Vec<Endpoint>,
        removed: Vec<(String, String)>,
    },
    /// etcd cannot be reached; the view is kept as it was.
    Degraded(String),
    /// etcd answers again.
    Healthy,
}

/// The JSON value of a key `<prefix>/svc/<name>/<instance>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub addr: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    pub instance: String,
    pub host_id: String,
}

impl Settings {
    fn svc_prefix(&self) -> String {
        format!("{}/svc/", self.prefix.trim_matches('/'))
    }

    /// The key ranges (as prefixes) to list and watch: one per required
    /// name, the whole prefix beyond MAX_WATCHES names, none for none.
    fn ranges(&self) -> Vec<String> {
        let all = self.svc_prefix();
        if self.names.len() > MAX_WATCHES {
            return vec![all];
        }
        self.names.iter().map(|n| format!("{all}{n}/")).collect()
    }

    fn key(&self, e: &Endpoint) -> String {
        format!("{}{}/{}", self.svc_prefix(), e.name, e.instance)
    }

    fn record(&self, e: &Endpoint) -> Vec<u8> {
        let record = Record {
            addr: e.addr(),
            host: e.host.clone(),
            port: e.port,
            tags: e.tags.clone(),
            attrs: e.attrs.clone(),
            instance: e.instance.clone(),
            host_id: self.host_id.clone(),
        };
        serde_json::to_vec(&record).unwrap_or_default()
    }

    /// What a batch of changes leaves, in order: a key deleted then put again
    /// in one batch (a resumed watch replays the deletion it stopped at) is
    /// an upsert, a key put then deleted is a removal; the supervisor then
    /// applies upserts and removals in any order.
    fn net_effect(&self, changes: Vec<Change>) -> (Vec<Endpoint>, Vec<(String, String)>) {
        let (mut upserts, mut removed): (Vec<Endpoint>, Vec<(String, String)>) =
            (Vec::new(), Vec::new());
        for change in changes {
            match change {
                Change::Put(kv) => {
                    if let Some((endpoint, _)) = self.endpoint(&kv) {
                        removed.retain(|(n, i)| (n, i) != (&endpoint.name, &endpoint.instance));
                        upserts.retain(|e| {
                            (&e.name, &e.instance) != (&endpoint.name, &endpoint.instance)
                        });
                        upserts.push(endpoint);
                    }
                }
                Change::Delete { key, .. } => {
                    if let Some((name, instance)) = self.named_by(&key) {
                        upserts.retain(|e| (&e.name, &e.instance) != (&name, &instance));
                        if !removed.contains(&(name.clone(), instance.clone())) {
                            removed.push((name, instance));
                        }
                    }
                }
            }
        }
        (upserts, removed)
    }

    /// (name, instance) of the endpoint a key holds; None for other keys.
    fn named_by(&self, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(&self.svc_prefix())?;
        let (name, instance) = rest.split_once('/')?;
        Some((name.to_string(), instance.to_string()))
    }

    /// The endpoint a key and its value describe; None for anything else.
    fn endpoint(&self, kv: &KeyValue) -> Option<(Endpoint, String)> {
        let rest = kv.key.strip_prefix(&self.svc_prefix())?;
        let (name, _) = rest.split_once('/')?;
        let r: Record = serde_json::from_slice(&kv.value).ok()?;
        let endpoint = Endpoint {
            name: name.to_string(),
            host: r.host,
            port: r.port,
            tags: r.tags,
            attrs: r.attrs,
            instance: r.instance,
            host_id: r.host_id.clone(),
        };
        Some((endpoint, r.host_id))
    }
}

/// The first retry waits this long, doubling up to MAX_RETRY (plus jitter).
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Runs until `Stop` (or until the supervisor goes away).
pub async fn run(
    settings: Settings,
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut agent = Agent {
        gateway: Gateway::new(settings.endpoints.clone(), settings.ttl / 3)
            .with_tls(settings.tls.clone()),
        settings,
        mine: BTreeMap::new(),
        withdrawn: BTreeSet::new(),
        lease: None,
        revisions: BTreeMap::new(),
        reports,
        degraded: false,
        cleaned: false,
    };
    let mut retry = FIRST_RETRY;
    loop {
        match agent.session(&mut commands).await {
            Ok(()) => return,
            Err(e) => {
                agent.degrade(e.to_string());
                // Commands keep arriving while etcd is away: keep what they ask.
                let pause = sleep(retry + jitter(retry));
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        command = commands.recv() => match command {
                            None | Some(Command::Stop) => return,
                            Some(c) => {
                                agent.remember(c);
                            }
                        },
                    }
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

struct Agent {
    settings: Settings,
    gateway: Gateway,
    /// This host's keys and values: what etcd must hold for this host,
    /// recorded before each put, so a put that fails is sent again.
    mine: BTreeMap<String, Vec<u8>>,
    /// Keys withdrawn whose delete etcd has not confirmed: deleted again at
    /// each session until it does (the lease that holds them may live on).
    withdrawn: BTreeSet<String>,
    lease: Option<i64>,
    /// By range watched: the revision it has been seen up to; never moves
    /// back. Empty until the ranges are listed.
    revisions: BTreeMap<String, i64>,
    reports: mpsc::UnboundedSender<Report>,
    degraded: bool,
    /// Keys of an earlier run of this host-id are deleted once, at start.
    cleaned: bool,
}

impl Agent {
    /// One connected stretch: (re)authenticate, lease, publish, list, watch.
    /// Ok means a clean stop; Err, that etcd went away.
    async fn session(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), GatewayError> {
        if let Some((user, password)) = &self.settings.credentials {
            self.gateway.authenticate(user, password).await?;
        }
        let lease = match self.lease {
            Some(id) if self.gateway.keep_alive(id).await? > 0 => id,
            _ => self.gateway.grant(self.settings.ttl).await?.id,
        };
        self.lease = Some(lease);
        if !self.cleaned {
            self.delete_stale(lease).await?;
            self.cleaned = true;
        }
        // This host's keys in etcd become what `mine` says: what a failed
        // put or delete left undone is done now.
        for (key, value) in &self.mine {
            self.gateway.put(key, value, lease).await?;
        }
        while let Some(key) = self.withdrawn.first().cloned() {
            self.gateway.delete(&key).await?;
            self.withdrawn.remove(&key);
        }
        // The first time, list everything; after a disconnect, resume the
        // watches where they were, so nothing is listed again, unless that
        // history was compacted away: then etcd cancels the watch and the
        // ranges are listed again below. A watch resumes *at* the last
        // revision seen, not after it: etcd accepts a watch that starts
        // exactly at the compaction revision but has dropped the deletions
        // made at that revision. Starting one earlier gets a cancel
        // instead; the one event seen twice changes nothing.
        let ranges = self.settings.ranges();
        let mut watches =
            if ranges.iter().all(|r| self.revisions.contains_key(r)) && !ranges.is_empty() {
                let mut watches = Watches::new(ranges.clone());
                for (i, range) in ranges.iter().enumerate() {
                    let from = self.revisions.get(range).copied().unwrap_or(0);
                    watches.add(i, self.gateway.watch(range, from).await?);
                }
                watches
            } else {
                self.relist().await?
            };
        self.heal();
        let period = self.settings.ttl / 3;
        let mut next_keepalive = Instant::now() + period;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => {
                        let _ = self.gateway.revoke(lease).await;
                        return Ok(());
                    }
                    Some(Command::Names(names)) => {
                        if names != self.settings.names {
                            self.settings.names = names;
                            watches = self.relist().await?;
                        }
                    }
                    Some(c) => {
                        self.remember_and_send(c, lease).await?;
                    }
                },
                (i, message) = watches.next() => match message? {
                    None => return Err(broken("the watch stream ended")),
                    Some(WatchMessage::Canceled { compact_revision, reason }) => {
                        if compact_revision > 0 {
                            // Its start was compacted away: list again and diff.
                            watches = self.relist().await?;
                        } else {
                            return Err(broken(&format!("the watch was canceled: {reason}")));
                        }
                    }
                    Some(message) => {
                        let seen = message.seen_up_to();
                        if let WatchMessage::Events { changes, .. } = message {
                            self.apply(changes);
                        }
                        if let (Some(revision), Some(range)) = (seen, watches.ranges.get(i)) {
                            let at = self.revisions.entry(range.clone()).or_default();
                            *at = (*at).max(revision);
                        }
                    }
                },
                _ = sleep_until(next_keepalive) => {
                    next_keepalive = Instant::now() + period;
                    if self.gateway.keep_alive(lease).await? <= 0 {
                        // The lease is gone (etcd lost it, or we were away too long).
                        self.lease = None;
                        return Err(broken("the lease expired"));
                    }
                    if watches.origins.iter().any(|o| self.gateway.failed_since(*o)) {
                        // The next session resumes the watch where calls succeed.
                        return Err(broken("the member a watch was on stopped answering"));
                    }
                }
            }
        }
    }

    /// Lists each range, reports the view as it is now (every other host's
    /// endpoints of the required names), and watches each from there. The
    /// agent keeps no copy of the view: the supervisor has one, and a
    /// deleted key names its endpoint (`<prefix>/svc/<name>/<instance>`).
    async fn relist(&mut self) -> Result<Watches, GatewayError> {
        let ranges = self.settings.ranges();
        let mut all = Vec::new();
        let mut listed = Vec::new();
        for range in &ranges {
            let (kvs, revision) = self.gateway.range_prefix(range).await?;
            all.extend(
                kvs.iter()
                    .filter_map(|kv| Some(self.settings.endpoint(kv)?.0)),
            );
            listed.push(revision);
        }
        self.revisions = ranges.iter().cloned().zip(listed.iter().copied()).collect();
        let _ = self.reports.send(Report::Reset(all));
        let mut watches = Watches::new(ranges.clone());
        for (i, (range, revision)) in ranges.iter().zip(listed).enumerate() {
            watches.add(i, self.gateway.watch(range, revision + 1).await?);
        }
        Ok(watches)
    }

    fn apply(&mut self, changes: Vec<Change>) {
        let (upserts, removed) = self.settings.net_effect(changes);
        if !upserts.is_empty() || !removed.is_empty() {
            let _ = self.reports.send(Report::Changed { upserts, removed });
        }
    }

    /// Deletes keys this host-id left under another lease (an earlier run).
    async fn delete_stale(&mut self, lease: i64) -> Result<(), GatewayError> {
        let (kvs, _) = self
            .gateway
            .range_prefix(&self.settings.svc_prefix())
            .await?;
        for kv in kvs {
            let ours = self
                .settings
                .endpoint(&kv)
                .is_some_and(|(_, host_id)| host_id == self.settings.host_id);
            if ours && kv.lease != lease {
                self.gateway.delete(&kv.key).await?;
            }
        }
        Ok(())
    }

    /// Records what a command asks, to be carried out once etcd answers;
    /// returns the keys it put in `mine` (a register) or in `withdrawn`.
    fn remember(&mut self, command: Command) -> Vec<String> {
        match command {
            Command::Register(e) => {
                let key = self.settings.key(&e);
                self.withdrawn.remove(&key);
                self.mine.insert(key.clone(), self.settings.record(&e));
                vec![key]
            }
            Command::Withdraw(instance) => {
                let suffix = format!("/{instance}");
                let gone: Vec<String> = self
                    .mine
                    .keys()
                    .filter(|k| k.ends_with(&suffix))
                    .cloned()
                    .collect();
                for key in &gone {
                    self.mine.remove(key);
                    self.withdrawn.insert(key.clone());
                }
                gone
            }
            Command::Tls(tls) => {
                self.gateway.set_tls(tls);
                Vec::new()
            }
            Command::Names(names) => {
                // Listed afresh at the next session.
                if names != self.settings.names {
                    self.settings.names = names;
                    self.revisions.clear();
                }
                Vec::new()
            }
            Command::Stop => Vec::new(),
        }
    }

    /// Records a command, then carries it out; what fails stays recorded
    /// and is done at the next session.
    async fn remember_and_send(
        &mut self,
        command: Command,
        lease: i64,
    ) -> Result<(), GatewayError> {
        for key in self.remember(command) {
            match self.mine.get(&key) {
                Some(value) => {
                    self.gateway.put(&key, value, lease).await?;
                }
                None => {
                    self.gateway.delete(&key).await?;
                    self.withdrawn.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn degrade(&mut self, reason: String) {
        self.degraded = true;
        let _ = self.reports.send(Report::Degraded(reason));
    }

    fn heal(&mut self) {
        if std::mem::take(&mut self.degraded) {
            let _ = self.reports.send(Report::Healthy);
        }
    }
}

/// The watches of one session, each read by a task of its own (the JSON
/// gateway streams one watch per connection), their messages merged.
struct Watches {
    /// The range each watches, by index.
    ranges: Vec<String>,
    /// Where each streams from.
    origins: Vec<Origin>,
    messages: mpsc::UnboundedReceiver<(usize, WatchNext)>,
    /// Kept so that, with no watch at all, `next` waits forever.
    sender: mpsc::UnboundedSender<(usize, WatchNext)>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

type WatchNext = Result<Option<WatchMessage>, GatewayError>;

impl Watches {
    fn new(ranges: Vec<String>) -> Watches {
        let (sender, messages) = mpsc::unbounded_channel();
        Watches {
            ranges,
            origins: Vec::new(),
            messages,
            sender,
            readers: Vec::new(),
        }
    }

    /// Reads `watch` (of range `i`) until it ends or breaks.
    fn add(&mut self, i: usize, mut watch: Watch) {
        self.origins.push(watch.origin());
        let sender = self.sender.clone();
        self.readers.push(tokio::spawn(async move {
            loop {
                let next = watch.next().await;
                let last = !matches!(next, Ok(Some(_)));
                if sender.send((i, next)).is_err() || last {
                    return;
                }
            }
        }));
    }

    /// The next message of any watch, and which.
    async fn next(&mut self) -> (usize, WatchNext) {
        match self.messages.recv().await {
            Some(next) => next,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

fn broken(reason: &str) -> GatewayError {
    GatewayError::Lost(reason.to_string())
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at).await
}

/// Up to a quarter of `d`, so corrals that lost etcd together do not return together.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let quarter = (d.as_millis() as u64 / 4).max(1);
    Duration::from_millis(u64::from(nanos) % quarter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            endpoints: Vec::new(),
            prefix: "corral".into(),
            ttl: Duration::from_secs(2),
            host_id: "b".into(),
            credentials: None,
            tls: None,
            names: BTreeSet::new(),
        }
    }

    fn put(s: &Settings, instance: &str, port: u16) -> Change {
        let e = crate::discovery::contract::ep("db", instance, port);
        Change::Put(KeyValue {
            key: s.key(&e),
            value: s.record(&e),
            mod_revision: 0,
            lease: 0,
        })
    }

    fn delete(instance: &str) -> Change {
        Change::Delete {
            key: format!("corral/svc/db/{instance}"),
            mod_revision: 0,
        }
    }

    #[test]
    fn a_batch_is_read_in_order() {
        let s = settings();
        // What a resumed watch delivered in one batch: the deletion it
        // resumed at, then the same key put again.
        let (up, gone) = s.net_effect(vec![delete("a:db"), put(&s, "a:db", 5432)]);
        assert_eq!(up.len(), 1);
        assert!(gone.is_empty(), "{gone:?}");
        let (up, gone) = s.net_effect(vec![put(&s, "a:db", 1), delete("a:db")]);
        assert!(up.is_empty());
        assert_eq!(gone, [("db".to_string(), "a:db".to_string())]);
        let (up, _) = s.net_effect(vec![put(&s, "a:db", 1), put(&s, "a:db", 2)]);
        assert_eq!(up.iter().map(|e| e.port).collect::<Vec<_>>(), [2]);
    }
}
