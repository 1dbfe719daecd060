//! The bridge between API handlers and the supervisor: requests go in over a
//! channel, the supervisor (the single owner of state) answers each one.
//! Every request carries a reply channel of its own answer's type.

use corral_proto::{Action, Endpoint, ErrorBody, ReloadResult, ServiceStatus};
use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

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
    /// Lifecycle changes from now on.
    Subscribe {
        reply: Reply<Feed>,
    },
}

/// Events a subscriber may have waiting: a burst of this many (a `down`
/// of 1,000 services says 2,000 things at once) reaches a client whole.
const FEED_CAPACITY: usize = 4096;

/// The supervisor's end of one subscription to lifecycle changes.
pub struct Subscriber {
    tx: mpsc::Sender<corral_proto::Event>,
    missed: Arc<AtomicU64>,
}

/// A client's end: every event, or how many it missed.
#[derive(Debug)]
pub struct Feed {
    rx: mpsc::Receiver<corral_proto::Event>,
    missed: Arc<AtomicU64>,
}

/// A new subscription: the supervisor keeps the one, a client the other.
pub fn subscription() -> (Subscriber, Feed) {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    let missed = Arc::new(AtomicU64::new(0));
    let feed = Feed {
        rx,
        missed: missed.clone(),
    };
    (Subscriber { tx, missed }, feed)
}

impl Subscriber {
    /// Hands `event` over, or counts it missed when the client is that far
    /// behind; false once the client is gone.
    pub fn offer(&self, event: &corral_proto::Event) -> bool {
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl Feed {
    /// The next event, or Err(how many did not fit while the queue was
    /// full) once the events queued before them are given: the marker
    /// stands where they would have been. None once the supervisor is gone.
    pub async fn recv(&mut self) -> Option<Result<corral_proto::Event, u64>> {
        use mpsc::error::TryRecvError;
        match self.rx.try_recv() {
            Ok(event) => return Some(Ok(event)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        match self.missed.swap(0, Ordering::Relaxed) {
            0 => self.rx.recv().await.map(Ok),
            missed => Some(Err(missed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> corral_proto::Event {
        corral_proto::Event {
            time: n as f64,
            service: None,
            state: None,
            message: n.to_string(),
            kind: None,
            missed: None,
        }
    }

    /// A client that does not read: what does not fit is counted, and told
    /// after what was queued before it.
    #[tokio::test(flavor = "current_thread")]
    async fn what_does_not_fit_is_counted_and_told_in_its_place() {
        let (subscriber, mut feed) = subscription();
        for n in 0..FEED_CAPACITY + 10 {
            assert!(subscriber.offer(&event(n)));
        }
        for n in 0..FEED_CAPACITY {
            let got = feed.recv().await.and_then(Result::ok).map(|e| e.message);
            assert_eq!(got, Some(n.to_string()));
        }
        assert_eq!(feed.recv().await.map(|r| r.err()), Some(Some(10)));
        assert!(subscriber.offer(&event(1)));
        drop(subscriber);
        assert!(matches!(feed.recv().await, Some(Ok(_))));
        assert!(feed.recv().await.is_none());
    }
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
    /// Who this daemon is (`GET /v1/version`).
    pub identity: std::sync::Arc<corral_proto::Version>,
    /// What the last reading of /proc found, for CPU shares and counters.
    pub usage: std::sync::Arc<super::usage::Sampler>,
}

impl Api {
    /// Lifecycle changes from now on.
    pub async fn subscribe(&self) -> Result<Feed, ApiError> {
        self.call(|reply| Request::Subscribe { reply }).await
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
