//! Service environments: corral's own environment, env files, inherit-env globs.

use std::collections::BTreeMap;
use std::path::Path;

use super::dotenv;
use super::user::{self, Identity};
use crate::strings::{self, Strings};

/// The PATH a service gets when corral itself has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A snapshot of corral's own environment, the source of interpolation and inherit-env.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    pub vars: BTreeMap<String, String>,
    /// Who corral runs as: services without `user` run as this identity.
    pub identity: Identity,
    /// What reading the project's `.env` found (unset `${...}`).
    pub warnings: Vec<super::Diagnostic>,
}

impl HostEnv {
    /// The environment of the running corral process (non-UTF-8 entries are skipped).
    pub fn from_process() -> Self {
        HostEnv {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            identity: user::Accounts::read().current(),
            warnings: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Matches `name` against a pattern where `*` is any run and `?` any one
/// character (byte: variable names are ASCII). No allocation: it runs for
/// every variable of corral's environment, for every service.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// The pieces a service environment is built from, lowest precedence first.
pub struct EnvParts<'a> {
    pub host: &'a HostEnv,
    pub identity: &'a Identity,
    pub inherit: &'a [String],
    pub files: Vec<(String, String)>,
    pub explicit: Vec<(String, String)>,
    /// The instance's own variables (CORRAL_SERVICE, CORRAL_REPLICA,
    /// PORT): they win over any other source, and are added at each spawn.
    pub own: &'a [&'a str],
}

/// A service's environment, sorted by name, kept for as long as the
/// service is configured: its `NAME=value` entries in one allocation (a
/// vector of string pairs takes several times that).
/// Without the instance's own variables (`Service::own_env`), so services
/// whose environments are otherwise the same share one.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Env(Strings);

impl Env {
    /// The variables in order, as (name, value). Names have no '=' (the
    /// config, env files and the process environment all ensure it).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0
            .iter()
            .map(|entry| entry.split_once('=').unwrap_or((entry, "")))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// As owned pairs (`corral exec`, the API's exec spec).
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Env {
    /// Entries in the order given (callers give them sorted).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(vars: I) -> Env {
        let mut entries = strings::Builder::default();
        for (k, v) in vars {
            entries.push(&[k.as_ref(), "=", v.as_ref()]);
        }
        Env(entries.finish())
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// An instance's own variables: CORRAL_SERVICE, and for replicas
/// CORRAL_REPLICA and PORT. They win over every other source.
pub fn own_vars(
    service: &str,
    replica: Option<u32>,
    port: Option<u32>,
) -> Vec<(&'static str, String)> {
    let mut own = vec![("CORRAL_SERVICE", service.to_string())];
    if let Some(i) = replica {
        own.push(("CORRAL_REPLICA", i.to_string()));
    }
    if let Some(p) = port {
        own.push(("PORT", p.to_string()));
    }
    own
}

/// Builds the isolated environment: PATH, HOME/USER/LOGNAME, inherit-env,
/// env-file, env; CORRAL_SERVICE (and CORRAL_REPLICA, PORT) are left out,
/// as the instance adds them. Nothing else of corral's passes through.
pub fn assemble(parts: EnvParts<'_>) -> Env {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        parts.host.get("PATH").unwrap_or(DEFAULT_PATH).to_string(),
    );
    env.insert("HOME".into(), parts.identity.home.clone());
    env.insert("USER".into(), parts.identity.name.clone());
    env.insert("LOGNAME".into(), parts.identity.name.clone());
    for (k, v) in &parts.host.vars {
        if parts.inherit.iter().any(|p| glob_match(p, k)) {
            env.insert(k.clone(), v.clone());
        }
    }
    env.extend(parts.files);
    env.extend(parts.explicit);
    for name in parts.own {
        env.remove(*name);
    }
    env.into_iter().collect()
}

/// Whether a variable's value should be masked, judging by its name: one
/// of its `_`-separated words says so (KEY but not KEYBOARD, AUTH but not
/// AUTHOR), or it contains a word that only secrets use (PASSWORD...).
pub fn looks_secret(name: &str) -> bool {
    const CONTAINED: [&str; 5] = ["SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE"];
    const WORDS: [&str; 6] = ["KEY", "TOKEN", "PASS", "AUTH", "SK", "PWD"];
    let upper = name.to_ascii_uppercase();
    CONTAINED.iter().any(|m| upper.contains(m))
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| WORDS.contains(&word) || word.ends_with("TOKEN"))
}

const MASK: &str = "********";

/// How a variable's value is shown by `check` and the API: None when it can
/// be shown as it is. Secrets are recognised by name and by shape: a
/// password in a URL (the rest of the URL stays readable), a Bearer or Basic
/// credential, or a long random-looking string.
pub fn masked(name: &str, value: &str) -> Option<String> {
    if let Some(url) = url_without_password(value) {
        return Some(url);
    }
    for scheme in ["Bearer ", "Basic ", "Token "] {
        let prefix = value.get(..scheme.len());
        if value.len() > scheme.len() && prefix.is_some_and(|p| p.eq_ignore_ascii_case(scheme)) {
            return Some(format!("{}{MASK}", &value[..scheme.len()]));
        }
    }
    (looks_secret(name) || looks_random(value)).then(|| MASK.to_string())
}

/// `scheme://user:PASSWORD@host...` with the password masked.
fn url_without_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, _) = rest[..authority_end].rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    if password.is_empty() {
        return None;
    }
    let after = &rest[userinfo.len()..];
    Some(format!("{scheme}://{user}:{MASK}{after}"))
}

