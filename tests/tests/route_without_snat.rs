//! A subnet route with `snat = false`: the router forwards without
//! masquerading, so VPC hosts see the client's tailnet address and need a
//! return route to the tailnet through the router. With the default
//! (`snat` on) they see the router's VPC address instead.

use std::time::Duration;

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{
    TestDeployment, VPC_SUBNET, WAIT, has_kernel_route, nft_rule_masquerades, tailnet_ipv4,
    wait_until,
};

/// The router's address inside the VPC.
const ROUTER_VPC_ADDR: &str = "198.19.1.1";

/// The tailnet's IPv4 range, routed back through the router.
const TAILNET_V4: &str = "100.64.0.0/10";

#[test]
fn route_without_snat_keeps_client_addresses() {
    let t = TestDeployment::deploy();
    let client = t.status(Node::Client).expect("client status");
    let client_ip = tailnet_ipv4(&client).expect("the client's tailnet address");

    // Default: masqueraded, the server sees the router.
    let rules = t.causeway_nft_rules(Site::Rtr);
    assert!(
        rules
            .iter()
            .any(|r| nft_rule_masquerades(r) && mentions_vpc_subnet(r)),
        "snat on, but no masquerade rule for {VPC_SUBNET}: {rules:#?}"
    );
    let seen = source_seen_by_vpc(&t, "snat-on");
    assert_eq!(
        seen, ROUTER_VPC_ADDR,
        "with snat on the VPC must see the router"
    );

    // Switch the route to snat = false.
    // The provisioner writes `snat = true` into the route entry.
    t.restart_node_with_config(Node::Router, |old| {
        let new = old.replace("snat = true\n", "snat = false\n");
        assert_ne!(new, old, "no `snat = true` in the route entry:\n{old}");
        new
    });
    let router = t.status(Node::Router).expect("router status");
    assert_eq!(
        router["primary_routes"],
        serde_json::json!([VPC_SUBNET]),
        "{router}"
    );
    let rules = t.causeway_nft_rules(Site::Rtr);
    let masquerading: Vec<&serde_json::Value> =
        rules.iter().filter(|r| nft_rule_masquerades(r)).collect();
    assert!(
        masquerading.is_empty(),
        "snat = false, yet the router masquerades: {masquerading:#?}"
    );
    assert!(
        rules.iter().any(|r| r["chain"] == "forward"),
        "the forward rules are missing from the table: {rules:#?}"
    );

    // Without a return route the VPC's replies to 100.64/10 go nowhere:
    // proof that the source address is no longer rewritten.
    wait_until(WAIT, "the client to have the VPC route again", || {
        let s = t.status(Node::Client)?;
        anyhow::ensure!(has_kernel_route(&s, VPC_SUBNET), "{s}");
        Ok(())
    });
    let refused = t.curl(
        Site::Cli,
        &format!("{}?probe=no-return-route", causeway_e2e::VPC_URL),
        3,
    );
    assert!(
        !refused.success(),
        "answered without a return route, so the source was rewritten: {refused}"
    );

    t.run_in(
        Site::Vpc,
        &["ip", "route", "add", TAILNET_V4, "via", ROUTER_VPC_ADDR],
    )
    .expect_success();
    let seen = source_seen_by_vpc(&t, "snat-off");
    assert_eq!(
        seen, client_ip,
        "with snat = false the VPC must see the client's tailnet address"
    );
    t.finish();
}

/// Whether an nftables JSON rule matches 198.19.1.0/24.
fn mentions_vpc_subnet(rule: &serde_json::Value) -> bool {
    let text = rule.to_string();
    text.contains("\"198.19.1.0\"") && text.contains("\"len\":24")
}

/// Fetches `/?probe=PROBE` from the client and returns the peer address
/// the VPC's HTTP server logged for that request.
fn source_seen_by_vpc(t: &TestDeployment, probe: &str) -> String {
    let url = format!("{}?probe={probe}", causeway_e2e::VPC_URL);
    wait_until(WAIT, &format!("the VPC page ({probe})"), || {
        let ran = t.curl(Site::Cli, &url, 3);
        anyhow::ensure!(ran.success(), "{ran}");
        anyhow::ensure!(ran.stdout.contains(causeway_e2e::HTTP_GREETING), "{ran}");
        Ok(())
    });
    let log = t.dep().paths().http_log();
    let request = format!("\"GET /?probe={probe} ");
    wait_until(
        Duration::from_secs(5),
        &format!("the {probe} request in {}", log.display()),
        || {
            let text = std::fs::read_to_string(&log)?;
            let sources: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(&request) && l.contains("\" 200 "))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            // A retried fetch logs more than once; every line must agree.
            match sources.split_first() {
                Some((first, rest)) if rest.iter().all(|s| s == first) => Ok((*first).to_owned()),
                _ => anyhow::bail!("no single source among {sources:?} in:\n{text}"),
            }
        },
    )
}
