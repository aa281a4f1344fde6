//! Messages exchanged over the control channel, and the netmap they carry.
//!
//! Every collection that reaches the wire is ordered (`Vec` sorted by the
//! sender, or `BTreeMap`), so the same state always encodes to the same
//! bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{CapGrant, PublicKey};

/// Control's identifier for a node, stable for the node's lifetime.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Seconds since the Unix epoch. Cores are handed the time; they never read
/// a clock.
pub type UnixTime = i64;

/// Payload of the first Noise message (node → control).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The node's [`crate::CAPABILITY_VERSION`].
    pub capability_version: u32,
}

/// Payload of the second Noise message (control → node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ServerHello {
    /// The channel is open.
    Accepted {
        /// Control's capability version.
        capability_version: u32,
    },
    /// Control will not serve this node; it closes the channel after this.
    Refused {
        /// Why, in words for the operator.
        reason: String,
    },
}

/// A message from a node to control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Register a node key (first join, or rotation of an expired key).
    Register(RegisterRequest),
    /// Open the netmap stream for a registered node key.
    Map(MapRequest),
    /// Tell control about a change (endpoints, advertised routes) on an open
    /// map stream.
    Update(NodeUpdate),
    /// Sent on an idle map stream so control knows the node lives (nodes of
    /// capability version 2 and later, at the interval control asked for in
    /// [`ServerMessage::Liveness`]).
    KeepAlive,
}

/// Registration of a node key under the channel's machine key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The node's new WireGuard public key.
    pub node_key: PublicKey,
    /// When rotating: the key being replaced. The machine key proves the
    /// node owns it, so no auth key is needed.
    pub old_node_key: Option<PublicKey>,
    /// A pre-authorised key, needed for a machine control does not know.
    pub auth_key: Option<String>,
    /// The node's host name, used for its tailnet name.
    pub hostname: String,
}

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("node_key", &self.node_key)
            .field("old_node_key", &self.old_node_key)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("hostname", &self.hostname)
            .finish()
    }
}

/// Control's answer to a successful registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The node's id.
    pub node_id: NodeId,
    /// Its tailnet addresses (one IPv4 /32 and one IPv6 /128).
    pub addresses: Vec<IpNet>,
    /// When the node key expires; the node must rotate before then.
    pub key_expiry: Option<UnixTime>,
    /// The node's tags, from its auth key.
    pub tags: Vec<String>,
}

/// Opens the netmap stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRequest {
    /// The node key the stream is for; it must belong to the channel's
    /// machine key.
    pub node_key: PublicKey,
    /// The node's host name (may change between runs).
    pub hostname: String,
    /// UDP endpoints where the node's WireGuard socket can be reached.
    pub endpoints: Vec<SocketAddr>,
    /// Routes the node offers to forward for the tailnet.
    pub advertised_routes: Vec<IpNet>,
    /// What the router's health probes last found, per advertised route
    /// (sorted by prefix, at most [`MAX_ROUTE_HEALTH`]); absent from nodes
    /// that do not probe, whose routes count as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<RouteHealth>>,
    /// The router's priority for the routes it advertises: among healthy
    /// routers, control gives a route to the highest (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// On an app connector: the domains it resolves for the tailnet
    /// (`example.com` for `*.example.com`), at most
    /// [`MAX_CONNECTOR_DOMAINS`]. Control sends their queries to it as
    /// split DNS while it is online, and lets `autoApprovers` approve the
    /// public routes it learns inside a prefix they name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_connector: Option<Vec<String>>,
}

/// The most domains one app connector may announce; control ignores the
/// rest.
pub const MAX_CONNECTOR_DOMAINS: usize = 1000;

/// A change reported on an open map stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpdate {
    /// New endpoints, when they changed.
    pub endpoints: Option<Vec<SocketAddr>>,
    /// New advertised routes, when they changed.
    pub advertised_routes: Option<Vec<IpNet>>,
    /// The routes' health, when it changed (see [`MapRequest::health`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<RouteHealth>>,
    /// The router's priority, when it changed (see
    /// [`MapRequest::priority`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// The app connector's domains, when they changed (see
    /// [`MapRequest::app_connector`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_connector: Option<Vec<String>>,
}

/// What a subnet router's health probes found for one route it advertises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHealth {
    /// The advertised prefix.
    pub prefix: IpNet,
    /// Whether the router can forward to it now.
    pub healthy: bool,
    /// Why not (or what was checked), in words for the operator; at most
    /// [`MAX_HEALTH_REASON`] bytes are kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The most route-health entries one report may carry; control ignores
/// entries past it.
pub const MAX_ROUTE_HEALTH: usize = 1024;

/// The longest health reason, in bytes, control keeps.
pub const MAX_HEALTH_REASON: usize = 200;

