//! Control-channel liveness with real processes: a frozen router (SIGSTOP:
//! its TCP connection stays open, it just says nothing) goes offline at
//! control within its read deadline, and nodes give up on a frozen control,
//! keep carrying traffic, and reconnect once it thaws.

use std::time::{Duration, Instant};

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{CONTROL_KEY, TestDeployment, WAIT, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The keepalive interval the test gives every node.
const INTERVAL_MS: u64 = 1000;

/// Two intervals and the 250 ms grace, plus room for the admin CLI and a
/// busy machine; TCP alone would take minutes.
const NOTICED_WITHIN: Duration = Duration::from_secs(6);

/// Sends SIGCONT on drop, so a failing test never leaves a stopped process
/// that teardown's SIGTERM cannot reach.
struct Thaw(i32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

fn freeze(pid: i32) -> Thaw {
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
    Thaw(pid)
}

fn router_online(t: &TestDeployment) -> anyhow::Result<bool> {
    let nodes = t.nodes();
    let router = nodes
        .iter()
        .find(|n| n["hostname"] == "router" || n["name"] == "router")
        .ok_or_else(|| anyhow::anyhow!("no router in {nodes:?}"))?;
    router["online"]
        .as_bool()
        .ok_or_else(|| anyhow::anyhow!("no online flag in {router}"))
}

fn connected(s: &Value) -> bool {
    s["control_connected"] == true && s["state"] == "running"
}

#[test]
fn a_frozen_router_goes_offline_and_nodes_outlive_a_frozen_control() {
    let t = TestDeployment::deploy();
    // The router keeps alive at 1 s because it serves an approved route
    // (the default router interval); the client because of this setting.
    t.restart_control_with_config(|text| format!("{text}keepalive_interval = \"1s\"\n"));
    for node in [Node::Router, Node::Client] {
        wait_until(
            WAIT,
            &format!("the {} to be told the 1 s interval", node.as_str()),
            || {
                let s = t.status(node)?;
                anyhow::ensure!(s["control_keepalive_ms"] == INTERVAL_MS, "{s}");
                Ok(())
            },
        );
    }
    assert!(router_online(&t).expect("admin lists the router"));

    // A frozen router: offline at control within its deadline.
    let router = t.process(Node::Router.as_str());
    let thaw = freeze(router.pid);
    let frozen_at = Instant::now();
    wait_until(
        NOTICED_WITHIN,
        "control to mark the frozen router offline",
        || {
            anyhow::ensure!(!router_online(&t)?, "still online");
            Ok(())
        },
    );
    eprintln!(
        "frozen router offline at control after {:.2} s",
        frozen_at.elapsed().as_secs_f64()
    );
    drop(thaw);
    wait_until(WAIT, "the thawed router to reconnect", || {
        let s = t.status(Node::Router)?;
        anyhow::ensure!(connected(&s), "{s}");
        anyhow::ensure!(router_online(&t)?, "control lists it offline");
        Ok(())
    });
    t.fetch_vpc_page(Site::Cli)
        .expect("the client reaches the VPC through the thawed router");

    // A frozen control: both nodes give up on it within their deadline,
    // say why, and keep forwarding on the last netmap.
    let control = t.process(CONTROL_KEY);
    let thaw = freeze(control.pid);
    let frozen_at = Instant::now();
    for node in [Node::Router, Node::Client] {
        wait_until(
            NOTICED_WITHIN,
            &format!("the {} to give up on the frozen control", node.as_str()),
            || {
                let s = t.status(node)?;
                anyhow::ensure!(s["control_connected"] == false, "{s}");
                Ok(())
            },
        );
        eprintln!(
            "{} gave up on the frozen control after {:.2} s",
            node.as_str(),
            frozen_at.elapsed().as_secs_f64()
        );
        let s = t.status(node).expect("status");
        let session = s["session"].as_str().unwrap_or_default();
        assert!(
            session.contains("control sent nothing for"),
            "the {} status does not say why: {s}",
            node.as_str()
        );
    }
    t.fetch_vpc_page(Site::Cli)
        .expect("the data plane keeps running while control is frozen");
    drop(thaw);
    for node in [Node::Router, Node::Client] {
        wait_until(
            WAIT,
            &format!("the {} to reconnect to the thawed control", node.as_str()),
            || {
                let s = t.status(node)?;
                anyhow::ensure!(connected(&s), "{s}");
                Ok(())
            },
        );
    }
    t.finish();
}
