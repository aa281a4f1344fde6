//! The recorder role beside a node, end to end: a recorder appliance (a
//! `[node]` and a `[recorder]` in one process) joins the local tailnet; the
//! deployment's client records a command with `appliance record` through
//! the mesh while claiming another node's ID. The recording is filed under
//! the client's tailnet name, the name control gave it. The recorder's web
//! UI refuses a node of user alice until `appliance admin policy set`
//! grants her the recorder's view capability (an `app` grant naming the
//! recorder's tag), then serves her; it keeps refusing the client, which
//! holds no grant, and a request naming a host it does not answer to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use causeway_e2e::local::{Netns, Site};
use causeway_e2e::{TestDeployment, VPC_SUBNET, WAIT, binary, peer, run, wait_until};

const RECORDER_PORT: u16 = 8090;
const WEB_PORT: u16 = 8091;
const VIEWER: &str = "alice@example.com";
const RECORDER_TAG: &str = "tag:recorder";

/// The deployment's own policy (everyone reaches everything, the VPC
/// route auto-approved) plus the recorder's tag and, with `grant`, an
/// `app` grant letting `VIEWER` view recordings on the recorder.
fn policy(grant: bool) -> String {
    let app = if grant {
        format!(
            r#"{{"src": ["{VIEWER}"], "dst": ["{RECORDER_TAG}"], "ip": ["tcp:{WEB_PORT}"],
              "app": {{"tailscale.com/cap/tsrecorder": [{{"actions": ["view"]}}]}}}},"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{{
  "tagOwners": {{"tag:subnet-router": ["autogroup:admin"], "{RECORDER_TAG}": ["autogroup:admin"]}},
  "autoApprovers": {{"routes": {{"{VPC_SUBNET}": ["tag:subnet-router"]}}}},
  "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}],
  "grants": [{app}],
}}
"#
    )
}

fn set_policy(t: &TestDeployment, dir: &Path, grant: bool) {
    let file = dir.join(format!("policy-{grant}.hujson"));
    std::fs::write(&file, policy(grant)).expect("writing the policy");
    let path = file.to_str().expect("a UTF-8 path");
    t.admin(&["policy", "set", path]).expect_success();
}

/// An extra appliance in a namespace of its own on the public bridge,
/// joined with a key for `who` (`--user alice@example.com`, `--tag
/// tag:recorder`); `extra` is appended to its config.
fn start_node(
    t: &mut TestDeployment,
    hostname: &str,
    addr: &str,
    who: &[&str],
    extra: &str,
) -> (Netns, PathBuf) {
    let ns = t.add_bridge_namespace(hostname, &format!("{addr}/24"));
    let mut args = vec!["keys", "create"];
    args.extend(who);
    let created = t.admin_json(&args);
    let key = created["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {created}"));
    let endpoint = format!("{addr}:41641").parse().expect("a socket address");
    let node = t.write_extra_node(hostname, key, endpoint, "cw0", false);
    let mut config = std::fs::read_to_string(&node.config).expect("the node's config");
    config.push_str(extra);
    std::fs::write(&node.config, config).expect("writing the node's config");
    t.start_extra_node(&node, &ns);
    (ns, node.state_dir)
}

/// The node's first tailnet address, once it runs and sees `peer_name`.
fn tailnet_address(t: &TestDeployment, state_dir: &std::path::Path, peer_name: &str) -> String {
    wait_until(WAIT, "the node to run", || {
        let s = t.status_at(Site::Cli, state_dir)?;
        anyhow::ensure!(s["state"] == "running", "{s}");
        peer(&s, peer_name)?;
        let addr = s["addresses"][0]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or_else(|| anyhow::anyhow!("no address in {s}"))?;
        Ok(addr.to_owned())
    })
}

