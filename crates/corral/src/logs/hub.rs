//! The log hub: one thread that receives every chunk of service output and
//! fans it out to the console, per-service files, rings and followers.
//!
//! Output reaches it through a bounded channel: when a sink is slow (a
//! blocked terminal, a slow disk), the channel fills, the pipe readers stop
//! reading and the services block in write. Nothing is dropped and memory
//! stays bounded; the event loop itself never waits on the hub.

use std::cell::Cell;
use std::io::{self, BufWriter, IoSlice, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use corral_proto::{LogLine, LogStream};
use tokio::sync::{mpsc, oneshot};

use super::console::{render, Format, Style};
use super::file::{FileJob, FileSpec, FileWriter};
use super::ring::Ring;

/// Chunks (of up to ~64 KiB each) that may wait for the hub.
pub const QUEUE_CHUNKS: usize = 64;

/// How one service's output is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLog {
    pub name: String,
    pub ring_lines: usize,
    pub ring_bytes: usize,
    pub file: Option<FileSpec>,
}

/// How the console looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleOptions {
    pub format: Format,
    pub timestamps: bool,
}

/// A request for the remembered lines, and optionally the ones to come.
pub struct LogQuery {
    /// None: every service.
    pub services: Option<Vec<usize>>,
    /// How many of the newest remembered lines (merged in time order).
    pub last: usize,
    /// Whether every later line of those services is wanted too.
    pub follow: bool,
    /// The remembered lines, and the follower's end when `follow`.
    pub reply: oneshot::Sender<(Vec<LogLine>, Option<super::follow::Follow>)>,
}

/// One message to the hub.
pub enum Line {
    /// Complete lines a service wrote, each ending in '\n'.
    Output {
        svc: usize,
        stream: LogStream,
        time: SystemTime,
        data: Vec<u8>,
    },
    /// A corral lifecycle message, about one service or about corral itself.
    Event {
        svc: Option<usize>,
        time: SystemTime,
        text: String,
    },
    Query(LogQuery),
    /// Lines each service wrote since corral started: (name, stdout, stderr).
    Counts(oneshot::Sender<Vec<(String, [u64; 2])>>),
    /// The services changed (reload): same indices for those that stayed.
    Configure(Vec<ServiceLog>),
}

/// Lifecycle messages that may wait for room in the hub's queue.
const MAX_WAITING: usize = 16 * 1024;

/// How long corral waits at exit for the hub to write what is queued (a
/// stdout nobody reads must not keep corral alive forever).
const FINISH_WAIT: Duration = Duration::from_secs(3);

/// The sending side, owned by the event loop.
pub struct LogHub {
    tx: mpsc::Sender<Line>,
    /// Lifecycle messages waiting for room in the queue, in order: each one
    /// reaches the console and its service's ring (a burst of 1,000 jobs
    /// ending at once says 1,000 "run ended"), up to MAX_WAITING.
    waiting: std::cell::RefCell<std::collections::VecDeque<Line>>,
    dropped: Cell<u64>,
    writer: Option<JoinHandle<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

/// A sender for pipe readers and API handlers; sending waits when the hub is behind.
pub type HubHandle = mpsc::Sender<Line>;

impl LogHub {
    /// Starts the hub thread; `services` is indexed like the config.
    pub fn start(services: Vec<ServiceLog>, console: ConsoleOptions) -> io::Result<LogHub> {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let names = services.iter().map(|s| s.name.as_str()).collect();
        let style = Style::for_stdout(names, console.format, console.timestamps);
        let mut hub = Hub {
            style,
            services: Vec::new(),
            followers: Vec::new(),
            produced: Default::default(),
            files: None,
            counts: Vec::new(),
        };
        hub.configure(services);
        let (done_tx, done) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("log-hub".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                hub.run(rx);
                let _ = done_tx.send(());
            })?;
        Ok(LogHub {
            tx,
            waiting: Default::default(),
            dropped: Cell::new(0),
            writer: Some(writer),
            done,
        })
    }

    pub fn handle(&self) -> HubHandle {
        self.tx.clone()
    }

