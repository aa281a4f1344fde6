//! `exit_node = "auto"`: the client picks a healthy exit node, keeps a
//! session to the other candidate warm (both get a round-trip time), moves
//! when its exit node's health probe fails while it stays online, does not
//! move back when it recovers, and fails over when its exit node is killed,
//! without leaking meanwhile. Prints the gap in UDP traffic (one datagram
//! every 10 ms) during the kill failover: a figure, not an assertion
//! (`tests/bench/exit-failover.sh` runs this test and collects it).
//!
//! Topology, beside the usual deployment (control, router, client on the
//! public bridge 198.18.0.0/24):
//!
//! ```text
//! inet  198.18.0.250 (bridge) + 198.18.100.10 ("the internet"): an HTTP
//!       server on :8000 that answers with the caller's address, and a
//!       UDP/TCP echo (failover-traffic) on :9000/:9001
//! exit1 198.18.0.21, exit2 198.18.0.22: `[exit_node]` with
//!       probe_tcp = "198.18.100.10:8000", default route via inet
//! client 198.18.0.4: its own default route via inet, so a leak reaches
//!       the server from the client's address and is seen
//! ```

use std::process::Stdio;
use std::time::Duration;

use causeway_e2e::internet::{
    GATEWAY, INTERNET_URL, callers_from, expect_from, fetch, start_internet,
};
use causeway_e2e::local::{Netns, Node, Site};
use causeway_e2e::{KillOnDrop, TestDeployment, WAIT, binary, wait_until};
use serde_json::Value;

const CLIENT_ADDR: &str = "198.18.0.4";
const EXITS: [(&str, &str, &str); 2] = [
    ("exit1", "198.18.0.21", "x1"),
    ("exit2", "198.18.0.22", "x2"),
];
/// How long the traffic of the kill measurement runs; the kill comes
/// [`KILL_AT`] in.
const TRAFFIC_SECONDS: u64 = 12;
const KILL_AT: Duration = Duration::from_secs(3);

