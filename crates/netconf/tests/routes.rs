//! Routes, addresses and forwarding against the real kernel, each test in its own network namespace.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod netns;

use std::collections::BTreeSet;

use causeway_netconf::{RouteChanges, RouteError, RouteTable, enable_forwarding, sync_routes};
use ipnet::IpNet;
use netns::{in_fresh_netns, run, runtime};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A persistent TUN device made by iproute2 (no kernel dummy driver needed).
fn make_tun(name: &str) {
    run("ip", &["tuntap", "add", "dev", name, "mode", "tun"]);
}

#[test]
fn routes_are_added_listed_synced_and_removed() {
    in_fresh_netns(|| {
        make_tun("cw0");
        runtime().block_on(async {
            let table = RouteTable::new().await.expect("rtnetlink");
            let ifindex = table.interface_index("cw0").await.expect("cw0 exists");
            table
                .add_address(ifindex, net("100.64.0.1/32"))
                .await
                .expect("v4 address");
            table
                .add_address(ifindex, net("fd7a:115c:a1e0::1/128"))
                .await
                .expect("v6 address");
            table
                .add_address(ifindex, net("100.64.0.1/32"))
                .await
                .expect("address again");
            table.set_up(ifindex).await.expect("up");

            table
                .add(net("198.19.1.0/24"), ifindex)
                .await
                .expect("v4 route");
            table
                .add(net("fd7a:115c:a1e0:1::/64"), ifindex)
                .await
                .expect("v6 route");
            table
                .add(net("198.19.1.0/24"), ifindex)
                .await
                .expect("adding twice is fine");

            let listed: BTreeSet<IpNet> = table.list(ifindex).await.unwrap().into_iter().collect();
            assert!(listed.contains(&net("198.19.1.0/24")), "{listed:?}");
            assert!(listed.contains(&net("fd7a:115c:a1e0:1::/64")), "{listed:?}");
            assert!(
                listed.iter().all(|p| !p.to_string().starts_with("fe80")),
                "{listed:?}"
            );
            let ip_route = run("ip", &["route", "show", "dev", "cw0"]);
            assert!(ip_route.contains("198.19.1.0/24"), "{ip_route}");

            let wanted: BTreeSet<IpNet> = [
                net("198.19.2.0/24"),
                net("fd7a:115c:a1e0:1::/64"),
                net("fd00:5::/64"),
            ]
            .into();
            let changes = sync_routes(&table, ifindex, &wanted).await.expect("sync");

            assert_eq!(
                changes,
                RouteChanges {
                    added: vec![net("198.19.2.0/24"), net("fd00:5::/64")],
                    removed: vec![net("198.19.1.0/24")],
                }
            );
            let after: BTreeSet<IpNet> = table.list(ifindex).await.unwrap().into_iter().collect();
            for prefix in &wanted {
                assert!(after.contains(prefix), "{prefix} missing from {after:?}");
            }
            assert!(!after.contains(&net("198.19.1.0/24")), "{after:?}");
            // The kernel's connected route for our own /128 survives the sync.
            assert!(after.contains(&net("fd7a:115c:a1e0::1/128")), "{after:?}");

            let again = sync_routes(&table, ifindex, &wanted)
                .await
                .expect("second sync");
            assert_eq!(again, RouteChanges::default());

            table
                .remove(net("198.19.2.0/24"), ifindex)
                .await
                .expect("remove");
            table
                .remove(net("198.19.2.0/24"), ifindex)
                .await
                .expect("removing twice is fine");
            let ip_route = run("ip", &["route", "show", "dev", "cw0"]);
            assert!(!ip_route.contains("198.19.2.0/24"), "{ip_route}");
        });
    });
}

