//! The policy compiler: a [`Policy`] and the tailnet's nodes in, each
//! node's packet filter and visible peers out.
//!
//! Filters are enforced where traffic arrives, as in Tailscale: a node's
//! filter holds only the rules whose destinations are its own addresses or
//! prefixes it serves (approved subnet routes; `autogroup:internet` for
//! exit nodes), each narrowed to those destinations. A node sees a peer
//! when either may open a connection to the other under those filters.
//! A rule that lets sources use an exit node (`autogroup:internet`) also
//! lets them reach the exit node's own addresses on port 53 over UDP and
//! TCP: its DNS forwarder, which clients use while they route through it.
//!
//! `*` as a source means the tailnet, not the internet, as in Tailscale:
//! the tailnet's IPv4 range less the block Tailscale leaves out
//! ([`tailnet_sources`]), its IPv6 /48, and every approved subnet route
//! (exit routes are not subnets and stay out). A peer's allowed IPs can be
//! far wider than its own addresses (an exit node's are `0.0.0.0/0`), so a
//! `*` compiled as every address would let such a peer send from any
//! address it likes to a node that lets `*` in. `*` as a destination still
//! means every address the node receives for.
//!
//! Pure and deterministic: the same policy and nodes give the same output,
//! rules in policy order, addresses and peers sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use causeway_wire::{
    CapGrant, FilterDestination, FilterRule, NodeId, PacketFilter, PortRange, via6,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Alias, AutoGroup, Policy, Rule, is_default_route};
use crate::addresses::{EXCLUDED_V4_RANGE, IPV4_RANGE};

/// Port 53, on an exit node's own addresses: whoever may use the exit
/// node may ask its DNS forwarder.
const DNS_PORT: PortRange = PortRange {
    first: 53,
    last: 53,
};
/// DNS over TCP (6) and UDP (17).
const EXIT_DNS_PROTOCOLS: [u8; 2] = [6, 17];

/// A node as the compiler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyNode {
    /// Control's id.
    pub id: NodeId,
    /// Its tailnet addresses.
    pub addresses: Vec<IpAddr>,
    /// Its tags; a tagged node has no user identity in policy.
    pub tags: Vec<String>,
    /// The user owning it, if any.
    pub user: Option<String>,
    /// Routes it serves (advertised and approved), exit routes included.
    pub routes: Vec<IpNet>,
}

impl PolicyNode {
    /// A node with no routes.
    pub fn new(
        id: NodeId,
        addresses: impl IntoIterator<Item = IpAddr>,
        tags: &[String],
        user: Option<&str>,
    ) -> Self {
        Self {
            id,
            addresses: addresses.into_iter().collect(),
            tags: tags.to_vec(),
            user: user.map(str::to_owned),
            routes: Vec::new(),
        }
    }

    /// The same node serving `routes`.
    pub fn with_routes(mut self, routes: impl IntoIterator<Item = IpNet>) -> Self {
        self.routes = routes.into_iter().collect();
        self
    }

    /// The user this node acts as in policy: none when tagged.
    pub(super) fn policy_user(&self) -> Option<&str> {
        if self.tags.is_empty() {
            self.user.as_deref()
        } else {
            None
        }
    }

    fn is_exit_node(&self) -> bool {
        self.routes.iter().any(is_default_route)
    }
}

/// What one node gets from the policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePolicy {
    /// The packet filter it enforces on what it receives.
    pub filter: PacketFilter,
    /// Peers it may reach or that may reach it, sorted.
    pub peers: BTreeSet<NodeId>,
    /// The application capabilities it gives senders (`app` grants).
    pub cap_grants: Vec<CapGrant>,
}

