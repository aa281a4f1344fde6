//! Writes the hand-made seed inputs to corpus/<target>/seed-*:
//! `cargo run --example seeds` from this directory.

use std::path::Path;
use std::time::Instant;

use causeway_mesh::Delivery;
use causeway_mesh_fuzz::{BUF, address, drain, endpoint, ipv4_packet, node};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn with_flags(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(body);
    v
}

fn main() {
    let now = Instant::now();
    let mut out = vec![0u8; BUF];
    let v4 = ipv4_packet(address(1), address(2), b"ping");
    let mut v6 = vec![0u8; 48];
    v6[0] = 0x60;
    v6[8] = 0xfd;
    v6[24] = 0xfd;
    write("ip_header", "ipv4", &v4);
    write("ip_header", "ipv6", &v6);
    write("ip_header", "short-v4", &v4[..19]);
    write("tun_packet", "to-peer-2", &with_flags(0, &v4));
    write("tun_packet", "to-peer-2-session", &with_flags(1, &v4));
    write("tun_packet", "to-subnet", &with_flags(2, &ipv4_packet(address(1), "198.19.1.5".parse().expect("ip"), b"x")));
    write("tun_packet", "no-route-v6", &with_flags(0, &v6));

    // A real handshake initiation from node 2 to node 1 (valid whatever the
    // session state, since it is keyed by the static keys).
    let mut b = node(2);
    let init = match b.handle_tun_packet(&ipv4_packet(address(2), address(1), b"hi"), &mut out, now) {
        Ok(Some(t)) => t.payload.to_vec(),
        other => panic!("expected an initiation, got {other:?}"),
    };
    drain(&mut b, now);
    let mut a = node(1);
    let response = match a.handle_datagram(endpoint(2), &init, &mut out, now) {
        Delivery::Network(t) => t.payload.to_vec(),
        other => panic!("expected a response, got {other:?}"),
    };
    write("datagram", "init", &with_flags(0, &init));
    write("datagram", "init-session", &with_flags(1 | 16, &init));
    write("datagram", "init-pending-filter", &with_flags(2 | 4, &init));
    // Forms of the other message types (wrong keys, right shapes).
    let mut data = vec![4u8, 0, 0, 0];
    data.extend_from_slice(&1000u32.to_le_bytes()); // receiver index of a slot
    data.extend_from_slice(&[0; 8]);
    data.extend_from_slice(&[0; 32]);
    write("datagram", "data-rescue", &with_flags(0, &data));
    write("datagram", "data-session", &with_flags(1, &data));
    let mut two = init.clone();
    two.extend_from_slice(b"CWDG");
    two.extend_from_slice(&response);
    write("datagram", "init-then-response", &with_flags(8, &two));
    write("datagram", "response", &with_flags(4, &response));
    let mut cookie = vec![3u8, 0, 0, 0];
    cookie.extend_from_slice(&[0; 60]);
    write("datagram", "cookie", &with_flags(4, &cookie));
}
