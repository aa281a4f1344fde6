//! Application capabilities: what a policy's `app` grants give a sender at
//! a destination node, as Tailscale's grants do (`"app": {"NAME": [VALUE,
//! …]}`). Control compiles them per destination node and sends each node
//! the [`CapGrant`]s that name it; an application on that node (the
//! recorder's web UI) asks its node which capabilities a peer's address
//! holds ([`caps_for`]) and decides by them. The node itself enforces
//! nothing here: capabilities say what an application may let a peer do
//! once the packet filter has let it connect.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Capability name → its values, each a JSON object as written in the
/// policy (Tailscale's `PeerCapMap`).
pub type PeerCapMap = BTreeMap<String, Vec<Value>>;

/// Capabilities this node grants to senders from `sources`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapGrant {
    /// Source prefixes holding the capabilities.
    pub sources: Vec<IpNet>,
    /// What they hold.
    pub caps: PeerCapMap,
}

/// The most cap grants one node may be sent.
pub const MAX_CAP_GRANTS: usize = 10_000;

/// The most source prefixes, over all cap grants, one node may be sent.
pub const MAX_CAP_SOURCES: usize = 200_000;

/// The most bytes of capability names and values (as JSON), over all cap
/// grants, one node may be sent: 1 MiB.
pub const MAX_CAP_BYTES: usize = 1 << 20;

/// The capability Tailscale's session recorder (`tsrecorder`) reads to let
/// a peer into its web UI; Causeway's recorder reads the same one.
pub const RECORDER_CAP: &str = "tailscale.com/cap/tsrecorder";

/// The actions a [`RECORDER_CAP`] value may list: `view` lets a peer list,
/// play and download recordings.
pub const RECORDER_ACTIONS: &[&str] = &["view"];

/// Cap grants over [`MAX_CAP_GRANTS`], [`MAX_CAP_SOURCES`] or
/// [`MAX_CAP_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cap grants: {grants} grants, {sources} source prefixes and {bytes} bytes of capabilities; at most \
     {MAX_CAP_GRANTS} grants, {MAX_CAP_SOURCES} prefixes and {MAX_CAP_BYTES} bytes are allowed"
)]
pub struct CapGrantsTooLarge {
    /// Grants sent.
    pub grants: usize,
    /// Source prefixes over all grants.
    pub sources: usize,
    /// Bytes of names and JSON values over all grants.
    pub bytes: usize,
}

/// Checks `grants` against [`MAX_CAP_GRANTS`], [`MAX_CAP_SOURCES`] and
/// [`MAX_CAP_BYTES`].
pub fn check_cap_grants(grants: &[CapGrant]) -> Result<(), CapGrantsTooLarge> {
    let sources = grants.iter().map(|g| g.sources.len()).sum();
    let bytes = grants.iter().map(cap_bytes).sum();
    if grants.len() > MAX_CAP_GRANTS || sources > MAX_CAP_SOURCES || bytes > MAX_CAP_BYTES {
        return Err(CapGrantsTooLarge {
            grants: grants.len(),
            sources,
            bytes,
        });
    }
    Ok(())
}

/// The capabilities `grants` give a sender at `addr`: every grant whose
/// sources contain it, merged (values in grant order, duplicates once).
pub fn caps_for(grants: &[CapGrant], addr: IpAddr) -> PeerCapMap {
    let addr = addr.to_canonical();
    let mut out = PeerCapMap::new();
    for grant in grants {
        if !grant.sources.iter().any(|s| s.contains(&addr)) {
            continue;
        }
        for (name, values) in &grant.caps {
            let merged = out.entry(name.clone()).or_default();
            for value in values {
                if !merged.contains(value) {
                    merged.push(value.clone());
                }
            }
        }
    }
    out
}

