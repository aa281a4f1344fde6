//! A node that cannot reach control when it starts keeps trying, says so in
//! its status, and joins once control is reachable; a definite refusal
//! (a bad auth key) still stops it (see `auth_keys.rs`).

use std::time::{Duration, Instant};

use causeway_e2e::local::Site;
use causeway_e2e::{TestDeployment, WAIT, wait_until};

/// The extra node: its hostname, TUN device and UDP port (the client's
/// namespace already has `cw0` on 41641).
const HOSTNAME: &str = "late";
const TUN: &str = "cw8";
const PORT: u16 = 41643;

#[test]
fn a_node_that_cannot_reach_control_at_start_keeps_trying_and_joins() {
    let t = TestDeployment::deploy();
    // Single-use, so a join that control saw but whose answer was lost
    // would be refused if it were simply sent again.
    let created = t.admin_json(&["keys", "create"]);
    let key = created["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {created}"));

    t.block_new_control_connections(Site::Cli, true);
    let (rec, state_dir) = t.start_client_device(HOSTNAME, TUN, PORT, key);

    let waiting = wait_until(
        Duration::from_secs(10),
        "the node to report that it retries",
        || {
            let s = t.status_at(Site::Cli, &state_dir)?;
            anyhow::ensure!(s["state"] == "registering", "{s}");
            let session = s["session"].as_str().unwrap_or_default();
            anyhow::ensure!(
                session.starts_with("joining (retry in ")
                    && session.contains("control unreachable"),
                "{s}"
            );
            Ok(s)
        },
    );
    eprintln!(
        "session while control was unreachable: {}",
        waiting["session"]
    );
    // Past the first retries, and past the 10 s a connect attempt may take.
    std::thread::sleep(Duration::from_secs(6));
    assert!(rec.is_alive(), "the node gave up: {}", t.logs());
    let still = t
        .status_at(Site::Cli, &state_dir)
        .expect("status while control is unreachable");
    assert_eq!(still["state"], "registering", "{still}");
    assert_eq!(t.nodes().len(), 2, "the node registered while blocked");

    t.block_new_control_connections(Site::Cli, false);
    let unblocked = Instant::now();
    let running = wait_until(WAIT, "the node to join and run", || {
        let s = t.status_at(Site::Cli, &state_dir)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        Ok(s)
    });
    let joined_in = unblocked.elapsed();
    assert_eq!(running["session"], "running", "{running}");
    let id = running["node_id"].clone();
    let nodes = t.nodes();
    assert!(
        nodes
            .iter()
            .any(|n| n["id"] == id && n["hostname"] == HOSTNAME),
        "node {id} not listed: {nodes:?}"
    );
    eprintln!(
        "joined {:.1} s after control was reachable again",
        joined_in.as_secs_f64()
    );
    let _ = rec.stop(Duration::from_secs(10));
    t.finish();
}
