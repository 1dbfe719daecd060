//! Routes of API v1: each request maps to one handler.

use std::time::Duration;

use bytes::Bytes;
use corral_proto::{
    Action, ActionResult, ServiceState, ServiceStatus, SignalRequest, Version, MAX_BODY, PREFIX,
};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::api::{Api, ApiError, Request as Ask};
use super::body::ApiBody;
use crate::logs::{Line, LogQuery};

/// How long start/stop/restart wait for their state by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(120);

pub async fn route(req: Request<Incoming>, api: Api) -> Response<ApiBody> {
    match dispatch(req, api).await {
        Ok(response) => response,
        Err(e) => error_response(e),
    }
}

fn error_response(e: ApiError) -> Response<ApiBody> {
    let mut response = Response::new(ApiBody::json(&e.body));
    *response.status_mut() =
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn ok(body: ApiBody) -> Result<Response<ApiBody>, ApiError> {
    Ok(Response::new(body))
}

async fn dispatch(req: Request<Incoming>, api: Api) -> Result<Response<ApiBody>, ApiError> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(ApiError::new(
            404,
            format!("unknown path {path}: the API lives under {PREFIX}/"),
        ));
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["version"]) => ok(ApiBody::json::<Version>(&api.identity)),
        (Method::GET, ["services"]) => list(&api, wants_resources(&query)?).await,
        (Method::GET, ["services", name]) => get(&api, name, wants_resources(&query)?).await,
        (Method::GET, ["services", name, "exec"]) => {
            let name = name.to_string();
            let spec = api.call(|reply| Ask::Exec { name, reply }).await?;
            ok(ApiBody::json(&spec))
        }
        (Method::POST, ["services", name, "scale"]) => {
            let name = name.to_string();
            let body: corral_proto::ScaleRequest = read_json(req).await?;
            let replicas = body.replicas;
            let result = api
                .call(|reply| Ask::Scale {
                    service: name,
                    replicas,
                    reply,
                })
                .await?;
            ok(ApiBody::json(&result))
        }
        (Method::POST, ["services", name, "signal"]) => {
            let name = name.to_string();
            let body: SignalRequest = read_json(req).await?;
            signal(&api, &name, &body).await
        }
        (Method::POST, ["services", name, segment]) => {
            let Some(action) = Action::from_segment(segment) else {
                return Err(ApiError::new(404, format!("unknown path {path}")));
            };
            let name = name.to_string();
            drain(req).await?;
            act(&api, &name, action, &query).await
        }
        (Method::GET, ["logs"]) => logs(&api, &query).await,
        (Method::GET, ["endpoints"]) => {
            let name = query.get("name").map(str::to_string);
            let endpoints = api.call(|reply| Ask::Endpoints { name, reply }).await?;
            ok(ApiBody::json(&corral_proto::EndpointList { endpoints }))
        }
        (Method::GET, ["events"]) => events(&api).await,
        (Method::GET, ["metrics"]) => metrics_response(&api).await,
        (Method::POST, ["reload"]) => {
            drain(req).await?;
            let result = api.call(|reply| Ask::Reload { reply }).await?;
            ok(ApiBody::json(&result))
        }
        (Method::POST, ["shutdown"]) => {
            drain(req).await?;
            shutdown(&api).await
        }
        (
            _,
            ["version" | "services" | "logs" | "events" | "reload" | "shutdown" | "endpoints"
            | "metrics", ..],
        ) => Err(ApiError::new(
            405,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(404, format!("unknown path {path}"))),
    }
}

/// The metrics listener's one route: `GET /metrics` (and HEAD).
pub(super) async fn metrics_only(req: Request<Incoming>, api: Api) -> Response<ApiBody> {
    let answer = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => metrics_response(&api).await,
        (_, "/metrics") => Err(ApiError::new(
            405,
            format!("{} is not allowed on /metrics", req.method()),
        )),
        (_, path) => Err(ApiError::new(
            404,
            format!("unknown path {path}: this listener serves only /metrics"),
        )),
    };
    answer.unwrap_or_else(error_response)
}

