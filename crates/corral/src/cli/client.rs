//! The CLI's side of the control API: HTTP/1.1 over the daemon's Unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use corral_proto::{ErrorBody, PREFIX};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::CliError;

/// How long to wait for the daemon to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection target: the daemon's socket.
#[derive(Clone)]
pub struct Client {
    pub socket: PathBuf,
    /// The directory the daemon was looked up for (for messages).
    pub dir: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf, dir: &Path) -> Client {
        Client {
            socket,
            dir: dir.to_path_buf(),
        }
    }

    fn no_daemon(&self) -> CliError {
        CliError::NoDaemon {
            dir: self.dir.clone(),
            socket: self.socket.clone(),
        }
    }

    /// Sends one request; the response body is left to the caller.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, CliError> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(CliError::Denied(self.socket.clone()))
                }
                _ => return Err(self.no_daemon()),
            };
        let stream = crate::tcp::Conn::Unix(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| self.no_daemon())?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{path}"))
            .header(hyper::header::HOST, "corral")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| CliError::Closed(e.to_string()))
    }

    /// Sends a request and decodes a JSON answer; error statuses become CliError::Api.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, CliError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Protocol(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Protocol(format!("unexpected answer: {e}")))
    }

    /// Sends a request and calls `each` for every JSON line of the streamed answer.
    pub async fn lines<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        each: impl FnMut(T),
    ) -> Result<(), CliError> {
        self.open_lines(method, path).await?.each(each).await
    }

    /// Sends a request and returns once its answer has begun: for `/events`,
    /// the daemon has subscribed this client by then, so nothing that happens
    /// afterwards is missed.
    pub async fn open_lines(&self, method: Method, path: &str) -> Result<Lines, CliError> {
        let response = self.send(method, path, None).await?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| CliError::Protocol(e.to_string()))?
                .to_bytes();
            return Err(api_error(status.as_u16(), &bytes));
        }
        Ok(Lines { body })
    }
}

/// A streamed answer of newline-delimited JSON.
pub struct Lines {
    body: Incoming,
}

impl Lines {
    /// Calls `each` for every line until the daemon closes the stream.
    pub async fn each<T: serde::de::DeserializeOwned>(
        mut self,
        mut each: impl FnMut(T),
    ) -> Result<(), CliError> {
        let mut pending: Vec<u8> = Vec::new();
        // The stream ends when the daemon closes it (or goes away, for `down`).
        while let Some(Ok(frame)) = self.body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if let Ok(cut) = serde_json::from_slice::<corral_proto::StreamCut>(&line) {
                    return Err(CliError::Failed(cut.error));
                }
                if let Ok(value) = serde_json::from_slice(&line) {
                    each(value);
                }
            }
        }
        Ok(())
    }
}

/// An error answer: the daemon's ErrorBody, or whatever text came back.
fn api_error(status: u16, bytes: &[u8]) -> CliError {
    let body: ErrorBody = serde_json::from_slice(bytes).unwrap_or_else(|_| ErrorBody {
        error: String::from_utf8_lossy(bytes).trim().to_string(),
        known: Vec::new(),
        details: Vec::new(),
    });
    CliError::Api { status, body }
}
