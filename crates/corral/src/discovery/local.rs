//! The built-in registry for one host: a map in the supervisor's memory.

use std::collections::BTreeMap;

use corral_proto::Endpoint;

use super::Registry;

/// Endpoints keyed by (name, instance).
#[derive(Debug, Default)]
pub struct LocalRegistry {
    endpoints: BTreeMap<(String, String), Endpoint>,
}

impl LocalRegistry {
    /// Takes back one endpoint; whether it was there.
    pub fn remove(&mut self, name: &str, instance: &str) -> bool {
        self.endpoints
            .remove(&(name.to_string(), instance.to_string()))
            .is_some()
    }

    /// Replaces every endpoint of other hosts by `others` (a remote
    /// backend's whole view), keeping this host's (`host_id`) as they are:
    /// this host is the authority on its own. Returns the names that changed.
    pub fn replace_others(&mut self, host_id: &str, others: Vec<Endpoint>) -> Vec<String> {
        let fresh: BTreeMap<(String, String), Endpoint> = others
            .into_iter()
            .filter(|e| e.host_id != host_id)
            .map(|e| ((e.name.clone(), e.instance.clone()), e))
            .collect();
        let mut changed = std::collections::BTreeSet::new();
        self.endpoints.retain(|key, e| {
            let keep = e.host_id == host_id || fresh.contains_key(key);
            if !keep {
                changed.insert(key.0.clone());
            }
            keep
        });
        for (key, e) in fresh {
            if self.endpoints.get(&key) != Some(&e) {
                changed.insert(key.0.clone());
                self.endpoints.insert(key, e);
            }
        }
        changed.into_iter().collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::contract::ep;

    #[test]
    fn a_remote_view_replaces_other_hosts_only() {
        let mut r = LocalRegistry::default();
        r.register(ep("db", "me:db", 5432));
        r.register(ep("api", "b:api", 80));
        r.register(ep("cache", "c:cache", 6379));
        // The remote view: b's api moved, c's cache is gone, d's queue is new,
        // and it does not know (yet) about this host's db.
        let changed = r.replace_others("me", vec![ep("api", "b:api", 81), ep("queue", "d:q", 1)]);
        assert_eq!(changed, ["api", "cache", "queue"]);
        assert_eq!(r.lookup("db").len(), 1, "this host's own endpoint stays");
        assert_eq!(r.lookup("api")[0].port, 81);
        assert!(r
            .replace_others("me", vec![ep("api", "b:api", 81), ep("queue", "d:q", 1)])
            .is_empty());
        assert!(r.remove("queue", "d:q"));
        assert!(!r.remove("queue", "d:q"));
    }
}
