//! App connectors: a client fetches names under `*.apps.example` that only
//! the connector can reach. The client's node resolver sends their queries
//! to the connector (split DNS control made from the connector's domains);
//! the connector resolves them, routes the addresses it saw (approved by
//! the policy's `autoApprovers`), and forwards the client's traffic,
//! masqueraded. Routes are coalesced, capped, expire after the TTL and go
//! when the domain is removed.
//!
//! Topology: the usual deployment, and beside it the internet and the
//! connector of `causeway_e2e::connector`. The apps are 198.18.100.11-.15
//! (one echo server answering with the caller's address), served with a
//! TTL of 4 s; the connector serves `*.apps.example` and
//! `solo.other.example` with a floor of 1 s and a cap of 3 addresses. The
//! client has no route to the apps but through the connector.

use std::time::Duration;

use causeway_e2e::connector::{self, CONNECTOR_ADDR, strings};
use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, WAIT, internet, rewrite_file, tailnet_ipv4, wait_until};
use serde_json::Value;

/// The TTL of the apps' records; the connector's floor is below it.
const TTL_SECS: u32 = 4;
/// The connector's cap on addresses.
const MAX_ROUTES: usize = 3;

#[test]
fn a_client_reaches_apps_by_name_through_the_connector_whose_routes_follow_dns() {
    let mut t = TestDeployment::deploy();
    let apps: Vec<String> = (11..=15).map(|last| format!("198.18.100.{last}")).collect();
    let site = connector::start(
        &mut t,
        &hosts(&[("a", 11), ("b", 12), ("c", 13), ("d", 14)]),
        &apps,
        TTL_SECS,
        &format!(
            "domains = [\"*.apps.example\", \"solo.other.example\"]\nroute_ttl_floor = \"1s\"\nmax_routes = {MAX_ROUTES}"
        ),
    );
    let connector_tailnet = tailnet_ipv4(&site.status).expect("the connector's address");

    // Control made its domains split DNS: the client's resolver asks it.
    wait_until(WAIT, "the client to learn the connector's domains", || {
        let ran = t.run_in(Site::Cli, &["getent", "ahostsv4", "a.apps.example"]);
        anyhow::ensure!(ran.success(), "{ran}");
        Ok(())
    });
    assert_eq!(
        t.resolve(Site::Cli, "a.apps.example").expect("a"),
        "198.18.100.11"
    );

    // By name, through the connector: the app sees the connector's address.
    for name in ["a", "b", "c"] {
        let url = format!("http://{name}.apps.example:8000/");
        let seen = internet::fetch(&t, &url).unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
        assert_eq!(
            seen, CONNECTOR_ADDR,
            "{url} was not reached through the connector"
        );
    }
    // Three addresses, coalesced where nothing else is covered.
    let s = site.status(&t).expect("status");
    assert_eq!(
        strings(&s["advertised_routes"]),
        ["198.18.100.11/32", "198.18.100.12/31"],
        "{s}"
    );
    assert_eq!(s["app_connector"]["addresses"], 3);

    // A fourth name is answered but not routed: the cap holds.
    assert_eq!(
        t.resolve(Site::Cli, "d.apps.example").expect("d"),
        "198.18.100.14"
    );
    let s = site.status(&t).expect("status");
    assert_eq!(s["app_connector"]["addresses"], MAX_ROUTES, "{s}");
    assert!(s["app_connector"]["over_cap"].as_u64() >= Some(1), "{s}");
    assert!(
        internet::fetch(&t, "http://d.apps.example:8000/").is_err(),
        "an address over the cap was reached"
    );

    // A name outside the connector's domains is refused by it.
    let mut outside = t.command_in(Site::Cli, "dig");
    outside.args([
        &format!("@{connector_tailnet}"),
        "+time=2",
        "+tries=1",
        "example.org",
    ]);
    let ran = causeway_e2e::run(&mut outside, WAIT);
    assert!(ran.stdout.contains("status: REFUSED"), "{ran}");

    // TTL: the routes expire (floor 1 s, TTL 4 s) and leave the client.
    wait_until(WAIT, "the connector's routes to expire", || {
        let s = site.status(&t)?;
        anyhow::ensure!(
            s["app_connector"]["addresses"] == 0,
            "{}",
            s["app_connector"]
        );
        Ok(())
    });
    wait_until(WAIT, "the client's routes to the apps to go", || {
        let s = t.status(Node::Client)?;
        let left = app_routes(&s);
        anyhow::ensure!(left.is_empty(), "still routed: {left:?}");
        Ok(())
    });

    // The address changes: the client gets the new one, and reaches it.
    site.set_hosts(&hosts(&[("a", 15), ("b", 12), ("c", 13), ("d", 14)]));
    let moved = wait_until(WAIT, "a.apps.example to move", || {
        let got = t.resolve(Site::Cli, "a.apps.example")?;
        anyhow::ensure!(got == "198.18.100.15", "still {got}");
        Ok(got)
    });
    assert_eq!(moved, "198.18.100.15");
    assert_eq!(
        internet::fetch(&t, "http://a.apps.example:8000/").expect("the moved app"),
        CONNECTOR_ADDR
    );
    let s = site.status(&t).expect("status");
    assert_eq!(
        strings(&s["advertised_routes"]),
        ["198.18.100.15/32"],
        "{s}"
    );

    // The domain is removed: its split DNS, routes and approvals go.
    let nodes_before = t.nodes();
    assert!(
        approved_of(&nodes_before, "connector").contains(&"198.18.100.15/32".to_owned()),
        "{nodes_before:?}"
    );
    stop(&t, "connector");
    rewrite_file(&site.node.config, |old| {
        old.replace("\"*.apps.example\", ", "")
    });
    t.start_extra_node(&site.node, &site.ns);
    wait_until(
        WAIT,
        "the connector to serve only solo.other.example",
        || {
            let s = site.status(&t)?;
            anyhow::ensure!(
                s["app_connector"]["domains"] == serde_json::json!(["solo.other.example"])
                    && s["app_connector"]["serving"] == true
                    && s["state"] == "running",
                "{}",
                s["app_connector"]
            );
            Ok(())
        },
    );
    wait_until(
        WAIT,
        "the client to stop sending apps.example to the connector",
        || {
            let ran = t.run_in(Site::Cli, &["getent", "ahostsv4", "a.apps.example"]);
            anyhow::ensure!(!ran.success(), "still resolves: {ran}");
            Ok(())
        },
    );
    wait_until(WAIT, "control to drop the connector's old approval", || {
        let approved = approved_of(&t.nodes(), "connector");
        anyhow::ensure!(approved.is_empty(), "still approved: {approved:?}");
        Ok(())
    });
    assert!(app_routes(&t.status(Node::Client).expect("status")).is_empty());

    t.finish();
}

/// Stops the recorded process `key` with SIGTERM and waits until it is gone.
fn stop(t: &TestDeployment, key: &str) {
    let rec = t.process(key);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec.pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    wait_until(WAIT, &format!("{key} to stop"), || {
        anyhow::ensure!(!rec.is_alive(), "pid {} still alive", rec.pid);
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(100));
}

/// The client's kernel routes into the apps' range.
fn app_routes(status: &Value) -> Vec<String> {
    strings(&status["kernel_routes"])
        .into_iter()
        .filter(|r| r.starts_with("198.18.100."))
        .collect()
}

/// The routes control approved for the node named `name`.
fn approved_of(nodes: &[Value], name: &str) -> Vec<String> {
    nodes
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| strings(&n["approved_routes"]))
        .unwrap_or_default()
}

/// `apps.example` names → `198.18.100.LAST`.
fn hosts(names: &[(&str, u8)]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|(name, last)| ((*name).to_owned(), format!("198.18.100.{last}")))
        .collect()
}
