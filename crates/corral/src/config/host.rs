//! Checks of a config against this machine: env files read from disk, users
//! looked up in the user database, template sources that must exist. Each is
//! done once per distinct value, however many instances share it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::diag::Diagnostics;
use super::dotenv;
use super::env::{self, HostEnv};
use super::user::{self, Accounts, Identity};

type EnvFile = Result<Vec<dotenv::Entry>, (usize, String)>;

/// What has been looked up on this machine so far, while loading one file.
#[derive(Default)]
pub struct HostChecks {
    env_files: HashMap<PathBuf, EnvFile>,
    users: HashMap<String, Result<Identity, String>>,
    /// /etc/passwd and /etc/group, read at the first `user` looked up.
    accounts: Option<Accounts>,
    /// By PATH, then by program: found in one of its directories. A
    /// thousand services running the same program look it up once (each
    /// lookup tries every directory of PATH until one has it).
    programs: HashMap<String, HashMap<String, bool>>,
}

impl HostChecks {
    /// The pairs of an env file, values as written (`${...}` is not
    /// expanded) and a name alone taken from `host`; a missing or malformed
    /// file is an error at `span` (or at the offending line of the env file).
    pub fn env_file(
        &mut self,
        d: &mut Diagnostics<'_>,
        path: &Path,
        span: Range<usize>,
        host: &HostEnv,
    ) -> Vec<(String, String)> {
        let read = self
            .env_files
            .entry(path.to_path_buf())
            .or_insert_with(|| env::read_env_file(path));
        match read {
            Ok(entries) => entries
                .iter()
                .filter_map(|e| {
                    let value = e.value.as_written().or_else(|| host.get(&e.name))?;
                    Some((e.name.clone(), value.to_string()))
                })
                .collect(),
            Err((0, msg)) => {
                d.error(span, msg.clone());
                Vec::new()
            }
            Err((line, msg)) => {
                d.error_in(path, *line, msg.clone());
                Vec::new()
            }
        }
    }

    /// The identity a `user` names, if it exists and corral may switch to it.
    pub fn user(
        &mut self,
        d: &mut Diagnostics<'_>,
        spec: &str,
        span: Range<usize>,
        service: &str,
    ) -> Option<Identity> {
        let accounts = self.accounts.get_or_insert_with(|| {
            let accounts = Accounts::read();
            for w in &accounts.warnings {
                d.warning(span.clone(), w.clone());
            }
            accounts
        });
        let found = self.users.entry(spec.to_string()).or_insert_with(|| {
            accounts
                .resolve(spec)
                .and_then(|id| user::can_switch_to(&id).map(|_| id))
        });
        match found {
            Ok(id) => Some(id.clone()),
            Err(msg) => {
                d.error(span, format!("{msg} (service {service:?})"));
                None
            }
        }
    }

    /// Whether `program` is an executable file in one of `path`'s
    /// directories (as execvp would find it).
    pub fn on_path(&mut self, program: &str, path: &str) -> bool {
        if let Some(&found) = self.programs.get(path).and_then(|p| p.get(program)) {
            return found;
        }
        let mut candidate = PathBuf::new();
        let found = path.split(':').any(|dir| {
            candidate.clear();
            candidate.push(dir);
            candidate.push(program);
            runnable(&candidate)
        });
        self.programs
            .entry(path.to_string())
            .or_default()
            .insert(program.to_string(), found);
        found
    }

    /// Whether a group of this name exists (for `socket-group`).
    pub fn group_exists(name: &str) -> bool {
        Accounts::read().gid_of(name).is_some()
    }

    /// A template's source must exist when the config is loaded.
    pub fn template_source(&self, d: &mut Diagnostics<'_>, source: &Path, span: Range<usize>) {
        if !source.exists() {
            let message = format!("template source {} does not exist", source.display());
            d.error(span, message);
        }
    }
}

/// Whether `path` is an executable file.
pub fn runnable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The address of the network interface called `name` (its first IPv4
/// address, else its first IPv6 one); None when no interface has that name.
pub fn interface_address(name: &str) -> Option<String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let (mut v4, mut v6) = (None, None);
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        if entry.ifa_addr.is_null() || ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
            libc::AF_INET if v4.is_none() => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                v4 = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string());
            }
            libc::AF_INET6 if v6.is_none() => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                v6 = Some(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).to_string());
            }
            _ => {}
        }
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(list) };
    v4.or(v6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_interface_name_stands_for_its_address() {
        assert_eq!(super::interface_address("lo").as_deref(), Some("127.0.0.1"));
        assert_eq!(super::interface_address("10.1.2.3"), None);
        assert_eq!(super::interface_address("no-such-interface0"), None);
    }
}
