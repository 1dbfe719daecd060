//! A client of etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
//! `/v3/watch`, `/v3/auth/authenticate`) on the hyper client corral already
//! links: keys and values travel in base64, int64 fields as strings, each
//! watch on a connection of its own, unary calls on one kept connection.
//!
//! A call goes to the member that answered last, and on to the next when a
//! member cannot be reached (a connect bounded by CONNECT_TIMEOUT, so a
//! member that drops packets costs that long, not the whole call), takes
//! too long, or answers 5xx (no leader, no quorum, not caught up).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::tcp::Conn;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::base64;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot reach etcd at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("etcd answered {status} to {path}: {body}")]
    Status {
        status: u16,
        path: &'static str,
        body: String,
    },
    #[error("unexpected answer from etcd to {path}: {reason}")]
    Protocol { path: &'static str, reason: String },
    /// The session with etcd broke off (a stream ended, a lease was lost).
    #[error("{0}")]
    Lost(String),
}

/// One key of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
}

/// One message of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch exists; events from its start revision follow.
    Created { revision: i64 },
    /// Changes, all at revisions up to `revision`.
    Events { revision: i64, changes: Vec<Change> },
    /// Nothing changed up to `revision` (progress notification).
    Progress { revision: i64 },
    /// The watch ended; `compact_revision > 0`: its start was compacted away.
    Canceled {
        compact_revision: i64,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl Change {
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put(kv) => kv.mod_revision,
            Change::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

impl WatchMessage {
    /// How far this message shows the store: a watch broken after it goes
    /// on from there. For events, the last event's revision, not the
    /// header's: etcd sends a watcher that is catching up at most 1,000
    /// revisions per message with the header at the current revision, so
    /// resuming at the header would skip what the next messages hold.
    pub fn seen_up_to(&self) -> Option<i64> {
        match self {
            WatchMessage::Events { changes, .. } => changes.iter().map(Change::revision).max(),
            WatchMessage::Progress { revision } => Some(*revision),
            WatchMessage::Created { .. } | WatchMessage::Canceled { .. } => None,
        }
    }
}

/// The longest a connection to one member may take to open (TLS included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where etcd is and how to talk to it.
#[derive(Debug)]
pub struct Gateway {
    /// `host:port` of each member.
    endpoints: Vec<String>,
    /// An auth token (`/v3/auth/authenticate`), sent with every call.
    token: Option<String>,
    /// Bound of one unary call to one member, connection included; also
    /// the silence after which TCP keep-alive probes start.
    timeout: Duration,
    /// TLS to every endpoint, when configured.
    tls: Option<crate::tcp::Tls>,
    /// The member that answered last: calls try it first.
    preferred: AtomicUsize,
    /// The connection unary calls share (keep-alives, puts, ranges), and
    /// its member: one TCP (and TLS) handshake per member change, not per
    /// call.
    pooled: Mutex<Option<(usize, Sender)>>,
    /// Calls each member failed (could not be reached, took too long, 5xx).
    failures: Vec<AtomicU64>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Gateway {
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Gateway {
        Gateway {
            token: None,
            timeout,
            tls: None,
            preferred: AtomicUsize::new(0),
            pooled: Mutex::new(None),
            failures: endpoints.iter().map(|_| AtomicU64::new(0)).collect(),
            endpoints,
        }
    }

    /// Talks TLS to every endpoint.
    pub fn with_tls(mut self, tls: Option<crate::tcp::Tls>) -> Gateway {
        self.tls = tls;
        self
    }

    /// New TLS settings: the kept connection goes, the next one uses them.
    pub fn set_tls(&mut self, tls: crate::tcp::Tls) {
        self.tls = Some(tls);
        *self.pooled.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Logs in; later calls carry the token.
    pub async fn authenticate(&mut self, name: &str, password: &str) -> Result<(), GatewayError> {
        #[derive(Serialize)]
        struct Ask<'a> {
            name: &'a str,
            password: &'a str,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            token: String,
        }
        let answer: Answer = self
            .call("/v3/auth/authenticate", &Ask { name, password })
            .await?;
        self.token = Some(answer.token);
        Ok(())
    }

    /// Puts a key (attached to `lease` unless 0); returns the new revision.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, GatewayError> {
        #[derive(Serialize)]
        struct Ask {
            key: String,
            value: String,
            #[serde(serialize_with = "as_string")]
            lease: i64,
        }
        let ask = Ask {
            key: base64::encode(key.as_bytes()),
            value: base64::encode(value),
            lease,
        };
        let answer: HeaderOnly = self.call("/v3/kv/put", &ask).await?;
        Ok(answer.header.revision)
    }

    /// Every key under `prefix`, and the revision they were read at.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), GatewayError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            header: Header,
            #[serde(default)]
            kvs: Vec<RawKv>,
        }
        const PATH: &str = "/v3/kv/range";
        let answer: Answer = self.call(PATH, &KeyRange::prefix(prefix)).await?;
        let kvs = answer
            .kvs
            .into_iter()
            .map(|kv| kv.decode(PATH))
            .collect::<Result<_, _>>()?;
        Ok((kvs, answer.header.revision))
    }

    /// Deletes one key; returns the revision after.
    pub async fn delete(&self, key: &str) -> Result<i64, GatewayError> {
        let ask = KeyRange {
            key: base64::encode(key.as_bytes()),
            range_end: None,
        };
        let answer: HeaderOnly = self.call("/v3/kv/deleterange", &ask).await?;
        Ok(answer.header.revision)
    }

    /// Deletes every key under `prefix` (tests clean up with it).
    #[cfg(test)]
    pub async fn delete_prefix(&self, prefix: &str) -> Result<i64, GatewayError> {
        let answer: HeaderOnly = self
            .call("/v3/kv/deleterange", &KeyRange::prefix(prefix))
            .await?;
        Ok(answer.header.revision)
    }

    pub async fn grant(&self, ttl: Duration) -> Result<Lease, GatewayError> {
        #[derive(Serialize)]
        struct Ask {
            #[serde(rename = "TTL", serialize_with = "as_string")]
            ttl: i64,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default, rename = "ID", deserialize_with = "int64")]
            id: i64,
            #[serde(default, rename = "TTL", deserialize_with = "int64")]
            ttl: i64,
            #[serde(default)]
            error: String,
        }
        const PATH: &str = "/v3/lease/grant";
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let answer: Answer = self.call(PATH, &Ask { ttl: secs }).await?;
        if !answer.error.is_empty() || answer.id == 0 {
            return Err(GatewayError::Protocol {
                path: PATH,
                reason: format!("no lease granted: {}", answer.error),
            });
        }
        Ok(Lease {
            id: answer.id,
            ttl: answer.ttl,
        })
    }

    /// Renews a lease; the TTL left, 0 or less when the lease is gone.
    pub async fn keep_alive(&self, id: i64) -> Result<i64, GatewayError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            result: Option<KeepAlive>,
        }
        #[derive(Deserialize)]
        struct KeepAlive {
            #[serde(default, rename = "TTL", deserialize_with = "int64")]
            ttl: i64,
        }
        let answer: Answer = self.call("/v3/lease/keepalive", &LeaseId { id }).await?;
        Ok(answer.result.map_or(0, |r| r.ttl))
    }

    pub async fn revoke(&self, id: i64) -> Result<(), GatewayError> {
        let _: HeaderOnly = self.call("/v3/lease/revoke", &LeaseId { id }).await?;
        Ok(())
    }

    /// Watches every key under `prefix` from `start_revision`, with progress
    /// notifications, on a connection of its own.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, GatewayError> {
        #[derive(Serialize)]
        struct Ask {
            create_request: Create,
        }
        #[derive(Serialize)]
        struct Create {
            #[serde(flatten)]
            range: KeyRange,
            #[serde(serialize_with = "as_string")]
            start_revision: i64,
            progress_notify: bool,
        }
        const PATH: &str = "/v3/watch";
        let ask = Ask {
            create_request: Create {
                range: KeyRange::prefix(prefix),
                start_revision,
                progress_notify: true,
            },
        };
        let body = self.body(PATH, &ask)?;
        let response = self
            .each_member(PATH, |member| {
                let body = body.clone();
                async move {
                    // A connection of its own: the stream holds it.
                    let mut sender = self.connect(member).await?;
                    let response = self.send(&mut sender, member, PATH, body).await?;
                    let status = response.status();
                    if status != StatusCode::OK {
                        let bytes = collect(response.into_body(), PATH).await?;
                        return Err(status_error(status, PATH, &bytes));
                    }
                    Ok((response, member))
                }
            })
            .await?;
        let (response, member) = response;
        Ok(Watch {
            body: response.into_body(),
            pending: Vec::new(),
            member,
            failures: self.failures(member),
        })
    }

    /// How many calls `member` has failed so far.
    fn failures(&self, member: usize) -> u64 {
        self.failures
            .get(member)
            .map_or(0, |f| f.load(Ordering::Relaxed))
    }

    /// Whether the member a watch streams from (`origin`) has failed a
    /// call since the watch began: frozen or cut off, it would keep the
    /// stream open and silent (etcd sends progress notices only every few
    /// minutes), so the watch should move to a member that answers.
    pub fn failed_since(&self, origin: Origin) -> bool {
        self.failures(origin.member) > origin.failures
    }

    /// A unary call: POST a JSON body, decode the JSON answer.
    pub(super) async fn call<A: Serialize, T: DeserializeOwned>(
        &self,
        path: &'static str,
        ask: &A,
    ) -> Result<T, GatewayError> {
        let body = self.body(path, ask)?;
        let bytes = self.exchange(path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| GatewayError::Protocol {
            path,
            reason: e.to_string(),
        })
    }

    fn body<A: Serialize>(&self, path: &'static str, ask: &A) -> Result<Bytes, GatewayError> {
        serde_json::to_vec(ask)
            .map(Bytes::from)
            .map_err(|e| GatewayError::Protocol {
                path,
                reason: e.to_string(),
            })
    }

    /// POSTs a body on the kept connection (made again when it broke or
    /// its member failed) and reads the whole answer. One copy of this for
    /// every kind of answer (`call` only decodes).
    async fn exchange(&self, path: &'static str, body: Bytes) -> Result<Bytes, GatewayError> {
        self.each_member(path, |member| {
            let body = body.clone();
            async move {
                let mut sender = match self.take_pooled(member) {
                    Some(sender) => sender,
                    None => self.connect(member).await?,
                };
                let response = self.send(&mut sender, member, path, body).await?;
                let status = response.status();
                let bytes = collect(response.into_body(), path).await?;
                // The answer is read whole: the connection is free again.
                self.pool(member, sender);
                if status != StatusCode::OK {
                    return Err(status_error(status, path, &bytes));
                }
                Ok(bytes)
            }
        })
        .await
    }

    /// Runs `attempt` on each member in turn, the one that answered last
    /// first, each bounded by the timeout, until one succeeds or fails in a
    /// way another member would not change (a 4xx: a bad request, a bad
    /// token).
    async fn each_member<T, F, Fut>(
        &self,
        path: &'static str,
        attempt: F,
    ) -> Result<T, GatewayError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>>,
    {
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..count {
            let member = (first + k) % count;
            let error = match tokio::time::timeout(self.timeout, attempt(member)).await {
                Ok(Ok(answer)) => {
                    self.preferred.store(member, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(e)) if !e.another_member_may_answer() => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => GatewayError::Unreachable {
                    endpoint: self.endpoints[member].clone(),
                    reason: format!("{path} took longer than {} ms", self.timeout.as_millis()),
                },
            };
            self.forget(member);
            if let Some(failures) = self.failures.get(member) {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            last = Some(error);
        }
        Err(last.unwrap_or(GatewayError::Unreachable {
            endpoint: String::new(),
            reason: "no etcd endpoint configured".into(),
        }))
    }

    /// A new connection to `member`, opened within CONNECT_TIMEOUT.
    async fn connect(&self, member: usize) -> Result<Sender, GatewayError> {
        let endpoint = &self.endpoints[member];
        let unreachable = |reason: String| GatewayError::Unreachable {
            endpoint: endpoint.clone(),
            reason,
        };
        let bound = CONNECT_TIMEOUT.min(self.timeout);
        let connect = Conn::connect(endpoint, Some(self.timeout), self.tls.as_ref());
        let stream = tokio::time::timeout(bound, connect)
            .await
            .map_err(|_| unreachable(format!("no connection within {} ms", bound.as_millis())))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends one request on `sender`.
    async fn send(
        &self,
        sender: &mut Sender,
        member: usize,
        path: &'static str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, GatewayError> {
        let endpoint = &self.endpoints[member];
        let mut request = Request::post(path)
            .header(hyper::header::HOST, endpoint.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, token.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| GatewayError::Protocol {
                path,
                reason: e.to_string(),
            })?;
        sender
            .send_request(request)
            .await
            .map_err(|e| GatewayError::Unreachable {
                endpoint: endpoint.clone(),
                reason: self
                    .tls
                    .as_ref()
                    .and_then(|tls| tls.describe(&e))
                    .unwrap_or_else(|| e.to_string()),
            })
    }

    /// The kept connection, if it goes to `member` and can take a request.
    fn take_pooled(&self, member: usize) -> Option<Sender> {
        let mut pooled = self.pooled.lock().unwrap_or_else(|e| e.into_inner());
        match pooled.take() {
            Some((m, sender)) if m == member && sender.is_ready() => Some(sender),
            _ => None,
        }
    }

    fn pool(&self, member: usize, sender: Sender) {
        if sender.is_ready() {
            *self.pooled.lock().unwrap_or_else(|e| e.into_inner()) = Some((member, sender));
        }
    }

    /// Drops the kept connection to a member that failed.
    fn forget(&self, member: usize) {
        let mut pooled = self.pooled.lock().unwrap_or_else(|e| e.into_inner());
        if pooled.as_ref().is_some_and(|(m, _)| *m == member) {
            *pooled = None;
        }
    }
}

impl GatewayError {
    /// Whether another member might answer where this one failed: it could
    /// not be reached, or answered 5xx (no leader, no quorum, behind).
    fn another_member_may_answer(&self) -> bool {
        match self {
            GatewayError::Unreachable { .. } => true,
            GatewayError::Status { status, .. } => *status >= 500,
            GatewayError::Protocol { .. } | GatewayError::Lost(_) => false,
        }
    }
}

/// A key, or (with `range_end`) every key from it up to that one.
#[derive(Serialize)]
struct KeyRange {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    range_end: Option<String>,
}

impl KeyRange {
    /// Every key under `prefix`.
    fn prefix(prefix: &str) -> KeyRange {
        let (key, range_end) = prefix_range(prefix);
        KeyRange {
            key,
            range_end: Some(range_end),
        }
    }
}

#[derive(Serialize)]
struct LeaseId {
    #[serde(rename = "ID", serialize_with = "as_string")]
    id: i64,
}

/// The gateway takes int64 fields as strings, as it writes them.
fn as_string<S: serde::Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// A watch stream: JSON objects, one after another.
pub struct Watch {
    body: Incoming,
    pending: Vec<u8>,
    /// The member it streams from, and how many calls that member had
    /// failed when it began.
    member: usize,
    failures: u64,
}

/// Where a watch streams from (see `Gateway::failed_since`).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    member: usize,
    failures: u64,
}

impl Watch {
    pub fn origin(&self) -> Origin {
        Origin {
            member: self.member,
            failures: self.failures,
        }
    }

    /// The next message; None when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, GatewayError> {
        const PATH: &str = "/v3/watch";
        loop {
            if let Some(message) = self.parse_pending(PATH)? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(GatewayError::Lost(format!("the watch stream broke: {e}")))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Takes one whole JSON object off the front of what was read, if there is one.
    fn parse_pending(&mut self, path: &'static str) -> Result<Option<WatchMessage>, GatewayError> {
        let start = self.pending.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            self.pending.clear();
            return Ok(None);
        };
        let mut stream = serde_json::Deserializer::from_slice(&self.pending[start..])
            .into_iter::<WatchEnvelope>();
        let parsed = match stream.next() {
            None => return Ok(None),
            Some(Err(e)) if e.is_eof() => return Ok(None),
            Some(Err(e)) => {
                return Err(GatewayError::Protocol {
                    path,
                    reason: e.to_string(),
                })
            }
            Some(Ok(envelope)) => envelope,
        };
        let used = start + stream.byte_offset();
        self.pending.drain(..used);
        parsed.message(path).map(Some)
    }
}

#[derive(Deserialize)]
struct WatchEnvelope {
    #[serde(default)]
    result: Option<WatchResult>,
    #[serde(default)]
    error: Option<WatchError>,
}

#[derive(Deserialize)]
struct WatchError {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    /// Absent for PUT (the default of the enum).
    #[serde(default, rename = "type")]
    kind: String,
    kv: RawKv,
}

impl WatchEnvelope {
    fn message(self, path: &'static str) -> Result<WatchMessage, GatewayError> {
        let Some(r) = self.result else {
            return Err(GatewayError::Protocol {
                path,
                reason: format!(
                    "watch error: {}",
                    self.error.map(|e| e.message).unwrap_or_default()
                ),
            });
        };
        let revision = r.header.revision;
        if r.canceled {
            return Ok(WatchMessage::Canceled {
                compact_revision: r.compact_revision,
                reason: r.cancel_reason,
            });
        }
        if r.created {
            return Ok(WatchMessage::Created { revision });
        }
        if r.events.is_empty() {
            return Ok(WatchMessage::Progress { revision });
        }
        let changes = r
            .events
            .into_iter()
            .map(|e| {
                let kv = e.kv.decode(path)?;
                Ok(match e.kind.as_str() {
                    "DELETE" => Change::Delete {
                        key: kv.key,
                        mod_revision: kv.mod_revision,
                    },
                    _ => Change::Put(kv),
                })
            })
            .collect::<Result<_, GatewayError>>()?;
        Ok(WatchMessage::Events { revision, changes })
    }
}

#[derive(Default, Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
struct HeaderOnly {
    #[serde(default)]
    header: Header,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    lease: i64,
}

impl RawKv {
    fn decode(self, path: &'static str) -> Result<KeyValue, GatewayError> {
        let bad = |what: &str| GatewayError::Protocol {
            path,
            reason: format!("{what} is not base64"),
        };
        let key = base64::decode(&self.key).ok_or_else(|| bad("a key"))?;
        Ok(KeyValue {
            key: String::from_utf8_lossy(&key).into_owned(),
            value: base64::decode(&self.value).ok_or_else(|| bad("a value"))?,
            mod_revision: self.mod_revision,
            lease: self.lease,
        })
    }
}

/// The gateway writes int64 fields as strings (and leaves zeros out).
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Int64;
    impl serde::de::Visitor<'_> for Int64 {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer, or one in a string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<i64, E> {
            s.parse().map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<i64, E> {
            Ok(n)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<i64, E> {
            i64::try_from(n).map_err(E::custom)
        }
    }
    d.deserialize_any(Int64)
}

/// `key` and `range_end` (both base64) selecting every key under `prefix`.
fn prefix_range(prefix: &str) -> (String, String) {
    let mut end = prefix.as_bytes().to_vec();
    // The first key after every key that starts with the prefix.
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            break;
        }
    }
    let end = if end.is_empty() { vec![0] } else { end };
    (base64::encode(prefix.as_bytes()), base64::encode(&end))
}

async fn collect(body: Incoming, path: &'static str) -> Result<Bytes, GatewayError> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| GatewayError::Protocol {
            path,
            reason: e.to_string(),
        })
}

fn status_error(status: StatusCode, path: &'static str, body: &[u8]) -> GatewayError {
    GatewayError::Status {
        status: status.as_u16(),
        path,
        body: String::from_utf8_lossy(body).trim().to_string(),
    }
}
