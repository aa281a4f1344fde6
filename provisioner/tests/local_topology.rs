//! Builds a real local topology with the VPC services (no appliance), checks
//! from the router namespace that PostgreSQL and the HTTP server answer, that
//! the VPC host has no route to the tailnet, that a second deploy changes
//! nothing, and that destroy leaves nothing behind, also when the test
//! fails half-way (the guard destroys on drop). Needs root.

use causeway_provisioner::console::ProgressSink;
use causeway_provisioner::local::{self, DeployOptions, DestroyGuard, Netns, Site};

fn unique_name() -> String {
    // Short enough for the 8-character limit, unique per test process.
    format!("t{}", std::process::id() % 1_000_000)
}

#[test]
fn topology_and_vpc_services_come_up_and_go_away() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds network namespaces and needs root"
    );
    let name = unique_name();
    let mut opts = DeployOptions::new(name.parse().expect("valid name")).services_only();
    opts.progress = ProgressSink::Stderr;
    let guard = DestroyGuard::new(&opts);

    let dep = local::deploy(&opts).expect("deploy");

    // Every namespace exists; only the router has a default route, through
    // the internet gateway.
    let all = Netns::list().expect("ip netns list");
    for site in Site::ALL {
        let ns = dep.namespace(site);
        assert!(all.contains(&ns), "{ns} missing");
        let routes = dep.netns(site).routes().expect("routes");
        let defaults: Vec<&String> = routes.iter().filter(|r| r.starts_with("default")).collect();
        if site == Site::Rtr {
            assert!(
                defaults.len() == 1 && defaults[0].contains("via 198.19.0.1"),
                "{ns}: {routes:?}"
            );
        } else {
            assert!(defaults.is_empty(), "{ns}: {routes:?}");
        }
    }
    // The VPC host knows only its own subnet: no tailnet, no internet.
    let vpc_routes = dep.netns(Site::Vpc).routes().expect("routes");
    assert_eq!(vpc_routes.len(), 1, "{vpc_routes:?}");
    assert!(vpc_routes[0].starts_with("198.19.1.0/24"), "{vpc_routes:?}");

    // The router reaches both services directly over the VPC link.
    assert_eq!(
        dep.query_db(Site::Rtr).expect("psql from rtr"),
        "hello from the VPC database"
    );
    assert!(
        dep.http_get(Site::Rtr)
            .expect("curl from rtr")
            .contains("hello from the VPC web server")
    );
    // The client has no path to the VPC without the tailnet.
    let out = dep
        .exec_in(
            Site::Cli,
            &["curl", "-sS", "--max-time", "2", "http://198.19.1.10/"],
        )
        .expect("curl runs");
    assert!(
        !out.status.success(),
        "client reached the VPC without a router"
    );
    // The public side works: the client reaches control's address through
    // the bridge (a refused connection, curl exit 7, proves the path; a
    // missing path would time out, exit 28).
    let probe = dep
        .exec_in(
            Site::Cli,
            &["curl", "-sS", "--max-time", "2", "http://198.18.0.2:9/"],
        )
        .expect("curl runs");
    assert_eq!(
        probe.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // Deploying again converges to the same thing and plans no change.
    let plan = local::plan(&opts).expect("plan");
    assert!(plan.is_noop(), "{plan:?}");
    local::deploy(&opts).expect("second deploy");

    let state = dep.state().expect("state").expect("state.json exists");
    let text = std::fs::read_to_string(dep.paths().state_file()).expect("read state.json");
    let password = std::fs::read_to_string(dep.paths().pg_password()).expect("password");
    assert!(
        !text.contains(password.trim()),
        "password leaked into state.json"
    );
    let pids: Vec<_> = state.processes.values().cloned().collect();
    let keys: Vec<&str> = state.processes.keys().map(String::as_str).collect();
    assert_eq!(keys, ["dns", "http", "postgres"], "the VPC's services");

    let report = guard.destroy().expect("destroy");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    let left = Netns::list().expect("ip netns list");
    assert!(
        !left.iter().any(|n| n.starts_with(&format!("cw-{name}-"))),
        "{left:?}"
    );
    assert!(pids.iter().all(|p| !p.is_alive()));
    assert!(!dep.state_dir().exists());

    // Destroying again is a no-op.
    let again = local::destroy(&opts).expect("second destroy");
    assert!(!again.existed);
}

/// The whole deployment with the real appliance: control, router, client,
/// and the proof from the client. Needs root and `target/debug/appliance`
/// (`.ci/test` builds it first); fails, naming what is missing, without them.
#[test]
fn full_deploy_reaches_the_vpc_through_the_subnet_router() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes network namespaces: run it as root"
    );
    let name = format!("f{}", std::process::id() % 1_000_000);
    let mut opts = DeployOptions::new(name.parse().expect("valid name"));
    opts.progress = ProgressSink::Stderr;
    let guard = DestroyGuard::new(&opts);
    let dep = match local::LocalDeployment::open(&opts) {
        Ok(dep) if dep.appliance().is_some() => dep,
        _ => {
            guard.disarm();
            panic!(
                "no appliance binary next to the test executable: run `cargo build --workspace --bins` first"
            );
        }
    };
    drop(dep);

    let dep = local::deploy(&opts).expect("deploy");

    // The client's only way to the VPC host is the tailnet.
    assert_eq!(
        dep.query_db(Site::Cli).expect("psql from client"),
        "hello from the VPC database"
    );
    let client = dep.node_status(local::Node::Client).expect("client status");
    assert!(client.has_route("198.19.1.0/24"), "{client:?}");
    let report = local::status(&opts).expect("status");
    assert!(report.healthy, "{report:?}");

    let report = guard.destroy().expect("destroy");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert_eq!(
        report.stopped.get("router"),
        Some(&local::Stopped::Terminated)
    );
}
