//! Policy enforced on every node, end to end: a subnet router in front of a
//! VPC host that serves PostgreSQL (5432) and HTTP (80), and two clients
//! with different identities. Client A (a node of `dba@example.com`, in
//! `group:dba`) may reach 5432 only,
//! client B (`tag:web-clients`) port 80 only; each sees its port work and
//! the other refused by the router's packet filter. Then `admin policy set`
//! swaps their access on the running nodes, and the test prints how long
//! that took to take effect.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use causeway_e2e::local::services::{self, DB_QUERY};
use causeway_e2e::local::topology::VPC_HOST_ADDR;
use causeway_e2e::local::{Netns, Node, Secret, Site};
use causeway_e2e::{
    DB_GREETING, HTTP_GREETING, TestDeployment, VPC_SUBNET, VPC_URL, WAIT, has_kernel_route, peer,
    run, wait_until,
};

/// The user whose node is in `group:dba`.
const DBA: &str = "dba@example.com";

/// The VPC host behind the router.
const VPC_HOST: &str = "198.19.1.10";

/// A policy that lets `group:dba` reach the VPC subnet on
/// `dba_port` only and `tag:web-clients` on `web_port` only, with `tests`
/// that say so (control refuses the policy if they fail).
fn policy(dba_port: u16, web_port: u16) -> String {
    format!(
        r#"{{
  "groups": {{"group:dba": ["{DBA}"]}},
  "tagOwners": {{
    "tag:subnet-router": ["autogroup:admin"],
    "tag:web-clients": ["autogroup:admin"],
  }},
  "autoApprovers": {{"routes": {{"{VPC_SUBNET}": ["tag:subnet-router"]}}}},
  "acls": [
    {{"action": "accept", "src": ["group:dba"], "dst": ["{VPC_SUBNET}:{dba_port}"]}},
    {{"action": "accept", "src": ["tag:web-clients"], "dst": ["{VPC_SUBNET}:{web_port}"]}},
  ],
  "tests": [
    {{"src": "{DBA}", "accept": ["{VPC_HOST}:{dba_port}"], "deny": ["{VPC_HOST}:{web_port}"]}},
    {{"src": "tag:web-clients", "accept": ["{VPC_HOST}:{web_port}"], "deny": ["{VPC_HOST}:{dba_port}"]}},
  ],
}}
"#
    )
}

/// One extra client in a namespace of its own on the public bridge.
struct Client {
    hostname: &'static str,
    ns: Netns,
    state_dir: PathBuf,
}

impl Client {
    /// Starts an appliance for `who` in a new namespace at `addr`: a tag (`tag:web-clients`) or a user (`dba@example.com`).
    fn start(t: &mut TestDeployment, hostname: &'static str, addr: &str, who: &str) -> Self {
        let ns = t.add_bridge_namespace(hostname, &format!("{addr}/24"));
        let flag = if who.starts_with("tag:") {
            "--tag"
        } else {
            "--user"
        };
        let created = t.admin_json(&["keys", "create", flag, who]);
        let key = created["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key in {created}"));
        let endpoint = format!("{addr}:41641").parse().expect("a socket address");
        let node = t.write_extra_node(hostname, key, endpoint, "cw0", true);
        t.start_extra_node(&node, &ns);
        let state_dir = node.state_dir;
        Self {
            hostname,
            ns,
            state_dir,
        }
    }

    /// Whether a TCP connection to the VPC host's `port` opens within
    /// 0.25 s (a dropped SYN is retransmitted after 1 s, so a refusal by
    /// the filter shows as a timeout; an allowed connection on this
    /// machine takes milliseconds).
    fn connects(&self, port: u16) -> bool {
        let mut cmd = self.ns.command("timeout");
        cmd.args([
            "0.25",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{VPC_HOST}/{port}"),
        ]);
        run(&mut cmd, Duration::from_secs(5)).success()
    }

    /// `psql` against the VPC database, for the real protocol.
    fn query_db(&self, t: &TestDeployment) -> anyhow::Result<String> {
        let password = Secret::read(&t.dep().paths().pg_password())?;
        services::query(
            &self.ns,
            VPC_HOST_ADDR,
            t.dep().pg_bin_dir(),
            &password,
            DB_QUERY,
        )
    }

    /// `curl` of the VPC page.
    fn fetch_page(&self) -> anyhow::Result<String> {
        services::http_get(&self.ns, VPC_URL)
    }

    fn wait_running(&self, t: &TestDeployment) {
        wait_until(
            WAIT,
            &format!("{} to run with the VPC route", self.hostname),
            || {
                let s = t.status_at(Site::Cli, &self.state_dir)?;
                anyhow::ensure!(s["state"] == "running", "{s}");
                anyhow::ensure!(has_kernel_route(&s, VPC_SUBNET), "no VPC route: {s}");
                peer(&s, "router")?;
                Ok(())
            },
        );
    }
}

