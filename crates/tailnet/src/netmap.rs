//! Netmaps: the full map a stream starts with, and the deltas after it.
//!
//! After each change control builds one [`PreparedChange`] (each changed
//! node's public view, computed once) and hands the same value to every
//! open [`MapSession`]; a session compares the views with what it last sent
//! for those nodes only. So a change costs O(changed nodes × streams), never
//! O(nodes²).
//!
//! Each node sees only the peers the policy links it to (either may reach
//! the other) and gets its own packet filter and the cap grants (`app`
//! grants) that name it. When the policy or a node's identity changes, the
//! nodes whose filter, peer set or cap grants changed carry their new
//! [`NodeAccess`] in the change; their streams send the new filter or cap
//! grants and add or remove peers. Visibility is symmetric, so every peer that becomes
//! visible to a node is itself in the change, with its view. Under a policy
//! that links every node to every other (`*` to `*:*`), a join changes
//! every node's peer set, so that change costs O(nodes × streams); with no
//! policy set, nothing is compiled and a join stays O(streams).

use std::collections::BTreeMap;
use std::sync::Arc;

use causeway_wire::{
    CapGrant, DnsConfig, EndpointPatch, MapResponse, Node, NodeId, PacketFilter, UnixTime,
};

use crate::state::{ChangeSet, NodeAccess, TailnetState};

/// One change, ready to be turned into each stream's delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedChange {
    /// The time of the change (decides which node keys count as expired).
    pub now: UnixTime,
    /// Each changed node's view; `None` when it was removed. Includes the
    /// nodes in [`PreparedChange::access`].
    pub nodes: BTreeMap<NodeId, Option<Node>>,
    /// The new filter and peer set of each node whose access changed.
    pub access: BTreeMap<NodeId, NodeAccess>,
    /// The DNS configuration and its generation, when it changed.
    pub dns: Option<(u64, DnsConfig)>,
}

impl PreparedChange {
    /// Computes the views of the nodes in `changes` and the access of
    /// those whose access changed.
    pub fn new(state: &TailnetState, changes: &ChangeSet, now: UnixTime) -> Self {
        Self {
            now,
            nodes: changes
                .nodes
                .iter()
                .chain(&changes.access)
                .map(|&id| (id, state.view(id)))
                .collect(),
            access: changes
                .access
                .iter()
                .map(|&id| (id, state.access(id)))
                .collect(),
            dns: changes.dns_changed.then(|| state.dns()),
        }
    }
}

/// What a stream should do with a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Send this delta.
    Send(Box<MapResponse>),
    /// Nothing this node can see changed.
    Nothing,
    /// The node itself was deleted: close the stream.
    SelfRemoved,
    /// The node's own key expired: tell it and close the stream.
    SelfExpired,
}

/// Per-stream netmap state: what this node has been told so far.
#[derive(Clone, Debug)]
pub struct MapSession {
    node_id: NodeId,
    seq: u64,
    self_view: Option<Node>,
    peers: BTreeMap<NodeId, Node>,
    dns_generation: u64,
    access: NodeAccess,
    filter: Option<PacketFilter>,
    cap_grants: Vec<CapGrant>,
}

