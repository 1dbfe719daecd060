//! Service discovery: who provides which name, and what dependents get from it.

mod local;
mod render;

pub use local::LocalRegistry;
pub use render::{endpoint_env, render_templates, write_endpoints_file};

use corral_proto::Endpoint;

/// Where endpoints are published and looked up.
///
/// The contract every backend keeps (tests/discovery.rs runs it against each):
/// - `register` publishes an endpoint; the same (name, instance) replaces the
///   earlier one, so a restarted instance never shows up twice.
/// - `withdraw` removes every endpoint of an instance.
/// - `lookup` answers from what the backend knows now, in a stable order
///   (by instance, then port), and never blocks.
/// - Every call that changes what `lookup` answers returns the names it changed.
pub trait Registry {
    fn register(&mut self, endpoint: Endpoint) -> Vec<String>;
    fn withdraw(&mut self, instance: &str) -> Vec<String>;
    fn lookup(&self, name: &str) -> Vec<Endpoint>;
    /// Every endpoint known, by name.
    fn all(&self) -> Vec<Endpoint>;
}

/// The variable prefix for a required name: `postgres-main` -> `POSTGRES_MAIN`.
pub fn env_prefix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(env_prefix("postgres"), "POSTGRES");
        assert_eq!(env_prefix("my-api.v2"), "MY_API_V2");
    }
}
