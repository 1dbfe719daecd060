//! Network probes (tcp, http), run as tasks on the event loop with a timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Connects to "host:port".
pub async fn tcp(addr: &str, limit: Duration) -> Result<(), String> {
    match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("tcp {addr}: {e}")),
        Err(_) => Err(format!("tcp {addr}: no connection within {limit:?}")),
    }
}

/// GETs `url`; passes on a status in `accepted` (any 2xx when it is empty).
pub async fn http(url: &str, accepted: &[u16], limit: Duration) -> Result<(), String> {
    match timeout(limit, get_status(url)).await {
        Ok(Ok(status)) if accepted.is_empty() && (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) if accepted.contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("http {url}: status {status}")),
        Ok(Err(e)) => Err(format!("http {url}: {e}")),
        Err(_) => Err(format!("http {url}: no answer within {limit:?}")),
    }
}

async fn get_status(url: &str) -> Result<u16, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let host = uri.host().ok_or("URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "corral-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    tokio::pin!(conn);
    // Drive the connection until the response head arrives; dropping it closes
    // the connection without reading the body.
    tokio::select! {
        response = sender.send_request(request) => {
            response.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
        }
        closed = &mut conn => Err(match closed {
            Ok(()) => "connection closed before an answer".to_string(),
            Err(e) => e.to_string(),
        }),
    }
}
