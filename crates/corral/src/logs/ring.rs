//! The bounded in-memory history of one service's output, for `corral logs`.
//!
//! Output arrives in chunks of whole lines and is kept as such: one
//! allocation per chunk, no per-line work when storing. Whole chunks are
//! dropped as new ones arrive, so memory stays within the bounds plus one
//! chunk; answers apply the bounds exactly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use corral_proto::LogStream;

/// A chunk of complete lines, each ending in '\n'.
#[derive(Debug)]
struct Chunk {
    time: SystemTime,
    stream: LogStream,
    data: Arc<Vec<u8>>,
    lines: usize,
}

/// One remembered line.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub stream: LogStream,
    /// Without its newline.
    pub text: &'a [u8],
}

/// The newest lines of a service: at most `max_lines` lines and `max_bytes`
/// bytes are ever answered; the oldest go first.
#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<Chunk>,
    lines: usize,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Ring {
    pub fn new(max_lines: usize, max_bytes: usize) -> Ring {
        Ring {
            chunks: VecDeque::new(),
            lines: 0,
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// The most lines and bytes it answers with.
    pub fn bounds(&self) -> (usize, usize) {
        (self.max_lines, self.max_bytes)
    }

    /// Remembers a chunk of complete lines (shared, not copied); `lines` is
    /// how many it holds, when the caller counted them already.
    pub fn push(
        &mut self,
        time: SystemTime,
        stream: LogStream,
        data: Arc<Vec<u8>>,
        lines: Option<usize>,
    ) {
        if self.max_lines == 0 || self.max_bytes == 0 || data.is_empty() {
            return;
        }
        let lines = lines.unwrap_or_else(|| memchr::memchr_iter(b'\n', &data).count());
        self.lines += lines;
        self.bytes += data.len();
        // Room for one chunk at first, not the four a deque starts with: a
        // quiet service keeps one event line ("started") for as long as it
        // runs, and a chatty one grows the deque as usual.
        if self.chunks.capacity() == 0 {
            self.chunks.reserve_exact(1);
        }
        self.chunks.push_back(Chunk {
            time,
            stream,
            data,
            lines,
        });
        // The oldest chunk goes once the others hold enough on their own.
        while let Some(first) = self.chunks.front() {
            let enough = self.lines - first.lines >= self.max_lines
                || self.bytes - first.data.len() >= self.max_bytes;
            if !enough {
                break;
            }
            self.lines -= first.lines;
            self.bytes -= first.data.len();
            self.chunks.pop_front();
        }
    }

    /// The last `n` lines (never more than the bounds), oldest first.
    pub fn tail(&self, n: usize) -> Vec<Entry<'_>> {
        let n = n.min(self.max_lines);
        let mut out = Vec::new();
        let mut bytes = 0;
        'chunks: for chunk in self.chunks.iter().rev() {
            let body = chunk.data.strip_suffix(b"\n").unwrap_or(&chunk.data);
            for text in body.rsplit(|&b| b == b'\n') {
                bytes += text.len() + 1;
                if out.len() == n || bytes > self.max_bytes {
                    break 'chunks;
                }
                out.push(Entry {
                    time: chunk.time,
                    stream: chunk.stream,
                    text,
                });
            }
        }
        out.reverse();
        out
    }

    /// Bytes held (at most one chunk over the bound).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(ring: &Ring, n: usize) -> Vec<String> {
        ring.tail(n)
            .iter()
            .map(|e| String::from_utf8_lossy(e.text).into_owned())
            .collect()
    }

    #[test]
    fn keeps_exactly_the_newest_lines() {
        let mut ring = Ring::new(3, 1000);
        for i in 0..10 {
            ring.push(
                SystemTime::UNIX_EPOCH,
                LogStream::Stdout,
                format!("line {i}\n").into_bytes().into(),
                None,
            );
        }
        assert_eq!(texts(&ring, 10), ["line 7", "line 8", "line 9"]);
        // A chunk of many lines is trimmed from its head.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"a\nb\nc\nd\ne\n".to_vec().into(),
            None,
        );
        assert_eq!(texts(&ring, 10), ["c", "d", "e"]);
        assert_eq!(texts(&ring, 2), ["d", "e"]);
    }

    #[test]
    fn bytes_bound_drops_old_chunks() {
        let mut ring = Ring::new(100, 10);
        for text in ["aaaa\n", "bbbb\n", "cccc\n"] {
            ring.push(
                SystemTime::UNIX_EPOCH,
                LogStream::Stdout,
                text.as_bytes().to_vec().into(),
                None,
            );
        }
        assert_eq!(texts(&ring, 10), ["bbbb", "cccc"]);
        assert_eq!(ring.bytes(), 10);
        // One big chunk is trimmed to the bound too.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"11\n22\n33\n44\n55\n".to_vec().into(),
            None,
        );
        assert_eq!(texts(&ring, 10), ["33", "44", "55"]);
        // Memory: the bound plus at most one chunk.
        assert!(ring.bytes() <= 10 + 15, "{}", ring.bytes());
        // A line larger than the whole bound is not answered.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"0123456789abc\n".to_vec().into(),
            None,
        );
        assert!(texts(&ring, 10).is_empty());
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"z\n".to_vec().into(),
            None,
        );
        assert_eq!(texts(&ring, 10), ["z"]);
    }
}
