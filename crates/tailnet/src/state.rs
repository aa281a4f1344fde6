//! The tailnet: nodes, auth keys, policy and route primaries, with every
//! operation control performs on them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use causeway_wire::caps::check_cap_grants;
use causeway_wire::{
    CapGrant, DnsConfig, ErrorCode, FilterDestination, FilterRule, MAX_CONNECTOR_DOMAINS,
    MAX_HEALTH_REASON, MAX_ROUTE_HEALTH, MapRequest, Node, NodeId, NodeUpdate, PacketFilter,
    PortRange, PublicKey, RegisterRequest, RouteHealth, UnixTime,
};
use ipnet::{IpNet, Ipv6Net};

use crate::addresses::{lowest_free_v4, v6_for};
use crate::auth_keys::{self, AuthKey, AuthKeyRefusal, AuthKeySpec, InvalidTag, NewAuthKey};
use crate::policy::{
    NodePolicy, Policy, PolicyError, PolicyNode, compile, is_default_route, is_user,
    tailnet_sources,
};
use crate::routes::{Candidate, Standing, select_primaries};

/// Identity of the tailnet, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailnetInfo {
    /// Short name, the first label of [`TailnetInfo::domain`].
    pub name: String,
    /// MagicDNS domain, e.g. `tailnet.causeway.internal`.
    pub domain: String,
    /// The tailnet's unique local /48 (RFC 4193).
    pub ula: Ipv6Net,
}

impl TailnetInfo {
    /// A tailnet called `name` with the given ULA.
    pub fn new(name: &str, ula: Ipv6Net) -> Self {
        Self {
            name: name.to_owned(),
            domain: format!("{name}.causeway.internal"),
            ula,
        }
    }
}

/// A node as control stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Control's id.
    pub id: NodeId,
    /// The machine key that registered it; `None` for a WireGuard-only
    /// device, which has no control channel.
    pub machine_key: Option<PublicKey>,
    /// Its WireGuard public key.
    pub node_key: PublicKey,
    /// When the node key expires.
    pub key_expiry: Option<UnixTime>,
    /// Tailnet IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Tailnet IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Host name the node reported.
    pub hostname: String,
    /// Unique tailnet name (DNS label).
    pub name: String,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// The user owning it (`name@domain`), from its auth key or given when
    /// a WireGuard-only device is added; `None` for nodes made before
    /// users existed. A tagged node acts as its tags, not its user.
    pub user: Option<String>,
    /// Deleted once its stream has been gone for a grace period.
    pub ephemeral: bool,
    /// A plain WireGuard peer (no Causeway software).
    pub wireguard_only: bool,
    /// Routes the node offers.
    pub advertised_routes: BTreeSet<IpNet>,
    /// Routes an admin or `autoApprovers` allowed (kept when the node stops
    /// advertising them, so a restarting router gets them back).
    pub approved_routes: BTreeSet<IpNet>,
    /// Where its WireGuard socket can be reached, in the node's order.
    pub endpoints: Vec<SocketAddr>,
    /// When it was created.
    pub created: UnixTime,
    /// When its stream was last seen.
    pub last_seen: Option<UnixTime>,
}

impl NodeRecord {
    /// Whether the node key has expired at `now`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        self.key_expiry.is_some_and(|e| e <= now)
    }

    /// The node as the policy compiler sees it: its addresses, tags, user
    /// and the routes it serves (advertised and approved).
    pub fn policy_node(&self) -> PolicyNode {
        let routes = self
            .advertised_routes
            .intersection(&self.approved_routes)
            .copied();
        PolicyNode::new(
            self.id,
            [IpAddr::V4(self.ipv4), IpAddr::V6(self.ipv6)],
            &self.tags,
            self.user.as_deref(),
        )
        .with_routes(routes)
    }

    /// The exit routes (`0.0.0.0/0`, `::/0`) it advertises and an admin or
    /// `autoApprovers` approved, sorted.
    pub fn exit_routes(&self) -> Vec<IpNet> {
        self.advertised_routes
            .intersection(&self.approved_routes)
            .filter(|p| is_default_route(p))
            .copied()
            .collect()
    }

    /// Its tailnet addresses as host prefixes (/32, /128).
    pub fn addresses(&self) -> Vec<IpNet> {
        vec![
            IpNet::from(IpAddr::V4(self.ipv4)),
            IpNet::from(IpAddr::V6(self.ipv6)),
        ]
    }
}

/// Identifies one map stream of a node, so a stale stream closing does not
/// mark a reconnected node offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Runtime presence of a node (not persisted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// The open stream, if any.
    pub session: Option<SessionId>,
    /// The last stream that closed.
    pub last_session: Option<SessionId>,
}

/// What a subnet router last reported about its routes (runtime, not
/// persisted: a router reports it again whenever its stream opens).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterReport {
    /// Its priority: among eligible routers the highest gets a route.
    pub priority: u32,
    /// Per prefix: healthy or not, and why. A prefix it does not mention
    /// counts as healthy.
    pub health: BTreeMap<IpNet, PrefixHealth>,
    /// On an app connector: the domains it resolves for the tailnet
    /// (normalized, sorted, at most [`MAX_CONNECTOR_DOMAINS`]); empty on
    /// any other node.
    pub connector_domains: Vec<String>,
}

/// One prefix's health as a router reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixHealth {
    /// Whether the router can forward to the prefix.
    pub healthy: bool,
    /// Why not, in the router's words (at most
    /// [`causeway_wire::MAX_HEALTH_REASON`] bytes).
    pub reason: String,
}

impl RouterReport {
    /// Whether the router reports `prefix` healthy (unmentioned: yes).
    pub fn is_healthy(&self, prefix: &IpNet) -> bool {
        self.health.get(prefix).is_none_or(|h| h.healthy)
    }

    /// Whether the node is an app connector.
    pub fn is_connector(&self) -> bool {
        !self.connector_domains.is_empty()
    }

    /// Keeps the domains that are DNS names (a bad one is dropped, not
    /// fatal: the stream carries other news), bounded.
    fn set_connector_domains(&mut self, reported: &[String]) {
        let mut domains: Vec<String> = reported
            .iter()
            .filter_map(|d| normalize_domain(d).ok())
            .collect();
        domains.sort();
        domains.dedup();
        domains.truncate(MAX_CONNECTOR_DOMAINS);
        self.connector_domains = domains;
    }

    fn set_health(&mut self, reported: &[RouteHealth]) {
        // Bounded: a node cannot make control hold more than this.
        self.health = reported
            .iter()
            .take(MAX_ROUTE_HEALTH)
            .map(|h| {
                let mut reason = h.reason.clone();
                if reason.len() > MAX_HEALTH_REASON {
                    let mut end = MAX_HEALTH_REASON;
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason.truncate(end);
                }
                (
                    h.prefix.trunc(),
                    PrefixHealth {
                        healthy: h.healthy,
                        reason,
                    },
                )
            })
            .collect();
    }
}

/// How long, by default, a router that was unhealthy or offline must stay
/// healthy and online before it may take a route again (seconds).
pub const DEFAULT_ROUTE_HOLD_DOWN: i64 = 10;

