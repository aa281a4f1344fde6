//! The node resolver (`node.dns_resolver = true`, which `--cloud local`
//! sets for its client), in a local deployment:
//! the client answers its own queries on 100.100.100.100 from the netmap,
//! forward (A, AAAA) and reverse (PTR), says a name that is not in the
//! tailnet does not exist, answers over TCP too, and sends a split-DNS
//! domain the deployment registers (`corp.internal`) to the VPC's resolver
//! behind the subnet router. With `node.accept_dns` (the
//! default) the client's namespace resolves through it (its own
//! `/etc/netns/NAME/resolv.conf`), gets its file back after a stop and
//! after a crash, and the host's `/etc/resolv.conf` never changes.

use std::path::{Path, PathBuf};

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

    // Split DNS: the deployment registered corp.internal with the VPC's
    // resolver, reached through the mesh; other names in that private
    // zone do not exist.
    let split = t.admin_json(&["dns", "list"]).get("corp.internal").cloned();
    assert_eq!(split, Some(serde_json::json!([VPC_HOST_ADDR])));
    let db = dig(&t, Site::Cli, &["+short", "db.corp.internal", "A"]).expect("split DNS");
    assert_eq!(db.trim(), VPC_HOST_ADDR);
    let other = dig(&t, Site::Cli, &["nothing.corp.internal", "A"]).expect("NXDOMAIN");
    assert!(other.contains("status: NXDOMAIN"), "{other}");
    t.finish();
}

/// The file's bytes, `None` if it does not exist.
fn bytes(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

fn getent(t: &TestDeployment, name: &str) -> anyhow::Result<String> {
    t.resolve(Site::Cli, name)
}

/// Waits until the namespace's file points at the node resolver with the
/// tailnet's domain; returns that domain.
fn wait_pointed_here(file: &Path) -> String {
    wait_until(
        WAIT,
        "the client's resolv.conf to name the node resolver",
        || {
            let text = std::fs::read_to_string(file)?;
            anyhow::ensure!(text.contains("nameserver 100.100.100.100\n"), "{text}");
            let domain = text
                .lines()
                .find_map(|line| line.strip_prefix("search "))
                .and_then(|search| search.split_whitespace().next())
                .ok_or_else(|| anyhow::anyhow!("no search domain yet: {text}"))?;
            Ok(domain.to_owned())
        },
    )
}

#[test]
fn the_client_machine_resolves_through_it_and_gets_its_file_back() {
    let host_file = Path::new("/etc/resolv.conf");
    let host_before = bytes(host_file);
    let t = TestDeployment::deploy();
    let cli = t.dep().netns(Site::Cli).name().to_owned();
    let netns_dir = PathBuf::from("/etc/netns").join(&cli);
    let file = netns_dir.join("resolv.conf");
    let router = tailnet_ipv4(&t.status(Node::Router).expect("router status"))
        .expect("the router's tailnet address");

    // The deployment's client runs the resolver; the namespace had no
    // file of its own, so the node created one.
    let domain = wait_pointed_here(&file);
    let status = t.status(Node::Client).expect("client status");
    assert_eq!(
        status["os_dns"],
        format!("{} -> 100.100.100.100", file.display()),
        "{status}"
    );
    // The C library in the namespace now asks the node resolver: a bare
    // host name is found through the tailnet's search domain.
    let found = wait_until(WAIT, "getent ahostsv4 router", || getent(&t, "router"));
    assert_eq!(found, router);
    assert_eq!(
        getent(&t, &format!("router.{domain}")).expect("FQDN"),
        router
    );
    assert_eq!(
        bytes(host_file),
        host_before,
        "the host's file while it runs"
    );

    // A crash leaves the file; the next start puts it back, then takes
    // it over again.
    t.kill_process(Node::Client.as_str());
    let left = std::fs::read_to_string(&file).expect("the file a crash leaves");
    assert!(left.contains("100.100.100.100"), "{left}");
    t.respawn_node_running(Node::Client);
    wait_pointed_here(&file);
    wait_until(WAIT, "getent after the crash", || {
        anyhow::ensure!(getent(&t, "router")? == router, "wrong address");
        Ok(())
    });
    let log = std::fs::read_to_string(t.dep().paths().node_log(Node::Client)).expect("log");
    assert!(
        log.contains("putting back the resolver configuration an earlier run left"),
        "the restart recovered the crash's file"
    );

    // accept_dns = false: the resolver still answers, the file is gone
    // (it did not exist before), and the namespace resolves as before.
    t.restart_node_with_config(Node::Client, |old| {
        old.replace(
            "dns_resolver = true\n",
            "dns_resolver = true\naccept_dns = false\n",
        )
    });
    assert_eq!(
        bytes(&file),
        None,
        "{} after accept_dns = false",
        file.display()
    );
    assert!(
        !netns_dir.exists(),
        "the directory the node created is gone"
    );
    let status = t.status(Node::Client).expect("client status");
    assert_eq!(
        status["os_dns"], "not pointed here (node.accept_dns = false)",
        "{status}"
    );
    let direct =
        dig(&t, Site::Cli, &["+short", &format!("router.{domain}"), "A"]).expect("asked directly");
    assert_eq!(direct.trim(), router);

    // Taken over again, killed, then destroyed: destroy removes the file
    // the killed appliance could not put back, and the host's is byte for
    // byte what it was.
    t.restart_node_with_config(Node::Client, |old| old.replace("accept_dns = false\n", ""));
    wait_pointed_here(&file);
    t.kill_process(Node::Client.as_str());
    t.finish();
    assert_eq!(bytes(&file), None, "{} after destroy", file.display());
    assert!(!netns_dir.exists(), "{} after destroy", netns_dir.display());
    assert_eq!(
        bytes(host_file),
        host_before,
        "the host's file after destroy"
    );
}
