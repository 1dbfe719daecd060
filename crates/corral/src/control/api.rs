//! The bridge between API handlers and the supervisor: requests go in over a
//! channel, the supervisor (the single owner of state) answers each one.

use corral_proto::{ErrorBody, ReloadResult, ServiceStatus};
use nix::sys::signal::Signal;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::logs::HubHandle;

/// What a handler asks the supervisor.
#[derive(Debug)]
pub enum Op {
    List,
    Get(String),
    Start(String),
    Stop(String),
    Restart(String),
    Signal(String, Signal),
    Reload,
    /// Run this many instances of a service with `replicas`.
    Scale(String, u32),
    /// What discovery knows: every endpoint, or those of one name.
    Endpoints(Option<String>),
    Shutdown,
    /// Service names to hub indices (for log queries); empty = all.
    Resolve(Vec<String>),
    /// An instance name, or a replicated service's name, to instance names.
    Expand(String),
}

/// The supervisor's answer.
#[derive(Debug)]
pub enum Reply {
    Services(Vec<ServiceStatus>),
    Service(ServiceStatus),
    Reloaded(ReloadResult),
    Resolved(Option<Vec<usize>>),
    Names(Vec<String>),
    Endpoints(Vec<corral_proto::Endpoint>),
    Done,
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
}

/// One request and where its answer goes.
pub struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Reply, ApiError>>,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub requests: mpsc::Sender<Request>,
    pub hub: HubHandle,
    /// Weak, so the event streams end when the supervisor does.
    pub events: broadcast::WeakSender<corral_proto::Event>,
}

impl Api {
    /// Lifecycle changes from now on.
    pub fn subscribe(&self) -> Result<broadcast::Receiver<corral_proto::Event>, ApiError> {
        self.events
            .upgrade()
            .map(|s| s.subscribe())
            .ok_or_else(|| ApiError::new(503, "corral is shutting down"))
    }

    /// Asks the supervisor and waits for its answer.
    pub async fn call(&self, op: Op) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { op, reply })
            .await
            .map_err(|_| ApiError::new(503, "corral is shutting down"))?;
        answer
            .await
            .map_err(|_| ApiError::new(503, "corral is shutting down"))?
    }
}
