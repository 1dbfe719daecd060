//! Lines on their way to `logs -f` clients. A line is allocated once and
//! shared by every follower; a follower may fall at most `MAX_BEHIND` bytes
//! of output (and `MAX_LINES` lines) behind before the hub drops it, so
//! stalled followers together hold at most the last `MAX_BEHIND` bytes of
//! output, however many there are. What a connection turns into JSON for
//! its client is at most `FRAME` bytes at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use corral_proto::LogLine;
use tokio::sync::mpsc;

/// How far behind the output (bytes of line text) a follower may be.
pub const MAX_BEHIND: u64 = 8 << 20;
/// Lines a follower may have waiting.
const MAX_LINES: usize = 1024;
/// The largest piece of JSON a connection builds before it is sent.
const FRAME: usize = 4096;

/// A line and where the output stands after it.
pub struct Queued {
    line: Arc<LogLine>,
    end: u64,
}

/// The hub's end of one follower.
pub struct Tap {
    tx: mpsc::Sender<Queued>,
    /// Where the output stood after the last line the client took.
    taken: Arc<AtomicU64>,
    /// Bytes of output it was behind when the hub dropped it (0: not dropped).
    cut: Arc<AtomicU64>,
    /// Wakes the client's end when it is dropped, so the lines still queued
    /// for it go at once, not when its connection does.
    dropped: Arc<tokio::sync::Notify>,
}

/// A client's end.
pub struct Follow {
    rx: mpsc::Receiver<Queued>,
    taken: Arc<AtomicU64>,
    cut: Arc<AtomicU64>,
    dropped: Arc<tokio::sync::Notify>,
}

/// A follower whose output stands at `produced` now.
pub fn channel(produced: u64) -> (Tap, Follow) {
    let (tx, rx) = mpsc::channel(MAX_LINES);
    let taken = Arc::new(AtomicU64::new(produced));
    let cut = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(tokio::sync::Notify::new());
    let follow = Follow {
        rx,
        taken: taken.clone(),
        cut: cut.clone(),
        dropped: dropped.clone(),
    };
    (
        Tap {
            tx,
            taken,
            cut,
            dropped,
        },
        follow,
    )
}

impl Tap {
    /// Queues `lines` (the output stands at each one's `end` after it);
    /// false when the follower is gone, or too far behind and dropped.
    pub fn offer(&self, lines: &[(Arc<LogLine>, u64)]) -> bool {
        let Some(&(_, last)) = lines.last() else {
            return !self.tx.is_closed();
        };
        let behind = last.saturating_sub(self.taken.load(Ordering::Relaxed));
        for (line, end) in lines {
            if behind > MAX_BEHIND {
                break;
            }
            let queued = Queued {
                line: line.clone(),
                end: *end,
            };
            match self.tx.try_send(queued) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(_)) => break,
            }
            if *end == last {
                return true;
            }
        }
        self.cut.store(behind.max(1), Ordering::Relaxed);
        self.dropped.notify_one();
        false
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Follow {
    /// The next line; None once the hub let go (see `cut`).
    pub async fn recv(&mut self) -> Option<Arc<LogLine>> {
        let queued = self.rx.recv().await?;
        self.taken.store(queued.end, Ordering::Relaxed);
        Some(queued.line)
    }

    fn try_recv(&mut self) -> Option<Arc<LogLine>> {
        let queued = self.rx.try_recv().ok()?;
        self.taken.store(queued.end, Ordering::Relaxed);
        Some(queued.line)
    }

    /// Why the hub let go of it, if it dropped it for falling behind.
    pub fn cut(&self) -> Option<String> {
        match self.cut.load(Ordering::Relaxed) {
            0 => None,
            behind => Some(format!(
                "the daemon dropped this stream: it did not keep up ({:.1} MiB of output behind)",
                behind as f64 / f64::from(1 << 20)
            )),
        }
    }

    /// Sends every line to `tx` as JSON lines, in frames of about FRAME
    /// bytes (several short lines in one, a long line in several), until
    /// the hub lets go or the client is gone; false if the client is gone.
    /// Dropped by the hub, it stops at once, queued lines and all.
    pub async fn forward(&mut self, tx: &mpsc::Sender<Bytes>) -> bool {
        let mut frame: Vec<u8> = Vec::with_capacity(FRAME);
        let dropped = self.dropped.clone();
        loop {
            let line = tokio::select! {
                line = self.recv() => line,
                () = dropped.notified() => None,
            };
            let Some(line) = line else {
                return true;
            };
            let mut next = Some(line);
            while let Some(line) = next.take() {
                for piece in json_pieces(&line) {
                    frame.extend_from_slice(&piece);
                    if frame.len() >= FRAME {
                        match self.send(tx, &mut frame).await {
                            Some(true) => {}
                            Some(false) => return false,
                            None => return true,
                        }
                    }
                }
                // More waiting: into the same frame.
                next = self.try_recv().filter(|_| frame.len() < FRAME);
            }
            if !frame.is_empty() {
                match self.send(tx, &mut frame).await {
                    Some(true) => {}
                    Some(false) => return false,
                    None => return true,
                }
            }
        }
    }

    /// Sends the frame: Some(false) if the client is gone, None if the hub
    /// dropped this follower meanwhile.
    async fn send(&self, tx: &mpsc::Sender<Bytes>, frame: &mut Vec<u8>) -> Option<bool> {
        tokio::select! {
            sent = tx.send(take(frame)) => Some(sent.is_ok()),
            () = self.dropped.notified() => None,
        }
    }
}

