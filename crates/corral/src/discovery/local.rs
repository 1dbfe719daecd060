//! The built-in registry for one host: a map in the supervisor's memory.

use std::collections::BTreeMap;

use corral_proto::Endpoint;

use super::Registry;

/// Endpoints keyed by (name, instance).
#[derive(Debug, Default)]
pub struct LocalRegistry {
    endpoints: BTreeMap<(String, String), Endpoint>,
}

impl Registry for LocalRegistry {
    fn register(&mut self, endpoint: Endpoint) -> Vec<String> {
        let key = (endpoint.name.clone(), endpoint.instance.clone());
        let name = endpoint.name.clone();
        match self.endpoints.insert(key, endpoint.clone()) {
            Some(old) if old == endpoint => Vec::new(),
            _ => vec![name],
        }
    }

    fn withdraw(&mut self, instance: &str) -> Vec<String> {
        let mut changed = Vec::new();
        self.endpoints.retain(|(name, inst), _| {
            let keep = inst != instance;
            if !keep && !changed.contains(name) {
                changed.push(name.clone());
            }
            keep
        });
        changed
    }

    fn lookup(&self, name: &str) -> Vec<Endpoint> {
        let mut found: Vec<Endpoint> = self
            .endpoints
            .range((name.to_string(), String::new())..)
            .take_while(|((n, _), _)| n == name)
            .map(|(_, e)| e.clone())
            .collect();
        found.sort_by(|a, b| (&a.instance, a.port).cmp(&(&b.instance, b.port)));
        found
    }

    fn all(&self) -> Vec<Endpoint> {
        self.endpoints.values().cloned().collect()
    }
}
