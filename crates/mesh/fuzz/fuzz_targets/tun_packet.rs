//! `handle_tun_packet` on arbitrary bytes read from the TUN device, then
//! `poll_transmit` until None. Never panics.
//!
//! Input: first byte = flags, the rest is the packet.
//! - bit 0: establish a real session with peer 2 first (so the data path,
//!   not only the handshake path, is taken);
//! - bit 1: also run the timers (`handle_timeout`) afterwards.
#![no_main]

use std::time::Instant;

use causeway_mesh::Transmit;
use causeway_mesh_fuzz::{drain, endpoint, establish, node};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, packet)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut a = node(1);
    if flags & 1 != 0 {
        let mut b = node(2);
        establish(&mut a, &mut b, now);
    }
    // Documented contract: at least packet.len() + 72 and 148 bytes.
    let mut out = vec![0u8; (packet.len() + 72).max(148)];
    if let Ok(Some(Transmit { destination, payload })) = a.handle_tun_packet(packet, &mut out, now) {
        assert!(destination == endpoint(2) || destination == endpoint(3));
        assert!(!payload.is_empty());
    }
    if flags & 2 != 0 {
        a.handle_timeout(now);
    }
    drain(&mut a, now);
});
