//! [`NetmapState`]: the node's view of the tailnet, built from control's
//! full maps and deltas.

use std::collections::{BTreeMap, BTreeSet};

use causeway_wire::caps::{CapGrantsTooLarge, check_cap_grants};
use causeway_wire::{CapGrant, DnsConfig, FilterTooLarge, MapResponse, Node, NodeId, PacketFilter};
use ipnet::IpNet;

/// A map message that cannot be applied; the node should reconnect and ask
/// for a full map.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetmapError {
    /// A delta arrived before any full map.
    #[error("delta (seq {0}) before the first full map")]
    DeltaBeforeFull(u64),
    /// A message was skipped.
    #[error("netmap sequence gap: expected {expected}, got {got}")]
    Gap {
        /// The sequence number we expected.
        expected: u64,
        /// The one that arrived.
        got: u64,
    },
    /// The first full map did not say who we are.
    #[error("full map without the node itself")]
    NoSelf,
}

/// The current netmap of one node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetmapState {
    seq: u64,
    node: Option<Node>,
    peers: BTreeMap<NodeId, Node>,
    dns: DnsConfig,
    filter: Option<PacketFilter>,
    filter_refused: Option<FilterTooLarge>,
    cap_grants: Vec<CapGrant>,
    cap_grants_refused: Option<CapGrantsTooLarge>,
}

impl NetmapState {
    /// Folds one message in. Returns whether the peers, the packet filter,
    /// the cap grants or the node itself (its served routes) changed, so
    /// the data plane (and who-is answers) must be updated.
    ///
    /// Cap grants over the wire limits are not kept: the node grants no
    /// capability instead (fail closed) and
    /// [`NetmapState::cap_grants_refused`] says why.
    ///
    /// A packet filter over the wire limits is not applied: the node keeps
    /// an empty filter instead (nothing may open a flow to it: fail closed)
    /// and [`NetmapState::filter_refused`] says why.
    pub fn apply(&mut self, map: MapResponse) -> Result<bool, NetmapError> {
        if let Some(peers) = map.peers {
            let node = map
                .node
                .or_else(|| self.node.clone())
                .ok_or(NetmapError::NoSelf)?;
            self.node = Some(node);
            self.peers = peers.into_iter().map(|n| (n.id, n)).collect();
            self.seq = map.seq;
            self.dns = map.dns.unwrap_or_default();
            self.filter = None;
            if let Some(filter) = map.packet_filter {
                self.set_filter(filter);
            }
            self.set_cap_grants(map.cap_grants.unwrap_or_default());
            return Ok(true);
        }
        if self.node.is_none() {
            return Err(NetmapError::DeltaBeforeFull(map.seq));
        }
        if map.seq != self.seq + 1 {
            return Err(NetmapError::Gap {
                expected: self.seq + 1,
                got: map.seq,
            });
        }
        self.seq = map.seq;
        let mut changed = false;
        if let Some(node) = map.node {
            changed |= self.node.as_ref() != Some(&node);
            self.node = Some(node);
        }
        for node in map.peers_changed {
            changed = true;
            self.peers.insert(node.id, node);
        }
        for id in map.peers_removed {
            changed |= self.peers.remove(&id).is_some();
        }
        for patch in map.endpoint_patches {
            if let Some(peer) = self.peers.get_mut(&patch.id) {
                peer.endpoints = patch.endpoints;
                changed = true;
            }
        }
        if let Some(dns) = map.dns {
            changed |= self.dns != dns;
            self.dns = dns;
        }
        if let Some(filter) = map.packet_filter {
            self.set_filter(filter);
            changed = true;
        }
        if let Some(grants) = map.cap_grants {
            self.set_cap_grants(grants);
            changed = true;
        }
        Ok(changed)
    }

    fn set_cap_grants(&mut self, grants: Vec<CapGrant>) {
        match check_cap_grants(&grants) {
            Ok(()) => {
                self.cap_grants = grants;
                self.cap_grants_refused = None;
            }
            Err(e) => {
                self.cap_grants = Vec::new();
                self.cap_grants_refused = Some(e);
            }
        }
    }

    /// The application capabilities this node grants its senders (the
    /// policy's `app` grants that name it).
    pub fn cap_grants(&self) -> &[CapGrant] {
        &self.cap_grants
    }

    /// Why the last cap grants control sent were refused (too large), if
    /// they were; the node grants nothing meanwhile.
    pub fn cap_grants_refused(&self) -> Option<&CapGrantsTooLarge> {
        self.cap_grants_refused.as_ref()
    }

    fn set_filter(&mut self, filter: PacketFilter) {
        match filter.check_size() {
            Ok(()) => {
                self.filter = Some(filter);
                self.filter_refused = None;
            }
            Err(e) => {
                self.filter = Some(PacketFilter::default());
                self.filter_refused = Some(e);
            }
        }
    }

    /// Why the last packet filter control sent was refused (too large), if
    /// it was; the node enforces an empty filter meanwhile.
    pub fn filter_refused(&self) -> Option<&FilterTooLarge> {
        self.filter_refused.as_ref()
    }

