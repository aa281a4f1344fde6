//! The node resolver (`node.dns_resolver = true`) in a local deployment:
//! the client answers its own queries on 100.100.100.100 from the netmap,
//! forward (A, AAAA) and reverse (PTR), says a name that is not in the
//! tailnet does not exist, answers over TCP too, and sends a split-DNS
//! domain to its resolver behind the subnet router (dnsmasq on the VPC
//! host, answering `db.corp.internal`).

use causeway_e2e::local::topology::VPC_HOST_ADDR;
use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, WAIT, tailnet_ipv4, wait_until};

const RESOLVER: &str = "@100.100.100.100";

fn dig(t: &TestDeployment, site: Site, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["dig", RESOLVER, "+time=2", "+tries=1"];
    full.extend_from_slice(args);
    let ran = t.run_in(site, &full);
    anyhow::ensure!(ran.success(), "{ran}");
    Ok(ran.stdout)
}

/// `appliance dns query ARGS…` in the client's namespace; must succeed.
fn dns_query(t: &TestDeployment, args: &[&str]) -> causeway_e2e::Ran {
    let bin = t.appliance_bin();
    let mut full = vec![bin.to_str().expect("utf-8 path"), "dns", "query"];
    full.extend_from_slice(args);
    t.run_in(Site::Cli, &full).expect_success()
}

#[test]
fn the_client_resolves_tailnet_names_on_its_own_resolver() {
    let t = TestDeployment::deploy();
    t.restart_node_with_config(Node::Client, |old| {
        old.replace("[node]\n", "[node]\ndns_resolver = true\n")
    });
    let router = tailnet_ipv4(&t.status(Node::Router).expect("router status"))
        .expect("the router's tailnet address");
    let client = tailnet_ipv4(&t.status(Node::Client).expect("client status"))
        .expect("the client's tailnet address");
    let reverse = {
        let mut octets: Vec<&str> = router.split('.').collect();
        octets.reverse();
        format!("{}.in-addr.arpa", octets.join("."))
    };

    // Reverse first: it names the router, and so the tailnet domain.
    let name = wait_until(WAIT, "the router's name by PTR", || {
        let out = dig(&t, Site::Cli, &["+short", &reverse, "PTR"])?;
        let name = out.trim().to_owned();
        anyhow::ensure!(name.starts_with("router."), "PTR {reverse}: {out:?}");
        Ok(name)
    });
    let a = dig(&t, Site::Cli, &["+short", &name, "A"]).expect("A");
    assert_eq!(a.trim(), router, "A {name}");
    let aaaa = dig(&t, Site::Cli, &["+short", &name, "AAAA"]).expect("AAAA");
    assert!(aaaa.trim().starts_with("fd"), "AAAA {name}: {aaaa:?}");
    let domain = name.trim_start_matches("router.");
    let own = dig(&t, Site::Cli, &["+short", &format!("client.{domain}"), "A"]).expect("own");
    assert_eq!(own.trim(), client, "the client's own name");
    let missing = dig(&t, Site::Cli, &[&format!("nobody.{domain}"), "A"]).expect("NXDOMAIN");
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
    // Over TCP as well.
    let tcp = dig(&t, Site::Cli, &["+tcp", "+short", &name, "A"]).expect("A over TCP");
    assert_eq!(tcp.trim(), router, "A {name} over TCP");

    // `appliance dns query` asks the node resolver by default.
    let bin = t.appliance_bin();
    let query = t
        .run_in(
            Site::Cli,
            &[
                bin.to_str().expect("utf-8 path"),
                "dns",
                "query",
                &name,
                "--json",
            ],
        )
        .expect_success();
    let report: serde_json::Value = serde_json::from_str(&query.stdout).expect("JSON");
    assert_eq!(report["status"], "NOERROR", "{report}");
    assert_eq!(report["server"], "100.100.100.100:53", "{report}");
    assert_eq!(
        report["records"][0],
        format!("{name} 60 IN A {router}"),
        "{report}"
    );
    let text = dns_query(&t, &[&format!("nobody.{domain}"), "AAAA", "--tcp"]);
    assert!(text.stdout.contains(";; NXDOMAIN, authoritative"), "{text}");
    assert!(text.stdout.contains("(tcp)"), "{text}");

    // Split DNS: corp.internal goes to the VPC's resolver, through the mesh.
    let vpc = t.dep().netns(Site::Vpc);
    let mut dnsmasq =
        causeway_e2e::internet::dnsmasq(&vpc, VPC_HOST_ADDR, "db.corp.internal", VPC_HOST_ADDR);
    let log = t.dep().paths().root().join("vpc-dns.log");
    t.spawn_recorded("vpc-dns", vpc.name(), &mut dnsmasq, &log);
    t.admin(&[
        "dns",
        "set-split",
        "--resolver",
        VPC_HOST_ADDR,
        "corp.internal",
    ])
    .expect_success();
    wait_until(WAIT, "db.corp.internal through split DNS", || {
        let out = dig(&t, Site::Cli, &["+short", "db.corp.internal", "A"])?;
        anyhow::ensure!(out.trim() == VPC_HOST_ADDR, "{out:?}");
        Ok(())
    });
    t.finish();
}