/// What an operation changed: callers persist these nodes (upsert, or
/// delete when gone) and keys, and fan the node set out to map streams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Nodes whose record or public view changed (or that were removed).
    pub nodes: BTreeSet<NodeId>,
    /// Auth keys that changed.
    pub auth_keys: BTreeSet<String>,
    /// Whether the DNS configuration (records or split DNS) changed.
    pub dns_changed: bool,
    /// Whether the split-DNS entries changed (persist them).
    pub split_dns_changed: bool,
    /// Nodes whose packet filter or visible peers changed (nothing to
    /// persist: streams are told).
    pub access: BTreeSet<NodeId>,
}

impl ChangeSet {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.auth_keys.is_empty()
            && !self.dns_changed
            && !self.split_dns_changed
            && self.access.is_empty()
    }

    /// Whether open map streams need to hear about this change.
    pub fn announces(&self) -> bool {
        !self.nodes.is_empty() || self.dns_changed || !self.access.is_empty()
    }

    /// Adds what `other` changed.
    pub fn merge(&mut self, other: ChangeSet) {
        self.nodes.extend(other.nodes);
        self.auth_keys.extend(other.auth_keys);
        self.dns_changed |= other.dns_changed;
        self.split_dns_changed |= other.split_dns_changed;
        self.access.extend(other.access);
    }

    fn node(id: NodeId) -> Self {
        Self {
            nodes: BTreeSet::from([id]),
            ..Self::default()
        }
    }
}

/// A successful registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The node registered (new or existing).
    pub node_id: NodeId,
    /// What changed.
    pub changes: ChangeSet,
}

/// Why a registration or map request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The auth key was refused.
    #[error("{0}")]
    AuthKey(#[from] AuthKeyRefusal),
    /// A machine control does not know came without an auth key.
    #[error("this machine is not registered and no auth key was given")]
    AuthKeyRequired,
    /// The machine is registered with another node key and neither the old
    /// key nor an auth key was presented.
    #[error(
        "this machine is registered with another node key; present old_node_key or an auth key"
    )]
    NodeUnknown,
    /// The node key has expired.
    #[error("node key has expired; register a new node key with old_node_key set")]
    NodeKeyExpired,
    /// Another node already uses that node key.
    #[error("node key {0} is already registered to another node")]
    NodeKeyInUse(String),
    /// No address left.
    #[error("the tailnet address range is exhausted")]
    AddressesExhausted,
}

impl RegisterError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AuthKey(_) | Self::AuthKeyRequired => ErrorCode::AuthKeyRefused,
            Self::NodeUnknown => ErrorCode::NodeUnknown,
            Self::NodeKeyExpired => ErrorCode::NodeKeyExpired,
            Self::NodeKeyInUse(_) => ErrorCode::BadRequest,
            Self::AddressesExhausted => ErrorCode::Internal,
        }
    }
}

/// Why an admin operation was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No node with that id or name.
    #[error("no node {0:?}")]
    NodeNotFound(String),
    /// No auth key with that id.
    #[error("no auth key {0:?}")]
    AuthKeyNotFound(String),
    /// Approval of a route the node does not advertise.
    #[error("node {node} does not advertise {prefix}")]
    RouteNotAdvertised {
        /// Node name.
        node: String,
        /// The prefix.
        prefix: IpNet,
    },
    /// A prefix with host bits set.
    #[error("prefix {prefix} has host bits set; did you mean {}?", prefix.trunc())]
    NonCanonicalPrefix {
        /// The prefix.
        prefix: IpNet,
    },
    /// A bad tag.
    #[error(transparent)]
    InvalidTag(#[from] InvalidTag),
    /// A bad policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A user that is not `name@domain`.
    #[error("invalid user {0:?}: expected an e-mail-like name@domain")]
    InvalidUser(String),
    /// A bad device name.
    #[error("invalid name {0:?}: expected letters, digits and - (a DNS label)")]
    InvalidName(String),
    /// The random key id collided with an existing one.
    #[error("auth key id collision; try again")]
    KeyIdCollision,
    /// No address left.
    #[error("the tailnet address range is exhausted")]
    AddressesExhausted,
    /// The key is already taken.
    #[error("public key {0} is already registered to another node")]
    NodeKeyInUse(String),
    /// A split-DNS domain that is not a DNS name, or is the tailnet's own.
    #[error("split-DNS domain {domain:?}: {reason}")]
    InvalidSplitDnsDomain {
        /// The domain as given.
        domain: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A split-DNS entry with no resolvers, or too many.
    #[error(
        "split-DNS domain {domain:?}: expected 1 to {MAX_SPLIT_DNS_RESOLVERS} resolver addresses, got {count}"
    )]
    SplitDnsResolverCount {
        /// The domain.
        domain: String,
        /// How many were given.
        count: usize,
    },
    /// No split-DNS entry for that domain.
    #[error("no split-DNS entry for {0:?}")]
    SplitDnsNotFound(String),
}

/// The most resolvers one split-DNS domain may name (clients try them in
/// order; more than a few only slows failure down).
pub const MAX_SPLIT_DNS_RESOLVERS: usize = 8;

/// What the policy gives one node: the packet filter it enforces and the
/// peers it may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAccess {
    /// The tailnet has no policy: Tailscale's default applies (`*` may
    /// reach `*:*` on TCP, UDP and ICMP), so the node gets that policy's
    /// filter, which lets in the tailnet's addresses and approved subnet
    /// routes (see [`tailnet_sources`]), and sees every peer.
    AllowAll(Arc<PacketFilter>),
    /// What the policy compiled to for this node.
    Compiled(Arc<NodePolicy>),
}

impl NodeAccess {
    /// The packet filter to send the node.
    pub fn filter(&self) -> PacketFilter {
        match self {
            NodeAccess::AllowAll(filter) => PacketFilter::clone(filter),
            NodeAccess::Compiled(policy) => policy.filter.clone(),
        }
    }

    /// The application capabilities the node gives its senders: none
    /// without a policy (nothing grants them).
    pub fn cap_grants(&self) -> Vec<CapGrant> {
        match self {
            NodeAccess::AllowAll(_) => Vec::new(),
            NodeAccess::Compiled(policy) => policy.cap_grants.clone(),
        }
    }

    /// Whether the node may see `peer` (one of them may reach the other).
    pub fn sees(&self, peer: NodeId) -> bool {
        match self {
            NodeAccess::AllowAll(_) => true,
            NodeAccess::Compiled(policy) => policy.peers.contains(&peer),
        }
    }
}

