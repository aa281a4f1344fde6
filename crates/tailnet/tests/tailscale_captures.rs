//! Checks the compiler against packet filters Tailscale's own service
//! produced, derived from cases Headscale captured (see tests/data/README.md).
//!
//! Each case in `tests/data/tailscale_captures/<category>/<id>.json` is a
//! policy, the tailnet's nodes and what Tailscale did with it: the filter
//! each node received, written as our `FilterRule`s (a `*` destination as
//! `0.0.0.0/0` and `::/0`, address ranges as the prefixes that cover them;
//! a `*` source is the tailnet's ranges and approved routes, as Tailscale
//! sent it), a refusal with
//! the values its error named, or the SSH rules each node received. Rules
//! are compared in order, with sources and destinations as sets.
//! `EXPECTED` records every case's outcome: it passes, it differs for a
//! stated reason, or it does not apply because it exercises a feature we do
//! not build (checked to be present in the case). The test fails when any
//! outcome changes, so a regression cannot hide and a fix must update the
//! list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use causeway_tailnet::policy::{Policy, PolicyNode, compile};
use causeway_wire::{FilterRule, NodeId, PortRange};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

/// Every case (by id) and its known outcome.
const EXPECTED: &[(&str, Outcome)] = &[
    ("ACL-A01", Outcome::Pass),
    ("ACL-A02", Outcome::Pass),
    ("ACL-A03", Outcome::Pass),
    ("ACL-A04", Outcome::Pass),
    ("ACL-A05", Outcome::Pass),
    ("ACL-A06", Outcome::Pass),
    ("ACL-A07", Outcome::Pass),
    ("ACL-A08", Outcome::Pass),
    ("ACL-A09", Outcome::Pass),
    ("ACL-A10", Outcome::Pass),
    ("ACL-A11", Outcome::Pass),
    ("ACL-A12", Outcome::Pass),
    ("ACL-A13", Outcome::Pass),
    ("ACL-A14", Outcome::Pass),
    ("ACL-A15", Outcome::Pass),
    ("ACL-A16", Outcome::Pass),
    ("ACL-A17", Outcome::Pass),
    ("ACL-AH01", Outcome::Pass),
    ("ACL-AH02", Outcome::Pass),
    ("ACL-AH03", Outcome::Pass),
    ("ACL-AH04", Outcome::Pass),
    ("ACL-AH05", Outcome::Pass),
    ("ACL-AH06", Outcome::Pass),
    ("ACL-AR01", Outcome::Pass),
    ("ACL-AR02", Outcome::Pass),
    ("ACL-AR03", Outcome::Pass),
    ("ACL-AR04", Outcome::Pass),
    ("ACL-AR05", Outcome::Pass),
    ("ACL-AR06", Outcome::Pass),
    ("ACL-AT01", Outcome::Pass),
    ("ACL-AT02", Outcome::Pass),
    ("ACL-AT03", Outcome::Pass),
    ("ACL-AT04", Outcome::Pass),
    ("ACL-AT05", Outcome::Pass),
    ("ACL-AT06", Outcome::Differs(RULE_ORDER)),
    ("ACL-AU01", Outcome::Pass),
    ("ACL-AU02", Outcome::Pass),
    ("ACL-AU03", Outcome::Pass),
    ("ACL-AU04", Outcome::Pass),
    ("ACL-AU05", Outcome::Pass),
    ("ACL-AU06", Outcome::Pass),
    ("ACL-C01", Outcome::Pass),
    ("ACL-C02", Outcome::Pass),
    ("ACL-C03", Outcome::Pass),
    ("ACL-C04", Outcome::Pass),
    ("ACL-C05", Outcome::Pass),
    ("ACL-C06", Outcome::Pass),
    ("ACL-C07", Outcome::Pass),
    ("ACL-C08", Outcome::Pass),
    ("ACL-C09", Outcome::Pass),
    ("ACL-C10", Outcome::Pass),
    ("ACL-D01", Outcome::Pass),
    ("ACL-D02", Outcome::Pass),
    ("ACL-D03", Outcome::Pass),
    ("ACL-D04", Outcome::Pass),
    ("ACL-D05", Outcome::Pass),
    ("ACL-D06", Outcome::Pass),
    ("ACL-D07", Outcome::Pass),
    ("ACL-D08", Outcome::Pass),
    ("ACL-E01", Outcome::Pass),
    ("ACL-E02", Outcome::Pass),
    ("ACL-E03", Outcome::Pass),
    ("ACL-E04", Outcome::Pass),
    ("ACL-E05", Outcome::Pass),
    ("ACL-E06", Outcome::Pass),
    ("ACL-E07", Outcome::Pass),
    ("ACL-E08", Outcome::Pass),
    ("ACL-E09", Outcome::Pass),
    ("ACL-ERR01", Outcome::Pass),
    ("ACL-ERR02", Outcome::Pass),
    ("ACL-ERR03", Outcome::Pass),
    ("ACL-ERR04", Outcome::Pass),
    ("ACL-ERR05", Outcome::Pass),
    ("ACL-ERR06", Outcome::Pass),
    ("ACL-ERR07", Outcome::Pass),
    ("ACL-ERR08", Outcome::Pass),
    ("ACL-ERR09", Outcome::Pass),
    ("ACL-H01", Outcome::Pass),
    ("ACL-H02", Outcome::Pass),
    ("ACL-H03", Outcome::Pass),
    ("ACL-H04", Outcome::Pass),
    ("ACL-H05", Outcome::Pass),
    ("ACL-H06", Outcome::Pass),
    ("ACL-H07", Outcome::Pass),
    ("ACL-H08", Outcome::Pass),
    ("ACL-K01", Outcome::Pass),
    ("ACL-K02", Outcome::Pass),
    ("ACL-K03", Outcome::Pass),
    ("ACL-K04", Outcome::Pass),
    ("ACL-K05", Outcome::Pass),
    ("ACL-M01", Outcome::Pass),
    ("ACL-M02", Outcome::Pass),
    ("ACL-M03", Outcome::Pass),
    ("ACL-M04", Outcome::Pass),
    ("ACL-M05", Outcome::Pass),
    ("ACL-M06", Outcome::Pass),
    ("ACL-M07", Outcome::Pass),
    ("ACL-M08", Outcome::Pass),
    ("ACL-M09", Outcome::Pass),
    ("ACL-M10", Outcome::Pass),
    ("ACL-O01", Outcome::Pass),
    ("ACL-O02", Outcome::Pass),
    ("ACL-O03", Outcome::Pass),
    ("ACL-O04", Outcome::Pass),
    ("ACL-P01", Outcome::Pass),
    ("ACL-P02", Outcome::Pass),
    ("ACL-P03", Outcome::Pass),
    ("ACL-P04", Outcome::Pass),
    ("ACL-P05", Outcome::Pass),
    ("ACL-P06", Outcome::Pass),
    ("ACL-R01", Outcome::Pass),
    ("ACL-R02", Outcome::Pass),
    ("ACL-R03", Outcome::Pass),
    ("ACL-R04", Outcome::Pass),
    ("ACL-R05", Outcome::Pass),
    ("ACL-R06", Outcome::Pass),
    ("ACL-R07", Outcome::Pass),
    ("ACL-R08", Outcome::Pass),
    ("ACL-R09", Outcome::Pass),
    ("ACL-R10", Outcome::Pass),
    ("ACL-S01", Outcome::Pass),
    ("ACL-S02", Outcome::Pass),
    ("ACL-S03", Outcome::Pass),
    ("ACL-S04", Outcome::Pass),
    ("ACL-S05", Outcome::Pass),
    ("ACL-S06", Outcome::Pass),
    ("ACL-S07", Outcome::Pass),
    ("ACL-S08", Outcome::Differs(SELF_ORDER)),
    ("ACL-S09", Outcome::Pass),
    ("ACL-S10", Outcome::Pass),
    ("ACL-T01", Outcome::Pass),
    ("ACL-T02", Outcome::Pass),
    ("ACL-T03", Outcome::Pass),
    ("ACL-T04", Outcome::Pass),
    ("ACL-T05", Outcome::Pass),
    ("ACL-T06", Outcome::Pass),
    ("ACL-T07", Outcome::Pass),
    ("ACL-T08", Outcome::Pass),
    ("ACL-T09", Outcome::Pass),
    ("ACL-T10", Outcome::Pass),
    ("ACL-U01", Outcome::Pass),
    ("ACL-U02", Outcome::Pass),
    ("ACL-U03", Outcome::Pass),
    ("ACL-U04", Outcome::Pass),
    ("ACL-U05", Outcome::Pass),
    ("ACL-U06", Outcome::Pass),
    ("ACL-U07", Outcome::Pass),
    ("ACL-U08", Outcome::Pass),
    ("ACL-U09", Outcome::Pass),
    ("ACL-U10", Outcome::Pass),
    ("ACL-U11", Outcome::Pass),
    ("ACL-U12", Outcome::Pass),
    ("ACL-W01", Outcome::Pass),
    ("ACL-W02", Outcome::Pass),
    ("ACL-W03", Outcome::Pass),
    ("ACL-W04", Outcome::Pass),
    ("ACL-W05", Outcome::Pass),
    ("ACL-W06", Outcome::Pass),
    ("ACL-W07", Outcome::Pass),
    ("GRANT-A1", APP),
    ("GRANT-A2", Outcome::Pass),
    ("GRANT-A3", APP),
    ("GRANT-A4", APP),
    ("GRANT-A5", Outcome::Differs(TAILSCALE_CAP_NAMES)),
    ("GRANT-A6", APP),
    ("GRANT-B1", APP),
    ("GRANT-B2", APP),
    ("GRANT-B3", APP),
    ("GRANT-B4", APP),
    ("GRANT-B5", APP),
    ("GRANT-C1", APP),
    ("GRANT-C2", APP),
    ("GRANT-C3", APP),
    ("GRANT-C4", APP),
    ("GRANT-C5", APP),
    ("GRANT-C6", APP),
    ("GRANT-D1", APP),
    ("GRANT-D2", APP),
    ("GRANT-D3", APP),
    ("GRANT-D4", APP),
    ("GRANT-D5", APP),
    ("GRANT-D6", APP),
    ("GRANT-D7", APP),
    ("GRANT-E1", APP),
    ("GRANT-E2", APP),
    ("GRANT-E3", Outcome::Differs(STAR_TO_SELF)),
    ("GRANT-E4", APP),
    ("GRANT-E5", APP),
    ("GRANT-E6", APP),
    ("GRANT-E7", APP),
    ("GRANT-E8", APP),
    ("GRANT-F1", APP),
    ("GRANT-F2", APP),
    ("GRANT-F3", APP),
    ("GRANT-F4", APP),
    ("GRANT-G1", APP),
    ("GRANT-G2", APP),
    ("GRANT-G3", APP),
    ("GRANT-G4", APP),
    ("GRANT-G5", APP),
    ("GRANT-G6", APP),
    ("GRANT-H1", Outcome::Pass),
    ("GRANT-H2", APP),
    ("GRANT-H3", Outcome::Pass),
    ("GRANT-H4", Outcome::Pass),
    ("GRANT-H5", Outcome::Pass),
    ("GRANT-H6", APP),
    ("GRANT-H7", Outcome::Pass),
    ("GRANT-H8", Outcome::Pass),
    ("GRANT-H9", Outcome::Differs(STAR_TO_SELF)),
    ("GRANT-H10", Outcome::Pass),
    ("GRANT-I1", VIA),
    ("GRANT-I2", VIA),
    ("GRANT-I3", VIA),
    // Refused as Tailscale does, though because we refuse every `via` grant.
    ("GRANT-I4", Outcome::Pass),
    ("GRANT-J1", Outcome::Pass),
    ("GRANT-J2", Outcome::Pass),
    ("GRANT-J3", Outcome::Pass),
    ("GRANT-J4", Outcome::Pass),
    ("GRANT-J5", Outcome::Pass),
    ("GRANT-J6", Outcome::Pass),
    ("GRANT-J7", Outcome::Pass),
    ("GRANT-K1", Outcome::Pass),
    ("GRANT-K2", Outcome::Pass),
    ("GRANT-K3", APP),
    ("GRANT-K4", Outcome::Differs(GRANTS_FIRST)),
    ("GRANT-K5", VIA),
    ("GRANT-K6", DANGER_ALL),
    ("GRANT-K7", Outcome::Pass),
    ("GRANT-K8", Outcome::Pass),
    ("GRANT-K9", APP),
    ("GRANT-K10", APP),
    ("GRANT-K11", APP),
    ("GRANT-K12", VIA),
    ("GRANT-K13", VIA),
    ("GRANT-K14", Outcome::Pass),
    ("GRANT-K15", Outcome::Pass),
    ("GRANT-K16", Outcome::Pass),
    ("GRANT-K17", Outcome::Pass),
    ("GRANT-K18", APP),
    ("GRANT-K19", APP),
    ("GRANT-K22", Outcome::Pass),
    ("GRANT-K23", Outcome::Pass),
    ("GRANT-K24", APP),
    ("GRANT-K25", APP),
    ("GRANT-K26", Outcome::Pass),
    ("GRANT-K27", APP),
    ("GRANT-K28", APP),
    ("GRANT-K29", Outcome::Pass),
    ("GRANT-K30", VIA),
    ("SSH-A1", SSH),
    ("SSH-A2", SSH),
    ("SSH-A3", SSH),
    ("SSH-A4", SSH),
    ("SSH-A5", SSH),
    ("SSH-A6", SSH),
    ("SSH-A7", SSH),
    ("SSH-A8", SSH),
    ("SSH-B1", SSH),
    ("SSH-B2", SSH),
    ("SSH-B3", SSH),
    ("SSH-B6", SSH),
    ("SSH-C1", SSH),
    ("SSH-C2", SSH),
    ("SSH-C3", SSH),
    ("SSH-C4", SSH),
    ("SSH-F1", SSH),
    ("SSH-F2", SSH),
    ("SSH-G1", SSH),
    ("SSH-G2", SSH),
];

