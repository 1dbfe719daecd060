//! Reads one pipe of a service and sends its lines to the log hub.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::net::unix::pipe;

use std::time::SystemTime;

use corral_proto::LogStream;

use super::hub::{HubHandle, Line};

/// Lines longer than this are cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;

thread_local! {
    /// One read buffer for every pipe: the event loop is single-threaded, and
    /// the buffer is never held across an await, so idle services cost no buffer.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// Watches a service's output for the line that says it is ready.
pub struct LogWatch {
    pub regex: Arc<regex_lite::Regex>,
    /// Called once, on the first matching line (of either stream).
    pub on_match: Arc<dyn Fn() + Send + Sync>,
}

/// Forwards every line from `fd` until EOF; a final line without a newline is
/// forwarded too. Waits (stops reading) while the hub is behind.
pub async fn pump(
    fd: OwnedFd,
    svc: usize,
    stream: LogStream,
    hub: HubHandle,
    mut watch: Option<LogWatch>,
) {
    let Ok(rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if rx.readable().await.is_err() {
            break;
        }
        let mut lines = Vec::new();
        let read = SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            let r = rx.try_read(&mut buf[..]);
            if let Ok(n) = r {
                split_lines(&mut partial, &buf[..n], &mut lines);
            }
            r
        });
        for text in lines {
            if let Some(w) = &watch {
                if w.regex.is_match(&String::from_utf8_lossy(&text)) {
                    (w.on_match)();
                    watch = None;
                }
            }
            let time = SystemTime::now();
            let line = Line::Output {
                svc,
                stream,
                time,
                text,
            };
            if hub.send(line).await.is_err() {
                return;
            }
        }
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    if !partial.is_empty() {
        let line = Line::Output {
            svc,
            stream,
            time: SystemTime::now(),
            text: partial,
        };
        let _ = hub.send(line).await;
    }
}

/// Appends `data` to `partial`, moving each complete line (or MAX_LINE piece) into `lines`.
fn split_lines(partial: &mut Vec<u8>, data: &[u8], lines: &mut Vec<Vec<u8>>) {
    let mut rest = data;
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        partial.extend_from_slice(&rest[..pos]);
        lines.push(std::mem::take(partial));
        rest = &rest[pos + 1..];
    }
    partial.extend_from_slice(rest);
    while partial.len() >= MAX_LINE {
        let tail = partial.split_off(MAX_LINE);
        lines.push(std::mem::replace(partial, tail));
    }
    if partial.is_empty() {
        // Give back the capacity of a big line once it is done.
        partial.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_lines_and_keeps_the_rest() {
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        split_lines(&mut partial, b"a\nbc\nd", &mut lines);
        assert_eq!(lines, vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(partial, b"d");
        lines.clear();
        split_lines(&mut partial, b"e\n", &mut lines);
        assert_eq!(lines, vec![b"de".to_vec()]);
    }

    #[test]
    fn cuts_overlong_lines() {
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        split_lines(&mut partial, &vec![b'x'; MAX_LINE * 2 + 5], &mut lines);
        assert_eq!(lines.len(), 2);
        assert_eq!(partial.len(), 5);
    }
}
