//! Which whole nodes serve a lease: the fewest that cover the request.
//!
//! Policy: greedy covering. While the request is not covered, take the free node that
//! covers the largest share of what is still missing (shares summed over the dimensions
//! the request asks for); ties go to the smaller node, then to the name, so the choice is
//! deterministic. Then drop every node the others can do without, and finally swap the
//! last node for the smallest one that still completes the cover. For requests in one
//! dimension (the common "N cores") this takes the minimum number of nodes; in every case
//! no chosen node is redundant, so the lease never gets more than one node's worth beyond
//! what it asked for. Candidates are free lendable nodes only, so two tenants never share
//! a node by construction.

use super::resources::Resources;

/// A free, lendable node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub allocatable: Resources,
    /// The pool's class for this node (from the pool's node classes), if any.
    pub class: Option<String>,
}

/// What a lease asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    Resources(Resources),
    Nodes { class: String, count: usize },
}

/// Why no choice of nodes serves the ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// All free nodes together lack this much.
    Resources(Resources),
    /// Only `available` free nodes of the class exist.
    Nodes {
        class: String,
        available: usize,
        wanted: usize,
    },
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::Resources(short) => write!(f, "short of {short}"),
            Shortfall::Nodes {
                class,
                available,
                wanted,
            } => {
                write!(
                    f,
                    "{available} free node(s) of class {class}, {wanted} wanted"
                )
            }
        }
    }
}

/// The chosen nodes' names, in a stable order.
pub fn choose(candidates: &[Candidate], ask: &Ask) -> Result<Vec<String>, Shortfall> {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    choose_in_order(sorted, ask).map(|nodes| nodes.into_iter().map(|c| c.name.clone()).collect())
}

/// The chosen nodes, in name order, from candidates already in name order (admission
/// sorts its free nodes once, not once per lease).
pub fn choose_sorted<'c>(
    candidates: &'c [Candidate],
    ask: &Ask,
) -> Result<Vec<&'c Candidate>, Shortfall> {
    debug_assert!(candidates.is_sorted_by(|a, b| a.name <= b.name));
    choose_in_order(candidates.iter().collect(), ask)
}

fn choose_in_order<'c>(
    sorted: Vec<&'c Candidate>,
    ask: &Ask,
) -> Result<Vec<&'c Candidate>, Shortfall> {
    match ask {
        Ask::Nodes { class, count } => {
            let matching: Vec<&Candidate> = sorted
                .into_iter()
                .filter(|c| c.class.as_deref() == Some(class))
                .collect();
            if matching.len() < *count {
                return Err(Shortfall::Nodes {
                    class: class.clone(),
                    available: matching.len(),
                    wanted: *count,
                });
            }
            Ok(matching[..*count].to_vec())
        }
        Ask::Resources(request) => choose_covering(&sorted, request),
    }
}

