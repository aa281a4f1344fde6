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
//!
//! `auto` chooses by health and path (see [`AutoReason`] for each rule):
//!
//! 1. Candidates are the online peers that offer exit routes; a healthy
//!    one ([`Node::exit_unhealthy`] unset) beats an unhealthy one.
//! 2. Among healthy candidates the lowest round-trip time wins; a candidate
//!    not measured yet sorts after every measured one; ties go to the
//!    lowest node id (a stable order).
//! 3. The current exit node stays while it is online and healthy, unless
//!    another is faster by a clear margin: by [`SWITCH_MARGIN_PERCENT`] %
//!    *and* by [`SWITCH_MARGIN`], and only once traffic has used the
//!    current one for [`MIN_DWELL`]. Every move breaks the client's
//!    connections (the exit node masquerades), so noise in the RTT must not
//!    move traffic back and forth.
//! 4. When the current one goes offline, unhealthy or away, traffic moves
//!    to the best healthy candidate at once (no dwell).
//! 5. When no online candidate is healthy, something is better than
//!    nothing (a health probe can fail while forwarding still works): the
//!    current one stays if it is online, else the best unhealthy one is
//!    used.
//!
//! The round-trip times come from the shell ([`ExitNodeState::set_rtts`]):
//! the data plane's estimate from the last WireGuard handshake this node
//! initiated. Only candidates with a session have one, so the shell keeps
//! sessions to [`ExitNodeState::warm_peers`] warm: at most
//! [`MAX_WARM_CANDIDATES`] of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use causeway_wire::{Node, NodeId};
use ipnet::IpNet;

/// Longest exit-node name, id or address accepted (a DNS name's limit).
const MAX_CHOICE_LEN: usize = 253;

/// `auto` leaves a healthy exit node for a faster one only if the other's
/// round-trip time is at least this many percent lower...
pub const SWITCH_MARGIN_PERCENT: u32 = 20;

/// ...and at least this much lower: on a LAN, 20 % of a millisecond is
/// scheduling noise, not a better path.
pub const SWITCH_MARGIN: Duration = Duration::from_millis(10);

/// How long `auto` stays on an exit node before a faster one may take
/// over (failover from an unusable one does not wait).
pub const MIN_DWELL: Duration = Duration::from_secs(30);

/// The most exit nodes `auto` keeps WireGuard sessions warm to, so that
/// the client's keepalives and handshakes stay bounded however many exit
/// nodes the tailnet has.
pub const MAX_WARM_CANDIDATES: usize = 8;

/// Which exit node the client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ExitNodeChoice {
    /// None: traffic outside the tailnet takes the host's own routes.
    #[default]
    Off,
    /// The healthy online exit node with the best path, with hysteresis
    /// (see the module docs).
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
    /// With `auto`: why this peer (or none) was chosen.
    pub reason: Option<AutoReason>,
}

/// Why `auto` chose what it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReason {
    /// No exit node was selected before: the best healthy candidate.
    Best,
    /// The current one is online and healthy and no other is faster by the
    /// margin (or it has not been used for [`MIN_DWELL`] yet).
    Stays,
    /// Moved from `from`: this one is faster by the margin.
    Faster {
        /// The exit node left.
        from: NodeId,
    },
    /// Moved from `from`, which became unusable.
    Failover {
        /// The exit node left.
        from: NodeId,
        /// What happened to it.
        why: Unusable,
    },
    /// No online candidate is healthy: an unhealthy one is used.
    NoneHealthy,
    /// No candidate is online.
    NoneOnline,
}

/// What made an exit node unusable for `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Control says it is offline.
    Offline,
    /// Its health probes fail.
    Unhealthy,
    /// It no longer offers exit routes to this client (or left).
    Gone,
}