#[test]
fn the_recorder_role_files_recordings_under_the_sending_node_and_serves_granted_viewers() {
    let mut t = TestDeployment::deploy();
    let dir = tempfile::tempdir().expect("tempdir");
    set_policy(&t, dir.path(), false);
    let store = t.dep().paths().root().join("recordings");
    let spool = t.dep().paths().root().join("recorder-spool");
    let recorder = format!(
        r#"
[recorder]
listen = "0.0.0.0:{RECORDER_PORT}"
allow = ["100.64.0.0/10"]
spool_dir = "{spool}"

[recorder.storage]
kind = "local"
dir = "{store}"

[recorder.web]
listen = "0.0.0.0:{WEB_PORT}"
allow = ["100.64.0.0/10", "198.18.0.0/16"]
hosts = ["recorder.example.ts.net"]
"#,
        spool = spool.display(),
        store = store.display(),
    );
    let (_rec_ns, rec_state) = start_node(
        &mut t,
        "rec",
        "198.18.0.80",
        &["--tag", RECORDER_TAG],
        &recorder,
    );
    let rec_ip = tailnet_address(&t, &rec_state, "client");
    let client = t
        .status(causeway_e2e::local::Node::Client)
        .expect("client status");
    let client_name = client["name"].as_str().expect("client's name").to_owned();
    let client_ip = client["addresses"][0]
        .as_str()
        .expect("client's address")
        .to_owned();
    wait_until(WAIT, "the client to see the recorder", || {
        peer(&t.status(causeway_e2e::local::Node::Client)?, "rec").map(|_| ())
    });

    // The client records a command through the mesh, claiming to be db-7.
    let mut record = t.command_in(Site::Cli, binary("appliance"));
    record
        .args(["record", "--recorder"])
        .arg(format!("http://{rec_ip}:{RECORDER_PORT}"))
        .args(["--enforce", "--node-id", "db-7", "--connection-id", "c1"])
        .args(["--", "echo", "recorded through the mesh"]);
    let ran = run(&mut record, Duration::from_secs(30));
    assert!(ran.success(), "appliance record: {ran}");
    let stored = wait_until(WAIT, "the recording to be stored", || {
        let dir = store.join(&client_name);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cast"))
            .collect();
        anyhow::ensure!(!names.is_empty(), "nothing under {}", dir.display());
        Ok(names)
    });
    assert!(
        stored[0].contains("-c1-"),
        "filed under the client's tailnet name {client_name:?} ({client_ip}): {stored:?}"
    );
    assert!(
        !store.join("db-7").exists(),
        "nothing is filed under the ID the header claims"
    );

    // The web UI: alice's node is refused until a grant names her, then
    // served; the client, which no grant names, stays refused.
    let (viewer_ns, viewer_state) =
        start_node(&mut t, "vw", "198.18.0.81", &["--user", VIEWER], "");
    tailnet_address(&t, &viewer_state, "rec");
    let get = |ns: &Netns, host: &str| {
        let mut cmd = ns.command("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/stderr",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://{rec_ip}:{WEB_PORT}/"));
        run(&mut cmd, Duration::from_secs(10))
    };
    let before = wait_until(WAIT, "the recorder to answer the viewer", || {
        let ran = get(&viewer_ns, "recorder.example.ts.net");
        anyhow::ensure!(ran.stdout.trim() == "403", "{ran}");
        Ok(ran)
    });
    assert!(
        before
            .stderr
            .contains("may not view recordings: no grant in the tailnet policy"),
        "without a grant alice is refused, saying why: {before}"
    );
    let granted = std::time::Instant::now();
    set_policy(&t, dir.path(), true);
    let seen = wait_until(WAIT, "the viewer node to view recordings", || {
        let ran = get(&viewer_ns, "recorder.example.ts.net");
        anyhow::ensure!(ran.stdout.trim() == "200", "{ran}");
        Ok(ran)
    });
    println!(
        "the grant let alice in {:.2} s after `admin policy set` started",
        granted.elapsed().as_secs_f64()
    );
    assert!(
        seen.stderr.contains("c1"),
        "the list shows the recording: {seen}"
    );
    let refused = get(&t.dep().netns(Site::Cli), "recorder.example.ts.net");
    assert_eq!(refused.stdout.trim(), "403", "{refused}");
    assert!(
        refused.stderr.contains("may not view recordings"),
        "the client is refused by name: {refused}"
    );
    let rebound = get(&viewer_ns, "attacker.example");
    assert_eq!(rebound.stdout.trim(), "403", "{rebound}");
    t.finish();
}
