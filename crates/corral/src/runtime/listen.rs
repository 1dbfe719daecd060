//! Listening sockets corral binds for a service and holds across its
//! restarts: connections that arrive while no process accepts wait in the
//! kernel's queue instead of being refused.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::config::{Listen, ListenAddress};

/// Every service's held sockets, by service (group) name and the sockets
/// as configured: the replicas of a service share them (unless their
/// addresses differ, `${PORT}`...).
#[derive(Default)]
pub struct Listeners {
    held: HashMap<(String, Vec<Listen>), Vec<OwnedFd>>,
}

impl Listeners {
    /// The descriptors for `group`'s sockets as `specs` lists them: those
    /// held already when nothing changed, else bound now.
    pub fn get(&mut self, group: &str, specs: &[Listen]) -> Result<Vec<RawFd>, String> {
        use std::collections::hash_map::Entry;
        let fds = match self.held.entry((group.to_string(), specs.to_vec())) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(new) => new.insert(specs.iter().map(bind).collect::<Result<_, _>>()?),
        };
        Ok(fds.iter().map(AsRawFd::as_raw_fd).collect())
    }

    /// Closes the sockets `keep` does not want any more (a reload removed
    /// their service or changed its sockets).
    pub fn retain(&mut self, keep: impl Fn(&str, &[Listen]) -> bool) {
        let gone: Vec<(String, Vec<Listen>)> = self
            .held
            .keys()
            .filter(|(group, specs)| !keep(group, specs))
            .cloned()
            .collect();
        for key in gone {
            // Closed first: the file may be bound again by a new entry.
            self.held.remove(&key);
            remove_files(&key.1);
        }
    }

    /// At exit: unix socket files go.
    pub fn close_all(&mut self) {
        for ((_, specs), fds) in self.held.drain() {
            drop(fds);
            remove_files(&specs);
        }
    }

    /// What `ps` shows: the addresses of `specs` held for `group`.
    pub fn addresses(&self, group: &str, specs: &[Listen]) -> Vec<String> {
        let key = (group.to_string(), specs.to_vec());
        match self.held.contains_key(&key) {
            true => specs.iter().map(|s| s.address.to_string()).collect(),
            false => Vec::new(),
        }
    }
}

fn remove_files(specs: &[Listen]) {
    for spec in specs {
        if let ListenAddress::Unix(path) = &spec.address {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds and listens; the error names the address and why.
fn bind(spec: &Listen) -> Result<OwnedFd, String> {
    let fail = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the address is in use".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("cannot listen on {}: {why}", spec.address)
    };
    let fd: OwnedFd = match &spec.address {
        ListenAddress::Tcp(addr) => std::net::TcpListener::bind(addr).map_err(fail)?.into(),
        ListenAddress::Unix(path) => {
            // A socket file left by an earlier run is no one's now (corral
            // holds the config's lock); any other file stays.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let listener = std::os::unix::net::UnixListener::bind(path).map_err(fail)?;
            if let Some(mode) = spec.mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(fail)?;
            }
            if let Some((uid, gid)) = spec.owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(fail)?;
            }
            listener.into()
        }
    };
    // std listens with its own backlog: listen again with the one asked for.
    let backlog = i32::try_from(spec.backlog).unwrap_or(i32::MAX);
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(fd)
}