/// At least 24 characters with no spaces, mixing letters and digits, and
/// not a path or a URL: keys and tokens look like that, words do not.
fn looks_random(value: &str) -> bool {
    value.len() >= 24
        && !value.contains([' ', '/', ':'])
        && value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_uppercase())
        && value.chars().any(|c| c.is_ascii_lowercase())
}

/// Reads and parses an env file, for error reporting: Err((line, message)).
/// The entries of a `KEY=VALUE` file, read with compose's dotenv rules
/// (`dotenv.rs`); Err((line, message)), line 0 when it cannot be read.
pub fn read_env_file(path: &Path) -> Result<Vec<dotenv::Entry>, (usize, String)> {
    let text = super::files::read_to_string(path)
        .map_err(|e| (0, format!("cannot read env file {}: {e}", path.display())))?;
    dotenv::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_env_keeps_every_pair_in_order() {
        let pairs = [
            ("A", "1"),
            ("EMPTY", ""),
            ("URL", "postgres://u:p@h/db?x=y"),
            ("Z", "last=one"),
        ];
        let env: Env = pairs.iter().copied().collect();
        assert_eq!(env.len(), 4);
        assert_eq!(env.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(env.get("URL"), Some("postgres://u:p@h/db?x=y"));
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.get("Z"), Some("last=one"));
        assert_eq!(env.get("B"), None);
        assert_eq!(env.to_vec()[3], ("Z".to_string(), "last=one".to_string()));
        assert_eq!(format!("{env:?}").matches('"').count(), 16);
        let empty = Env::default();
        assert_eq!((empty.len(), empty.iter().count()), (0, 0));
    }

    #[test]
    fn globs() {
        assert!(glob_match("PG*", "PGHOST"));
        assert!(glob_match("PG*", "PG"));
        assert!(!glob_match("PG*", "XPG"));
        assert!(glob_match("*_URL", "DATABASE_URL"));
        assert!(glob_match("T?", "TZ"));
        assert!(glob_match("TZ", "TZ"));
        assert!(!glob_match("TZ", "TZX"));
        assert!(glob_match("A*B*C", "AxxBxxC"));
    }

    #[test]
    fn secrets_are_recognised() {
        for name in [
            "DB_PASSWORD",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_KEY",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "PATH", "HOME", "PGPORT", "KEYBOARD", "AUTHOR", "SKIP", "PASSAGE",
        ] {
            assert!(!looks_secret(name), "{name}");
        }
        for name in ["STRIPE_SK", "AUTH", "DB_PASS", "GITHUB_TOKEN", "APITOKEN"] {
            assert!(looks_secret(name), "{name}");
        }
    }
}