/// The actions the values of a [`RECORDER_CAP`] list: each value must be
/// an object `{"actions": [ACTION, …]}` with actions from
/// [`RECORDER_ACTIONS`]. The error names the value at fault.
pub fn recorder_actions(values: &[Value]) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for value in values {
        let wrong = || {
            format!(
                "{RECORDER_CAP} value {value}: expected {{\"actions\": [...]}} with actions from {RECORDER_ACTIONS:?}"
            )
        };
        let Value::Object(map) = value else {
            return Err(wrong());
        };
        if map.keys().any(|k| k != "actions") {
            return Err(wrong());
        }
        let Some(Value::Array(actions)) = map.get("actions") else {
            return Err(wrong());
        };
        for action in actions {
            match action.as_str() {
                Some(a) if RECORDER_ACTIONS.contains(&a) => {
                    out.insert(a.to_owned());
                }
                _ => {
                    return Err(format!(
                        "{RECORDER_CAP} action {action}: expected one of {RECORDER_ACTIONS:?}"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Bytes of one grant's names and values as JSON.
fn cap_bytes(grant: &CapGrant) -> usize {
    grant
        .caps
        .iter()
        .map(|(name, values)| {
            name.len()
                + values
                    .iter()
                    .map(|v| serde_json::to_vec(v).map_or(usize::MAX / 2, |b| b.len()))
                    .sum::<usize>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn grant(sources: &[&str], name: &str, values: Vec<Value>) -> CapGrant {
        CapGrant {
            sources: sources
                .iter()
                .map(|s| s.parse().expect("valid prefix"))
                .collect(),
            caps: [(name.to_owned(), values)].into_iter().collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid address")
    }

    #[test]
    fn a_sender_holds_the_caps_of_every_grant_naming_its_address_merged() {
        let view = json!({"actions": ["view"]});
        let grants = vec![
            grant(&["100.64.0.1/32"], RECORDER_CAP, vec![view.clone()]),
            grant(
                &["100.64.0.0/24"],
                RECORDER_CAP,
                vec![view.clone(), json!({"actions": []})],
            ),
            grant(&["100.64.0.1/32"], "example.com/cap/x", vec![json!({})]),
        ];
        let caps = caps_for(&grants, ip("100.64.0.1"));
        assert_eq!(
            caps,
            [
                (
                    RECORDER_CAP.to_owned(),
                    vec![view.clone(), json!({"actions": []})]
                ),
                ("example.com/cap/x".to_owned(), vec![json!({})]),
            ]
            .into_iter()
            .collect()
        );
        // An IPv4-mapped IPv6 sender is the IPv4 address.
        assert_eq!(caps_for(&grants, ip("::ffff:100.64.0.1")), caps);
        assert_eq!(
            caps_for(&grants, ip("100.64.0.2"))
                .keys()
                .collect::<Vec<_>>(),
            [RECORDER_CAP]
        );
        assert!(caps_for(&grants, ip("100.64.1.1")).is_empty());
    }

    #[test]
    fn recorder_values_list_known_actions_only() {
        assert_eq!(
            recorder_actions(&[json!({"actions": ["view"]}), json!({"actions": []})]),
            Ok(["view".to_owned()].into_iter().collect())
        );
        for (bad, named) in [
            (json!({"actions": ["delete"]}), "action \"delete\""),
            (json!({"action": ["view"]}), "value {\"action\":[\"view\"]}"),
            (json!({"actions": "view"}), "value {\"actions\":\"view\"}"),
            (json!(["view"]), "value [\"view\"]"),
        ] {
            let err = recorder_actions(&[bad]).expect_err(named);
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn size_is_checked_against_each_limit() {
        let one = grant(&["100.64.0.1/32"], RECORDER_CAP, vec![json!({"a": 1})]);
        assert_eq!(check_cap_grants(std::slice::from_ref(&one)), Ok(()));
        let many = vec![one.clone(); MAX_CAP_GRANTS + 1];
        assert_eq!(
            check_cap_grants(&many).map_err(|e| e.grants),
            Err(MAX_CAP_GRANTS + 1)
        );
        let wide = CapGrant {
            sources: vec![one.sources[0]; MAX_CAP_SOURCES + 1],
            ..one.clone()
        };
        assert_eq!(
            check_cap_grants(&[wide]).map_err(|e| e.sources),
            Err(MAX_CAP_SOURCES + 1)
        );
        let big = grant(
            &["100.64.0.1/32"],
            RECORDER_CAP,
            vec![json!({"pad": "x".repeat(MAX_CAP_BYTES)})],
        );
        let err = check_cap_grants(&[big]).expect_err("over the byte limit");
        assert!(err.bytes > MAX_CAP_BYTES, "{err}");
    }

    proptest! {
        #[test]
        fn cap_grants_round_trip(
            prefix_len in 0u8..=32,
            name in "[a-z]{1,8}\\.com/cap/[a-z]{1,8}",
            n in any::<i64>(),
        ) {
            let g = CapGrant {
                sources: vec![IpNet::new(ip("100.64.0.0"), prefix_len).expect("valid length").trunc()],
                caps: [(name, vec![json!({"n": n})])].into_iter().collect(),
            };
            let text = serde_json::to_string(&g).expect("serialises");
            let back: CapGrant = serde_json::from_str(&text).expect("parses");
            prop_assert_eq!(back, g);
        }
    }
}