/// The tailnet's complete control state.
#[derive(Clone, Debug)]
pub struct TailnetState {
    info: TailnetInfo,
    nodes: BTreeMap<NodeId, NodeRecord>,
    by_machine: BTreeMap<PublicKey, NodeId>,
    by_node_key: BTreeMap<PublicKey, NodeId>,
    by_name: BTreeMap<String, NodeId>,
    used_v4: BTreeSet<Ipv4Addr>,
    auth_keys: BTreeMap<String, AuthKey>,
    policy: Policy,
    policy_text: Option<String>,
    primaries: BTreeMap<IpNet, NodeId>,
    primary_by_node: BTreeMap<NodeId, BTreeSet<IpNet>>,
    /// Each router's last health report and priority.
    routers: BTreeMap<NodeId, RouterReport>,
    /// Since when each router has been a healthy candidate for a prefix.
    healthy_since: BTreeMap<(NodeId, IpNet), UnixTime>,
    /// Seconds a router must be a healthy candidate before it is eligible.
    route_hold_down: i64,
    /// When the next hold-down ends (selection must run again then).
    route_wakeup: Option<UnixTime>,
    presence: BTreeMap<NodeId, Presence>,
    expired_announced: BTreeSet<NodeId>,
    next_node_id: u64,
    next_session: u64,
    dns_records: BTreeMap<String, Vec<IpAddr>>,
    dns_names: BTreeMap<NodeId, String>,
    dns_generation: u64,
    split_dns: BTreeMap<String, Vec<IpAddr>>,
    /// Nodes that announce app-connector domains (online or not).
    connectors: BTreeSet<NodeId>,
    /// Split DNS to the online app connectors: domain → their IPv4
    /// addresses. An admin's entry for the same domain wins.
    connector_split: BTreeMap<String, Vec<IpAddr>>,
    /// The connectors [`Self::connector_split`] was made from.
    connector_split_from: BTreeSet<NodeId>,
    /// Each node's compiled policy, while a policy is set.
    compiled: BTreeMap<NodeId, Arc<NodePolicy>>,
    /// The nodes as the compiler last saw them: a change to one of these
    /// (tags, user, addresses, served routes), a node joining or leaving,
    /// or a new policy recompiles; endpoint and presence changes do not.
    compiled_inputs: BTreeMap<NodeId, PolicyNode>,
    /// The policy changed since the last compile.
    policy_dirty: bool,
    /// Every node's filter while no policy is set.
    default_filter: Arc<PacketFilter>,
}

impl TailnetState {
    /// An empty tailnet.
    pub fn new(info: TailnetInfo) -> Self {
        let default_filter = Arc::new(default_policy_filter(tailnet_sources(info.ula, [])));
        Self {
            info,
            nodes: BTreeMap::new(),
            by_machine: BTreeMap::new(),
            by_node_key: BTreeMap::new(),
            by_name: BTreeMap::new(),
            used_v4: BTreeSet::new(),
            auth_keys: BTreeMap::new(),
            policy: Policy::default(),
            policy_text: None,
            primaries: BTreeMap::new(),
            primary_by_node: BTreeMap::new(),
            routers: BTreeMap::new(),
            healthy_since: BTreeMap::new(),
            route_hold_down: DEFAULT_ROUTE_HOLD_DOWN,
            route_wakeup: None,
            presence: BTreeMap::new(),
            expired_announced: BTreeSet::new(),
            next_node_id: 1,
            next_session: 1,
            dns_records: BTreeMap::new(),
            dns_names: BTreeMap::new(),
            dns_generation: 1,
            split_dns: BTreeMap::new(),
            connectors: BTreeSet::new(),
            connector_split: BTreeMap::new(),
            connector_split_from: BTreeSet::new(),
            compiled: BTreeMap::new(),
            compiled_inputs: BTreeMap::new(),
            policy_dirty: false,
            default_filter,
        }
    }

    /// Rebuilds the state from storage. Every node starts offline except
    /// WireGuard-only devices.
    pub fn restore(
        info: TailnetInfo,
        nodes: Vec<NodeRecord>,
        keys: Vec<AuthKey>,
        policy_text: Option<String>,
        split_dns: BTreeMap<String, Vec<IpAddr>>,
        next_node_id: u64,
        now: UnixTime,
    ) -> Result<Self, PolicyError> {
        let mut state = Self::new(info);
        state.split_dns = split_dns;
        if let Some(text) = policy_text {
            state.policy = Policy::parse(&text)?;
            state.policy_text = Some(text);
            state.policy_dirty = true;
        }
        let mut changes = ChangeSet::default();
        for node in nodes {
            state.next_node_id = state.next_node_id.max(node.id.0 + 1);
            if node.is_expired(now) {
                state.expired_announced.insert(node.id);
            }
            changes.nodes.insert(node.id);
            state.index(node);
        }
        state.next_node_id = state.next_node_id.max(next_node_id);
        for key in keys {
            state.auth_keys.insert(key.id.clone(), key);
        }
        state.commit(changes, now);
        Ok(state)
    }

    /// The tailnet's identity.
    pub fn info(&self) -> &TailnetInfo {
        &self.info
    }

    /// The id the next node will get (persist it so ids are never reused).
    pub fn next_node_id(&self) -> u64 {
        self.next_node_id
    }