impl fmt::Display for AutoReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Best => f.write_str("the healthy exit node with the lowest round-trip time"),
            Self::Stays => write!(
                f,
                "online and healthy; no other is faster by {SWITCH_MARGIN_PERCENT}% and {} ms",
                SWITCH_MARGIN.as_millis()
            ),
            Self::Faster { from } => write!(
                f,
                "faster than node {from} by {SWITCH_MARGIN_PERCENT}% and {} ms",
                SWITCH_MARGIN.as_millis()
            ),
            Self::Failover { from, why } => {
                let why = match why {
                    Unusable::Offline => "went offline",
                    Unusable::Unhealthy => "is unhealthy",
                    Unusable::Gone => "no longer offers exit routes",
                };
                write!(f, "failover: node {from} {why}")
            }
            Self::NoneHealthy => f.write_str("no healthy exit node online; using an unhealthy one"),
            Self::NoneOnline => f.write_str("no exit node online"),
        }
    }
}

/// One exit node `auto` may choose, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCandidate {
    /// The peer.
    pub id: NodeId,
    /// Its tailnet name.
    pub name: String,
    /// Whether control says it is online.
    pub online: bool,
    /// Whether its health probes pass (as control last said).
    pub healthy: bool,
    /// The last round-trip time measured to it.
    pub rtt: Option<Duration>,
    /// Whether the client keeps a session to it warm.
    pub warm: bool,
}

/// The client side of exit nodes: the choice, the peer it resolved to,
/// and the peer list the data plane gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitNodeState {
    choice: ExitNodeChoice,
    fail_open: bool,
    selected: Option<NodeId>,
    /// When traffic moved to `selected` (for [`MIN_DWELL`]).
    selected_at: Option<Instant>,
    /// The last round-trip time measured per peer.
    rtts: BTreeMap<NodeId, Duration>,
    /// Why `auto` made its current choice (never [`AutoReason::Stays`]).
    because: Option<AutoReason>,
}

impl ExitNodeState {
    /// A client wanting `choice`; with `fail_open`, traffic takes the
    /// host's own routes while no wanted exit node is usable.
    pub fn new(choice: ExitNodeChoice, fail_open: bool) -> Self {
        Self {
            choice,
            fail_open,
            selected: None,
            selected_at: None,
            rtts: BTreeMap::new(),
            because: None,
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
            self.selected_at = None;
            self.because = None;
        }
        self.choice = choice;
    }

    /// Replaces the round-trip times: the latest measurement per peer
    /// (`None`: not measured). Peers not mentioned keep no measurement.
    pub fn set_rtts(&mut self, rtts: impl IntoIterator<Item = (NodeId, Option<Duration>)>) {
        self.rtts = rtts
            .into_iter()
            .filter_map(|(id, rtt)| Some((id, rtt?)))
            .collect();
    }

