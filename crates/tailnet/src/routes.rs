//! Primary router selection for subnet routes.
//!
//! Several routers may advertise the same prefix (an HA pair); exactly one
//! of them carries it at a time, so peers have one WireGuard peer whose
//! allowed IPs contain it. The rule is deterministic and sticky: the current
//! primary stays while it is still a candidate (online, approved, key not
//! expired), otherwise the candidate with the lowest node id takes over. A
//! prefix with no candidate has no primary. Priorities and health probes
//! can later refine the fallback without changing the stickiness.

use std::collections::BTreeMap;

use causeway_wire::NodeId;
use ipnet::IpNet;

/// Picks the primary for each prefix. `candidates` lists, per prefix, the
/// nodes that may carry it; `current` is the previous selection.
pub fn select_primaries(
    candidates: &BTreeMap<IpNet, Vec<NodeId>>,
    current: &BTreeMap<IpNet, NodeId>,
) -> BTreeMap<IpNet, NodeId> {
    candidates
        .iter()
        .filter_map(|(prefix, nodes)| {
            let sticky = current.get(prefix).filter(|id| nodes.contains(id));
            let chosen = sticky.copied().or_else(|| nodes.iter().min().copied())?;
            Some((*prefix, chosen))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    #[test]
    fn lowest_id_wins_then_sticks() {
        let p = net("198.19.1.0/24");
        let cands = BTreeMap::from([(p, vec![NodeId(3), NodeId(2)])]);
        let first = select_primaries(&cands, &BTreeMap::new());
        assert_eq!(first.get(&p), Some(&NodeId(2)));
        // Node 1 joins: node 2 keeps the route.
        let cands = BTreeMap::from([(p, vec![NodeId(1), NodeId(2), NodeId(3)])]);
        assert_eq!(select_primaries(&cands, &first).get(&p), Some(&NodeId(2)));
        // Node 2 goes away: the lowest remaining takes over.
        let cands = BTreeMap::from([(p, vec![NodeId(1), NodeId(3)])]);
        assert_eq!(select_primaries(&cands, &first).get(&p), Some(&NodeId(1)));
        // Nobody left: no primary.
        assert!(select_primaries(&BTreeMap::from([(p, vec![])]), &first).is_empty());
    }

    proptest! {
        #[test]
        fn primary_is_always_a_candidate_and_sticky(
            rounds in proptest::collection::vec(proptest::collection::btree_set(0u64..6, 0..6), 1..20)
        ) {
            let p = net("10.0.0.0/8");
            let mut current = BTreeMap::new();
            for set in rounds {
                let nodes: Vec<NodeId> = set.iter().copied().map(NodeId).collect();
                let next = select_primaries(&BTreeMap::from([(p, nodes.clone())]), &current);
                match next.get(&p) {
                    Some(id) => prop_assert!(nodes.contains(id)),
                    None => prop_assert!(nodes.is_empty()),
                }
                if let Some(old) = current.get(&p)
                    && nodes.contains(old)
                {
                    prop_assert_eq!(next.get(&p), Some(old));
                }
                current = next;
            }
        }
    }
}