/// Cases whose filters grant application capabilities.
const APP: Outcome = Outcome::NotApplicable(
    Feature::AppCapabilities,
    "application capabilities (`app` in grants): not compiled into filters yet",
);

/// Cases with `via` grants.
const VIA: Outcome =
    Outcome::NotApplicable(Feature::Via, "`via` grants: refused as not supported yet");

/// Cases with `autogroup:danger-all`.
const DANGER_ALL: Outcome = Outcome::NotApplicable(
    Feature::DangerAll,
    "`autogroup:danger-all`: not supported, refused as an unknown autogroup",
);

/// The `ssh` cases expect the SSH rules each node got.
const SSH: Outcome = Outcome::NotApplicable(
    Feature::Ssh,
    "Tailscale SSH rules: the `ssh` section is kept as written, no SSH policy is compiled yet",
);

/// Same rules, another order: Tailscale merges rules with equal sources
/// across the whole policy (a merged rule sits where its first part was),
/// we merge within each node's filter. Filters only accept, so the order
/// does not change what passes.
const RULE_ORDER: &str =
    "rule order only: Tailscale merges equal-source rules policy-wide, we merge per node";

/// Same rules, another order: a rule whose destinations include
/// `autogroup:self` gives a node two filter rules (one from the user's own
/// devices, one from every sender). Tailscale put the `autogroup:self` one
/// first in `ACL-S08` but last in `ACL-A17`, both listing it first; we always
/// put it last. Filters only accept, so the order does not change what
/// passes.
const SELF_ORDER: &str = "rule order only: Tailscale put the autogroup:self rule first here (last in ACL-A17), we put it last";

