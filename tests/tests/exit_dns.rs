//! DNS through the exit node: while a client routes through an exit node,
//! its lookups are answered by the exit node's resolver, not the one its
//! own `resolv.conf` names; with `exit_node = "none"` (or
//! `exit_node_dns = false`) they are not; a peer the policy does not let
//! use the exit node gets no DNS answer from it.
//!
//! Topology, beside the usual deployment (control, router, client on the
//! public bridge 198.18.0.0/24):
//!
//! ```text
//! inet     198.18.0.250 (bridge) + 198.18.100.53 ("the internet")
//!          dnsmasq on 198.18.100.53: probe.example = 203.0.113.80 (the
//!            exit node's resolver, named in exit1's resolv.conf)
//!          dnsmasq on 198.18.0.250:  probe.example = 192.0.2.53 (the
//!            client's LAN resolver, named in the client's resolv.conf)
//! exit1    198.18.0.21: `[exit_node]`, route to 198.18.100.0/24 via inet
//! stranger 198.18.0.23: a peer allowed only ICMP to exit1
//! ```

use causeway_e2e::local::{Netns, Node, Site};
use causeway_e2e::{ExtraNode, TestDeployment, WAIT, internet, run, tailnet_ipv4, wait_until};

const INTERNET_RESOLVER: &str = "198.18.100.53";
const LAN_RESOLVER: &str = "198.18.0.250";
const EXIT_ADDR: &str = "198.18.0.21";
const STRANGER_ADDR: &str = "198.18.0.23";
/// What each resolver answers for [`NAME`].
const EXIT_ANSWER: &str = "203.0.113.80";
const LAN_ANSWER: &str = "192.0.2.53";
const NAME: &str = "probe.example";

