//! `--role exit-node` for real: a deploy adds the exit node (`cw-NAME-exit`)
//! and the internet's echo server (`cw-NAME-web`), and its own verify step
//! proves the client's request to the echo server arrives from the exit
//! node's public address. Here the test checks that again from outside
//! (the echo server's log of callers, too), reads `status`, stops the exit
//! node to see that nothing leaks from the client's own address, and
//! destroys everything, checking that nothing is left. Needs root and the
//! appliance binary (`cargo build --workspace --bins`).

use std::time::Duration;

mod common;

use causeway_provisioner::console::ProgressSink;
use causeway_provisioner::local::{self, DeployOptions, DestroyGuard, Node, Site};

const ECHO_URL: &str = "http://198.18.0.10/";
const EXIT_PUBLIC: &str = "198.18.0.6";
const CLIENT_OWN: &str = "198.18.0.4";

/// A GET of the echo server from `site`: the address it saw, or why not.
fn fetch(dep: &local::LocalDeployment, site: Site) -> Result<String, String> {
    let out = dep
        .exec_in(site, &["curl", "-fsS", "--max-time", "3", ECHO_URL])
        .map_err(|e| format!("{e:#}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn callers(dep: &local::LocalDeployment) -> Vec<String> {
    std::fs::read_to_string(dep.paths().echo_callers())
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_clients_internet_traffic_leaves_from_the_exit_nodes_public_address() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds network namespaces and needs root"
    );
    let name = format!("x{}", std::process::id() % 1_000_000);
    let mut opts = DeployOptions::new(name.parse().expect("valid name"));
    opts.exit_node = true;
    opts.progress = ProgressSink::Stderr;
    let guard = DestroyGuard::new(&opts);

    let dep = local::deploy(&opts).expect("deploy --role exit-node");
    let state = dep.state().expect("state").expect("state.json written");
    assert_eq!(state.role, "exit-node");
    assert!(!state.ha);

    // Through the exit node, the echo server sees the exit node's public
    // address; the exit node's own request leaves from it too (the
    // gateway's 1:1 NAT); the client never showed up as itself.
    assert_eq!(fetch(&dep, Site::Cli), Ok(EXIT_PUBLIC.to_owned()));
    assert_eq!(fetch(&dep, Site::Exit), Ok(EXIT_PUBLIC.to_owned()));
    let seen = callers(&dep);
    assert!(seen.iter().any(|c| c == EXIT_PUBLIC), "{seen:?}");
    assert!(!seen.iter().any(|c| c == CLIENT_OWN), "{seen:?}");
    // The VPC is still reached through the subnet router.
    let page = dep
        .http_get(Site::Cli)
        .expect("the VPC page from the client");
    assert!(page.contains(local::services::HTTP_GREETING), "{page}");

    // `status` learns the layout from state.json (no --role), and says
    // which exit node the client uses and what the echo server saw.
    let plain = DeployOptions {
        exit_node: false,
        ..opts.clone()
    };
    let report = local::status(&plain).expect("status");
    let text = report.render();
    eprintln!("status:\n{text}");
    assert!(report.healthy, "{text}");
    let exit = report.exit_node.as_ref().expect("an exit node section");
    assert_eq!(exit.node.plan.key, "exit");
    assert_eq!(exit.node.online, Some(true), "{text}");
    assert!(
        exit.node
            .approved_routes
            .as_ref()
            .is_some_and(|r| r.iter().any(|p| p == "0.0.0.0/0")),
        "{text}"
    );
    assert_eq!(
        exit.client_uses
            .as_ref()
            .and_then(|c| c.selected.as_deref()),
        Some("exit"),
        "{text}"
    );
    assert!(
        text.contains("client's exit node: exit -> exit (online), all traffic through the tunnel"),
        "{text}"
    );
    assert!(
        text.contains("saw the client as 198.18.0.6: the exit node's public address"),
        "{text}"
    );
    assert!(local::plan(&opts).expect("plan").is_noop());

    // The exit node stops: the client's requests fail rather than leave
    // from its own address, and status says so.
    let record = state.processes.get(Node::Exit.as_str()).expect("exit pid");
    let _ = record.stop(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(
            fetch(&dep, Site::Cli).is_err(),
            "a request got through a stopped exit node"
        );
    }
    assert!(!callers(&dep).iter().any(|c| c == CLIENT_OWN));
    let report = local::status(&plain).expect("status");
    assert!(!report.healthy, "{}", report.render());
    assert!(!report.exit_node.as_ref().expect("exit section").node.alive);

    // Destroy removes all eight namespaces, every process and host link,
    // and the state directory.
    let state_dir = dep.state_dir().to_owned();
    let report = guard.destroy().expect("destroy");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert_eq!(report.namespaces_deleted.len(), 8, "{report:?}");
    assert!(report.stopped.contains_key("echo"), "{report:?}");
    assert!(!state_dir.exists());
    common::assert_no_local_leftovers(&name);
}
