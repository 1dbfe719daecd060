//! Resolving `user = "name" | "uid[:gid]"` to a full identity, in the parent.

use nix::unistd::{Gid, Group, Uid, User};

/// Who a service runs as: resolved before any fork, so the child only makes syscalls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from the group database, as initgroups would set them).
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves a user spec; Err is a message for the config diagnostic.
pub fn resolve(spec: &str) -> Result<Identity, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = if let Ok(uid) = user_part.parse::<u32>() {
        User::from_uid(Uid::from_raw(uid)).map_err(|e| format!("cannot look up uid {uid}: {e}"))?
    } else {
        let found = User::from_name(user_part)
            .map_err(|e| format!("cannot look up user {user_part:?}: {e}"))?;
        Some(found.ok_or_else(|| format!("no such user {user_part:?} in the user database"))?)
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("cannot look up group {g:?}: {e}"))?
                .ok_or_else(|| format!("no such group {g:?} in the group database"))?
                .gid
                .as_raw(),
        },
        None => match &entry {
            Some(u) => u.gid.as_raw(),
            None => user_part.parse::<u32>().unwrap_or(0),
        },
    };
    let identity = match entry {
        Some(u) => {
            let groups = std::ffi::CString::new(u.name.clone())
                .ok()
                .and_then(|c| nix::unistd::getgrouplist(&c, Gid::from_raw(gid)).ok())
                .map(|g| g.into_iter().map(Gid::as_raw).collect())
                .unwrap_or_else(|| vec![gid]);
            Identity {
                home: u.dir.to_string_lossy().into_owned(),
                name: u.name,
                uid: u.uid.as_raw(),
                gid,
                groups,
            }
        }
        None => {
            // A numeric uid with no passwd entry: allowed, as in Docker's USER.
            let uid = user_part.parse::<u32>().unwrap_or(0);
            Identity {
                name: uid.to_string(),
                uid,
                gid,
                groups: vec![gid],
                home: "/".into(),
            }
        }
    };
    Ok(identity)
}

/// The identity corral itself runs as (services without `user` get this one).
pub fn current() -> Identity {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let entry = User::from_uid(uid).ok().flatten();
    Identity {
        name: entry
            .as_ref()
            .map_or_else(|| uid.to_string(), |u| u.name.clone()),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        groups: nix::unistd::getgroups()
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_default(),
        home: entry.map_or_else(|| "/".into(), |u| u.dir.to_string_lossy().into_owned()),
    }
}

/// Whether corral may switch to `target`: it must be root, or already be that user.
pub fn can_switch_to(target: &Identity) -> Result<(), String> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 || (euid == target.uid && nix::unistd::getegid().as_raw() == target.gid) {
        Ok(())
    } else {
        Err(format!(
            "cannot run as user {:?} (uid {}): corral runs as uid {euid} and only root can switch users",
            target.name, target.uid
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_by_name_and_number() {
        let by_name = resolve("root").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        let by_uid = resolve("0:0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_uid.name, "root");
    }

    #[test]
    fn unknown_user_is_an_error() {
        let err = resolve("no-such-user-corral").err().unwrap_or_default();
        assert!(err.contains("no such user"), "{err}");
    }
}
