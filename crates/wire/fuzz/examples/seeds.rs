//! Writes the hand-made seed inputs to corpus/<target>/seed-*:
//! `cargo run --example seeds` from this directory.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use causeway_wire::noise::Initiator;
use causeway_wire::{
    CAPABILITY_VERSION, ClientHello, ClientMessage, ControlError, ErrorCode, Liveness, MapRequest,
    MapResponse, Node, NodeId, NodeUpdate, PrivateKey, RegisterRequest, ServerHello,
    ServerMessage,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialise")
}

fn main() {
    let control = PrivateKey::from_random_bytes([1; 32]);
    let machine = PrivateKey::from_random_bytes([2; 32]);
    let hello = ClientHello {
        capability_version: CAPABILITY_VERSION,
    };
    let (_, m1) = Initiator::start(&machine, &control.public_key(), &hello).expect("start");
    write("noise_responder", "valid-first-message", &m1);
    write("noise_responder", "truncated", &m1[..m1.len() / 2]);
    write("handshake_header", "valid", STANDARD.encode(&m1).as_bytes());
    write("handshake_header", "padded", format!("  {}\r\n", STANDARD.encode(&m1)).as_bytes());

    let node = Node {
        id: NodeId(2),
        name: "router".into(),
        node_key: PrivateKey::from_random_bytes([3; 32]).public_key(),
        key_expiry: Some(1_800_000_000),
        addresses: vec!["100.64.0.2/32".parse().expect("net"), "fd7a:115c:a1e0::2/128".parse().expect("net")],
        allowed_ips: vec!["100.64.0.2/32".parse().expect("net"), "198.19.1.0/24".parse().expect("net")],
        primary_routes: vec!["198.19.1.0/24".parse().expect("net")],
        endpoints: vec!["198.18.0.2:41641".parse().expect("addr"), "[2001:db8::2]:41641".parse().expect("addr")],
        tags: vec!["tag:router".into()],
        online: true,
        user: None,
        wireguard_only: false,
        exit_routes: vec![],
        exit_unhealthy: false,
    };
    let register = ClientMessage::Register(RegisterRequest {
        node_key: machine.public_key(),
        old_node_key: None,
        auth_key: Some(format!("cwk_{}_{}", "ab".repeat(6), "cd".repeat(24))),
        hostname: "laptop".into(),
    });
    let map_request = ClientMessage::Map(MapRequest {
        node_key: machine.public_key(),
        hostname: "laptop".into(),
        endpoints: vec!["198.18.0.1:41641".parse().expect("addr")],
        advertised_routes: vec!["198.19.1.0/24".parse().expect("net")],
        health: None,
        priority: None,
        app_connector: None,
    });
    let update = ClientMessage::Update(NodeUpdate {
        endpoints: Some(vec!["198.18.0.9:41641".parse().expect("addr")]),
        advertised_routes: None,
        health: None,
        priority: None,
        app_connector: None,
    });
    let full_map = ServerMessage::Map(MapResponse {
        seq: 1,
        node: Some(node.clone()),
        peers: Some(vec![node]),
        ..Default::default()
    });
    let error = ServerMessage::Error(ControlError {
        code: ErrorCode::AuthKeyRefused,
        message: "no".into(),
    });
    let samples: Vec<(&str, Vec<u8>)> = vec![
        ("register", json(&register)),
        ("map-request", json(&map_request)),
        ("update", json(&update)),
        ("full-map", json(&full_map)),
        ("keepalive", json(&ServerMessage::KeepAlive)),
        ("error", json(&error)),
        ("client-hello", json(&hello)),
        ("server-hello", json(&ServerHello::Refused { reason: "old".into() })),
        ("client-keepalive", json(&ClientMessage::KeepAlive)),
        (
            "liveness",
            json(&ServerMessage::Liveness(Liveness {
                keepalive_interval_ms: 1000,
            })),
        ),
    ];
    for (name, bytes) in &samples {
        write("json_messages", name, bytes);
    }
    // noise_records: raw mode (bit 0 clear), then sealed records (bit 0 set).
    write("noise_records", "raw-frame", &[0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    for (i, (name, bytes)) in samples.iter().enumerate() {
        // Mode 1, 3, 5, 7 in turn; one LAST record.
        let mut seed = vec![1 + 2 * (i as u8 % 4), 1];
        seed.extend_from_slice(bytes);
        write("noise_records", &format!("sealed-{name}"), &seed);
    }
    // A message in three records: MORE, MORE, LAST.
    let body = json(&update);
    let third = body.len() / 3;
    let mut seed = vec![3, 0];
    seed.extend_from_slice(&body[..third]);
    seed.extend_from_slice(b"CWRS\x00");
    seed.extend_from_slice(&body[third..2 * third]);
    seed.extend_from_slice(b"CWRS\x01");
    seed.extend_from_slice(&body[2 * third..]);
    write("noise_records", "sealed-three-records", &seed);
    // Two messages back to back, then an empty record and a bad flag.
    let mut seed = vec![1, 1];
    seed.extend_from_slice(&json(&update));
    seed.extend_from_slice(b"CWRS\x01");
    seed.extend_from_slice(&json(&ServerMessage::KeepAlive));
    seed.extend_from_slice(b"CWRSCWRS\x07{}");
    write("noise_records", "sealed-two-then-bad", &seed);
}
