//! The `causeway-handshake` request header as control's node API reads it
//! (control/src/node_api.rs `handshake`): a header value that must be text,
//! trimmed, standard base64, then the first Noise message. The decoding
//! steps are repeated here because that function is private to the control
//! binary; the parsers called are the real ones.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use causeway_wire::noise::Responder;
use causeway_wire::PrivateKey;
use libfuzzer_sys::fuzz_target;

static CONTROL: LazyLock<PrivateKey> = LazyLock::new(|| PrivateKey::from_random_bytes([1; 32]));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = STANDARD.decode(text.trim()) else {
        return;
    };
    let _ = Responder::accept(&CONTROL, &message);
});