/// `src: ["*"]` with `dst: ["autogroup:self"]`: Tailscale accepts it in
/// `acls` (`ACL-R07`, `ACL-S07`) but refused it in the `app` grant of
/// `GRANT-E3` ("autogroup:self can only be used with users, groups, or
/// supported autogroups"). We accept it in both; one captured `app` grant
/// is too little to say whether Tailscale refuses it in every grant.
const STAR_TO_SELF: &str = "we accept src * with dst autogroup:self in grants as in acls; Tailscale refused it in this app grant";

/// Tailscale refuses an `app` capability in the `tailscale.com` domain
/// unless it is one it defines (it accepted `tailscale.com/cap/kubernetes`
/// and `tailscale.com/cap/drive` in other cases, refused
/// `tailscale.com/cap/relay-target` in `GRANT-A5`); we check only
/// `tailscale.com/cap/tsrecorder`'s values and accept any other name, as we
/// do not know Tailscale's full list.
const TAILSCALE_CAP_NAMES: &str =
    "we accept any tailscale.com capability name; Tailscale refused tailscale.com/cap/relay-target";

/// Same rules, another order: Tailscale puts a node's rules from `grants`
/// before those from `acls` (seen in `GRANT-K4`), we keep the policy's
/// order, `acls` first. Filters only accept, so the order does not change
/// what passes.
const GRANTS_FIRST: &str =
    "rule order only: Tailscale lists rules from grants before rules from acls, we keep acls first";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// We compile the same filter for every node (or refuse the same bad
    /// policy).
    Pass,
    /// A known, documented difference.
    Differs(&'static str),
    /// The case exercises a feature we do not build; the feature must be
    /// present in the case.
    NotApplicable(Feature, &'static str),
}

/// A feature whose cases do not apply, recognisable in the case itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feature {
    /// Tailscale SSH rules (`ssh`).
    Ssh,
    /// Application capabilities (`app` in `grants`).
    AppCapabilities,
    /// Grants routed through named routers (`via`).
    Via,
    /// `autogroup:danger-all` (every address, inside the tailnet or not).
    DangerAll,
}