#[test]
fn a_client_resolves_through_its_exit_node_and_a_stranger_gets_no_answer() {
    let mut t = TestDeployment::deploy();
    let root = t.dep().paths().root().to_owned();

    // The internet's resolver and the client's LAN resolver.
    let inet = t.add_bridge_namespace("inet", &format!("{LAN_RESOLVER}/24"));
    inet.ip(&["link", "set", "dev", "lo", "up"])
        .expect("loopback up");
    inet.ip(&[
        "addr",
        "add",
        &format!("{INTERNET_RESOLVER}/32"),
        "dev",
        "lo",
    ])
    .expect("the internet resolver's address");
    let internet_log = root.join("internet-dns.log");
    for (key, listen, answer, log) in [
        (
            "internet-dns",
            INTERNET_RESOLVER,
            EXIT_ANSWER,
            &internet_log,
        ),
        (
            "lan-dns",
            LAN_RESOLVER,
            LAN_ANSWER,
            &root.join("lan-dns.log"),
        ),
    ] {
        let mut dnsmasq = internet::dnsmasq(&inet, listen, NAME, answer);
        dnsmasq.args([
            "--log-queries".to_owned(),
            format!("--log-facility={}", log.display()),
        ]);
        t.spawn_recorded(
            key,
            inet.name(),
            &mut dnsmasq,
            &root.join(format!("{key}.out")),
        );
    }
    // This test is about the exit node's forwarder and the client's
    // redirect, not the node resolver: the client resolves with its
    // namespace's own resolv.conf, written here.
    t.restart_node_with_config(Node::Client, |old| old.replace("dns_resolver = true\n", ""));
    let cli_ns = t.dep().netns(Site::Cli).name().to_owned();
    t.write_netns_file(
        &cli_ns,
        "resolv.conf",
        &format!("nameserver {LAN_RESOLVER}\n"),
    );
    let lan = wait_until(WAIT, "the LAN resolver to answer the client", || {
        lookup(&t, NAME)
    });
    assert_eq!(
        lan, LAN_ANSWER,
        "without an exit node the LAN resolver answers"
    );

    // The exit node, whose own resolv.conf names the internet's resolver
    // (written before it starts: `ip netns exec` mounts it then).
    let key = t.admin_json(&["keys", "create", "--reusable"])["key"]
        .as_str()
        .expect("an auth key")
        .to_owned();
    let exit_ns = t.add_bridge_namespace("x1", &format!("{EXIT_ADDR}/24"));
    exit_ns
        .ip(&["route", "add", "198.18.100.0/24", "via", LAN_RESOLVER])
        .expect("the exit node's uplink route");
    let exit_ns_name = exit_ns.name().to_owned();
    t.write_netns_file(
        &exit_ns_name,
        "resolv.conf",
        &format!("nameserver {INTERNET_RESOLVER}\n"),
    );
    let exit = t.write_extra_node(
        "exit1",
        &key,
        format!("{EXIT_ADDR}:41641")
            .parse()
            .expect("a socket address"),
        "cw0",
        false,
    );
    causeway_e2e::rewrite_file(&exit.config, |old| format!("{old}\n[exit_node]\n"));
    let exit_status = start_running(&t, &exit, &exit_ns);
    let exit_tailnet = tailnet_ipv4(&exit_status).expect("exit1's tailnet address");
    for prefix in ["0.0.0.0/0", "::/0"] {
        t.admin(&["routes", "approve", "exit1", prefix])
            .expect_success();
    }

    // A stranger: a peer the policy lets ping exit1, nothing more.
    let stranger_ns = t.add_bridge_namespace("st", &format!("{STRANGER_ADDR}/24"));
    let stranger = t.write_extra_node(
        "stranger",
        &key,
        format!("{STRANGER_ADDR}:41641")
            .parse()
            .expect("a socket address"),
        "cw0",
        false,
    );
    let stranger_status = start_running(&t, &stranger, &stranger_ns);
    let stranger_tailnet = tailnet_ipv4(&stranger_status).expect("the stranger's address");
    let client_tailnet =
        tailnet_ipv4(&t.status(Node::Client).expect("client status")).expect("client address");
    let policy = root.join("exit-dns-policy.hujson");
    std::fs::write(
        &policy,
        format!(
            r#"{{"acls": [
                {{"action": "accept", "src": ["{client_tailnet}"], "dst": ["autogroup:internet:*"]}},
                {{"action": "accept", "src": ["{stranger_tailnet}"], "proto": "icmp", "dst": ["{exit_tailnet}:*"]}}
            ]}}"#
        ),
    )
    .expect("writing the policy");
    t.admin(&["policy", "set", policy.to_str().expect("a UTF-8 path")])
        .expect_success();

    // Through the exit node: its resolver answers, and logs the query
    // from the exit node's own (uplink) address.
    let client_dir = t.dep().paths().node_dir(Node::Client);
    t.set_exit_node(&client_dir, "exit1");
    let via_exit = wait_until(
        WAIT,
        "the exit node's resolver to answer the client",
        || expect_answer(lookup(&t, NAME)?, EXIT_ANSWER),
    );
    assert_eq!(via_exit, EXIT_ANSWER);
    let logged = std::fs::read_to_string(&internet_log).expect("the resolver's log");
    assert!(
        logged.contains(&format!("query[A] {NAME} from {EXIT_ADDR}")),
        "the internet's resolver did not see the exit node ask: {logged}"
    );
    // TCP is redirected too, and the forwarder answers a direct query.
    assert_eq!(
        dig(&t, Site::Cli, &[&format!("@{LAN_RESOLVER}"), "+tcp"]).expect("DNS over TCP"),
        EXIT_ANSWER
    );
    assert_eq!(
        dig(&t, Site::Cli, &[&format!("@{exit_tailnet}")]).expect("a direct query"),
        EXIT_ANSWER
    );
    t.run_in(
        Site::Cli,
        &["nft", "list", "table", "inet", "causeway-exit-dns"],
    )
    .expect_success();
    let through_exit = query_times(&t, LAN_RESOLVER);

    // The stranger reaches exit1 (ping) but gets no DNS answer from it,
    // over UDP or TCP.
    wait_until(WAIT, "the stranger to ping exit1", || {
        let mut ping = stranger_ns.command("ping");
        ping.args(["-c", "1", "-W", "2", &exit_tailnet]);
        let ran = run(&mut ping, WAIT);
        anyhow::ensure!(ran.success(), "{ran}");
        Ok(())
    });
    for transport in ["+notcp", "+tcp"] {
        let mut query = stranger_ns.command("dig");
        query.args([
            &format!("@{exit_tailnet}"),
            transport,
            "+time=2",
            "+tries=1",
            "+short",
            NAME,
        ]);
        let ran = run(&mut query, WAIT);
        assert!(
            !ran.success() && !ran.stdout.contains(EXIT_ANSWER),
            "the stranger got a DNS answer ({transport}): {ran}"
        );
    }

    // `exit_node_dns = false`: traffic still goes through the exit node,
    // but lookups go to the client's own resolver, and there is no redirect.
    t.restart_node_with_config(Node::Client, |old| {
        old.replace(
            "[node]\n",
            "[node]\nexit_node = \"exit1\"\nexit_node_dns = false\n",
        )
    });
    wait_until(WAIT, "the client to route through exit1 again", || {
        let s = t.status(Node::Client)?;
        anyhow::ensure!(s["exit_node"]["routing_all"] == true, "{}", s["exit_node"]);
        Ok(())
    });
    let own = wait_until(
        WAIT,
        "the LAN resolver to answer through the tunnel",
        || expect_answer(lookup(&t, NAME)?, LAN_ANSWER),
    );
    assert_eq!(own, LAN_ANSWER);
    assert!(
        !redirect_exists(&t),
        "a redirect with exit_node_dns = false"
    );

    // Back on: redirected; then `none`: the LAN answers and the table goes.
    t.restart_node_with_config(Node::Client, |old| {
        old.replace("exit_node_dns = false\n", "")
    });
    wait_until(
        WAIT,
        "the exit node's resolver to answer after the restart",
        || expect_answer(lookup(&t, NAME)?, EXIT_ANSWER),
    );
    t.set_exit_node(&client_dir, "none");
    let again = wait_until(WAIT, "the LAN resolver to answer again", || {
        expect_answer(lookup(&t, NAME)?, LAN_ANSWER)
    });
    assert_eq!(again, LAN_ANSWER);
    assert!(!redirect_exists(&t), "the redirect outlived the exit node");

    // With the node resolver on, the namespace's resolv.conf names
    // 100.100.100.100 (which the redirect leaves alone). While exit1 is
    // in use the resolver sends names outside the tailnet to exit1's
    // forwarder; with `none`, to the LAN resolver the namespace had.
    t.restart_node_with_config(Node::Client, |old| {
        old.replace("[node]\n", "[node]\ndns_resolver = true\n")
    });
    wait_until(
        WAIT,
        "the exit node's resolver through the node resolver",
        || expect_answer(lookup(&t, NAME)?, EXIT_ANSWER),
    );
    t.set_exit_node(&client_dir, "none");
    wait_until(WAIT, "the LAN resolver through the node resolver", || {
        expect_answer(lookup(&t, NAME)?, LAN_ANSWER)
    });
    t.set_exit_node(&client_dir, "exit1");
    wait_until(
        WAIT,
        "the exit node's resolver through the node resolver again",
        || expect_answer(lookup(&t, NAME)?, EXIT_ANSWER),
    );
    // Figures, not assertions: what the detour through the exit node costs.
    let direct = query_times(&t, LAN_RESOLVER);
    eprintln!(
        "DNS query time (dig, ms, {QUERIES} queries): through the exit node min {} median {}; LAN resolver direct min {} median {}",
        through_exit[0],
        through_exit[QUERIES / 2],
        direct[0],
        direct[QUERIES / 2]
    );

    t.finish();
}

