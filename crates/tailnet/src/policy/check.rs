//! Runs a policy's `tests` against its rules, with identities instead of
//! live nodes, as Tailscale does: "alice@example.com may reach
//! tag:db:5432" holds when a rule's sources include alice (directly, by a
//! group, `autogroup:member` or `*`) and its destinations include `tag:db`
//! port 5432 for the tested protocol.
//!
//! An identity is a user, a tag or an address; the policy alone does not
//! say which tag an address carries, so an address matches only prefixes,
//! hosts and `*`, and a tag or user matches only names.

use std::net::{IpAddr, Ipv4Addr};

use causeway_wire::PortRange;

use super::compile::internet_prefixes;
use super::{Alias, AutoGroup, Policy, PolicyError, PolicyTest};

/// Runs every test; the first failure names the test and the destination.
pub(super) fn run_tests(policy: &Policy) -> Result<(), PolicyError> {
    for (i, test) in policy.tests.iter().enumerate() {
        let src = identity(policy, &test.src);
        for (want, list) in [(true, &test.accept), (false, &test.deny)] {
            for (dst_alias, ports) in list {
                let dst = identity(policy, dst_alias);
                for range in ports {
                    for port in [range.first, range.last] {
                        let allowed = allows(policy, &src, &dst, test.proto, port);
                        if allowed != want {
                            return Err(PolicyError::TestFailed(describe(
                                i, test, dst_alias, port, want,
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Who sends or receives, as far as the policy can tell.
#[derive(Debug)]
enum Identity {
    User(String),
    Tag(String),
    Address(IpAddr),
    /// `site:SITE:ADDRESS`: one address at a 4via6 site.
    SiteAddress(u16, Ipv4Addr),
    /// An alias that names neither (a group, `*`, a prefix wider than one
    /// address): matches only what names it exactly.
    Other(Alias),
}

fn identity(policy: &Policy, alias: &Alias) -> Identity {
    match alias {
        Alias::User(u) => Identity::User(u.clone()),
        Alias::Tag(t) => Identity::Tag(t.clone()),
        Alias::Prefix(p) if p.prefix_len() == p.max_prefix_len() => Identity::Address(p.addr()),
        Alias::Site { site, range } if range.prefix_len() == 32 => {
            Identity::SiteAddress(*site, range.addr())
        }
        Alias::Host(h) => match policy.hosts.get(h) {
            Some(p) if p.prefix_len() == p.max_prefix_len() => Identity::Address(p.addr()),
            _ => Identity::Other(alias.clone()),
        },
        other => Identity::Other(other.clone()),
    }
}

fn allows(policy: &Policy, src: &Identity, dst: &Identity, proto: u8, port: u16) -> bool {
    policy.rules.iter().any(|rule| {
        let proto_ok = if rule.protocols.is_empty() {
            matches!(proto, 1 | 6 | 17 | 58)
        } else {
            rule.protocols.contains(&proto)
        };
        proto_ok
            && rule.sources.iter().any(|a| matches(policy, a, src, None))
            && rule.destinations.iter().any(|(a, ports)| {
                ports.iter().any(|r: &PortRange| r.contains(port))
                    && matches(policy, a, dst, Some(src))
            })
    })
}

/// Whether `alias` covers `who`; `src` is the sender when `alias` is a
/// destination (for `autogroup:self`).
fn matches(policy: &Policy, alias: &Alias, who: &Identity, src: Option<&Identity>) -> bool {
    match (alias, who) {
        (
            Alias::Any,
            Identity::Address(_) | Identity::SiteAddress(..) | Identity::User(_) | Identity::Tag(_),
        ) => true,
        (Alias::Site { site, range }, Identity::SiteAddress(s, a)) => {
            site == s && range.contains(a)
        }
        (Alias::User(u), Identity::User(w)) => u == w,
        (Alias::Group(g), Identity::User(w)) => policy
            .groups
            .get(g)
            .is_some_and(|members| members.contains(w)),
        (Alias::Tag(t), Identity::Tag(w)) => t == w,
        (Alias::Prefix(p), Identity::Address(a)) => p.contains(a),
        (Alias::Host(h), Identity::Address(a)) => {
            policy.hosts.get(h).is_some_and(|p| p.contains(a))
        }
        (Alias::AutoGroup(AutoGroup::Member), Identity::User(_))
        | (Alias::AutoGroup(AutoGroup::Tagged), Identity::Tag(_)) => true,
        (Alias::AutoGroup(AutoGroup::SelfDevices), Identity::User(w)) => {
            matches!(src, Some(Identity::User(s)) if s == w)
        }
        (Alias::AutoGroup(AutoGroup::Internet), Identity::Address(a)) => {
            internet_prefixes().iter().any(|p| p.contains(a))
        }
        (alias, Identity::Other(other)) => alias == other,
        (
            Alias::User(_)
            | Alias::Group(_)
            | Alias::Tag(_)
            | Alias::Host(_)
            | Alias::Prefix(_)
            | Alias::Site { .. }
            | Alias::AutoGroup(_),
            Identity::User(_) | Identity::Tag(_) | Identity::Address(_) | Identity::SiteAddress(..),
        ) => false,
    }
}

fn describe(index: usize, test: &PolicyTest, dst: &Alias, port: u16, want: bool) -> String {
    let src = alias_text(&test.src);
    let dst = alias_text(dst);
    if want {
        format!(
            "tests[{index}]: {src} should reach {dst}:{port} (protocol {}) but no rule allows it",
            test.proto
        )
    } else {
        format!(
            "tests[{index}]: {src} should not reach {dst}:{port} (protocol {}) but a rule allows it",
            test.proto
        )
    }
}

/// An alias as the policy file writes it.
pub(crate) fn alias_text(alias: &Alias) -> String {
    match alias {
        Alias::Any => "*".to_owned(),
        Alias::User(s) | Alias::Group(s) | Alias::Tag(s) | Alias::Host(s) => s.clone(),
        Alias::Prefix(p) if p.prefix_len() == p.max_prefix_len() => p.addr().to_string(),
        Alias::Prefix(p) => p.to_string(),
        Alias::Site { site, range } if range.prefix_len() == 32 => {
            format!("site:{site}:{}", range.addr())
        }
        Alias::Site { site, range } => format!("site:{site}:{range}"),
        Alias::AutoGroup(AutoGroup::Member) => "autogroup:member".to_owned(),
        Alias::AutoGroup(AutoGroup::Tagged) => "autogroup:tagged".to_owned(),
        Alias::AutoGroup(AutoGroup::SelfDevices) => "autogroup:self".to_owned(),
        Alias::AutoGroup(AutoGroup::Internet) => "autogroup:internet".to_owned(),
    }
}
