//! Tailnet policy, in Tailscale's policy syntax (huJSON: JSON with comments
//! and trailing commas): `groups`, `hosts`, `tagOwners`, `acls`, `grants`
//! (`ip` and `app`), `autoApprovers` and `tests`. `ssh`, `nodeAttrs`, `sshTests`,
//! `derpMap` and `randomizeClientPort` are kept as written for compilers
//! that do not exist yet; any other top-level key is refused, so a typo such
//! as `"acl"` cannot silently leave a tailnet with no rules.
//!
//! [`Policy::parse`] checks the file and runs its `tests` (against the
//! policy's rules with the identities the tests name, as Tailscale does, not
//! against live nodes); [`compile`] turns it into each node's packet filter,
//! visible peers and the application capabilities (`app` grants) it gives
//! its senders:
//!
//! ```
//! use causeway_tailnet::policy::{compile, Policy, PolicyNode};
//! use causeway_wire::NodeId;
//!
//! let policy = Policy::parse(r#"{
//!   "groups": {"group:dba": ["alice@example.com"]},
//!   "tagOwners": {"tag:db": ["group:dba"]},
//!   "acls": [{"action": "accept", "src": ["group:dba"], "dst": ["tag:db:5432"]}],
//!   "tests": [{"src": "alice@example.com", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]}],
//! }"#).expect("valid policy");
//! let nodes = [
//!     PolicyNode::new(NodeId(1), ["100.64.0.1".parse().unwrap()], &[], Some("alice@example.com")),
//!     PolicyNode::new(NodeId(2), ["100.64.0.2".parse().unwrap()], &["tag:db".into()], None),
//! ];
//! let ula = "fd12:3456:789a::/48".parse().unwrap(); // the tailnet's IPv6 range
//! let compiled = compile(&policy, ula, &nodes);
//! assert_eq!(compiled[&NodeId(2)].filter.rules.len(), 1);
//! assert!(compiled[&NodeId(1)].filter.rules.is_empty());
//! assert!(compiled[&NodeId(1)].peers.contains(&NodeId(2)));
//! ```

mod caps;
mod check;
mod compile;
mod syntax;

use std::collections::{BTreeMap, BTreeSet};

use causeway_wire::{PeerCapMap, PortRange, via6};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;

use syntax::RouteKey;

pub use compile::{NodePolicy, PolicyNode, compile, internet_prefixes, tailnet_sources};
pub(crate) use syntax::is_user;

/// A parsed, checked policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// `group:NAME` → its users.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Host name → prefix.
    pub hosts: BTreeMap<String, IpNet>,
    /// `tag:NAME` → who may apply it (kept for display: tags are given by
    /// the admin who creates the auth key).
    pub tag_owners: BTreeMap<String, Vec<String>>,
    /// `acls` then `grants`, in the order written.
    pub rules: Vec<Rule>,
    /// The `app` parts of `grants`, in the order written.
    pub app_grants: Vec<AppGrant>,
    /// Who may have which routes approved without an admin.
    pub auto_approvers: AutoApprovers,
    /// `tests`, all of which passed.
    pub tests: Vec<PolicyTest>,
    /// Sections kept as written (`ssh`, `nodeAttrs`, …).
    pub other: BTreeMap<String, Value>,
}

/// One accept rule: traffic from `sources` to each destination's ports,
/// over `protocols` (empty: TCP, UDP, ICMP and ICMPv6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Where it came from, for messages: `acls[0]`, `grants[2]`.
    pub origin: String,
    /// Who may send.
    pub sources: Vec<Alias>,
    /// What they may reach, each with its ports.
    pub destinations: Vec<(Alias, Vec<PortRange>)>,
    /// IANA protocol numbers; empty means TCP, UDP, ICMP and ICMPv6.
    pub protocols: Vec<u8>,
}

/// The `app` part of one grant: `sources` hold `caps` at the nodes
/// `destinations` name (the application on that node reads them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppGrant {
    /// Where it came from, for messages: `grants[2]`.
    pub origin: String,
    /// Who holds the capabilities.
    pub sources: Vec<Alias>,
    /// The nodes granting them.
    pub destinations: Vec<Alias>,
    /// Capability name → values, as written.
    pub caps: PeerCapMap,
}