/// What corral knows, for Prometheus (the socket's `/v1/metrics` and the
/// TCP listener's `/metrics`).
pub(super) async fn metrics_response(api: &Api) -> Result<Response<ApiBody>, ApiError> {
    let list = services(api, true).await?;
    let endpoints = api
        .call(|reply| Ask::Endpoints { name: None, reply })
        .await?;
    let (reply, counts) = tokio::sync::oneshot::channel();
    let lines = match api.hub.send(Line::Counts(reply)).await {
        Ok(()) => counts.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let text = super::metrics::render(&super::metrics::Scrape {
        list: &list,
        lines: &lines,
        endpoints: &endpoints,
        started: api.identity.started.unwrap_or_default(),
    });
    let mut response = Response::new(ApiBody::Full(Some(Bytes::from(text))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(super::metrics::CONTENT_TYPE),
    );
    Ok(response)
}

/// `?resources=true`: read what the processes use from /proc.
fn wants_resources(query: &Query) -> Result<bool, ApiError> {
    match query.get("resources") {
        None | Some("false") => Ok(false),
        Some("true" | "") => Ok(true),
        Some(other) => Err(ApiError::new(
            400,
            format!("invalid resources={other:?}: true or false"),
        )),
    }
}

async fn list(api: &Api, resources: bool) -> Result<Response<ApiBody>, ApiError> {
    ok(ApiBody::json(&services(api, resources).await?))
}

async fn get(api: &Api, name: &str, resources: bool) -> Result<Response<ApiBody>, ApiError> {
    ok(ApiBody::json(&status(api, name, resources).await?))
}

/// Every live instance, with what /proc says of them when `resources`.
async fn services(api: &Api, resources: bool) -> Result<corral_proto::ServiceList, ApiError> {
    let mut list = api.call(|reply| Ask::List { resources, reply }).await?;
    if resources {
        list.services = sample(api, list.services, true).await?;
    }
    Ok(list)
}

/// One instance, with what /proc says of it when `resources`.
async fn status(api: &Api, name: &str, resources: bool) -> Result<ServiceStatus, ApiError> {
    let name = name.to_string();
    let status = api
        .call(|reply| Ask::Get {
            name,
            resources,
            reply,
        })
        .await?;
    if !resources {
        return Ok(status);
    }
    let mut one = sample(api, vec![status], false).await?;
    one.pop()
        .ok_or_else(|| ApiError::new(500, "reading /proc lost the status"))
}

/// Reads /proc for these instances off the event loop's thread.
pub(super) async fn sample(
    api: &Api,
    mut services: Vec<ServiceStatus>,
    complete: bool,
) -> Result<Vec<ServiceStatus>, ApiError> {
    // A thread of its own (not tokio's blocking pool: less code, and
    // nothing stays behind once the reading is done).
    let usage = api.usage.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("proc-reader".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            usage.fill(&mut services, complete);
            let _ = tx.send(services);
        })
        .map_err(|e| ApiError::new(503, format!("cannot read /proc now: {e}")))?;
    rx.await
        .map_err(|_| ApiError::new(500, "reading /proc failed"))
}

/// An instance, or every instance of a replicated service, by name.
async fn expand(api: &Api, name: &str) -> Result<Vec<String>, ApiError> {
    let name = name.to_string();
    api.call(|reply| Ask::Expand { name, reply }).await
}

/// start, stop, restart: one instance, or each instance of a replicated
/// service in turn (so never all at once).
async fn act(
    api: &Api,
    name: &str,
    action: Action,
    query: &Query,
) -> Result<Response<ApiBody>, ApiError> {
    let wait = query.get("wait").is_none_or(|v| v != "false");
    let limit = match query.get("timeout") {
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| ApiError::new(400, format!("invalid timeout {t:?}: {e}")))?,
        None => DEFAULT_WAIT,
    };
    let stop_timeout = match query.get("stop_timeout") {
        Some(t) => Some(
            crate::config::parse_duration(t)
                .map_err(|e| ApiError::new(400, format!("invalid stop_timeout {t:?}: {e}")))?,
        ),
        None => None,
    };
    let names = expand(api, name).await?;
    if names.is_empty() {
        return Err(ApiError::new(
            409,
            format!(
                "{name} is scaled to 0: it has no instance to act on (scale it up to run some)"
            ),
        ));
    }
    let mut results = Vec::with_capacity(names.len());
    for instance in &names {
        results.push(act_one(api, instance, action, stop_timeout, wait, limit).await?);
    }
    let Some(mut last) = results.pop() else {
        return Err(ApiError::new(404, format!("no instance of {name}")));
    };
    if results.is_empty() && names.len() == 1 && names[0] == name {
        return ok(ApiBody::json(&last));
    }
    results.push(last.clone());
    last.ok = results.iter().all(|r| r.ok);
    last.message = results
        .iter()
        .map(|r| r.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    last.instances = results.into_iter().map(|r| r.service).collect();
    ok(ApiBody::json(&last))
}

/// Acts on one instance and waits until it gets where the action aims.
async fn act_one(
    api: &Api,
    name: &str,
    action: Action,
    stop_timeout: Option<Duration>,
    wait: bool,
    limit: Duration,
) -> Result<ActionResult, ApiError> {
    // Subscribe first, so no change between the request and the wait is missed.
    let mut changes = api.subscribe().await?;
    let instance = name.to_string();
    let mut current = api
        .call(|reply| Ask::Act {
            name: instance,
            action,
            stop_timeout,
            reply,
        })
        .await?;
    let reached = |s: &ServiceStatus| -> Option<bool> {
        match action {
            Action::Stop => s.is_stopped().then_some(true),
            Action::Start | Action::Restart if s.is_up() => Some(true),
            // Right after a restart the service is still stopping.
            Action::Start | Action::Restart
                if s.is_down_for_good() && s.state != ServiceState::Stopping =>
            {
                Some(false)
            }
            Action::Start | Action::Restart => None,
        }
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut verdict = reached(&current);
    while wait && verdict.is_none() {
        let changed = tokio::time::timeout_at(deadline, changes.recv()).await;
        match changed {
            Err(_) | Ok(None) => break,
            Ok(Some(Ok(e))) if e.service.as_deref() != Some(name) => continue,
            // Some went by unseen: look again.
            Ok(Some(_)) => {}
        }
        current = status(api, name, false).await?;
        verdict = reached(&current);
    }
    let (ok_, message) = match verdict {
        Some(true) => (true, format!("{name} is {}", current.state)),
        Some(false) => (
            false,
            format!(
                "{name} did not {}: it is {}",
                action.as_str(),
                current.state
            ),
        ),
        None if !wait => (
            true,
            format!(
                "{name} is {} ({} requested)",
                current.state,
                action.as_str()
            ),
        ),
        None => (
            false,
            format!(
                "{name} is still {} after {}",
                current.state,
                humantime::format_duration(limit)
            ),
        ),
    };
    Ok(ActionResult {
        ok: ok_,
        message,
        service: current,
        instances: Vec::new(),
    })
}

/// Signals one instance (answer: its status) or each instance of a
/// replicated service (answer: a service list).
async fn signal(api: &Api, name: &str, req: &SignalRequest) -> Result<Response<ApiBody>, ApiError> {
    let sig = crate::config::parse_signal(&req.signal)
        .ok_or_else(|| ApiError::new(400, format!("unknown signal {:?}", req.signal)))?;
    let names = expand(api, name).await?;
    let send = |name: String| {
        api.call(move |reply| Ask::Signal {
            name,
            signal: sig,
            reply,
        })
    };
    if names.len() == 1 && names[0] == name {
        return ok(ApiBody::json(&send(name.to_string()).await?));
    }
    // Every instance that runs; the others are skipped.
    let mut statuses = Vec::with_capacity(names.len());
    for instance in &names {
        match send(instance.clone()).await {
            Ok(s) => statuses.push(s),
            Err(e) if e.status == 409 => {}
            Err(e) => return Err(e),
        }
    }
    if statuses.is_empty() {
        return Err(ApiError::new(
            409,
            format!("no instance of {name} has a running process"),
        ));
    }
    ok(ApiBody::json(&corral_proto::ServiceList {
        services: statuses,
        discovery: None,
        scaled_to_zero: Vec::new(),
    }))
}

async fn logs(api: &Api, query: &Query) -> Result<Response<ApiBody>, ApiError> {
    let names: Vec<String> = query.all("service").map(str::to_string).collect();
    let last = match query.get("n") {
        Some(n) => n
            .parse()
            .map_err(|_| ApiError::new(400, format!("n must be a whole number, found {n:?}")))?,
        None => 100,
    };
    let follow = query.get("follow").is_some_and(|v| v == "true" || v == "1");
    let services = api.call(|reply| Ask::Resolve { names, reply }).await?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let query = LogQuery {
        services,
        last,
        follow,
        reply,
    };
    api.hub
        .send(Line::Query(query))
        .await
        .map_err(|_| ApiError::new(503, "corral is shutting down"))?;
    let (recent, follower) = answer
        .await
        .map_err(|_| ApiError::new(503, "corral is shutting down"))?;
    let stream = crate::logs::follow::Stream::new(recent, follower);
    let mut response = Response::new(ApiBody::Logs(Box::new(stream)));
    if follow {
        // A stream that ends (corral ends, or it is cut) ends the connection:
        // an idle connection kept open would hold a descriptor for nothing.
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

async fn events(api: &Api) -> Result<Response<ApiBody>, ApiError> {
    let mut changes = api.subscribe().await?;
    let hub = api.hub.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            let missed = match changes.recv().await {
                Some(Ok(event)) => {
                    if tx.send(json_line(&event)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Err(missed)) => missed,
                // corral is done: said last, so a client that sees the
                // stream end without it knows it was cut short.
                None => {
                    let end = corral_proto::Event {
                        time: crate::unix_now(),
                        service: None,
                        state: None,
                        message: "corral stopped: end of the stream".into(),
                        kind: Some("end".into()),
                        missed: None,
                    };
                    let _ = tx.send(json_line(&end)).await;
                    return;
                }
            };
            // Told exactly how many it missed, where they would have been;
            // then the stream is cut: a client this far behind would only
            // fall further. The logs say so too.
            let marker = corral_proto::Event {
                time: crate::unix_now(),
                service: None,
                state: None,
                message: format!("{missed} event(s) missed here: this client did not keep up"),
                kind: Some("lagged".into()),
                missed: Some(missed),
            };
            let text = format!(
                "an events client did not keep up: {missed} event(s) missed, its stream cut"
            );
            let _ = hub.try_send(Line::Event {
                svc: None,
                time: std::time::SystemTime::now(),
                text,
            });
            let cut = corral_proto::StreamCut {
                error: format!(
                    "the daemon dropped this stream: it did not keep up ({missed} events missed)"
                ),
            };
            drop(changes);
            if tx.send(json_line(&marker)).await.is_ok() {
                let _ = tx.send(json_line(&cut)).await;
            }
            return;
        }
    });
    ok(ApiBody::Lines(rx))
}

/// Starts the shutdown; the response streams the events until corral is gone.
async fn shutdown(api: &Api) -> Result<Response<ApiBody>, ApiError> {
    let response = events(api).await?;
    api.call(|reply| Ask::Shutdown { reply }).await?;
    let mut response = response;
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

fn json_line<T: serde::Serialize>(value: &T) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Reads a JSON body of at most MAX_BODY bytes.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = read_body(req).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(400, format!("invalid JSON body: {e}")))
}

/// Reads (and discards) a body, still enforcing the size limit.
async fn drain(req: Request<Incoming>) -> Result<(), ApiError> {
    read_body(req).await.map(|_| ())
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(413, format!("request body larger than {MAX_BODY} bytes"));
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            400,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// Query parameters (`a=1&b=2&b=3`), percent-decoding left out: names and
/// values are service names, numbers and durations.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (p.to_string(), String::new()),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
