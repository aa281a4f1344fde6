//! Exit nodes: a client sends its internet traffic through an exit node
//! and the internet sees the exit node's address; LAN access on and off;
//! a stopped exit node leaks nothing; the exit node is switched at run time
//! with `appliance set`; the policy routing is gone after shutdown and after
//! a crash.
//!
//! Topology, beside the usual deployment (control, router, client on the
//! public bridge 198.18.0.0/24):
//!
//! ```text
//! inet  198.18.0.250, fd18::250 (bridge) + 198.18.100.10, 2001:db8:100::10
//!       ("the internet"): the provisioner's echo server
//!       (`services::ECHO_SERVER_PY`) on :8000, answering with the caller's
//!       address
//! exit1 198.18.0.21/fd18::21, exit2 198.18.0.22/fd18::22: `[exit_node]`,
//!       routes to the internet via inet
//! client 198.18.0.4/fd18::4: its own default routes via inet, so a leak
//!       reaches the server from the client's address and is seen
//! ```

use std::time::Duration;

use causeway_e2e::internet::{
    INTERNET_URL, INTERNET_URL_V6, callers_from, expect_from, fetch, start_internet,
};
use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, WAIT, wait_until};

/// The "LAN host": the same server on the client's directly connected subnet.
const LAN_URL: &str = "http://198.18.0.250:8000/";
const CLIENT_ADDR: &str = "198.18.0.4";
const EXIT1_ADDR: &str = "198.18.0.21";
const EXIT2_ADDR: &str = "198.18.0.22";
const CLIENT_ADDR_V6: &str = "fd18::4";
const EXIT1_ADDR_V6: &str = "fd18::21";

