//! sd_notify: a datagram socket per started process (NOTIFY_SOCKET), read
//! by a task that checks who sent each message, keeps the watchdog's
//! deadline, and tells the loop only what changes something.
//!
//! A hostile or broken service cannot make corral spin: the task reads at
//! most `BUDGET` datagrams a window and leaves the rest in the kernel's
//! queue, where a sender that goes on blocks or gets EAGAIN.

use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Notice;
use crate::engine::Pid;

/// Datagrams larger than this are counted and ignored (systemd reads 4 KiB
/// of text and the ancillary data).
const MAX_DATAGRAM: usize = 4096;

/// Datagrams read per window at most; the rest waits in the kernel.
const BUDGET: u32 = 200;
const WINDOW: Duration = Duration::from_millis(100);

/// How often at most the counts of ignored messages reach the loop.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// What a service said that changes something for corral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ready,
    Reloading,
    Stopping,
    Status(String),
    MainPid(Pid),
    ExtendTimeout(Duration),
    Errno(i32),
    /// No WATCHDOG=1 came in time (or WATCHDOG=trigger).
    WatchdogMissed,
    /// Messages dropped since the last count: from a process outside the
    /// instance, malformed, too large, or unknown.
    Ignored {
        rejected: u64,
        malformed: u64,
    },
}

/// A bound notify socket, before its process exists.
pub struct Socket {
    sock: std::os::unix::net::UnixDatagram,
    /// NOTIFY_SOCKET's value: an abstract address ("@...").
    pub address: String,
}

