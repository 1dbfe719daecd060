//! Reads every service's output pipes on one thread (one epoll for all of
//! them) and hands what they carry to the log hub in chunks of whole lines,
//! so the cost per line stays small.
//!
//! A pipe costs corral a few dozen bytes here, far less than a task per
//! process and a reactor registration per pipe would; and the event loop
//! does not read output.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use corral_proto::LogStream;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::sync::watch;

use super::hub::{HubHandle, Line};

/// How much one read takes at most (a default pipe holds 64 KiB).
const READ_SIZE: usize = 64 * 1024;

/// The epoll token of the wake-up eventfd; pipes count from 1.
const WAKE: u64 = 0;

/// Watches a process's output (both streams) for the line that says it is ready.
pub struct LogWatch {
    pub regex: regex_lite::Regex,
    /// Called once, on the first matching line of either stream.
    pub on_match: Box<dyn Fn() + Send + Sync>,
    pub fired: AtomicBool,
}

/// The reader thread's handle: adds pipes, waits for them to drain, stops it.
pub struct PipeReader {
    commands: mpsc::Sender<Command>,
    wake: Arc<EventFd>,
    /// Within a `batch`: pipes added are taken by the thread when it ends,
    /// with one wake-up (a start of 1,000 services woke it for each of its
    /// 2,000 pipes); outside, at once.
    batching: AtomicBool,
    /// Pipes added within the batch, not yet announced.
    queued: AtomicBool,
    /// Pipes not at EOF yet.
    open: Arc<watch::Sender<usize>>,
}

enum Command {
    Add(Pipe),
    Stop,
}

/// One output pipe of a process and its unfinished last line.
struct Pipe {
    fd: OwnedFd,
    svc: usize,
    stream: LogStream,
    max_line: usize,
    watch: Option<Arc<LogWatch>>,
    partial: Vec<u8>,
}

impl PipeReader {
    /// Starts the thread that forwards output to `hub`.
    pub fn start(hub: HubHandle) -> std::io::Result<PipeReader> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let (commands, rx) = mpsc::channel();
        let open = Arc::new(watch::Sender::new(0));
        {
            let (wake, open) = (wake.clone(), open.clone());
            std::thread::Builder::new()
                .name("pipes".into())
                .stack_size(64 * 1024)
                .spawn(move || read_all(&epoll, &wake, &rx, &hub, &open))?;
        }
        Ok(PipeReader {
            commands,
            wake,
            batching: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            open,
        })
    }

    /// Reads `fd` (a service's stdout or stderr) until EOF.
    pub fn add(
        &self,
        fd: OwnedFd,
        svc: usize,
        stream: LogStream,
        watch: Option<Arc<LogWatch>>,
        max_line: usize,
    ) {
        let pipe = Pipe {
            fd,
            svc,
            stream,
            max_line,
            watch,
            partial: Vec::new(),
        };
        self.open.send_modify(|n| *n += 1);
        if self.commands.send(Command::Add(pipe)).is_err() {
            self.open.send_modify(|n| *n -= 1);
        } else if self.batching.load(Ordering::Relaxed) {
            self.queued.store(true, Ordering::Relaxed);
        } else {
            let _ = self.wake.write(1);
        }
    }

    /// Until the returned guard is dropped, pipes added are handed to the
    /// thread together, when it is.
    pub fn batch(&self) -> Batch<'_> {
        self.batching.store(true, Ordering::Relaxed);
        Batch(self)
    }

    /// Waits until every pipe reached EOF (all output read), at most `limit`.
    pub async fn drained(&self, limit: Duration) {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(limit, open.wait_for(|n| *n == 0)).await;
    }
}

/// Pipes being added together (`PipeReader::batch`).
pub struct Batch<'a>(&'a PipeReader);

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.0.batching.store(false, Ordering::Relaxed);
        if self.0.queued.swap(false, Ordering::Relaxed) {
            let _ = self.0.wake.write(1);
        }
    }
}