/// Compiles `policy` for `nodes` of the tailnet whose IPv6 range is
/// `ula`: one entry per node id.
pub fn compile(
    policy: &Policy,
    ula: Ipv6Net,
    nodes: &[PolicyNode],
) -> BTreeMap<NodeId, NodePolicy> {
    let index = Index::new(policy, ula, nodes);
    let rules: Vec<Resolved> = policy.rules.iter().map(|r| index.resolve(r)).collect();
    let mut filters: Vec<Vec<FilterRule>> = vec![Vec::new(); nodes.len()];
    let mut peers: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for rule in &rules {
            // A rule whose sources name nobody (an empty group, a tag no
            // node holds) accepts nothing: Tailscale sends no rule for it
            // (captured case ACL-U10), and neither do we.
            if rule.sources.is_empty() {
                continue;
            }
            let mut dests = Vec::new();
            let mut self_dests = Vec::new();
            let mut dns_dests = Vec::new();
            for dst in &rule.destinations {
                let prefixes: Vec<IpNet> = match &dst.target {
                    Target::Any => vec![any_v4(), any_v6()],
                    Target::Nodes(members) if members.contains(&i) => host_prefixes(node),
                    Target::Nodes(_) => Vec::new(),
                    Target::Prefix(p) if serves(node, p) => vec![*p],
                    Target::Prefix(_) => Vec::new(),
                    Target::Internet if node.is_exit_node() => {
                        // Using an exit node includes its DNS service, as
                        // in Tailscale, whatever ports the rule names.
                        push_dests(&mut dns_dests, &host_prefixes(node), &[DNS_PORT]);
                        internet_prefixes().to_vec()
                    }
                    Target::Internet => Vec::new(),
                    Target::SelfDevices => {
                        if node.policy_user().is_some() {
                            push_dests(&mut self_dests, &host_prefixes(node), &dst.ports);
                        }
                        Vec::new()
                    }
                };
                push_dests(&mut dests, &prefixes, &dst.ports);
            }
            if !dests.is_empty() {
                filters[i].push(filter_rule(rule.sources.clone(), dests, &rule.protocols));
                link(&mut peers, i, &rule.source_nodes);
            }
            if !dns_dests.is_empty() {
                filters[i].push(filter_rule(
                    rule.sources.clone(),
                    dns_dests,
                    &EXIT_DNS_PROTOCOLS,
                ));
            }
            if !self_dests.is_empty() {
                // The user's own nodes among the senders (looked up by user,
                // not by scanning every sender: that would be quadratic).
                let same_user: Vec<usize> = node
                    .policy_user()
                    .and_then(|u| index.by_user.get(u))
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|s| rule.source_nodes.binary_search(s).is_ok())
                    .collect();
                if !same_user.is_empty() {
                    let mut sources: Vec<IpNet> = same_user
                        .iter()
                        .flat_map(|&s| host_prefixes(&nodes[s]))
                        .collect();
                    sources.sort();
                    sources.dedup();
                    filters[i].push(filter_rule(sources, self_dests, &rule.protocols));
                    link(&mut peers, i, &same_user);
                }
            }
        }
    }
    for rules in &mut filters {
        merge_same_sources(rules);
    }
    let cap_grants = super::caps::compile_caps(policy, &index, nodes);
    nodes
        .iter()
        .zip(filters)
        .zip(peers)
        .zip(cap_grants)
        .map(|(((node, rules), peers), cap_grants)| {
            let policy = NodePolicy {
                filter: PacketFilter { rules },
                peers: peers.into_iter().map(|p| nodes[p].id).collect(),
                cap_grants,
            };
            (node.id, policy)
        })
        .collect()
}

/// Public addresses, reached through exit nodes: all of IPv4 less private
/// (RFC 1918), shared (RFC 6598, the tailnet's range) and link-local
/// space; IPv6 global unicast (2000::/3).
pub fn internet_prefixes() -> &'static [IpNet] {
    static INTERNET: OnceLock<Vec<IpNet>> = OnceLock::new();
    INTERNET.get_or_init(|| {
        let holes: Vec<IpNet> = [
            "10.0.0.0/8",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ]
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
        let mut out = Vec::new();
        subtract(any_v4(), &holes, &mut out);
        if let Ok(global) = "2000::/3".parse() {
            out.push(global);
        }
        out
    })
}