    /// Prints a lifecycle message; never blocks the caller. If the hub is
    /// behind, the message waits its turn (`flush`, when the queue has room);
    /// only past MAX_WAITING waiting messages is one counted instead, and
    /// the count printed with the next message that fits.
    pub fn event(&self, svc: Option<usize>, text: String) {
        let line = Line::Event {
            svc,
            time: SystemTime::now(),
            text,
        };
        self.flush();
        let mut waiting = self.waiting.borrow_mut();
        if waiting.is_empty() {
            match self.tx.try_send(line) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(line)) => waiting.push_back(line),
            }
        } else if waiting.len() < MAX_WAITING {
            waiting.push_back(line);
        } else {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    /// Whether lifecycle messages wait for room (then `room` is worth
    /// waiting for).
    pub fn has_waiting(&self) -> bool {
        !self.waiting.borrow().is_empty()
    }

    /// Resolves once the queue has room for a message.
    pub async fn room(&self) {
        if let Ok(permit) = self.tx.reserve().await {
            drop(permit);
        }
    }

    /// Hands the hub as many waiting messages as fit now, in order.
    pub fn flush(&self) {
        let mut waiting = self.waiting.borrow_mut();
        while let Some(line) = waiting.pop_front() {
            if let Err(e) = self.tx.try_send(line) {
                if let mpsc::error::TrySendError::Full(line) = e {
                    waiting.push_front(line);
                }
                return;
            }
        }
        let dropped = self.dropped.get();
        if dropped > 0
            && self
                .tx
                .try_send(left_out(dropped, SystemTime::now()))
                .is_ok()
        {
            self.dropped.set(0);
        }
    }

    /// Tells the hub the services after a reload.
    pub async fn configure(&self, services: Vec<ServiceLog>) {
        let _ = self.tx.send(Line::Configure(services)).await;
    }

    /// Waits until everything queued has been written (pipe readers must be
    /// gone), but not longer than FINISH_WAIT.
    pub fn finish(mut self) {
        let writer = self.writer.take();
        let LogHub {
            tx,
            done,
            waiting,
            dropped,
            ..
        } = self;
        // Messages still waiting, then how many were left out (said last of
        // all: no later message will carry it). Waiting for room in the
        // queue is fine now, within the same bound as the drain below (a
        // stdout nobody reads must not keep corral from ending).
        let mut lines = waiting.into_inner();
        if dropped.get() > 0 {
            lines.push_back(left_out(dropped.get(), SystemTime::now()));
        }
        let deadline = std::time::Instant::now() + FINISH_WAIT;
        'lines: while let Some(mut line) = lines.pop_front() {
            loop {
                match tx.try_send(line) {
                    Ok(()) => break,
                    Err(mpsc::error::TrySendError::Full(back))
                        if std::time::Instant::now() < deadline =>
                    {
                        line = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break 'lines,
                }
            }
        }
        drop(tx);
        if done.recv_timeout(FINISH_WAIT).is_ok() {
            if let Some(w) = writer {
                let _ = w.join();
            }
        }
    }
}

/// The note that `dropped` lifecycle messages were left out.
fn left_out(dropped: u64, time: SystemTime) -> Line {
    Line::Event {
        svc: None,
        time,
        text: format!("({dropped} lifecycle messages were not shown: output too slow)"),
    }
}

struct Follower {
    services: Option<Vec<usize>>,
    tap: super::follow::Tap,
}

/// What the hub keeps per service (its name is the style's).
struct Sinks {
    ring: Ring,
    /// Its output also goes to a log file.
    has_file: bool,
}

/// The hub thread's state.
struct Hub {
    style: Style,
    services: Vec<Sinks>,
    followers: Vec<Follower>,
    /// Where the output to followers stands.
    produced: super::follow::Produced,
    /// Started once some service has a log file.
    files: Option<FileWriter>,
    /// Lines per service (indexed like `services`), stdout and stderr: they
    /// survive reloads, as the indices do.
    counts: Vec<[u64; 2]>,
}