/// A name for a set of nodes or addresses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alias {
    /// `*`: every address.
    Any,
    /// `name@domain`: the user's own (untagged) nodes.
    User(String),
    /// `group:NAME`: its users' untagged nodes.
    Group(String),
    /// `tag:NAME`: nodes carrying the tag.
    Tag(String),
    /// A name from `hosts`.
    Host(String),
    /// An IP address or prefix.
    Prefix(IpNet),
    /// `site:SITE:PREFIX`: an IPv4 range at a 4via6 site, that is the
    /// tailnet's IPv6 route for it (`causeway_wire::via6`). Destinations
    /// and `autoApprovers.routes` only.
    Site {
        /// The site ID.
        site: u16,
        /// The IPv4 range at that site.
        range: Ipv4Net,
    },
    /// `autogroup:…`.
    AutoGroup(AutoGroup),
}

/// The `autogroup:` aliases understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AutoGroup {
    /// `autogroup:member`: every user-owned (untagged) node.
    Member,
    /// `autogroup:tagged`: every tagged node.
    Tagged,
    /// `autogroup:self`: (destination only) the source user's own nodes.
    SelfDevices,
    /// `autogroup:internet`: (destination only) public addresses, through
    /// exit nodes.
    Internet,
}

/// One `tests` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyTest {
    /// The identity sending.
    pub src: Alias,
    /// Protocol tested (default TCP).
    pub proto: u8,
    /// Destinations that must be allowed.
    pub accept: Vec<(Alias, Vec<PortRange>)>,
    /// Destinations that must be refused.
    pub deny: Vec<(Alias, Vec<PortRange>)>,
}

/// `autoApprovers`: routes (prefix → approvers) and exit nodes (approvers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// An advertised prefix equal to a key is approved for nodes matching
    /// one of its approvers.
    pub routes: BTreeMap<IpNet, Vec<Approver>>,
    /// `site:SITE:PREFIX` keys: the 4via6 route for that range at that
    /// site, in the tailnet's own IPv6 range, is approved likewise.
    pub site_routes: BTreeMap<(u16, Ipv4Net), Vec<Approver>>,
    /// Nodes matching one of these may have the default routes approved.
    pub exit_node: Vec<Approver>,
}

/// One entry of an approver list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Approver {
    /// `tag:NAME`: nodes carrying that tag.
    Tag(String),
    /// `group:NAME`: untagged nodes owned by a member of the group.
    Group(String),
    /// `user@domain`: untagged nodes owned by that user.
    User(String),
}

/// Why a policy was refused; the message names the offending value and,
/// where the file says it, its line and column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not huJSON.
    #[error("policy is not valid huJSON: {0}")]
    Syntax(String),
    /// Valid huJSON but the wrong shape or meaning.
    #[error("policy: {0}")]
    Invalid(String),
    /// One of the policy's own `tests` failed.
    #[error("policy test failed: {0}")]
    TestFailed(String),
}

impl Policy {
    /// Parses huJSON policy text, checks it and runs its `tests`.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        // Pass 1: syntax, and the names defined anywhere in the file.
        let value: Value = json5::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let Value::Object(map) = &value else {
            return Err(invalid("the top level must be an object"));
        };
        let names_of = |key: &str| -> BTreeSet<String> {
            map.get(key)
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let names = syntax::Names {
            groups: names_of("groups"),
            hosts: names_of("hosts"),
            tags: names_of("tagOwners"),
        };
        // Pass 2: shape and meaning, each error at its value's position.
        let raw: syntax::RawPolicy = {
            let _guard = syntax::NamesGuard::set(names);
            json5::from_str(text).map_err(|e| PolicyError::Invalid(e.to_string()))?
        };
        let policy = Self::from_raw(raw)?;
        check::run_tests(&policy)?;
        Ok(policy)
    }