/// Whether one of the case's grants has the field `key`.
fn grants_use(case: &Case, key: &str) -> bool {
    case.policy["grants"]
        .as_array()
        .is_some_and(|g| g.iter().any(|grant| grant.get(key).is_some()))
}

impl Feature {
    /// Whether the case uses the feature.
    fn present(self, case: &Case) -> bool {
        match self {
            Feature::Ssh => {
                case.policy["ssh"].as_array().is_some_and(|s| !s.is_empty())
                    && matches!(&case.expected, Expected::SshRules(rules) if !rules.is_empty())
            }
            Feature::AppCapabilities => {
                grants_use(case, "app")
                    && match &case.expected {
                        // The capture holds capability grants, or Tailscale
                        // refused the policy (for a capability's name).
                        Expected::CapFilters(filters) => filters
                            .values()
                            .flatten()
                            .flatten()
                            .any(|rule| rule.get("cap_grants").is_some()),
                        Expected::Refused { .. } => true,
                        Expected::Filters(_) | Expected::SshRules(_) => false,
                    }
            }
            Feature::Via => grants_use(case, "via"),
            Feature::DangerAll => case.policy.to_string().contains("autogroup:danger-all"),
        }
    }
}

/// One case, as stored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    /// The directory the case sits in.
    category: String,
    /// The policy, as plain JSON.
    policy: Value,
    /// The tailnet; a node's id is its position in this list, from 1.
    nodes: Vec<CaseNode>,
    expected: Expected,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseNode {
    name: String,
    addresses: Vec<IpAddr>,
    user: Option<String>,
    tags: Vec<String>,
    /// Approved routes, exit routes included.
    routes: Vec<IpNet>,
}

