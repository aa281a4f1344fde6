//! Who sent a recording, or asks to see one: the tailnet identity behind a
//! source address, as control describes it in the netmap of the node the
//! recorder runs beside. A peer's inner source address is checked against
//! the addresses control gave that peer before a packet reaches the
//! recorder, so the address names the node.

use std::fmt;
use std::net::IpAddr;

use causeway_wire::caps::{PeerCapMap, RECORDER_CAP, recorder_actions};

/// A tailnet node, as control describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its tailnet name, unique in the tailnet: the node part of the
    /// storage key of every recording it sends.
    pub node: String,
    /// The user who owns it (`alice@example.com`); none for a tagged node.
    pub user: Option<String>,
    /// Its tags (`tag:ops`).
    pub tags: Vec<String>,
    /// The application capabilities the policy's `app` grants give this
    /// node at the recorder's node (empty for a recorder without one).
    pub caps: PeerCapMap,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node)?;
        match (&self.user, self.tags.is_empty()) {
            (Some(user), _) => write!(f, " ({user})"),
            (None, false) => write!(f, " ({})", self.tags.join(", ")),
            (None, true) => Ok(()),
        }
    }
}

/// Answers "which node owns this tailnet address, and which capabilities
/// does it hold here". The appliance answers from its node's netmap (peers
/// and cap grants); a recorder without a node has none.
pub trait WhoIs: Send + Sync + fmt::Debug {
    /// The node whose own tailnet addresses include `addr` (not one that
    /// merely routes to it), with the capabilities this node's cap grants
    /// give `addr`, or `None`.
    fn who_is(&self, addr: IpAddr) -> Option<Identity>;
}

/// Whether `who` may view recordings: the policy grants it the
/// recorder capability ([`RECORDER_CAP`]) with the `view` action at this
/// recorder's node. Control checked the values' shape; a value that does
/// not parse grants nothing.
pub fn may_view(who: &Identity) -> bool {
    who.caps
        .get(RECORDER_CAP)
        .and_then(|values| recorder_actions(values).ok())
        .is_some_and(|actions| actions.contains("view"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(caps: &[(&str, serde_json::Value)]) -> Identity {
        Identity {
            node: "laptop".into(),
            user: Some("alice@example.com".into()),
            tags: Vec::new(),
            caps: caps
                .iter()
                .map(|(name, value)| ((*name).to_owned(), vec![value.clone()]))
                .collect(),
        }
    }

    #[test]
    fn only_the_recorder_capability_with_view_lets_a_node_view() {
        assert!(may_view(&node(&[(
            RECORDER_CAP,
            json!({"actions": ["view"]})
        )])));
        assert!(!may_view(&node(&[])), "a user alone is not enough");
        assert!(!may_view(&node(&[(RECORDER_CAP, json!({"actions": []}))])));
        assert!(!may_view(&node(&[(
            "example.com/cap/tsrecorder",
            json!({"actions": ["view"]})
        )])));
        assert!(!may_view(&node(&[(
            RECORDER_CAP,
            json!({"actions": ["delete"]})
        )])));
        assert!(!may_view(&node(&[(RECORDER_CAP, json!("view"))])));
    }
}