    /// A node by id.
    pub fn node(&self, id: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&id)
    }

    /// All nodes, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// The node registered by a machine key.
    pub fn node_by_machine(&self, machine_key: &PublicKey) -> Option<&NodeRecord> {
        self.by_machine
            .get(machine_key)
            .and_then(|id| self.nodes.get(id))
    }

    /// A node by decimal id or by name.
    pub fn find_node(&self, id_or_name: &str) -> Option<NodeId> {
        if let Ok(n) = id_or_name.parse::<u64>() {
            return self.nodes.contains_key(&NodeId(n)).then_some(NodeId(n));
        }
        self.by_name.get(id_or_name).copied()
    }

    /// Whether a node has an open stream (WireGuard-only devices always do).
    pub fn is_online(&self, id: NodeId) -> bool {
        let wg_only = self.nodes.get(&id).is_some_and(|n| n.wireguard_only);
        wg_only || self.presence.get(&id).is_some_and(|p| p.session.is_some())
    }

    /// Runtime presence of a node.
    pub fn presence(&self, id: NodeId) -> Presence {
        self.presence.get(&id).copied().unwrap_or_default()
    }

    /// Routes for which a node is primary.
    pub fn primary_routes(&self, id: NodeId) -> BTreeSet<IpNet> {
        self.primary_by_node.get(&id).cloned().unwrap_or_default()
    }

    /// Prefix → primary node.
    pub fn primaries(&self) -> &BTreeMap<IpNet, NodeId> {
        &self.primaries
    }

    /// What router `id` last reported (priority, per-prefix health);
    /// `None` while it has reported nothing since control started.
    pub fn router_report(&self, id: NodeId) -> Option<&RouterReport> {
        self.routers.get(&id)
    }

    /// How router `id` stands for `prefix` at `now`, when it is a
    /// candidate for it (see [`crate::routes`]).
    pub fn route_standing(&self, id: NodeId, prefix: &IpNet, now: UnixTime) -> Option<Standing> {
        let node = self.nodes.get(&id)?;
        let candidate = self.is_online(id)
            && !node.is_expired(now)
            && node.advertised_routes.contains(prefix)
            && node.approved_routes.contains(prefix);
        if !candidate {
            return None;
        }
        Some(match self.healthy_since.get(&(id, *prefix)) {
            None => Standing::Unhealthy,
            Some(since) if now >= since.saturating_add(self.route_hold_down) => Standing::Eligible,
            Some(_) => Standing::HoldDown,
        })
    }

    /// Sets how long (seconds) a router that was unhealthy or offline must
    /// be a healthy candidate before it may take a route again.
    pub fn set_route_hold_down(&mut self, seconds: u64) {
        self.route_hold_down = i64::try_from(seconds).unwrap_or(i64::MAX);
    }

    /// When the next hold-down ends: call [`TailnetState::reselect_routes`]
    /// then, since a router becoming eligible may take a route from an
    /// unhealthy primary.
    pub fn route_wakeup(&self) -> Option<UnixTime> {
        self.route_wakeup
    }

    /// Runs primary selection again (a hold-down ended).
    pub fn reselect_routes(&mut self, now: UnixTime) -> ChangeSet {
        self.commit(ChangeSet::default(), now)
    }

    /// All auth keys, by id.
    pub fn auth_keys(&self) -> impl Iterator<Item = &AuthKey> {
        self.auth_keys.values()
    }

    /// One auth key.
    pub fn auth_key(&self, id: &str) -> Option<&AuthKey> {
        self.auth_keys.get(id)
    }

    /// The current policy text, as set.
    pub fn policy_text(&self) -> Option<&str> {
        self.policy_text.as_deref()
    }

    /// The parsed policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks an auth key string without using it.
    pub fn validate_auth_key(&self, key: &str, now: UnixTime) -> Result<&AuthKey, AuthKeyRefusal> {
        let (id, secret) = auth_keys::parse(key).ok_or(AuthKeyRefusal::Unknown)?;
        let stored = self.auth_keys.get(id).ok_or(AuthKeyRefusal::Unknown)?;
        stored.check(secret, now)?;
        Ok(stored)
    }

    /// Creates an auth key from caller-supplied randomness.
    pub fn create_auth_key(
        &mut self,
        spec: &AuthKeySpec,
        random_id: [u8; auth_keys::ID_BYTES],
        random_secret: [u8; auth_keys::SECRET_BYTES],
        now: UnixTime,
    ) -> Result<(NewAuthKey, ChangeSet), AdminError> {
        if let Some(user) = &spec.user
            && !is_user(user)
        {
            return Err(AdminError::InvalidUser(user.clone()));
        }
        let new = auth_keys::create(spec, random_id, random_secret, now)?;
        if self.auth_keys.contains_key(&new.key.id) {
            return Err(AdminError::KeyIdCollision);
        }
        self.auth_keys.insert(new.key.id.clone(), new.key.clone());
        let changes = ChangeSet {
            auth_keys: BTreeSet::from([new.key.id.clone()]),
            ..ChangeSet::default()
        };
        Ok((new, changes))
    }

    /// Revokes an auth key (idempotent).
    pub fn revoke_auth_key(&mut self, id: &str) -> Result<ChangeSet, AdminError> {
        let key = self
            .auth_keys
            .get_mut(id)
            .ok_or_else(|| AdminError::AuthKeyNotFound(id.to_owned()))?;
        key.revoked = true;
        Ok(ChangeSet {
            auth_keys: BTreeSet::from([id.to_owned()]),
            ..ChangeSet::default()
        })
    }

    /// Registers a node key for `machine_key`: a new machine (needs an auth
    /// key), a rotation (`old_node_key` is the current key), a
    /// re-authentication (an auth key), or a repeat of the current
    /// registration. `key_lifetime` is how long the node key stays valid.
    pub fn register(
        &mut self,
        machine_key: PublicKey,
        req: &RegisterRequest,
        key_lifetime: i64,
        now: UnixTime,
    ) -> Result<Registration, RegisterError> {
        if let Some(&owner) = self.by_node_key.get(&req.node_key) {
            let same_machine =
                self.nodes.get(&owner).and_then(|n| n.machine_key) == Some(machine_key);
            if !same_machine {
                return Err(RegisterError::NodeKeyInUse(req.node_key.short()));
            }
        }
        let expiry = Some(now.saturating_add(key_lifetime));
        if let Some(&id) = self.by_machine.get(&machine_key) {
            return self.reregister(id, req, expiry, now);
        }
        // A machine we do not know: only an auth key lets it in.
        let Some(key_text) = req.auth_key.as_deref() else {
            return Err(RegisterError::AuthKeyRequired);
        };
        let key = self.validate_auth_key(key_text, now)?.clone();
        let ipv4 = lowest_free_v4(&self.used_v4).ok_or(RegisterError::AddressesExhausted)?;
        let id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        let name = self.unique_name(&req.hostname, None);
        let node = NodeRecord {
            id,
            machine_key: Some(machine_key),
            node_key: req.node_key,
            key_expiry: expiry,
            ipv4,
            ipv6: v6_for(self.info.ula, ipv4),
            hostname: req.hostname.clone(),
            name,
            tags: key.tags.clone(),
            user: key.user.clone(),
            ephemeral: key.ephemeral,
            wireguard_only: false,
            advertised_routes: BTreeSet::new(),
            approved_routes: BTreeSet::new(),
            endpoints: Vec::new(),
            created: now,
            last_seen: None,
        };
        self.index(node);
        let mut changes = ChangeSet::node(id);
        changes.auth_keys.insert(self.use_key(&key.id));
        Ok(Registration {
            node_id: id,
            changes: self.commit(changes, now),
        })
    }

    fn reregister(
        &mut self,
        id: NodeId,
        req: &RegisterRequest,
        expiry: Option<UnixTime>,
        now: UnixTime,
    ) -> Result<Registration, RegisterError> {
        let Some(node) = self.nodes.get(&id).cloned() else {
            return Err(RegisterError::NodeUnknown);
        };
        let mut changes = ChangeSet::node(id);
        let mut new_tags = None;
        if let Some(key_text) = req.auth_key.as_deref() {
            // Re-authentication: the key decides tags and ephemerality anew.
            let key = self.validate_auth_key(key_text, now)?.clone();
            changes.auth_keys.insert(self.use_key(&key.id));
            new_tags = Some((key.tags, key.user, key.ephemeral));
        } else if req.old_node_key == Some(node.node_key) {
            // Rotation, proven by the machine key of the channel.
        } else if req.node_key == node.node_key {
            if node.is_expired(now) {
                return Err(RegisterError::NodeKeyExpired);
            }
            // Repeat of the current registration: nothing changes.
            return Ok(Registration {
                node_id: id,
                changes: ChangeSet::default(),
            });
        } else {
            return Err(RegisterError::NodeUnknown);
        }
        let old_key = node.node_key;
        let name = self.unique_name(&req.hostname, Some(id));
        self.by_node_key.remove(&old_key);
        self.by_node_key.insert(req.node_key, id);
        let old_name = self.nodes.get(&id).map(|n| n.name.clone());
        if let Some(old_name) = old_name {
            self.by_name.remove(&old_name);
        }
        self.by_name.insert(name.clone(), id);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.node_key = req.node_key;
            node.key_expiry = expiry;
            node.hostname = req.hostname.clone();
            node.name = name;
            if let Some((tags, user, ephemeral)) = new_tags {
                node.tags = tags;
                node.user = user;
                node.ephemeral = ephemeral;
            }
        }
        self.expired_announced.remove(&id);
        self.auto_approve(id);
        Ok(Registration {
            node_id: id,
            changes: self.commit(changes, now),
        })
    }

    /// Opens a map stream: checks the node key belongs to the machine and
    /// has not expired, stores what the node reports and marks it online.
    pub fn connect(
        &mut self,
        machine_key: PublicKey,
        req: &MapRequest,
        now: UnixTime,
    ) -> Result<(NodeId, SessionId, ChangeSet), RegisterError> {
        let Some(&id) = self.by_machine.get(&machine_key) else {
            return Err(RegisterError::NodeUnknown);
        };
        let Some(node) = self.nodes.get(&id) else {
            return Err(RegisterError::NodeUnknown);
        };
        if node.node_key != req.node_key {
            return Err(RegisterError::NodeUnknown);
        }
        if node.is_expired(now) {
            return Err(RegisterError::NodeKeyExpired);
        }
        let name = self.unique_name(&req.hostname, Some(id));
        let old_name = node.name.clone();
        self.by_name.remove(&old_name);
        self.by_name.insert(name.clone(), id);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.hostname = req.hostname.clone();
            node.name = name;
            node.endpoints = dedup_endpoints(&req.endpoints);
            node.advertised_routes = req.advertised_routes.iter().map(IpNet::trunc).collect();
            node.last_seen = Some(now);
        }
        // A new stream starts a new report: what it does not say is healthy.
        let mut report = RouterReport {
            priority: req.priority.unwrap_or(0),
            ..RouterReport::default()
        };
        report.set_health(req.health.as_deref().unwrap_or_default());
        report.set_connector_domains(req.app_connector.as_deref().unwrap_or_default());
        self.note_connector(id, &report);
        self.routers.insert(id, report);
        let session = SessionId(self.next_session);
        self.next_session += 1;
        self.presence.entry(id).or_default().session = Some(session);
        self.auto_approve(id);
        Ok((id, session, self.commit(ChangeSet::node(id), now)))
    }

    /// Applies an update sent on an open stream; ignored for a stream that
    /// is no longer the node's current one.
    pub fn update(
        &mut self,
        id: NodeId,
        session: SessionId,
        update: &NodeUpdate,
        now: UnixTime,
    ) -> ChangeSet {
        if self.presence(id).session != Some(session) {
            return ChangeSet::default();
        }
        let Some(node) = self.nodes.get_mut(&id) else {
            return ChangeSet::default();
        };
        if let Some(endpoints) = &update.endpoints {
            node.endpoints = dedup_endpoints(endpoints);
        }
        if let Some(routes) = &update.advertised_routes {
            node.advertised_routes = routes.iter().map(IpNet::trunc).collect();
        }
        node.last_seen = Some(now);
        let report = self.routers.entry(id).or_default();
        if let Some(health) = &update.health {
            report.set_health(health);
        }
        if let Some(priority) = update.priority {
            report.priority = priority;
        }
        if let Some(domains) = &update.app_connector {
            report.set_connector_domains(domains);
            let report = report.clone();
            self.note_connector(id, &report);
        }
        self.auto_approve(id);
        self.commit(ChangeSet::node(id), now)
    }

    /// Marks a node offline when its current stream ends.
    pub fn disconnect(&mut self, id: NodeId, session: SessionId, now: UnixTime) -> ChangeSet {
        let Some(presence) = self.presence.get_mut(&id) else {
            return ChangeSet::default();
        };
        if presence.session != Some(session) {
            return ChangeSet::default();
        }
        presence.session = None;
        presence.last_session = Some(session);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.last_seen = Some(now);
        }
        self.commit(ChangeSet::node(id), now)
    }

    /// Deletes an ephemeral node if it is still offline and no stream has
    /// come and gone since `last_session` (what the caller saw when it
    /// started the grace period).
    pub fn remove_ephemeral_if_idle(
        &mut self,
        id: NodeId,
        last_session: Option<SessionId>,
        now: UnixTime,
    ) -> ChangeSet {
        let Some(node) = self.nodes.get(&id) else {
            return ChangeSet::default();
        };
        let presence = self.presence(id);
        if !node.ephemeral || presence.session.is_some() || presence.last_session != last_session {
            return ChangeSet::default();
        }
        self.remove(id, now)
    }

    /// Deletes a node.
    pub fn delete_node(&mut self, id: NodeId, now: UnixTime) -> Result<ChangeSet, AdminError> {
        if !self.nodes.contains_key(&id) {
            return Err(AdminError::NodeNotFound(id.to_string()));
        }
        Ok(self.remove(id, now))
    }

    /// Expires a node's key now, so it must rotate.
    pub fn expire_node(&mut self, id: NodeId, now: UnixTime) -> Result<ChangeSet, AdminError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| AdminError::NodeNotFound(id.to_string()))?;
        node.key_expiry = Some(now);
        self.expired_announced.insert(id);
        Ok(self.commit(ChangeSet::node(id), now))
    }

    /// Finds node keys that expired since the last call (peers must drop
    /// them); call it periodically.
    pub fn expire_due(&mut self, now: UnixTime) -> ChangeSet {
        let due: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_expired(now) && !self.expired_announced.contains(&n.id))
            .map(|n| n.id)
            .collect();
        if due.is_empty() {
            return ChangeSet::default();
        }
        self.expired_announced.extend(due.iter().copied());
        self.commit(
            ChangeSet {
                nodes: due.into_iter().collect(),
                ..ChangeSet::default()
            },
            now,
        )
    }

    /// Approves a route the node advertises.
    pub fn approve_route(
        &mut self,
        id: NodeId,
        prefix: IpNet,
        now: UnixTime,
    ) -> Result<ChangeSet, AdminError> {
        if prefix.trunc() != prefix {
            return Err(AdminError::NonCanonicalPrefix { prefix });
        }
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| AdminError::NodeNotFound(id.to_string()))?;
        if !node.advertised_routes.contains(&prefix) {
            return Err(AdminError::RouteNotAdvertised {
                node: node.name.clone(),
                prefix,
            });
        }
        node.approved_routes.insert(prefix);
        Ok(self.commit(ChangeSet::node(id), now))
    }

    /// Withdraws approval of a route (idempotent).
    pub fn unapprove_route(
        &mut self,
        id: NodeId,
        prefix: IpNet,
        now: UnixTime,
    ) -> Result<ChangeSet, AdminError> {
        if prefix.trunc() != prefix {
            return Err(AdminError::NonCanonicalPrefix { prefix });
        }
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| AdminError::NodeNotFound(id.to_string()))?;
        node.approved_routes.remove(&prefix);
        Ok(self.commit(ChangeSet::node(id), now))
    }

    /// Replaces the policy; on error the old one stays. Routes the new
    /// `autoApprovers` allow are approved at once; approvals are not
    /// withdrawn by a policy change. Nodes whose filter, visible peers or
    /// cap grants change are in the returned [`ChangeSet::access`]. A
    /// policy that would give a current node a filter or cap grants over
    /// the wire limits ([`causeway_wire::MAX_FILTER_RULES`],
    /// [`causeway_wire::MAX_FILTER_ENTRIES`], [`causeway_wire::caps`]) is
    /// refused, naming the node.
    pub fn set_policy(&mut self, text: &str, now: UnixTime) -> Result<ChangeSet, AdminError> {
        let policy = Policy::parse(text)?;
        let nodes: Vec<PolicyNode> = self.nodes.values().map(NodeRecord::policy_node).collect();
        for (id, compiled) in compile(&policy, self.info.ula, &nodes) {
            let too_large = compiled
                .filter
                .check_size()
                .map_err(|e| format!("a filter too large to send: {e}"))
                .and_then(|()| {
                    check_cap_grants(&compiled.cap_grants)
                        .map_err(|e| format!("application capabilities too large to send: {e}"))
                });
            if let Err(what) = too_large {
                let name = self
                    .nodes
                    .get(&id)
                    .map_or_else(|| id.to_string(), |n| n.name.clone());
                return Err(AdminError::Policy(PolicyError::Invalid(format!(
                    "node {name} would get {what}"
                ))));
            }
        }
        self.policy = policy;
        self.policy_text = Some(text.to_owned());
        self.policy_dirty = true;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut changes = ChangeSet::default();
        for id in ids {
            if self.auto_approve(id) {
                changes.nodes.insert(id);
            }
        }
        Ok(self.commit(changes, now))
    }

    /// Compiles the current policy for every node: its packet filter and
    /// the peers it may see. With no policy set this compiles an empty
    /// one (nothing allowed); nodes get [`TailnetState::access`] instead.
    pub fn compile_policy(&self) -> BTreeMap<NodeId, NodePolicy> {
        let nodes: Vec<PolicyNode> = self.nodes.values().map(NodeRecord::policy_node).collect();
        compile(&self.policy, self.info.ula, &nodes)
    }

    /// What the policy gives node `id`: its packet filter and the peers it
    /// may see. With no policy set, every node may reach every node.
    pub fn access(&self, id: NodeId) -> NodeAccess {
        if self.policy_text.is_none() {
            return NodeAccess::AllowAll(Arc::clone(&self.default_filter));
        }
        NodeAccess::Compiled(self.compiled.get(&id).cloned().unwrap_or_default())
    }

    /// The split-DNS entries: domain suffix → resolvers, in order.
    pub fn split_dns(&self) -> &BTreeMap<String, Vec<IpAddr>> {
        &self.split_dns
    }

    /// Sends queries for `domain` and its subdomains to `resolvers`
    /// (replacing any entry for it). The domain is stored lower-case without
    /// a trailing dot; it may not be the tailnet's own domain, which
    /// control answers itself.
    pub fn set_split_dns(
        &mut self,
        domain: &str,
        resolvers: Vec<IpAddr>,
        now: UnixTime,
    ) -> Result<(String, ChangeSet), AdminError> {
        let name = normalize_domain(domain)?;
        if name == self.info.domain || name.ends_with(&format!(".{}", self.info.domain)) {
            return Err(AdminError::InvalidSplitDnsDomain {
                domain: domain.to_owned(),
                reason: "it is inside the tailnet's own domain, which control answers",
            });
        }
        if resolvers.is_empty() || resolvers.len() > MAX_SPLIT_DNS_RESOLVERS {
            return Err(AdminError::SplitDnsResolverCount {
                domain: domain.to_owned(),
                count: resolvers.len(),
            });
        }
        if self.split_dns.get(&name) == Some(&resolvers) {
            return Ok((name, ChangeSet::default()));
        }
        self.split_dns.insert(name.clone(), resolvers);
        let changes = ChangeSet {
            split_dns_changed: true,
            ..ChangeSet::default()
        };
        Ok((name, self.commit(changes, now)))
    }

    /// Removes the split-DNS entry for `domain`.
    pub fn remove_split_dns(
        &mut self,
        domain: &str,
        now: UnixTime,
    ) -> Result<ChangeSet, AdminError> {
        let name = normalize_domain(domain)?;
        if self.split_dns.remove(&name).is_none() {
            return Err(AdminError::SplitDnsNotFound(domain.to_owned()));
        }
        let changes = ChangeSet {
            split_dns_changed: true,
            ..ChangeSet::default()
        };
        Ok(self.commit(changes, now))
    }

    /// Registers a WireGuard-only device with the given public key: it gets
    /// addresses, is always online and has no endpoints (peers learn them
    /// from its handshakes).
    pub fn add_wireguard_device(
        &mut self,
        name: &str,
        public_key: PublicKey,
        now: UnixTime,
    ) -> Result<(NodeId, ChangeSet), AdminError> {
        self.add_wireguard_device_for(name, public_key, None, now)
    }

    /// [`TailnetState::add_wireguard_device`], owned by `user`
    /// (`name@domain`) so the policy can name it by its user or groups.
    pub fn add_wireguard_device_for(
        &mut self,
        name: &str,
        public_key: PublicKey,
        user: Option<&str>,
        now: UnixTime,
    ) -> Result<(NodeId, ChangeSet), AdminError> {
        if let Some(user) = user
            && !is_user(user)
        {
            return Err(AdminError::InvalidUser(user.to_owned()));
        }
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(AdminError::InvalidName(name.to_owned()));
        }
        if self.by_node_key.contains_key(&public_key) {
            return Err(AdminError::NodeKeyInUse(public_key.short()));
        }
        let ipv4 = lowest_free_v4(&self.used_v4).ok_or(AdminError::AddressesExhausted)?;
        let id = NodeId(self.next_node_id);
        self.next_node_id += 1;
        let node = NodeRecord {
            id,
            machine_key: None,
            node_key: public_key,
            key_expiry: None,
            ipv4,
            ipv6: v6_for(self.info.ula, ipv4),
            hostname: name.to_owned(),
            name: self.unique_name(name, None),
            tags: Vec::new(),
            user: user.map(str::to_owned),
            ephemeral: false,
            wireguard_only: true,
            advertised_routes: BTreeSet::new(),
            approved_routes: BTreeSet::new(),
            endpoints: Vec::new(),
            created: now,
            last_seen: None,
        };
        self.index(node);
        Ok((id, self.commit(ChangeSet::node(id), now)))
    }

    /// A wg-quick configuration for a WireGuard-only device: its interface
    /// and one peer per node with a known endpoint.
    pub fn wg_quick_config(
        &self,
        device: NodeId,
        private_key_base64: &str,
        now: UnixTime,
    ) -> Option<String> {
        let dev = self.nodes.get(&device)?;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "[Interface]");
        let _ = writeln!(out, "PrivateKey = {private_key_base64}");
        let _ = writeln!(out, "Address = {}/32, {}/128", dev.ipv4, dev.ipv6);
        for node in self.nodes.values() {
            if node.id == device || node.wireguard_only || node.is_expired(now) {
                continue;
            }
            let Some(endpoint) = node.endpoints.first() else {
                continue;
            };
            let Some(view) = self.view(node.id) else {
                continue;
            };
            let allowed: Vec<String> = view.allowed_ips.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "\n[Peer]");
            let _ = writeln!(out, "# {}", node.name);
            let _ = writeln!(out, "PublicKey = {}", node.node_key);
            let _ = writeln!(out, "AllowedIPs = {}", allowed.join(", "));
            let _ = writeln!(out, "Endpoint = {endpoint}");
            let _ = writeln!(out, "PersistentKeepalive = 25");
        }
        Some(out)
    }

    /// The public view of a node, as peers and the node itself see it.
    pub fn view(&self, id: NodeId) -> Option<Node> {
        let node = self.nodes.get(&id)?;
        let addresses = node.addresses();
        let primary_routes: Vec<IpNet> = self.primary_routes(id).into_iter().collect();
        let mut allowed_ips = addresses.clone();
        allowed_ips.extend(primary_routes.iter().copied());
        Some(Node {
            id,
            name: node.name.clone(),
            node_key: node.node_key,
            key_expiry: node.key_expiry,
            addresses,
            allowed_ips,
            primary_routes,
            endpoints: node.endpoints.clone(),
            tags: node.tags.clone(),
            user: node.user.clone(),
            online: self.is_online(id),
            wireguard_only: node.wireguard_only,
            exit_unhealthy: self.exit_unhealthy(node),
            exit_routes: node.exit_routes(),
        })
    }

    /// Whether `node` offers exit routes and reported one of them
    /// unhealthy (an exit node reports its internet path as the health of
    /// `0.0.0.0/0`; see `RouterReport`).
    fn exit_unhealthy(&self, node: &NodeRecord) -> bool {
        let Some(report) = self.routers.get(&node.id) else {
            return false;
        };
        node.exit_routes().iter().any(|p| !report.is_healthy(p))
    }

    /// The DNS configuration every node gets, and its generation (bumped
    /// whenever a record changes). Split DNS holds the admin's entries and
    /// the domains of the online app connectors.
    pub fn dns(&self) -> (u64, DnsConfig) {
        let mut split = self.split_dns.clone();
        for (domain, resolvers) in &self.connector_split {
            split
                .entry(domain.clone())
                .or_insert_with(|| resolvers.clone());
        }
        let config = DnsConfig {
            domain: self.info.domain.clone(),
            records: self.dns_records.clone(),
            split,
        };
        (self.dns_generation, config)
    }

    /// Keeps [`Self::connectors`] in step with a router's report.
    fn note_connector(&mut self, id: NodeId, report: &RouterReport) {
        if report.is_connector() {
            self.connectors.insert(id);
        } else {
            self.connectors.remove(&id);
        }
    }

    /// Recomputes the connectors' split DNS when a changed node is, or
    /// was, a connector (work in the number of connectors, not nodes);
    /// returns whether it changed.
    fn recompute_connector_split(&mut self, changed: &BTreeSet<NodeId>, now: UnixTime) -> bool {
        if !changed
            .iter()
            .any(|id| self.connectors.contains(id) || self.connector_split_from.contains(id))
        {
            return false;
        }
        let mut split: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let mut from = BTreeSet::new();
        for &id in &self.connectors {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if !self.is_online(id) || node.is_expired(now) {
                continue;
            }
            let Some(report) = self.routers.get(&id) else {
                continue;
            };
            from.insert(id);
            for domain in &report.connector_domains {
                split
                    .entry(domain.clone())
                    .or_default()
                    .push(IpAddr::V4(node.ipv4));
            }
        }
        for resolvers in split.values_mut() {
            resolvers.truncate(MAX_SPLIT_DNS_RESOLVERS);
        }
        self.connector_split_from = from;
        if split == self.connector_split {
            return false;
        }
        self.connector_split = split;
        true
    }

    // --- internals -------------------------------------------------------

    fn index(&mut self, node: NodeRecord) {
        if let Some(machine) = node.machine_key {
            self.by_machine.insert(machine, node.id);
        }
        self.by_node_key.insert(node.node_key, node.id);
        self.by_name.insert(node.name.clone(), node.id);
        self.used_v4.insert(node.ipv4);
        self.nodes.insert(node.id, node);
    }

    fn remove(&mut self, id: NodeId, now: UnixTime) -> ChangeSet {
        if let Some(node) = self.nodes.remove(&id) {
            if let Some(machine) = node.machine_key {
                self.by_machine.remove(&machine);
            }
            self.by_node_key.remove(&node.node_key);
            self.by_name.remove(&node.name);
            self.used_v4.remove(&node.ipv4);
        }
        self.presence.remove(&id);
        self.routers.remove(&id);
        self.connectors.remove(&id);
        self.expired_announced.remove(&id);
        self.commit(ChangeSet::node(id), now)
    }

    /// Marks a key used; returns its id for the change set.
    fn use_key(&mut self, id: &str) -> String {
        if let Some(key) = self.auth_keys.get_mut(id) {
            key.used = true;
        }
        id.to_owned()
    }

    /// Approves advertised routes the policy's `autoApprovers` allow;
    /// returns whether anything was approved.
    ///
    /// An app connector's approvals follow what it advertises: a route it
    /// no longer advertises (expired, or its domain removed) loses its
    /// approval, so they cannot pile up (advertised again, it is approved
    /// again).
    fn auto_approve(&mut self, id: NodeId) -> bool {
        let connector = self
            .routers
            .get(&id)
            .is_some_and(RouterReport::is_connector);
        if connector && let Some(node) = self.nodes.get_mut(&id) {
            let advertised = &node.advertised_routes;
            node.approved_routes.retain(|p| advertised.contains(p));
        }
        let Some(node) = self.nodes.get(&id) else {
            return false;
        };
        let newly: Vec<IpNet> = node
            .advertised_routes
            .iter()
            .filter(|p| {
                !node.approved_routes.contains(p)
                    && self.policy.auto_approves_for(
                        p,
                        &node.tags,
                        node.user.as_deref(),
                        connector,
                        self.info.ula,
                    )
            })
            .copied()
            .collect();
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        node.approved_routes.extend(newly.iter().copied());
        !newly.is_empty()
    }

    /// Finishes an operation: recomputes primaries (adding nodes whose
    /// primary routes moved), each node's compiled policy when its inputs
    /// changed, and the DNS records of changed nodes.
    fn commit(&mut self, mut changes: ChangeSet, now: UnixTime) -> ChangeSet {
        changes.nodes.extend(self.recompute_primaries(now));
        self.recompile_policy(&mut changes);
        for &id in &changes.nodes {
            let old = self.dns_names.remove(&id);
            if let Some(old) = &old {
                self.dns_records.remove(old);
            }
            let new = self.nodes.get(&id).filter(|n| !n.is_expired(now)).map(|n| {
                let fqdn = format!("{}.{}", n.name, self.info.domain);
                (fqdn, vec![IpAddr::V4(n.ipv4), IpAddr::V6(n.ipv6)])
            });
            let unchanged = match (&old, &new) {
                (Some(o), Some((n, _))) => o == n,
                (None, None) => true,
                _ => false,
            };
            if let Some((fqdn, addrs)) = new {
                self.dns_names.insert(id, fqdn.clone());
                self.dns_records.insert(fqdn, addrs);
            }
            if !unchanged {
                changes.dns_changed = true;
            }
        }
        changes.dns_changed |= changes.split_dns_changed;
        changes.dns_changed |= self.recompute_connector_split(&changes.nodes, now);
        if changes.dns_changed {
            self.dns_generation += 1;
        }
        changes
    }

    /// Recompiles the policy when it changed or when a node in `changes`
    /// looks different to the compiler (joined, left, new tags, user or
    /// served routes), and adds every node whose filter or visible peers
    /// changed to [`ChangeSet::access`].
    ///
    /// A compile covers every node (the Headscale cases show one node's
    /// tags can change every other node's filter); endpoint and presence
    /// updates, the frequent ones, skip it.
    fn recompile_policy(&mut self, changes: &mut ChangeSet) {
        let inputs_changed = changes.nodes.iter().any(|id| {
            self.compiled_inputs.get(id) != self.nodes.get(id).map(NodeRecord::policy_node).as_ref()
        });
        if !self.policy_dirty && !inputs_changed {
            return;
        }
        if self.policy_text.is_none() {
            // Tailscale's default policy: only what `*` stands for as a
            // source depends on the nodes (their approved subnet routes).
            for id in &changes.nodes {
                match self.nodes.get(id) {
                    Some(node) => self.compiled_inputs.insert(*id, node.policy_node()),
                    None => self.compiled_inputs.remove(id),
                };
            }
            let sources = tailnet_sources(self.info.ula, self.compiled_inputs.values());
            let filter = default_policy_filter(sources);
            if *self.default_filter != filter {
                self.default_filter = Arc::new(filter);
                changes.access.extend(self.nodes.keys().copied());
            }
            return;
        }
        self.policy_dirty = false;
        self.compiled_inputs = self
            .nodes
            .values()
            .map(|n| (n.id, n.policy_node()))
            .collect();
        let inputs: Vec<PolicyNode> = self.compiled_inputs.values().cloned().collect();
        let fresh = compile(&self.policy, self.info.ula, &inputs);
        let mut next = BTreeMap::new();
        for (id, policy) in fresh {
            match self.compiled.remove(&id) {
                Some(old) if *old == policy => {
                    next.insert(id, old);
                }
                Some(_) | None => {
                    changes.access.insert(id);
                    next.insert(id, Arc::new(policy));
                }
            }
        }
        // Nodes that are gone.
        changes.access.extend(self.compiled.keys().copied());
        self.compiled = next;
    }

    /// Re-selects primaries; returns the nodes whose primary routes changed.
    /// Also tracks since when each candidate has been healthy (a candidate
    /// that is unhealthy, offline or not approved starts again) and when
    /// the next hold-down ends.
    fn recompute_primaries(&mut self, now: UnixTime) -> BTreeSet<NodeId> {
        let mut candidates: BTreeMap<IpNet, Vec<Candidate>> = BTreeMap::new();
        let mut healthy_since = BTreeMap::new();
        let mut wakeup: Option<UnixTime> = None;
        for node in self.nodes.values() {
            if !self.is_online(node.id) || node.is_expired(now) {
                continue;
            }
            // Exit routes are never primary: every exit node offers them
            // and each client picks one (`NodeRecord::exit_routes`).
            let report = self.routers.get(&node.id);
            let priority = report.map_or(0, |r| r.priority);
            for prefix in node.advertised_routes.intersection(&node.approved_routes) {
                if is_default_route(prefix) {
                    continue;
                }
                let standing = if report.is_none_or(|r| r.is_healthy(prefix)) {
                    let key = (node.id, *prefix);
                    let since = self.healthy_since.get(&key).copied().unwrap_or(now);
                    healthy_since.insert(key, since);
                    let eligible_at = since.saturating_add(self.route_hold_down);
                    if now >= eligible_at {
                        Standing::Eligible
                    } else {
                        wakeup = Some(wakeup.map_or(eligible_at, |w| w.min(eligible_at)));
                        Standing::HoldDown
                    }
                } else {
                    Standing::Unhealthy
                };
                candidates.entry(*prefix).or_default().push(Candidate {
                    node: node.id,
                    priority,
                    standing,
                });
            }
        }
        self.healthy_since = healthy_since;
        self.route_wakeup = wakeup;
        let next = select_primaries(&candidates, &self.primaries);
        let mut by_node: BTreeMap<NodeId, BTreeSet<IpNet>> = BTreeMap::new();
        for (prefix, id) in &next {
            by_node.entry(*id).or_default().insert(*prefix);
        }
        let touched: BTreeSet<NodeId> = by_node
            .keys()
            .chain(self.primary_by_node.keys())
            .filter(|id| by_node.get(id) != self.primary_by_node.get(id))
            .copied()
            .collect();
        self.primaries = next;
        self.primary_by_node = by_node;
        touched
    }

    /// A DNS label for `hostname`, made unique by a numeric suffix; names
    /// held by `owner` count as free.
    fn unique_name(&self, hostname: &str, owner: Option<NodeId>) -> String {
        let mut base: String = hostname
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        base = base.trim_matches('-').to_owned();
        base.truncate(56);
        if base.is_empty() {
            base = "node".to_owned();
        }
        let free = |name: &str| {
            self.by_name
                .get(name)
                .is_none_or(|holder| Some(*holder) == owner)
        };
        if free(&base) {
            return base;
        }
        (1u64..)
            .map(|n| format!("{base}-{n}"))
            .find(|name| free(name))
            .unwrap_or(base)
    }
}

