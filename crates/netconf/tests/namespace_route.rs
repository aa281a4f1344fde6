//! A route moved in another, named network namespace: the local cloud's
//! VPC route table.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod netns;

use causeway_netconf::{NamespaceRoute, NamespaceRoutes};
use ipnet::Ipv4Net;
use netns::{NamedNetns, in_fresh_netns, run, runtime};

#[test]
fn a_route_in_a_named_namespace_is_created_and_moved_and_nothing_else_changes() {
    in_fresh_netns(|| {
        let vpc = NamedNetns::new("vpc");
        let name = vpc.name().to_owned();
        vpc.run(
            "ip",
            &[
                "link", "add", "vpc0", "type", "veth", "peer", "name", "vpc1",
            ],
        );
        vpc.run("ip", &["link", "set", "vpc1", "up"]);
        vpc.run("ip", &["addr", "add", "198.19.1.1/24", "dev", "vpc0"]);
        vpc.run("ip", &["link", "set", "vpc0", "up"]);
        let tailnet: Ipv4Net = "100.64.0.0/10".parse().unwrap();
        runtime().block_on(async {
            let routes = NamespaceRoutes::open(&name).await.expect("opens");
            assert_eq!(
                routes.route(tailnet).await.unwrap(),
                NamespaceRoute::Missing
            );
            routes
                .point(tailnet, "198.19.1.2".parse().unwrap())
                .await
                .expect("creates");
            assert_eq!(
                routes.route(tailnet).await.unwrap(),
                NamespaceRoute::Via("198.19.1.2".parse().unwrap())
            );
            routes
                .point(tailnet, "198.19.1.3".parse().unwrap())
                .await
                .expect("replaces");
            assert_eq!(
                routes.route(tailnet).await.unwrap(),
                NamespaceRoute::Via("198.19.1.3".parse().unwrap())
            );
            // A wider route with the same address is another route.
            let wider: Ipv4Net = "100.0.0.0/8".parse().unwrap();
            assert_eq!(routes.route(wider).await.unwrap(), NamespaceRoute::Missing);
            // A gateway the namespace cannot reach is refused, and the
            // route stays.
            let err = routes
                .point(tailnet, "203.0.113.9".parse().unwrap())
                .await
                .expect_err("unreachable gateway");
            assert!(err.to_string().contains(&name), "{err}");
            assert_eq!(
                routes.route(tailnet).await.unwrap(),
                NamespaceRoute::Via("198.19.1.3".parse().unwrap())
            );
        });
        let shown = vpc.run("ip", &["route", "show", "100.64.0.0/10"]);
        assert!(shown.contains("via 198.19.1.3 dev vpc0"), "{shown}");
        // The calling thread's own namespace is untouched.
        let own = run("ip", &["route", "show", "100.64.0.0/10"]);
        assert!(own.trim().is_empty(), "{own}");
    });
}

#[test]
fn a_missing_namespace_is_named_in_the_error() {
    runtime().block_on(async {
        let err = NamespaceRoutes::open("cwt-no-such-namespace")
            .await
            .expect_err("no such namespace");
        let text = format!("{err:#}");
        assert!(text.contains("/run/netns/cwt-no-such-namespace"), "{text}");
    });
}
