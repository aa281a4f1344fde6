//! An exit node with an egress interface (`exit_node.egress_mac`): the
//! client's internet traffic leaves through a NAT gateway on the exit
//! node's private subnet, so the internet sees the NAT gateway's address,
//! while the WireGuard session between client and exit node stays direct
//! on the exit node's public address. With the egress interface down,
//! forwarded traffic fails instead of leaving by the public interface,
//! and comes back when the interface does; a stop removes the routing.
//!
//! Topology, beside the usual deployment (control, router, client on the
//! public bridge 198.18.0.0/24):
//!
//! ```text
//! inet   198.18.0.250 (bridge) + 198.18.100.10 ("the internet"): an HTTP
//!        server on :8000 that answers with the caller's address
//! exit1  eth0 198.18.0.21 (bridge; its own route to the internet via
//!        inet: the leak path, seen as 198.18.0.21)
//!        eth1 198.19.50.10/24, MAC 02:00:00:c0:ff:ee (the egress subnet)
//! natgw  eth1 198.19.50.1/24 (the egress subnet's first host), eth0
//!        198.18.0.30 (bridge): forwards and masquerades to 198.18.0.30
//! ```

use std::time::Duration;

use causeway_e2e::internet::{
    GATEWAY, INTERNET_URL, callers_from, expect_from, fetch, start_internet,
};
use causeway_e2e::local::{Netns, Node};
use causeway_e2e::{TestDeployment, WAIT, wait_until};
use serde_json::Value;

const EXIT_PUBLIC: &str = "198.18.0.21";
const EXIT_EGRESS: &str = "198.19.50.10";
const NAT_PUBLIC: &str = "198.18.0.30";
const EGRESS_MAC: &str = "02:00:00:c0:ff:ee";

/// The NAT gateway's rules: masquerade what leaves by its public side,
/// and count any WireGuard datagram of the exit node that passes.
const NAT_GATEWAY_NFT: &str = "table ip natgw {
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname \"eth0\" masquerade
  }
  chain forward {
    type filter hook forward priority filter;
    udp sport 41641 counter
    udp dport 41641 counter
  }
}
";

