//! Whatever arrives on the WireGuard port that is not valid WireGuard is
//! counted and dropped; it changes no peer and breaks no tunnel.

use std::time::Duration;

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{TestDeployment, u64_field, wait_until};
use serde_json::Value;

/// Sends every fixed size and message-type prefix, then random datagrams,
/// paced so the router's socket buffer does not overflow. Prints the count.
const SENDER: &str = r#"
import os, random, socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0x5eed)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
grams = [b"", b"\x01", b"\x04\x00\x00\x00"]
for size in (0, 1, 4, 32, 148, 1500):
    grams.append(os.urandom(size))
# WireGuard message types 1..4 with the sizes of real messages and others.
for kind in (1, 2, 3, 4):
    for size in (4, 16, 32, 64, 92, 148, 200, 1500):
        grams.append(bytes([kind, 0, 0, 0]) + os.urandom(size - 4))
while len(grams) < total:
    size = rng.choice((0, 1, 4, 32, 148, 1500, rng.randrange(0, 1501)))
    head = bytes([rng.randrange(1, 5), 0, 0, 0]) if rng.random() < 0.5 and size >= 4 else b""
    grams.append(head + os.urandom(size - len(head)))
for i, g in enumerate(grams):
    s.sendto(g, (host, port))
    if i % 50 == 49:
        time.sleep(0.005)
print(len(grams))
"#;

/// What must not change about a peer: who it is and where it is.
fn identities(status: &Value) -> Vec<(Value, Value, Value, Value, Value)> {
    let mut out: Vec<_> = status["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            (
                p["id"].clone(),
                p["name"].clone(),
                p["node_key"].clone(),
                p["endpoint"].clone(),
                p["allowed_ips"].clone(),
            )
        })
        .collect();
    out.sort_by_key(|p| p.0.to_string());
    out
}

#[test]
fn garbage_datagrams_change_nothing() {
    let t = TestDeployment::deploy();
    let router = t.process("router");
    let before = t.status(Node::Router).expect("router status");
    let dropped_before = u64_field(&before, "dropped_packets").expect("dropped_packets");
    assert!(!identities(&before).is_empty(), "{before}");

    let python = if std::path::Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let sent = t
        .run_in(
            Site::Cli,
            &[python, "-c", SENDER, "198.18.0.3", "41641", "3000"],
        )
        .expect_success();
    let sent: u64 = sent
        .stdout
        .trim()
        .parse()
        .expect("the sender prints its count");
    assert!(sent >= 3000);

    // Datagrams reach the router's socket at once; give the driver a moment.
    let after = wait_until(
        Duration::from_secs(10),
        "the router to count the garbage as dropped",
        || {
            let s = t.status(Node::Router)?;
            let dropped = u64_field(&s, "dropped_packets")?;
            anyhow::ensure!(
                dropped >= dropped_before + sent * 9 / 10,
                "dropped {dropped_before} -> {dropped} after {sent} garbage datagrams"
            );
            Ok(s)
        },
    );
    eprintln!(
        "dropped_packets {dropped_before} -> {} after {sent} datagrams",
        after["dropped_packets"]
    );
    assert!(router.is_alive(), "the router died");
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(
        identities(&after),
        identities(&before),
        "peers changed:\n{before}\n{after}"
    );
    t.fetch_vpc_page(Site::Cli)
        .expect("the client still reaches the VPC");
    assert_eq!(
        t.dep().query_db(Site::Cli).expect("psql"),
        causeway_e2e::DB_GREETING
    );
    assert!(router.is_alive(), "the router died");
    t.finish();
}