fn take(frame: &mut Vec<u8>) -> Bytes {
    Bytes::from(std::mem::replace(frame, Vec::with_capacity(FRAME)))
}

/// `line` as one JSON line (`{"time":..,"service":..,"stream":..,"line":".."}`),
/// in pieces of about FRAME bytes: the text is escaped a piece at a time
/// (JSON escapes one character at a time, so pieces split anywhere between
/// characters join to the whole).
pub fn json_pieces(line: &LogLine) -> impl Iterator<Item = Vec<u8>> + '_ {
    let head = format!(
        "{{\"time\":{},\"service\":{},\"stream\":{},\"line\":\"",
        serde_json::to_string(&line.time).unwrap_or_else(|_| "0".into()),
        serde_json::to_string(&line.service).unwrap_or_default(),
        serde_json::to_string(&line.stream).unwrap_or_default(),
    );
    let text = line.line.as_str();
    let mut at = 0;
    let mut head = Some(head.into_bytes());
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut piece = head.take().unwrap_or_default();
        let mut end = (at + FRAME).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let escaped = serde_json::to_string(&text[at..end]).unwrap_or_default();
        // Without its quotes.
        piece.extend_from_slice(&escaped.as_bytes()[1..escaped.len().saturating_sub(1)]);
        at = end;
        if at >= text.len() {
            piece.extend_from_slice(b"\"}\n");
            done = true;
        }
        Some(piece)
    })
}

/// Where the output stands, counted by the hub as lines go to followers.
#[derive(Default)]
pub struct Produced(u64);

impl Produced {
    /// Moves past `line`; returns where the output stands after it.
    pub fn advance(&mut self, line: &LogLine) -> u64 {
        self.0 += line.line.len() as u64 + 1;
        self.0
    }

    pub fn now(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            time: 1.5,
            service: "web \"1\"".into(),
            stream: corral_proto::LogStream::Stderr,
            line: text.into(),
        }
    }

    #[test]
    fn pieces_join_to_the_json_of_the_line() {
        for text in [
            "",
            "plain",
            "quote \" backslash \\ tab \t é 日本",
            &"é日x\u{1}".repeat(5000),
        ] {
            let l = line(text);
            let joined: Vec<u8> = json_pieces(&l).flatten().collect();
            assert_eq!(joined.last(), Some(&b'\n'));
            let back: LogLine = serde_json::from_slice(&joined).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, l);
            assert!(json_pieces(&l).all(|p| p.len() <= FRAME * 6 + 128));
        }
    }

    #[test]
    fn a_follower_too_far_behind_is_dropped_and_told() {
        let mut produced = Produced::default();
        let (tap, mut follow) = channel(produced.now());
        let big = Arc::new(line(&"x".repeat(64 * 1024)));
        let mut offered = 0;
        loop {
            let end = produced.advance(&big);
            if !tap.offer(&[(big.clone(), end)]) {
                break;
            }
            offered += 1;
        }
        // 8 MiB of 64 KiB lines, then dropped.
        assert_eq!(offered, MAX_BEHIND / (64 * 1024 + 1));
        assert!(follow
            .cut()
            .is_some_and(|c| c.contains("did not keep up (8.0 MiB of output behind)")));
        assert!(follow.rx.try_recv().is_ok());
    }
}
