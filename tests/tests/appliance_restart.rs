//! A registered node keeps its identity in its state directory: after a
//! restart it rejoins without reading its auth key again.

use std::time::Duration;

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, VPC_SUBNET, WAIT, has_kernel_route, peer, wait_until};

#[test]
fn appliance_restart_rejoins_without_a_new_auth_key() {
    let t = TestDeployment::deploy();
    let before = t.status(Node::Client).expect("client status");
    let node_id = before["node_id"].clone();
    let addresses = before["addresses"].clone();
    assert!(node_id.is_u64(), "{before}");
    let nodes_before = t.nodes().len();
    assert_eq!(nodes_before, 2, "router and client");

    let links = t.run_in(Site::Cli, &["ip", "-o", "link", "show", "cw0"]);
    assert!(links.success(), "no cw0 while running: {links}");
    let how = t.process("client").stop(Duration::from_secs(10));
    assert_eq!(
        format!("{how:?}"),
        "Terminated",
        "the client ignored SIGTERM"
    );
    let links = t
        .run_in(Site::Cli, &["ip", "-o", "link", "show"])
        .expect_success();
    assert!(
        !links.stdout.contains("cw0"),
        "cw0 left after SIGTERM: {links}"
    );
    let routes = t
        .run_in(Site::Cli, &["ip", "route", "show"])
        .expect_success();
    assert!(
        !routes.stdout.contains(VPC_SUBNET) && !routes.stdout.contains("cw0"),
        "routes left after SIGTERM: {routes}"
    );
    let refused = t.curl(Site::Cli, causeway_e2e::VPC_URL, 2);
    assert!(
        !refused.success(),
        "the VPC answered with the client stopped: {refused}"
    );

    // The key is read only for the first registration.
    std::fs::write(
        t.dep().paths().node_auth_key(Node::Client),
        "garbage, not a key\n",
    )
    .expect("overwriting the client's auth key");
    t.respawn_node(Node::Client);
    let after = wait_until(
        WAIT,
        "the restarted client to run with the VPC route",
        || {
            let s = t.status(Node::Client)?;
            anyhow::ensure!(
                s["state"] == "running" && has_kernel_route(&s, VPC_SUBNET),
                "{s}"
            );
            peer(&s, "router")?;
            Ok(s)
        },
    );
    assert_eq!(after["node_id"], node_id, "the client registered anew");
    assert_eq!(after["addresses"], addresses);
    wait_until(
        Duration::from_secs(10),
        "the VPC page after the restart",
        || t.fetch_vpc_page(Site::Cli),
    );
    assert_eq!(
        t.nodes().len(),
        nodes_before,
        "node count changed: {:?}",
        t.nodes()
    );
    t.finish();
}
