//! The state directory: where a daemon keeps what it writes (socket, lock,
//! run record, endpoint files, console log), chosen by the same rule in the
//! daemon and in every command, so the config's own directory may be
//! read-only (an image's `/app`) and corral may run as any user.
//!
//! The rule: `--state-dir` / `CORRAL_STATE_DIR`, else `[corral] state-dir`,
//! else the first of these that is (or can be made) a writable directory:
//! `.corral/` beside the config; a directory named after the config under
//! `$XDG_RUNTIME_DIR/corral/`, `/run/corral/`, or the temp dir's
//! `corral-UID/`. A command looks for the daemon's socket in the same list.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config;

/// No directory in the list could hold the state.
#[derive(Debug, thiserror::Error)]
#[error("no writable state directory for {config}: {tried}; give one with --state-dir or CORRAL_STATE_DIR (a tmpfs in a read-only image)")]
pub struct NoStateDir {
    config: String,
    /// Each candidate and why it was passed over.
    tried: String,
}

/// The state directory of a daemon for `config`: `explicit` (created when
/// missing), else the first usable candidate, created private (0700).
pub fn create(config: &Path, explicit: Option<&Path>) -> Result<PathBuf, NoStateDir> {
    let mut tried = Vec::new();
    let list = match explicit {
        Some(dir) => vec![dir.to_path_buf()],
        None => candidates(config),
    };
    for dir in list {
        match make_private(&dir, explicit.is_none()) {
            Ok(()) => return Ok(dir),
            Err(e) => tried.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(NoStateDir {
        config: config.display().to_string(),
        tried: tried.join("; "),
    })
}

/// The state directory a command looks in for `config`'s daemon:
/// `explicit`, else the first candidate that holds a socket (the daemon's),
/// else the first that a daemon could use (for the message that none runs).
pub fn find(config: &Path, explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    let list = candidates(config);
    // A socket we may not look at is still the daemon's (its user's 0700
    // directory): the command then says access is denied, not that none runs.
    let holds_socket = |dir: &&PathBuf| match std::fs::symlink_metadata(dir.join("corral.sock")) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
    };
    list.iter()
        .find(holds_socket)
        .or_else(|| list.iter().find(|dir| usable(dir)))
        .unwrap_or(&list[0])
        .clone()
}

/// `[corral] state-dir` of the config files (the last that sets it), relative
/// to its file's directory, `${VAR}` expanded as the load expands it (corral's
/// environment, then the project's .env). Read without the rest of the
/// config: a command needs only this to find the daemon. Files that do not
/// parse say nothing here (the load does).
pub fn configured(files: &[PathBuf]) -> Option<PathBuf> {
    let host = files.first().and_then(|f| config::host_env(f).ok());
    let vars = |name: &str| match &host {
        Some(host) => host.get(name).map(str::to_string),
        None => std::env::var(name).ok(),
    };
    let mut found = None;
    for file in files {
        let Ok(text) = crate::config::files::read_to_string(file) else {
            continue;
        };
        let (root, _) = toml::de::DeTable::parse_recoverable(&text);
        let Some(toml::de::DeValue::Table(corral)) =
            root.get_ref().get("corral").map(|v| v.get_ref())
        else {
            continue;
        };
        if let Some(toml::de::DeValue::String(dir)) = corral.get("state-dir").map(|v| v.get_ref()) {
            if let Ok(expanded) = config::interp::expand(dir, &vars) {
                found = Some(config::dir_of(file).join(expanded.value));
            }
        }
    }
    found
}

/// Where a daemon for `config` may keep its state, in order of preference.
fn candidates(config: &Path) -> Vec<PathBuf> {
    let name = private_name(config);
    let mut list = vec![config::dir_of(config).join(".corral")];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        list.push(xdg.join("corral").join(&name));
    }
    list.push(Path::new("/run/corral").join(&name));
    let uid = nix::unistd::geteuid();
    list.push(
        std::env::temp_dir()
            .join(format!("corral-{uid}"))
            .join(&name),
    );
    list
}

/// A private directory's name for `config`: its directory's name (for
/// people) and a hash of the config's full path (one per config).
fn private_name(config: &Path) -> String {
    let dir = config::dir_of(config);
    let full = dir.join(config.file_name().unwrap_or_default());
    // FNV-1a: the same on every build (std's hasher is not promised to be).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in full.as_os_str().as_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "root".into());
    format!("{base}-{hash:016x}")
}

/// Whether a daemon could keep its state in `dir`: a writable directory, or
/// a missing one whose nearest existing parent is writable.
fn usable(dir: &Path) -> bool {
    use nix::unistd::{access, AccessFlags};
    let writable = |d: &Path| access(d, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    match dir.ancestors().find(|d| d.exists()) {
        Some(existing) => existing.is_dir() && writable(existing),
        None => false,
    }
}

/// Makes `dir` (and its parents) a directory this user owns, 0700. Under a
/// shared root (`shared`: /run/corral, the temp dir), a directory in the
/// way that another user owns, or a link, is refused, never used.
fn make_private(dir: &Path, shared: bool) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = nix::unistd::geteuid().as_raw();
    if shared && (!meta.is_dir() || meta.uid() != uid) {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not {uid}",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o777 != 0o700 && meta.uid() == uid {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // The mode says nothing of a read-only mount: ask the kernel.
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_name_is_stable_and_says_which_project() {
        let a = private_name(Path::new("/srv/app/corral.toml"));
        assert_eq!(a, private_name(Path::new("/srv/app/corral.toml")));
        assert!(a.starts_with("app-") && a.len() == 4 + 16, "{a}");
        assert_ne!(a, private_name(Path::new("/srv/app/other.toml")));
    }

    #[test]
    fn the_list_starts_beside_the_config_and_ends_in_the_temp_dir() {
        let list = candidates(Path::new("/srv/app/corral.toml"));
        assert_eq!(list[0], Path::new("/srv/app/.corral"));
        assert!(
            list.iter().any(|d| d.starts_with("/run/corral")),
            "{list:?}"
        );
        assert!(list
            .last()
            .is_some_and(|d| d.starts_with(std::env::temp_dir())));
    }

    #[test]
    fn configured_reads_the_last_file_that_sets_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        std::fs::write(&a, "[corral]\nstate-dir = \"/var/tmp/x\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&b, "[corral]\nstate-dir = \"state\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            configured(std::slice::from_ref(&a)),
            Some(PathBuf::from("/var/tmp/x"))
        );
        let both = configured(&[a.clone(), b]);
        assert_eq!(both, Some(config::dir_of(&a).join("state")));
        std::fs::write(&a, "[corral\nbroken").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configured(&[a]), None);
    }
}
