//! Reads one pipe of a service and hands its output to the log hub in chunks
//! of whole lines, so the cost per line stays small.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

use corral_proto::LogStream;
use tokio::net::unix::pipe;

use super::hub::{HubHandle, Line};

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

/// Forwards everything from `fd` until EOF as chunks of complete lines (each
/// ending in '\n'); a last line without a newline is completed at EOF. Waits
/// (stops reading, so the service blocks in write) while the hub is behind.
pub async fn pump(
    fd: OwnedFd,
    svc: usize,
    stream: LogStream,
    hub: HubHandle,
    mut watch: Option<LogWatch>,
    max_line: usize,
) {
    let Ok(rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if rx.readable().await.is_err() {
            break;
        }
        let mut chunk = None;
        let read = SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            let r = rx.try_read(&mut buf[..]);
            if let Ok(n) = r {
                chunk = complete_lines(&mut partial, &buf[..n], max_line);
            }
            r
        });
        if let Some(data) = chunk {
            if let Some(w) = &watch {
                if data
                    .split(|&b| b == b'\n')
                    .any(|line| w.regex.is_match(&String::from_utf8_lossy(line)))
                {
                    (w.on_match)();
                    watch = None;
                }
            }
            let line = Line::Output {
                svc,
                stream,
                time: SystemTime::now(),
                data,
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
        partial.push(b'\n');
        let line = Line::Output {
            svc,
            stream,
            time: SystemTime::now(),
            data: partial,
        };
        let _ = hub.send(line).await;
    }
}

/// Takes the complete lines out of `partial` + `data` as one chunk, leaving
/// the unfinished tail in `partial`. A line longer than `max` is cut: its
/// first `max` bytes become a line of their own.
fn complete_lines(partial: &mut Vec<u8>, data: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let take = |out: &mut Option<Vec<u8>>, bytes: &[u8]| {
        out.get_or_insert_with(|| Vec::with_capacity(bytes.len()))
            .extend_from_slice(bytes);
    };
    let mut rest = data;
    match memchr::memrchr(b'\n', rest) {
        Some(last) if partial.is_empty() => {
            take(&mut out, &rest[..=last]);
            rest = &rest[last + 1..];
        }
        Some(last) => {
            let mut chunk = std::mem::take(partial);
            chunk.extend_from_slice(&rest[..=last]);
            rest = &rest[last + 1..];
            out = Some(chunk);
        }
        None => {}
    }
    partial.extend_from_slice(rest);
    // Cut overlong lines, both inside the chunk and in the unfinished tail.
    if let Some(chunk) = out.take() {
        out = Some(cut_long_lines(chunk, max));
    }
    while partial.len() >= max {
        let tail = partial.split_off(max);
        let mut piece = std::mem::replace(partial, tail);
        piece.push(b'\n');
        take(&mut out, &piece);
    }
    out
}

/// Inserts a newline after every `max` bytes of a line (rarely needed).
fn cut_long_lines(chunk: Vec<u8>, max: usize) -> Vec<u8> {
    let mut start = 0;
    let mut long = false;
    for end in memchr::memchr_iter(b'\n', &chunk) {
        long |= end - start > max;
        start = end + 1;
    }
    if !long && chunk.len() - start <= max {
        return chunk;
    }
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / max + 1);
    for line in chunk.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        for piece in body.chunks(max) {
            out.extend_from_slice(piece);
            out.push(b'\n');
        }
        if body.is_empty() {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_unfinished_tail_for_later() {
        let mut partial = Vec::new();
        assert_eq!(
            complete_lines(&mut partial, b"a\nbc\nd", 100),
            Some(b"a\nbc\n".to_vec())
        );
        assert_eq!(partial, b"d");
        assert_eq!(complete_lines(&mut partial, b"e", 100), None);
        assert_eq!(
            complete_lines(&mut partial, b"f\ng", 100),
            Some(b"def\n".to_vec())
        );
        assert_eq!(partial, b"g");
    }

    #[test]
    fn cuts_overlong_lines() {
        let mut partial = Vec::new();
        let chunk = complete_lines(&mut partial, &[b'x'; 25], 10).unwrap_or_default();
        assert_eq!(chunk, b"xxxxxxxxxx\nxxxxxxxxxx\n");
        assert_eq!(partial.len(), 5);
        let chunk = complete_lines(&mut Vec::new(), b"abcdefghijkl\nok\n\n", 5).unwrap_or_default();
        assert_eq!(chunk, b"abcde\nfghij\nkl\nok\n\n");
    }
}
