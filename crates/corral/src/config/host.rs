//! Checks of a config against this machine: env files read from disk, users
//! looked up in the user database, template sources that must exist. Each is
//! done once per distinct value, however many instances share it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::diag::Diagnostics;
use super::env;
use super::user::{self, Identity};

type EnvFile = Result<Vec<(String, String)>, (usize, String)>;

/// What has been looked up on this machine so far, while loading one file.
#[derive(Default)]
pub struct HostChecks {
    env_files: HashMap<PathBuf, EnvFile>,
    users: HashMap<String, Result<Identity, String>>,
}

impl HostChecks {
    /// The pairs of an env file; a missing or malformed file is an error at
    /// `span` (or at the offending line of the env file).
    pub fn env_file(
        &mut self,
        d: &mut Diagnostics<'_>,
        path: &Path,
        span: Range<usize>,
    ) -> Vec<(String, String)> {
        let read = self
            .env_files
            .entry(path.to_path_buf())
            .or_insert_with(|| env::read_env_file(path));
        match read {
            Ok(pairs) => pairs.clone(),
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
        let found = self.users.entry(spec.to_string()).or_insert_with(|| {
            user::resolve(spec).and_then(|id| user::can_switch_to(&id).map(|_| id))
        });
        match found {
            Ok(id) => Some(id.clone()),
            Err(msg) => {
                d.error(span, format!("{msg} (service {service:?})"));
                None
            }
        }
    }

    /// Whether a group of this name exists (for `socket-group`).
    pub fn group_exists(name: &str) -> bool {
        matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
    }

    /// A template's source must exist when the config is loaded.
    pub fn template_source(&self, d: &mut Diagnostics<'_>, source: &Path, span: Range<usize>) {
        if !source.exists() {
            let message = format!("template source {} does not exist", source.display());
            d.error(span, message);
        }
    }
}
