//! A local HA pair end to end: `deploy --ha` runs two subnet routers for
//! the same VPC subnet, both approved, one primary by control's word. The
//! client reaches the VPC through the primary; after `kill -9` of the
//! primary's appliance it reaches it again through the other router, and
//! `status` names the new primary. The old primary, started again, comes
//! back as standby: the route stays where it is (sticky).
//!
//! No timing is asserted: the waits are generous deadlines (the failover
//! benchmark measures the gap).

use std::collections::BTreeMap;
use std::time::Duration;

use causeway_e2e::local::{self, Node, RouterStatus, Site, StatusReport};
use causeway_e2e::{
    DB_GREETING, TestDeployment, VPC_URL, WAIT, pid_alive, tailnet_ipv4, wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the pair may take to move the route after the primary dies.
const FAILOVER_WAIT: Duration = Duration::from_secs(90);

#[test]
fn ha_pair_fails_over_when_the_primary_is_killed() {
    let t = TestDeployment::deploy_with(|o| o.ha = true);
    let opts = t.dep().options().clone();
    assert_eq!(
        t.dep().topology().routers().len(),
        2,
        "--ha plans two routers"
    );
    let vpc_addr = |node| vpc_addr_of(&t, node);

    // Both routers run and are approved; exactly one is primary.
    let report = local::status(&opts).expect("status");
    assert!(report.healthy, "{}", report.render());
    let primary = sole_primary(&report);
    let standby = other(primary);
    assert_eq!(
        roles(&report),
        BTreeMap::from([
            (primary, "primary".to_owned()),
            (standby, "standby".to_owned())
        ]),
        "{}",
        report.render()
    );

    // Traffic flows through the primary: the VPC host sees its VPC address
    // (SNAT is on for the pair).
    assert_eq!(
        t.dep().query_db(Site::Cli).expect("psql from the client"),
        DB_GREETING
    );
    assert_eq!(
        seen_from(&t, "before").expect("HTTP from the client"),
        vpc_addr(primary)
    );

    // kill -9 the primary's appliance, as the failover benchmark does.
    let victim = t.process(primary.as_str());
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).expect("SIGKILL the primary");
    wait_until(WAIT, "the killed primary to be gone", || {
        anyhow::ensure!(!pid_alive(victim.pid), "pid {} still runs", victim.pid);
        Ok(())
    });

    // Traffic flows again, now through the other router.
    let mut n = 0;
    wait_until(
        FAILOVER_WAIT,
        "the VPC to answer through the standby",
        || {
            n += 1;
            let from = seen_from(&t, &format!("after-{n}"))?;
            anyhow::ensure!(from == vpc_addr(standby), "answered via {from}");
            Ok(())
        },
    );
    assert_eq!(
        t.dep().query_db(Site::Cli).expect("psql after failover"),
        DB_GREETING
    );

    // status names the new primary and the old one offline.
    let report = wait_until(WAIT, "status to name the new primary", || {
        let report = local::status(&opts)?;
        let want = BTreeMap::from([
            (primary, "offline".to_owned()),
            (standby, "primary".to_owned()),
        ]);
        anyhow::ensure!(roles(&report) == want, "{}", report.render());
        Ok(report)
    });
    assert!(
        !report.healthy,
        "a dead router must make the deployment unhealthy:\n{}",
        report.render()
    );
    let text = report.render();
    assert!(
        text.contains(&format!(
            "primary for 198.19.1.0/24: {} ({})",
            standby.as_str(),
            t.dep().namespace(site_of(standby))
        )),
        "{text}"
    );

    // The old primary comes back as standby: the route stays (sticky).
    t.respawn_node(primary);
    let report = wait_until(WAIT, "the old primary to rejoin", || {
        let report = local::status(&opts)?;
        anyhow::ensure!(report.healthy, "{}", report.render());
        Ok(report)
    });
    assert_eq!(
        roles(&report),
        BTreeMap::from([
            (primary, "standby".to_owned()),
            (standby, "primary".to_owned())
        ]),
        "the new primary should keep the route when the old one returns \
         (if primary selection now fails back by design, update this test and \
         docs/quickstart.md):\n{}",
        report.render()
    );
    assert_eq!(
        seen_from(&t, "rejoined").expect("HTTP after the old primary rejoined"),
        vpc_addr(standby)
    );
    t.finish();
}