    /// The node itself, once a full map arrived.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Peers, sorted by id.
    pub fn peers(&self) -> impl Iterator<Item = &Node> {
        self.peers.values()
    }

    /// DNS configuration.
    pub fn dns(&self) -> &DnsConfig {
        &self.dns
    }

    /// The packet filter control sent, if any.
    pub fn filter(&self) -> Option<&PacketFilter> {
        self.filter.as_ref()
    }

    /// What this node accepts packets for: its own addresses, the
    /// approved routes it is primary for, and its approved exit routes
    /// (0.0.0.0/0 and ::/0), for [`crate::NodeState::set_served`]. Empty before the
    /// first full map.
    pub fn served_prefixes(&self) -> Vec<IpNet> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let mut served: BTreeSet<IpNet> = node.addresses.iter().map(IpNet::trunc).collect();
        served.extend(node.primary_routes.iter().map(IpNet::trunc));
        served.extend(node.exit_routes.iter().map(IpNet::trunc));
        served.into_iter().collect()
    }

    /// The last sequence number applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Kernel routes the node should point at its TUN device: every peer's
    /// addresses, plus their primary subnet routes when `accept_routes` is
    /// on, minus routes this node serves itself (`own_routes`).
    pub fn kernel_routes(&self, accept_routes: bool, own_routes: &[IpNet]) -> BTreeSet<IpNet> {
        let mut routes = BTreeSet::new();
        for peer in self.peers.values() {
            routes.extend(peer.addresses.iter().map(IpNet::trunc));
            if accept_routes {
                routes.extend(
                    peer.primary_routes
                        .iter()
                        .filter(|r| {
                            !own_routes
                                .iter()
                                .any(|own| own.contains(*r) || r.contains(own))
                        })
                        .map(IpNet::trunc),
                );
            }
        }
        routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wire::{EndpointPatch, PublicKey};

    fn node(id: u64, routes: &[&str]) -> Node {
        let address: IpNet = format!("100.64.0.{id}/32").parse().expect("valid");
        let routes: Vec<IpNet> = routes.iter().map(|r| r.parse().expect("valid")).collect();
        Node {
            id: NodeId(id),
            name: format!("n{id}"),
            node_key: PublicKey::from_bytes([id as u8; 32]),
            key_expiry: None,
            addresses: vec![address],
            allowed_ips: std::iter::once(address)
                .chain(routes.iter().copied())
                .collect(),
            primary_routes: routes,
            endpoints: vec![],
            tags: vec![],
            online: true,
            user: None,
            wireguard_only: false,
            exit_routes: vec![],
            exit_unhealthy: false,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    fn full(seq: u64, peers: Vec<Node>) -> MapResponse {
        MapResponse {
            seq,
            node: Some(node(1, &[])),
            peers: Some(peers),
            ..Default::default()
        }
    }

    #[test]
    fn deltas_change_the_peer_set() {
        let mut map = NetmapState::default();
        map.apply(full(1, vec![node(2, &[])]))
            .expect("full map applies");
        let delta = MapResponse {
            seq: 2,
            peers_changed: vec![node(3, &[])],
            peers_removed: vec![NodeId(2)],
            ..Default::default()
        };
        assert_eq!(map.apply(delta), Ok(true));
        assert_eq!(
            map.peers().map(|n| n.id).collect::<Vec<_>>(),
            vec![NodeId(3)]
        );
    }

    #[test]
    fn a_dns_only_delta_is_a_change_and_the_same_dns_again_is_not() {
        let mut map = NetmapState::default();
        map.apply(full(1, vec![])).expect("full map applies");
        let dns = DnsConfig {
            domain: "t.example".into(),
            split: [(
                "corp.internal".to_owned(),
                vec!["198.19.1.10".parse().expect("ip")],
            )]
            .into(),
            ..Default::default()
        };
        let delta = |seq| MapResponse {
            seq,
            dns: Some(dns.clone()),
            ..Default::default()
        };
        assert_eq!(map.apply(delta(2)), Ok(true));
        assert_eq!(map.dns(), &dns);
        assert_eq!(map.apply(delta(3)), Ok(false));
    }

    #[test]
    fn endpoint_patch_touches_only_endpoints() {
        let mut map = NetmapState::default();
        map.apply(full(1, vec![node(2, &[])]))
            .expect("full map applies");
        let endpoint = "198.18.0.9:41641".parse().expect("valid");
        let patch = MapResponse {
            seq: 2,
            endpoint_patches: vec![EndpointPatch {
                id: NodeId(2),
                endpoints: vec![endpoint],
            }],
            ..Default::default()
        };
        map.apply(patch).expect("patch applies");
        let peer = map.peers().next().expect("one peer");
        assert_eq!(peer.endpoints, vec![endpoint]);
        assert_eq!(peer.name, "n2");
    }

    #[test]
    fn filters_and_served_routes_arrive_by_delta() {
        let mut map = NetmapState::default();
        map.apply(full(1, vec![node(2, &[])]))
            .expect("full map applies");
        assert_eq!(map.filter(), None);
        assert_eq!(map.served_prefixes(), vec![net("100.64.0.1/32")]);
        let mut me = node(1, &["198.19.1.0/24"]);
        me.allowed_ips.clear();
        let delta = MapResponse {
            seq: 2,
            node: Some(me),
            packet_filter: Some(PacketFilter::allow_all()),
            ..Default::default()
        };

        assert_eq!(map.apply(delta), Ok(true));

        assert_eq!(map.filter(), Some(&PacketFilter::allow_all()));
        assert_eq!(
            map.served_prefixes(),
            vec![net("100.64.0.1/32"), net("198.19.1.0/24")]
        );
    }

    #[test]
    fn an_exit_node_serves_its_exit_routes_and_no_peer_route_goes_to_the_kernel() {
        let mut me = node(1, &[]);
        me.exit_routes = vec![net("0.0.0.0/0"), net("::/0")];
        let mut exit_peer = node(2, &[]);
        exit_peer.exit_routes = vec![net("0.0.0.0/0")];
        let mut map = NetmapState::default();

        map.apply(MapResponse {
            seq: 1,
            node: Some(me),
            peers: Some(vec![exit_peer]),
            ..Default::default()
        })
        .expect("full map applies");

        assert_eq!(
            map.served_prefixes(),
            vec![net("0.0.0.0/0"), net("100.64.0.1/32"), net("::/0")]
        );
        assert_eq!(
            map.kernel_routes(true, &[]).into_iter().collect::<Vec<_>>(),
            [net("100.64.0.2/32")]
        );
    }

    #[test]
    fn an_oversized_filter_is_replaced_by_an_empty_one() {
        let mut map = NetmapState::default();
        map.apply(full(1, vec![])).expect("full map applies");
        let rule = PacketFilter::allow_all().rules[0].clone();
        let huge = PacketFilter {
            rules: vec![rule; causeway_wire::MAX_FILTER_RULES + 1],
        };
        let delta = MapResponse {
            seq: 2,
            packet_filter: Some(huge),
            ..Default::default()
        };

        assert_eq!(map.apply(delta), Ok(true));

        assert_eq!(map.filter(), Some(&PacketFilter::default()));
        assert_eq!(
            map.filter_refused().map(|e| e.rules),
            Some(causeway_wire::MAX_FILTER_RULES + 1)
        );
    }

    #[test]
    fn cap_grants_follow_full_maps_and_deltas_and_oversized_ones_grant_nothing() {
        let mut map = NetmapState::default();
        let grant = CapGrant {
            sources: vec![net("100.64.0.2/32")],
            caps: [("example.com/cap/x".to_owned(), vec![serde_json::json!({})])]
                .into_iter()
                .collect(),
        };
        let mut first = full(1, vec![]);
        first.cap_grants = Some(vec![grant.clone()]);
        map.apply(first).expect("full map applies");
        assert_eq!(map.cap_grants(), std::slice::from_ref(&grant));

        let cleared = MapResponse {
            seq: 2,
            cap_grants: Some(Vec::new()),
            ..Default::default()
        };
        assert_eq!(map.apply(cleared), Ok(true));
        assert!(map.cap_grants().is_empty());

        let huge = MapResponse {
            seq: 3,
            cap_grants: Some(vec![grant.clone(); causeway_wire::caps::MAX_CAP_GRANTS + 1]),
            ..Default::default()
        };
        assert_eq!(map.apply(huge), Ok(true));
        assert!(map.cap_grants().is_empty());
        assert_eq!(
            map.cap_grants_refused().map(|e| e.grants),
            Some(causeway_wire::caps::MAX_CAP_GRANTS + 1)
        );
        // A full map without cap grants means none.
        let mut again = full(4, vec![]);
        again.cap_grants = Some(vec![grant]);
        map.apply(again).expect("full map applies");
        map.apply(full(5, vec![])).expect("full map applies");
        assert!(map.cap_grants().is_empty());
        assert_eq!(map.cap_grants_refused(), None);
    }

    #[test]
    fn a_gap_is_an_error() {
        let mut map = NetmapState::default();
        map.apply(full(1, vec![])).expect("full map applies");
        let delta = MapResponse {
            seq: 3,
            ..Default::default()
        };
        assert_eq!(
            map.apply(delta),
            Err(NetmapError::Gap {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn a_delta_first_is_an_error() {
        let mut map = NetmapState::default();
        assert_eq!(
            map.apply(MapResponse {
                seq: 1,
                ..Default::default()
            }),
            Err(NetmapError::DeltaBeforeFull(1))
        );
    }

    #[test]
    fn kernel_routes_respect_accept_routes_and_own_routes() {
        let mut map = NetmapState::default();
        map.apply(full(
            1,
            vec![node(2, &["198.19.1.0/24"]), node(3, &["198.19.2.0/24"])],
        ))
        .expect("applies");
        let own: Vec<IpNet> = vec!["198.19.2.0/24".parse().expect("valid")];
        let with: Vec<String> = map
            .kernel_routes(true, &own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(with, ["100.64.0.2/32", "100.64.0.3/32", "198.19.1.0/24"]);
        assert_eq!(map.kernel_routes(false, &[]).len(), 2);
    }
}
