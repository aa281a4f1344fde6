//! Subnet-router health probes against real links and a real HTTP server:
//! the router reports its route healthy while its TCP probe connects, and
//! unhealthy with a reason soon after its VPC link loses carrier; control
//! shows both and, with no other router, keeps the route where it is.

use std::time::Instant;

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, VPC_SUBNET, WAIT, peer, rewrite_file, wait_until};
use serde_json::Value;

/// The router's health entry for the VPC subnet in `appliance status`.
fn vpc_health(t: &TestDeployment) -> anyhow::Result<Value> {
    let status = t.status(Node::Router)?;
    status["route_health"]
        .as_array()
        .and_then(|all| all.iter().find(|h| h["prefix"] == VPC_SUBNET))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no health for {VPC_SUBNET} yet: {status}"))
}

/// The router's row in `appliance admin routes list --json`.
fn router_row(t: &TestDeployment) -> Value {
    row_of(t, "router")
}

/// Router `name`'s row in `appliance admin routes list --json`.
fn row_of(t: &TestDeployment, name: &str) -> Value {
    find_row(t, name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The same, or why there is none yet.
fn find_row(t: &TestDeployment, name: &str) -> anyhow::Result<Value> {
    let routes = t.admin_json(&["routes", "list"]);
    routes
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == name))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no router {name} in {routes}"))
}

/// The router's config with its route's probe (the deploy's ICMP probe of
/// the VPC host) replaced by a TCP connect to `target`.
fn with_tcp_probe(text: &str, target: &str) -> String {
    let icmp = "probe_icmp = \"198.19.1.10\"\n";
    assert!(text.contains(icmp), "the deploy's probe is gone: {text}");
    text.replacen(icmp, &format!("probe_tcp = \"{target}\"\n"), 1)
}

#[test]
fn a_router_reports_its_vpc_link_losing_carrier_and_recovering() {
    let t = TestDeployment::deploy();
    t.restart_node_with_config(Node::Router, |text| {
        assert!(text.contains("[[subnet_router.routes]]"), "{text}");
        let text = text.replacen(
            "[[subnet_router.routes]]",
            "[subnet_router]\npriority = 3\n\n[[subnet_router.routes]]",
            1,
        );
        with_tcp_probe(&text, "198.19.1.10:80")
    });

    // The TCP probe to the VPC's HTTP server connects: healthy, and control
    // shows the priority and the primary.
    let health = wait_until(WAIT, "the router's first health report", || vpc_health(&t));
    assert_eq!(health["healthy"], true, "{health}");
    let row = wait_until(WAIT, "control to show the router's priority", || {
        let row = router_row(&t);
        anyhow::ensure!(row["priority"] == 3, "{row}");
        Ok(row)
    });
    assert_eq!(row["primary"], serde_json::json!([VPC_SUBNET]), "{row}");
    assert_eq!(row["health"][0]["healthy"], true, "{row}");
    let table = t.admin(&["routes", "list"]).expect_success().stdout;
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("PRIORITY") && h.contains("UNHEALTHY")),
        "{table}"
    );

    // The VPC end of the router's link goes down: the router's vpc0 loses
    // carrier and the forwarding-path check reports it.
    let cut = Instant::now();
    t.run_in(Site::Vpc, &["ip", "link", "set", "eth0", "down"])
        .expect_success();
    let health = wait_until(WAIT, "the router to report the route unhealthy", || {
        let h = vpc_health(&t)?;
        anyhow::ensure!(h["healthy"] == false, "{h}");
        Ok(h)
    });
    let detected = cut.elapsed();
    eprintln!("route_health: carrier loss reported unhealthy after {detected:?}");
    assert_eq!(
        health["reason"], "vpc0 (towards 198.19.1.10) has no carrier",
        "{health}"
    );
    let row = wait_until(WAIT, "control to show the route unhealthy", || {
        let row = router_row(&t);
        anyhow::ensure!(row["unhealthy"] == serde_json::json!([VPC_SUBNET]), "{row}");
        Ok(row)
    });
    // The only router keeps the route: something is better than nothing.
    assert_eq!(row["primary"], serde_json::json!([VPC_SUBNET]), "{row}");
    assert_eq!(row["health"][0]["standing"], "unhealthy", "{row}");

    // The link comes back: healthy again after two good rounds.
    t.run_in(Site::Vpc, &["ip", "link", "set", "eth0", "up"])
        .expect_success();
    let back = Instant::now();
    wait_until(WAIT, "the route to be healthy again", || {
        let h = vpc_health(&t)?;
        anyhow::ensure!(h["healthy"] == true, "{h}");
        Ok(())
    });
    eprintln!("route_health: recovery reported after {:?}", back.elapsed());
    wait_until(WAIT, "control to show the route healthy", || {
        let row = router_row(&t);
        anyhow::ensure!(row["unhealthy"] == serde_json::json!([]), "{row}");
        Ok(())
    });
    t.finish();
}

