//! An expired node key is rotated by the node itself, signed by its machine
//! key: no auth key, same node id and addresses, and the data plane works
//! under the new key.

use std::time::{Duration, Instant};

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, peer, wait_until};
use serde_json::Value;

#[test]
fn expired_node_key_is_rotated_without_an_auth_key() {
    let t = TestDeployment::deploy();
    let before = t.status(Node::Client).expect("client status");
    let node_id = before["node_id"].clone();
    let old_key = before["node_key"].clone();
    assert!(node_id.is_u64(), "{before}");
    assert!(old_key.is_string(), "{before}");
    let nodes_before = t.nodes();
    assert_eq!(nodes_before.len(), 2, "router and client: {nodes_before:?}");

    // A rotation must not need the auth key.
    std::fs::write(
        t.dep().paths().node_auth_key(Node::Client),
        "garbage, not a key\n",
    )
    .expect("overwriting the client's auth key");

    let id = node_id.to_string();
    let expired = t.admin_json(&["nodes", "expire", &id]);
    assert_eq!(expired["id"], node_id, "{expired}");
    assert_eq!(expired["expired"], true, "{expired}");
    let started = Instant::now();

    let after = wait_until(
        Duration::from_secs(10),
        "the client to run under a new node key",
        || {
            let s = t.status(Node::Client)?;
            anyhow::ensure!(
                s["node_key"] != old_key && s["node_key"].is_string() && s["state"] == "running",
                "{s}"
            );
            Ok(s)
        },
    );
    let rotated_in = started.elapsed();
    let new_key = after["node_key"].clone();
    assert_eq!(after["node_id"], node_id, "the client registered anew");
    assert_eq!(after["addresses"], before["addresses"], "{after}");

    // Control and the router know the new key.
    let nodes = t.nodes();
    assert_eq!(
        nodes.len(),
        nodes_before.len(),
        "node count changed: {nodes:?}"
    );
    let record = client_record(&nodes, &node_id);
    assert_eq!(record["expired"], false, "{record}");
    assert_eq!(record["id"], node_id, "{record}");
    wait_until(
        Duration::from_secs(10),
        "the router's peer entry for the client to carry the new key",
        || {
            let s = t.status(Node::Router)?;
            let p = peer(&s, "client")?;
            anyhow::ensure!(p["node_key"] == new_key, "{p}");
            Ok(())
        },
    );

    wait_until(
        Duration::from_secs(10),
        "the VPC page under the new key",
        || t.fetch_vpc_page(Site::Cli),
    );
    // Still the same process: it rotated, it did not restart.
    assert!(t.process("client").is_alive(), "the client exited");
    eprintln!("rotated {:.1} s after the expiry", rotated_in.as_secs_f64());
    t.finish();
}

fn client_record<'a>(nodes: &'a [Value], id: &Value) -> &'a Value {
    nodes
        .iter()
        .find(|n| n["id"] == *id)
        .unwrap_or_else(|| panic!("node {id} is not listed: {nodes:?}"))
}