#[test]
fn client_traffic_leaves_through_the_exit_node_and_never_leaks() {
    let mut t = TestDeployment::deploy();

    // The internet and its echo server.
    let callers = start_internet(&mut t).callers;

    // The client's own way to the internet: the leak path.
    t.run_in(
        Site::Cli,
        &["ip", "route", "replace", "default", "via", "198.18.0.250"],
    )
    .expect_success();
    for args in [
        &["ip", "addr", "add", "fd18::4/64", "dev", "eth0", "nodad"][..],
        &[
            "ip",
            "-6",
            "route",
            "replace",
            "default",
            "via",
            "fd18::250",
        ],
    ] {
        t.run_in(Site::Cli, args).expect_success();
    }
    let direct = wait_until(WAIT, "the echo server to answer directly", || {
        fetch(&t, INTERNET_URL)
    });
    assert_eq!(
        direct, CLIENT_ADDR,
        "without an exit node the client goes direct"
    );
    let direct_v6 = wait_until(WAIT, "the echo server to answer directly over IPv6", || {
        fetch(&t, INTERNET_URL_V6)
    });
    assert_eq!(direct_v6, CLIENT_ADDR_V6);

    // Two exit nodes, approved by an admin.
    let key = t.admin_json(&["keys", "create", "--reusable"])["key"]
        .as_str()
        .expect("an auth key")
        .to_owned();
    let mut exits = Vec::new();
    for (name, addr, suffix) in [("exit1", EXIT1_ADDR, "x1"), ("exit2", EXIT2_ADDR, "x2")] {
        let ns = t.add_bridge_namespace(suffix, &format!("{addr}/24"));
        ns.ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.250"])
            .expect("the exit node's uplink route");
        let addr_v6 = format!("fd18::{}/64", &addr[addr.len() - 2..]);
        ns.ip(&["addr", "add", &addr_v6, "dev", "eth0", "nodad"])
            .expect("the exit node's IPv6 uplink address");
        ns.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:100::/64",
            "via",
            "fd18::250",
        ])
        .expect("the exit node's IPv6 uplink route");
        let endpoint = format!("{addr}:41641").parse().expect("a socket address");
        let node = t.write_extra_node(name, &key, endpoint, "cw0", false);
        causeway_e2e::rewrite_file(&node.config, |old| format!("{old}\n[exit_node]\n"));
        let rec = t.start_extra_node(&node, &ns);
        wait_until(WAIT, &format!("{name} to run"), || {
            let s = t.status_in(&ns, &node.state_dir)?;
            anyhow::ensure!(s["state"] == "running", "{s}");
            Ok(())
        });
        for prefix in ["0.0.0.0/0", "::/0"] {
            t.admin(&["routes", "approve", name, prefix])
                .expect_success();
        }
        exits.push((rec, ns, node));
    }
    let client_dir = t.dep().paths().node_dir(Node::Client);
    wait_until(WAIT, "the client to see both exit nodes online", || {
        let s = t.status(Node::Client)?;
        for name in ["exit1", "exit2"] {
            causeway_e2e::peer(&s, name)?;
        }
        Ok(())
    });

    // Selected at run time: the internet sees the exit node's address.
    t.set_exit_node(&client_dir, "exit1");
    let via = wait_until(WAIT, "traffic through exit1", || {
        expect_from(fetch(&t, INTERNET_URL)?, EXIT1_ADDR)
    });
    assert_eq!(via, EXIT1_ADDR);
    assert_eq!(
        fetch(&t, INTERNET_URL_V6).expect("IPv6 through exit1"),
        EXIT1_ADDR_V6
    );
    let status = t.status(Node::Client).expect("client status");
    assert_eq!(status["exit_node"]["selected"], "exit1", "{status}");
    assert_eq!(status["exit_node"]["routing_all"], true, "{status}");
    // Control stays reachable (its socket is marked), and without LAN
    // access the LAN host, too, is reached through the exit node.
    assert_eq!(status["control_connected"], true, "{status}");
    assert_eq!(fetch(&t, LAN_URL).expect("LAN host via exit1"), EXIT1_ADDR);
    let rules = t
        .run_in(Site::Cli, &["ip", "rule", "list"])
        .expect_success();
    assert!(rules.stdout.contains("lookup 5280"), "{rules}");
    let rules6 = t
        .run_in(Site::Cli, &["ip", "-6", "rule", "list"])
        .expect_success();
    assert!(rules6.stdout.contains("lookup 5280"), "{rules6}");

    // LAN access on (config, restart): the LAN host sees the client itself,
    // the internet still sees the exit node.
    t.restart_node_with_config(Node::Client, |old| {
        format!("{old}\n").replace(
            "[node]\n",
            "[node]\nexit_node = \"exit1\"\nexit_node_allow_lan_access = true\n",
        )
    });
    wait_until(WAIT, "traffic through exit1 after the restart", || {
        expect_from(fetch(&t, INTERNET_URL)?, EXIT1_ADDR)
    });
    assert_eq!(fetch(&t, LAN_URL).expect("LAN host direct"), CLIENT_ADDR);

    // Switching at run time.
    t.set_exit_node(&client_dir, "exit2");
    wait_until(WAIT, "traffic through exit2", || {
        expect_from(fetch(&t, INTERNET_URL)?, EXIT2_ADDR)
    });

    // exit2 stops: nothing leaks, neither at once nor once control has
    // marked it offline.
    let before = callers_from(&callers, CLIENT_ADDR) + callers_from(&callers, CLIENT_ADDR_V6);
    let (rec2, _, _) = &exits[1];
    let _ = rec2.stop(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(
            fetch(&t, INTERNET_URL).is_err(),
            "a request got through a stopped exit node"
        );
    }
    wait_until(WAIT, "the client to see exit2 offline", || {
        let s = t.status(Node::Client)?;
        anyhow::ensure!(s["exit_node"]["online"] == false, "{}", s["exit_node"]);
        anyhow::ensure!(s["exit_node"]["routing_all"] == true, "{}", s["exit_node"]);
        Ok(())
    });
    assert!(
        fetch(&t, INTERNET_URL).is_err(),
        "a request got through once exit2 was offline"
    );
    assert!(
        fetch(&t, INTERNET_URL_V6).is_err(),
        "an IPv6 request got through once exit2 was offline"
    );
    assert_eq!(
        callers_from(&callers, CLIENT_ADDR) + callers_from(&callers, CLIENT_ADDR_V6),
        before,
        "the client's own address reached the internet while its exit node was gone"
    );

    // `auto` fails over to the online exit node.
    t.set_exit_node(&client_dir, "auto");
    wait_until(WAIT, "traffic through exit1 again (auto)", || {
        expect_from(fetch(&t, INTERNET_URL)?, EXIT1_ADDR)
    });

    // `none`: the rules go, traffic goes direct again.
    t.set_exit_node(&client_dir, "none");
    assert_eq!(fetch(&t, INTERNET_URL).expect("direct again"), CLIENT_ADDR);
    assert_no_exit_routing(&t);

    // A crash leaves the routing behind; the next start removes it.
    t.set_exit_node(&client_dir, "exit1");
    wait_until(WAIT, "traffic through exit1 before the crash", || {
        expect_from(fetch(&t, INTERNET_URL)?, EXIT1_ADDR)
    });
    t.kill_process(Node::Client.as_str());
    let left = t
        .run_in(Site::Cli, &["ip", "rule", "list"])
        .expect_success();
    assert!(
        left.stdout.contains("lookup 5280"),
        "SIGKILL leaves the rules: {left}"
    );
    causeway_e2e::rewrite_file(&t.dep().paths().node_config(Node::Client), |old| {
        old.replace("exit_node = \"exit1\"\n", "exit_node = \"none\"\n")
    });
    t.respawn_node_running(Node::Client);
    assert_no_exit_routing(&t);
    assert_eq!(
        fetch(&t, INTERNET_URL).expect("direct after the crash"),
        CLIENT_ADDR
    );

    // A clean stop removes everything too.
    t.set_exit_node(&client_dir, "exit1");
    wait_until(WAIT, "traffic through exit1 before the stop", || {
        expect_from(fetch(&t, INTERNET_URL)?, EXIT1_ADDR)
    });
    let _ = t
        .process(Node::Client.as_str())
        .stop(Duration::from_secs(10));
    assert_no_exit_routing(&t);

    drop(exits);
    t.finish();
}

fn assert_no_exit_routing(t: &TestDeployment) {
    for family in ["-4", "-6"] {
        let rules = t
            .run_in(Site::Cli, &["ip", family, "rule", "list"])
            .expect_success();
        assert!(
            !rules.stdout.contains("5280") && !rules.stdout.contains("5270"),
            "rules left: {rules}"
        );
        let table = t
            .run_in(Site::Cli, &["ip", family, "route", "show", "table", "5280"])
            .expect_success();
        assert!(table.stdout.trim().is_empty(), "routes left: {table}");
    }
}
