//! A router behind a 1:1 NAT, as an EC2 instance is behind its VPC's
//! internet gateway: its public address is on no interface it has. With no
//! endpoint written in any config, the router learns that address from
//! control's STUN port, advertises it first, and a client outside reaches
//! the VPC through it. Without STUN the same client cannot.

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, VPC_URL, WAIT, peer, wait_until};
use causeway_test_support::FakeImds;
use serde_json::Value;

const PUBLIC: &str = "198.18.0.3:41641";

fn endpoints(status: &Value) -> Vec<String> {
    status["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_router_behind_nat_is_reached_on_the_address_stun_saw() {
    let t = TestDeployment::deploy();

    // The public address lives on the gateway, not on the router.
    let addrs = t.run_in(Site::Rtr, &["ip", "-o", "addr"]).expect_success();
    assert!(!addrs.stdout.contains("198.18.0.3"), "{addrs}");
    for node in [Node::Router, Node::Client] {
        let config =
            std::fs::read_to_string(t.dep().paths().node_config(node)).expect("the node's config");
        assert!(!config.contains("advertise_endpoints"), "{config}");
    }

    // The router advertises the address control's STUN port saw, first,
    // then its interface addresses (which only work inside the VPC).
    let status = wait_until(WAIT, "the router to advertise its public address", || {
        let s = t.status(Node::Router)?;
        let e = endpoints(&s);
        anyhow::ensure!(e.first().map(String::as_str) == Some(PUBLIC), "{e:?}");
        Ok(s)
    });
    let advertised = endpoints(&status);
    assert!(
        advertised.contains(&"198.19.0.3:41641".to_owned()),
        "{advertised:?}"
    );

    // Control passes them on, and the client reaches the VPC through it.
    let router = t
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "router")
        .expect("the router in control's node list");
    assert_eq!(router["endpoints"][0], PUBLIC, "{router}");
    t.fetch_vpc_page(Site::Cli)
        .expect("HTTP from the client through the router");
    let client = t.status(Node::Client).expect("client status");
    let seen = peer(&client, "router").expect("router peer");
    assert_eq!(seen["endpoint"], PUBLIC, "{seen}");

    // Control without STUN: the router withdraws the reflexive address, and
    // a freshly started client has only addresses it cannot reach.
    t.restart_control_with_config(|text| format!("{text}stun_port = 0\n"));
    wait_until(WAIT, "the router to withdraw its public address", || {
        let e = endpoints(&t.status(Node::Router)?);
        anyhow::ensure!(!e.contains(&PUBLIC.to_owned()), "{e:?}");
        Ok(())
    });
    t.restart_node_with_config(Node::Client, str::to_owned);
    let blocked = t.curl(Site::Cli, VPC_URL, 5);
    assert!(
        !blocked.success(),
        "reached the VPC with no usable endpoint: {blocked}"
    );

    // STUN back on: the path comes back without touching the client.
    t.restart_control_with_config(|text| text.replace("stun_port = 0\n", ""));
    wait_until(WAIT, "the client to reach the VPC again", || {
        t.fetch_vpc_page(Site::Cli).map(|_| ())
    });
    t.finish();
}

/// The same router with control's STUN off: the public address comes from
/// the cloud's metadata service instead (EC2's `public-ipv4`, served over
/// IMDSv2 at the link-local address inside the router's namespace), because
/// its config says `cloud = "aws"`. The client reaches the VPC through it.
#[test]
fn a_router_behind_nat_advertises_the_public_address_the_cloud_reports() {
    let t = TestDeployment::deploy();
    t.restart_control_with_config(|text| format!("{text}stun_port = 0\n"));
    wait_until(WAIT, "the router to withdraw its STUN address", || {
        let e = endpoints(&t.status(Node::Router)?);
        anyhow::ensure!(!e.contains(&PUBLIC.to_owned()), "{e:?}");
        Ok(())
    });

    // EC2's metadata service, where the router's namespace finds it; no
    // public address yet. A freshly started client cannot reach the VPC.
    t.run_in(
        Site::Rtr,
        &["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"],
    )
    .expect_success();
    let imds = FakeImds::inside(|p| t.command_in(Site::Rtr, p), "169.254.169.254", 80);
    t.restart_node_with_config(Node::Client, str::to_owned);
    let blocked = t.curl(Site::Cli, VPC_URL, 5);
    assert!(!blocked.success(), "reached the VPC before: {blocked}");

    // The instance has a public address: the router, told `cloud = "aws"`,
    // reads it and advertises it; the client follows the netmap delta.
    imds.set("public-ipv4", Some("198.18.0.3"));
    t.restart_node_with_config(Node::Router, |text| {
        text.replace("[node]\n", "[node]\ncloud = \"aws\"\n")
    });
    wait_until(WAIT, "the router to advertise the cloud's address", || {
        let e = endpoints(&t.status(Node::Router)?);
        anyhow::ensure!(e.first().map(String::as_str) == Some(PUBLIC), "{e:?}");
        Ok(())
    });
    let log = imds.log();
    assert!(
        log.contains("PUT /latest/api/token 200")
            && log.contains("GET /latest/meta-data/public-ipv4 200"),
        "{log}"
    );
    wait_until(WAIT, "the client to reach the VPC", || {
        t.fetch_vpc_page(Site::Cli).map(|_| ())
    });
    let client = t.status(Node::Client).expect("client status");
    let seen = peer(&client, "router").expect("router peer");
    assert_eq!(seen["endpoint"], PUBLIC, "{seen}");
    t.finish();
}
