//! The firewall adapter against the real kernel, each test in its own network namespace.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod netns;

use causeway_netconf::{
    FirewallError, FirewallPolicy, SubnetRouter, SubnetRouterError, apply_firewall,
    firewall_exists, remove_firewall,
};
use netns::{NamedNetns, in_fresh_netns, run};
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
        forward_to: vec![
            "198.18.0.0/16".parse().unwrap(),
            "fd00:1:2::/64".parse().unwrap(),
        ],
        egress: None,
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
        assert_eq!(forward.len(), 3, "{rules:#?}");
        assert!(
            forward[0].contains(r#""key":"oifname""#)
                && forward[0].contains(r#""right":["established","related"]"#),
            "{}",
            forward[0]
        );
        assert!(
            forward[1].contains(r#""key":"iifname""#)
                && forward[1].contains(r#"{"prefix":{"addr":"198.18.0.0","len":16}}"#)
                && forward[1].contains(r#"{"accept":null}"#),
            "{}",
            forward[1]
        );
        assert!(
            forward[2].contains(r#""protocol":"ip6""#)
                && forward[2].contains(r#"{"prefix":{"addr":"fd00:1:2::","len":64}}"#),
            "{}",
            forward[2]
        );

        let listing = run("nft", &["list", "table", "inet", TABLE]);
        assert!(
            listing.contains("type nat hook postrouting priority srcnat; policy accept;"),
            "{listing}"
        );
        assert!(
            listing.contains("type filter hook forward priority filter; policy drop;"),
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

        assert_eq!(first, 5);
        assert_eq!(nft_rules().len(), first);
        assert_eq!(rule_count("postrouting"), 2);
        assert_eq!(rule_count("forward"), 3);
    });
}

#[test]
fn applying_a_new_policy_replaces_the_old_rules() {
    in_fresh_netns(|| {
        apply_firewall(&router_policy()).expect("router policy");
        let device = FirewallPolicy {
            masquerade: Vec::new(),
            forward: false,
            forward_to: Vec::new(),
            ..router_policy()
        };

        apply_firewall(&device).expect("device policy");

        assert_eq!(nft_rules().len(), 0);
        let listing = run("nft", &["list", "table", "inet", TABLE]);
        assert!(
            listing.contains("chain postrouting") && listing.contains("chain forward"),
            "{listing}"
        );
        assert!(
            listing.contains("type filter hook forward priority filter; policy accept;"),
            "a device leaves forwarding alone: {listing}"
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

fn read_sysctl(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

#[test]
fn a_subnet_router_puts_forwarding_and_the_table_back_on_every_exit() {
    in_fresh_netns(|| {
        assert_eq!(read_sysctl(IPV4_FORWARD), "0", "fresh namespace");
        assert_eq!(read_sysctl(IPV6_FORWARD), "0", "fresh namespace");

        // Early exit: forwarding was turned on, then the table failed.
        let bogus = FirewallPolicy {
            tun_interface: "an-interface-name-past-ifnamsiz".to_owned(),
            ..router_policy()
        };
        let error = SubnetRouter::start(&bogus, true).expect_err("bad policy");
        assert!(
            matches!(
                error,
                SubnetRouterError::Firewall(FirewallError::InvalidPolicy { .. })
            ),
            "{error:?}"
        );
        assert_eq!(read_sysctl(IPV4_FORWARD), "0");
        assert_eq!(read_sysctl(IPV6_FORWARD), "0");
        assert!(!firewall_exists(TABLE).unwrap());

        // A run, then shutdown.
        let router = SubnetRouter::start(&router_policy(), true).expect("start");
        assert_eq!(read_sysctl(IPV4_FORWARD), "1");
        assert_eq!(read_sysctl(IPV6_FORWARD), "1");
        assert!(firewall_exists(TABLE).unwrap());
        drop(router);
        assert_eq!(read_sysctl(IPV4_FORWARD), "0");
        assert_eq!(read_sysctl(IPV6_FORWARD), "0");
        assert!(!firewall_exists(TABLE).unwrap());

        // Forwarding that was on before stays on.
        std::fs::write(IPV4_FORWARD, "1\n").unwrap();
        drop(SubnetRouter::start(&router_policy(), false).expect("start"));
        assert_eq!(read_sysctl(IPV4_FORWARD), "1");
        assert_eq!(read_sysctl(IPV6_FORWARD), "0");
    });
}

/// Whether `from` gets an answer to a ping to `to` (three tries, so a
/// first lost ARP exchange does not count).
fn pings(from: &NamedNetns, source: &str, to: &str) -> bool {
    from.succeeds(
        "ping",
        &[
            "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", source, to,
        ],
    )
}

/// Moves one end of a new veth pair into `far`, addresses both ends and
/// brings them up.
fn link(near: &str, near_address: &str, far: &NamedNetns, far_name: &str, far_address: &str) {
    run(
        "ip",
        &[
            "link", "add", near, "type", "veth", "peer", "name", far_name,
        ],
    );
    run("ip", &["link", "set", far_name, "netns", far.name()]);
    run("ip", &["addr", "add", near_address, "dev", near]);
    run("ip", &["link", "set", near, "up"]);
    far.run("ip", &["addr", "add", far_address, "dev", far_name]);
    far.run("ip", &["link", "set", far_name, "up"]);
}

#[test]
fn the_forward_chain_passes_tailnet_traffic_to_its_routes_and_only_replies_back() {
    in_fresh_netns(|| {
        // This thread's namespace is the router; a client on the tailnet
        // side of "cw0" (a veth standing in for the TUN device), and a VPC
        // with an approved subnet (198.19.1.0/24) and another
        // (198.19.2.0/24) behind the router. snat = false: the VPC sees
        // tailnet addresses and routes them back through the router.
        let client = NamedNetns::new("client");
        let vpc = NamedNetns::new("vpc");
        link("cw0", "100.64.0.1/10", &client, "t0", "100.64.0.2/10");
        link("vpc0", "198.19.1.1/24", &vpc, "v0", "198.19.1.10/24");
        link("vpc1", "198.19.2.1/24", &vpc, "v1", "198.19.2.10/24");
        client.run("ip", &["route", "add", "default", "via", "100.64.0.1"]);
        vpc.run(
            "ip",
            &["route", "add", "100.64.0.0/10", "via", "198.19.1.1"],
        );
        let policy = FirewallPolicy {
            masquerade: Vec::new(),
            forward_to: vec!["198.19.1.0/24".parse().unwrap()],
            ..router_policy()
        };
        let router = SubnetRouter::start(&policy, false).expect("start");

        assert!(
            pings(&client, "100.64.0.2", "198.19.1.10"),
            "the client reaches the approved subnet and the replies come back"
        );
        assert!(
            !pings(&client, "100.64.0.2", "198.19.2.10"),
            "the client must not reach a subnet that is not a route"
        );
        assert!(
            !pings(&vpc, "198.19.1.10", "100.64.0.2"),
            "the VPC must not open connections into the tailnet"
        );
        drop(router);
    });
}
