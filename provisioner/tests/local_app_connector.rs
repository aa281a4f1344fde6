//! `--role app-connector` for real: a deploy adds the app connector
//! (`cw-NAME-exit`, serving `*.apps.example`), the internet's echo server
//! and the apps' resolver (`cw-NAME-web`, apps on 198.18.100.11-12, which
//! only the connector can reach), and its own verify step proves the
//! client resolves each app by name and reaches it through the connector.
//! Here the test checks that again from outside (the client has no route to
//! the apps without the connector; the echo server sees the connector),
//! reads `status`, stops the connector to see the apps become unreachable,
//! and destroys everything, checking that nothing is left. Needs root and
//! the appliance binary (`cargo build --workspace --bins`).

use std::time::Duration;

mod common;

use causeway_provisioner::console::ProgressSink;
use causeway_provisioner::local::{self, DeployOptions, DestroyGuard, Node, Site};

const APP_URL: &str = "http://app2.apps.example/";
const CONNECTOR_PUBLIC: &str = "198.18.0.6";

/// A GET of `url` from `site`: the address the echo server saw, or why not.
fn fetch(dep: &local::LocalDeployment, site: Site, url: &str) -> Result<String, String> {
    let out = dep
        .exec_in(site, &["curl", "-fsS", "--max-time", "3", url])
        .map_err(|e| format!("{e:#}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[test]
fn the_client_reaches_the_apps_by_name_through_the_connector() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds network namespaces and needs root"
    );
    let name = format!("a{}", std::process::id() % 1_000_000);
    let mut opts = DeployOptions::new(name.parse().expect("valid name"));
    opts.app_connector = true;
    opts.progress = ProgressSink::Stderr;
    let guard = DestroyGuard::new(&opts);

    let dep = local::deploy(&opts).expect("deploy --role app-connector");
    let state = dep.state().expect("state").expect("state.json written");
    assert_eq!(state.role, "app-connector");

    // By name, through the connector: the echo server sees its public
    // address. The client's only route to the apps is the connector's.
    assert_eq!(
        fetch(&dep, Site::Cli, APP_URL),
        Ok(CONNECTOR_PUBLIC.to_owned())
    );
    let routes = dep
        .exec_in(Site::Cli, &["ip", "route", "get", "198.18.100.12"])
        .expect("ip route get");
    let route = String::from_utf8_lossy(&routes.stdout);
    assert!(route.contains("dev cw0"), "{route}");
    // The VPC is still reached through the subnet router.
    let page = dep
        .http_get(Site::Cli)
        .expect("the VPC page from the client");
    assert!(page.contains(local::services::HTTP_GREETING), "{page}");

    // `status` learns the layout from state.json (no --role).
    let plain = DeployOptions {
        app_connector: false,
        ..opts.clone()
    };
    let report = local::status(&plain).expect("status");
    let text = report.render();
    eprintln!("status:\n{text}");
    assert!(report.healthy, "{text}");
    let connector = report.app_connector.as_ref().expect("a connector section");
    assert_eq!(connector.node.plan.key, "connector");
    assert_eq!(connector.node.online, Some(true), "{text}");
    assert!(
        connector
            .node
            .approved_routes
            .as_ref()
            .is_some_and(|r| r.iter().any(|p| p == "198.18.100.11/32")),
        "{text}"
    );
    assert!(text.contains("*.apps.example: DNS answering"), "{text}");
    assert!(
        text.contains("198.18.0.6: the app connector's public address"),
        "{text}"
    );
    assert!(local::plan(&opts).expect("plan").is_noop());

    // The connector stops: the apps are unreachable from the client (no
    // route but the connector's), and status says so.
    let record = state
        .processes
        .get(Node::Connector.as_str())
        .expect("connector pid");
    let _ = record.stop(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(
            fetch(&dep, Site::Cli, "http://198.18.100.12/").is_err(),
            "an app was reached without the connector"
        );
    }
    let report = local::status(&plain).expect("status");
    assert!(!report.healthy, "{}", report.render());
    assert!(!report.app_connector.as_ref().expect("section").node.alive);

    // Destroy removes all eight namespaces, every process and host link,
    // and the state directory.
    let state_dir = dep.state_dir().to_owned();
    let report = guard.destroy().expect("destroy");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert_eq!(report.namespaces_deleted.len(), 8, "{report:?}");
    assert!(report.stopped.contains_key("apps-dns"), "{report:?}");
    assert!(!state_dir.exists());
    common::assert_no_local_leftovers(&name);
}
