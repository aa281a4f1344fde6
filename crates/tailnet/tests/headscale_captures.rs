//! Checks the compiler against packet filters Tailscale's own service
//! produced, as captured in Headscale's test data (see tests/data/README.md).
//!
//! Each case is a policy, the tailnet's nodes and the filter each node
//! received. Expected filters are mapped to our `FilterRule`: `*` becomes
//! `0.0.0.0/0` and `::/0`, address ranges `a-b` become the prefixes that
//! cover them, and rules are compared in order with sources and
//! destinations as sets. `EXPECTED` says which cases pass and why the
//! others do not; the test fails when any case's outcome changes, so a
//! regression cannot hide and a fix must update the list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use causeway_tailnet::policy::{Policy, PolicyNode, compile};
use causeway_wire::{FilterRule, NodeId, PortRange};
use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;

/// Every vendored case and its known outcome.
const EXPECTED: &[(&str, Outcome)] = &[
    ("ACL-A01", Outcome::Pass),
    ("ACL-AR01", Outcome::Pass),
    ("ACL-AT03", Outcome::Pass),
    ("ACL-AU01", Outcome::Pass),
    ("ACL-ERR01", Outcome::Pass),
    (
        "ACL-H01",
        Outcome::Differs(
            "Tailscale's `*` source is the tailnet's address ranges plus approved subnet routes; ours is every address",
        ),
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    /// A known, documented difference (or a feature we refuse on purpose,
    /// such as app grants or via).
    Differs(&'static str),
}

/// Users of the untagged nodes in the captured tailnet.
const USERS: &[(&str, &str)] = &[
    ("user1", "kratail2tid@passkey"),
    ("user-kris", "kristoffer@dalby.cc"),
    ("user-mon", "monitorpasskeykradalby@passkey"),
];

/// The file whose topology the cases without one share.
const TOPOLOGY_FROM: &str = "ACL-AR01.hujson";

#[test]
fn headscale_captured_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/headscale");
    let shared = load(&dir.join(TOPOLOGY_FROM));
    let shared_nodes = topology(&shared).expect("the shared file has a topology");
    let mut seen = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "hujson"))
        .collect();
    files.sort();
    for path in files {
        let case = load(&path);
        let id = case["test_id"].as_str().expect("test_id").to_owned();
        let nodes = topology(&case).unwrap_or_else(|| shared_nodes.clone());
        let outcome = run(&case, &nodes);
        seen.insert(id, outcome);
    }
    // Per category (the id without its number), pass / differ.
    let mut counts: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    for (id, outcome) in &seen {
        let category: String = id.trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
        let slot = match outcome {
            Ok(()) => 0,
            Err(_) => 1,
        };
        counts.entry(category).or_default()[slot] += 1;
    }
    for (category, [pass, fail]) in &counts {
        println!("{category}: {pass} pass, {fail} differ");
    }
    let expected: BTreeMap<&str, Outcome> = EXPECTED.iter().copied().collect();
    assert_eq!(
        seen.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected.keys().copied().collect::<BTreeSet<_>>(),
        "every vendored case must be listed in EXPECTED"
    );
    for (id, got) in &seen {
        match (expected[id.as_str()], got) {
            (Outcome::Pass, Ok(())) => {}
            (Outcome::Pass, Err(why)) => panic!("{id} regressed: {why}"),
            (Outcome::Differs(_), Ok(())) => {
                panic!("{id} now passes: mark it Pass in EXPECTED")
            }
            (Outcome::Differs(reason), Err(why)) => {
                println!("{id}: known difference ({reason}): {why}");
            }
        }
    }
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("readable case");
    json5::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Nodes by capture name, from the case's topology.