/// Starts an extra node in `ns` and returns its status once it runs.
fn start_running(t: &TestDeployment, node: &ExtraNode, ns: &Netns) -> serde_json::Value {
    t.start_extra_node(node, ns);
    wait_until(WAIT, &format!("{} to run", node.hostname), || {
        let s = t.status_in(ns, &node.state_dir)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        Ok(s)
    })
}

/// The first IPv4 address the client's C library finds for `name`.
fn lookup(t: &TestDeployment, name: &str) -> anyhow::Result<String> {
    t.resolve(Site::Cli, name)
}

/// `dig +short NAME` with `args`, from `site`.
fn dig(t: &TestDeployment, site: Site, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = t.command_in(site, "dig");
    cmd.args(["+time=2", "+tries=1", "+short"])
        .args(args)
        .arg(NAME);
    let ran = run(&mut cmd, WAIT);
    anyhow::ensure!(ran.success(), "{ran}");
    Ok(ran.stdout.trim().to_owned())
}

/// Queries timed for the figures.
const QUERIES: usize = 20;

/// dig's own "Query time" for [`QUERIES`] queries to `server` from the
/// client, sorted.
fn query_times(t: &TestDeployment, server: &str) -> Vec<u64> {
    let mut times: Vec<u64> = (0..QUERIES)
        .map(|_| {
            let mut cmd = t.command_in(Site::Cli, "dig");
            cmd.args(["+time=2", "+tries=1", &format!("@{server}"), NAME]);
            let ran = run(&mut cmd, WAIT).expect_success();
            ran.stdout
                .lines()
                .find_map(|l| l.strip_prefix(";; Query time: "))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("no query time in {ran}"))
        })
        .collect();
    times.sort_unstable();
    times
}

fn expect_answer(got: String, want: &str) -> anyhow::Result<String> {
    anyhow::ensure!(got == want, "resolved to {got}, expected {want}");
    Ok(got)
}

fn redirect_exists(t: &TestDeployment) -> bool {
    t.run_in(
        Site::Cli,
        &["nft", "list", "table", "inet", "causeway-exit-dns"],
    )
    .success()
}
