//! Resolving `user = "name" | "uid[:gid]"` to a full identity, in the parent,
//! from /etc/passwd and /etc/group read directly: never NSS, so the static
//! executable resolves users in an image that has only those two files, and
//! numeric ids in one that has neither (as runc and Docker do).

use std::path::Path;

/// Who a service runs as: resolved before any fork, so the child only makes syscalls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from the group file, as initgroups would set them).
    pub groups: Vec<u32>,
    pub home: String,
}

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The user and group files as read once; lines that could not be read are
/// skipped and said in `warnings` (`FILE:LINE: ...`).
#[derive(Debug, Default)]
pub struct Accounts {
    users: Vec<Account>,
    groups: Vec<GroupEntry>,
    pub warnings: Vec<String>,
}

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

impl Accounts {
    /// Reads /etc/passwd and /etc/group; a missing file is an empty one.
    pub fn read() -> Accounts {
        Accounts::read_from(Path::new(PASSWD), Path::new(GROUP))
    }

    pub fn read_from(passwd: &Path, group: &Path) -> Accounts {
        let mut warnings = Vec::new();
        let mut text = |path: &Path| match super::files::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warnings.push(format!("{}: cannot read: {e}", path.display()));
                Vec::new()
            }
        };
        let (passwd_text, group_text) = (text(passwd), text(group));
        let mut accounts = Accounts::parse(&passwd_text, passwd, &group_text, group);
        warnings.append(&mut accounts.warnings);
        accounts.warnings = warnings;
        accounts
    }

    /// Parses the two files' text; `*_path` name them in warnings.
    pub fn parse(passwd: &[u8], passwd_path: &Path, group: &[u8], group_path: &Path) -> Accounts {
        let mut warnings = Vec::new();
        let users = entries(passwd, passwd_path, 7, &mut warnings, |f| {
            Ok(Account {
                name: f[0].to_string(),
                uid: id(f[2], "uid")?,
                gid: id(f[3], "gid")?,
                home: f[5].to_string(),
            })
        });
        let groups = entries(group, group_path, 4, &mut warnings, |f| {
            Ok(GroupEntry {
                name: f[0].to_string(),
                gid: id(f[2], "gid")?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        });
        Accounts {
            users,
            groups,
            warnings,
        }
    }

    fn user_named(&self, name: &str) -> Option<&Account> {
        self.users.iter().find(|u| u.name == name)
    }

    fn user_with_uid(&self, uid: u32) -> Option<&Account> {
        self.users.iter().find(|u| u.uid == uid)
    }

    /// The gid of the group called `name`.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|g| g.name == name).map(|g| g.gid)
    }

    /// `gid` first, then every other group that lists `user` as a member,
    /// as initgroups sets them.
    fn groups_of(&self, user: &str, gid: u32) -> Vec<u32> {
        let mut groups = vec![gid];
        for g in &self.groups {
            if g.members.iter().any(|m| m == user) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
        groups
    }

    /// Resolves a user spec; Err is a message for the config diagnostic.
    pub fn resolve(&self, spec: &str) -> Result<Identity, String> {
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let numeric = user_part.parse::<u32>().ok();
        let entry = match numeric {
            Some(uid) => self.user_with_uid(uid),
            None => Some(
                self.user_named(user_part)
                    .ok_or_else(|| format!("no such user {user_part:?} in {PASSWD}"))?,
            ),
        };
        let gid = match group_part {
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => self
                    .gid_of(g)
                    .ok_or_else(|| format!("no such group {g:?} in {GROUP}"))?,
            },
            None => entry.map_or(numeric.unwrap_or(0), |u| u.gid),
        };
        Ok(match (entry, numeric) {
            (Some(u), _) => Identity {
                name: u.name.clone(),
                uid: u.uid,
                gid,
                groups: self.groups_of(&u.name, gid),
                home: u.home.clone(),
            },
            // A numeric uid with no passwd entry: allowed, as in Docker's USER.
            (None, uid) => {
                let uid = uid.unwrap_or(0);
                Identity {
                    name: uid.to_string(),
                    uid,
                    gid,
                    groups: vec![gid],
                    home: "/".into(),
                }
            }
        })
    }

    /// The identity corral itself runs as (services without `user` get this one).
    pub fn current(&self) -> Identity {
        let uid = nix::unistd::geteuid().as_raw();
        let entry = self.user_with_uid(uid);
        Identity {
            name: entry.map_or_else(|| uid.to_string(), |u| u.name.clone()),
            uid,
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .map(|g| g.into_iter().map(nix::unistd::Gid::as_raw).collect())
                .unwrap_or_default(),
            home: entry.map_or_else(|| "/".into(), |u| u.home.clone()),
        }
    }
}