#[test]
fn an_unreachable_probe_target_makes_the_route_unhealthy() {
    let t = TestDeployment::deploy();
    // Nothing listens on port 9 of the VPC host: connections are refused.
    t.restart_node_with_config(Node::Router, |text| with_tcp_probe(text, "198.19.1.10:9"));
    let health = wait_until(WAIT, "the router to report the route unhealthy", || {
        let h = vpc_health(&t)?;
        anyhow::ensure!(h["healthy"] == false, "{h}");
        Ok(h)
    });
    let reason = health["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("TCP connect to 198.19.1.10:9: Connection refused"),
        "{health}"
    );
    t.finish();
}

#[test]
fn a_standby_takes_over_from_a_router_whose_vpc_link_fails_and_the_client_follows() {
    let mut t = TestDeployment::deploy();
    t.restart_control_with_config(|text| {
        text.replacen("[control]\n", "[control]\nroute_hold_down = \"2s\"\n", 1)
    });
    // A second router for the same prefix, in its own namespace; its "LAN"
    // is a veth pair that ends there, so its forwarding path is up (no traffic goes
    // through it here: this is about control and the client's netmap).
    let ns = t.add_bridge_namespace("r2", "198.18.0.9/24");
    for args in [
        vec![
            "link", "add", "vpc0", "type", "veth", "peer", "name", "vpc0p",
        ],
        vec!["addr", "add", "198.19.1.2/24", "dev", "vpc0"],
        vec!["link", "set", "vpc0p", "up"],
        vec!["link", "set", "vpc0", "up"],
    ] {
        ns.ip(&args)
            .unwrap_or_else(|e| panic!("r2's stand-in LAN: {e:#}"));
    }
    let created = t.admin_json(&["keys", "create"]);
    let key = created["key"].as_str().expect("a key");
    let endpoint = "198.18.0.9:41641".parse().expect("a socket address");
    let standby = t.write_extra_node("router2", key, endpoint, "cw0", false);
    rewrite_file(&standby.config, |text| {
        format!("{text}\n[subnet_router]\nroutes = [{{ prefix = \"{VPC_SUBNET}\" }}]\n")
    });
    t.start_extra_node(&standby, &ns);
    wait_until(WAIT, "router2 to connect and advertise", || {
        let row = find_row(&t, "router2")?;
        anyhow::ensure!(
            row["online"] == true && row["advertised"] == serde_json::json!([VPC_SUBNET]),
            "{row}"
        );
        Ok(())
    });
    t.admin(&["routes", "approve", "router2", VPC_SUBNET])
        .expect_success();
    wait_until(WAIT, "router2 to be an eligible standby", || {
        let row = row_of(&t, "router2");
        anyhow::ensure!(row["health"][0]["standing"] == "eligible", "{row}");
        anyhow::ensure!(row["standby"] == serde_json::json!([VPC_SUBNET]), "{row}");
        Ok(())
    });
    assert_eq!(router_row(&t)["primary"], serde_json::json!([VPC_SUBNET]));

    let cut = Instant::now();
    t.run_in(Site::Vpc, &["ip", "link", "set", "eth0", "down"])
        .expect_success();
    let client = wait_until(WAIT, "the client to route the VPC through router2", || {
        let s = t.status(Node::Client)?;
        let r2 = peer(&s, "router2")?;
        anyhow::ensure!(
            r2["allowed_ips"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == VPC_SUBNET)),
            "{r2}"
        );
        Ok(s)
    });
    eprintln!(
        "route_health: the client's netmap moved the route after {:?}",
        cut.elapsed()
    );
    let old = peer(&client, "router").expect("router peer");
    assert!(
        !old["allowed_ips"]
            .as_array()
            .expect("allowed_ips")
            .iter()
            .any(|p| p == VPC_SUBNET),
        "one primary: {old}"
    );
    let row = router_row(&t);
    assert_eq!(row["unhealthy"], serde_json::json!([VPC_SUBNET]), "{row}");
    assert_eq!(row["standby"], serde_json::json!([VPC_SUBNET]), "{row}");

    // The link comes back: the old router is healthy again, past its
    // hold-down, and still the standby (the route does not move back).
    t.run_in(Site::Vpc, &["ip", "link", "set", "eth0", "up"])
        .expect_success();
    wait_until(WAIT, "the old router to be an eligible standby", || {
        let row = router_row(&t);
        anyhow::ensure!(row["health"][0]["standing"] == "eligible", "{row}");
        Ok(())
    });
    assert_eq!(
        row_of(&t, "router2")["primary"],
        serde_json::json!([VPC_SUBNET])
    );
    assert_eq!(router_row(&t)["primary"], serde_json::json!([]));
    t.finish();
}
