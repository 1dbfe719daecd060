//! Response bodies: a whole JSON document, or a stream of JSON lines.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// A response body.
pub enum ApiBody {
    Full(Option<Bytes>),
    /// Newline-delimited JSON, one chunk per line, until the sender is dropped.
    Lines(mpsc::Receiver<Bytes>),
    /// `/v1/logs`: JSON lines made as the connection takes them.
    Logs(Box<crate::logs::follow::Stream>),
}

impl ApiBody {
    pub fn json<T: serde::Serialize>(value: &T) -> ApiBody {
        let mut bytes = serde_json::to_vec(value).unwrap_or_default();
        bytes.push(b'\n');
        ApiBody::Full(Some(Bytes::from(bytes)))
    }
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ApiBody::Lines(rx) => rx.poll_recv(cx).map(|o| o.map(|d| Ok(Frame::data(d)))),
            ApiBody::Logs(stream) => stream.poll_next(cx).map(|o| o.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ApiBody::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ApiBody::Full(data) => {
                http_body::SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ApiBody::Lines(_) | ApiBody::Logs(_) => http_body::SizeHint::default(),
        }
    }
}