    fn from_raw(raw: syntax::RawPolicy) -> Result<Self, PolicyError> {
        let mut policy = Policy {
            groups: raw
                .groups
                .into_iter()
                .map(|(g, users)| (g.0, users.into_iter().map(|u| u.0).collect()))
                .collect(),
            hosts: raw.hosts.into_iter().map(|(h, p)| (h.0, p.0)).collect(),
            tag_owners: raw
                .tag_owners
                .into_iter()
                .map(|(t, owners)| (t.0, owners.into_iter().map(|o| o.0).collect()))
                .collect(),
            ..Policy::default()
        };
        let kept = [
            ("ssh", raw.ssh),
            ("nodeAttrs", raw.node_attrs),
            ("sshTests", raw.ssh_tests),
            ("derpMap", raw.derp_map),
            ("randomizeClientPort", raw.randomize_client_port),
        ];
        for (key, value) in kept {
            if let Some(value) = value {
                policy.other.insert(key.to_owned(), value);
            }
        }
        for (i, acl) in raw.acls.into_iter().enumerate() {
            let origin = format!("acls[{i}]");
            let protocols: Vec<u8> = acl.proto.map(|p| vec![p.0]).unwrap_or_default();
            let destinations: Vec<(Alias, Vec<PortRange>)> =
                acl.dst.into_iter().map(|d| d.0).collect();
            if let Some(&p) = protocols.first()
                && !syntax::has_ports(p)
                && destinations
                    .iter()
                    .any(|(_, ports)| ports != &[PortRange::ANY])
            {
                return Err(invalid(format!(
                    "{origin}: protocol {p} has no ports, so every dst must end in :* (port ranges apply to tcp, udp and sctp only)"
                )));
            }
            let rule = Rule {
                origin,
                sources: acl.src.into_iter().map(|s| s.0).collect(),
                destinations,
                protocols,
            };
            check_rule_self_sources(&rule)?;
            policy.rules.push(rule);
        }
        for (i, grant) in raw.grants.into_iter().enumerate() {
            let origin = format!("grants[{i}]");
            if grant.ip.is_empty() && grant.app.is_none() {
                return Err(invalid(format!(
                    "{origin}: expected an \"ip\" list, an \"app\" object or both"
                )));
            }
            let sources: Vec<Alias> = grant.src.into_iter().map(|s| s.0).collect();
            let dsts: Vec<Alias> = grant.dst.into_iter().map(|d| d.0).collect();
            if let Some(app) = grant.app {
                if dsts.contains(&Alias::AutoGroup(AutoGroup::Internet)) {
                    return Err(invalid(format!(
                        "{origin}: \"app\" capabilities are granted by nodes, and autogroup:internet names none; use \"ip\" alone for it"
                    )));
                }
                check_self_sources(&origin, &sources, &dsts)?;
                policy.app_grants.push(AppGrant {
                    origin: origin.clone(),
                    sources: sources.clone(),
                    destinations: dsts.clone(),
                    caps: app.0,
                });
            }
            // One rule per protocol (None: the default set), ports merged.
            let mut by_proto: BTreeMap<Option<u8>, Vec<PortRange>> = BTreeMap::new();
            for cap in grant.ip {
                let (proto, ports) = cap.0;
                by_proto.entry(proto).or_default().extend(ports);
            }
            for (proto, mut ports) in by_proto {
                ports.sort();
                ports.dedup();
                let rule = Rule {
                    origin: origin.clone(),
                    sources: sources.clone(),
                    destinations: dsts.iter().map(|d| (d.clone(), ports.clone())).collect(),
                    protocols: proto.map(|p| vec![p]).unwrap_or_default(),
                };
                check_rule_self_sources(&rule)?;
                policy.rules.push(rule);
            }
        }
        for (key, approvers) in raw.auto_approvers.routes {
            let approvers: Vec<Approver> = approvers.into_iter().map(|a| a.0).collect();
            match key.0 {
                RouteKey::Prefix(prefix) => {
                    policy.auto_approvers.routes.insert(prefix, approvers);
                }
                RouteKey::Site(site, range) => {
                    policy
                        .auto_approvers
                        .site_routes
                        .insert((site, range), approvers);
                }
            }
        }
        policy.auto_approvers.exit_node = raw
            .auto_approvers
            .exit_node
            .into_iter()
            .map(|a| a.0)
            .collect();
        for (i, test) in raw.tests.into_iter().enumerate() {
            let src = test.src.0;
            if !matches!(
                src,
                Alias::User(_) | Alias::Tag(_) | Alias::Host(_) | Alias::Prefix(_)
            ) {
                return Err(invalid(format!(
                    "tests[{i}]: src must be a user, a tag, a host or an IP address, not {src:?}"
                )));
            }
            policy.tests.push(PolicyTest {
                src,
                proto: test.proto.map_or(6, |p| p.0),
                accept: test.accept.into_iter().map(|d| d.0).collect(),
                deny: test.deny.into_iter().map(|d| d.0).collect(),
            });
        }
        Ok(policy)
    }