/// A message from control to a node.
#[allow(
    clippy::large_enum_variant,
    reason = "a few messages per change; boxing the map buys nothing"
)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to [`ClientMessage::Register`].
    Registered(RegisterResponse),
    /// A full netmap or a delta.
    Map(MapResponse),
    /// Sent on an idle stream so both ends (and middleboxes) know it lives.
    KeepAlive,
    /// The keepalive interval of this stream, sent to nodes of capability
    /// version 2 and later before the first map and again whenever it
    /// changes. Both ends send [`ClientMessage::KeepAlive`] /
    /// [`ServerMessage::KeepAlive`] after this long without sending, and
    /// close the stream after [`crate::liveness::read_deadline`] without
    /// receiving.
    Liveness(Liveness),
    /// A request failed; control closes the channel after this.
    Error(ControlError),
}

/// The keepalive settings of one map stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Send a keepalive after this many milliseconds without sending
    /// anything; at least [`crate::liveness::MIN_KEEPALIVE_MS`].
    pub keepalive_interval_ms: u64,
}

/// Why control refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// What kind of failure, for the node to branch on.
    pub code: ErrorCode,
    /// What went wrong, in words for the operator.
    pub message: String,
}

/// Failure kinds a node reacts to differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The auth key is unknown, expired, revoked or used up.
    AuthKeyRefused,
    /// The node key is not registered under this machine key.
    NodeUnknown,
    /// The node key has expired: rotate it.
    NodeKeyExpired,
    /// The request itself was malformed.
    BadRequest,
    /// Control failed; try again later.
    Internal,
}

/// One netmap message. The first on a stream is full (`peers` is `Some`);
/// later ones are deltas against everything sent before on that stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapResponse {
    /// Position on the stream, from 1; a node that sees a gap resyncs.
    pub seq: u64,
    /// The node itself, when it changed (always on a full map).
    pub node: Option<Node>,
    /// The whole peer list (full map only), sorted by id.
    pub peers: Option<Vec<Node>>,
    /// Delta: peers added or changed, sorted by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<Node>,
    /// Delta: peers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<NodeId>,
    /// Delta: only the endpoints of these peers changed (a small patch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_patches: Vec<EndpointPatch>,
    /// DNS configuration, when it changed.
    pub dns: Option<DnsConfig>,
    /// The node's packet filter, when it changed. `None` on a full map means
    /// the node applies no filter beyond the source check.
    pub packet_filter: Option<PacketFilter>,
    /// The application capabilities the policy's `app` grants give
    /// senders at this node, when they changed. `None` on a full map means
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_grants: Option<Vec<CapGrant>>,
    /// The UDP port on control's host (the host of the node's control URL)
    /// that answers STUN Binding requests, so the node can learn the address
    /// its WireGuard socket has from outside. Sent on full maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun_port: Option<u16>,
}

impl MapResponse {
    /// Whether this is a full map rather than a delta.
    pub fn is_full(&self) -> bool {
        self.peers.is_some()
    }
}

/// A node as control describes it to others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Control's id for the node.
    pub id: NodeId,
    /// Its tailnet name (host name, made unique).
    pub name: String,
    /// Its WireGuard public key.
    pub node_key: PublicKey,
    /// When the node key expires.
    pub key_expiry: Option<UnixTime>,
    /// Its own tailnet addresses.
    pub addresses: Vec<IpNet>,
    /// Everything it may send from and receive for: its addresses plus the
    /// routes for which it is primary.
    pub allowed_ips: Vec<IpNet>,
    /// Approved routes for which this node is the primary router.
    pub primary_routes: Vec<IpNet>,
    /// Where its WireGuard socket can be reached.
    pub endpoints: Vec<SocketAddr>,
    /// Its tags.
    pub tags: Vec<String>,
    /// The user who owns it (`alice@example.com`); none for a tagged node
    /// or one registered with a key that names no user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether it has an open map stream (or, for a WireGuard-only device,
    /// always true).
    pub online: bool,
    /// A plain WireGuard peer without Causeway software.
    pub wireguard_only: bool,
    /// The exit routes (`0.0.0.0/0`, `::/0`) it offers, approved. They are
    /// never in `allowed_ips`: a client adds them to the one exit node it
    /// selected, so no other peer can send it traffic from any address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_routes: Vec<IpNet>,
    /// Set when it offers exit routes and its last health report says it
    /// cannot carry internet traffic (its forwarding path or its probe
    /// target failed). Clients with `exit_node = "auto"` pass over it while
    /// a healthy exit node is online; a node that ignores the field (older
    /// builds) treats every exit node as healthy, which is what it did
    /// before, so no capability version is needed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exit_unhealthy: bool,
}