fn choose_covering<'c>(
    candidates: &[&'c Candidate],
    request: &Resources,
) -> Result<Vec<&'c Candidate>, Shortfall> {
    let total: Resources = candidates.iter().map(|c| c.allocatable).sum();
    if !total.covers(request) {
        return Err(Shortfall::Resources(total.shortfall(request)));
    }
    if request.is_zero() {
        return Ok(Vec::new());
    }
    let mut chosen: Vec<&Candidate> = Vec::new();
    let mut free: Vec<&Candidate> = candidates.to_vec();
    let mut have = Resources::ZERO;
    while !have.covers(request) {
        let missing = have.shortfall(request);
        // The largest gain, then the smaller node (less waste); `free` is in name order, so
        // keeping the first of equals gives a tie to the earlier name without comparing
        // names (which, among a pool of equal nodes, would be every comparison).
        let mut best: Option<(usize, f64, f64)> = None;
        for (i, c) in free.iter().enumerate() {
            let (g, z) = (
                gain(&c.allocatable, &missing, request),
                size(&c.allocatable, request),
            );
            let better = best.is_none_or(|(_, bg, bz)| g > bg || (g == bg && z < bz));
            if better {
                best = Some((i, g, z));
            }
        }
        let Some((index, _, _)) = best else { break };
        let node = free.remove(index);
        have += node.allocatable;
        chosen.push(node);
    }
    // Drop nodes the others can do without, largest first.
    let mut by_size = chosen.clone();
    by_size.sort_by(|a, b| size(&b.allocatable, request).total_cmp(&size(&a.allocatable, request)));
    for node in by_size {
        let without = have - node.allocatable;
        if without.covers(request) {
            have = without;
            chosen.retain(|c| c.name != node.name);
            // Back in its place, so `free` stays in name order.
            let at = free.partition_point(|c| c.name < node.name);
            free.insert(at, node);
        }
    }
    // Swap the last node for the smallest free one that still completes the cover.
    if let Some(last) = chosen.pop() {
        let rest = have - last.allocatable;
        // The smallest, then the earliest name: `free` is in name order, as above.
        let mut best = (last, size(&last.allocatable, request));
        let mut first_free: Option<(&Candidate, f64)> = None;
        for &c in free
            .iter()
            .filter(|c| (rest + c.allocatable).covers(request))
        {
            let z = size(&c.allocatable, request);
            if first_free.is_none_or(|(_, bz)| z < bz) {
                first_free = Some((c, z));
            }
        }
        if let Some((c, z)) = first_free
            && (z < best.1 || (z == best.1 && c.name < best.0.name))
        {
            best = (c, z);
        }
        chosen.push(best.0);
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(chosen)
}

/// The share of the still-missing amount a node would cover, summed over dimensions.
fn gain(node: &Resources, missing: &Resources, request: &Resources) -> f64 {
    let share = |have: i64, miss: i64, asked: i64| {
        if asked > 0 {
            have.min(miss) as f64 / asked as f64
        } else {
            0.0
        }
    };
    share(node.cpu_millis, missing.cpu_millis, request.cpu_millis)
        + share(
            node.memory_bytes,
            missing.memory_bytes,
            request.memory_bytes,
        )
        + share(node.gpus, missing.gpus, request.gpus)
}

