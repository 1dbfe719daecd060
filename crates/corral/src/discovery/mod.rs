//! Service discovery: who provides which name, and what dependents get from it.

pub mod etcd;
mod local;
mod render;

pub use local::LocalRegistry;
pub use render::{endpoint_env, render_templates, write_endpoints_file};

use corral_proto::Endpoint;

/// Where endpoints are published and looked up.
///
/// The contract every backend keeps (`contract::check` runs it against a
/// backend directly; tests/discovery.rs checks it through the daemon):
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

/// The Registry contract, runnable against any backend.
#[cfg(test)]
pub mod contract {
    use std::collections::BTreeMap;

    use corral_proto::Endpoint;

    use super::Registry;

    /// A loopback endpoint, for tests.
    pub fn ep(name: &str, instance: &str, port: u16) -> Endpoint {
        Endpoint {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            tags: vec![],
            attrs: BTreeMap::new(),
            instance: instance.into(),
            host_id: instance.split(':').next().unwrap_or_default().into(),
        }
    }

    /// Checks everything the trait documents on an empty registry.
    pub fn check(registry: &mut dyn Registry) {
        assert!(registry.lookup("api").is_empty());
        assert_eq!(registry.register(ep("api", "h:api.1", 8001)), ["api"]);
        assert_eq!(registry.register(ep("api", "h:api.0", 8000)), ["api"]);
        // The same endpoint again changes nothing.
        assert!(registry.register(ep("api", "h:api.0", 8000)).is_empty());
        // A restarted instance replaces its own entry.
        assert_eq!(registry.register(ep("api", "h:api.0", 9000)), ["api"]);
        let ports: Vec<u16> = registry.lookup("api").iter().map(|e| e.port).collect();
        assert_eq!(
            ports,
            [9000, 8001],
            "one entry per instance, in instance order"
        );
        registry.register(ep("admin", "h:api.0", 9001));
        let mut changed = registry.withdraw("h:api.0");
        changed.sort();
        assert_eq!(changed, ["admin", "api"], "every name of the instance goes");
        assert_eq!(registry.lookup("api").len(), 1);
        assert!(registry.lookup("admin").is_empty());
        assert!(registry.withdraw("h:nobody").is_empty());
        assert_eq!(registry.all().len(), 1);
    }

    #[test]
    fn local_registry_keeps_the_contract() {
        super::check_local();
    }
}

#[cfg(test)]
fn check_local() {
    contract::check(&mut LocalRegistry::default());
}
