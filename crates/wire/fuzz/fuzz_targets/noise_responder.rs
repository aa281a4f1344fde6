//! The first Noise message as control reads it (after base64): arbitrary
//! bytes into `Responder::accept` with a fixed control key. Nothing a node
//! sends may panic control; a message that is accepted must also be
//! answerable.
#![no_main]

use std::sync::LazyLock;

use causeway_wire::noise::Responder;
use causeway_wire::{CAPABILITY_VERSION, PrivateKey, ServerHello};
use libfuzzer_sys::fuzz_target;

static CONTROL: LazyLock<PrivateKey> = LazyLock::new(|| PrivateKey::from_random_bytes([1; 32]));

fuzz_target!(|data: &[u8]| {
    if let Ok((responder, _machine, _hello)) = Responder::accept(&CONTROL, data) {
        responder
            .reply(&ServerHello::Accepted {
                capability_version: CAPABILITY_VERSION,
            })
            .expect("an accepted handshake can be answered");
    }
});