/// The filter Tailscale's default policy (`*` to `*:*`) compiles to:
/// TCP, UDP, ICMP and ICMPv6 from `sources` to anything the node serves.
fn default_policy_filter(sources: Vec<IpNet>) -> PacketFilter {
    let any = [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(Ipv6Net::default()),
    ];
    PacketFilter {
        rules: vec![FilterRule {
            sources,
            destinations: any
                .into_iter()
                .map(|prefix| FilterDestination {
                    prefix,
                    ports: PortRange::ANY,
                })
                .collect(),
            protocols: Vec::new(),
        }],
    }
}

fn dedup_endpoints(endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut seen = BTreeSet::new();
    endpoints
        .iter()
        .filter(|e| seen.insert(**e))
        .copied()
        .collect()
}

/// A domain as given by an admin → lower case, no trailing dot, checked
/// against RFC 1035's limits (labels of 1–63 letters, digits, `-` or `_`,
/// 253 characters in all).
fn normalize_domain(domain: &str) -> Result<String, AdminError> {
    let refuse = |reason| AdminError::InvalidSplitDnsDomain {
        domain: domain.to_owned(),
        reason,
    };
    let name = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(refuse("expected a DNS name of 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(refuse(
                "expected dot-separated labels of 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(refuse(
                "expected labels of letters, digits, '-' and '_', not starting or ending with '-'",
            ));
        }
    }
    Ok(name)
}
