//! `handle_datagram` on arbitrary bytes arriving from a fixed address (peer
//! 2's endpoint, so the session-rescue path is reachable), then
//! `poll_transmit` until None. Must never panic.
//!
//! Input: first byte = flags, the rest is split on `CWDG` into up to 16
//! datagrams, delivered in order.
//! - bit 0: establish a real session with peer 2 first (fixed static keys;
//!   boringtun picks fresh ephemerals, so forged data never decrypts, but
//!   session indices and state are real);
//! - bit 1: install a packet filter;
//! - bit 2: send a packet to peer 3 first, so an initiation is pending;
//! - bit 3: datagrams come from an unknown address instead;
//! - bit 4: run the timers after each datagram.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use causeway_mesh::Delivery;
use causeway_mesh_fuzz::{BUF, address, drain, endpoint, establish, filter, ipv4_packet, node};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"CWDG";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut a = node(1);
    let mut out = vec![0u8; BUF];
    if flags & 1 != 0 {
        let mut b = node(2);
        establish(&mut a, &mut b, now);
    }
    if flags & 2 != 0 {
        a.set_filter(Some(filter()));
    }
    if flags & 4 != 0 {
        let _ = a.handle_tun_packet(&ipv4_packet(address(1), address(3), b"x"), &mut out, now);
        drain(&mut a, now);
    }
    let from: SocketAddr = if flags & 8 != 0 {
        "203.0.113.7:9".parse().expect("valid address")
    } else {
        endpoint(2)
    };
    for _ in 0..16 {
        let (datagram, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        match a.handle_datagram(from, datagram, &mut out, now) {
            Delivery::Network(t) => assert!(!t.payload.is_empty()),
            Delivery::Tun(p) => assert!(causeway_mesh::parse_ip_header(p).is_some()),
            Delivery::Nothing | Delivery::Dropped(_) => {}
        }
        if flags & 16 != 0 {
            a.handle_timeout(now);
        }
        drain(&mut a, now);
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
});