impl Hub {
    fn configure(&mut self, services: Vec<ServiceLog>) {
        // A service keeps its remembered lines across a reload while its
        // name and its ring's bounds stay.
        let mut old = std::mem::take(&mut self.services).into_iter().enumerate();
        for config in &services {
            let kept = old.next().and_then(|(i, sinks)| {
                let same = self.style.names.get(i) == Some(config.name.as_str())
                    && sinks.ring.bounds() == (config.ring_lines, config.ring_bytes);
                same.then_some(sinks.ring)
            });
            self.services.push(Sinks {
                ring: kept.unwrap_or_else(|| Ring::new(config.ring_lines, config.ring_bytes)),
                has_file: config.file.is_some(),
            });
        }
        self.style
            .rename(services.iter().map(|s| s.name.as_str()).collect());
        let specs: Vec<Option<FileSpec>> = services.iter().map(|s| s.file.clone()).collect();
        match &self.files {
            Some(files) => files.send(FileJob::Configure(specs)),
            None if specs.iter().any(Option::is_some) => match FileWriter::start(specs) {
                Ok(files) => self.files = Some(files),
                Err(e) => eprintln!("corral: cannot start the log file writer: {e}"),
            },
            None => {}
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Line>) {
        // Straight to fd 1 in large writes: std's stdout is line-buffered and
        // would scan and write every line on its own.
        let mut out = BufWriter::with_capacity(64 * 1024, RawStdout);
        while let Some(line) = rx.blocking_recv() {
            let mut next = Some(line);
            while let Some(line) = next {
                self.dispatch(&mut out, line);
                next = rx.try_recv().ok();
            }
            // A closed stdout must not stop supervision: keep going.
            let _ = out.flush();
        }
        let _ = out.flush();
        if let Some(files) = self.files.take() {
            files.finish();
        }
    }

    fn dispatch(&mut self, out: &mut BufWriter<RawStdout>, line: Line) {
        match line {
            Line::Output {
                svc,
                stream,
                time,
                data,
            } => {
                let lines = if self.style.plain()
                    && std::str::from_utf8(&data).is_ok()
                    && memchr::memchr(b'\r', &data).is_none()
                {
                    // The lines go out as they are: prefix and line side by
                    // side in one writev, without copying them.
                    let prefix = self.style.prefix(Some(svc), false);
                    // A closed stdout must not stop supervision: count and go on.
                    write_prefixed(out, prefix, &data)
                        .unwrap_or_else(|_| memchr::memchr_iter(b'\n', &data).count())
                } else {
                    let mut start = 0;
                    let mut lines = 0;
                    for end in memchr::memchr_iter(b'\n', &data) {
                        let _ =
                            render(out, &self.style, Some(svc), stream, time, &data[start..end]);
                        start = end + 1;
                        lines += 1;
                    }
                    lines
                };
                let data = Arc::new(data);
                if let Some(files) = &self.files {
                    let has_file = self.services.get(svc).is_some_and(|s| s.has_file);
                    if has_file {
                        files.send(FileJob::Write {
                            svc,
                            data: Arc::clone(&data),
                        });
                    }
                }
                if self.counts.len() <= svc {
                    self.counts.resize(svc + 1, [0; 2]);
                }
                self.counts[svc][usize::from(stream == LogStream::Stderr)] += lines as u64;
                self.remember(svc, stream, time, data, Some(lines));
            }
            Line::Event { svc, time, text } => {
                let _ = render(
                    out,
                    &self.style,
                    svc,
                    LogStream::Event,
                    time,
                    text.as_bytes(),
                );
                if let Some(svc) = svc {
                    let mut data = text.into_bytes();
                    data.push(b'\n');
                    self.remember(svc, LogStream::Event, time, Arc::new(data), None);
                }
            }
            Line::Query(query) => self.answer(query),
            Line::Counts(reply) => {
                let counts = (0..self.services.len()).map(|i| {
                    let count = self.counts.get(i).copied().unwrap_or_default();
                    (self.style.name(Some(i)).to_string(), count)
                });
                let _ = reply.send(counts.collect());
            }
            Line::Configure(services) => self.configure(services),
        }
    }

    fn remember(
        &mut self,
        svc: usize,
        stream: LogStream,
        time: SystemTime,
        data: Arc<Vec<u8>>,
        lines: Option<usize>,
    ) {
        if !self.followers.is_empty() {
            let name = self.style.name(Some(svc)).to_string();
            let body = data.strip_suffix(b"\n").unwrap_or(&data);
            // One allocation per line, shared by every follower.
            let lines: Vec<(Arc<LogLine>, u64)> = body
                .split(|&b| b == b'\n')
                .map(|text| {
                    let line = to_line(&name, stream, time, text);
                    let end = self.produced.advance(&line);
                    (Arc::new(line), end)
                })
                .collect();
            // A follower that cannot keep up is dropped rather than slowing
            // everyone, or holding what everyone else has long read.
            self.followers.retain(|f| {
                if f.services.as_ref().is_some_and(|s| !s.contains(&svc)) {
                    return !f.tap.is_closed();
                }
                f.tap.offer(&lines)
            });
        }
        if let Some(sinks) = self.services.get_mut(svc) {
            sinks.ring.push(time, stream, data, lines);
        }
    }

    fn answer(&mut self, query: LogQuery) {
        let selected: Vec<usize> = match &query.services {
            Some(s) => s.clone(),
            None => (0..self.services.len()).collect(),
        };
        let mut picked: Vec<LogLine> = Vec::new();
        for svc in selected {
            let Some(sinks) = self.services.get(svc) else {
                continue;
            };
            let name = self.style.name(Some(svc));
            picked.extend(
                sinks
                    .ring
                    .tail(query.last)
                    .iter()
                    .map(|e| to_line(name, e.stream, e.time, e.text)),
            );
        }
        // Stable: lines of one chunk share a time and keep their order.
        picked.sort_by(|a, b| a.time.total_cmp(&b.time));
        let skip = picked.len().saturating_sub(query.last);
        picked.drain(..skip);
        let (tap, follow) = match query.follow {
            true => {
                let (tap, follow) = super::follow::channel(self.produced.now());
                (Some(tap), Some(follow))
            }
            false => (None, None),
        };
        if query.reply.send((picked, follow)).is_ok() {
            if let Some(tap) = tap {
                self.followers.push(Follower {
                    services: query.services,
                    tap,
                });
            }
        }
    }
}

/// Writes each line of `data` (complete lines) behind `prefix`, straight to
/// fd 1 with writev; returns how many lines there were.
fn write_prefixed(out: &mut BufWriter<RawStdout>, prefix: &[u8], data: &[u8]) -> io::Result<usize> {
    // What the buffer holds goes first, to keep the order.
    out.flush()?;
    let stdout = out.get_mut();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(IOV_BATCH);
    let (mut start, mut lines) = (0, 0);
    for end in memchr::memchr_iter(b'\n', data) {
        slices.push(IoSlice::new(prefix));
        slices.push(IoSlice::new(&data[start..=end]));
        start = end + 1;
        lines += 1;
        if slices.len() >= IOV_BATCH {
            write_all_vectored(stdout, &mut slices)?;
            slices.clear();
        }
    }
    write_all_vectored(stdout, &mut slices)?;
    Ok(lines)
}

/// Slices per writev (IOV_MAX is 1024).
const IOV_BATCH: usize = 1024;

fn write_all_vectored(out: &mut RawStdout, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// File descriptor 1, written directly (corral is its only writer).
struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: write(2) on fd 1 from a valid buffer.
        let n = unsafe { libc::write(1, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let count = bufs.len().min(IOV_BATCH) as libc::c_int;
        // SAFETY: IoSlice is ABI-compatible with iovec on Unix; writev(2) on fd 1.
        let n = unsafe { libc::writev(1, bufs.as_ptr().cast(), count) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn to_line(name: &str, stream: LogStream, time: SystemTime, text: &[u8]) -> LogLine {
    LogLine {
        time: time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        service: name.to_string(),
        stream,
        line: String::from_utf8_lossy(text).into_owned(),
    }
}