/// Binds a socket in the abstract namespace: no file to clean up, no
/// directory the service's user must be able to reach; only the sender's
/// credentials decide who is heard. The name holds the run's random id:
/// two corrals that are each PID 1 may share a network namespace.
pub fn bind(run_id: &str, seq: u64) -> std::io::Result<Socket> {
    let name = format!("corral/{run_id}/{seq}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with an int option value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sock.set_nonblocking(true)?;
    Ok(Socket {
        sock,
        address: format!("@{name}"),
    })
}

/// Reads `socket` for the process `pid` of `svc` until aborted.
pub async fn watch(
    socket: Socket,
    svc: usize,
    pid: Pid,
    watchdog: Option<Duration>,
    tx: mpsc::UnboundedSender<Notice>,
) {
    let Ok(sock) = UnixDatagram::from_std(socket.sock) else {
        return;
    };
    let mut reader = Reader {
        svc,
        spawned: pid,
        main: pid,
        ready: false,
        status: None,
        rejected: 0,
        malformed: 0,
        stranger: None,
        counted_at: None,
        tx,
        watchdog,
        // As systemd: the watchdog counts once the service is up (its
        // first READY=1 or WATCHDOG=1), not while it starts.
        deadline: None,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut window = Instant::now();
    let mut read = 0u32;
    loop {
        if read >= BUDGET {
            // Over budget: leave what is queued where it is until the next window.
            reader.sleep_until(window + WINDOW).await;
            if reader.deadline_passed() {
                return;
            }
            window = Instant::now();
            read = 0;
        }
        tokio::select! {
            ready = sock.readable() => {
                if ready.is_err() {
                    return;
                }
                match sock.try_io(Interest::READABLE, || receive(sock.as_raw_fd(), &mut buf)) {
                    Ok((n, sender)) => {
                        read += 1;
                        reader.datagram(&buf[..n.min(buf.len())], n, sender);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            () = sleep_opt(reader.deadline) => {
                reader.send(Message::WatchdogMissed);
                return;
            }
            () = sleep_opt(reader.flush_at()) => reader.flush(),
        }
        if window.elapsed() >= WINDOW {
            window = Instant::now();
            read = 0;
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One datagram and its sender's pid (None: no credentials came with it).
fn receive(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<Pid>)> {
    // Room for one SCM_CREDENTIALS message only: descriptors someone sends
    // (FDSTORE) do not fit, and the kernel closes them.
    #[repr(C)]
    union Control {
        _align: libc::cmsghdr,
        bytes: [u8; 64],
    }
    let mut control = Control { bytes: [0; 64] };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut Control).cast();
    msg.msg_controllen = std::mem::size_of::<Control>() as _;
    // SAFETY: recvmsg fills the buffers msg points to, within their lengths;
    // MSG_TRUNC makes it return the datagram's real length.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut sender = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen; a credentials message holds one ucred.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
            {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                sender = Some(cred.pid);
            } else if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
            {
                // Descriptors that did fit: close them.
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd: RawFd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    libc::close(fd);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, sender))
}

/// What the task knows of its process.
struct Reader {
    svc: usize,
    /// The process corral started (its session id, as it leads one).
    spawned: Pid,
    /// The main process: `spawned`, or the one MAINPID= named.
    main: Pid,
    ready: bool,
    status: Option<String>,
    rejected: u64,
    malformed: u64,
    /// The last sender found outside the instance: its next datagrams are
    /// refused without another look at /proc.
    stranger: Option<Pid>,
    /// When counts were last sent (None: never).
    counted_at: Option<Instant>,
    tx: mpsc::UnboundedSender<Notice>,
    watchdog: Option<Duration>,
    deadline: Option<Instant>,
}

impl Reader {
    fn send(&self, message: Message) {
        let _ = self.tx.send(Notice::Notify {
            svc: self.svc,
            pid: self.spawned,
            message,
        });
    }

    async fn sleep_until(&self, at: Instant) {
        match self.deadline {
            Some(deadline) if deadline < at => tokio::time::sleep_until(deadline).await,
            _ => tokio::time::sleep_until(at).await,
        }
    }

    fn deadline_passed(&self) -> bool {
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            self.send(Message::WatchdogMissed);
            return true;
        }
        false
    }

    fn datagram(&mut self, bytes: &[u8], len: usize, sender: Option<Pid>) {
        let heard = match sender {
            Some(pid) if Some(pid) == self.stranger => false,
            Some(pid) => {
                let ours = self.belongs(pid);
                if !ours {
                    self.stranger = Some(pid);
                }
                ours
            }
            None => false,
        };
        if !heard {
            self.rejected += 1;
        } else if len > MAX_DATAGRAM {
            self.malformed += 1;
        } else {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    for line in text.split('\n').filter(|l| !l.is_empty()) {
                        if !self.assignment(line) {
                            self.malformed += 1;
                        }
                    }
                }
                Err(_) => self.malformed += 1,
            }
        }
        if self.flush_at().is_some_and(|at| at <= Instant::now()) {
            self.flush();
        }
    }

    /// When the counts of ignored messages are due (None: nothing to count).
    fn flush_at(&self) -> Option<Instant> {
        (self.rejected + self.malformed > 0).then(|| match self.counted_at {
            Some(at) => at + COUNT_EVERY,
            None => Instant::now(),
        })
    }

    fn flush(&mut self) {
        self.counted_at = Some(Instant::now());
        let (rejected, malformed) = (self.rejected, self.malformed);
        (self.rejected, self.malformed) = (0, 0);
        self.send(Message::Ignored {
            rejected,
            malformed,
        });
    }

    /// One `KEY=VALUE` line; false when it is malformed or unknown.
    fn assignment(&mut self, line: &str) -> bool {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let number = || value.parse::<u64>().ok();
        match key {
            "READY" if value == "1" => {
                if !self.ready {
                    self.ready = true;
                    self.send(Message::Ready);
                }
                if let (Some(period), None) = (self.watchdog, self.deadline) {
                    self.deadline = Some(Instant::now() + period);
                }
            }
            "RELOADING" if value == "1" => {
                self.ready = false;
                self.send(Message::Reloading);
            }
            "STOPPING" if value == "1" => self.send(Message::Stopping),
            "STATUS" => {
                if self.status.as_deref() != Some(value) {
                    self.status = Some(value.to_string());
                    self.send(Message::Status(value.to_string()));
                }
            }
            "MAINPID" => match value.parse::<Pid>() {
                Ok(pid) if pid > 1 && self.belongs(pid) => {
                    if pid != self.main {
                        self.main = pid;
                        self.send(Message::MainPid(pid));
                    }
                }
                // A pid outside the instance is not followed.
                _ => return false,
            },
            "WATCHDOG" if value == "1" => {
                if let Some(period) = self.watchdog {
                    self.deadline = Some(Instant::now() + period);
                }
            }
            "WATCHDOG" if value == "trigger" => {
                if self.watchdog.is_some() {
                    self.deadline = Some(Instant::now());
                }
            }
            "WATCHDOG_USEC" => match number() {
                Some(usec) if usec > 0 && self.watchdog.is_some() => {
                    let period = Duration::from_micros(usec);
                    self.watchdog = Some(period);
                    self.deadline = Some(Instant::now() + period);
                }
                _ => return false,
            },
            "EXTEND_TIMEOUT_USEC" => match number() {
                Some(usec) => self.send(Message::ExtendTimeout(Duration::from_micros(usec))),
                None => return false,
            },
            "ERRNO" => match value.parse::<i32>() {
                Ok(errno) if errno >= 0 => self.send(Message::Errno(errno)),
                _ => return false,
            },
            // Sent along with others by servers that know newer systemd;
            // nothing for corral to do.
            "MONOTONIC_USEC" | "BUSERROR" | "NOTIFYACCESS" => {}
            _ => return false,
        }
        true
    }

    /// Whether `pid` is a process of this instance: the one corral started,
    /// the main one, one in either's session, or a descendant of either.
    fn belongs(&self, pid: Pid) -> bool {
        let ours = |p: Pid| p == self.spawned || p == self.main;
        if ours(pid) {
            return true;
        }
        // SAFETY: getsid only reads the process table.
        let sid = unsafe { libc::getsid(pid) };
        if sid > 0 && ours(sid) {
            return true;
        }
        // A child that made its own session (a daemon's worker): its parents.
        let mut p = pid;
        for _ in 0..16 {
            match parent_of(p) {
                Some(parent) if ours(parent) => return true,
                Some(parent) if parent > 1 => p = parent,
                _ => return false,
            }
        }
        false
    }
}

/// The parent pid of `pid`, from /proc/PID/stat.
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
