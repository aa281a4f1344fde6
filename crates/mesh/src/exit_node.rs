//! [`ExitNodeState`]: which exit node a client sends its internet traffic
//! through, and whether it routes everything into the tunnel.
//!
//! Control offers every approved exit node to every peer that may use it
//! ([`Node::exit_routes`]) but never puts `0.0.0.0/0` or `::/0` in a peer's
//! allowed IPs. As in Tailscale, the client adds them itself, to the one
//! peer it selected: cryptokey routing (WireGuard paper §2) then sends
//! every packet without a more specific peer to that exit node, and accepts
//! packets from any address only from it.
//!
//! No leak: while an exit node is wanted, the shell routes everything into
//! the TUN device ([`ExitSelection::route_all`]) even when the chosen peer
//! is offline or gone; the packets then find no peer and are dropped
//! instead of leaving through the local interface. `fail_open` turns that
//! off: with no usable exit node, traffic takes the host's own routes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use causeway_wire::{Node, NodeId};
use ipnet::IpNet;

/// Longest exit-node name, id or address accepted (a DNS name's limit).
const MAX_CHOICE_LEN: usize = 253;

/// Which exit node the client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ExitNodeChoice {
    /// None: traffic outside the tailnet takes the host's own routes.
    #[default]
    Off,
    /// An online exit node: the current one while it stays online, else
    /// the online one with the lowest node id (a stable order).
    Auto,
    /// One peer, by tailnet name, node id or tailnet address.
    Peer(String),
}

/// Why an exit-node choice was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exit node {value:?}: {expected}")]
pub struct BadExitNodeChoice {
    /// The text given.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

impl FromStr for ExitNodeChoice {
    type Err = BadExitNodeChoice;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |expected| BadExitNodeChoice {
            value: text.to_owned(),
            expected,
        };
        match text {
            "none" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            "" => Err(bad(
                "expected a node name, id or tailnet address, \"auto\" or \"none\"",
            )),
            _ if text.len() > MAX_CHOICE_LEN => Err(bad("expected at most 253 characters")),
            _ if !text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_')) =>
            {
                Err(bad(
                    "expected a node name, id or tailnet address (letters, digits, '-', '.', ':')",
                ))
            }
            _ => Ok(Self::Peer(text.to_owned())),
        }
    }
}

impl fmt::Display for ExitNodeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("none"),
            Self::Auto => f.write_str("auto"),
            Self::Peer(name) => f.write_str(name),
        }
    }
}

/// What the shell does with the current choice and netmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitSelection {
    /// The peer that gets the exit routes in its allowed IPs, if any.
    pub peer: Option<NodeId>,
    /// Whether it is online (as control last said).
    pub online: bool,
    /// Whether all traffic is routed into the TUN device: an exit node is
    /// wanted and either one is usable or the client fails closed.
    pub route_all: bool,
}

/// The client side of exit nodes: the choice, the peer it resolved to,
/// and the peer list the data plane gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitNodeState {
    choice: ExitNodeChoice,
    fail_open: bool,
    selected: Option<NodeId>,
}

impl ExitNodeState {
    /// A client wanting `choice`; with `fail_open`, traffic takes the
    /// host's own routes while no wanted exit node is usable.
    pub fn new(choice: ExitNodeChoice, fail_open: bool) -> Self {
        Self {
            choice,
            fail_open,
            selected: None,
        }
    }

    /// The current choice.
    pub fn choice(&self) -> &ExitNodeChoice {
        &self.choice
    }

    /// Changes the choice; [`ExitNodeState::select`] applies it.
    pub fn set_choice(&mut self, choice: ExitNodeChoice) {
        if choice != self.choice {
            self.selected = None;
        }
        self.choice = choice;
    }

    /// Resolves the choice against `peers` (the netmap's, sorted by id).
    pub fn select<'n>(&mut self, peers: impl IntoIterator<Item = &'n Node>) -> ExitSelection {
        let offering: Vec<&Node> = peers.into_iter().filter(|n| offers_exit(n)).collect();
        let chosen = match &self.choice {
            ExitNodeChoice::Off => None,
            ExitNodeChoice::Auto => {
                let sticky = self
                    .selected
                    .and_then(|id| offering.iter().find(|n| n.id == id && n.online));
                sticky
                    .or_else(|| offering.iter().filter(|n| n.online).min_by_key(|n| n.id))
                    .copied()
            }
            ExitNodeChoice::Peer(wanted) => offering.iter().find(|n| names(n, wanted)).copied(),
        };
        self.selected = chosen.map(|n| n.id);
        let online = chosen.is_some_and(|n| n.online);
        let route_all = match self.choice {
            ExitNodeChoice::Off => false,
            ExitNodeChoice::Auto | ExitNodeChoice::Peer(_) => online || !self.fail_open,
        };
        ExitSelection {
            peer: self.selected,
            online,
            route_all,
        }
    }

    /// `peers` as the data plane gets them: the selected exit node's exit
    /// routes added to its allowed IPs, nobody else's.
    pub fn peers_for_dataplane<'n>(&self, peers: impl IntoIterator<Item = &'n Node>) -> Vec<Node> {
        peers
            .into_iter()
            .map(|node| {
                let mut node = node.clone();
                if Some(node.id) == self.selected {
                    let exit: Vec<IpNet> = exit_prefixes(&node).collect();
                    node.allowed_ips.extend(exit);
                }
                node
            })
            .collect()
    }
}