/// What Tailscale did with the policy.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Expected {
    /// The packet filter each captured node received (`null`: none).
    Filters(BTreeMap<String, Option<Vec<FilterRule>>>),
    /// The policy was refused; the error named these values.
    Refused { mentions: Vec<String> },
    /// The SSH rules each captured node received.
    SshRules(BTreeMap<String, Vec<Value>>),
    /// The packet filter each captured node received, where some rules
    /// grant application capabilities (`cap_grants`), which our filter
    /// type cannot hold: kept as JSON.
    CapFilters(BTreeMap<String, Option<Vec<Value>>>),
}

#[test]
fn tailscale_captured_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tailscale_captures");
    let expected: BTreeMap<&str, Outcome> = EXPECTED.iter().copied().collect();
    assert_eq!(
        expected.len(),
        EXPECTED.len(),
        "EXPECTED lists a case twice"
    );

    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    // Per category: pass, differ, not applicable.
    let mut counts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for (category, path) in case_files(&root) {
        let case = load(&path);
        let id = case.id.clone();
        assert_eq!(case.category, category, "{id}: category");
        assert_eq!(
            path.file_stem().and_then(|s| s.to_str()),
            Some(id.as_str()),
            "{id}: file name"
        );
        assert!(seen.insert(id.clone()), "{id} appears twice");
        let Some(&want) = expected.get(id.as_str()) else {
            failures.push(format!("{id} ({category}) is not listed in EXPECTED"));
            continue;
        };
        let got = run(&case);
        let slot = match (want, &got) {
            (Outcome::Pass, Ok(())) => 0,
            (Outcome::Pass, Err(why)) => {
                failures.push(format!("{id} regressed: {why}"));
                continue;
            }
            (Outcome::Differs(_) | Outcome::NotApplicable(..), Ok(())) => {
                failures.push(format!("{id} now passes: mark it Pass in EXPECTED"));
                continue;
            }
            (Outcome::Differs(reason), Err(why)) => {
                println!("{id}: known difference ({reason}): {why}");
                1
            }
            (Outcome::NotApplicable(feature, reason), Err(_)) => {
                if !feature.present(&case) {
                    failures.push(format!(
                        "{id} is marked not applicable for {feature:?}, which it does not use"
                    ));
                    continue;
                }
                println!("{id}: not applicable ({reason})");
                2
            }
        };
        counts.entry(category).or_default()[slot] += 1;
    }
    for id in expected.keys() {
        if !seen.contains(*id) {
            failures.push(format!("{id} is listed in EXPECTED but has no case file"));
        }
    }
    let mut total = [0; 3];
    for (category, [pass, differ, na]) in &counts {
        println!("{category}: {pass} pass, {differ} differ, {na} not applicable");
        total[0] += pass;
        total[1] += differ;
        total[2] += na;
    }
    println!(
        "all: {} pass, {} differ, {} not applicable",
        total[0], total[1], total[2]
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every `*.json` under `root`'s subdirectories, with its directory name,
/// in a stable order.
fn case_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).expect("data dir") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let category = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 directory name")
            .to_owned();
        for file in std::fs::read_dir(&dir).expect("category dir") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|e| e == "json") {
                out.push((category.clone(), file));
            }
        }
    }
    out.sort();
    out
}