    /// Whether a node with `tags`, owned by `user`, may have `prefix`
    /// approved automatically. A tagged node matches only tag approvers.
    ///
    /// For a subnet router only a prefix named exactly is approved: a
    /// narrower one inside it needs its own entry (or an admin), so an
    /// approval for a VPC's /16 cannot be stretched to a /32 a router was
    /// never meant to attract. For an app connector (`connector`), whose
    /// routes are the addresses its domains resolve to, a prefix inside a
    /// named one is approved too, as in Tailscale, but only a public one
    /// (inside `autogroup:internet`), so a connector's approval can never
    /// reach a private range.
    ///
    /// A 4via6 route of the tailnet whose IPv6 range is `ula` is approved
    /// by a `site:SITE:PREFIX` key naming exactly its site and range.
    pub fn auto_approves_for(
        &self,
        prefix: &IpNet,
        tags: &[String],
        user: Option<&str>,
        connector: bool,
        ula: Ipv6Net,
    ) -> bool {
        let user = if tags.is_empty() { user } else { None };
        let matches = |approvers: &[Approver]| {
            approvers.iter().any(|a| match a {
                Approver::Tag(t) => tags.iter().any(|have| have == t),
                Approver::User(u) => user == Some(u.as_str()),
                Approver::Group(g) => user.is_some_and(|u| {
                    self.groups
                        .get(g)
                        .is_some_and(|members| members.contains(u))
                }),
            })
        };
        // Exit routes only through `exitNode`: a `0.0.0.0/0` entry under
        // `routes` (Tailscale's advice for app connectors) must not make
        // every connector an exit node.
        if is_default_route(prefix) {
            return matches(&self.auto_approvers.exit_node);
        }
        if self
            .auto_approvers
            .routes
            .get(prefix)
            .is_some_and(|approvers| matches(approvers))
        {
            return true;
        }
        if let IpNet::V6(v6) = prefix
            && let Some(site_range) = via6::parse_via6_prefix(ula, *v6)
        {
            return self
                .auto_approvers
                .site_routes
                .get(&site_range)
                .is_some_and(|approvers| matches(approvers));
        }
        connector
            && !is_default_route(prefix)
            && compile::internet_prefixes()
                .iter()
                .any(|internet| internet.contains(prefix))
            && self
                .auto_approvers
                .routes
                .iter()
                .any(|(named, approvers)| named.contains(prefix) && matches(approvers))
    }
}

/// Whether `prefix` is `0.0.0.0/0` or `::/0` (exit-node routes).
pub fn is_default_route(prefix: &IpNet) -> bool {
    prefix.prefix_len() == 0
}

/// `autogroup:self` means "the sending user's own devices", so a rule with
/// it as a destination must have sources that are users: Tailscale refuses
/// tags, hosts and addresses there ("autogroup:self can only be used with
/// users, groups, or supported autogroups"), and so do we.
fn check_rule_self_sources(rule: &Rule) -> Result<(), PolicyError> {
    let dsts: Vec<Alias> = rule.destinations.iter().map(|(a, _)| a.clone()).collect();
    check_self_sources(&rule.origin, &rule.sources, &dsts)
}