/// The entries of a colon-separated file of `fields` fields: comments,
/// blank lines and NIS compat lines (`+`, `-`) skipped quietly, malformed
/// lines skipped with a warning.
fn entries<T>(
    text: &[u8],
    path: &Path,
    fields: usize,
    warnings: &mut Vec<String>,
    entry: impl Fn(&[&str]) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string());
        let line = line.as_deref().map(|l| l.strip_suffix('\r').unwrap_or(l));
        if line.is_ok_and(|l| l.trim().is_empty() || l.starts_with(['#', '+', '-'])) {
            continue;
        }
        let f: Vec<&str> = line.map(|l| l.split(':').collect()).unwrap_or_default();
        let parsed = if let Err(why) = line {
            Err(why.clone())
        } else if f.len() != fields {
            Err(format!("{} fields where {fields} were expected", f.len()))
        } else if f[0].is_empty() {
            Err("no name".to_string())
        } else {
            entry(&f)
        };
        match parsed {
            Ok(e) => out.push(e),
            Err(why) => warnings.push(format!("{}:{}: line skipped: {why}", path.display(), i + 1)),
        }
    }
    out
}

fn id(field: &str, what: &str) -> Result<u32, String> {
    field
        .parse()
        .map_err(|_| format!("{what} {field:?} is not a number"))
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

    const PASSWD_TEXT: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
app:x:1000:1000:App:/home/app:/bin/sh
broken line without colons
bad:x:notanumber:1:::
+nis
web:x:1001:1001::/srv/web:/bin/sh
";
    const GROUP_TEXT: &str = "\
root:x:0:
app:x:1000:
web:x:1001:
audio:x:29:app,web
video:x:44:web
oops:x:
";

    fn accounts() -> Accounts {
        Accounts::parse(
            PASSWD_TEXT.as_bytes(),
            Path::new("/etc/passwd"),
            GROUP_TEXT.as_bytes(),
            Path::new("/etc/group"),
        )
    }

    fn resolve(spec: &str) -> Identity {
        accounts().resolve(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_resolve_with_their_groups_and_home() {
        let web = resolve("web");
        assert_eq!(
            (web.uid, web.gid, web.home.as_str()),
            (1001, 1001, "/srv/web")
        );
        assert_eq!(web.groups, vec![1001, 29, 44]);
        let app = resolve("app:audio");
        assert_eq!((app.uid, app.gid), (1000, 29));
        assert_eq!(app.groups, vec![29]);
    }

    #[test]
    fn numbers_resolve_with_or_without_an_entry() {
        assert_eq!(resolve("0:0").name, "root");
        let nobody = resolve("4242:4343");
        assert_eq!(
            (nobody.name.as_str(), nobody.uid, nobody.gid),
            ("4242", 4242, 4343)
        );
        assert_eq!((nobody.groups, nobody.home), (vec![4343], "/".to_string()));
        let empty = Accounts::default()
            .resolve("1000:1000")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((empty.uid, empty.gid), (1000, 1000));
    }

    #[test]
    fn bad_lines_are_skipped_and_said() {
        let a = accounts();
        assert_eq!(a.warnings.len(), 3, "{:?}", a.warnings);
        assert!(
            a.warnings[0].starts_with("/etc/passwd:4: line skipped: 1 fields"),
            "{:?}",
            a.warnings
        );
        assert!(
            a.warnings[1].contains("/etc/passwd:5: line skipped: uid \"notanumber\""),
            "{:?}",
            a.warnings
        );
        assert!(
            a.warnings[2].starts_with("/etc/group:6: line skipped"),
            "{:?}",
            a.warnings
        );
        assert!(a.resolve("bad").is_err());
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = accounts().resolve("no-such-user").err().unwrap_or_default();
        assert_eq!(err, "no such user \"no-such-user\" in /etc/passwd");
        let err = accounts().resolve("app:nogroup").err().unwrap_or_default();
        assert_eq!(err, "no such group \"nogroup\" in /etc/group");
    }

    #[test]
    fn a_missing_file_is_empty_and_unreadable_bytes_do_not_panic() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = Accounts::read_from(&dir.path().join("passwd"), &dir.path().join("group"));
        assert!(a.warnings.is_empty() && a.users.is_empty());
        let passwd = dir.path().join("passwd-bin");
        std::fs::write(&passwd, b"root:x:0:0::/root:/bin/sh\n\xff\xfe:x:1:1::/:\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let a = Accounts::read_from(&passwd, &dir.path().join("group"));
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(
            a.warnings[0].ends_with("passwd-bin:2: line skipped: not UTF-8"),
            "{:?}",
            a.warnings
        );
        assert_eq!(a.resolve("root").map(|r| r.uid), Ok(0));
    }
}
