//! Reads a process's two output pipes (stdout and stderr, in one task) and
//! hands what they carry to the log hub in chunks of whole lines, so the cost
//! per line stays small.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

use corral_proto::LogStream;
use tokio::net::unix::pipe;

use super::hub::{HubHandle, Line};

/// How much one read takes at most (a default pipe holds 64 KiB).
const READ_SIZE: usize = 64 * 1024;

/// Watches a service's output for the line that says it is ready.
pub struct LogWatch {
    pub regex: Arc<regex_lite::Regex>,
    /// Called once, on the first matching line (of either stream).
    pub on_match: Arc<dyn Fn() + Send + Sync>,
}

/// One output pipe of a process and its unfinished last line.
struct Reader {
    rx: pipe::Receiver,
    stream: LogStream,
    partial: Vec<u8>,
}

/// Waits until the reader has something (never, for a reader that is gone).
async fn readable(reader: &Option<Reader>) -> std::io::Result<()> {
    match reader {
        Some(r) => r.rx.readable().await,
        None => std::future::pending().await,
    }
}

/// Forwards everything from a process's stdout and stderr until both reach
/// EOF, as chunks of complete lines (each ending in '\n'); a last line
/// without a newline is completed at EOF. Waits (stops reading, so the
/// service blocks in write) while the hub is behind. One task serves both
/// pipes, so a process costs one task.
pub async fn pump(
    pipes: [(Option<OwnedFd>, LogStream); 2],
    svc: usize,
    hub: HubHandle,
    mut watch: Option<LogWatch>,
    max_line: usize,
) {
    let mut readers = pipes.map(|(fd, stream)| {
        let rx = pipe::Receiver::from_owned_fd(fd?).ok()?;
        Some(Reader {
            rx,
            stream,
            partial: Vec::new(),
        })
    });
    while readers.iter().any(Option::is_some) {
        let (which, ready) = tokio::select! {
            r = readable(&readers[0]) => (0, r),
            r = readable(&readers[1]) => (1, r),
        };
        let Some(reader) = readers[which].as_mut() else {
            continue;
        };
        let stream = reader.stream;
        let mut done = ready.is_err();
        let mut chunk = None;
        if !done {
            // Read straight into the buffer that becomes the chunk, behind the
            // unfinished line of the last read: the bytes are copied only once.
            let mut buf = Vec::with_capacity(reader.partial.len() + READ_SIZE);
            buf.append(&mut reader.partial);
            match reader.rx.try_read_buf(&mut buf) {
                Ok(n) if n > 0 => chunk = split_complete(buf, &mut reader.partial, max_line),
                read => {
                    reader.partial = buf;
                    reader.partial.shrink_to_fit();
                    done =
                        !matches!(read, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
                }
            }
        }
        if done {
            // EOF (or a broken pipe): the unfinished line is the last one.
            let mut rest = std::mem::take(&mut reader.partial);
            readers[which] = None;
            if !rest.is_empty() {
                rest.push(b'\n');
                chunk = Some(rest);
            }
        }
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
    }
}

/// Splits `buf` (the last unfinished line followed by new bytes) into a
/// chunk of complete lines, returned, and the new unfinished tail, left in
/// `partial`. A line longer than `max` is cut: its first `max` bytes become
/// a line of their own.
fn split_complete(mut buf: Vec<u8>, partial: &mut Vec<u8>, max: usize) -> Option<Vec<u8>> {
    let mut out = match memchr::memrchr(b'\n', &buf) {
        Some(last) => {
            partial.extend_from_slice(&buf[last + 1..]);
            buf.truncate(last + 1);
            // The chunk may be kept in the ring: a few lines must not hold on
            // to the whole read buffer.
            if buf.capacity() > 2 * buf.len() + 4096 {
                buf.shrink_to_fit();
            }
            Some(cut_long_lines(buf, max))
        }
        None => {
            *partial = buf;
            partial.shrink_to_fit();
            None
        }
    };
    while partial.len() >= max {
        let tail = partial.split_off(max);
        let mut piece = std::mem::replace(partial, tail);
        piece.push(b'\n');
        out.get_or_insert_with(Vec::new).extend_from_slice(&piece);
    }
    out
}

/// Inserts a newline after every `max` bytes of a line (rarely needed).
fn cut_long_lines(chunk: Vec<u8>, max: usize) -> Vec<u8> {
    if chunk.len() <= max {
        return chunk;
    }
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

    /// What the pump does: the unfinished line, then the new bytes.
    fn feed(partial: &mut Vec<u8>, data: &[u8], max: usize) -> Option<Vec<u8>> {
        let mut buf = std::mem::take(partial);
        buf.extend_from_slice(data);
        split_complete(buf, partial, max)
    }

    #[test]
    fn a_small_chunk_does_not_keep_the_read_buffer() {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"one short line\n");
        let chunk = split_complete(buf, &mut Vec::new(), 1024).unwrap_or_default();
        assert!(chunk.capacity() < 1024, "capacity {}", chunk.capacity());
    }

    #[test]
    fn keeps_the_unfinished_tail_for_later() {
        let mut partial = Vec::new();
        assert_eq!(
            feed(&mut partial, b"a\nbc\nd", 100),
            Some(b"a\nbc\n".to_vec())
        );
        assert_eq!(partial, b"d");
        assert_eq!(feed(&mut partial, b"e", 100), None);
        assert_eq!(feed(&mut partial, b"f\ng", 100), Some(b"def\n".to_vec()));
        assert_eq!(partial, b"g");
    }

    #[test]
    fn cuts_overlong_lines() {
        let mut partial = Vec::new();
        let chunk = feed(&mut partial, &[b'x'; 25], 10).unwrap_or_default();
        assert_eq!(chunk, b"xxxxxxxxxx\nxxxxxxxxxx\n");
        assert_eq!(partial.len(), 5);
        let chunk = feed(&mut Vec::new(), b"abcdefghijkl\nok\n\n", 5).unwrap_or_default();
        assert_eq!(chunk, b"abcde\nfghij\nkl\nok\n\n");
    }
}
