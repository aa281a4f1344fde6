//! The firewall adapter against the real kernel, each test in its own network namespace.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod netns;

use causeway_netconf::{
    FirewallError, FirewallPolicy, apply_firewall, firewall_exists, remove_firewall,
};
use netns::{in_fresh_netns, run};
use serde_json::Value;

const TABLE: &str = "causeway";

fn router_policy() -> FirewallPolicy {
    FirewallPolicy {
        table: TABLE.to_owned(),
        tun_interface: "cw0".to_owned(),
        tailnet_v4: "100.64.0.0/10".parse().unwrap(),
        tailnet_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
        masquerade: vec![
            "198.18.0.0/16".parse().unwrap(),
            "fd00:1:2::/64".parse().unwrap(),
        ],
        forward: true,
    }
}

/// `nft -j list table inet causeway`, as (chain, rule) pairs.
fn nft_rules() -> Vec<(String, Value)> {
    let json: Value = serde_json::from_str(&run("nft", &["-j", "list", "table", "inet", TABLE]))
        .expect("nft -j prints JSON");
    json["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|item| item.get("rule"))
        .map(|rule| {
            (
                rule["chain"].as_str().unwrap().to_owned(),
                rule["expr"].clone(),
            )
        })
        .collect()
}

fn rule_count(chain: &str) -> usize {
    nft_rules().iter().filter(|(c, _)| c == chain).count()
}

#[test]
fn apply_creates_the_table_with_masquerade_and_forward_rules() {
    in_fresh_netns(|| {
        assert!(!firewall_exists(TABLE).unwrap());

        apply_firewall(&router_policy()).expect("apply");

        assert!(firewall_exists(TABLE).unwrap());
        let rules = nft_rules();
        let nat: Vec<&Value> = rules
            .iter()
            .filter(|(c, _)| c == "postrouting")
            .map(|(_, e)| e)
            .collect();
        assert_eq!(nat.len(), 2, "{rules:#?}");
        let v4 = nat[0].to_string();
        assert!(
            v4.contains(r#"{"match":{"left":{"meta":{"key":"oifname"}},"op":"!=","right":"cw0"}}"#),
            "{v4}"
        );
        assert!(
            v4.contains(r#""left":{"payload":{"field":"saddr","protocol":"ip"}}"#),
            "{v4}"
        );
        assert!(
            v4.contains(r#"{"prefix":{"addr":"100.64.0.0","len":10}}"#),
            "{v4}"
        );
        assert!(
            v4.contains(r#"{"prefix":{"addr":"198.18.0.0","len":16}}"#),
            "{v4}"
        );
        assert!(v4.contains(r#"{"masquerade":null}"#), "{v4}");
        let v6 = nat[1].to_string();
        assert!(v6.contains(r#""protocol":"ip6""#), "{v6}");
        assert!(
            v6.contains(r#"{"prefix":{"addr":"fd7a:115c:a1e0::","len":48}}"#),
            "{v6}"
        );
        assert!(
            v6.contains(r#"{"prefix":{"addr":"fd00:1:2::","len":64}}"#),
            "{v6}"
        );

        let forward: Vec<String> = rules
            .iter()
            .filter(|(c, _)| c == "forward")
            .map(|(_, e)| e.to_string())
            .collect();
        assert_eq!(forward.len(), 2, "{rules:#?}");
        assert!(
            forward[0].contains(r#""key":"iifname""#) && forward[0].contains(r#"{"accept":null}"#),
            "{}",
            forward[0]
        );
        assert!(
            forward[1].contains(r#""right":["established","related"]"#),
            "{}",
            forward[1]
        );

        let listing = run("nft", &["list", "table", "inet", TABLE]);
        assert!(
            listing.contains("type nat hook postrouting priority srcnat; policy accept;"),
            "{listing}"
        );
        assert!(
            listing.contains("type filter hook forward priority filter; policy accept;"),
            "{listing}"
        );
    });
}

#[test]
fn applying_twice_leaves_the_same_rules() {
    in_fresh_netns(|| {
        apply_firewall(&router_policy()).expect("first apply");
        let first = nft_rules().len();

        apply_firewall(&router_policy()).expect("second apply");

        assert_eq!(first, 4);
        assert_eq!(nft_rules().len(), first);
        assert_eq!(rule_count("postrouting"), 2);
        assert_eq!(rule_count("forward"), 2);
    });
}

#[test]
fn applying_a_new_policy_replaces_the_old_rules() {
    in_fresh_netns(|| {
        apply_firewall(&router_policy()).expect("router policy");
        let device = FirewallPolicy {
            masquerade: Vec::new(),
            forward: false,
            ..router_policy()
        };

        apply_firewall(&device).expect("device policy");

        assert_eq!(nft_rules().len(), 0);
        let listing = run("nft", &["list", "table", "inet", TABLE]);
        assert!(
            listing.contains("chain postrouting") && listing.contains("chain forward"),
            "{listing}"
        );
    });
}

#[test]
fn remove_deletes_the_table_and_tolerates_absence() {
    in_fresh_netns(|| {
        apply_firewall(&router_policy()).expect("apply");

        remove_firewall(TABLE).expect("remove");

        assert!(!firewall_exists(TABLE).unwrap());
        let tables = run("nft", &["list", "tables"]);
        assert!(!tables.contains(TABLE), "{tables}");
        remove_firewall(TABLE).expect("removing an absent table is fine");
    });
}

#[test]
fn an_overlong_interface_name_is_refused_and_changes_nothing() {
    in_fresh_netns(|| {
        let bogus = FirewallPolicy {
            tun_interface: "an-interface-name-past-ifnamsiz".to_owned(),
            ..router_policy()
        };

        let fresh = apply_firewall(&bogus).expect_err("name longer than IFNAMSIZ");

        assert!(
            matches!(
                fresh,
                FirewallError::InvalidPolicy {
                    field: "tun_interface",
                    ..
                }
            ),
            "{fresh:?}"
        );
        assert!(!firewall_exists(TABLE).unwrap());

        apply_firewall(&router_policy()).expect("valid policy");
        let before = run("nft", &["list", "table", "inet", TABLE]);
        let again = apply_firewall(&bogus).expect_err("still too long");
        assert!(
            matches!(again, FirewallError::InvalidPolicy { .. }),
            "{again:?}"
        );
        assert_eq!(run("nft", &["list", "table", "inet", TABLE]), before);
    });
}

#[test]
fn a_v6_masquerade_without_a_v6_tailnet_is_refused() {
    in_fresh_netns(|| {
        let policy = FirewallPolicy {
            tailnet_v6: None,
            ..router_policy()
        };

        let error = apply_firewall(&policy).expect_err("no v6 source range");

        assert!(
            matches!(
                error,
                FirewallError::InvalidPolicy {
                    field: "masquerade",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!firewall_exists(TABLE).unwrap());
    });
}

#[test]
fn firewall_exists_ignores_tables_of_other_names() {
    in_fresh_netns(|| {
        run("nft", &["add", "table", "inet", "someone-else"]);

        assert!(!firewall_exists(TABLE).unwrap());
        assert!(firewall_exists("someone-else").unwrap());
        remove_firewall(TABLE).expect("absent");
        assert!(firewall_exists("someone-else").unwrap());
    });
}
