//! A detached daemon's console, kept in a rotating file: fds 1 and 2 become
//! a pipe that a thread copies, line by line, into `.corral/corral.log`.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};

use super::file::{FileSpec, RotatingFile};

/// The copying thread; `finish` waits (a bounded time) for the last lines.
pub struct ConsoleFile {
    done: std::sync::mpsc::Receiver<()>,
}

/// How long `finish` waits for the copy: a process that inherited stdout
/// could keep the pipe open for ever.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl ConsoleFile {
    /// From now on, what this process writes to stdout and stderr goes to
    /// `spec`'s file, rotated by size.
    pub fn start(spec: FileSpec) -> io::Result<ConsoleFile> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        for target in [1, 2] {
            // SAFETY: dup2 onto fds 1 and 2, which this process owns; `write`
            // stays open until the end of this function.
            if unsafe { libc::dup2(write.as_raw_fd(), target) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        drop(write);
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("console-log".into())
            .spawn(move || {
                copy(read, RotatingFile::new(spec));
                let _ = tx.send(());
            })?;
        Ok(ConsoleFile { done })
    }

    /// Closes stdout and stderr (so the pipe ends) and waits for the copy.
    pub fn finish(self) {
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            for target in [1, 2] {
                // SAFETY: as in `start`; /dev/null takes the pipe's place.
                unsafe { libc::dup2(null.as_raw_fd(), target) };
            }
        }
        let _ = self.done.recv_timeout(FINISH_WAIT);
    }
}

/// Copies whole lines from the pipe into the file until the pipe ends.
fn copy(read: OwnedFd, mut file: RotatingFile) {
    let mut pipe = std::fs::File::from(read);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        // Whole lines, in pieces no larger than a file may grow (a piece
        // never straddles two files, so one larger would overfill a file).
        let piece = usize::try_from(file.spec().max_size).unwrap_or(usize::MAX);
        while let Some(end) = memchr::memrchr(b'\n', &pending[..pending.len().min(piece)])
            .or_else(|| memchr::memchr(b'\n', &pending))
        {
            let _ = file.write(&pending[..=end]);
            pending.drain(..=end);
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        let _ = file.write(&pending);
    }
}