fn topology(case: &Value) -> Option<Vec<(String, PolicyNode)>> {
    let nodes = case.get("topology")?.get("nodes")?.as_object()?;
    let mut out = Vec::new();
    for (i, (name, n)) in nodes.iter().enumerate() {
        let addr = |k: &str| n[k].as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let tags: Vec<String> = n["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let user = USERS.iter().find(|(n, _)| n == name).map(|(_, u)| *u);
        let routes = n
            .get("approved_routes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str()?.parse::<IpNet>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let node = PolicyNode::new(
            NodeId(i as u64 + 1),
            [addr("ipv4")?, addr("ipv6")?],
            &tags,
            user,
        )
        .with_routes(routes);
        out.push((name.clone(), node));
    }
    Some(out)
}

/// Runs one case: `Ok` when we agree with the capture.
fn run(case: &Value, nodes: &[(String, PolicyNode)]) -> Result<(), String> {
    let policy_text = case["input"]["full_policy"].to_string();
    let parsed = Policy::parse(&policy_text);
    if case["error"].as_bool() == Some(true) {
        let want = case["input"]["api_response_body"]["message"]
            .as_str()
            .unwrap_or_default();
        return match parsed {
            Ok(_) => Err(format!("Tailscale refused it ({want}); we accepted it")),
            Err(e) => {
                let got = e.to_string();
                let key_parts = [
                    "tag not found",
                    "not valid on the src",
                    "port range",
                    "autogroup:self",
                    "not defined",
                ];
                if key_parts
                    .iter()
                    .any(|k| want.contains(k) && got.contains(k))
                    || got.contains(want)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "both refuse, but ours says {got:?}, Tailscale {want:?}"
                    ))
                }
            }
        };
    }
    let policy = parsed.map_err(|e| format!("we refused a policy Tailscale accepted: {e}"))?;
    let just_nodes: Vec<PolicyNode> = nodes.iter().map(|(_, n)| n.clone()).collect();
    let compiled = compile(&policy, &just_nodes);
    let captures = case["captures"].as_object().ok_or("no captures")?;
    for (name, capture) in captures {
        let Some((_, node)) = nodes.iter().find(|(n, _)| n == name) else {
            return Err(format!("capture for unknown node {name}"));
        };
        let want =
            expected_rules(&capture["packet_filter_rules"]).map_err(|e| format!("{name}: {e}"))?;
        let got: Vec<Comparable> = compiled[&node.id]
            .filter
            .rules
            .iter()
            .map(comparable)
            .collect();
        if want != got {
            return Err(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    Ok(())
}

/// A rule with order-free parts.
#[derive(Debug, PartialEq, Eq)]
struct Comparable {
    sources: BTreeSet<IpNet>,
    destinations: BTreeSet<(IpNet, PortRange)>,
    protocols: BTreeSet<u8>,
}

fn comparable(rule: &FilterRule) -> Comparable {
    Comparable {
        sources: rule.sources.iter().copied().collect(),
        destinations: rule
            .destinations
            .iter()
            .map(|d| (d.prefix, d.ports))
            .collect(),
        protocols: normalise_protocols(rule.protocols.iter().copied().collect()),
    }
}

/// The default protocol set written out equals the empty (default) set.
fn normalise_protocols(p: BTreeSet<u8>) -> BTreeSet<u8> {
    if p == BTreeSet::from([1, 6, 17, 58]) {
        BTreeSet::new()
    } else {
        p
    }
}

fn expected_rules(v: &Value) -> Result<Vec<Comparable>, String> {
    let Some(rules) = v.as_array() else {
        return Ok(Vec::new());
    };
    rules
        .iter()
        .map(|r| {
            let mut sources = BTreeSet::new();
            for s in r["SrcIPs"].as_array().ok_or("SrcIPs")? {
                sources.extend(prefixes(s.as_str().ok_or("SrcIPs entry")?)?);
            }
            let mut destinations = BTreeSet::new();
            for d in r["DstPorts"].as_array().ok_or("DstPorts")? {
                let ports = PortRange {
                    first: d["Ports"]["First"].as_u64().ok_or("First")? as u16,
                    last: d["Ports"]["Last"].as_u64().ok_or("Last")? as u16,
                };
                for p in prefixes(d["IP"].as_str().ok_or("IP")?)? {
                    destinations.insert((p, ports));
                }
            }
            let protocols = r
                .get("IPProto")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_u64().map(|p| p as u8))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Comparable {
                sources,
                destinations,
                protocols: normalise_protocols(protocols),
            })
        })
        .collect()
}

/// `*`, an address, a prefix, or an IPv4 range `a-b`, as prefixes.
fn prefixes(s: &str) -> Result<Vec<IpNet>, String> {
    if s == "*" {
        return Ok(vec![
            IpNet::V4(Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ]);
    }
    if let Some((a, b)) = s.split_once('-') {
        let (Ok(a), Ok(b)) = (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) else {
            return Err(format!("range {s:?} is not IPv4"));
        };
        return Ok(range_prefixes(u32::from(a), u32::from(b)));
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(vec![IpNet::from(addr)]);
    }
    s.parse()
        .map(|p| vec![p])
        .map_err(|_| format!("bad prefix {s:?}"))
}

/// The fewest aligned prefixes covering `first..=last`.
fn range_prefixes(mut first: u32, last: u32) -> Vec<IpNet> {
    let mut out = Vec::new();
    loop {
        let mut len = 32u8;
        while len > 0 {
            let size = 1u64 << (33 - len);
            let aligned = u64::from(first) % size == 0;
            if !aligned || u64::from(first) + size - 1 > u64::from(last) {
                break;
            }
            len -= 1;
        }
        let net = Ipv4Net::new(Ipv4Addr::from(first), len).expect("length at most 32");
        out.push(IpNet::V4(net));
        let next = u64::from(u32::from(net.broadcast())) + 1;
        if next > u64::from(last) {
            return out;
        }
        first = next as u32;
    }
}