/// What `*` stands for as a source: the tailnet's IPv4 range less
/// [`EXCLUDED_V4_RANGE`] (as prefixes, in address order), its IPv6 range
/// `ula`, and the subnet routes the nodes serve, exit routes left out.
/// Sorted, without duplicates; overlapping routes are kept apart, as
/// Tailscale lists them.
pub fn tailnet_sources<'a>(
    ula: Ipv6Net,
    nodes: impl IntoIterator<Item = &'a PolicyNode>,
) -> Vec<IpNet> {
    let mut out = Vec::new();
    subtract(
        IpNet::V4(IPV4_RANGE),
        &[IpNet::V4(EXCLUDED_V4_RANGE)],
        &mut out,
    );
    out.push(IpNet::V6(ula.trunc()));
    out.extend(
        nodes
            .into_iter()
            .flat_map(|n| &n.routes)
            .filter(|r| !is_default_route(r))
            .copied(),
    );
    out.sort();
    out.dedup();
    out
}

// --- internals -------------------------------------------------------------

/// A rule with its aliases resolved against the nodes.
pub(super) struct Resolved {
    /// Source prefixes for the filter (node addresses, literal prefixes).
    pub(super) sources: Vec<IpNet>,
    /// Nodes inside the sources, sorted (for peer visibility).
    pub(super) source_nodes: Vec<usize>,
    pub(super) destinations: Vec<ResolvedDst>,
    protocols: Vec<u8>,
}

pub(super) struct ResolvedDst {
    pub(super) target: Target,
    ports: Vec<PortRange>,
}

pub(super) enum Target {
    Any,
    /// Node indices.
    Nodes(BTreeSet<usize>),
    Prefix(IpNet),
    SelfDevices,
    Internet,
}

