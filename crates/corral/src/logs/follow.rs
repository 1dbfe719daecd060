//! Lines on their way to `logs -f` clients.
//!
//! A line is allocated once and shared by every follower. A follower may
//! fall at most `MAX_BEHIND` bytes of output (and `MAX_LINES` lines) behind;
//! then the hub drops it and empties its queue at once, so stalled
//! followers together hold at most the last `MAX_BEHIND` bytes of output,
//! however many there are. The client's end is the response body itself
//! (no task, no second queue): it turns lines into JSON only when hyper asks
//! for more, a few KiB at a time, and a long line without characters to
//! escape goes out by reference to the shared line, not as a copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use corral_proto::LogLine;

/// How far behind the output (bytes of line text) a follower may be.
pub const MAX_BEHIND: u64 = 8 << 20;
/// Lines a follower may have waiting.
const MAX_LINES: usize = 1024;
/// The largest piece of JSON built for a client at a time: short lines are
/// gathered up to this, longer ones are sent in pieces.
const FRAME: usize = 4096;

/// A follower's queue, shared by the hub (`Tap`) and the client (`Follow`).
#[derive(Default)]
struct Queue {
    /// Lines not taken yet, each with where the output stands after it.
    lines: VecDeque<(Arc<LogLine>, u64)>,
    /// Where the output stood after the last line the client took.
    taken: u64,
    /// Bytes of output it was behind when the hub dropped it (0: not dropped).
    cut: u64,
    /// The hub let go (corral ends).
    hub_gone: bool,
    /// The client went away.
    client_gone: bool,
    /// The client's task, waiting for a line.
    waker: Option<Waker>,
}

type Shared = Arc<Mutex<Queue>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    // Neither side panics while holding it; if one did, the queue is whole.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hub's end of one follower.
pub struct Tap(Shared);

/// The client's end.
pub struct Follow(Shared);

/// A follower whose output stands at `produced` now.
pub fn channel(produced: u64) -> (Tap, Follow) {
    let shared = Arc::new(Mutex::new(Queue {
        taken: produced,
        ..Queue::default()
    }));
    (Tap(shared.clone()), Follow(shared))
}

impl Tap {
    /// Queues `lines` (the output stands at each one's `end` after it);
    /// false when the follower is gone, or too far behind and dropped: then
    /// what was queued for it is freed now, not when its client goes.
    pub fn offer(&self, lines: &[(Arc<LogLine>, u64)]) -> bool {
        let mut queue = lock(&self.0);
        if queue.client_gone {
            return false;
        }
        let Some(&(_, last)) = lines.last() else {
            return true;
        };
        let behind = last.saturating_sub(queue.taken);
        if behind > MAX_BEHIND || queue.lines.len() + lines.len() > MAX_LINES {
            queue.cut = behind.max(1);
            queue.lines = VecDeque::new();
        } else {
            queue.lines.extend(lines.iter().cloned());
        }
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
        queue.cut == 0
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.0).client_gone
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut queue = lock(&self.0);
        queue.hub_gone = true;
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }
}

