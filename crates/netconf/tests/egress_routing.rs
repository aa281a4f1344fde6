//! An exit node's egress routing against the real kernel, in a network
//! namespace of its own: forwarded traffic from the TUN device leaves by
//! the egress interface, the node's own traffic keeps the main table, and
//! with the egress interface down forwarded traffic is unreachable rather
//! than routed out of the public interface.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod netns;

use std::collections::BTreeSet;
use std::process::Command;

use causeway_netconf::{
    EgressError, EgressSelector, MacAddress, RouteError, RouteTable, apply_egress_routing,
    clear_egress_routing, enable_forwarding, plan_egress_routing, read_egress_interface,
};
use ipnet::IpNet;
use netns::{in_fresh_netns, run, runtime};

const MAC: &str = "0a:1b:2c:3d:4e:5f";

/// `ip route get DEST from 100.64.0.5 iif cw0`: how a packet forwarded
/// from the tailnet would be routed; `Err` with the kernel's complaint.
fn forwarded_route(destination: &str) -> Result<String, String> {
    let output = Command::new("ip")
        .args([
            "route",
            "get",
            destination,
            "from",
            "100.64.0.5",
            "iif",
            "cw0",
        ])
        .output()
        .expect("running ip");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A public uplink `eth0` (default route of the main table) and an egress
/// interface `eth1` with MAC [`MAC`] in 198.19.3.0/24, and a TUN `cw0`.
fn wire_two_uplinks() {
    for args in [
        &["link", "set", "dev", "lo", "up"][..],
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ],
        &[
            "link", "add", "eth1", "type", "veth", "peer", "name", "peer1",
        ],
        &["link", "set", "dev", "eth1", "address", MAC],
        &["addr", "add", "198.18.0.21/24", "dev", "eth0"],
        &["addr", "add", "198.19.3.10/24", "dev", "eth1"],
        &["tuntap", "add", "dev", "cw0", "mode", "tun"],
        &["addr", "add", "100.64.0.1/32", "dev", "cw0"],
    ] {
        run("ip", args);
    }
    for link in ["eth0", "peer0", "eth1", "peer1", "cw0"] {
        run("ip", &["link", "set", "dev", link, "up"]);
    }
    run("ip", &["route", "add", "default", "via", "198.18.0.1"]);
    run("ip", &["route", "add", "100.64.0.0/10", "dev", "cw0"]);
}