/// Whether `node` offers an exit route.
fn offers_exit(node: &Node) -> bool {
    exit_prefixes(node).next().is_some()
}

/// The default routes among what control says `node` offers: nothing else
/// is ever taken from `exit_routes`.
fn exit_prefixes(node: &Node) -> impl Iterator<Item = IpNet> + '_ {
    node.exit_routes
        .iter()
        .filter(|p| p.prefix_len() == 0)
        .map(IpNet::trunc)
}

/// Whether `wanted` names `node`: its tailnet name (any case), its id, or
/// one of its tailnet addresses.
fn names(node: &Node, wanted: &str) -> bool {
    if node.name.eq_ignore_ascii_case(wanted) || node.id.0.to_string() == wanted {
        return true;
    }
    wanted
        .parse::<IpAddr>()
        .is_ok_and(|ip| node.addresses.iter().any(|a| a.addr() == ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wire::PublicKey;

    fn node(id: u64, exit: bool, online: bool) -> Node {
        let address: IpNet = format!("100.64.0.{id}/32").parse().expect("valid");
        Node {
            id: NodeId(id),
            name: format!("exit{id}"),
            node_key: PublicKey::from_bytes([id as u8; 32]),
            key_expiry: None,
            addresses: vec![address],
            allowed_ips: vec![address],
            primary_routes: vec![],
            endpoints: vec![],
            tags: vec![],
            online,
            user: None,
            wireguard_only: false,
            exit_routes: if exit {
                vec![
                    "0.0.0.0/0".parse().expect("net"),
                    "::/0".parse().expect("net"),
                ]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn choices_parse_and_bad_ones_are_named() {
        assert_eq!("auto".parse(), Ok(ExitNodeChoice::Auto));
        assert_eq!("none".parse(), Ok(ExitNodeChoice::Off));
        assert_eq!(
            "exit-1".parse(),
            Ok(ExitNodeChoice::Peer("exit-1".to_owned()))
        );
        let err = "exit 1"
            .parse::<ExitNodeChoice>()
            .expect_err("a space is refused");
        assert_eq!(
            err.to_string(),
            "exit node \"exit 1\": expected a node name, id or tailnet address (letters, digits, '-', '.', ':')"
        );
        assert!("".parse::<ExitNodeChoice>().is_err());
        assert_eq!(ExitNodeChoice::Auto.to_string(), "auto");
    }

    #[test]
    fn a_peer_is_found_by_name_id_or_address_and_only_it_gets_the_exit_routes() {
        let peers = [
            node(2, true, true),
            node(3, true, true),
            node(4, false, true),
        ];
        for wanted in ["EXIT3", "3", "100.64.0.3"] {
            let mut state = ExitNodeState::new(wanted.parse().expect("valid"), false);
            let selection = state.select(&peers);
            assert_eq!(selection.peer, Some(NodeId(3)), "{wanted}");
            assert!(selection.route_all);
            let dataplane = state.peers_for_dataplane(&peers);
            let default_routes =
                |n: &Node| n.allowed_ips.iter().filter(|p| p.prefix_len() == 0).count();
            assert_eq!(
                dataplane.iter().map(default_routes).collect::<Vec<_>>(),
                [0, 2, 0]
            );
        }
        // A node that offers no exit route cannot be chosen.
        let mut state = ExitNodeState::new("exit4".parse().expect("valid"), false);
        assert_eq!(state.select(&peers).peer, None);
    }

    #[test]
    fn a_gone_exit_node_keeps_traffic_in_the_tunnel_unless_fail_open() {
        let gone = [node(2, false, true)];
        let offline = [node(3, true, false)];
        for (fail_open, route_all) in [(false, true), (true, false)] {
            let mut state = ExitNodeState::new("exit3".parse().expect("valid"), fail_open);
            let selection = state.select(&gone);
            assert_eq!(selection.peer, None);
            assert_eq!(selection.route_all, route_all);
            let selection = state.select(&offline);
            assert_eq!(selection.peer, Some(NodeId(3)));
            assert!(!selection.online);
            assert_eq!(selection.route_all, route_all);
        }
        let mut off = ExitNodeState::new(ExitNodeChoice::Off, false);
        assert_eq!(
            off.select(&[node(3, true, true)]),
            ExitSelection {
                peer: None,
                online: false,
                route_all: false
            }
        );
    }

    #[test]
    fn auto_picks_the_lowest_online_id_then_sticks_and_fails_over() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        assert_eq!(
            state
                .select(&[node(3, true, true), node(5, true, true)])
                .peer,
            Some(NodeId(3))
        );
        // A lower id joining does not move traffic.
        assert_eq!(
            state
                .select(&[node(2, true, true), node(3, true, true)])
                .peer,
            Some(NodeId(3))
        );
        // The current one going offline does.
        assert_eq!(
            state
                .select(&[node(2, true, true), node(3, true, false)])
                .peer,
            Some(NodeId(2))
        );
        // None online: nothing selected, and traffic stays in the tunnel.
        let selection = state.select(&[node(2, true, false)]);
        assert_eq!(selection.peer, None);
        assert!(selection.route_all);
    }
}