impl Follow {
    /// The next line; None once the hub let go (see `cut`).
    fn poll_line(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<LogLine>>> {
        let mut queue = lock(&self.0);
        if let Some((line, end)) = queue.lines.pop_front() {
            queue.taken = end;
            return Poll::Ready(Some(line));
        }
        if queue.cut > 0 || queue.hub_gone {
            return Poll::Ready(None);
        }
        if !queue
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            queue.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Why the hub let go of it, if it dropped it for falling behind.
    pub fn cut(&self) -> Option<String> {
        match lock(&self.0).cut {
            0 => None,
            behind => Some(format!(
                "the daemon dropped this stream: it did not keep up ({:.1} MiB of output behind)",
                behind as f64 / f64::from(1 << 20)
            )),
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let mut queue = lock(&self.0);
        queue.client_gone = true;
        queue.lines = VecDeque::new();
    }
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

/// `/v1/logs` answers that follow, open now. When the last one goes, the
/// memory a storm of slow followers took is handed back to the system
/// (glibc keeps freed memory in its arenas otherwise).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The body of a `/v1/logs` answer: the remembered lines, then (following)
/// each new one, then, if the hub dropped the follower, a line saying why.
/// JSON is made only when the connection asks for more.
pub struct Stream {
    recent: std::vec::IntoIter<LogLine>,
    follow: Option<Follow>,
    /// A long line whose text goes out in pieces, and how much of it is out.
    long: Option<(Arc<LogLine>, usize)>,
    /// The text of `long`, shared with the line, once a piece went by reference.
    long_text: Option<Bytes>,
    /// Counted in OPEN.
    counted: bool,
}

impl Stream {
    pub fn new(recent: Vec<LogLine>, follow: Option<Follow>) -> Stream {
        let counted = follow.is_some();
        if counted {
            OPEN.fetch_add(1, Ordering::Relaxed);
        }
        Stream {
            recent: recent.into_iter(),
            follow,
            long: None,
            long_text: None,
            counted,
        }
    }

    /// The next piece of the answer (whole JSON lines, or a piece of a long
    /// one); None at its end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.long.is_some() {
            return Poll::Ready(Some(self.long_piece()));
        }
        let mut frame = Vec::new();
        while frame.len() < FRAME {
            let line = match self.recent.next() {
                Some(line) => Arc::new(line),
                None => match self.follow.as_ref().map(|f| f.poll_line(cx)) {
                    Some(Poll::Ready(Some(line))) => line,
                    Some(Poll::Ready(None)) => {
                        // The hub let go: corral ends, or this client fell behind.
                        if let Some(error) = self.follow.take().and_then(|f| f.cut()) {
                            let cut = corral_proto::StreamCut { error };
                            let _ = serde_json::to_writer(&mut frame, &cut);
                            frame.push(b'\n');
                        }
                        break;
                    }
                    Some(Poll::Pending) if frame.is_empty() => return Poll::Pending,
                    Some(Poll::Pending) | None => break,
                },
            };
            if line.line.len() > FRAME {
                // Its head goes now, its text in the next pieces.
                frame.extend_from_slice(&json_head(&line));
                self.long = Some((line, 0));
                break;
            }
            let _ = serde_json::to_writer(&mut frame, &*line);
            frame.push(b'\n');
        }
        Poll::Ready((!frame.is_empty()).then(|| Bytes::from(frame)))
    }

    /// The next piece of the long line's text, escaped, or its end. A run
    /// of FRAME bytes or more with nothing to escape goes by reference.
    fn long_piece(&mut self) -> Bytes {
        let Some((line, at)) = self.long.as_mut() else {
            return Bytes::new();
        };
        let text = line.line.as_str();
        let start = *at;
        if start >= text.len() {
            self.long = None;
            self.long_text = None;
            return Bytes::from_static(b"\"}\n");
        }
        let mut end = (start + FRAME).min(text.len());
        let plain = |b: &u8| !needs_escape(*b);
        if text.as_bytes()[start..end].iter().all(plain) {
            end += text.as_bytes()[end..]
                .iter()
                .take_while(|b| plain(b))
                .count();
            *at = end;
            let line = line.clone();
            let shared = self
                .long_text
                .get_or_insert_with(|| Bytes::from_owner(Text(line)));
            return shared.slice(start..end);
        }
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        *at = end;
        let escaped = serde_json::to_string(&text[start..end]).unwrap_or_default();
        // Without its quotes.
        Bytes::copy_from_slice(&escaped.as_bytes()[1..escaped.len().saturating_sub(1)])
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.counted && OPEN.fetch_sub(1, Ordering::Relaxed) == 1 {
            crate::process::give_back_free_memory();
        }
    }
}

/// A line's text, as the owner of a `Bytes` that refers to it.
struct Text(Arc<LogLine>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.line.as_bytes()
    }
}

/// What JSON escapes in a string: the quote, the backslash, control characters.
fn needs_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// `line`'s JSON up to its text: `{"time":..,"service":..,"stream":..,"line":"`
/// (the fields in LogLine's order, as serde writes them).
fn json_head(line: &LogLine) -> Vec<u8> {
    format!(
        "{{\"time\":{},\"service\":{},\"stream\":{},\"line\":\"",
        serde_json::to_string(&line.time).unwrap_or_else(|_| "0".into()),
        serde_json::to_string(&line.service).unwrap_or_default(),
        serde_json::to_string(&line.stream).unwrap_or_default(),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn line(text: &str) -> LogLine {
        LogLine {
            time: 1.5,
            service: "web \"1\"".into(),
            stream: corral_proto::LogStream::Stderr,
            line: text.into(),
        }
    }

    /// Everything `stream` gives until it waits or ends, and whether it ended.
    fn drain(stream: &mut Stream) -> (Vec<Bytes>, bool) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut pieces = Vec::new();
        loop {
            match stream.poll_next(&mut cx) {
                Poll::Ready(Some(piece)) => pieces.push(piece),
                Poll::Ready(None) => return (pieces, true),
                Poll::Pending => return (pieces, false),
            }
        }
    }

    #[test]
    fn the_answer_is_the_json_of_each_line_in_small_pieces() {
        let texts = [
            String::new(),
            "plain".into(),
            "quote \" backslash \\ tab \t é 日本".into(),
            "é日x\u{1}".repeat(5000),
            "y".repeat(70_000),
            format!("{}\"{}", "a".repeat(9000), "b".repeat(3)),
        ];
        let lines: Vec<LogLine> = texts.iter().map(|t| line(t)).collect();
        let mut stream = Stream::new(lines.clone(), None);
        let (pieces, ended) = drain(&mut stream);
        assert!(ended);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let back: Vec<LogLine> = joined
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(back, lines);
        // Copies are small; a long plain run is one piece, by reference.
        assert!(pieces.iter().any(|p| p.len() >= 70_000));
        assert!(pieces
            .iter()
            .filter(|p| p.len() > FRAME * 6 + 128)
            .all(|p| p.iter().all(|&b| b == b'y')));
    }

    #[test]
    fn a_follower_too_far_behind_is_dropped_emptied_and_told() {
        let mut produced = Produced::default();
        let (tap, follow) = channel(produced.now());
        let big = Arc::new(line(&"x".repeat(64 * 1024)));
        let mut offered = 0;
        loop {
            let end = produced.advance(&big);
            if !tap.offer(&[(big.clone(), end)]) {
                break;
            }
            offered += 1;
        }
        // 8 MiB of 64 KiB lines, then dropped, and its queue freed at once.
        assert_eq!(offered, MAX_BEHIND / (64 * 1024 + 1));
        assert_eq!(Arc::strong_count(&big), 1);
        let mut stream = Stream::new(Vec::new(), Some(follow));
        let (pieces, ended) = drain(&mut stream);
        assert!(ended);
        let said = String::from_utf8_lossy(&pieces.concat()).into_owned();
        assert!(
            said.contains("did not keep up (8.0 MiB of output behind)"),
            "{said}"
        );
    }

    #[test]
    fn a_follower_waits_for_lines_and_ends_with_the_hub() {
        let mut produced = Produced::default();
        let (tap, follow) = channel(produced.now());
        let mut stream = Stream::new(vec![line("old")], Some(follow));
        let (pieces, ended) = drain(&mut stream);
        assert_eq!((pieces.len(), ended), (1, false));
        let new = Arc::new(line("new"));
        let end = produced.advance(&new);
        assert!(tap.offer(&[(new, end)]));
        let (pieces, ended) = drain(&mut stream);
        assert!(!ended && pieces.concat().ends_with(b"\"new\"}\n"));
        drop(tap);
        assert_eq!(drain(&mut stream), (Vec::new(), true));
        // The client gone, the hub is told.
        let (tap, follow) = channel(0);
        drop(follow);
        assert!(tap.is_closed());
    }
}
