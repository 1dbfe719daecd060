//! Reload: diff a new config against the running one, keeping indices stable.

use corral_proto::ReloadResult;

use crate::config::{topological_order, Config, Service};
use crate::engine::{ReloadPlan, Spec};

/// The running services realigned to a new config, and what the engine must do.
pub struct Realigned {
    /// The new config with its services realigned: same indices as before,
    /// new services appended, removed ones kept (retired); the start order
    /// is the plan's.
    pub config: Config,
    pub plan: ReloadPlan,
    pub result: ReloadResult,
}

/// Lines the new config up with the running one by service name.
pub fn realign(old: &[Service], old_retired: &[bool], new: Config) -> Realigned {
    let old_names: Vec<String> = old.iter().map(|s| s.name.clone()).collect();
    let new_names: Vec<String> = new.services.iter().map(|s| s.name.clone()).collect();
    let old_groups: Vec<String> = old.iter().map(|s| s.group.clone()).collect();
    let new_groups: Vec<String> = new.services.iter().map(|s| s.group.clone()).collect();
    // Where each new service lands in the aligned vector.
    let mut slot = Vec::with_capacity(new.services.len());
    let mut next = old.len();
    for name in &new_names {
        match old_names.iter().position(|n| n == name) {
            Some(i) => slot.push(i),
            None => {
                slot.push(next);
                next += 1;
            }
        }
    }
    let mut services: Vec<Service> = old.to_vec();
    let mut retired = old_retired.to_vec();
    retired.resize(next, false);
    let mut result = ReloadResult::default();
    let (mut changed, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new());
    for (k, mut svc) in new.services.into_iter().enumerate() {
        let i = slot[k];
        let same = i < old.len()
            && !old_retired[i]
            && old[i].same_definition(&old_groups, &svc, &new_groups);
        for d in &mut svc.depends_on {
            d.service = slot[d.service];
        }
        if i >= old.len() {
            added.push(i);
            result.added.push(svc.name.clone());
            services.push(svc);
        } else {
            if same {
                result.unchanged.push(svc.name.clone());
            } else if old_retired[i] {
                // Back after a reload or a scale took it away: for the user
                // it is added (the engine revives its slot as a change).
                changed.push(i);
                result.added.push(svc.name.clone());
            } else {
                changed.push(i);
                result.changed.push(svc.name.clone());
            }
            retired[i] = false;
            services[i] = svc;
        }
    }
    for (i, name) in old_names.iter().enumerate() {
        if !old_retired[i] && !new_names.contains(name) {
            removed.push(i);
            retired[i] = true;
            result.removed.push(name.clone());
            services[i].depends_on.clear();
        }
    }
    let edges: Vec<Vec<usize>> = services
        .iter()
        .map(|s| s.depends_on.iter().map(|d| d.service).collect())
        .collect();
    let order = topological_order(&edges)
        .into_iter()
        .filter(|&i| !retired[i])
        .collect();
    let mut aligned = Config {
        services,
        start_order: Vec::new(),
        ..new
    };
    let plan = ReloadPlan {
        specs: Spec::from_config(&aligned),
        order,
        changed,
        added,
        removed,
        shutdown_timeout: aligned.global.shutdown_timeout,
        missing: Vec::new(),
    };
    aligned.start_order = plan.order.clone();
    Realigned {
        config: aligned,
        plan,
        result,
    }
}
