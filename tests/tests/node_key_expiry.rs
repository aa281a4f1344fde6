//! An expired node key is rotated by the node itself, signed by its machine
//! key: no auth key, same node id and addresses, and the data plane works
//! under the new key. A rotation control does not answer keeps the old key
//! and is retried until control is back.

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

#[test]
fn a_rotation_control_does_not_answer_keeps_the_old_key_and_completes_later() {
    let t = TestDeployment::deploy();
    let before = t.status(Node::Client).expect("client status");
    let node_id = before["node_id"].clone();
    let old_key = before["node_key"].clone();
    assert!(old_key.is_string(), "{before}");

    // Control becomes unreachable for new connections from the client,
    // while the open map stream stays up to deliver the expiry.
    t.block_new_control_connections(Site::Cli, true);
    let id = node_id.to_string();
    let expired = t.admin_json(&["nodes", "expire", &id]);
    assert_eq!(expired["expired"], true, "{expired}");

    // The rotation fails and is retried; the old key stays in use.
    let retrying = wait_until(
        Duration::from_secs(10),
        "the client to retry the rotation",
        || {
            let s = t.status(Node::Client)?;
            anyhow::ensure!(
                s["node_key"] != old_key || s["state"] == "rotating_key",
                "{s}"
            );
            Ok(s)
        },
    );
    assert_eq!(
        retrying["node_key"], old_key,
        "the client switched to a key control has not accepted: {retrying}"
    );
    let session = retrying["session"].as_str().unwrap_or_default();
    assert!(
        session.starts_with("rotating_key (retry in ") && session.contains("control unreachable"),
        "status should say what is retried and why: {retrying}"
    );
    eprintln!("session while control was unreachable: {session}");
    // Several retries later, still the same process and the old key.
    std::thread::sleep(Duration::from_secs(6));
    let still = t.status(Node::Client).expect("client status while blocked");
    assert_eq!(still["node_key"], old_key, "{still}");
    assert_eq!(still["state"], "rotating_key", "{still}");
    assert!(t.process("client").is_alive(), "the client exited");

    // Control is back: the rotation completes and the node runs under the
    // new key, with the same id and addresses.
    t.block_new_control_connections(Site::Cli, false);
    let unblocked = Instant::now();
    let after = wait_until(
        Duration::from_secs(15),
        "the client to run under a new node key",
        || {
            let s = t.status(Node::Client)?;
            anyhow::ensure!(s["node_key"] != old_key && s["state"] == "running", "{s}");
            Ok(s)
        },
    );
    let recovered_in = unblocked.elapsed();
    assert_eq!(after["node_id"], node_id, "{after}");
    assert_eq!(after["addresses"], before["addresses"], "{after}");
    let record = client_record(&t.nodes(), &node_id).clone();
    assert_eq!(record["expired"], false, "{record}");
    wait_until(
        Duration::from_secs(10),
        "the VPC page under the new key",
        || t.fetch_vpc_page(Site::Cli),
    );
    assert!(t.process("client").is_alive(), "the client exited");
    eprintln!(
        "rotation completed {:.1} s after control was reachable again",
        recovered_in.as_secs_f64()
    );
    t.finish();
}

fn client_record<'a>(nodes: &'a [Value], id: &Value) -> &'a Value {
    nodes
        .iter()
        .find(|n| n["id"] == *id)
        .unwrap_or_else(|| panic!("node {id} is not listed: {nodes:?}"))
}
