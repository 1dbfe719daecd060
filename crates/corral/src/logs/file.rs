//! Service log files with size-based rotation (api.log, api.log.1, ...
//! api.log.N), written by a thread of their own.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where and how a service's output is kept on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: PathBuf,
    /// Rotate before a write would take the file past this size.
    pub max_size: u64,
    /// Rotated files to keep (api.log.1 .. api.log.keep); 0 = truncate instead.
    pub keep: u32,
}

/// An open log file that rotates itself; chunks are whole lines, so no line
/// is ever split across two files.
pub struct RotatingFile {
    spec: FileSpec,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    pub fn new(spec: FileSpec) -> RotatingFile {
        RotatingFile {
            spec,
            file: None,
            size: 0,
        }
    }

    pub fn spec(&self) -> &FileSpec {
        &self.spec
    }

    /// Appends a chunk of complete lines, rotating first if it would not fit.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        if self.size > 0 && self.size + chunk.len() as u64 > self.spec.max_size {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn open(&mut self) -> io::Result<()> {
        if let Some(dir) = self
            .spec
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
        // A service's output is its own business: readable by corral's user only.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.spec.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// api.log.(k) -> api.log.(k+1) from the oldest down, api.log -> api.log.1.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let path = &self.spec.path;
        if self.spec.keep == 0 {
            File::create(path)?;
        } else {
            let numbered = |n: u32| numbered(path, n);
            let _ = std::fs::remove_file(numbered(self.spec.keep));
            for n in (1..self.spec.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(path, numbered(1))?;
        }
        self.open()
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Work for the file writer thread.
pub enum FileJob {
    /// Append a chunk of complete lines to service `svc`'s file.
    Write { svc: usize, data: Arc<Vec<u8>> },
    /// The services' files after a reload (same indices as before).
    Configure(Vec<Option<FileSpec>>),
}

/// Chunks that may wait for the disk before the hub waits too.
const FILE_QUEUE: usize = 64;

/// A thread that owns every service's log file, so writing to disk runs
/// beside the console and a slow disk only slows down what it must.
pub struct FileWriter {
    tx: SyncSender<FileJob>,
    thread: JoinHandle<()>,
}

impl FileWriter {
    pub fn start(files: Vec<Option<FileSpec>>) -> io::Result<FileWriter> {
        let (tx, rx) = sync_channel(FILE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("log-files".into())
            .stack_size(128 * 1024)
            .spawn(move || run(files, rx))?;
        Ok(FileWriter { tx, thread })
    }

    /// Queues a job; waits while the queue is full (back-pressure).
    pub fn send(&self, job: FileJob) {
        let _ = self.tx.send(job);
    }

    /// Writes what is queued and stops.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn run(specs: Vec<Option<FileSpec>>, rx: Receiver<FileJob>) {
    let open = |specs: Vec<Option<FileSpec>>| -> Vec<Option<RotatingFile>> {
        specs
            .into_iter()
            .map(|s| s.map(RotatingFile::new))
            .collect()
    };
    let mut files = open(specs);
    let mut failed = vec![false; files.len()];
    while let Ok(job) = rx.recv() {
        match job {
            FileJob::Write { svc, data } => {
                let Some(Some(file)) = files.get_mut(svc) else {
                    continue;
                };
                match file.write(&data) {
                    Ok(()) => failed[svc] = false,
                    Err(e) if !failed[svc] => {
                        failed[svc] = true;
                        eprintln!("corral: cannot write {}: {e}", file.spec().path.display());
                    }
                    Err(_) => {}
                }
            }
            FileJob::Configure(specs) => {
                let mut old = std::mem::take(&mut files).into_iter();
                files = specs
                    .into_iter()
                    .map(|spec| {
                        let kept = old.next().flatten();
                        match (kept, spec) {
                            (Some(f), Some(s)) if *f.spec() == s => Some(f),
                            (_, s) => s.map(RotatingFile::new),
                        }
                    })
                    .collect();
                failed = vec![false; files.len()];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("svc.log");
        let mut f = RotatingFile::new(FileSpec {
            path: path.clone(),
            max_size: 10,
            keep: 2,
        });
        for chunk in [
            "aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gggg\n",
        ] {
            f.write(chunk.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&path), "gggg\n");
        assert_eq!(read(&numbered(&path, 1)), "eeee\nffff\n");
        assert_eq!(read(&numbered(&path, 2)), "cccc\ndddd\n");
        assert!(!numbered(&path, 3).exists());
    }
}
