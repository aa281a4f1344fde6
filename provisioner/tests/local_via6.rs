//! `--role via6` for real: a deploy builds two sites with the same VPC
//! range 198.19.1.0/24 (site 1: `router` in front of `cw-NAME-vpc`; site
//! 2: `router2` in front of `cw-NAME-vpc2`, whose host has the same
//! address 198.19.1.10 and runs an echo server), and its own verify step
//! proves the client resolves `198-19-1-10-via-SITE.DOMAIN` to each
//! site's 4via6 address and fetches it by that name. Here the test checks
//! that again from outside (each name reaches its own site; the client
//! has no route to 198.19.1.0/24 itself), reads `status`, redeploys
//! (nothing restarts), is refused a role change, stops site 2's router to
//! see only site 2 become unreachable, and destroys everything, checking
//! that nothing is left and the host's resolv.conf was never touched.
//! Needs root and the appliance binary (`cargo build --workspace --bins`).

use std::time::Duration;

mod common;

use causeway_provisioner::console::ProgressSink;
use causeway_provisioner::local::{self, DeployOptions, DestroyGuard, Node, Site};

#[test]
fn each_4via6_name_reaches_its_own_site_of_two_with_the_same_range() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test builds network namespaces and needs root"
    );
    let host_resolv = std::fs::read("/etc/resolv.conf").expect("the host's resolv.conf");
    let name = format!("v{}", std::process::id() % 1_000_000);
    let mut opts = DeployOptions::new(name.parse().expect("valid name"));
    opts.via6 = true;
    opts.progress = ProgressSink::Stderr;
    let guard = DestroyGuard::new(&opts);

    let dep = local::deploy(&opts).expect("deploy --role via6");
    let state = dep.state().expect("state").expect("state.json written");
    assert_eq!(state.role, "via6");
    let sites = dep.topology().via6_sites();
    assert_eq!(sites.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2]);

    // Each name reaches its own site, and only its own: site 1 serves the
    // VPC page, site 2's echo server sees site 2's router.
    for site in &sites {
        let fetched = local::via6::fetch(&dep, site).expect("fetch by 4via6 name");
        assert!(
            fetched.answer_is_from(site),
            "site {}: {}",
            site.id,
            fetched.describe(site)
        );
        for other in sites.iter().filter(|o| o.id != site.id) {
            assert!(!fetched.answer_is_from(other), "{fetched:?}");
        }
        assert!(
            fetched
                .name
                .starts_with(&format!("198-19-1-10-via-{}.", site.id)),
            "{}",
            fetched.name
        );
        let segments = fetched.address.segments();
        assert_eq!(
            (segments[3], segments[5], segments[6], segments[7]),
            (0x0b1a, site.id, 0xc613, 0x010a),
            "{}",
            fetched.address
        );
    }
    // The shared range itself is routed nowhere from the client.
    assert!(local::services::http_get(&dep.netns(Site::Cli), "http://198.19.1.10/").is_err());

    // `status` learns the layout from state.json (no --role).
    let plain = DeployOptions {
        via6: false,
        ..opts.clone()
    };
    let report = local::status(&plain).expect("status");
    let text = report.render();
    eprintln!("status:\n{text}");
    assert!(report.healthy, "{text}");
    assert_eq!(report.via6_sites.len(), 2, "{text}");
    for s in &report.via6_sites {
        let approved = s.approved.as_ref().expect("control answered");
        assert_eq!(approved.len(), 1, "{text}");
        assert!(approved[0].ends_with("/120"), "{text}");
        assert_eq!(s.advertised.as_ref(), Some(approved), "{text}");
    }
    assert_ne!(
        report.via6_sites[0].approved, report.via6_sites[1].approved,
        "two sites, two prefixes"
    );
    assert!(
        text.contains("client -> site 2 by 4via6 name: curl http://198-19-1-10-via-2."),
        "{text}"
    );
    assert!(local::plan(&opts).expect("plan").is_noop());

    // Deploying again changes nothing: the same processes keep running.
    local::deploy(&opts).expect("redeploy");
    let again = dep.state().expect("state").expect("state.json");
    for (key, rec) in &state.processes {
        assert_eq!(
            again.processes.get(key).map(|r| r.pid),
            Some(rec.pid),
            "{key}"
        );
    }
    // Another role on the same deployment is refused, changing nothing.
    let err = local::deploy(&plain).expect_err("a role change is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("--role subnet-router") && msg.contains("exists with role via6"),
        "{msg}"
    );

    // Site 2's router stops: site 2 becomes unreachable, site 1 is not.
    let record = state
        .processes
        .get(Node::Router2.as_str())
        .expect("router2 pid");
    let _ = record.stop(Duration::from_secs(10));
    for _ in 0..3 {
        assert!(
            local::via6::fetch(&dep, &sites[1]).is_err(),
            "site 2 was reached without its router"
        );
        let one = local::via6::fetch(&dep, &sites[0]).expect("site 1 still answers");
        assert!(one.answer_is_from(&sites[0]), "{one:?}");
    }
    let report = local::status(&plain).expect("status");
    assert!(!report.healthy, "{}", report.render());
    assert!(report.via6_sites[0].healthy(), "{}", report.render());
    assert!(!report.via6_sites[1].alive);

    // Destroy removes all eight namespaces, every process and host link,
    // the per-namespace resolv.conf and the state directory.
    let state_dir = dep.state_dir().to_owned();
    let report = guard.destroy().expect("destroy");
    assert!(report.leftovers.is_empty(), "{:?}", report.leftovers);
    assert_eq!(report.namespaces_deleted.len(), 8, "{report:?}");
    assert!(report.stopped.contains_key("echo2"), "{report:?}");
    assert!(!state_dir.exists());
    common::assert_no_local_leftovers(&name);
    for site in ["cli", "rtr", "rtr2", "vpc2"] {
        let dir = format!("/etc/netns/cw-{name}-{site}");
        assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
    }
    assert_eq!(
        std::fs::read("/etc/resolv.conf").expect("the host's resolv.conf"),
        host_resolv,
        "the host's resolv.conf changed"
    );
}
