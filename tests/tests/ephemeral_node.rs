//! A node registered with an ephemeral auth key is deleted once it has been
//! gone for `[control] ephemeral_grace`, and its peers drop it.

use std::time::{Duration, Instant};

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, WAIT, peer, peers, wait_until};

/// The extra node: its hostname, TUN device and UDP port (the client's
/// namespace already has `cw0` on 41641).
const HOSTNAME: &str = "eph";
const TUN: &str = "cw9";
const PORT: u16 = 41642;

#[test]
fn ephemeral_node_is_removed_after_it_leaves() {
    let t = TestDeployment::deploy();
    t.restart_control_with_config(|old| {
        assert!(
            old.contains("[control]\n"),
            "no [control] section in:\n{old}"
        );
        old.replace("[control]\n", "[control]\nephemeral_grace = \"2s\"\n")
    });

    let created = t.admin_json(&["keys", "create", "--ephemeral"]);
    assert_eq!(created["ephemeral"], true, "{created}");
    let key = created["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {created}"));

    let (rec, state_dir) = t.start_client_device(HOSTNAME, TUN, PORT, key);

    let status = wait_until(WAIT, "the ephemeral node to run", || {
        let s = t.status_at(Site::Cli, &state_dir)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        Ok(s)
    });
    let id = status["node_id"].clone();
    let name = status["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no name in {status}"))
        .to_owned();
    assert!(id.is_u64(), "{status}");
    let nodes = t.nodes();
    assert_eq!(
        nodes.len(),
        3,
        "router, client and the ephemeral node: {nodes:?}"
    );
    let listed = nodes
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("node {id} not listed: {nodes:?}"));
    assert_eq!(listed["ephemeral"], true, "{listed}");
    assert_eq!(listed["hostname"], HOSTNAME, "{listed}");
    wait_until(
        WAIT,
        "the router to have the ephemeral node as peer",
        || {
            let s = t.status(Node::Router)?;
            peer(&s, &name)?;
            Ok(())
        },
    );

    let how = rec.stop(Duration::from_secs(10));
    assert_eq!(
        format!("{how:?}"),
        "Terminated",
        "the ephemeral node ignored SIGTERM"
    );
    let stopped = Instant::now();
    let links = t
        .run_in(Site::Cli, &["ip", "-o", "link", "show"])
        .expect_success();
    assert!(
        !links.stdout.contains(TUN),
        "{TUN} left after SIGTERM: {links}"
    );

    wait_until(
        Duration::from_secs(8),
        "control to delete the ephemeral node (grace 2 s)",
        || {
            let nodes = t.nodes();
            anyhow::ensure!(
                nodes.iter().all(|n| n["id"] != id),
                "still listed: {nodes:?}"
            );
            Ok(())
        },
    );
    let deleted_after = stopped.elapsed();
    wait_until(
        Duration::from_secs(5),
        "the router to drop the ephemeral peer",
        || {
            let s = t.status(Node::Router)?;
            let ps = peers(&s);
            anyhow::ensure!(
                ps.iter()
                    .all(|p| p["id"] != id && p["name"] != name.as_str()),
                "router peers: {ps:?}"
            );
            Ok(())
        },
    );
    let nodes = t.nodes();
    assert_eq!(nodes.len(), 2, "only router and client are left: {nodes:?}");
    let router = t.status(Node::Router).expect("router status");
    assert_eq!(peers(&router).len(), 1, "the client only: {router}");
    eprintln!(
        "ephemeral node deleted {:.1} s after SIGTERM",
        deleted_after.as_secs_f64()
    );
    t.finish();
}
