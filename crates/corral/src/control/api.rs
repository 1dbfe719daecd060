//! The bridge between API handlers and the supervisor: requests go in over a
//! channel, the supervisor (the single owner of state) answers each one.
//! Every request carries a reply channel of its own answer's type.

use corral_proto::{Action, Endpoint, ErrorBody, ReloadResult, ServiceStatus};
use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::logs::HubHandle;

/// Where the supervisor sends the answer to one request.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What a handler asks the supervisor, with where the answer goes.
#[derive(Debug)]
pub enum Request {
    /// Every live instance; with `resources`, each carries the CPU time of
    /// its ended processes, for the sampler to add what runs now.
    List {
        resources: bool,
        reply: Reply<corral_proto::ServiceList>,
    },
    Get {
        name: String,
        resources: bool,
        reply: Reply<ServiceStatus>,
    },
    /// How one instance's process is run (`corral exec`, `corral run`).
    Exec {
        name: String,
        reply: Reply<corral_proto::ExecSpec>,
    },
    /// Start, stop or restart one instance; answers with its state right after.
    /// `stop_timeout` replaces the service's stop-timeout for this stop.
    Act {
        name: String,
        action: Action,
        stop_timeout: Option<std::time::Duration>,
        reply: Reply<ServiceStatus>,
    },
    Signal {
        name: String,
        signal: Signal,
        reply: Reply<ServiceStatus>,
    },
    Reload {
        reply: Reply<ReloadResult>,
    },
    /// Run this many instances of a service with `replicas`.
    Scale {
        service: String,
        replicas: u32,
        reply: Reply<ReloadResult>,
    },
    /// What discovery knows: every endpoint, or those of one name.
    Endpoints {
        name: Option<String>,
        reply: Reply<Vec<Endpoint>>,
    },
    Shutdown {
        reply: Reply<()>,
    },
    /// Service names to hub indices (for log queries); None: all.
    Resolve {
        names: Vec<String>,
        reply: Reply<Option<Vec<usize>>>,
    },
    /// An instance name, or a replicated service's name, to instance names.
    Expand {
        name: String,
        reply: Reply<Vec<String>>,
    },
}

/// An error with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: u16, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                known: Vec::new(),
                details: Vec::new(),
            },
        }
    }

    fn gone() -> ApiError {
        ApiError::new(503, "corral is shutting down")
    }
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub requests: mpsc::Sender<Request>,
    pub hub: HubHandle,
    /// Weak, so the event streams end when the supervisor does.
    pub events: broadcast::WeakSender<corral_proto::Event>,
    /// Who this daemon is (`GET /v1/version`).
    pub identity: std::sync::Arc<corral_proto::Version>,
    /// What the last reading of /proc found, for CPU shares and counters.
    pub usage: std::sync::Arc<super::usage::Sampler>,
}

impl Api {
    /// Lifecycle changes from now on.
    pub fn subscribe(&self) -> Result<broadcast::Receiver<corral_proto::Event>, ApiError> {
        self.events
            .upgrade()
            .map(|s| s.subscribe())
            .ok_or_else(ApiError::gone)
    }

    /// Asks the supervisor and waits for its answer:
    /// `api.call(|reply| Request::List { reply })`.
    pub async fn call<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| ApiError::gone())?;
        answer.await.map_err(|_| ApiError::gone())?
    }
}