#[test]
fn forwarded_traffic_leaves_by_the_egress_interface_and_fails_when_it_is_down() {
    in_fresh_netns(|| {
        wire_two_uplinks();
        let _forwarding = enable_forwarding(true, false).expect("forwarding in the namespace");
        runtime().block_on(async {
            let table = RouteTable::new().await.expect("rtnetlink");
            let mac: MacAddress = MAC.parse().unwrap();
            let interface = read_egress_interface(&table, &EgressSelector::Mac(mac))
                .await
                .expect("eth1 found by MAC");
            assert_eq!(interface.name, "eth1");
            assert_eq!(interface.ipv4, ["198.19.3.10/24".parse().unwrap()]);
            assert_eq!(interface.ipv6_gateway, None);
            let keep: BTreeSet<IpNet> = ["100.64.0.0/10".parse().unwrap()].into();
            let plan = plan_egress_routing("cw0", &interface, None, &keep).expect("a plan");

            assert!(
                forwarded_route("203.0.113.5")
                    .expect("a route")
                    .contains("dev eth0"),
                "before: the main table's default"
            );
            clear_egress_routing(&table)
                .await
                .expect("nothing to clear");
            apply_egress_routing(&table, &plan).await.expect("apply");
            let rules = run("ip", &["rule", "list"]);
            let routes = run("ip", &["route", "show", "table", "5290"]);
            apply_egress_routing(&table, &plan)
                .await
                .expect("apply again");

            assert!(
                rules.contains("5290:\tfrom all iif cw0 lookup 5290"),
                "{rules}"
            );
            assert!(
                routes.contains("default via 198.19.3.1 dev eth1"),
                "{routes}"
            );
            assert!(routes.contains("unreachable default"), "{routes}");
            assert!(routes.contains("throw 100.64.0.0/10"), "{routes}");
            assert_eq!(run("ip", &["rule", "list"]), rules, "applying twice");
            assert_eq!(run("ip", &["route", "show", "table", "5290"]), routes);
            let forwarded = forwarded_route("203.0.113.5").expect("a route");
            assert!(forwarded.contains("via 198.19.3.1 dev eth1"), "{forwarded}");
            let own = run("ip", &["route", "get", "203.0.113.5"]);
            assert!(own.contains("via 198.18.0.1 dev eth0"), "{own}");
            let tailnet = forwarded_route("100.64.0.9").expect("a route");
            assert!(tailnet.contains("dev cw0"), "{tailnet}");

            // The egress interface goes down: the kernel drops the gateway
            // route; forwarded traffic is unreachable, not sent by eth0.
            run("ip", &["link", "set", "dev", "eth1", "down"]);
            let down = forwarded_route("203.0.113.5");
            assert!(
                down.as_ref().is_err_and(|e| e.contains("No route to host")),
                "{down:?}"
            );
            let own = run("ip", &["route", "get", "203.0.113.5"]);
            assert!(own.contains("dev eth0"), "{own}");
            assert!(
                apply_egress_routing(&table, &plan).await.is_err(),
                "no gateway route while eth1 is down"
            );

            // Up again: applying the plan again puts the route back.
            run("ip", &["link", "set", "dev", "eth1", "up"]);
            apply_egress_routing(&table, &plan)
                .await
                .expect("apply after up");
            let forwarded = forwarded_route("203.0.113.5").expect("a route");
            assert!(forwarded.contains("dev eth1"), "{forwarded}");

            clear_egress_routing(&table).await.expect("clear");
            let rules = run("ip", &["rule", "list"]);
            assert!(!rules.contains("5290"), "{rules}");
            let routes = run("ip", &["route", "show", "table", "5290"]);
            assert!(routes.trim().is_empty(), "{routes}");
            assert!(
                forwarded_route("203.0.113.5")
                    .expect("a route")
                    .contains("dev eth0")
            );
        });
    });
}

#[test]
fn an_unknown_interface_or_mac_is_named_and_changes_nothing() {
    in_fresh_netns(|| {
        wire_two_uplinks();
        runtime().block_on(async {
            let table = RouteTable::new().await.expect("rtnetlink");
            let before = run("ip", &["rule", "list"]);

            let by_mac = read_egress_interface(
                &table,
                &EgressSelector::Mac("02:00:00:00:00:01".parse().unwrap()),
            )
            .await
            .expect_err("no such MAC");
            let by_name = read_egress_interface(&table, &EgressSelector::Name("eth9".to_owned()))
                .await
                .expect_err("no such interface");
            let no_v4 = read_egress_interface(&table, &EgressSelector::Name("peer1".to_owned()))
                .await
                .expect("peer1 exists");
            let plan = plan_egress_routing("cw0", &no_v4, None, &BTreeSet::new());

            assert!(
                matches!(by_mac, EgressError::NoSuchMac { .. }),
                "{by_mac:?}"
            );
            assert_eq!(
                by_mac.to_string(),
                "no network interface has MAC address 02:00:00:00:00:01"
            );
            assert!(
                matches!(
                    by_name,
                    EgressError::Lookup(RouteError::NoSuchInterface { .. })
                ),
                "{by_name:?}"
            );
            assert!(
                matches!(plan, Err(EgressError::NoIpv4Address { ref interface }) if interface == "peer1"),
                "{plan:?}"
            );
            assert_eq!(run("ip", &["rule", "list"]), before);
        });
    });
}