fn load(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).expect("readable case");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The case's nodes by name, numbered from 1 in the order listed.
fn policy_nodes(case: &Case) -> Vec<(&str, PolicyNode)> {
    case.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let node = PolicyNode::new(
                NodeId(i as u64 + 1),
                n.addresses.iter().copied(),
                &n.tags,
                n.user.as_deref(),
            )
            .with_routes(n.routes.iter().copied());
            (n.name.as_str(), node)
        })
        .collect()
}

/// The IPv6 range of the tailnet the cases were captured on (Tailscale
/// gives every tailnet the same one).
const CAPTURED_ULA: &str = "fd7a:115c:a1e0::/48";

/// Runs one case: `Ok` when we agree with Tailscale.
fn run(case: &Case) -> Result<(), String> {
    let parsed = Policy::parse(&case.policy.to_string());
    let filters = match &case.expected {
        Expected::Refused { mentions } => {
            return match parsed {
                Ok(_) => Err(format!(
                    "Tailscale refused it (naming {mentions:?}); we accepted it"
                )),
                Err(e) => {
                    let got = e.to_string();
                    let missing: Vec<&String> = mentions
                        .iter()
                        .filter(|v| !got.contains(v.as_str()))
                        .collect();
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(format!(
                            "both refuse, but ours ({got:?}) does not name {missing:?} as Tailscale's does"
                        ))
                    }
                }
            };
        }
        Expected::SshRules(_) => {
            return Err("Tailscale's SSH rules expected; we compile no SSH policy".to_owned());
        }
        Expected::CapFilters(_) => {
            return Err(
                "application capability grants expected; we compile only `ip` grants".to_owned(),
            );
        }
        Expected::Filters(filters) => filters,
    };
    let policy = parsed.map_err(|e| format!("we refused a policy Tailscale accepted: {e}"))?;
    let nodes = policy_nodes(case);
    let just_nodes: Vec<PolicyNode> = nodes.iter().map(|(_, n)| n.clone()).collect();
    let ula = CAPTURED_ULA.parse().expect("valid prefix");
    let compiled = compile(&policy, ula, &just_nodes);
    for (name, rules) in filters {
        let Some((_, node)) = nodes.iter().find(|(n, _)| n == name) else {
            return Err(format!("expected filter for unknown node {name}"));
        };
        let want: Vec<Comparable> = rules.iter().flatten().map(comparable).collect();
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
