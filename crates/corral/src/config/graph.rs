//! The start graph: resolves depends-on names, rejects cycles, orders the start.

use std::path::Path;

use super::diag::{suggestion, Diagnostics};
use super::document::RawConfig;
use super::{Condition, Config, Dependency};

/// Turns parsed services into a Config with indexed dependencies and a start order.
pub fn resolve(raw: RawConfig, path: &Path, d: &mut Diagnostics<'_>) -> Option<Config> {
    // depends-on names a service as written in the file: all its instances.
    let groups: Vec<String> = raw
        .services
        .iter()
        .map(|s| s.service.group.clone())
        .collect();
    let any_explicit = raw.services.iter().any(|s| !s.depends_on.is_empty());
    // The instances of each service, by name: one look-up per dependency.
    let mut instances: std::collections::HashMap<&str, Vec<usize>> =
        std::collections::HashMap::new();
    for (j, g) in groups.iter().enumerate() {
        instances.entry(g.as_str()).or_default().push(j);
    }
    let provided: std::collections::HashSet<&str> = raw
        .services
        .iter()
        .flat_map(|s| s.service.links().provides.iter().map(|p| p.name.as_str()))
        .collect();
    // With the one-host registry only this file can provide a name; with
    // etcd another host may.
    let local = raw.global.discovery.etcd.is_none();
    for rs in &raw.services {
        for require in &rs.service.links().requires {
            if provided.contains(require.name.as_str()) {
                continue;
            }
            let message = format!(
                "service {:?} requires {:?}, which no service in this file provides",
                rs.service.group, require.name
            );
            if local {
                d.error(
                    rs.name_span.clone(),
                    format!("{message}: it would wait for it forever (discovery is local)"),
                );
            } else {
                d.warning(
                    rs.name_span.clone(),
                    format!("{message}: another host must (discovery is etcd)"),
                );
            }
        }
    }
    let mut services = Vec::with_capacity(raw.services.len());
    let mut edge_spans: Vec<Vec<std::ops::Range<usize>>> = Vec::with_capacity(raw.services.len());
    for rs in raw.services {
        let mut svc = rs.service;
        let mut spans = Vec::new();
        for dep in rs.depends_on {
            let targets: &[usize] = instances.get(dep.name.as_str()).map_or(&[], Vec::as_slice);
            if dep.name == svc.group {
                d.error(
                    dep.span,
                    format!("service {:?} depends on itself", svc.group),
                );
            } else if targets.is_empty() {
                d.error(
                    dep.span,
                    format!(
                        "service {:?} depends on unknown service {:?}{}",
                        svc.group,
                        dep.name,
                        suggestion(&dep.name, groups.iter().map(String::as_str))
                    ),
                );
            } else if svc
                .depends_on
                .iter()
                .any(|e: &Dependency| targets.contains(&e.service))
            {
                d.error(
                    dep.span,
                    format!("{:?} is listed twice in depends-on", dep.name),
                );
            } else {
                for &j in targets {
                    svc.depends_on.push(Dependency {
                        service: j,
                        condition: dep.condition,
                        restart: dep.restart,
                        explicit: true,
                    });
                    spans.push(dep.span.clone());
                }
            }
        }
        spans.resize(svc.depends_on.len(), rs.name_span.clone());
        edge_spans.push(spans);
        services.push(svc);
    }
    // Without any depends-on, file order is start order (each waits for the one
    // before it to start, or to complete if that one is a oneshot).
    if !any_explicit && !raw.global.parallel {
        for i in 1..services.len() {
            let condition = if services[i - 1].oneshot {
                Condition::Completed
            } else {
                Condition::Started
            };
            services[i].depends_on.push(Dependency {
                service: i - 1,
                condition,
                restart: false,
                explicit: false,
            });
            edge_spans[i].push(0..0);
        }
    }
    let edges: Vec<Vec<usize>> = services
        .iter()
        .map(|s| s.depends_on.iter().map(|e| e.service).collect())
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        let path: Vec<&str> = cycle.iter().map(|&i| services[i].name.as_str()).collect();
        let (from, to) = (cycle[0], cycle[1]);
        let span = edges[from]
            .iter()
            .position(|&e| e == to)
            .and_then(|k| edge_spans[from].get(k).cloned())
            .unwrap_or(0..0);
        d.error(
            span,
            format!(
                "dependency cycle: {} (each depends on the next)",
                path.join(" -> ")
            ),
        );
        return None;
    }
    let start_order = topological_order(&edges);
    Some(Config {
        path: path.to_path_buf(),
        global: raw.global,
        services,
        start_order,
        procfile: None,
        files: vec![path.to_path_buf()],
    })
}