#[test]
fn auto_moves_to_the_healthy_exit_node_and_fails_over_without_leaking() {
    let mut t = TestDeployment::deploy();
    let root = t.dep().paths().root().to_owned();
    let internet = start_internet(&mut t);
    let callers = internet.callers.clone();
    let mut traffic_server = internet.ns.command(binary("failover-traffic"));
    traffic_server.args([
        "serve",
        "--udp",
        "198.18.100.10:9000",
        "--tcp",
        "198.18.100.10:9001",
    ]);
    t.spawn_recorded(
        "traffic",
        internet.ns.name(),
        &mut traffic_server,
        &root.join("traffic.log"),
    );

    // The client's own way to the internet: the leak path.
    t.run_in(
        Site::Cli,
        &["ip", "route", "replace", "default", "via", GATEWAY],
    )
    .expect_success();
    let direct = wait_until(WAIT, "the echo server to answer directly", || {
        fetch(&t, INTERNET_URL)
    });
    assert_eq!(direct, CLIENT_ADDR);
    let leaked_before = callers_from(&callers, CLIENT_ADDR);

    // Two exit nodes probing the echo server, approved by an admin.
    let key = t.admin_json(&["keys", "create", "--reusable"])["key"]
        .as_str()
        .expect("an auth key")
        .to_owned();
    let mut exits = Vec::new();
    for (name, addr, suffix) in EXITS {
        let ns = t.add_bridge_namespace(suffix, &format!("{addr}/24"));
        ns.ip(&["route", "add", "default", "via", GATEWAY])
            .expect("the exit node's uplink route");
        let endpoint = format!("{addr}:41641").parse().expect("a socket address");
        let node = t.write_extra_node(name, &key, endpoint, "cw0", false);
        causeway_e2e::rewrite_file(&node.config, |old| {
            format!("{old}\n[exit_node]\nipv6 = false\nprobe_tcp = \"198.18.100.10:8000\"\n")
        });
        let rec = t.start_extra_node(&node, &ns);
        wait_until(WAIT, &format!("{name} to run"), || {
            let s = t.status_in(&ns, &node.state_dir)?;
            anyhow::ensure!(s["state"] == "running", "{s}");
            Ok(())
        });
        t.admin(&["routes", "approve", name, "0.0.0.0/0"])
            .expect_success();
        exits.push((rec, ns));
    }
    let client_dir = t.dep().paths().node_dir(Node::Client);
    wait_until(WAIT, "the client to see both exit nodes", || {
        let s = t.status(Node::Client)?;
        for (name, _, _) in EXITS {
            causeway_e2e::peer(&s, name)?;
        }
        Ok(())
    });

    // auto: traffic leaves through one exit node; the other is kept warm,
    // and both get a round-trip time.
    t.set_exit_node(&client_dir, "auto");
    let first = wait_until(WAIT, "traffic through an exit node (auto)", || {
        let seen = fetch(&t, INTERNET_URL)?;
        exit_index(&seen).ok_or_else(|| anyhow::anyhow!("the server saw {seen}"))
    });
    let second = 1 - first;
    let (first_name, first_addr, _) = EXITS[first];
    let (second_name, second_addr, _) = EXITS[second];
    wait_until(WAIT, "both candidates healthy, warm and measured", || {
        let exit = exit_status(&t)?;
        anyhow::ensure!(exit["selected"] == first_name, "{exit}");
        for (name, _, _) in EXITS {
            let c = candidate(&exit, name)?;
            anyhow::ensure!(
                c["online"] == true
                    && c["healthy"] == true
                    && c["warm"] == true
                    && c["rtt_ms"].is_u64(),
                "{exit}"
            );
        }
        Ok(())
    });

    // The selected exit node's probe target stops answering it (its own
    // connections only: it still forwards): it reports itself unhealthy
    // and the client moves to the other one.
    let block = ProbeBlock(&exits[first].1);
    block.set(true);
    wait_until(WAIT, "traffic through the healthy exit node", || {
        expect_from(fetch(&t, INTERNET_URL)?, second_addr)
    });
    let exit = exit_status(&t).expect("client status");
    assert_eq!(exit["selected"], second_name, "{exit}");
    let reason = exit["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("is unhealthy"), "{exit}");
    let sick = candidate(&exit, first_name).expect("still a candidate");
    assert_eq!(
        (sick["online"].clone(), sick["healthy"].clone()),
        (Value::Bool(true), Value::Bool(false)),
        "{exit}"
    );

    // It recovers: the client stays where it is (no flapping back).
    block.set(false);
    wait_until(WAIT, "the first exit node healthy again", || {
        let exit = exit_status(&t)?;
        anyhow::ensure!(candidate(&exit, first_name)?["healthy"] == true, "{exit}");
        Ok(())
    });
    assert_eq!(
        fetch(&t, INTERNET_URL).expect("through an exit node"),
        second_addr
    );
    let exit = exit_status(&t).expect("client status");
    assert_eq!(exit["selected"], second_name, "{exit}");

    // The exit node in use is killed while UDP traffic flows: the client
    // moves back to the first one, and nothing leaks meanwhile.
    let mut send = t.command_in(Site::Cli, binary("failover-traffic"));
    send.args([
        "send",
        "--udp",
        "198.18.100.10:9000",
        "--tcp",
        "198.18.100.10:9001",
        "--seconds",
        &TRAFFIC_SECONDS.to_string(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let sender = KillOnDrop(send.spawn().expect("starting failover-traffic send"));
    std::thread::sleep(KILL_AT);
    let (victim, _) = &exits[second];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the exit node in use");
    let output = sender.wait_output(
        Duration::from_secs(TRAFFIC_SECONDS) + WAIT,
        "failover-traffic send",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let udp = &report["udp"];
    println!(
        "FIGURE exit-node failover (kill -9 of the exit node in use, auto): longest UDP gap {} ms, {} of {} datagrams lost, recovered: {}",
        udp["longest_gap_ms"],
        udp["sent"].as_u64().unwrap_or(0) - udp["echoed"].as_u64().unwrap_or(0),
        udp["sent"],
        udp["not_recovered"].is_null()
    );
    wait_until(WAIT, "traffic through the first exit node again", || {
        expect_from(fetch(&t, INTERNET_URL)?, first_addr)
    });
    let exit = exit_status(&t).expect("client status");
    let reason = exit["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("went offline"), "{exit}");
    assert!(
        udp["echoed"].as_u64().unwrap_or(0) > 0,
        "no traffic got through at all: {report}"
    );
    assert_eq!(
        callers_from(&callers, CLIENT_ADDR),
        leaked_before,
        "the client's own address reached the internet during the failovers"
    );

    drop(exits);
    t.finish();
}

/// Which of [`EXITS`] has the address `seen`.
fn exit_index(seen: &str) -> Option<usize> {
    EXITS.iter().position(|(_, addr, _)| *addr == seen)
}

/// The client's `exit_node` status.
fn exit_status(t: &TestDeployment) -> anyhow::Result<Value> {
    Ok(t.status(Node::Client)?["exit_node"].clone())
}

/// One candidate in an `exit_node` status, by name.
fn candidate<'a>(exit: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    exit["candidates"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("no candidate {name}: {exit}"))
}

/// An nftables table in an exit node's namespace that drops the node's own
/// connections to the probe target's port (forwarded traffic passes).
struct ProbeBlock<'a>(&'a Netns);

impl ProbeBlock<'_> {
    fn set(&self, on: bool) {
        let script = if on {
            "add table inet probe_block { chain out { type filter hook output priority 0; tcp dport 8000 drop; }; }"
        } else {
            "delete table inet probe_block"
        };
        let mut cmd = self.0.command("nft");
        cmd.arg(script);
        causeway_e2e::run(&mut cmd, WAIT).expect_success();
    }
}