    /// Resolves the choice against `peers` (the netmap's, sorted by id) at
    /// `now`.
    pub fn select<'n>(
        &mut self,
        peers: impl IntoIterator<Item = &'n Node>,
        now: Instant,
    ) -> ExitSelection {
        let offering: Vec<&Node> = peers.into_iter().filter(|n| offers_exit(n)).collect();
        let (chosen, reason) = match &self.choice {
            ExitNodeChoice::Off => (None, None),
            ExitNodeChoice::Auto => {
                let (chosen, reason) = self.auto(&offering, now);
                (chosen, Some(reason))
            }
            ExitNodeChoice::Peer(wanted) => {
                (offering.iter().find(|n| names(n, wanted)).copied(), None)
            }
        };
        if reason != Some(AutoReason::Stays) {
            self.because = reason;
        }
        let next = chosen.map(|n| n.id);
        if next != self.selected {
            self.selected_at = next.map(|_| now);
        }
        self.selected = next;
        let online = chosen.is_some_and(|n| n.online);
        let route_all = match self.choice {
            ExitNodeChoice::Off => false,
            ExitNodeChoice::Auto | ExitNodeChoice::Peer(_) => online || !self.fail_open,
        };
        ExitSelection {
            peer: self.selected,
            online,
            route_all,
            reason,
        }
    }

    /// With `auto`: why the current choice was made (the failover, the
    /// faster path, or the first choice), which staying on it does not
    /// change.
    pub fn because(&self) -> Option<AutoReason> {
        self.because
    }

    /// With `auto`: the candidates among `peers`, best first (healthy,
    /// then by round-trip time, then by id), as the status shows them.
    pub fn candidates<'n>(&self, peers: impl IntoIterator<Item = &'n Node>) -> Vec<ExitCandidate> {
        if self.choice != ExitNodeChoice::Auto {
            return Vec::new();
        }
        let warm = self.warm(peers);
        let mut candidates: Vec<ExitCandidate> = warm
            .offering
            .iter()
            .map(|n| ExitCandidate {
                id: n.id,
                name: n.name.clone(),
                online: n.online,
                healthy: !n.exit_unhealthy,
                rtt: self.rtts.get(&n.id).copied(),
                warm: warm.ids.contains(&n.id),
            })
            .collect();
        candidates.sort_by_key(|c| {
            (
                !c.online,
                !c.healthy,
                c.rtt.is_none(),
                c.rtt.unwrap_or_default(),
                c.id,
            )
        });
        candidates
    }

    /// With `auto`: the peers whose sessions the data plane keeps warm so
    /// their round-trip time is known: the selected one and the best other
    /// online candidates, at most [`MAX_WARM_CANDIDATES`] in all. Empty for
    /// any other choice (a named exit node gets traffic anyway).
    pub fn warm_peers<'n>(&self, peers: impl IntoIterator<Item = &'n Node>) -> BTreeSet<NodeId> {
        if self.choice != ExitNodeChoice::Auto {
            return BTreeSet::new();
        }
        self.warm(peers).ids
    }

    fn warm<'n>(&self, peers: impl IntoIterator<Item = &'n Node>) -> Warm<'n> {
        let offering: Vec<&Node> = peers.into_iter().filter(|n| offers_exit(n)).collect();
        let mut online: Vec<&Node> = offering.iter().filter(|n| n.online).copied().collect();
        online.sort_by_key(|n| (Some(n.id) != self.selected, n.exit_unhealthy, self.rank(n)));
        let ids = online
            .iter()
            .take(MAX_WARM_CANDIDATES)
            .map(|n| n.id)
            .collect();
        Warm { offering, ids }
    }

    /// The order among candidates of equal health: measured before not
    /// measured, lower round-trip time first, then lower id.
    fn rank(&self, node: &Node) -> (bool, Duration, NodeId) {
        let rtt = self.rtts.get(&node.id).copied();
        (rtt.is_none(), rtt.unwrap_or_default(), node.id)
    }

    /// Rules 1 to 5 of the module docs.
    fn auto<'n>(&self, offering: &[&'n Node], now: Instant) -> (Option<&'n Node>, AutoReason) {
        let healthy_best = offering
            .iter()
            .filter(|n| n.online && !n.exit_unhealthy)
            .min_by_key(|n| self.rank(n))
            .copied();
        let current = self.selected.map(|id| {
            let node = offering.iter().find(|n| n.id == id).copied();
            (id, node)
        });
        let Some((from, current)) = current else {
            return match healthy_best {
                Some(best) => (Some(best), AutoReason::Best),
                None => self.unhealthy_fallback(offering, None),
            };
        };
        let why = match current {
            None => Unusable::Gone,
            Some(c) if !c.online => Unusable::Offline,
            Some(c) if c.exit_unhealthy => Unusable::Unhealthy,
            Some(c) => {
                let dwelt = self
                    .selected_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= MIN_DWELL);
                return match healthy_best {
                    Some(best) if dwelt && self.clearly_faster(best, c) => {
                        (Some(best), AutoReason::Faster { from })
                    }
                    _ => (Some(c), AutoReason::Stays),
                };
            }
        };
        match healthy_best {
            Some(best) => (Some(best), AutoReason::Failover { from, why }),
            None => self.unhealthy_fallback(offering, current.filter(|c| c.online)),
        }
    }

    /// Rule 5: with no healthy candidate online, `current` if given, else
    /// the best online one.
    fn unhealthy_fallback<'n>(
        &self,
        offering: &[&'n Node],
        current: Option<&'n Node>,
    ) -> (Option<&'n Node>, AutoReason) {
        let chosen = current.or_else(|| {
            offering
                .iter()
                .filter(|n| n.online)
                .min_by_key(|n| self.rank(n))
                .copied()
        });
        match chosen {
            Some(node) => (Some(node), AutoReason::NoneHealthy),
            None => (None, AutoReason::NoneOnline),
        }
    }

    /// Whether `other` is faster than `current` by both margins; never
    /// when either is not measured (no evidence).
    fn clearly_faster(&self, other: &Node, current: &Node) -> bool {
        let (Some(&theirs), Some(&ours)) = (self.rtts.get(&other.id), self.rtts.get(&current.id))
        else {
            return false;
        };
        let percent = u128::from(100 - SWITCH_MARGIN_PERCENT);
        theirs + SWITCH_MARGIN <= ours && theirs.as_micros() * 100 <= ours.as_micros() * percent
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

/// The candidates offering exit routes and the ones kept warm.
struct Warm<'n> {
    offering: Vec<&'n Node>,
    ids: BTreeSet<NodeId>,
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

    const MS: Duration = Duration::from_millis(1);

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
            exit_unhealthy: false,
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
            let selection = state.select(&peers, t0());
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
        assert_eq!(state.select(&peers, t0()).peer, None);
    }

    #[test]
    fn a_gone_exit_node_keeps_traffic_in_the_tunnel_unless_fail_open() {
        let gone = [node(2, false, true)];
        let offline = [node(3, true, false)];
        for (fail_open, route_all) in [(false, true), (true, false)] {
            let mut state = ExitNodeState::new("exit3".parse().expect("valid"), fail_open);
            let selection = state.select(&gone, t0());
            assert_eq!(selection.peer, None);
            assert_eq!(selection.route_all, route_all);
            let selection = state.select(&offline, t0());
            assert_eq!(selection.peer, Some(NodeId(3)));
            assert!(!selection.online);
            assert_eq!(selection.route_all, route_all);
        }
        let mut off = ExitNodeState::new(ExitNodeChoice::Off, false);
        assert_eq!(
            off.select(&[node(3, true, true)], t0()),
            ExitSelection {
                peer: None,
                online: false,
                route_all: false,
                reason: None,
            }
        );
    }

    #[test]
    fn auto_picks_the_lowest_online_id_then_sticks_and_fails_over() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        assert_eq!(
            state
                .select(&[node(3, true, true), node(5, true, true)], t0())
                .peer,
            Some(NodeId(3))
        );
        // A lower id joining does not move traffic.
        assert_eq!(
            state
                .select(&[node(2, true, true), node(3, true, true)], t0())
                .peer,
            Some(NodeId(3))
        );
        // The current one going offline does.
        assert_eq!(
            state
                .select(&[node(2, true, true), node(3, true, false)], t0())
                .peer,
            Some(NodeId(2))
        );
        // None online: nothing selected, and traffic stays in the tunnel.
        let selection = state.select(&[node(2, true, false)], t0());
        assert_eq!(selection.peer, None);
        assert!(selection.route_all);
    }

    fn t0() -> Instant {
        Instant::now()
    }

    fn unhealthy(id: u64) -> Node {
        Node {
            exit_unhealthy: true,
            ..node(id, true, true)
        }
    }

    fn rtts(state: &mut ExitNodeState, ms: &[(u64, u64)]) {
        state.set_rtts(
            ms.iter()
                .map(|&(id, ms)| (NodeId(id), Some(Duration::from_millis(ms)))),
        );
    }

    #[test]
    fn auto_takes_the_lowest_rtt_among_healthy_nodes_and_unmeasured_ones_last() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        rtts(&mut state, &[(3, 30), (4, 20)]);
        let peers = [
            node(2, true, true),
            node(3, true, true),
            node(4, true, true),
        ];
        let selection = state.select(&peers, t0());
        assert_eq!(selection.peer, Some(NodeId(4)));
        assert_eq!(selection.reason, Some(AutoReason::Best));
        // Nothing measured: the lowest id.
        let mut fresh = ExitNodeState::new(ExitNodeChoice::Auto, false);
        assert_eq!(fresh.select(&peers, t0()).peer, Some(NodeId(2)));
        // Equal times: the lowest id.
        let mut tied = ExitNodeState::new(ExitNodeChoice::Auto, false);
        rtts(&mut tied, &[(3, 20), (4, 20)]);
        assert_eq!(tied.select(&peers, t0()).peer, Some(NodeId(3)));
    }

    #[test]
    fn auto_passes_over_an_unhealthy_node_however_fast() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        rtts(&mut state, &[(3, 30), (4, 5)]);
        let selection = state.select(&[node(3, true, true), unhealthy(4)], t0());
        assert_eq!(selection.peer, Some(NodeId(3)));
        assert_eq!(selection.reason, Some(AutoReason::Best));
    }

    #[test]
    fn auto_moves_to_a_faster_node_only_by_both_margins_and_after_the_dwell() {
        let t = t0();
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        let peers = [node(3, true, true), node(4, true, true)];
        rtts(&mut state, &[(3, 30)]);
        assert_eq!(state.select(&peers, t).peer, Some(NodeId(3)));
        let later = t + MIN_DWELL;
        // 25 ms against 30: 5 ms and 17 % better, not enough.
        rtts(&mut state, &[(3, 30), (4, 25)]);
        let selection = state.select(&peers, later);
        assert_eq!(selection.peer, Some(NodeId(3)));
        assert_eq!(selection.reason, Some(AutoReason::Stays));
        assert_eq!(state.because(), Some(AutoReason::Best), "staying keeps why");
        // 20 ms against 30: both margins, but not yet dwelt long enough.
        rtts(&mut state, &[(3, 30), (4, 20)]);
        let early = state.clone().select(&peers, later - MS);
        assert_eq!(early.peer, Some(NodeId(3)));
        let selection = state.select(&peers, later);
        assert_eq!(selection.peer, Some(NodeId(4)));
        assert_eq!(
            selection.reason,
            Some(AutoReason::Faster { from: NodeId(3) })
        );
        assert_eq!(state.because(), selection.reason);
        // Back the other way needs the margins and a new dwell too.
        rtts(&mut state, &[(3, 19), (4, 20)]);
        assert_eq!(
            state.select(&peers, later + MIN_DWELL).peer,
            Some(NodeId(4))
        );
    }

    #[test]
    fn a_relative_gain_below_the_absolute_margin_does_not_move_traffic() {
        let t = t0();
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        let peers = [node(3, true, true), node(4, true, true)];
        rtts(&mut state, &[(3, 5)]);
        assert_eq!(state.select(&peers, t).peer, Some(NodeId(3)));
        // 1 ms against 5: 80 % better but only 4 ms.
        rtts(&mut state, &[(3, 5), (4, 1)]);
        assert_eq!(state.select(&peers, t + MIN_DWELL).peer, Some(NodeId(3)));
        // The current one not measured: no evidence that it is slower.
        rtts(&mut state, &[(4, 1)]);
        assert_eq!(state.select(&peers, t + MIN_DWELL).peer, Some(NodeId(3)));
    }

    #[test]
    fn auto_fails_over_at_once_from_an_offline_unhealthy_or_gone_node() {
        let cases = [
            (node(3, true, false), Unusable::Offline),
            (unhealthy(3), Unusable::Unhealthy),
            (node(3, false, true), Unusable::Gone),
        ];
        for (current_now, why) in cases {
            let t = t0();
            let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
            rtts(&mut state, &[(3, 10), (4, 50), (5, 40)]);
            let before = [
                node(3, true, true),
                node(4, true, true),
                node(5, true, true),
            ];
            assert_eq!(state.select(&before, t).peer, Some(NodeId(3)));
            // Within the dwell time, too.
            let after = [current_now, node(4, true, true), node(5, true, true)];
            let selection = state.select(&after, t + MS);
            assert_eq!(selection.peer, Some(NodeId(5)), "{why:?}");
            assert_eq!(
                selection.reason,
                Some(AutoReason::Failover {
                    from: NodeId(3),
                    why
                })
            );
            assert!(selection.online && selection.route_all);
        }
    }

    #[test]
    fn with_no_healthy_node_an_unhealthy_one_serves_and_with_none_online_nothing_leaks() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        rtts(&mut state, &[(3, 50), (4, 10)]);
        // No current one: the best unhealthy one.
        let selection = state.select(&[unhealthy(3), unhealthy(4)], t0());
        assert_eq!(selection.peer, Some(NodeId(4)));
        assert_eq!(selection.reason, Some(AutoReason::NoneHealthy));
        // The current one stays while every one is unhealthy...
        rtts(&mut state, &[(3, 1), (4, 50)]);
        assert_eq!(
            state.select(&[unhealthy(3), unhealthy(4)], t0()).peer,
            Some(NodeId(4))
        );
        // ...and leaves as soon as a healthy one is online.
        let selection = state.select(&[node(3, true, true), unhealthy(4)], t0());
        assert_eq!(selection.peer, Some(NodeId(3)));
        assert_eq!(
            selection.reason,
            Some(AutoReason::Failover {
                from: NodeId(4),
                why: Unusable::Unhealthy
            })
        );
        // None online: nothing selected, and traffic stays in the tunnel.
        let selection = state.select(&[node(3, true, false)], t0());
        assert_eq!(selection.peer, None);
        assert_eq!(selection.reason, Some(AutoReason::NoneOnline));
        assert!(selection.route_all);
    }

    #[test]
    fn at_most_eight_candidates_are_kept_warm_the_selected_one_always() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        let mut peers: Vec<Node> = (1..=12).map(|id| node(id, true, true)).collect();
        peers.push(node(13, true, false));
        peers.push(node(14, false, true));
        // Node 12 is measured fastest and chosen; 11 is measured too.
        rtts(&mut state, &[(12, 5), (11, 9)]);
        assert_eq!(state.select(&peers, t0()).peer, Some(NodeId(12)));
        let warm = state.warm_peers(&peers);
        assert_eq!(warm.len(), MAX_WARM_CANDIDATES);
        let expected: BTreeSet<NodeId> = [12, 11, 1, 2, 3, 4, 5, 6].map(NodeId).into();
        assert_eq!(warm, expected);
        // The status lists every offering node, best first, marking the warm.
        let candidates = state.candidates(&peers);
        assert_eq!(candidates.len(), 13);
        assert_eq!(
            (candidates[0].id, candidates[0].rtt, candidates[0].warm),
            (NodeId(12), Some(5 * MS), true)
        );
        assert_eq!(
            candidates.last().map(|c| (c.id, c.online)),
            Some((NodeId(13), false))
        );
        // A named exit node or none: nothing is kept warm.
        state.set_choice("exit3".parse().expect("valid"));
        assert!(state.warm_peers(&peers).is_empty());
        assert!(state.candidates(&peers).is_empty());
    }

    #[test]
    fn new_measurements_replace_the_old_ones() {
        let mut state = ExitNodeState::new(ExitNodeChoice::Auto, false);
        let peers = [node(3, true, true), node(4, true, true)];
        rtts(&mut state, &[(4, 10)]);
        assert_eq!(state.select(&peers, t0()).peer, Some(NodeId(4)));
        state.set_rtts([(NodeId(3), Some(10 * MS)), (NodeId(4), None)]);
        let candidates = state.candidates(&peers);
        assert_eq!(
            candidates.iter().map(|c| (c.id, c.rtt)).collect::<Vec<_>>(),
            [(NodeId(3), Some(10 * MS)), (NodeId(4), None)]
        );
    }

    #[test]
    fn reasons_read_as_sentences_with_the_margins() {
        assert_eq!(
            AutoReason::Stays.to_string(),
            "online and healthy; no other is faster by 20% and 10 ms"
        );
        assert_eq!(
            AutoReason::Failover {
                from: NodeId(3),
                why: Unusable::Offline
            }
            .to_string(),
            "failover: node 3 went offline"
        );
    }
}