/// Nodes grouped the ways aliases name them.
pub(super) struct Index<'a> {
    policy: &'a Policy,
    nodes: &'a [PolicyNode],
    /// `*` as a source ([`tailnet_sources`]).
    star: Vec<IpNet>,
    /// The tailnet's IPv6 range, for `site:` aliases.
    ula: Ipv6Net,
    pub(super) by_user: BTreeMap<&'a str, Vec<usize>>,
    by_tag: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(policy: &'a Policy, ula: Ipv6Net, nodes: &'a [PolicyNode]) -> Self {
        let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut by_tag: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if let Some(user) = node.policy_user() {
                by_user.entry(user).or_default().push(i);
            }
            for tag in &node.tags {
                by_tag.entry(tag).or_default().push(i);
            }
        }
        Self {
            policy,
            nodes,
            star: tailnet_sources(ula, nodes),
            ula,
            by_user,
            by_tag,
        }
    }

    pub(super) fn resolve(&self, rule: &Rule) -> Resolved {
        let mut source_nodes = BTreeSet::new();
        let mut prefixes = Vec::new();
        for alias in &rule.sources {
            match self.prefix_of(alias) {
                Some(ps) => {
                    for p in &ps {
                        source_nodes.extend(self.nodes_in(p));
                    }
                    prefixes.extend(ps);
                }
                None => {
                    let members = self.nodes_of(alias);
                    for &m in &members {
                        prefixes.extend(host_prefixes(&self.nodes[m]));
                    }
                    source_nodes.extend(members);
                }
            }
        }
        prefixes.sort();
        prefixes.dedup();
        let destinations = rule
            .destinations
            .iter()
            .map(|(alias, ports)| {
                let target = match alias {
                    Alias::Any => Target::Any,
                    Alias::AutoGroup(AutoGroup::SelfDevices) => Target::SelfDevices,
                    Alias::AutoGroup(AutoGroup::Internet) => Target::Internet,
                    Alias::Prefix(p) => Target::Prefix(*p),
                    Alias::Site { site, range } => Target::Prefix(self.site_prefix(*site, *range)),
                    Alias::Host(h) => match self.policy.hosts.get(h) {
                        Some(p) => Target::Prefix(*p),
                        None => Target::Nodes(BTreeSet::new()),
                    },
                    Alias::User(_)
                    | Alias::Group(_)
                    | Alias::Tag(_)
                    | Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged) => {
                        Target::Nodes(self.nodes_of(alias).into_iter().collect())
                    }
                };
                ResolvedDst {
                    target,
                    ports: ports.clone(),
                }
            })
            .collect();
        let mut protocols = rule.protocols.clone();
        protocols.sort_unstable();
        protocols.dedup();
        Resolved {
            sources: prefixes,
            source_nodes: source_nodes.into_iter().collect(),
            destinations,
            protocols,
        }
    }

    /// The prefixes an address-like alias stands for as a source; `None`
    /// for aliases that name nodes.
    fn prefix_of(&self, alias: &Alias) -> Option<Vec<IpNet>> {
        match alias {
            Alias::Any => Some(self.star.clone()),
            Alias::Prefix(p) => Some(vec![*p]),
            Alias::Site { site, range } => Some(vec![self.site_prefix(*site, *range)]),
            Alias::Host(h) => Some(self.policy.hosts.get(h).copied().into_iter().collect()),
            Alias::AutoGroup(AutoGroup::Internet) => Some(internet_prefixes().to_vec()),
            Alias::User(_)
            | Alias::Group(_)
            | Alias::Tag(_)
            | Alias::AutoGroup(AutoGroup::Member | AutoGroup::Tagged | AutoGroup::SelfDevices) => {
                None
            }
        }
    }

    /// Indices of the nodes an identity alias names, sorted.
    fn nodes_of(&self, alias: &Alias) -> Vec<usize> {
        let mut out: Vec<usize> = match alias {
            Alias::User(u) => self.by_user.get(u.as_str()).cloned().unwrap_or_default(),
            Alias::Group(g) => self
                .policy
                .groups
                .get(g)
                .into_iter()
                .flatten()
                .filter_map(|u| self.by_user.get(u.as_str()))
                .flatten()
                .copied()
                .collect(),
            Alias::Tag(t) => self.by_tag.get(t.as_str()).cloned().unwrap_or_default(),
            Alias::AutoGroup(AutoGroup::Member) => {
                self.by_user.values().flatten().copied().collect()
            }
            Alias::AutoGroup(AutoGroup::Tagged) => (0..self.nodes.len())
                .filter(|&i| !self.nodes[i].tags.is_empty())
                .collect(),
            Alias::Any
            | Alias::Host(_)
            | Alias::Prefix(_)
            | Alias::Site { .. }
            | Alias::AutoGroup(AutoGroup::SelfDevices | AutoGroup::Internet) => Vec::new(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The tailnet's 4via6 route for `range` at `site`.
    fn site_prefix(&self, site: u16, range: Ipv4Net) -> IpNet {
        IpNet::V6(via6::via6_prefix(self.ula, site, range))
    }

    /// Nodes with an address inside `prefix`.
    fn nodes_in(&self, prefix: &IpNet) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].addresses.iter().any(|a| prefix.contains(a)))
            .collect()
    }
}

/// Whether `node` receives traffic for `prefix`: one of its addresses is
/// inside it, or it overlaps a subnet route the node serves.
fn serves(node: &PolicyNode, prefix: &IpNet) -> bool {
    node.addresses.iter().any(|a| prefix.contains(a))
        || node
            .routes
            .iter()
            .filter(|r| !is_default_route(r))
            .any(|r| r.contains(prefix) || prefix.contains(r))
}

pub(super) fn host_prefixes(node: &PolicyNode) -> Vec<IpNet> {
    node.addresses.iter().map(|a| IpNet::from(*a)).collect()
}

fn push_dests(out: &mut Vec<FilterDestination>, prefixes: &[IpNet], ports: &[PortRange]) {
    for &prefix in prefixes {
        for &range in ports {
            out.push(FilterDestination {
                prefix,
                ports: range,
            });
        }
    }
}

fn filter_rule(
    sources: Vec<IpNet>,
    mut dests: Vec<FilterDestination>,
    protocols: &[u8],
) -> FilterRule {
    dests.sort();
    dests.dedup();
    FilterRule {
        sources,
        destinations: dests,
        protocols: protocols.to_vec(),
    }
}