/// A small patch for a peer whose endpoints alone changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPatch {
    /// Which peer.
    pub id: NodeId,
    /// Its endpoints now.
    pub endpoints: Vec<SocketAddr>,
}

/// DNS configuration for a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// The tailnet's own domain (MagicDNS), e.g. `tailnet.causeway.internal`.
    pub domain: String,
    /// Names in that domain and their addresses.
    pub records: BTreeMap<String, Vec<IpAddr>>,
    /// Split DNS: domain suffix → resolvers for it.
    pub split: BTreeMap<String, Vec<IpAddr>>,
}

/// A node's packet filter: which sources may reach which destinations,
/// ports and protocols. A packet passes when any rule matches it; the node
/// also lets replies to a flow that a rule allowed back in (connection
/// tracking), so rules are written for the side that opens the flow.
///
/// An empty filter allows nothing. Control compiles one per node from the
/// policy and keeps it under [`MAX_FILTER_RULES`] and
/// [`MAX_FILTER_ENTRIES`]; a node refuses a larger one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketFilter {
    /// Rules; a packet is accepted when any rule matches.
    pub rules: Vec<FilterRule>,
}

/// The most rules one node's packet filter may hold.
pub const MAX_FILTER_RULES: usize = 10_000;

/// The most source prefixes and destinations, over all rules, one node's
/// packet filter may hold. At about 40 bytes of JSON each this keeps the
/// largest filter near 8 MB, under the channel's message limit, and the
/// node's compiled rules to a few tens of MB.
pub const MAX_FILTER_ENTRIES: usize = 200_000;

/// A packet filter over [`MAX_FILTER_RULES`] or [`MAX_FILTER_ENTRIES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "packet filter has {rules} rules and {entries} prefixes and destinations; at most \
     {MAX_FILTER_RULES} rules and {MAX_FILTER_ENTRIES} entries are allowed"
)]
pub struct FilterTooLarge {
    /// Rules in the filter.
    pub rules: usize,
    /// Source prefixes and destinations in all its rules.
    pub entries: usize,
}

impl PacketFilter {
    /// Lets every TCP, UDP, ICMP and ICMPv6 packet in: what Tailscale's
    /// default policy (`"src": ["*"], "dst": ["*:*"]`) compiles to, and what
    /// every node gets while the tailnet has no policy.
    pub fn allow_all() -> Self {
        let any = [
            IpNet::V4(ipnet::Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ];
        Self {
            rules: vec![FilterRule {
                sources: any.to_vec(),
                destinations: any
                    .iter()
                    .map(|&prefix| FilterDestination {
                        prefix,
                        ports: PortRange::ANY,
                    })
                    .collect(),
                protocols: Vec::new(),
            }],
        }
    }

    /// Source prefixes and destinations over all rules.
    pub fn entries(&self) -> usize {
        self.rules
            .iter()
            .map(|r| r.sources.len() + r.destinations.len())
            .sum()
    }

    /// Checks the filter against [`MAX_FILTER_RULES`] and
    /// [`MAX_FILTER_ENTRIES`].
    pub fn check_size(&self) -> Result<(), FilterTooLarge> {
        let (rules, entries) = (self.rules.len(), self.entries());
        if rules > MAX_FILTER_RULES || entries > MAX_FILTER_ENTRIES {
            return Err(FilterTooLarge { rules, entries });
        }
        Ok(())
    }
}

/// One accept rule of a [`PacketFilter`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    /// Source prefixes.
    pub sources: Vec<IpNet>,
    /// Destination prefixes, each with the ports allowed on it.
    pub destinations: Vec<FilterDestination>,
    /// IANA protocol numbers the rule allows; empty means TCP (6), UDP (17),
    /// ICMP (1) and ICMPv6 (58), as in Tailscale's filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<u8>,
}

