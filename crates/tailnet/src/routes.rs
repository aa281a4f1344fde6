//! Primary router selection for subnet routes.
//!
//! Several routers may advertise the same prefix (an HA group); exactly one
//! of them carries it at a time, so peers have one WireGuard peer whose
//! allowed IPs contain it. A router is a *candidate* for a prefix while it
//! is online, its route is approved and its node key has not expired. Each
//! candidate has a [`Standing`] from its health reports and a priority.
//!
//! The rule, per prefix:
//!
//! 1. The current primary stays while it is a healthy candidate
//!    (stickiness: a route moves only when it has to, since every move
//!    breaks masqueraded connections).
//! 2. Otherwise the best [`Standing::Eligible`] candidate takes it: highest
//!    priority, then lowest node id.
//! 3. When no candidate is eligible (every one is unhealthy, or has come
//!    back too recently), something is better than nothing: the current
//!    primary stays if it is still a candidate, even unhealthy; else the
//!    best candidate takes it, healthy ones (in hold-down) before unhealthy
//!    ones, then by priority and node id.
//!
//! Hysteresis comes from [`Standing::HoldDown`]: a router that was
//! unhealthy or offline counts as eligible only once it has been healthy
//! and online for the hold-down time, so a router whose health flaps faster
//! than that never takes a route from a healthy primary, nor from an
//! unhealthy one until it has stayed healthy that long. A prefix with no
//! candidate has no primary.

use std::collections::BTreeMap;

use causeway_wire::NodeId;
use ipnet::IpNet;

/// How a candidate stands for one prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Healthy, and healthy and online for at least the hold-down time.
    Eligible,
    /// Healthy, but not yet for the hold-down time since it was last
    /// unhealthy or offline.
    HoldDown,
    /// Its last health report says it cannot forward to the prefix.
    Unhealthy,
}

impl Standing {
    /// Whether the router reports the prefix healthy.
    pub fn is_healthy(self) -> bool {
        match self {
            Standing::Eligible | Standing::HoldDown => true,
            Standing::Unhealthy => false,
        }
    }
}

/// One router that may carry a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The router.
    pub node: NodeId,
    /// Its configured priority: higher wins.
    pub priority: u32,
    /// Its health for the prefix.
    pub standing: Standing,
}

/// Picks the primary for each prefix by the rule in the module docs.
/// `candidates` lists, per prefix, the routers that may carry it;
/// `current` is the previous selection.
pub fn select_primaries(
    candidates: &BTreeMap<IpNet, Vec<Candidate>>,
    current: &BTreeMap<IpNet, NodeId>,
) -> BTreeMap<IpNet, NodeId> {
    candidates
        .iter()
        .filter_map(|(prefix, nodes)| Some((*prefix, select_one(nodes, current.get(prefix))?)))
        .collect()
}