/// A node's size relative to the request, summed over the dimensions the request uses.
fn size(node: &Resources, request: &Resources) -> f64 {
    let share = |have: i64, asked: i64| {
        if asked > 0 {
            have as f64 / asked as f64
        } else {
            0.0
        }
    };
    share(node.cpu_millis, request.cpu_millis)
        + share(node.memory_bytes, request.memory_bytes)
        + share(node.gpus, request.gpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GI: i64 = 1 << 30;

    fn node(name: &str, cpu: i64, mem_gi: i64, gpus: i64) -> Candidate {
        Candidate {
            name: name.into(),
            allocatable: Resources::new(cpu * 1000, mem_gi * GI, gpus),
            class: None,
        }
    }

    #[test]
    fn fewest_whole_nodes_cover_the_request() {
        let nodes = vec![
            node("a", 16, 64, 0),
            node("b", 16, 64, 0),
            node("c", 64, 256, 0),
            node("d", 16, 64, 0),
        ];
        // 90 cores: the big node and two small ones (96); no two nodes reach 90.
        let request = Resources::new(90_000, 0, 0);
        let chosen = choose(&nodes, &Ask::Resources(request)).unwrap();
        assert_eq!(chosen, vec!["a", "b", "c"]);
        // 32 cores fit on the big node alone.
        assert_eq!(
            choose(&nodes, &Ask::Resources(Resources::new(32_000, 0, 0))).unwrap(),
            vec!["c"]
        );
        // 8 cores: the smallest node that covers it, not the big one.
        assert_eq!(
            choose(&nodes, &Ask::Resources(Resources::new(8_000, 0, 0))).unwrap(),
            vec!["a"]
        );
    }

    #[test]
    fn the_prfaq_example_takes_two_nodes() {
        // 128 CPU, 512Gi on 64-core, 256Gi nodes.
        let nodes: Vec<Candidate> = (0..5).map(|i| node(&format!("n{i}"), 64, 256, 0)).collect();
        let chosen = choose(
            &nodes,
            &Ask::Resources(Resources::new(128_000, 512 * GI, 0)),
        )
        .unwrap();
        assert_eq!(chosen.len(), 2);
    }

    #[test]
    fn gpus_are_a_dimension_of_their_own() {
        let nodes = vec![
            node("cpu-0", 64, 256, 0),
            node("gpu-0", 32, 128, 4),
            node("gpu-1", 32, 128, 4),
        ];
        let chosen = choose(&nodes, &Ask::Resources(Resources::new(8_000, 0, 6))).unwrap();
        assert_eq!(chosen, vec!["gpu-0", "gpu-1"]);
    }

    #[test]
    fn shortfall_names_what_is_missing() {
        let nodes = vec![node("a", 16, 64, 0)];
        assert_eq!(
            choose(&nodes, &Ask::Resources(Resources::new(20_000, 8 * GI, 1))),
            Err(Shortfall::Resources(Resources::new(4_000, 0, 1)))
        );
    }

    #[test]
    fn node_counts_take_nodes_of_the_class() {
        let mut nodes = vec![
            node("a", 16, 64, 0),
            node("b", 16, 64, 0),
            node("c", 16, 64, 0),
        ];
        nodes[0].class = Some("large".into());
        nodes[2].class = Some("large".into());
        let ask = |count| Ask::Nodes {
            class: "large".into(),
            count,
        };
        assert_eq!(choose(&nodes, &ask(2)).unwrap(), vec!["a", "c"]);
        assert_eq!(
            choose(&nodes, &ask(3)),
            Err(Shortfall::Nodes {
                class: "large".into(),
                available: 2,
                wanted: 3
            })
        );
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec((1i64..=64, 1i64..=512, 0i64..=8), 1..12).prop_map(|sizes| {
            sizes
                .into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, gpu))| node(&format!("n{i:02}"), cpu, mem, gpu))
                .collect()
        })
    }

    fn minimum_count(nodes: &[Candidate], request: &Resources) -> Option<usize> {
        (0u32..(1 << nodes.len()))
            .filter(|mask| {
                let sum: Resources = nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, n)| n.allocatable)
                    .sum();
                sum.covers(request)
            })
            .map(|mask| mask.count_ones() as usize)
            .min()
    }

    proptest! {
        #[test]
        fn a_choice_covers_the_request_with_no_redundant_node(
            nodes in arb_nodes(), cpu in 0i64..200_000, mem in 0i64..1024, gpus in 0i64..16,
        ) {
            let request = Resources::new(cpu, mem * GI, gpus);
            let total: Resources = nodes.iter().map(|n| n.allocatable).sum();
            match choose(&nodes, &Ask::Resources(request)) {
                Ok(chosen) => {
                    let picked: Vec<&Candidate> = nodes.iter().filter(|n| chosen.contains(&n.name)).collect();
                    prop_assert_eq!(picked.len(), chosen.len(), "no node twice, no unknown node");
                    let sum: Resources = picked.iter().map(|n| n.allocatable).sum();
                    prop_assert!(sum.covers(&request));
                    // Never more than one node's worth beyond the ask: without any one
                    // chosen node, the rest fall short.
                    for n in &picked {
                        prop_assert!(!(sum - n.allocatable).covers(&request), "{} is redundant", n.name);
                    }
                }
                Err(Shortfall::Resources(short)) => {
                    prop_assert!(!total.covers(&request));
                    prop_assert_eq!(short, total.shortfall(&request));
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn one_dimensional_requests_take_the_minimum_number_of_nodes(
            nodes in arb_nodes(), cpu in 1i64..300_000,
        ) {
            let request = Resources::new(cpu, 0, 0);
            let best = minimum_count(&nodes, &request);
            let chosen = choose(&nodes, &Ask::Resources(request)).ok().map(|c| c.len());
            prop_assert_eq!(chosen, best);
        }
    }
}
