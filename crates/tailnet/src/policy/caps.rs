//! Compiles the `app` parts of grants into each destination node's
//! [`CapGrant`]s, as Tailscale sends cap grants in the netmap of the node
//! a grant names: the node's application (the recorder's web UI) then asks
//! its node which capabilities a sender's address holds.
//!
//! Sources resolve exactly as a filter rule's do. A destination names a
//! node by identity (user, group, tag, autogroup), by `*`, or by an
//! address inside one of its own tailnet addresses (a prefix or a host);
//! routes a node serves do not count, since the capability is read by an
//! application on the node itself. `autogroup:self` gives each user's
//! nodes a grant whose sources are that user's own nodes among the
//! senders. App grants open no connection, so they change no peer set.

use causeway_wire::{CapGrant, PortRange};

use super::compile::{Index, Target, host_prefixes};
use super::{Policy, PolicyNode, Rule};

/// Each node's cap grants, indexed like `nodes`; grants in policy order,
/// those with the same sources merged into the first.
pub(super) fn compile_caps(
    policy: &Policy,
    index: &Index<'_>,
    nodes: &[PolicyNode],
) -> Vec<Vec<CapGrant>> {
    let mut out: Vec<Vec<CapGrant>> = vec![Vec::new(); nodes.len()];
    for grant in &policy.app_grants {
        // Resolved as a rule over every port, for its sources and targets.
        let resolved = index.resolve(&Rule {
            origin: grant.origin.clone(),
            sources: grant.sources.clone(),
            destinations: grant
                .destinations
                .iter()
                .map(|d| (d.clone(), vec![PortRange::ANY]))
                .collect(),
            protocols: Vec::new(),
        });
        for (i, node) in nodes.iter().enumerate() {
            let mut named = false;
            let mut to_self = false;
            for dst in &resolved.destinations {
                match &dst.target {
                    Target::Any => named = true,
                    Target::Nodes(members) => named |= members.contains(&i),
                    Target::Prefix(p) => named |= node.addresses.iter().any(|a| p.contains(a)),
                    Target::SelfDevices => to_self = true,
                    Target::Internet => {}
                }
            }
            if named && !resolved.sources.is_empty() {
                push(&mut out[i], resolved.sources.clone(), grant);
            }
            if to_self && !named {
                let mut sources: Vec<_> = node
                    .policy_user()
                    .and_then(|u| index.by_user.get(u))
                    .into_iter()
                    .flatten()
                    .filter(|s| resolved.source_nodes.binary_search(s).is_ok())
                    .flat_map(|&s| host_prefixes(&nodes[s]))
                    .collect();
                sources.sort();
                sources.dedup();
                if !sources.is_empty() {
                    push(&mut out[i], sources, grant);
                }
            }
        }
    }
    out
}

