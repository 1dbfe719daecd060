//! Reading a file the config names (the config itself, includes, env
//! files, `.env`, templates, a password file): a regular file only, read
//! up to a bound, and never a wait. A FIFO would block the reader until
//! someone writes to it, and /dev/zero never ends.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest file corral reads for its config.
pub const MAX_FILE: u64 = 16 << 20;

/// The bytes of the regular file at `path`, at most `MAX_FILE` of them.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let not = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        )
    };
    if !kind.is_file() {
        return Err(not(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "special"
        }));
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is larger than {} MiB", MAX_FILE >> 20),
        )
    };
    if meta.len() > MAX_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the bound all the same.
    file.by_ref().take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// As `read`, as UTF-8 text.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap_or_default();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read(&fifo).map(|_| ()).unwrap_err();
        assert_eq!(err.to_string(), "it is a FIFO, not a regular file");
        let err = read(Path::new("/dev/zero")).map(|_| ()).unwrap_err();
        assert_eq!(err.to_string(), "it is a device, not a regular file");
        let err = read(dir.path()).map(|_| ()).unwrap_err();
        assert_eq!(err.to_string(), "it is a directory, not a regular file");
        let file = dir.path().join("ok");
        std::fs::write(&file, "x = 1\n").unwrap_or_default();
        assert_eq!(read_to_string(&file).ok().as_deref(), Some("x = 1\n"));
        let big = dir.path().join("big");
        let f = std::fs::File::create(&big).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(MAX_FILE + 1).unwrap_or_default();
        let err = read(&big).map(|_| ()).unwrap_err();
        assert_eq!(err.to_string(), "it is larger than 16 MiB");
    }
}