impl MapSession {
    /// A session for `node_id`; call [`MapSession::full_map`] first.
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            seq: 0,
            self_view: None,
            peers: BTreeMap::new(),
            dns_generation: 0,
            // Until the full map: nothing allowed, no peers.
            access: NodeAccess::Compiled(Arc::default()),
            filter: None,
            cap_grants: Vec::new(),
        }
    }

    /// The node this session serves.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The full netmap: the node itself, every other node whose key has
    /// not expired and that the policy lets it see, its packet filter, the
    /// capabilities it grants (when any), and DNS.
    pub fn full_map(&mut self, state: &TailnetState, now: UnixTime) -> MapResponse {
        self.seq += 1;
        self.self_view = state.view(self.node_id);
        self.access = state.access(self.node_id);
        let filter = self.access.filter();
        self.filter = Some(filter.clone());
        self.cap_grants = self.access.cap_grants();
        let access = &self.access;
        self.peers = state
            .nodes()
            .filter(|n| n.id != self.node_id && !n.is_expired(now) && access.sees(n.id))
            .filter_map(|n| state.view(n.id).map(|v| (n.id, v)))
            .collect();
        let (generation, dns) = state.dns();
        self.dns_generation = generation;
        MapResponse {
            seq: self.seq,
            node: self.self_view.clone(),
            peers: Some(self.peers.values().cloned().collect()),
            dns: Some(dns),
            packet_filter: Some(filter),
            cap_grants: (!self.cap_grants.is_empty()).then(|| self.cap_grants.clone()),
            ..MapResponse::default()
        }
    }

    /// The delta this node needs for `change`.
    pub fn delta(&mut self, change: &PreparedChange) -> DeltaOutcome {
        let mut out = MapResponse::default();
        if let Some(access) = change.access.get(&self.node_id) {
            self.access = access.clone();
            let filter = access.filter();
            if self.filter.as_ref() != Some(&filter) {
                out.packet_filter = Some(filter.clone());
                self.filter = Some(filter);
            }
            let cap_grants = access.cap_grants();
            if self.cap_grants != cap_grants {
                out.cap_grants = Some(cap_grants.clone());
                self.cap_grants = cap_grants;
            }
            let access = &self.access;
            let hidden: Vec<NodeId> = self
                .peers
                .keys()
                .filter(|id| !access.sees(**id))
                .copied()
                .collect();
            for id in hidden {
                self.peers.remove(&id);
                out.peers_removed.push(id);
            }
        }
        for (&id, view) in &change.nodes {
            if id == self.node_id {
                let Some(view) = view else {
                    return DeltaOutcome::SelfRemoved;
                };
                if view.key_expiry.is_some_and(|e| e <= change.now) {
                    return DeltaOutcome::SelfExpired;
                }
                if self.self_view.as_ref() != Some(view) {
                    self.self_view = Some(view.clone());
                    out.node = Some(view.clone());
                }
                continue;
            }
            let visible = view
                .as_ref()
                .filter(|v| v.key_expiry.is_none_or(|e| e > change.now) && self.access.sees(id));
            match (self.peers.get(&id), visible) {
                (None, None) => {}
                (Some(_), None) => {
                    self.peers.remove(&id);
                    out.peers_removed.push(id);
                }
                (Some(old), Some(new)) if old == new => {}
                (Some(old), Some(new)) if only_endpoints_differ(old, new) => {
                    out.endpoint_patches.push(EndpointPatch {
                        id,
                        endpoints: new.endpoints.clone(),
                    });
                    self.peers.insert(id, new.clone());
                }
                (Some(_) | None, Some(new)) => {
                    out.peers_changed.push(new.clone());
                    self.peers.insert(id, new.clone());
                }
            }
        }
        if let Some((generation, dns)) = &change.dns
            && *generation != self.dns_generation
        {
            self.dns_generation = *generation;
            out.dns = Some(dns.clone());
        }
        out.peers_removed.sort_unstable();
        let empty = out.node.is_none()
            && out.peers_changed.is_empty()
            && out.peers_removed.is_empty()
            && out.endpoint_patches.is_empty()
            && out.dns.is_none()
            && out.packet_filter.is_none()
            && out.cap_grants.is_none();
        if empty {
            return DeltaOutcome::Nothing;
        }
        self.seq += 1;
        out.seq = self.seq;
        DeltaOutcome::Send(Box::new(out))
    }
}

/// Applies a map message to the map a node holds (a full map replaces it).
/// Nodes use this; tests use it to check deltas against full maps.
pub fn apply_delta(map: &mut MapResponse, delta: &MapResponse) {
    if delta.is_full() {
        *map = delta.clone();
        return;
    }
    map.seq = delta.seq;
    if let Some(node) = &delta.node {
        map.node = Some(node.clone());
    }
    let peers = map.peers.get_or_insert_with(Vec::new);
    let mut by_id: BTreeMap<NodeId, Node> = peers.drain(..).map(|p| (p.id, p)).collect();
    for id in &delta.peers_removed {
        by_id.remove(id);
    }
    for node in &delta.peers_changed {
        by_id.insert(node.id, node.clone());
    }
    for patch in &delta.endpoint_patches {
        if let Some(node) = by_id.get_mut(&patch.id) {
            node.endpoints = patch.endpoints.clone();
        }
    }
    *peers = by_id.into_values().collect();
    if let Some(dns) = &delta.dns {
        map.dns = Some(dns.clone());
    }
    if let Some(filter) = &delta.packet_filter {
        map.packet_filter = Some(filter.clone());
    }
    if let Some(grants) = &delta.cap_grants {
        map.cap_grants = (!grants.is_empty()).then(|| grants.clone());
    }
}

fn only_endpoints_differ(old: &Node, new: &Node) -> bool {
    let mut old = old.clone();
    old.endpoints = new.endpoints.clone();
    &old == new
}