/// A destination prefix and the ports a [`FilterRule`] allows on it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FilterDestination {
    /// Destination addresses.
    pub prefix: IpNet,
    /// Destination ports, for protocols that have them (TCP, UDP, SCTP);
    /// other protocols match on the prefix alone.
    pub ports: PortRange,
}

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port, at least `first`.
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: u64) -> Node {
        Node {
            id: NodeId(id),
            name: format!("node-{id}"),
            node_key: PublicKey::from_bytes([id as u8; 32]),
            key_expiry: Some(1_800_000_000),
            addresses: vec!["100.64.0.1/32".parse().expect("valid prefix")],
            allowed_ips: vec!["100.64.0.1/32".parse().expect("valid prefix")],
            primary_routes: vec![],
            endpoints: vec!["198.18.0.3:41641".parse().expect("valid addr")],
            tags: vec!["tag:router".into()],
            online: true,
            user: None,
            wireguard_only: false,
            exit_routes: vec![],
            exit_unhealthy: false,
        }
    }

    #[test]
    fn delta_omits_empty_lists() {
        let delta = MapResponse {
            seq: 2,
            ..Default::default()
        };
        let json = serde_json::to_string(&delta).expect("serialises");
        assert_eq!(
            json,
            r#"{"seq":2,"node":null,"peers":null,"dns":null,"packet_filter":null}"#
        );
    }

    #[test]
    fn server_message_is_tagged() {
        let msg = ServerMessage::Map(MapResponse {
            seq: 1,
            peers: Some(vec![node(2)]),
            ..Default::default()
        });
        let json = serde_json::to_string(&msg).expect("serialises");
        assert!(json.starts_with(r#"{"type":"map","seq":1"#), "{json}");
        let back: ServerMessage = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, msg);
    }

    #[test]
    fn keepalives_and_liveness_have_stable_encodings() {
        let client = serde_json::to_string(&ClientMessage::KeepAlive).expect("serialises");
        assert_eq!(client, r#"{"type":"keep_alive"}"#);
        let liveness = ServerMessage::Liveness(Liveness {
            keepalive_interval_ms: 1000,
        });
        let json = serde_json::to_string(&liveness).expect("serialises");
        assert_eq!(json, r#"{"type":"liveness","keepalive_interval_ms":1000}"#);
        let back: ServerMessage = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, liveness);
    }

    #[test]
    fn filter_size_is_checked_against_both_limits() {
        assert_eq!(PacketFilter::allow_all().check_size(), Ok(()));
        assert_eq!(PacketFilter::allow_all().entries(), 4);
        let rule = FilterRule {
            sources: vec!["100.64.0.1/32".parse().expect("valid prefix")],
            destinations: vec![],
            protocols: vec![],
        };
        let many_rules = PacketFilter {
            rules: vec![rule.clone(); MAX_FILTER_RULES + 1],
        };
        assert_eq!(
            many_rules.check_size(),
            Err(FilterTooLarge {
                rules: MAX_FILTER_RULES + 1,
                entries: MAX_FILTER_RULES + 1
            })
        );
        let wide_rule = FilterRule {
            sources: vec![rule.sources[0]; MAX_FILTER_ENTRIES],
            ..rule
        };
        let wide = PacketFilter {
            rules: vec![wide_rule.clone()],
        };
        assert_eq!(wide.check_size(), Ok(()));
        let too_wide = PacketFilter {
            rules: vec![
                wide_rule.clone(),
                FilterRule {
                    sources: vec!["::/0".parse().expect("valid prefix")],
                    destinations: vec![],
                    protocols: vec![],
                },
            ],
        };
        assert_eq!(
            too_wide.check_size(),
            Err(FilterTooLarge {
                rules: 2,
                entries: MAX_FILTER_ENTRIES + 1
            })
        );
    }

    #[test]
    fn health_and_priority_are_optional_so_older_nodes_still_parse() {
        let old = r#"{"type":"update","endpoints":null,"advertised_routes":null}"#;
        let ClientMessage::Update(update) = serde_json::from_str(old).expect("parses") else {
            panic!("an update");
        };
        assert_eq!(update, NodeUpdate::default());
        let new = ClientMessage::Update(NodeUpdate {
            health: Some(vec![RouteHealth {
                prefix: "198.19.1.0/24".parse().expect("valid prefix"),
                healthy: false,
                reason: "eth1 has no carrier".into(),
            }]),
            priority: Some(7),
            ..NodeUpdate::default()
        });
        let json = serde_json::to_string(&new).expect("serialises");
        assert!(
            json.contains(r#""health":[{"prefix":"198.19.1.0/24","healthy":false,"reason":"eth1 has no carrier"}],"priority":7"#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<ClientMessage>(&json).expect("parses"),
            new
        );
    }

    #[test]
    fn register_request_debug_hides_the_auth_key() {
        let req = RegisterRequest {
            node_key: PublicKey::from_bytes([1; 32]),
            old_node_key: None,
            auth_key: Some("cwk_secret".into()),
            hostname: "laptop".into(),
        };
        assert!(!format!("{req:?}").contains("cwk_secret"));
    }

    proptest! {
        #[test]
        fn client_messages_parse_or_error_without_panicking(s in ".*") {
            let _ = serde_json::from_str::<ClientMessage>(&s);
        }

        #[test]
        fn map_responses_round_trip(seq in any::<u64>(), ids in proptest::collection::vec(any::<u64>(), 0..8)) {
            let msg = MapResponse {
                seq,
                peers_changed: ids.iter().copied().map(node).collect(),
                peers_removed: ids.iter().copied().map(NodeId).collect(),
                ..Default::default()
            };
            let json = serde_json::to_vec(&msg).expect("serialises");
            let back: MapResponse = serde_json::from_slice(&json).expect("parses");
            prop_assert_eq!(back, msg);
        }
    }
}