#[test]
fn a_prefix_routed_through_another_interface_is_not_claimed() {
    in_fresh_netns(|| {
        make_tun("cw0");
        make_tun("cw1");
        runtime().block_on(async {
            let table = RouteTable::new().await.expect("rtnetlink");
            let cw0 = table.interface_index("cw0").await.unwrap();
            let cw1 = table.interface_index("cw1").await.unwrap();
            table.set_up(cw0).await.unwrap();
            table.set_up(cw1).await.unwrap();
            table
                .add(net("198.18.7.0/24"), cw1)
                .await
                .expect("route via cw1");

            let error = table
                .add(net("198.18.7.0/24"), cw0)
                .await
                .expect_err("taken by cw1");

            assert!(
                matches!(error, RouteError::RoutedElsewhere { .. }),
                "{error:?}"
            );
            assert_eq!(table.list(cw0).await.unwrap(), Vec::<IpNet>::new());
        });
    });
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    in_fresh_netns(|| {
        make_tun("cw0");
        runtime().block_on(async {
            let table = RouteTable::new().await.expect("rtnetlink");
            let missing = table
                .interface_index("nope0")
                .await
                .expect_err("no such interface");
            assert!(
                matches!(missing, RouteError::NoSuchInterface { .. }),
                "{missing:?}"
            );
            let long = table
                .interface_index("a-name-longer-than-ifnamsiz")
                .await
                .expect_err("too long");
            assert!(
                matches!(long, RouteError::NoSuchInterface { .. }),
                "{long:?}"
            );

            let ifindex = table.interface_index("cw0").await.unwrap();
            table.set_up(ifindex).await.unwrap();
            let wanted: BTreeSet<IpNet> = [net("198.19.3.0/24"), net("198.19.4.1/24")].into();

            let error = sync_routes(&table, ifindex, &wanted)
                .await
                .expect_err("host bits");

            assert!(matches!(error, RouteError::NotANetwork { .. }), "{error:?}");
            assert_eq!(table.list(ifindex).await.unwrap(), Vec::<IpNet>::new());
        });
    });
}

#[test]
fn forwarding_is_enabled_in_the_namespace() {
    in_fresh_netns(|| {
        let read = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_owned();
        assert_eq!(
            read("/proc/sys/net/ipv4/ip_forward"),
            "0",
            "a fresh namespace starts with forwarding off"
        );

        let forwarding = enable_forwarding(true, true).expect("enable");

        assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), "1");
        assert_eq!(read("/proc/sys/net/ipv6/conf/all/forwarding"), "1");
        forwarding.restore().expect("restore");
        assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), "0");
        assert_eq!(read("/proc/sys/net/ipv6/conf/all/forwarding"), "0");
    });
}

#[test]
fn route_lookups_and_link_state_follow_the_carrier() {
    in_fresh_netns(|| {
        run(
            "ip",
            &[
                "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
            ],
        );
        run("ip", &["addr", "add", "198.19.1.1/24", "dev", "lan0"]);
        run("ip", &["link", "set", "lan0", "up"]);
        run("ip", &["link", "set", "lan1", "up"]);
        runtime().block_on(async {
            let table = RouteTable::new().await.expect("rtnetlink");
            let lan0 = table.interface_index("lan0").await.expect("lan0 exists");
            let host = "198.19.1.10".parse().unwrap();
            assert_eq!(table.route_to(host).await.expect("lookup"), Some(lan0));
            // Our own address: the interface holding it, not loopback.
            let own = "198.19.1.1".parse().unwrap();
            assert_eq!(table.route_to(own).await.expect("lookup"), Some(lan0));
            // No default route in a fresh namespace.
            let far = "10.9.9.9".parse().unwrap();
            assert_eq!(table.route_to(far).await.expect("lookup"), None);
            let state = table.link_state(lan0).await.expect("state");
            assert_eq!(
                (state.name.as_str(), state.up, state.running),
                ("lan0", true, true)
            );
            // The far end goes down: lan0 stays up but loses carrier.
            run("ip", &["link", "set", "lan1", "down"]);
            let state = table.link_state(lan0).await.expect("state");
            assert_eq!((state.up, state.running), (true, false));
            // Down on our side: the connected route goes with it.
            run("ip", &["link", "set", "lan0", "down"]);
            assert!(!table.link_state(lan0).await.expect("state").up);
            assert_eq!(table.route_to(host).await.expect("lookup"), None);
        });
    });
}
