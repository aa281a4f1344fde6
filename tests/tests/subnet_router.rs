//! The subnet router end to end: a client reaches PostgreSQL and HTTP in
//! the private VPC only through the router, and only while the route is
//! approved.

use std::time::Duration;

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{
    DB_GREETING, TestDeployment, VPC_SUBNET, WAIT, has_kernel_route, peer, u64_field, wait_until,
};

#[test]
fn client_reaches_postgres_and_http_through_the_router() {
    let t = TestDeployment::deploy();

    // The VPC has no route to the client: the tunnel is the only path.
    let vpc_routes = t
        .run_in(Site::Vpc, &["ip", "route", "show"])
        .expect_success();
    assert!(
        !vpc_routes.stdout.contains("198.18.") && !vpc_routes.stdout.contains("default"),
        "the VPC namespace must only know its own subnet: {vpc_routes}"
    );

    let row = t.dep().query_db(Site::Cli).expect("psql from the client");
    assert_eq!(row, DB_GREETING);
    let page = t.fetch_vpc_page(Site::Cli).expect("HTTP from the client");
    assert!(
        page.contains(&format!("(deployment {})", t.name())),
        "{page}"
    );

    let status = wait_until(
        WAIT,
        "the client's router peer to show a handshake and traffic",
        || {
            let s = t.status(Node::Client)?;
            let router = peer(&s, "router")?.clone();
            let handshake = u64_field(&router, "last_handshake_seconds")?;
            let (rx, tx) = (
                u64_field(&router, "rx_bytes")?,
                u64_field(&router, "tx_bytes")?,
            );
            anyhow::ensure!(rx > 0 && tx > 0, "rx {rx} tx {tx}");
            anyhow::ensure!(handshake < 180, "handshake {handshake} s ago");
            Ok(s)
        },
    );
    assert_eq!(status["state"], "running", "{status}");
    assert!(has_kernel_route(&status, VPC_SUBNET), "{status}");
    let router = peer(&status, "router").expect("router peer");
    assert_eq!(router["endpoint"], "198.18.0.3:41641", "{router}");
    let allowed: Vec<&str> = router["allowed_ips"]
        .as_array()
        .expect("allowed_ips")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(allowed.contains(&VPC_SUBNET), "{router}");

    // The router's metrics say the same as its status: primary for the VPC
    // subnet, bytes exchanged with the client, control connected.
    let metrics = t
        .curl(Site::Rtr, "http://127.0.0.1:9100/metrics", 5)
        .expect_success()
        .stdout;
    let value = |prefix: &str| -> Option<u64> {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        value("causeway_route_primary{prefix=\"198.19.1.0/24\"}"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(value("causeway_control_connected "), Some(1), "{metrics}");
    assert_eq!(
        value("causeway_node_state{state=\"running\"}"),
        Some(1),
        "{metrics}"
    );
    let client_rx = value("causeway_peer_rx_bytes_total{peer=\"client\"");
    assert!(client_rx.is_some_and(|n| n > 0), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // The router masquerades: its nftables table exists while it runs ...
    let tables = t
        .run_in(Site::Rtr, &["nft", "list", "tables"])
        .expect_success();
    assert!(tables.stdout.contains("table inet causeway"), "{tables}");
    // ... and SIGTERM removes the table and the TUN device.
    let rec = t.process("router");
    let how = rec.stop(Duration::from_secs(10));
    assert_eq!(
        format!("{how:?}"),
        "Terminated",
        "the router ignored SIGTERM"
    );
    let tables = t
        .run_in(Site::Rtr, &["nft", "list", "tables"])
        .expect_success();
    assert!(
        !tables.stdout.contains("causeway"),
        "table left after SIGTERM: {tables}"
    );
    let links = t
        .run_in(Site::Rtr, &["ip", "-o", "link", "show"])
        .expect_success();
    assert!(
        !links.stdout.contains("cw0"),
        "TUN left after SIGTERM: {links}"
    );

    let pids: Vec<i32> = t.state().processes.values().map(|p| p.pid).collect();
    let name = t.name();
    t.finish();
    for pid in pids {
        assert!(
            !causeway_e2e::pid_alive(pid),
            "pid {pid} of {name} still runs"
        );
    }
    assert!(causeway_e2e::namespaces_with_prefix(&format!("cw-{name}-")).is_empty());
}

#[test]
fn unapproved_route_is_unreachable() {
    let t = TestDeployment::deploy();
    t.fetch_vpc_page(Site::Cli).expect("reachable after deploy");

    let out = t
        .admin(&["routes", "unapprove", "router", VPC_SUBNET])
        .expect_success();
    assert!(out.stdout.contains("unapproved"), "{out}");
    wait_until(
        Duration::from_secs(10),
        "the client to drop the VPC route",
        || {
            let s = t.status(Node::Client)?;
            anyhow::ensure!(
                !has_kernel_route(&s, VPC_SUBNET),
                "kernel_routes still has it: {s}"
            );
            Ok(())
        },
    );
    let refused = t.curl(Site::Cli, causeway_e2e::VPC_URL, 3);
    assert!(
        !refused.success(),
        "the VPC answered without an approved route: {refused}"
    );
    let routes = t
        .run_in(Site::Cli, &["ip", "route", "show"])
        .expect_success();
    assert!(!routes.stdout.contains("198.19.1.0/24"), "{routes}");
    let listed = t.admin_json(&["routes", "list"]);
    let router = listed
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "router"))
        .unwrap_or_else(|| panic!("no router in {listed}"));
    assert_eq!(router["approved"], serde_json::json!([]), "{router}");
    assert_eq!(
        router["advertised"],
        serde_json::json!([VPC_SUBNET]),
        "{router}"
    );

    t.admin(&["routes", "approve", "router", VPC_SUBNET])
        .expect_success();
    wait_until(
        Duration::from_secs(10),
        "the VPC to be reachable again",
        || t.fetch_vpc_page(Site::Cli),
    );
    t.finish();
}

/// The router registers with an untagged key, so the policy's
/// `autoApprovers` does not apply: the route stays unreachable until an
/// admin approves it.
#[test]
fn untagged_router_needs_admin_approval() {
    // Control only: it writes both nodes' configs and (tagged) keys.
    let mut t = TestDeployment::deploy_with(|o| {
        o.start_router = false;
        o.start_client = false;
        o.verify = false;
    });
    let untagged = t.dep().create_auth_key(&[]).expect("an untagged key");
    untagged
        .write(&t.dep().paths().node_auth_key(Node::Router))
        .expect("replacing the router's key");
    t.redeploy_with(|o| {
        o.start_router = true;
        o.verify = false;
    });
    // The client, started by hand: the provisioner would wait for a route.
    t.respawn_node(Node::Client);
    wait_until(WAIT, "the client to run with the router as peer", || {
        let s = t.status(Node::Client)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        peer(&s, "router")?;
        Ok(())
    });

    let listed = t.admin_json(&["routes", "list"]);
    let router = listed
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "router"))
        .unwrap_or_else(|| panic!("no router in {listed}"));
    assert_eq!(
        router["advertised"],
        serde_json::json!([VPC_SUBNET]),
        "{router}"
    );
    assert_eq!(
        router["approved"],
        serde_json::json!([]),
        "auto-approved without tag: {router}"
    );
    let s = t.status(Node::Client).expect("client status");
    assert!(!has_kernel_route(&s, VPC_SUBNET), "{s}");
    let refused = t.curl(Site::Cli, causeway_e2e::VPC_URL, 3);
    assert!(!refused.success(), "reachable without approval: {refused}");

    t.admin(&["routes", "approve", "router", VPC_SUBNET])
        .expect_success();
    wait_until(WAIT, "the VPC to be reachable after approval", || {
        t.fetch_vpc_page(Site::Cli)
    });
    assert_eq!(t.dep().query_db(Site::Cli).expect("psql"), DB_GREETING);
    t.finish();
}
