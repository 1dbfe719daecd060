//! The control API server: HTTP/1.1 with JSON over a Unix socket.

pub mod api;
mod body;
pub mod metrics;
mod routes;
mod stall;
pub mod usage;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

pub use api::{Api, ApiError, Request};
use body::ApiBody;

/// The socket a daemon listens on. The runtime unlinks the path when it ends
/// (a stale file left by a crash is replaced by the next `bind`).
pub struct Socket {
    pub path: PathBuf,
    pub listener: UnixListener,
    /// Members of this group may use the API too (`socket-group`).
    pub group: Option<u32>,
    /// The `[corral] metrics` listener: TCP, `/metrics` only.
    pub metrics: Option<tokio::net::TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("corral is already running for this config (socket {0})")]
    InUse(PathBuf),
    #[error("cannot take the lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("socket-group {0:?} does not exist")]
    NoGroup(String),
    #[error("corral is already running for this config (it holds {0})")]
    Locked(PathBuf),
    #[error("cannot listen for metrics on {addr} ([corral] metrics): {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the lock that makes a daemon the only one for its config; held for
/// as long as the returned file is open. Taken before the socket is bound, so
/// of two daemons started at once only one ever replaces a stale socket.
pub fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, SocketError> {
    let io = |source| SocketError::Lock {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => SocketError::Locked(path.to_path_buf()),
            other => io(other.into()),
        },
    )
}

/// Binds the control socket: 0600, or 0660 owned by `group`. A stale socket
/// file (nobody answering) is replaced; a live one is an error.
pub fn bind(path: &Path, group: Option<&str>) -> Result<Socket, SocketError> {
    let io = |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Bind with a tight umask so there is no moment the socket is open to others.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(io)?;
    let mut socket = Socket {
        path: path.to_path_buf(),
        listener,
        group: None,
        metrics: None,
    };
    if let Some(name) = group {
        let gid = crate::config::Accounts::read()
            .gid_of(name)
            .map(nix::unistd::Gid::from_raw)
            .ok_or_else(|| SocketError::NoGroup(name.to_string()))?;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(e.into()))?;
        socket.group = Some(gid.as_raw());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    }
    Ok(socket)
}

/// Binds the `[corral] metrics` TCP listener (inside the event loop).
pub fn bind_metrics(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, SocketError> {
    let error = |source| SocketError::Metrics { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    tokio::net::TcpListener::from_std(listener).map_err(error)
}

/// At most this many scrapers at once on the metrics listener; more wait
/// in the kernel's queue for a turn.
const MAX_SCRAPERS: usize = 16;

/// Serves `GET /metrics` on the TCP listener, and nothing else: the control
/// routes stay on the socket, where only allowed users reach them.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    api: Api,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut arrivals: VecDeque<(AbortHandle, Arc<AtomicBool>, tokio::time::Instant)> =
        VecDeque::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, most likely: never spin on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Full: an idle connection makes room; else this one waits for a
        // scrape to end (and the next ones wait in the kernel's queue),
        // where closing it would reset a scraper that did nothing wrong.
        while connections.len() >= MAX_SCRAPERS && !shed_oldest_idle(&mut arrivals) {
            // Until a scrape ends, or the oldest silent one turns idle.
            let idle_at = arrivals.front().map(|(_, _, since)| *since + IDLE_AFTER);
            tokio::select! {
                _ = connections.join_next() => {}
                _ = async {
                    match idle_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
        if *stop.borrow() {
            break;
        }
        let spoke = Arc::new(AtomicBool::new(false));
        arrivals.retain(|(h, spoke, _)| !h.is_finished() && !spoke.load(Ordering::Relaxed));
        let stream = crate::tcp::Conn::Plain(stream);
        let handle = connections.spawn(connection(
            stream,
            api.clone(),
            Routes::MetricsOnly,
            Some(spoke.clone()),
        ));
        arrivals.push_back((handle, spoke, tokio::time::Instant::now()));
    }
    drop(api);
    connections.shutdown().await;
}

/// How long open connections get to finish once corral stops.
const DRAIN: Duration = Duration::from_secs(2);

/// At most this many clients at once, and never more than half the
/// descriptors corral may open: the other half stays for supervision (the
/// pipes and exec-status pipe of every spawn), whatever the clients do.
const MAX_CONNECTIONS: usize = 512;

fn connection_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(8, MAX_CONNECTIONS)
}

/// The most hyper buffers for one connection, each way.
const CONNECTION_BUFFER: usize = 8 * 1024;

/// How long a client may take to send a request's head: an idle or
/// trickling connection is closed then, and its descriptor freed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `stop` turns true, then lets open ones finish
/// (answers in flight, event streams reaching their end) and removes the socket.
pub async fn serve(mut socket: Socket, api: Api, mut stop: watch::Receiver<bool>) {
    if let Some(listener) = socket.metrics.take() {
        tokio::spawn(serve_metrics(listener, api.clone(), stop.clone()));
    }
    let mut connections = JoinSet::new();
    let limit = connection_limit();
    // Connections in the order they came, with whether they have sent a
    // request yet: the oldest silent one is closed to make room.
    let mut arrivals: VecDeque<(AbortHandle, Arc<AtomicBool>, tokio::time::Instant)> =
        VecDeque::new();
    // A descriptor kept in reserve: out of descriptors, it is given back so a
    // waiting client can be taken off the queue and closed.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    let mut pause = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = socket.listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => {
                pause = Duration::ZERO;
                stream
            }
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if out_of_fds && shed_oldest_idle(&mut arrivals) {
                    // Its descriptor is free once the aborted task is dropped.
                    tokio::task::yield_now().await;
                    continue;
                }
                if out_of_fds {
                    drop(reserve.take());
                    shed_one(&socket.listener).await;
                    reserve = std::fs::File::open("/dev/null").ok();
                }
                // Never spin on a failing accept: wait a little, longer each time.
                pause = (pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
                continue;
            }
        };
        if connections.len() >= limit && !shed_oldest_idle(&mut arrivals) {
            continue;
        }
        let routes = match peer_allowed(&stream, socket.group) {
            true => Routes::Api,
            false => Routes::Forbidden,
        };
        let spoke = Arc::new(AtomicBool::new(false));
        let stream = crate::tcp::Conn::Unix(stream);
        // Only connections still silent can be shed. An ended one's handle
        // would keep its task (~2 kB) allocated.
        arrivals.retain(|(h, spoke, _)| !h.is_finished() && !spoke.load(Ordering::Relaxed));
        let handle =
            connections.spawn(connection(stream, api.clone(), routes, Some(spoke.clone())));
        arrivals.push_back((handle, spoke, tokio::time::Instant::now()));
    }
    drop(api);
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// What a connection may ask.
#[derive(Clone, Copy)]
enum Routes {
    /// The whole API (the socket, for an allowed peer).
    Api,
    /// Nothing: the peer may not use the socket.
    Forbidden,
    /// `/metrics` only (the TCP listener).
    MetricsOnly,
}

