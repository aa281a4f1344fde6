//! Transport records after a real handshake (fixed keys, fresh ephemerals
//! every run), pushed into control's `Opener`; `next_message` is called for
//! `ClientMessage` and `ServerMessage` in turn until it has nothing (None)
//! or the channel breaks (Err).
//!
//! Input: the first byte picks the mode, the rest is the payload.
//! - bit 0 clear ("raw"): the payload is pushed as stream bytes. Forged
//!   ciphertext never authenticates, so this covers framing and the
//!   refusal path.
//! - bit 0 set ("sealed"): the payload is split on `CWRS`; each piece is the
//!   *plaintext* of one record (flag byte + JSON chunk), encrypted here with
//!   the node's real transport keys and framed. This reaches the flag,
//!   reassembly and JSON paths behind the authentication.
//!   bit 1 set: drain after every record instead of once at the end.
//!   bit 2 set: push the framed stream one byte at a time.
#![no_main]

use causeway_wire::noise::{Opener, PATTERN, Responder};
use causeway_wire::{
    CAPABILITY_VERSION, ClientHello, ClientMessage, PrivateKey, ServerHello, ServerMessage,
};
use libfuzzer_sys::fuzz_target;

/// Must match `PROLOGUE` in crates/wire/src/noise.rs (private there).
const PROLOGUE: &[u8] = b"causeway control v1";
const SEPARATOR: &[u8] = b"CWRS";
/// Largest Noise plaintext: 65535 minus the 16-byte tag.
const MAX_PLAIN: usize = 65535 - 16;

/// A node-side transport (raw snow, so the target can seal any plaintext)
/// and control's receiving half, after a real IK handshake.
fn channel() -> (snow::TransportState, Opener) {
    let control = PrivateKey::from_random_bytes([1; 32]);
    let machine = PrivateKey::from_random_bytes([2; 32]);
    let mut node = snow::Builder::new(PATTERN.parse().expect("pattern"))
        .prologue(PROLOGUE)
        .expect("prologue")
        .local_private_key(&machine.to_bytes())
        .expect("local key")
        .remote_public_key(control.public_key().as_bytes())
        .expect("remote key")
        .build_initiator()
        .expect("initiator");
    let hello = serde_json::to_vec(&ClientHello {
        capability_version: CAPABILITY_VERSION,
    })
    .expect("hello");
    let mut m1 = vec![0u8; 65535];
    let n = node.write_message(&hello, &mut m1).expect("message 1");
    let (responder, _, _) = Responder::accept(&control, &m1[..n]).expect("control accepts");
    let (m2, server) = responder
        .reply(&ServerHello::Accepted {
            capability_version: CAPABILITY_VERSION,
        })
        .expect("reply");
    let mut payload = vec![0u8; 65535];
    node.read_message(&m2, &mut payload).expect("message 2");
    let (_, opener) = server.split();
    (node.into_transport_mode().expect("transport"), opener)
}

/// Calls `next_message` for both message types in turn until the channel
/// has nothing more or breaks; returns false once broken.
fn drain(opener: &mut Opener) -> bool {
    // Every Some consumes at least one record, so this ends; the bound is a
    // guard against a bug that would yield without consuming.
    for turn in 0..100_000u32 {
        let result = if turn % 2 == 0 {
            opener.next_message::<ClientMessage>().map(|m| m.is_some())
        } else {
            opener.next_message::<ServerMessage>().map(|m| m.is_some())
        };
        match result {
            Ok(true) => continue,
            Ok(false) => return true,
            Err(_) => return false,
        }
    }
    panic!("next_message kept yielding messages without consuming input");
}

fn split_pieces<'a>(mut rest: &'a [u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        pieces.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    pieces.push(rest);
    pieces
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let (mut node, mut opener) = channel();
    if mode & 1 == 0 {
        opener.push(payload);
        drain(&mut opener);
        return;
    }
    let drain_each = mode & 2 != 0;
    let bytewise = mode & 4 != 0;
    let mut cipher = vec![0u8; 65535];
    for piece in split_pieces(payload) {
        let piece = &piece[..piece.len().min(MAX_PLAIN)];
        let n = node.write_message(piece, &mut cipher).expect("seal record");
        let mut framed = u16::try_from(n).expect("record fits").to_be_bytes().to_vec();
        framed.extend_from_slice(&cipher[..n]);
        if bytewise {
            for b in &framed {
                opener.push(std::slice::from_ref(b));
                if drain_each && !drain(&mut opener) {
                    return;
                }
            }
        } else {
            opener.push(&framed);
        }
        if drain_each && !drain(&mut opener) {
            return;
        }
    }
    drain(&mut opener);
});