/// The check above for any rule: `origin` for messages, its sources and
/// its destination aliases.
fn check_self_sources(origin: &str, sources: &[Alias], dsts: &[Alias]) -> Result<(), PolicyError> {
    if !dsts.contains(&Alias::AutoGroup(AutoGroup::SelfDevices)) {
        return Ok(());
    }
    let not_a_user = sources.iter().find(|s| {
        !matches!(
            s,
            Alias::Any | Alias::User(_) | Alias::Group(_) | Alias::AutoGroup(AutoGroup::Member)
        )
    });
    match not_a_user {
        None => Ok(()),
        Some(src) => Err(invalid(format!(
            "{origin}: src {:?} cannot reach autogroup:self: autogroup:self can only be used with users, groups, autogroup:member or *",
            check::alias_text(src)
        ))),
    }
}

fn invalid(message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wire::NodeId;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"{
        // subnet routers may publish VPC ranges
        "groups": {"group:ops": ["bob@example.com"]},
        "hosts": {"vpc": "198.19.0.0/16", "db1": "198.19.0.5"},
        "tagOwners": {"tag:router": ["autogroup:admin"], "tag:web": ["group:ops"]},
        "autoApprovers": {
            "routes": {
                "198.19.0.0/16": ["tag:router", "alice@example.com", "group:ops",],
            },
            "exitNode": ["tag:exit"],
        },
        "acls": [
            {"action": "accept", "src": ["group:ops"], "dst": ["vpc:22,80-90", "[fd00::1]:443"]},
            {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web:443"], "proto": "tcp"},
        ],
        "grants": [{"src": ["*"], "dst": ["tag:web"], "ip": ["tcp:80", "udp:53", "icmp:*"]}],
        "ssh": [{"action": "accept", "src": ["group:ops"], "dst": ["tag:web"], "users": ["root"]}],
        "tests": [
            {"src": "bob@example.com", "accept": ["db1:22", "198.19.1.1:85"], "deny": ["db1:443"]},
            {"src": "alice@example.com", "accept": ["tag:web:443"], "deny": ["tag:web:22"]},
            {"src": "tag:router", "proto": "udp", "accept": ["tag:web:53"], "deny": ["tag:web:443"]},
        ],
    }"#;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    fn ula() -> Ipv6Net {
        "fd7a:115c:a1e0::/48".parse().expect("valid prefix")
    }

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn parses_every_section() {
        let policy = Policy::parse(SAMPLE).expect("valid policy");
        assert_eq!(
            policy.auto_approvers.routes.get(&net("198.19.0.0/16")),
            Some(&vec![
                Approver::Tag("tag:router".into()),
                Approver::User("alice@example.com".into()),
                Approver::Group("group:ops".into()),
            ])
        );
        assert_eq!(policy.hosts.get("db1"), Some(&net("198.19.0.5/32")));
        assert_eq!(policy.other.keys().collect::<Vec<_>>(), ["ssh"]);
        assert_eq!(
            policy.rules[0].destinations,
            vec![
                (
                    Alias::Host("vpc".into()),
                    vec![range(22, 22), range(80, 90)]
                ),
                (Alias::Prefix(net("fd00::1/128")), vec![range(443, 443)]),
            ]
        );
        assert_eq!(policy.rules[1].protocols, vec![6]);
        // The grant: one rule per protocol, in protocol order.
        let grant: Vec<(&[u8], &Vec<PortRange>)> = policy.rules[2..]
            .iter()
            .map(|r| (r.protocols.as_slice(), &r.destinations[0].1))
            .collect();
        assert_eq!(
            grant,
            vec![
                (&[1u8][..], &vec![PortRange::ANY]),
                (&[6u8][..], &vec![range(80, 80)]),
                (&[17u8][..], &vec![range(53, 53)]),
            ]
        );
        assert_eq!(policy.tests.len(), 3);
    }

    #[test]
    fn approves_only_the_prefixes_named() {
        let policy = Policy::parse(SAMPLE).expect("valid policy");
        let router = vec!["tag:router".to_string()];
        assert!(policy.auto_approves_for(&net("198.19.0.0/16"), &router, None, false, ula()));
        // A narrower prefix inside an approved one is not approved.
        assert!(!policy.auto_approves_for(&net("198.19.1.0/24"), &router, None, false, ula()));
        assert!(!policy.auto_approves_for(&net("198.18.0.0/16"), &router, None, false, ula()));
        assert!(!policy.auto_approves_for(
            &net("198.19.0.0/16"),
            &["tag:other".to_string()],
            None,
            false,
            ula()
        ));
        assert!(!policy.auto_approves_for(&net("0.0.0.0/0"), &router, None, false, ula()));
        assert!(policy.auto_approves_for(
            &net("::/0"),
            &["tag:exit".to_string()],
            None,
            false,
            ula()
        ));
    }

    const SITES: &str = r#"{
        "tagOwners": {"tag:site7": [], "tag:site8": []},
        "autoApprovers": {"routes": {
            "site:7:10.0.0.0/24": ["tag:site7"],
            "site:8:10.0.0.0/24": ["tag:site8"],
        }},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["site:7:10.0.0.0/24:80", "site:8:10.0.0.5:22"]}],
        "tests": [{
            "src": "alice@example.com",
            "accept": ["site:7:10.0.0.5:80", "site:8:10.0.0.5:22"],
            "deny": ["site:8:10.0.0.5:80", "site:7:10.0.0.5:22", "10.0.0.5:80"],
        }],
    }"#;

    #[test]
    fn a_site_range_approves_its_4via6_route_only_for_that_site() {
        let policy = Policy::parse(SITES).expect("valid policy");
        let site7 =
            |range: &str| IpNet::V6(via6::via6_prefix(ula(), 7, range.parse().expect("valid")));
        let tags7 = ["tag:site7".to_string()];
        let tags8 = ["tag:site8".to_string()];
        let approves = |prefix: &IpNet, tags: &[String]| {
            policy.auto_approves_for(prefix, tags, None, false, ula())
        };
        assert!(approves(&site7("10.0.0.0/24"), &tags7));
        assert!(!approves(&site7("10.0.0.0/24"), &tags8), "site 8's router");
        assert!(!approves(&site7("10.0.0.0/25"), &tags7), "a narrower range");
        assert!(
            !approves(&net("10.0.0.0/24"), &tags7),
            "the plain IPv4 range"
        );
        // The same route in another tailnet's range.
        let other: Ipv6Net = "fd00:1:2::/48".parse().expect("valid prefix");
        let foreign = IpNet::V6(via6::via6_prefix(
            other,
            7,
            "10.0.0.0/24".parse().expect("valid"),
        ));
        assert!(!approves(&foreign, &tags7));
    }

    #[test]
    fn a_site_range_compiles_to_its_4via6_route() {
        let policy = Policy::parse(SITES).expect("valid policy (its tests pass)");
        assert_eq!(
            policy.rules[0].destinations[0].0,
            Alias::Site {
                site: 7,
                range: "10.0.0.0/24".parse().expect("valid")
            }
        );
        let mut router = PolicyNode::new(
            NodeId(1),
            ["100.64.0.1".parse().expect("valid")],
            &["tag:site7".to_string()],
            None,
        );
        router.routes = ["10.0.0.0/24", "10.0.0.5/32"]
            .iter()
            .zip([7, 8])
            .map(|(r, site)| IpNet::V6(via6::via6_prefix(ula(), site, r.parse().expect("valid"))))
            .collect();
        let nodes = [router];
        let compiled = compile(&policy, ula(), &nodes);
        let text = format!("{:?}", compiled[&NodeId(1)].filter);
        assert!(text.contains("fd7a:115c:a1e0:b1a:0:7:a00:0/120"), "{text}");
        assert!(text.contains("fd7a:115c:a1e0:b1a:0:8:a00:5/128"), "{text}");
    }

    #[test]
    fn site_aliases_are_checked() {
        for (text, expected) in [
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["site:70000:10.0.0.0/24:80"]}]}"#,
                "a site ID from 0 to 65535",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["site:7:fd00::/64:80"]}]}"#,
                "holds IPv4 ranges",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["site:7:10.0.0.1/24:80"]}]}"#,
                "did you mean 10.0.0.0/24",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["site:7:10.0.0.0/24"], "dst": ["*:*"]}]}"#,
                "not valid on the src side",
            ),
            (
                r#"{"autoApprovers": {"routes": {"site:x:10.0.0.0/24": []}}}"#,
                "expected site:SITE:PREFIX",
            ),
        ] {
            let err = Policy::parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn user_and_group_approvers_match_untagged_nodes_of_that_user() {
        let policy = Policy::parse(SAMPLE).expect("valid policy");
        let vpc = net("198.19.0.0/16");
        assert!(policy.auto_approves_for(&vpc, &[], Some("alice@example.com"), false, ula()));
        assert!(
            policy.auto_approves_for(&vpc, &[], Some("bob@example.com"), false, ula()),
            "group:ops"
        );
        assert!(!policy.auto_approves_for(&vpc, &[], Some("eve@example.com"), false, ula()));
        assert!(!policy.auto_approves_for(&vpc, &[], None, false, ula()));
        // A tagged node acts as its tags, not as the user who made its key.
        let web = vec!["tag:web".to_string()];
        assert!(!policy.auto_approves_for(&vpc, &web, Some("alice@example.com"), false, ula()));
    }

    #[test]
    fn errors_name_the_offender_and_its_position() {
        let cases = [
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.0/33": []}}}"#,
                "10.0.0.0/33",
            ),
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.1/8": []}}}"#,
                "did you mean 10.0.0.0/8",
            ),
            (r#"{"autoApprovers": {"route": {}}}"#, "`route`"),
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.0/8": ["router"]}}}"#,
                "\"router\"",
            ),
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.0/8": ["tag:Bad"]}}}"#,
                "tag:Bad",
            ),
            (r#"[1]"#, "top level"),
            (r#"{"#, "huJSON"),
            (
                "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}\n  ]\n}",
                "group \"group:nope\" is not defined in \"groups\" at line 3 column 34",
            ),
            (
                "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"],\n \"dst\": [\"tag:db:5432\"]}]}",
                "tag \"tag:db\" is not defined in \"tagOwners\" (tag not found) at line 2 column 10",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["nohost:22"]}]}"#,
                "\"nohost\" is not a user",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:99999"]}]}"#,
                "invalid port range \"99999\"",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:90-80"]}]}"#,
                "first port is above the last",
            ),
            (
                r#"{"acls": [{"action": "drop", "src": ["*"], "dst": ["*:*"]}]}"#,
                "action \"drop\": expected \"accept\"",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}]}"#,
                "not valid on the src side",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["autogroup:admin"], "dst": ["*:*"]}]}"#,
                "unknown or unsupported autogroup",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"], "proto": "icmp"}]}"#,
                "protocol 1 has no ports",
            ),
            (
                r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "bogus"}]}"#,
                "protocol \"bogus\"",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"], "via": ["tag:r"]}]}"#,
                "\"via\"",
            ),
            (r#"{"acl": []}"#, "unknown field `acl`"),
            (
                r#"{"groups": {"group:a": ["group:b"]}}"#,
                "groups cannot contain groups",
            ),
            (
                r#"{"hosts": {"h": "10.0.0.1/8"}}"#,
                "did you mean 10.0.0.0/8",
            ),
        ];
        for (text, needle) in cases {
            let err = Policy::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn autogroup_self_destinations_refuse_sources_that_are_not_users() {
        let with_src = |src: &str| {
            format!(
                r#"{{"tagOwners": {{"tag:ci": []}}, "hosts": {{"h": "10.0.0.1"}},
                    "groups": {{"group:g": ["a@example.com"]}},
                    "acls": [{{"action": "accept", "src": [{src}], "dst": ["autogroup:self:22"]}}]}}"#
            )
        };
        for ok in [
            r#""*""#,
            r#""a@example.com""#,
            r#""group:g""#,
            r#""autogroup:member""#,
        ] {
            Policy::parse(&with_src(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, named) in [
            (r#""tag:ci""#, "\"tag:ci\""),
            (
                r#""autogroup:member", "autogroup:tagged""#,
                "\"autogroup:tagged\"",
            ),
            (r#""h""#, "\"h\""),
            (r#""10.0.0.0/8""#, "\"10.0.0.0/8\""),
        ] {
            let err = Policy::parse(&with_src(bad)).expect_err(bad).to_string();
            assert!(
                err.contains(&format!("acls[0]: src {named} cannot reach autogroup:self")),
                "{bad}: {err}"
            );
        }
        let grant = r#"{"tagOwners": {"tag:ci": []},
            "grants": [{"src": ["tag:ci"], "dst": ["autogroup:self"], "ip": ["*"]}]}"#;
        let err = Policy::parse(grant).expect_err("tag to self").to_string();
        assert!(
            err.contains("grants[0]: src \"tag:ci\" cannot reach autogroup:self"),
            "{err}"
        );
    }

    #[test]
    fn a_destination_without_ports_is_reported_as_missing_ports() {
        for (dst, named) in [("autogroup:self", "\"self\""), ("tag:web", "\"web\"")] {
            let text = format!(
                r#"{{"tagOwners": {{"tag:web": []}}, "acls": [{{"action": "accept", "src": ["*"], "dst": ["{dst}"]}}]}}"#
            );
            let err = Policy::parse(&text).expect_err(dst).to_string();
            assert!(
                err.contains(&format!(
                    "destination \"{dst}\": invalid port range {named}"
                )),
                "{dst}: {err}"
            );
        }
    }

    #[test]
    fn failing_tests_refuse_the_policy_naming_the_test() {
        let policy = r#"{
            "groups": {"group:dba": ["alice@example.com"]},
            "tagOwners": {"tag:db": []},
            "acls": [{"action": "accept", "src": ["group:dba"], "dst": ["tag:db:5432"]}],
            "tests": [
                {"src": "alice@example.com", "accept": ["tag:db:5432"]},
                {"src": "bob@example.com", "accept": ["tag:db:5432"]},
            ],
        }"#;
        let err = Policy::parse(policy).expect_err("bob is not a dba");
        assert_eq!(
            err,
            PolicyError::TestFailed(
                "tests[1]: bob@example.com should reach tag:db:5432 (protocol 6) but no rule allows it"
                    .into()
            )
        );
        let deny = policy.replace(
            r#"{"src": "bob@example.com", "accept": ["tag:db:5432"]}"#,
            r#"{"src": "alice@example.com", "deny": ["tag:db:5000-5432"]}"#,
        );
        let err = Policy::parse(&deny)
            .expect_err("alice may reach 5432")
            .to_string();
        assert!(
            err.contains("tests[1]: alice@example.com should not reach tag:db:5432"),
            "{err}"
        );
    }

    #[test]
    fn self_is_the_senders_own_devices_in_tests() {
        let policy = r#"{
            "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}],
            "tests": [{"src": "alice@example.com", "accept": ["alice@example.com:22"], "deny": ["bob@example.com:22"]}],
        }"#;
        Policy::parse(policy).expect("self allows alice to alice only");
    }

    #[test]
    fn the_example_in_docs_policy_md_is_valid() {
        let doc = include_str!("../../../../docs/policy.md");
        let start = doc.find("```jsonc\n").expect("an example") + "```jsonc\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        let policy = Policy::parse(&doc[start..end]).expect("the documented example is valid");
        assert_eq!(policy.tests.len(), 2);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Policy::parse(&s);
        }

        #[test]
        fn destinations_round_trip(
            host in prop::sample::select(vec!["*", "tag:web", "alice@example.com", "10.0.0.0/8", "[fd00::1]", "h"]),
            first in 1u16..,
            len in 0u16..100,
        ) {
            let last = first.saturating_add(len);
            let text = format!(
                r#"{{"hosts": {{"h": "10.1.2.3"}}, "tagOwners": {{"tag:web": []}},
                   "acls": [{{"action": "accept", "src": ["*"], "dst": ["{host}:{first}-{last}"]}}]}}"#
            );
            let policy = Policy::parse(&text).expect("valid");
            prop_assert_eq!(&policy.rules[0].destinations[0].1, &vec![range(first, last)]);
        }
    }
}
