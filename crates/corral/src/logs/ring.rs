//! The bounded in-memory history of one service's output, for `corral logs`.
//!
//! Output arrives in chunks of whole lines and is kept as such (one
//! allocation per chunk, not per line); both bounds are exact: the head of
//! the oldest chunk is skipped line by line.

use std::collections::VecDeque;
use std::time::SystemTime;

use corral_proto::LogStream;

/// A chunk of complete lines, each ending in '\n'.
#[derive(Debug)]
struct Chunk {
    time: SystemTime,
    stream: LogStream,
    data: Box<[u8]>,
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

/// The newest lines of a service, at most `max_lines` lines and about
/// `max_bytes` bytes: the oldest go first, so memory stays bounded however
/// much a service writes.
#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<Chunk>,
    /// Lines (and their bytes) at the head of the oldest chunk that no longer count.
    skip: usize,
    skip_bytes: usize,
    lines: usize,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Ring {
    pub fn new(max_lines: usize, max_bytes: usize) -> Ring {
        Ring {
            chunks: VecDeque::new(),
            skip: 0,
            skip_bytes: 0,
            lines: 0,
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// Remembers a chunk of complete lines (taking it over: no copy).
    pub fn push(&mut self, time: SystemTime, stream: LogStream, data: Vec<u8>) {
        if self.max_lines == 0 || self.max_bytes == 0 || data.is_empty() {
            return;
        }
        let lines = memchr_count(&data);
        self.lines += lines;
        self.bytes += data.len();
        self.chunks.push_back(Chunk {
            time,
            stream,
            data: data.into_boxed_slice(),
            lines,
        });
        // Whole chunks go while the rest is still over a bound...
        while let Some(first) = self.chunks.front() {
            let live_lines = first.lines - self.skip;
            let live_bytes = first.data.len() - self.skip_bytes;
            let over = self.lines - live_lines >= self.max_lines
                || self.bytes - live_bytes >= self.max_bytes;
            if !over || self.chunks.len() == 1 {
                break;
            }
            self.lines -= live_lines;
            self.bytes -= live_bytes;
            self.skip = 0;
            self.skip_bytes = 0;
            self.chunks.pop_front();
        }
        // ...then single lines at the head of the oldest one.
        while self.lines > self.max_lines || self.bytes > self.max_bytes {
            let Some(first) = self.chunks.front() else {
                break;
            };
            let rest = &first.data[self.skip_bytes..];
            let len = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            self.skip += 1;
            self.skip_bytes += len;
            self.lines -= 1;
            self.bytes -= len;
            if self.skip == first.lines {
                self.chunks.pop_front();
                self.skip = 0;
                self.skip_bytes = 0;
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<Entry<'_>> {
        let mut out = Vec::new();
        for (i, chunk) in self.chunks.iter().enumerate().rev() {
            let skip = if i == 0 { self.skip } else { 0 };
            let lines: Vec<&[u8]> = chunk
                .data
                .strip_suffix(b"\n")
                .unwrap_or(&chunk.data)
                .split(|&b| b == b'\n')
                .skip(skip)
                .collect();
            for text in lines.into_iter().rev() {
                if out.len() == n {
                    break;
                }
                out.push(Entry {
                    time: chunk.time,
                    stream: chunk.stream,
                    text,
                });
            }
            if out.len() == n {
                break;
            }
        }
        out.reverse();
        out
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lines
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn memchr_count(data: &[u8]) -> usize {
    data.iter().filter(|&&b| b == b'\n').count()
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
                format!("line {i}\n").into_bytes(),
            );
        }
        assert_eq!(texts(&ring, 10), ["line 7", "line 8", "line 9"]);
        assert_eq!(ring.len(), 3);
        // A chunk of many lines is trimmed from its head.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"a\nb\nc\nd\ne\n".to_vec(),
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
                text.as_bytes().to_vec(),
            );
        }
        assert_eq!(texts(&ring, 10), ["bbbb", "cccc"]);
        assert_eq!(ring.bytes(), 10);
        // One big chunk is trimmed to the bound too.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"11\n22\n33\n44\n55\n".to_vec(),
        );
        assert_eq!(texts(&ring, 10), ["33", "44", "55"]);
        assert_eq!(ring.bytes(), 9);
        // A line larger than the whole bound is not kept.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"0123456789abc\n".to_vec(),
        );
        assert_eq!(ring.len(), 0);
        ring.push(SystemTime::UNIX_EPOCH, LogStream::Stdout, b"z\n".to_vec());
        assert_eq!(texts(&ring, 10), ["z"]);
    }
}
