//! A WireGuard-only device (stock wireguard-go and wg-quick, no Causeway
//! software) registered by an admin reaches the VPC through the router.

use std::path::Path;
use std::time::Duration;

use causeway_e2e::local::Node;
use causeway_e2e::{HTTP_GREETING, TestDeployment, VPC_SUBNET, VPC_URL, peer, run, wait_until};

#[test]
fn wireguard_only_device_reaches_the_vpc() {
    let mut t = TestDeployment::deploy();
    let added = t.admin_json(&["wg-device", "add", "wgdev"]);
    let config = added["config"]
        .as_str()
        .unwrap_or_else(|| panic!("no config in {added}"));
    let device = &added["node"];
    assert_eq!(device["wireguard_only"], true, "{device}");
    assert!(device["machine_key"].is_null(), "{device}");
    // One peer per node with an endpoint; the router's carries the VPC subnet.
    let router_peer = config
        .split("[Peer]")
        .find(|p| p.contains("Endpoint = 198.18.0.3:41641"))
        .unwrap_or_else(|| panic!("no peer for the router in {config}"));
    assert!(router_peer.contains(VPC_SUBNET), "{config}");
    assert_eq!(
        config.matches("[Peer]").count(),
        2,
        "router and client: {config}"
    );
    let device_addr = device["addresses"][0]
        .as_str()
        .expect("an address")
        .to_owned();

    let ns = t.add_bridge_namespace("wgd", "198.18.0.50/24");
    // wg-quick names the interface after the file; wireguard-go's control
    // socket lives in /var/run/wireguard, shared by every namespace.
    let ifname = format!("cwg{}", t.name().replace('-', ""));
    t.remove_on_teardown(Path::new("/var/run/wireguard").join(format!("{ifname}.sock")));
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join(format!("{ifname}.conf"));
    causeway_e2e::write_secret_file(&conf, config);

    let mut up = ns.command("wg-quick");
    up.arg("up")
        .arg(&conf)
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", "wireguard-go")
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
    let up = run(&mut up, Duration::from_secs(30)).expect_success();
    eprintln!("{up}");

    let mut get = ns.command("curl");
    get.args(["-fsS", "--max-time", "3", VPC_URL]);
    let page = wait_until(
        Duration::from_secs(15),
        "the VPC page from the WireGuard-only device",
        || {
            let ran = run(&mut get, Duration::from_secs(10));
            anyhow::ensure!(ran.success() && ran.stdout.contains(HTTP_GREETING), "{ran}");
            Ok(ran.stdout)
        },
    );
    assert!(
        page.contains(&format!("(deployment {})", t.name())),
        "{page}"
    );

    // The router learnt the device's endpoint from its handshake.
    let status = t.status(Node::Router).expect("router status");
    let dev = peer(&status, "wgdev").expect("the device is the router's peer");
    let mut port = ns.command("wg");
    port.args(["show", &ifname, "listen-port"]);
    let port = run(&mut port, Duration::from_secs(10)).expect_success();
    assert_eq!(
        dev["endpoint"],
        format!("198.18.0.50:{}", port.stdout.trim()),
        "{dev}"
    );
    let allowed = dev["allowed_ips"].as_array().expect("allowed_ips");
    assert!(allowed.iter().any(|x| x == device_addr.as_str()), "{dev}");
    assert!(dev["rx_bytes"].as_u64().is_some_and(|b| b > 0), "{dev}");

    let mut down = ns.command("wg-quick");
    down.arg("down").arg(&conf);
    run(&mut down, Duration::from_secs(30)).expect_success();
    t.finish();
}