/// A cycle as a closed path (first == last), if the graph has one.
pub fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    let mut stack: Vec<usize> = Vec::new();
    for root in 0..edges.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index).
        let mut frames = vec![(root, 0usize)];
        mark[root] = Mark::OnStack;
        stack.push(root);
        while let Some((node, next)) = frames.last().copied() {
            if let Some(&dep) = edges[node].get(next) {
                if let Some(f) = frames.last_mut() {
                    f.1 += 1;
                }
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::OnStack;
                        stack.push(dep);
                        frames.push((dep, 0));
                    }
                    Mark::OnStack => {
                        let start = stack.iter().position(|&n| n == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[start..].to_vec();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
                frames.pop();
            }
        }
    }
    None
}

/// Kahn's algorithm, ties broken by file order.
pub fn topological_order(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    let mut remaining: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in edges.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            remaining[j] -= 1;
            if remaining[j] == 0 {
                ready.insert(j);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cycle_and_prints_it_closed() {
        // a(0) -> b(1) -> c(2) -> a(0)
        let edges = vec![vec![1], vec![2], vec![0]];
        let cycle = find_cycle(&edges).unwrap_or_default();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
    }

    #[test]
    fn order_respects_edges_and_file_order() {
        // 0 depends on 2; 1 free; 2 free.
        assert_eq!(topological_order(&[vec![2], vec![], vec![]]), vec![1, 2, 0]);
        // diamond: 3 <- 1,2 <- 0
        assert_eq!(
            topological_order(&[vec![], vec![0], vec![0], vec![1, 2]]),
            vec![0, 1, 2, 3]
        );
    }
}

/// The longest chain of a shutdown: a service stops once everything that
/// depends on it has ended, so the chain that ends with `s` takes s's own
/// `weights[s]` plus the longest chain among its dependents. `order` is a
/// start order (dependencies first). Returns the chain's total and its
/// services in the order they stop.
pub fn longest_stop_chain(
    weights: &[std::time::Duration],
    dependents: &[Vec<usize>],
    order: &[usize],
) -> (std::time::Duration, Vec<usize>) {
    let mut best = vec![None; weights.len()];
    // The dependent on each service's longest chain (it stops just before).
    let mut before = vec![None; weights.len()];
    for &s in order.iter().rev() {
        let mut longest = std::time::Duration::ZERO;
        for &d in &dependents[s] {
            if let Some(t) = best[d].filter(|&t| t > longest || before[s].is_none()) {
                longest = t;
                before[s] = Some(d);
            }
        }
        best[s] = Some(weights[s] + longest);
    }
    let Some((last, total)) = order
        .iter()
        .filter_map(|&s| best[s].map(|t| (s, t)))
        .max_by_key(|&(s, t)| (t, std::cmp::Reverse(s)))
    else {
        return (std::time::Duration::ZERO, Vec::new());
    };
    let mut chain = vec![last];
    while let Some(d) = before[chain[chain.len() - 1]] {
        chain.push(d);
    }
    chain.reverse();
    (total, chain)
}

#[cfg(test)]
mod chain_tests {
    use super::longest_stop_chain;
    use std::time::Duration;

    #[test]
    fn the_longest_chain_follows_dependents_first() {
        // web and worker depend on db; proxy depends on web.
        let s = Duration::from_secs;
        let weights = [s(10), s(5), s(3), s(2)]; // db, web, worker, proxy
        let dependents = vec![vec![1, 2], vec![3], vec![], vec![]];
        let (total, chain) = longest_stop_chain(&weights, &dependents, &[0, 1, 2, 3]);
        assert_eq!(total, s(17));
        assert_eq!(chain, vec![3, 1, 0], "proxy, then web, then db");
        let (total, chain) = longest_stop_chain(&[s(1), s(9)], &[vec![], vec![]], &[0, 1]);
        assert_eq!((total, chain), (s(9), vec![1]));
        assert_eq!(longest_stop_chain(&[], &[], &[]), (Duration::ZERO, vec![]));
    }
}
