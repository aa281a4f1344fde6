//! A node that cannot reach control when it starts keeps trying, says so in
//! its status, and joins once control is reachable; a definite refusal
//! (a bad auth key) still stops it (see `auth_keys.rs`).

use std::time::{Duration, Instant};

use causeway_e2e::local::Site;
use causeway_e2e::local::appliance::control_url;
use causeway_e2e::{TestDeployment, WAIT, wait_until, write_secret_file};

/// The extra node: its hostname, TUN device and UDP port (the client's
/// namespace already has `cw0` on 41641).
const HOSTNAME: &str = "late";
const TUN: &str = "cw8";
const PORT: u16 = 41643;
/// The client namespace's public address.
const CLIENT_ADDR: &str = "198.18.0.4";

#[test]
fn a_node_that_cannot_reach_control_at_start_keeps_trying_and_joins() {
    let t = TestDeployment::deploy();
    // Single-use, so a join that control saw but whose answer was lost
    // would be refused if it were simply sent again.
    let created = t.admin_json(&["keys", "create"]);
    let key = created["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {created}"));

    let paths = t.dep().paths();
    let root = paths.root();
    let state_dir = root.join(HOSTNAME);
    std::fs::create_dir_all(&state_dir).expect("the extra node's state dir");
    let key_file = root.join(format!("{HOSTNAME}.key"));
    write_secret_file(&key_file, &format!("{key}\n"));
    let config = root.join(format!("{HOSTNAME}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "{state}"

[node]
control_url = "{url}"
control_public_key_file = "{pubkey}"
auth_key_file = "{key}"
hostname = "{HOSTNAME}"
listen_port = {PORT}
tun_name = "{TUN}"
accept_routes = false
advertise_endpoints = ["{CLIENT_ADDR}:{PORT}"]
"#,
            state = state_dir.display(),
            url = control_url(),
            pubkey = paths.control_pub().display(),
            key = key_file.display(),
        ),
    )
    .expect("writing the extra node's config");

    t.block_new_control_connections(Site::Cli, true);
    let app = t.dep().appliance().expect("an appliance binary");
    let cli = t.dep().netns(Site::Cli);
    let mut cmd = app.run_command(&cli, &config);
    let rec = t.spawn_recorded(
        HOSTNAME,
        cli.name(),
        &mut cmd,
        &root.join(format!("{HOSTNAME}.log")),
    );

    let waiting = wait_until(
        Duration::from_secs(10),
        "the node to report that it retries",
        || {
            let s = t.status_at(Site::Cli, &state_dir)?;
            anyhow::ensure!(s["state"] == "registering", "{s}");
            let session = s["session"].as_str().unwrap_or_default();
            anyhow::ensure!(
                session.starts_with("joining (retry in ")
                    && session.contains("control unreachable"),
                "{s}"
            );
            Ok(s)
        },
    );
    eprintln!(
        "session while control was unreachable: {}",
        waiting["session"]
    );
    // Past the first retries, and past the 10 s a connect attempt may take.
    std::thread::sleep(Duration::from_secs(6));
    assert!(rec.is_alive(), "the node gave up: {}", t.logs());
    let still = t
        .status_at(Site::Cli, &state_dir)
        .expect("status while control is unreachable");
    assert_eq!(still["state"], "registering", "{still}");
    assert_eq!(t.nodes().len(), 2, "the node registered while blocked");

    t.block_new_control_connections(Site::Cli, false);
    let unblocked = Instant::now();
    let running = wait_until(WAIT, "the node to join and run", || {
        let s = t.status_at(Site::Cli, &state_dir)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        Ok(s)
    });
    let joined_in = unblocked.elapsed();
    assert_eq!(running["session"], "running", "{running}");
    let id = running["node_id"].clone();
    let nodes = t.nodes();
    assert!(
        nodes
            .iter()
            .any(|n| n["id"] == id && n["hostname"] == HOSTNAME),
        "node {id} not listed: {nodes:?}"
    );
    eprintln!(
        "joined {:.1} s after control was reachable again",
        joined_in.as_secs_f64()
    );
    let _ = rec.stop(Duration::from_secs(10));
    t.finish();
}
