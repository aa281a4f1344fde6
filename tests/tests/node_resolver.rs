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

    // Split DNS: corp.internal goes to the VPC's resolver, through the mesh.
    let vpc = t.dep().netns(Site::Vpc);
    let mut dnsmasq = vpc.command("dnsmasq");
    dnsmasq.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--pid-file=",
        "--bind-interfaces",
        &format!("--listen-address={VPC_HOST_ADDR}"),
        &format!("--address=/db.corp.internal/{VPC_HOST_ADDR}"),
    ]);
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
