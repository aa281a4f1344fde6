//! Benchmark: compiles a realistic policy for a 10,000-node tailnet and
//! prints the compile time and the size of each node's filter.
//!
//! `cargo run --release -p causeway-tailnet --example policy_compile [NODES]`
//! (without NODES: 1,000 as the baseline, then 10,000, in one run)
//!
//! The tailnet: 3 nodes per user, users in 20 teams (groups), 10% of nodes
//! tagged servers in 10 services plus databases, 4 subnet routers and 2
//! exit nodes. The policy: 48 ACLs (each team to its services, ops to
//! everything on 22, services to their databases, everyone to their own
//! devices, to the VPC behind the routers and to the internet).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use causeway_tailnet::policy::{Policy, PolicyNode, compile};
use causeway_wire::NodeId;

const TEAMS: usize = 20;
const SERVICES: usize = 10;

fn main() {
    let sizes: Vec<usize> = match std::env::args().nth(1).and_then(|a| a.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1_000, 10_000],
    };
    let text = policy_text();
    for count in sizes {
        run(&text, count);
    }
}

fn run(text: &str, count: usize) {
    let started = Instant::now();
    let policy = Policy::parse(text).expect("the benchmark policy is valid");
    let parse_time = started.elapsed();
    let nodes = tailnet(count);
    let started = Instant::now();
    let ula = "fd00::/48".parse().expect("valid prefix");
    let compiled = compile(&policy, ula, &nodes);
    let compile_time = started.elapsed();

    let mut rules: Vec<usize> = Vec::new();
    let mut bytes: Vec<usize> = Vec::new();
    let mut peers: Vec<usize> = Vec::new();
    for node in compiled.values() {
        rules.push(node.filter.rules.len());
        bytes.push(
            serde_json::to_vec(&node.filter)
                .expect("filters serialise")
                .len(),
        );
        peers.push(node.peers.len());
    }
    println!(
        "nodes {count}, acls {}, policy parse {:.2} ms, compile {:.1} ms",
        policy.rules.len(),
        parse_time.as_secs_f64() * 1e3,
        compile_time.as_secs_f64() * 1e3
    );
    report("filter rules per node", &mut rules);
    report("filter JSON bytes per node", &mut bytes);
    report("visible peers per node", &mut peers);
}

fn report(what: &str, values: &mut [usize]) {
    values.sort_unstable();
    let total: usize = values.iter().sum();
    let mean = total as f64 / values.len().max(1) as f64;
    let median = values.get(values.len() / 2).copied().unwrap_or(0);
    let max = values.last().copied().unwrap_or(0);
    println!("{what}: mean {mean:.0}, median {median}, max {max}, total {total}");
}

fn policy_text() -> String {
    let mut groups = String::new();
    let users_per_team = 10_000 / 3 / TEAMS + 1;
    for t in 0..TEAMS {
        let members: Vec<String> = (0..users_per_team)
            .map(|u| format!("\"user{}@example.com\"", t * users_per_team + u))
            .collect();
        let _ = write!(groups, "\"group:team{t}\": [{}],", members.join(","));
    }
    let _ = write!(
        groups,
        "\"group:ops\": [\"user0@example.com\", \"user1@example.com\"],"
    );
    let mut owners = String::from(
        "\"tag:db\": [\"group:ops\"], \"tag:router\": [\"group:ops\"], \"tag:exit\": [\"group:ops\"],",
    );
    for s in 0..SERVICES {
        let _ = write!(owners, "\"tag:svc{s}\": [\"group:ops\"],");
    }
    let mut acls = String::new();
    for t in 0..TEAMS {
        // Each team reaches two services on HTTPS and one on a port range.
        let a = t % SERVICES;
        let b = (t + 3) % SERVICES;
        let _ = write!(
            acls,
            "{{\"action\": \"accept\", \"src\": [\"group:team{t}\"], \"dst\": [\"tag:svc{a}:443\", \"tag:svc{b}:443,8000-8100\"]}},"
        );
        let _ = write!(
            acls,
            "{{\"action\": \"accept\", \"src\": [\"group:team{t}\"], \"dst\": [\"10.{t}.0.0/16:5432\"]}},"
        );
    }
    for s in 0..SERVICES / 2 {
        let _ = write!(
            acls,
            "{{\"action\": \"accept\", \"src\": [\"tag:svc{s}\"], \"dst\": [\"tag:db:5432\"]}},"
        );
    }
    acls.push_str(
        r#"{"action": "accept", "src": ["group:ops"], "dst": ["autogroup:tagged:22"]},
           {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
           {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:internet:*"]},"#,
    );
    format!(
        r#"{{
  "groups": {{{groups}}},
  "tagOwners": {{{owners}}},
  "hosts": {{"vpc": "10.0.0.0/8"}},
  "autoApprovers": {{"routes": {{"10.0.0.0/8": ["tag:router"]}}, "exitNode": ["tag:exit"]}},
  "acls": [{acls}],
  "tests": [{{"src": "user0@example.com", "accept": ["tag:svc0:443", "10.0.0.1:5432"], "deny": ["tag:db:5432"]}}],
}}"#
    )
}

fn tailnet(count: usize) -> Vec<PolicyNode> {
    (0..count)
        .map(|i| {
            let n = u32::try_from(i).expect("fewer than 2^32 nodes") + 1;
            let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + n);
            let v6 = Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(n)); // in fd00::/48
            let addrs = [IpAddr::V4(v4), IpAddr::V6(v6)];
            let id = NodeId(u64::from(n));
            match i % 100 {
                0..=6 => PolicyNode::new(id, addrs, &[format!("tag:svc{}", i % SERVICES)], None),
                7..=8 => PolicyNode::new(id, addrs, &["tag:db".into()], None),
                9 if i < 400 => PolicyNode::new(id, addrs, &["tag:router".into()], None)
                    .with_routes([format!("10.{}.0.0/16", i / 100).parse().expect("prefix")]),
                9 if i < 600 => {
                    PolicyNode::new(id, addrs, &["tag:exit".into()], None).with_routes([
                        "0.0.0.0/0".parse().expect("prefix"),
                        "::/0".parse().expect("prefix"),
                    ])
                }
                _ => {
                    let user = format!("user{}@example.com", i / 3);
                    PolicyNode::new(id, addrs, &[], Some(&user))
                }
            }
        })
        .collect()
}
