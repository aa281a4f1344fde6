//! The `--ha` network for real, without the appliance: a deploy whose
//! control cannot start (the "appliance" is `/bin/false`) fails at the
//! control step, after the namespaces, links, gateway NAT and VPC services
//! exist. The second router's namespace then reaches the VPC host over the
//! VPC bridge and has its own uplink and public address; a destroy after
//! the failed deploy leaves nothing behind, not even with state.json gone.
//! Needs root.

mod common;

use causeway_provisioner::console::ProgressSink;
use causeway_provisioner::local::{self, DeployOptions, DestroyGuard, Netns, Site};

#[test]
fn a_failed_ha_deploy_builds_both_routers_network_and_destroy_removes_it() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds network namespaces and needs root"
    );
    let name = format!("h{}", std::process::id() % 1_000_000);
    let mut opts = DeployOptions::new(name.parse().expect("valid name"));
    opts.ha = true;
    opts.appliance_bin = Some("/bin/false".into());
    opts.progress = ProgressSink::Stderr;
    let guard = DestroyGuard::new(&opts);

    let err = local::deploy(&opts).expect_err("control cannot start with /bin/false");
    assert!(
        format!("{err:#}").contains("stopped at [6/11] control"),
        "{err:#}"
    );
    let dep = local::LocalDeployment::open(&opts).expect("open");
    let state = dep.state().expect("state").expect("state.json written");
    assert!(state.ha, "state.json must record --ha");

    // Seven namespaces; each router's default route goes through its own
    // subnet's gateway address.
    let all = Netns::list().expect("ip netns list");
    for site in Site::ALL_HA {
        assert!(all.contains(&dep.namespace(site)), "{site:?} missing");
    }
    for r in dep.topology().routers() {
        let routes = dep.netns(r.site).routes().expect("routes");
        assert!(
            routes
                .iter()
                .any(|l| l.starts_with(&format!("default via {}", r.gateway))),
            "{}: {routes:?}",
            r.namespace
        );
    }

    // Both routers reach the VPC host over the VPC bridge.
    for site in [Site::Rtr, Site::Rtr2] {
        assert_eq!(
            dep.query_db(site).expect("psql from a router"),
            "hello from the VPC database"
        );
    }
    // The second router's public address leads to its namespace through
    // the gateway's 1:1 NAT: a refused connection (curl exit 7) proves the
    // path, a missing one would time out (exit 28).
    let probe = dep
        .exec_in(
            Site::Cli,
            &["curl", "-sS", "--max-time", "3", "http://198.18.0.5:9/"],
        )
        .expect("curl runs");
    assert_eq!(
        probe.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // ... and its traffic leaves from that public address.
    let nat = dep
        .exec_in(Site::Igw, &["nft", "list", "table", "ip", "causeway-igw"])
        .expect("nft runs");
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(
        nat.contains("ip daddr 198.18.0.5 dnat to 198.19.2.3")
            && nat.contains("ip saddr 198.19.2.3 oifname \"eth0\" snat to 198.18.0.5"),
        "{nat}"
    );

    // Deploying without --ha is refused, naming the flag.
    let mut single = opts.clone();
    single.ha = false;
    let refused = local::plan(&single).expect_err("switching to one router");
    assert!(format!("{refused:#}").contains("--ha"), "{refused:#}");
    // So is switching SNAT off: the deployment was made with it on.
    let mut no_snat = opts.clone();
    no_snat.snat = false;
    let refused = local::plan(&no_snat).expect_err("switching SNAT off");
    assert!(
        format!("{refused:#}").contains("--no-snat: deployment"),
        "{refused:#}"
    );

    // Destroy after the failed deploy, with state.json gone as well.
    std::fs::remove_file(dep.paths().state_file()).expect("remove state.json");
    let report = guard.destroy().expect("destroy");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert_eq!(report.namespaces_deleted.len(), 7, "{report:?}");
    common::assert_no_local_leftovers(&name);
}