#[test]
fn forwarded_traffic_leaves_by_the_nat_gateway_while_wireguard_stays_direct() {
    let mut t = TestDeployment::deploy();
    let callers = start_internet(&mut t).callers;
    let root = t.dep().paths().root().to_owned();

    // The exit node's public side, with its own route to the internet.
    let exit_ns = t.add_bridge_namespace("xe", &format!("{EXIT_PUBLIC}/24"));
    exit_ns
        .ip(&["route", "add", "198.18.100.0/24", "via", GATEWAY])
        .expect("the exit node's public route to the internet");
    // The NAT gateway, and the egress subnet between the two.
    let nat_ns = t.add_bridge_namespace("ng", &format!("{NAT_PUBLIC}/24"));
    nat_ns
        .ip(&["route", "add", "198.18.100.0/24", "via", GATEWAY])
        .expect("the NAT gateway's route to the internet");
    exit_ns
        .ip(&[
            "link",
            "add",
            "eth1",
            "address",
            EGRESS_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "netns",
            nat_ns.name(),
        ])
        .expect("the egress subnet's link");
    for (ns, addr) in [(&exit_ns, EXIT_EGRESS), (&nat_ns, "198.19.50.1")] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth1"])
            .expect("an egress subnet address");
        ns.ip(&["link", "set", "dev", "eth1", "up"])
            .expect("the egress link up");
    }
    let rules = root.join("natgw.nft");
    std::fs::write(&rules, NAT_GATEWAY_NFT).expect("writing the NAT gateway's rules");
    for args in [
        vec!["sysctl", "-w", "net.ipv4.ip_forward=1"],
        vec!["nft", "-f", rules.to_str().expect("a UTF-8 path")],
    ] {
        let ran = causeway_e2e::run(nat_ns.command(args[0]).args(&args[1..]), WAIT);
        assert!(ran.success(), "NAT gateway set-up: {ran}");
    }

    // The exit node finds its egress interface by MAC and discovers its
    // endpoints itself (no fixed endpoint in its config).
    let key = t.admin_json(&["keys", "create", "--reusable"])["key"]
        .as_str()
        .expect("an auth key")
        .to_owned();
    let endpoint = format!("{EXIT_PUBLIC}:41641").parse().expect("an endpoint");
    let exit = t.write_extra_node("exit1", &key, endpoint, "cw0", false);
    causeway_e2e::rewrite_file(&exit.config, |old| {
        let kept: Vec<&str> = old
            .lines()
            .filter(|l| !l.starts_with("advertise_endpoints"))
            .collect();
        format!(
            "{}\n\n[exit_node]\negress_mac = \"{EGRESS_MAC}\"\n",
            kept.join("\n")
        )
    });
    let exit_rec = t.start_extra_node(&exit, &exit_ns);
    let public_endpoint = format!("{EXIT_PUBLIC}:41641");
    let status = wait_until(WAIT, "the exit node to run and find its endpoint", || {
        let s = t.status_in(&exit_ns, &exit.state_dir)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        anyhow::ensure!(s["endpoints"].to_string().contains(&public_endpoint), "{s}");
        Ok(s)
    });
    assert_eq!(
        status["egress"],
        serde_json::json!({
            "interface": "eth1",
            "address": EXIT_EGRESS,
            "gateway": "198.19.50.1",
            "ipv6_gateway": null,
            "installed": true,
            "detail": "",
        }),
        "{status}"
    );
    let advertised = status["endpoints"].to_string();
    assert!(
        !advertised.contains(EXIT_EGRESS),
        "the egress address is not a WireGuard endpoint: {advertised}"
    );
    for prefix in ["0.0.0.0/0", "::/0"] {
        t.admin(&["routes", "approve", "exit1", prefix])
            .expect_success();
    }
    let client_dir = t.dep().paths().node_dir(Node::Client);
    wait_until(WAIT, "the client to see the exit node", || {
        causeway_e2e::peer(&t.status(Node::Client)?, "exit1").map(|_| ())
    });

    // Through the exit node: the internet sees the NAT gateway.
    t.set_exit_node(&client_dir, "exit1");
    let seen = wait_until(WAIT, "traffic through the NAT gateway", || {
        expect_from(fetch(&t, INTERNET_URL)?, NAT_PUBLIC)
    });
    assert_eq!(seen, NAT_PUBLIC);
    // The session is direct on the exit node's public address, and none
    // of its WireGuard datagrams went through the NAT gateway.
    let client = t.status(Node::Client).expect("client status");
    let peer = causeway_e2e::peer(&client, "exit1").expect("exit1 among the peers");
    assert_eq!(peer["endpoint"], public_endpoint, "{peer}");
    assert!(
        causeway_e2e::u64_field(peer, "rx_bytes").expect("rx bytes") > 0,
        "{peer}"
    );
    assert_eq!(wireguard_through_nat(&t, &nat_ns), 0);
    let rules = t.run_in_ns(&exit_ns, &["ip", "rule", "list"]);
    assert!(rules.contains("iif cw0 lookup 5290"), "{rules}");

    // The egress link goes down: forwarded traffic fails, and none of it
    // leaves by the public interface.
    exit_ns
        .ip(&["link", "set", "dev", "eth1", "down"])
        .expect("egress link down");
    for _ in 0..3 {
        assert!(
            fetch(&t, INTERNET_URL).is_err(),
            "a request got through with the egress interface down"
        );
    }
    let exit_status = wait_until(WAIT, "the exit node to report the missing route", || {
        let s = t.status_in(&exit_ns, &exit.state_dir)?;
        anyhow::ensure!(s["egress"]["installed"] == false, "{}", s["egress"]);
        Ok(s)
    });
    assert!(
        exit_status["egress"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{exit_status}"
    );
    assert!(
        fetch(&t, INTERNET_URL).is_err(),
        "a request got through with the egress interface down"
    );

    // Back up: the exit node puts its route back by itself.
    exit_ns
        .ip(&["link", "set", "dev", "eth1", "up"])
        .expect("egress link up");
    wait_until(WAIT, "traffic through the NAT gateway again", || {
        expect_from(fetch(&t, INTERNET_URL)?, NAT_PUBLIC)
    });
    assert_eq!(
        callers_from(&callers, EXIT_PUBLIC),
        0,
        "forwarded traffic reached the internet from the exit node's public address"
    );
    assert_eq!(wireguard_through_nat(&t, &nat_ns), 0);

    // A clean stop removes the rule and the table.
    let _ = exit_rec.stop(Duration::from_secs(10));
    let rules = t.run_in_ns(&exit_ns, &["ip", "rule", "list"]);
    assert!(!rules.contains("5290"), "rules left: {rules}");
    let table = t.run_in_ns(&exit_ns, &["ip", "route", "show", "table", "5290"]);
    assert!(table.trim().is_empty(), "routes left: {table}");

    t.finish();
}

/// Packets counted by the NAT gateway's WireGuard counters.
fn wireguard_through_nat(t: &TestDeployment, nat_ns: &Netns) -> u64 {
    let text = t.run_in_ns(nat_ns, &["nft", "-j", "list", "table", "ip", "natgw"]);
    let doc: Value = serde_json::from_str(&text).expect("nft prints JSON");
    doc["nftables"]
        .as_array()
        .expect("an nftables array")
        .iter()
        .filter_map(|item| item.get("rule"))
        .flat_map(|rule| rule["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|expr| expr.get("counter").and_then(|c| c["packets"].as_u64()))
        .sum()
}