/// Folds rules with the same sources and protocols into the first of them,
/// as Tailscale does: one rule per sender set keeps filters short.
fn merge_same_sources(rules: &mut Vec<FilterRule>) {
    let mut merged: Vec<FilterRule> = Vec::with_capacity(rules.len());
    for rule in rules.drain(..) {
        match merged
            .iter_mut()
            .find(|m| m.sources == rule.sources && m.protocols == rule.protocols)
        {
            Some(m) => {
                m.destinations.extend(rule.destinations);
                m.destinations.sort();
                m.destinations.dedup();
            }
            None => merged.push(rule),
        }
    }
    *rules = merged;
}

/// Records that the nodes `sources` may reach node `i` (and so see it, and
/// it them).
fn link(peers: &mut [BTreeSet<usize>], i: usize, sources: &[usize]) {
    for &s in sources {
        if s != i {
            peers[i].insert(s);
            peers[s].insert(i);
        }
    }
}

/// `0.0.0.0/0` (ipnet's default prefix).
fn any_v4() -> IpNet {
    IpNet::V4(Ipv4Net::default())
}

/// `::/0`.
fn any_v6() -> IpNet {
    IpNet::V6(Ipv6Net::default())
}

/// Appends `base` less every hole to `out`, as the fewest aligned prefixes,
/// in address order.
fn subtract(base: IpNet, holes: &[IpNet], out: &mut Vec<IpNet>) {
    if holes.iter().any(|h| h.contains(&base)) {
        return;
    }
    if !holes.iter().any(|h| base.contains(h)) {
        out.push(base);
        return;
    }
    let Ok(halves) = base.subnets(base.prefix_len() + 1) else {
        return;
    };
    for half in halves {
        subtract(half, holes, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    fn ula() -> Ipv6Net {
        "fd12:3456:789a::/48".parse().expect("valid prefix")
    }

    #[test]
    fn star_is_the_tailnet_ranges_and_approved_subnet_routes_without_exit_routes() {
        let nodes = [
            PolicyNode::new(NodeId(1), ["100.64.0.1".parse().expect("ip")], &[], None)
                .with_routes([net("10.0.0.0/8"), net("10.33.0.0/16")]),
            PolicyNode::new(NodeId(2), ["100.64.0.2".parse().expect("ip")], &[], None)
                .with_routes([net("0.0.0.0/0"), net("::/0"), net("10.33.0.0/16")]),
        ];

        let star = tailnet_sources(ula(), &nodes);

        let want: Vec<IpNet> = [
            "10.0.0.0/8",
            "10.33.0.0/16",
            "100.64.0.0/11",
            "100.96.0.0/12",
            "100.112.0.0/15",
            "100.114.0.0/16",
            "100.115.0.0/18",
            "100.115.64.0/20",
            "100.115.80.0/21",
            "100.115.88.0/22",
            "100.115.94.0/23",
            "100.115.96.0/19",
            "100.115.128.0/17",
            "100.116.0.0/14",
            "100.120.0.0/13",
            "fd12:3456:789a::/48",
        ]
        .iter()
        .map(|p| net(p))
        .collect();
        assert_eq!(star, want);
    }

    #[test]
    fn star_as_a_source_is_the_tailnet_and_as_a_destination_any_address() {
        let policy =
            Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}"#)
                .expect("valid policy");
        let nodes = [PolicyNode::new(
            NodeId(1),
            ["100.64.0.1".parse().expect("ip")],
            &[],
            Some("alice@example.com"),
        )];

        let compiled = compile(&policy, ula(), &nodes);

        let rules = &compiled[&NodeId(1)].filter.rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].sources, tailnet_sources(ula(), &nodes));
        assert!(!rules[0].sources.contains(&any_v4()));
        assert!(
            !rules[0]
                .sources
                .iter()
                .any(|s| s.contains(&net("203.0.113.7/32")))
        );
        let dests: Vec<IpNet> = rules[0].destinations.iter().map(|d| d.prefix).collect();
        assert_eq!(dests, vec![any_v4(), any_v6()]);
    }

    #[test]
    fn a_rule_whose_sources_name_nobody_gives_no_filter_rule() {
        let policy = Policy::parse(
            r#"{"groups": {"group:empty": []},
                "acls": [
                    {"action": "accept", "src": ["group:empty"], "dst": ["*:*"]},
                    {"action": "accept", "src": ["alice@example.com"], "dst": ["*:22"]}
                ]}"#,
        )
        .expect("valid policy");
        let nodes = [PolicyNode::new(
            NodeId(1),
            ["100.64.0.1".parse().expect("ip")],
            &[],
            Some("alice@example.com"),
        )];

        let compiled = compile(&policy, ula(), &nodes);

        let rules = &compiled[&NodeId(1)].filter.rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].sources, vec![net("100.64.0.1/32")]);
        let ports: Vec<(u16, u16)> = rules[0]
            .destinations
            .iter()
            .map(|d| (d.ports.first, d.ports.last))
            .collect();
        assert_eq!(ports, vec![(22, 22), (22, 22)]);
    }

    fn dns_rules(rules: &[FilterRule]) -> Vec<(Vec<IpNet>, Vec<IpNet>, Vec<u8>)> {
        rules
            .iter()
            .filter(|r| {
                r.destinations
                    .iter()
                    .any(|d| d.ports.first == 53 && d.ports.last == 53)
            })
            .map(|r| {
                (
                    r.sources.clone(),
                    r.destinations.iter().map(|d| d.prefix).collect(),
                    r.protocols.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn whoever_may_use_an_exit_node_may_reach_its_dns_over_udp_and_tcp() {
        let policy = Policy::parse(
            r#"{"acls": [
                {"action": "accept", "src": ["alice@example.com"], "dst": ["autogroup:internet:443"]},
                {"action": "accept", "src": ["bob@example.com"], "dst": ["100.64.0.9:22"]}
            ]}"#,
        )
        .expect("valid policy");
        let exit = PolicyNode::new(
            NodeId(9),
            [
                "100.64.0.9".parse().expect("ip"),
                "fd12:3456:789a::9".parse().expect("ip"),
            ],
            &["tag:exit".to_owned()],
            None,
        )
        .with_routes([net("0.0.0.0/0"), net("::/0")]);
        let alice = PolicyNode::new(
            NodeId(1),
            ["100.64.0.1".parse().expect("ip")],
            &[],
            Some("alice@example.com"),
        );
        let bob = PolicyNode::new(
            NodeId(2),
            ["100.64.0.2".parse().expect("ip")],
            &[],
            Some("bob@example.com"),
        );

        let compiled = compile(&policy, ula(), &[exit, alice, bob]);

        let exit_rules = &compiled[&NodeId(9)].filter.rules;
        assert_eq!(
            dns_rules(exit_rules),
            [(
                vec![net("100.64.0.1/32")],
                vec![net("100.64.0.9/32"), net("fd12:3456:789a::9/128")],
                vec![6, 17]
            )]
        );
        // Bob may SSH to the exit node but not use it: no DNS for him.
        assert!(
            exit_rules
                .iter()
                .filter(|r| r.sources.contains(&net("100.64.0.2/32")))
                .all(|r| r.destinations.iter().all(|d| d.ports.first == 22))
        );
        assert!(compiled[&NodeId(9)].peers.contains(&NodeId(1)));
    }

    #[test]
    fn a_node_that_is_no_exit_node_gets_no_dns_rule_from_an_internet_rule() {
        let policy = Policy::parse(
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:internet:*"]}]}"#,
        )
        .expect("valid policy");
        let router = PolicyNode::new(NodeId(3), ["100.64.0.3".parse().expect("ip")], &[], None)
            .with_routes([net("198.19.1.0/24")]);
        let client = PolicyNode::new(
            NodeId(1),
            ["100.64.0.1".parse().expect("ip")],
            &[],
            Some("alice@example.com"),
        );

        let compiled = compile(&policy, ula(), &[router, client]);

        assert!(compiled[&NodeId(3)].filter.rules.is_empty());
        assert!(compiled[&NodeId(1)].filter.rules.is_empty());
    }
}
