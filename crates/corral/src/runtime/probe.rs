//! Network probes (tcp, http), run as tasks on the event loop with a timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
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
    let addr = format!("{host}:{port}");
    let stream = crate::tcp::Conn::connect(&addr, None, None)
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
        // Full, as etcd's gateway client sends: one copy of hyper's client
        // for both.
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request);
    tokio::pin!(conn, response);
    // Drive the connection until the response head arrives; dropping it closes
    // the connection without reading the body. An HTTP/1.0 server may close
    // the connection right after answering: the answer is still there.
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        closed = &mut conn => match closed {
            Ok(()) => response.await,
            Err(e) => return Err(e.to_string()),
        },
    };
    response
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An HTTP/1.0 server that answers with a body and closes at once, like
    /// python's http.server: the answer must count even though the connection
    /// ends as soon as it is sent.
    async fn serve_and_close(listener: TcpListener, status: u16, times: usize) {
        for _ in 0..times {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = vec![b'x'; 5000];
            let head = format!(
                "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    }

    #[tokio::test]
    async fn http_probe_accepts_an_answer_followed_by_close() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let server = tokio::spawn(serve_and_close(listener, 200, 30));
        let url = format!("http://127.0.0.1:{port}/");
        for i in 0..30 {
            let r = http(&url, &[], Duration::from_secs(2)).await;
            assert_eq!(r, Ok(()), "probe {i}");
        }
        let _ = server.await;
    }

    #[tokio::test]
    async fn http_probe_checks_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let server = tokio::spawn(serve_and_close(listener, 503, 2));
        let url = format!("http://127.0.0.1:{port}/");
        let r = http(&url, &[], Duration::from_secs(2)).await;
        assert!(r.is_err_and(|e| e.contains("status 503")));
        assert_eq!(http(&url, &[503], Duration::from_secs(2)).await, Ok(()));
        let _ = server.await;
    }

    #[tokio::test]
    async fn tcp_probe_reports_refusal() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().map(|a| a.port()).unwrap_or_default()
        };
        let r = tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).await;
        assert!(r.is_err_and(|e| e.contains("refused")));
    }
}
