//! Control refuses bad auth keys with a reason, and a refused node stores
//! nothing and exits.

use std::path::Path;
use std::time::Duration;

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{Ran, TestDeployment, run, write_secret_file};

/// Starts a fresh node in the client namespace with `key` and waits for it
/// to exit (it must, within 15 s).
fn run_node_with_key(t: &TestDeployment, dir: &Path, n: u16, key: &str) -> Ran {
    let state = dir.join(format!("node{n}"));
    std::fs::create_dir_all(&state).expect("state dir");
    let key_file = dir.join(format!("node{n}.authkey"));
    write_secret_file(&key_file, &format!("{key}\n"));
    let config = dir.join(format!("node{n}.toml"));
    let text = format!(
        "state_dir = {state:?}\n\n[node]\ncontrol_url = \"http://198.18.0.2:8080\"\n\
         control_public_key_file = {pubkey:?}\nauth_key_file = {key_file:?}\n\
         hostname = \"extra{n}\"\nlisten_port = {port}\ntun_name = \"cwx{n}\"\n",
        pubkey = t.dep().paths().control_pub(),
        port = 41650 + n,
    );
    std::fs::write(&config, text).expect("writing the config");
    let mut cmd = t.command_in(Site::Cli, t.appliance_bin());
    cmd.arg("run").arg("--config").arg(&config);
    run(&mut cmd, Duration::from_secs(15))
}

#[track_caller]
fn assert_refused(ran: &Ran, reason: &str) {
    assert!(
        ran.status.is_some(),
        "the node kept running with a bad key: {ran}"
    );
    assert!(!ran.success(), "the node exited 0 with a bad key: {ran}");
    assert!(
        ran.stderr.contains(reason),
        "stderr does not name {reason:?}: {ran}"
    );
    assert!(
        ran.elapsed < Duration::from_secs(10),
        "refusal took too long: {ran}"
    );
}

fn create_key(t: &TestDeployment, extra: &[&str]) -> (String, String) {
    let mut args = vec!["keys", "create"];
    args.extend_from_slice(extra);
    let v = t.admin_json(&args);
    let id = v["id"].as_str().expect("key id").to_owned();
    let key = v["key"].as_str().expect("key").to_owned();
    (id, key)
}

#[test]
fn bad_auth_keys_are_refused() {
    let t = TestDeployment::deploy();
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes_before = t.nodes();
    assert_eq!(nodes_before.len(), 2);

    // (a) well-formed, never issued.
    let unknown = format!("cwk_{}_{}", "0123456789ab", "cd".repeat(24));
    let ran = run_node_with_key(&t, dir.path(), 1, &unknown);
    assert_refused(&ran, "auth key is not known");

    // (b) revoked.
    let (id, key) = create_key(&t, &[]);
    t.admin(&["keys", "revoke", &id]).expect_success();
    let ran = run_node_with_key(&t, dir.path(), 2, &key);
    assert_refused(&ran, &format!("auth key {id} was revoked"));

    // (c) expired: a 1 s expiry, used 2 s later.
    let (id, key) = create_key(&t, &["--expiry", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let ran = run_node_with_key(&t, dir.path(), 3, &key);
    assert_refused(&ran, &format!("auth key {id} expired"));

    // (d) single-use, already used by the client at deploy time.
    let used = std::fs::read_to_string(t.dep().paths().node_auth_key(Node::Client))
        .expect("the client's auth key");
    let used_id = used
        .trim()
        .split('_')
        .nth(1)
        .expect("cwk_<id>_<secret>")
        .to_owned();
    let ran = run_node_with_key(&t, dir.path(), 4, used.trim());
    assert_refused(
        &ran,
        &format!("auth key {used_id} is single-use and was already used"),
    );

    let nodes_after = t.nodes();
    assert_eq!(nodes_after.len(), nodes_before.len(), "{nodes_after:?}");
    for n in 1..=4 {
        let links = t
            .run_in(Site::Cli, &["ip", "-o", "link", "show"])
            .expect_success();
        assert!(
            !links.stdout.contains(&format!("cwx{n}")),
            "TUN of a refused node: {links}"
        );
    }
    let keys = t.admin_json(&["keys", "list"]);
    let key = keys
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("expired key {id} not listed: {keys}"));
    assert_eq!(key["used"], false, "a refused key was marked used: {key}");
    t.finish();
}