/// Adds `grant`'s capabilities for `sources` to `grants`, into an existing
/// grant with the same sources when there is one.
fn push(grants: &mut Vec<CapGrant>, sources: Vec<ipnet::IpNet>, grant: &super::AppGrant) {
    let target = match grants.iter_mut().position(|g| g.sources == sources) {
        Some(at) => &mut grants[at],
        None => {
            grants.push(CapGrant {
                sources,
                caps: Default::default(),
            });
            let last = grants.len() - 1;
            &mut grants[last]
        }
    };
    for (name, values) in &grant.caps {
        let merged = target.caps.entry(name.clone()).or_default();
        for value in values {
            if !merged.contains(value) {
                merged.push(value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use causeway_wire::NodeId;
    use causeway_wire::caps::{RECORDER_CAP, caps_for};
    use serde_json::json;

    use proptest::prelude::*;

    use super::super::{Policy, PolicyError, PolicyNode, compile};

    fn ula() -> ipnet::Ipv6Net {
        "fd7a:115c:a1e0::/48".parse().expect("a /48")
    }

    fn nodes() -> Vec<PolicyNode> {
        let ip = |s: &str| s.parse().expect("valid address");
        vec![
            PolicyNode::new(
                NodeId(1),
                [ip("100.64.0.1")],
                &[],
                Some("alice@example.com"),
            ),
            PolicyNode::new(NodeId(2), [ip("100.64.0.2")], &[], Some("bob@example.com")),
            PolicyNode::new(NodeId(3), [ip("100.64.0.3")], &["tag:rec".into()], None),
            PolicyNode::new(NodeId(4), [ip("100.64.0.4")], &["tag:web".into()], None)
                .with_routes(["198.19.0.0/16".parse().expect("valid prefix")]),
        ]
    }

    const RECORDER_POLICY: &str = r#"{
        "groups": {"group:sec": ["alice@example.com"]},
        "tagOwners": {"tag:rec": [], "tag:web": []},
        "grants": [
            {"src": ["*"], "dst": ["*"], "ip": ["*"]},
            {
                "src": ["group:sec"],
                "dst": ["tag:rec"],
                "app": {"tailscale.com/cap/tsrecorder": [{"actions": ["view"]}]},
            },
        ],
    }"#;

    #[test]
    fn an_app_grant_reaches_the_destination_node_only() {
        let policy = Policy::parse(RECORDER_POLICY).expect("valid policy");
        let compiled = compile(&policy, ula(), &nodes());
        let rec = &compiled[&NodeId(3)].cap_grants;
        assert_eq!(rec.len(), 1);
        assert_eq!(
            rec[0].sources,
            vec![
                "100.64.0.1/32"
                    .parse::<ipnet::IpNet>()
                    .expect("valid prefix")
            ]
        );
        assert_eq!(
            rec[0].caps[RECORDER_CAP],
            vec![json!({"actions": ["view"]})]
        );
        for other in [1, 2, 4] {
            assert!(
                compiled[&NodeId(other)].cap_grants.is_empty(),
                "node {other}"
            );
        }
        // Alice's node holds the capability at the recorder; Bob's does not.
        let ip = |s: &str| s.parse().expect("valid address");
        assert!(caps_for(rec, ip("100.64.0.1")).contains_key(RECORDER_CAP));
        assert!(caps_for(rec, ip("100.64.0.2")).is_empty());
    }

    #[test]
    fn an_app_only_grant_opens_no_connection() {
        let policy = Policy::parse(
            r#"{"tagOwners": {"tag:rec": []},
                "grants": [{"src": ["alice@example.com"], "dst": ["tag:rec"],
                            "app": {"example.com/cap/x": [{}]}}]}"#,
        )
        .expect("valid policy");
        let compiled = compile(&policy, ula(), &nodes());
        let rec = &compiled[&NodeId(3)];
        assert_eq!(rec.cap_grants.len(), 1);
        assert!(rec.filter.rules.is_empty());
        assert!(rec.peers.is_empty());
    }

    #[test]
    fn destinations_by_address_self_and_merging() {
        let policy = Policy::parse(
            r#"{"hosts": {"rec": "100.64.0.3"}, "tagOwners": {"tag:rec": []},
                "grants": [
                    {"src": ["autogroup:member"], "dst": ["rec"], "app": {"example.com/cap/a": [{"n": 1}]}},
                    {"src": ["autogroup:member"], "dst": ["tag:rec"], "app": {"example.com/cap/a": [{"n": 1}, {"n": 2}]}},
                    {"src": ["*"], "dst": ["198.19.0.0/16"], "app": {"example.com/cap/b": [{}]}},
                    {"src": ["autogroup:member"], "dst": ["autogroup:self"], "app": {"example.com/cap/s": [{}]}},
                ]}"#,
        )
        .expect("valid policy");
        let compiled = compile(&policy, ula(), &nodes());
        // The host and the tag name the same node with the same sources:
        // one grant, values merged.
        let rec = &compiled[&NodeId(3)].cap_grants;
        assert_eq!(rec.len(), 1, "{rec:?}");
        assert_eq!(
            rec[0].caps["example.com/cap/a"],
            vec![json!({"n": 1}), json!({"n": 2})]
        );
        // A route the router serves is not the router.
        assert!(compiled[&NodeId(4)].cap_grants.is_empty());
        // autogroup:self: each user's node grants only that user's nodes.
        let alice = &compiled[&NodeId(1)].cap_grants;
        assert_eq!(alice.len(), 1);
        assert_eq!(
            alice[0].sources,
            vec![
                "100.64.0.1/32"
                    .parse::<ipnet::IpNet>()
                    .expect("valid prefix")
            ]
        );
        assert!(alice[0].caps.contains_key("example.com/cap/s"));
    }

    #[test]
    fn bad_app_grants_are_refused_with_their_position() {
        let cases = [
            (
                "{\"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"],\n  \"app\": {\"Bad/cap\": [{}]}}]}",
                "capability name \"Bad/cap\"",
                "line 2 column",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["*"], "app": {"nodomain": [{}]}}]}"#,
                "capability name \"nodomain\"",
                "column",
            ),
            (
                "{\"grants\": [{\"src\": [\"*\"], \"dst\": [\"*\"],\n\"app\": {\"example.com/cap/x\": [\"a string\"]}}]}",
                "a capability value (a JSON object)",
                "line 2 column 31",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["*"], "app": {"example.com/cap/x": {}}}]}"#,
                "array of JSON objects",
                "column",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/tsrecorder": [{"actions": ["delete"]}]}}]}"#,
                "tailscale.com/cap/tsrecorder action \"delete\": expected one of [\"view\"]",
                "column",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["*"], "app": {}}]}"#,
                "app is empty: expected at least one capability (\"example.com/cap/name\": [{...}]), or an \"ip\" list instead",
                "column",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["*"]}]}"#,
                "grants[0]: expected an \"ip\" list, an \"app\" object or both",
                "",
            ),
            (
                r#"{"grants": [{"src": ["*"], "dst": ["autogroup:internet"], "app": {"example.com/cap/x": [{}]}}]}"#,
                "autogroup:internet names none",
                "",
            ),
            (
                r#"{"tagOwners": {"tag:ci": []}, "grants": [{"src": ["tag:ci"], "dst": ["autogroup:self"], "app": {"example.com/cap/x": [{}]}}]}"#,
                "grants[0]: src \"tag:ci\" cannot reach autogroup:self",
                "",
            ),
        ];
        for (text, needle, position) in cases {
            let err = Policy::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains(position), "{text}: no position in {err}");
        }
        let big = format!(
            r#"{{"grants": [{{"src": ["*"], "dst": ["*"], "app": {{"example.com/cap/x": [{{"pad": "{}"}}]}}}}]}}"#,
            "x".repeat(super::super::syntax::MAX_APP_BYTES)
        );
        let err = Policy::parse(&big).expect_err("too big");
        assert!(
            matches!(&err, PolicyError::Invalid(m) if m.contains("over 16384 bytes")),
            "{err}"
        );
    }

    proptest! {
        /// Any well-formed name and object value parses, and the
        /// destination node receives exactly that value.
        #[test]
        fn app_values_reach_the_destination_as_written(
            domain in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){1,3}",
            path in "[A-Za-z0-9_./-]{1,20}",
            key in "[a-z]{1,8}",
            n in any::<i64>(),
            text in "[ -~&&[^\"\\\\]]{0,20}",
        ) {
            let name = format!("{domain}/{path}");
            let value = json!({ key.clone(): [n, text.clone()] });
            let policy = format!(
                r#"{{"tagOwners": {{"tag:rec": []}},
                    "grants": [{{"src": ["*"], "dst": ["tag:rec"], "app": {{"{name}": [{value}]}}}}]}}"#
            );
            let policy = Policy::parse(&policy).expect("valid policy");
            let compiled = compile(&policy, ula(), &nodes());
            let rec = &compiled[&NodeId(3)].cap_grants;
            prop_assert_eq!(rec.len(), 1);
            prop_assert_eq!(&rec[0].caps[&name], &vec![value]);
        }

        #[test]
        fn app_parsing_never_panics(name in ".{0,40}", value in ".{0,40}") {
            let text = format!(
                r#"{{"grants": [{{"src": ["*"], "dst": ["*"], "app": {{{name:?}: [{value}]}}}}]}}"#
            );
            let _ = Policy::parse(&text);
        }
    }
}