/// `--no-snat`: the VPC host sees the client's own tailnet address, and the
/// VPC namespace's `100.64.0.0/10` route (the local route table) follows
/// the primary when it is killed.
#[test]
fn without_snat_the_vpc_route_follows_the_primary() {
    let t = TestDeployment::deploy_with(|o| {
        o.ha = true;
        o.snat = false;
    });
    let opts = t.dep().options().clone();
    let vpc_addr = |node| vpc_addr_of(&t, node);
    let client = tailnet_ipv4(&t.status(Node::Client).expect("client status"))
        .expect("the client's tailnet address");
    let report = local::status(&opts).expect("status");
    assert!(report.healthy, "{}", report.render());
    let primary = sole_primary(&report);
    let standby = other(primary);
    let route = report
        .vpc_return_route
        .clone()
        .expect("a return route report");
    assert_eq!(route.router.as_deref(), Some(primary.as_str()), "{route:?}");
    assert!(
        report
            .render()
            .contains(&format!("via {} ", vpc_addr(primary))),
        "{}",
        report.render()
    );
    assert_eq!(seen_from(&t, "before").expect("HTTP"), client);

    let victim = t.process(primary.as_str());
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).expect("SIGKILL the primary");
    let mut n = 0;
    wait_until(FAILOVER_WAIT, "the VPC route to follow the standby", || {
        n += 1;
        let shown = t
            .run_in(Site::Vpc, &["ip", "route", "show", "100.64.0.0/10"])
            .expect_success()
            .stdout;
        anyhow::ensure!(
            shown.contains(&format!("via {} ", vpc_addr(standby))),
            "{shown}"
        );
        let from = seen_from(&t, &format!("after-{n}"))?;
        anyhow::ensure!(from == client, "the VPC host saw {from}");
        Ok(())
    });
    assert_eq!(
        t.dep().query_db(Site::Cli).expect("psql after failover"),
        DB_GREETING
    );
    // The standby's appliance says it moved the route.
    let status = t.status(standby).expect("standby status");
    let table = format!("netns:{}", t.dep().namespace(Site::Vpc));
    assert_eq!(
        status["vpc_routes"][&table]["ok"], true,
        "{}",
        status["vpc_routes"]
    );
    t.finish();
}

/// Fetches the VPC page from the client with a unique query string and
/// returns the source address the VPC web server logged for it: the VPC
/// address of the router that carried it.
fn seen_from(t: &TestDeployment, tag: &str) -> anyhow::Result<String> {
    let url = format!("{VPC_URL}?probe={tag}");
    let ran = t.curl(Site::Cli, &url, 3);
    anyhow::ensure!(ran.success(), "{ran}");
    let log = std::fs::read_to_string(t.dep().paths().http_log())?;
    let needle = format!("\"GET /?probe={tag} ");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&needle))
        .ok_or_else(|| anyhow::anyhow!("the web server logged no {needle}"))?;
    Ok(line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The router control names primary; fails the test unless exactly one is.
fn sole_primary(report: &StatusReport) -> Node {
    local::ha::sole_primary(&report.routers)
        .unwrap_or_else(|| panic!("no single primary:\n{}", report.render()))
        .node
}

/// The VPC-side address of router `node`.
fn vpc_addr_of(t: &TestDeployment, node: Node) -> &'static str {
    t.dep()
        .topology()
        .routers()
        .iter()
        .find(|r| r.key == node.as_str())
        .map(|r| r.vpc_addr)
        .unwrap_or_else(|| panic!("no router {node:?} in the plan"))
}

fn roles(report: &StatusReport) -> BTreeMap<Node, String> {
    report
        .routers
        .iter()
        .map(|r: &RouterStatus| (r.node, r.ha_role.clone()))
        .collect()
}

fn other(node: Node) -> Node {
    match node {
        Node::Router => Node::Router2,
        Node::Router2 => Node::Router,
        Node::Exit | Node::Connector | Node::Client => {
            panic!("{} is not a subnet router", node.as_str())
        }
    }
}

fn site_of(node: Node) -> Site {
    local::node_site(node)
}