impl Drop for PipeReader {
    /// Stops the thread, without waiting for it: it may be blocked on a hub
    /// that waits for a stdout nobody reads, which the hub bounds itself.
    fn drop(&mut self) {
        if self.commands.send(Command::Stop).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

/// The thread: waits on every pipe at once; reads one chunk per ready pipe
/// per turn, so a flood on one pipe cannot starve the others. Sending waits
/// while the hub is behind: no pipe is read then, and services block in
/// write. Nothing is dropped and memory stays bounded.
fn read_all(
    epoll: &Epoll,
    wake: &EventFd,
    commands: &mpsc::Receiver<Command>,
    hub: &HubHandle,
    open: &watch::Sender<usize>,
) {
    // The open pipes by epoll token - 1, the slots of closed ones reused: a
    // slab takes a third of what a map did (266 bytes per service, massif).
    let mut pipes: Vec<Option<Pipe>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = [EpollEvent::empty(); 64];
    let mut scratch = vec![0u8; READ_SIZE];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        for event in &events[..n] {
            let token = event.data();
            if token == WAKE {
                let _ = wake.read();
                for command in commands.try_iter() {
                    match command {
                        Command::Stop => return,
                        Command::Add(pipe) => {
                            let _ = nix::fcntl::fcntl(
                                &pipe.fd,
                                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                            );
                            let slot = free.pop().unwrap_or(pipes.len());
                            let ready = EpollEvent::new(EpollFlags::EPOLLIN, slot as u64 + 1);
                            if epoll.add(pipe.fd.as_fd(), ready).is_ok() {
                                match pipes.get_mut(slot) {
                                    Some(entry) => *entry = Some(pipe),
                                    None => pipes.push(Some(pipe)),
                                }
                            } else {
                                if slot < pipes.len() {
                                    free.push(slot);
                                }
                                open.send_modify(|n| *n -= 1);
                            }
                        }
                    }
                }
                continue;
            }
            let slot = (token - 1) as usize;
            let Some(pipe) = pipes.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let (chunk, eof) = pipe.read(&mut scratch);
            if let Some(data) = chunk {
                pipe.watch_for_ready(&data);
                let line = Line::Output {
                    svc: pipe.svc,
                    stream: pipe.stream,
                    time: SystemTime::now(),
                    data,
                };
                if hub.blocking_send(line).is_err() {
                    return;
                }
            }
            if eof {
                // Out of the epoll set first: closing our descriptor is not
                // enough while another one holds the pipe (a child between
                // fork and exec has a copy of each), and a pipe at EOF stays
                // ready, so epoll_wait would return it again and again.
                if let Some(pipe) = pipes.get_mut(slot).and_then(Option::take) {
                    let _ = epoll.delete(pipe.fd.as_fd());
                    free.push(slot);
                }
                open.send_modify(|n| *n -= 1);
            }
        }
    }
}

impl Pipe {
    /// Reads once into `scratch`: complete lines (if any), and whether the
    /// pipe is done. At EOF an unfinished last line is completed.
    fn read(&mut self, scratch: &mut [u8]) -> (Option<Vec<u8>>, bool) {
        // One buffer for every read, and a chunk the size of what came: a
        // fresh 64 KiB buffer per read would cost musl's allocator an mmap
        // and a munmap each, at every EOF too.
        match nix::unistd::read(&self.fd, scratch) {
            Ok(n) if n > 0 => {
                let mut buf = Vec::with_capacity(self.partial.len() + n);
                buf.append(&mut self.partial);
                buf.extend_from_slice(&scratch[..n]);
                (split_complete(buf, &mut self.partial, self.max_line), false)
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => (None, false),
            // EOF (or a broken pipe): the unfinished line is the last one.
            _ if self.partial.is_empty() => (None, true),
            _ => {
                let mut last = std::mem::take(&mut self.partial);
                last.push(b'\n');
                (Some(last), true)
            }
        }
    }

    fn watch_for_ready(&self, data: &[u8]) {
        let Some(w) = &self.watch else {
            return;
        };
        if w.fired.load(Ordering::Relaxed) {
            return;
        }
        let matched = data
            .split(|&b| b == b'\n')
            .any(|line| w.regex.is_match(&String::from_utf8_lossy(line)));
        if matched && !w.fired.swap(true, Ordering::Relaxed) {
            (w.on_match)();
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The "pipes" threads of this test process.
    fn pipe_threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .map(|t| t.file_name().to_string_lossy().into_owned())
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .is_ok_and(|c| c.trim() == "pipes")
            })
            .collect()
    }

    /// CPU time of one thread so far, in clock ticks.
    fn cpu_ticks(tid: &str) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// A child between fork and exec holds a copy of every pipe of corral:
    /// when the reader closes its descriptor at EOF, the pipe lives on, and
    /// so would its epoll registration, reporting it ready again and again.
    #[test]
    fn a_pipe_at_eof_is_not_polled_again_while_another_descriptor_holds_it() {
        let hub = crate::logs::LogHub::start(
            vec![crate::logs::ServiceLog {
                name: "svc".into(),
                ring_lines: 10,
                ring_bytes: 1024,
                file: None,
            }],
            crate::logs::ConsoleOptions {
                format: crate::logs::Format::Json,
                timestamps: false,
            },
        )
        .unwrap();
        let before = pipe_threads();
        let reader = PipeReader::start(hub.handle()).unwrap();
        // The thread names itself once it runs.
        let mut tid = None;
        for _ in 0..500 {
            tid = pipe_threads().into_iter().find(|t| !before.contains(t));
            if tid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let tid = tid.expect("the reader's thread");
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let held = read.try_clone().unwrap();
        reader.add(read, 0, LogStream::Stdout, None, 1024);
        drop(write);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while *reader.open.borrow() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*reader.open.borrow(), 0, "the reader saw EOF");
        let start = cpu_ticks(&tid);
        std::thread::sleep(Duration::from_millis(400));
        let spent = cpu_ticks(&tid) - start;
        drop(held);
        // Idle, it spends nothing; spinning, it would spend ~40 ticks.
        assert!(spent <= 5, "the pipe thread spent {spent} ticks in 400 ms");
    }

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