fn set_policy(t: &TestDeployment, dir: &Path, name: &str, text: &str) {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("writing the policy");
    let path = file.to_str().expect("a UTF-8 path");
    t.admin(&["policy", "set", path]).expect_success();
}

/// Reads one sample of `name{labels}` from the router's metrics.
fn router_metric(t: &TestDeployment, series: &str) -> Option<u64> {
    let metrics = t
        .curl(Site::Rtr, "http://127.0.0.1:9100/metrics", 5)
        .expect_success()
        .stdout;
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn policy_limits_each_client_to_its_port_and_a_change_swaps_them_live() {
    let mut t = TestDeployment::deploy();
    let dir = tempfile::tempdir().expect("tempdir");
    set_policy(&t, dir.path(), "dba.hujson", &policy(5432, 80));

    let a = Client::start(&mut t, "dba", "198.18.0.61", DBA);
    let b = Client::start(&mut t, "web", "198.18.0.62", "tag:web-clients");
    a.wait_running(&t);
    b.wait_running(&t);

    // Each client sees only the router: neither may reach the other.
    let status_a = t.status_at(Site::Cli, &a.state_dir).expect("A's status");
    assert!(peer(&status_a, "web").is_err(), "A sees B: {status_a}");
    assert!(
        peer(&status_a, "client").is_err(),
        "A sees the client: {status_a}"
    );
    // The router enforces a filter for its own addresses and the VPC subnet.
    let router = t.status(Node::Router).expect("router status");
    assert_eq!(router["filter_rules"], 2, "{router}");
    let served: Vec<&str> = router["served_prefixes"]
        .as_array()
        .expect("served_prefixes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(served.contains(&VPC_SUBNET), "{router}");

    // A: PostgreSQL works, HTTP is refused.
    let row = a.query_db(&t).expect("psql from A");
    assert_eq!(row, DB_GREETING);
    assert!(!a.connects(80), "A reached port 80");
    assert!(a.fetch_page().is_err(), "A fetched the page");
    // B: HTTP works, PostgreSQL is refused.
    let page = b.fetch_page().expect("HTTP from B");
    assert!(page.contains(HTTP_GREETING), "{page}");
    assert!(!b.connects(5432), "B reached port 5432");
    assert!(b.query_db(&t).is_err(), "B queried the database");

    let filtered = router_metric(&t, "causeway_packets_dropped_total{reason=\"filtered\"}");
    assert!(
        filtered.is_some_and(|n| n > 0),
        "no filtered drops: {filtered:?}"
    );
    assert_eq!(
        router_metric(&t, "causeway_packet_filter_rules "),
        Some(2),
        "the router's metrics show its filter"
    );
    let status_text = t
        .run_in(
            Site::Rtr,
            &[
                t.appliance_bin().to_str().expect("UTF-8 path"),
                "status",
                "--state-dir",
                t.dep()
                    .paths()
                    .node_dir(Node::Router)
                    .to_str()
                    .expect("UTF-8 path"),
            ],
        )
        .expect_success()
        .stdout;
    assert!(status_text.contains("filtered "), "{status_text}");
    assert!(status_text.contains("filter    2 rules"), "{status_text}");

    // Swap access on the running nodes and time it: until both new
    // accesses work (each probe gives up after 0.25 s, so that is the
    // resolution), then check that the old ones are gone.
    let started = Instant::now();
    set_policy(&t, dir.path(), "swapped.hujson", &policy(80, 5432));
    let set_took = started.elapsed();
    let deadline = Duration::from_secs(10);
    while !(a.connects(80) && b.connects(5432)) {
        assert!(
            started.elapsed() < deadline,
            "the policy change did not take effect within {deadline:?}\nA: {}\nB: {}",
            serde_json::to_string(&t.status_at(Site::Cli, &a.state_dir).ok()).unwrap_or_default(),
            serde_json::to_string(&t.status_at(Site::Cli, &b.state_dir).ok()).unwrap_or_default(),
        );
    }
    let took = started.elapsed();
    eprintln!(
        "policy change took effect {:.2} s after `admin policy set` started ({:.2} s of it the command itself)",
        took.as_secs_f64(),
        set_took.as_secs_f64()
    );
    assert!(!a.connects(5432), "A still reaches 5432 after the swap");
    assert!(!b.connects(80), "B still reaches 80 after the swap");

    // The real protocols agree.
    let page = a.fetch_page().expect("HTTP from A after the swap");
    assert!(page.contains(HTTP_GREETING), "{page}");
    assert_eq!(
        b.query_db(&t).expect("psql from B after the swap"),
        DB_GREETING
    );
    assert!(a.query_db(&t).is_err(), "A still queried the database");
    assert!(b.fetch_page().is_err(), "B still fetched the page");

    // Nobody restarted: the router and both clients kept their processes.
    for key in ["router", a.hostname, b.hostname] {
        assert!(t.process(key).is_alive(), "{key} is not running");
    }
    t.finish();
}
