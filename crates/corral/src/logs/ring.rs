//! The bounded in-memory history of one service's output, for `corral logs`.

use std::collections::VecDeque;
use std::time::SystemTime;

use corral_proto::LogStream;

/// One remembered line.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: SystemTime,
    pub stream: LogStream,
    pub text: Box<[u8]>,
}

/// The newest lines of a service, bounded by count and by bytes: the oldest
/// go first, so memory stays bounded however much a service writes.
#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
}

impl Ring {
    pub fn new(max_lines: usize, max_bytes: usize) -> Ring {
        Ring {
            entries: VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
        }
    }

    pub fn push(&mut self, entry: Entry) {
        if self.max_lines == 0 || entry.text.len() > self.max_bytes {
            return;
        }
        self.bytes += entry.text.len();
        self.entries.push_back(entry);
        while self.entries.len() > self.max_lines || self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.text.len(),
                None => break,
            }
        }
    }

    /// The last `n` entries, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .skip(self.entries.len().saturating_sub(n))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            stream: LogStream::Stdout,
            text: text.as_bytes().into(),
        }
    }

    #[test]
    fn keeps_the_newest_lines_within_both_bounds() {
        let mut ring = Ring::new(3, 1000);
        for i in 0..10 {
            ring.push(entry(&format!("line {i}")));
        }
        let kept: Vec<String> = ring
            .tail(10)
            .map(|e| String::from_utf8_lossy(&e.text).into())
            .collect();
        assert_eq!(kept, ["line 7", "line 8", "line 9"]);
        let mut ring = Ring::new(100, 10);
        for text in ["aaaa", "bbbb", "cccc"] {
            ring.push(entry(text));
        }
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.bytes(), 8);
        assert_eq!(ring.tail(1).count(), 1);
    }
}
