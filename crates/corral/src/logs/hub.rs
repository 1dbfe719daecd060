//! The log hub: one thread that receives every line and fans it out to the
//! console, the per-service rings and `logs -f` followers.
//!
//! Service output reaches it through a bounded channel, so a blocked stdout
//! stops the pipe readers (and then the services) instead of growing memory;
//! the event loop itself never blocks on it.

use std::cell::Cell;
use std::io::{self, BufWriter};
use std::thread::JoinHandle;
use std::time::SystemTime;

use corral_proto::{LogLine, LogStream};
use tokio::sync::{mpsc, oneshot};

use super::console::{render, Style};
use super::ring::{Entry, Ring};

/// Lines that may wait for the hub.
const QUEUE_LINES: usize = 1024;
/// Lines a follower may fall behind before it is dropped.
const FOLLOWER_QUEUE: usize = 4096;
/// Ring bounds per service.
pub const RING_LINES: usize = 1000;
pub const RING_BYTES: usize = 1024 * 1024;

/// A request for the remembered lines, and optionally the ones to come.
pub struct LogQuery {
    /// None: every service.
    pub services: Option<Vec<usize>>,
    /// How many of the newest remembered lines (merged in time order).
    pub last: usize,
    /// Where to send every later line of those services.
    pub follow: Option<mpsc::Sender<LogLine>>,
    pub reply: oneshot::Sender<Vec<LogLine>>,
}

/// One message to the hub.
pub enum Line {
    /// A line a service wrote (without its newline).
    Output {
        svc: usize,
        stream: LogStream,
        time: SystemTime,
        text: Vec<u8>,
    },
    /// A corral lifecycle message, about one service or about corral itself.
    Event {
        svc: Option<usize>,
        time: SystemTime,
        text: String,
    },
    Query(LogQuery),
    /// The services changed (reload): new names, same indices for those that stayed.
    Rename(Vec<String>),
}

/// The sending side, owned by the event loop.
pub struct LogHub {
    tx: mpsc::Sender<Line>,
    dropped: Cell<u64>,
    writer: Option<JoinHandle<()>>,
}

/// A sender for pipe readers and API handlers; sending waits when the hub is behind.
pub type HubHandle = mpsc::Sender<Line>;

impl LogHub {
    /// Starts the hub thread for services named `names` (indexed like the config).
    pub fn start(names: Vec<String>) -> io::Result<LogHub> {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let style = Style::for_stdout(names);
        let writer = std::thread::Builder::new()
            .name("log-hub".into())
            .stack_size(128 * 1024)
            .spawn(move || Hub::new(style).run(rx))?;
        Ok(LogHub {
            tx,
            dropped: Cell::new(0),
            writer: Some(writer),
        })
    }

    pub fn handle(&self) -> HubHandle {
        self.tx.clone()
    }

    /// Prints a lifecycle message; never blocks the caller. If the hub is so
    /// far behind that the queue is full, the message is counted and the count
    /// is printed with the next message that fits.
    pub fn event(&self, svc: Option<usize>, text: String) {
        let time = SystemTime::now();
        let dropped = self.dropped.get();
        if dropped > 0 {
            let note = format!("({dropped} lifecycle messages were not shown: output too slow)");
            let line = Line::Event {
                svc: None,
                time,
                text: note,
            };
            if self.tx.try_send(line).is_ok() {
                self.dropped.set(0);
            }
        }
        if self.tx.try_send(Line::Event { svc, time, text }).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Tells the hub the new service names after a reload.
    pub async fn rename(&self, names: Vec<String>) {
        let _ = self.tx.send(Line::Rename(names)).await;
    }

    /// Waits until everything queued has been written. Pipe readers must be gone.
    pub fn finish(mut self) {
        let writer = self.writer.take();
        drop(self);
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

struct Follower {
    services: Option<Vec<usize>>,
    tx: mpsc::Sender<LogLine>,
}

/// The hub thread's state.
struct Hub {
    style: Style,
    rings: Vec<Ring>,
    followers: Vec<Follower>,
}

impl Hub {
    fn new(style: Style) -> Hub {
        let rings = style
            .names
            .iter()
            .map(|_| Ring::new(RING_LINES, RING_BYTES))
            .collect();
        Hub {
            style,
            rings,
            followers: Vec::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Line>) {
        let stdout = io::stdout();
        let mut out = BufWriter::with_capacity(16 * 1024, stdout.lock());
        while let Some(line) = rx.blocking_recv() {
            let mut next = Some(line);
            while let Some(line) = next {
                self.dispatch(&mut out, line);
                next = rx.try_recv().ok();
            }
            let _ = io::Write::flush(&mut out);
        }
        let _ = io::Write::flush(&mut out);
    }

    fn dispatch(&mut self, out: &mut impl io::Write, line: Line) {
        match line {
            Line::Output {
                svc,
                stream,
                time,
                text,
            } => {
                // A closed stdout must not stop supervision: keep going.
                let _ = render(out, &self.style, Some(svc), false, &text);
                self.remember(svc, stream, time, text.into_boxed_slice());
            }
            Line::Event { svc, time, text } => {
                let _ = render(out, &self.style, svc, true, text.as_bytes());
                if let Some(svc) = svc {
                    self.remember(
                        svc,
                        LogStream::Event,
                        time,
                        text.into_bytes().into_boxed_slice(),
                    );
                }
            }
            Line::Query(query) => self.answer(query),
            Line::Rename(names) => {
                self.rings
                    .resize_with(names.len(), || Ring::new(RING_LINES, RING_BYTES));
                self.style.rename(names);
            }
        }
    }

    fn remember(&mut self, svc: usize, stream: LogStream, time: SystemTime, text: Box<[u8]>) {
        if !self.followers.is_empty() {
            let line = self.to_line(svc, stream, time, &text);
            // A follower that cannot keep up is dropped rather than slowing everyone.
            self.followers.retain(|f| {
                if f.services.as_ref().is_some_and(|s| !s.contains(&svc)) {
                    return !f.tx.is_closed();
                }
                f.tx.try_send(line.clone()).is_ok()
            });
        }
        if let Some(ring) = self.rings.get_mut(svc) {
            ring.push(Entry { time, stream, text });
        }
    }

    fn to_line(&self, svc: usize, stream: LogStream, time: SystemTime, text: &[u8]) -> LogLine {
        LogLine {
            time: time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            service: self.style.name(Some(svc)).to_string(),
            stream,
            line: String::from_utf8_lossy(text).into_owned(),
        }
    }

    fn answer(&mut self, query: LogQuery) {
        let selected: Vec<usize> = match &query.services {
            Some(s) => s.clone(),
            None => (0..self.rings.len()).collect(),
        };
        let mut picked: Vec<(usize, &Entry)> = selected
            .iter()
            .filter_map(|&svc| self.rings.get(svc).map(|r| (svc, r)))
            .flat_map(|(svc, ring)| ring.tail(query.last).map(move |e| (svc, e)))
            .collect();
        picked.sort_by_key(|(_, e)| e.time);
        let skip = picked.len().saturating_sub(query.last);
        let lines: Vec<LogLine> = picked[skip..]
            .iter()
            .map(|(svc, e)| self.to_line(*svc, e.stream, e.time, &e.text))
            .collect();
        if query.reply.send(lines).is_ok() {
            if let Some(tx) = query.follow {
                self.followers.push(Follower {
                    services: query.services,
                    tx,
                });
            }
        }
    }
}

/// A bounded channel for one follower.
pub fn follower_channel() -> (mpsc::Sender<LogLine>, mpsc::Receiver<LogLine>) {
    mpsc::channel(FOLLOWER_QUEUE)
}