fn select_one(nodes: &[Candidate], current: Option<&NodeId>) -> Option<NodeId> {
    let current = current.and_then(|id| nodes.iter().find(|c| c.node == *id));
    if let Some(c) = current
        && c.standing.is_healthy()
    {
        return Some(c.node);
    }
    // Best first: higher priority, then lower id.
    let rank = |c: &&Candidate| (std::cmp::Reverse(c.priority), c.node);
    if let Some(best) = nodes
        .iter()
        .filter(|c| c.standing == Standing::Eligible)
        .min_by_key(rank)
    {
        return Some(best.node);
    }
    if let Some(c) = current {
        return Some(c.node);
    }
    nodes
        .iter()
        .min_by_key(|c| (c.standing, std::cmp::Reverse(c.priority), c.node))
        .map(|c| c.node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    fn eligible(id: u64) -> Candidate {
        Candidate {
            node: NodeId(id),
            priority: 0,
            standing: Standing::Eligible,
        }
    }

    fn with(id: u64, priority: u32, standing: Standing) -> Candidate {
        Candidate {
            node: NodeId(id),
            priority,
            standing,
        }
    }

    fn pick(nodes: Vec<Candidate>, current: Option<u64>) -> Option<NodeId> {
        let p = net("198.19.1.0/24");
        let current: BTreeMap<IpNet, NodeId> =
            current.map(|c| (p, NodeId(c))).into_iter().collect();
        select_primaries(&BTreeMap::from([(p, nodes)]), &current)
            .get(&p)
            .copied()
    }

    #[test]
    fn lowest_id_wins_then_sticks() {
        let p = net("198.19.1.0/24");
        let cands = BTreeMap::from([(p, vec![eligible(3), eligible(2)])]);
        let first = select_primaries(&cands, &BTreeMap::new());
        assert_eq!(first.get(&p), Some(&NodeId(2)));
        // Node 1 joins: node 2 keeps the route.
        let cands = BTreeMap::from([(p, vec![eligible(1), eligible(2), eligible(3)])]);
        assert_eq!(select_primaries(&cands, &first).get(&p), Some(&NodeId(2)));
        // Node 2 goes away: the lowest remaining takes over.
        let cands = BTreeMap::from([(p, vec![eligible(1), eligible(3)])]);
        assert_eq!(select_primaries(&cands, &first).get(&p), Some(&NodeId(1)));
        // Nobody left: no primary.
        assert!(select_primaries(&BTreeMap::from([(p, vec![])]), &first).is_empty());
    }

    #[test]
    fn highest_priority_wins_a_free_route_but_does_not_preempt() {
        let nodes = vec![
            with(1, 0, Standing::Eligible),
            with(2, 10, Standing::Eligible),
        ];
        assert_eq!(pick(nodes.clone(), None), Some(NodeId(2)));
        // Node 1 holds the route and stays healthy: it keeps it.
        assert_eq!(pick(nodes, Some(1)), Some(NodeId(1)));
    }

    #[test]
    fn an_unhealthy_primary_loses_to_an_eligible_router_only() {
        let sick = with(1, 5, Standing::Unhealthy);
        assert_eq!(
            pick(vec![sick, with(2, 0, Standing::Eligible)], Some(1)),
            Some(NodeId(2))
        );
        // The other router came back too recently: the route stays.
        assert_eq!(
            pick(vec![sick, with(2, 0, Standing::HoldDown)], Some(1)),
            Some(NodeId(1))
        );
        // All unhealthy: the route stays where it is.
        assert_eq!(
            pick(vec![sick, with(2, 9, Standing::Unhealthy)], Some(1)),
            Some(NodeId(1))
        );
    }

    #[test]
    fn with_the_primary_gone_and_nobody_eligible_a_healthy_router_is_chosen_first() {
        let nodes = vec![
            with(1, 9, Standing::Unhealthy),
            with(3, 0, Standing::HoldDown),
            with(2, 0, Standing::HoldDown),
        ];
        assert_eq!(pick(nodes, Some(7)), Some(NodeId(2)));
        let nodes = vec![
            with(4, 1, Standing::Unhealthy),
            with(3, 2, Standing::Unhealthy),
        ];
        assert_eq!(pick(nodes, None), Some(NodeId(3)));
    }

    fn standing() -> impl Strategy<Value = Standing> {
        prop_oneof![
            Just(Standing::Eligible),
            Just(Standing::HoldDown),
            Just(Standing::Unhealthy)
        ]
    }

    proptest! {
        #[test]
        fn primary_is_a_candidate_healthy_when_possible_and_sticky(
            rounds in proptest::collection::vec(
                proptest::collection::btree_map(0u64..6, (0u32..3, standing()), 0..6),
                1..30,
            )
        ) {
            let p = net("10.0.0.0/8");
            let mut current: BTreeMap<IpNet, NodeId> = BTreeMap::new();
            for set in rounds {
                let nodes: Vec<Candidate> = set
                    .iter()
                    .map(|(&id, &(priority, standing))| with(id, priority, standing))
                    .collect();
                let next = select_primaries(&BTreeMap::from([(p, nodes.clone())]), &current);
                let chosen = next.get(&p).and_then(|id| nodes.iter().find(|c| c.node == *id));
                // Always a candidate; none only without candidates.
                prop_assert_eq!(chosen.is_none(), nodes.is_empty());
                let old = current.get(&p).and_then(|id| nodes.iter().find(|c| c.node == *id));
                if let Some(chosen) = chosen {
                    // An eligible router exists: the primary is healthy.
                    if nodes.iter().any(|c| c.standing == Standing::Eligible) {
                        prop_assert!(chosen.standing.is_healthy());
                    }
                    // A healthy current primary keeps the route.
                    if let Some(old) = old.filter(|o| o.standing.is_healthy()) {
                        prop_assert_eq!(chosen.node, old.node);
                    }
                    // A move goes to an eligible router, or the old one is gone.
                    if old.is_some_and(|o| o.node != chosen.node) {
                        prop_assert_eq!(chosen.standing, Standing::Eligible);
                    }
                }
                current = next;
            }
        }
    }
}
