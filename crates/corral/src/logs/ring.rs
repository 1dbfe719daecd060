//! The bounded in-memory history of one service's output, for `corral logs`.
//!
//! Output arrives in chunks of whole lines and is kept as such (one
//! allocation per chunk, not per line); the bounds are exact in lines and
//! approximate (one chunk) in bytes.

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
    /// Lines at the head of the oldest chunk that no longer count.
    skip: usize,
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
            lines: 0,
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    /// Remembers a chunk of complete lines.
    pub fn push(&mut self, time: SystemTime, stream: LogStream, data: &[u8]) {
        if self.max_lines == 0 || self.max_bytes == 0 || data.is_empty() {
            return;
        }
        let lines = memchr_count(data);
        self.lines += lines;
        self.bytes += data.len();
        self.chunks.push_back(Chunk {
            time,
            stream,
            data: data.into(),
            lines,
        });
        // Whole chunks go while what is left still holds enough.
        while let Some(first) = self.chunks.front() {
            let live = first.lines - self.skip;
            let over_lines = self.lines - live >= self.max_lines;
            let over_bytes = self.bytes > self.max_bytes && self.chunks.len() > 1;
            if !(over_lines || over_bytes) {
                break;
            }
            self.lines -= live;
            self.bytes -= first.data.len();
            self.skip = 0;
            self.chunks.pop_front();
        }
        if self.lines > self.max_lines {
            self.skip += self.lines - self.max_lines;
            self.lines = self.max_lines;
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
                format!("line {i}\n").as_bytes(),
            );
        }
        assert_eq!(texts(&ring, 10), ["line 7", "line 8", "line 9"]);
        assert_eq!(ring.len(), 3);
        // A chunk of many lines is trimmed from its head.
        ring.push(
            SystemTime::UNIX_EPOCH,
            LogStream::Stdout,
            b"a\nb\nc\nd\ne\n",
        );
        assert_eq!(texts(&ring, 10), ["c", "d", "e"]);
        assert_eq!(texts(&ring, 2), ["d", "e"]);
    }

    #[test]
    fn bytes_bound_drops_old_chunks() {
        let mut ring = Ring::new(100, 10);
        for text in ["aaaa\n", "bbbb\n", "cccc\n"] {
            ring.push(SystemTime::UNIX_EPOCH, LogStream::Stdout, text.as_bytes());
        }
        assert_eq!(texts(&ring, 10), ["bbbb", "cccc"]);
        assert_eq!(ring.bytes(), 10);
    }
}