/// Serves one connection of either listener. One function for both, so
/// hyper's server code exists once in the binary (a second instance, for
/// TCP, cost ~25 KB). `spoke` turns true at the first request.
async fn connection(
    stream: crate::tcp::Conn,
    api: Api,
    routes: Routes,
    spoke: Option<Arc<AtomicBool>>,
) {
    let service = service_fn(move |req| {
        let api = api.clone();
        if let Some(spoke) = &spoke {
            spoke.store(true, Ordering::Relaxed);
        }
        async move {
            Ok::<_, std::convert::Infallible>(match routes {
                Routes::Api => routes::route(req, api).await,
                Routes::Forbidden => forbidden(),
                Routes::MetricsOnly => routes::metrics_only(req, api).await,
            })
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        // What hyper queues for a client that does not read (its default,
        // ~400 KB, times every stalled follower); a request head is far less.
        .max_buf_size(CONNECTION_BUFFER)
        .serve_connection(TokioIo::new(stall::StallGuard::new(stream)), service)
        .await;
    // What the answers took (JSON of every status, log lines, buffers) is
    // free now but would stay resident in the heap's high-water mark.
    crate::process::give_back_free_memory();
}

/// A connection that sent nothing for this long is idle: it may be closed
/// to make room. (A younger one may have its request on the way.)
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Closes the oldest connection that has sent no request for IDLE_AFTER;
/// false if none.
fn shed_oldest_idle(
    arrivals: &mut VecDeque<(AbortHandle, Arc<AtomicBool>, tokio::time::Instant)>,
) -> bool {
    arrivals.retain(|(handle, spoke, _)| !handle.is_finished() && !spoke.load(Ordering::Relaxed));
    match arrivals.front() {
        Some((_, _, since)) if since.elapsed() >= IDLE_AFTER => {
            if let Some((handle, _, _)) = arrivals.pop_front() {
                handle.abort();
            }
            true
        }
        _ => false,
    }
}

/// Takes one waiting client off the queue, if there is one, and closes it.
async fn shed_one(listener: &UnixListener) {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(Ok((stream, _))) = listener.poll_accept(cx) {
            drop(stream);
        }
        std::task::Poll::Ready(())
    })
    .await;
}

/// Only root, the user corral runs as and members of `socket-group` may use the API.
fn peer_allowed(stream: &UnixStream, group: Option<u32>) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    if cred.uid() == 0 || cred.uid() == me {
        return true;
    }
    let Some(group) = group else {
        return false;
    };
    cred.gid() == group || member_of(cred.uid(), group)
}

/// Whether the user with this uid is in the group (supplementary groups included).
fn member_of(uid: u32, group: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    std::ffi::CString::new(user.name)
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
        .is_some_and(|groups| groups.iter().any(|g| g.as_raw() == group))
}

fn forbidden() -> hyper::Response<ApiBody> {
    let body = corral_proto::ErrorBody {
        error: "permission denied: only root, the user corral runs as and members of its \
                [corral] socket-group may use this socket"
            .into(),
        known: Vec::new(),
        details: Vec::new(),
    };
    let mut response = hyper::Response::new(ApiBody::json(&body));
    *response.status_mut() = hyper::StatusCode::FORBIDDEN;
    response
}
