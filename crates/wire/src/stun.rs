//! STUN Binding (RFC 5389), the one STUN exchange Causeway uses: a node
//! sends a Binding request from its WireGuard socket to control's STUN port
//! and learns the address that socket has as seen from outside (its
//! *server-reflexive* address, RFC 5389 §2), which it then advertises as an
//! endpoint. Encoding and decoding are `stun_codec`'s; this module only
//! decides which messages Causeway sends and accepts.

use std::net::SocketAddr;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::Attribute;
use stun_codec::rfc5389::attributes::XorMappedAddress;
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};

/// The port STUN servers listen on by default (RFC 5389 §18.4).
pub const DEFAULT_PORT: u16 = 3478;

/// The fixed value in every RFC 5389 message header (§6).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// A STUN header is 20 bytes (§6).
const HEADER_LEN: usize = 20;

/// The largest STUN message Causeway reads: a Binding response carries one
/// address and perhaps a few informational attributes.
pub const MAX_MESSAGE_LEN: usize = 548;

/// Why a datagram is not the Binding response we wait for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a well-formed STUN message.
    #[error("not a well-formed STUN message")]
    Malformed,
    /// A STUN message, but not a Binding success response.
    #[error("not a Binding success response")]
    NotBindingSuccess,
    /// A Binding success response without an XOR-MAPPED-ADDRESS.
    #[error("the Binding response has no XOR-MAPPED-ADDRESS")]
    NoAddress,
}

/// Whether a datagram on the WireGuard socket is STUN rather than WireGuard.
///
/// A STUN message starts with two zero bits, carries the magic cookie at
/// bytes 4..8 and a length field equal to the attribute bytes that follow
/// (a multiple of four; §6). WireGuard messages start with a type byte 1–4
/// followed by three zero bytes, so a handshake initiation (type 1, 148
/// bytes) has a STUN-shaped length field of 0 and never matches.
pub fn is_stun(datagram: &[u8]) -> bool {
    let Some(header) = datagram.get(..HEADER_LEN) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    header[0] & 0xc0 == 0
        && u32::from_be_bytes([header[4], header[5], header[6], header[7]]) == MAGIC_COOKIE
        && length % 4 == 0
        && HEADER_LEN + length == datagram.len()
}

/// A Binding request with this transaction ID.
pub fn binding_request(transaction_id: [u8; 12]) -> Vec<u8> {
    let message: Message<Attribute> = Message::new(
        MessageClass::Request,
        BINDING,
        TransactionId::new(transaction_id),
    );
    encode(message)
}

/// The transaction ID and the XOR-MAPPED-ADDRESS of a Binding success
/// response.
pub fn parse_binding_response(datagram: &[u8]) -> Result<([u8; 12], SocketAddr), StunError> {
    let message = decode(datagram)?;
    if message.class() != MessageClass::SuccessResponse || message.method() != BINDING {
        return Err(StunError::NotBindingSuccess);
    }
    let address = message
        .get_attribute::<XorMappedAddress>()
        .ok_or(StunError::NoAddress)?
        .address();
    Ok((*message.transaction_id().as_bytes(), address))
}

/// Control's answer to a datagram on its STUN port: for a Binding request,
/// a success response telling the sender the address it came from; for
/// anything else, nothing (RFC 5389 §7.3: unknown or malformed messages are
/// discarded silently, which also keeps the server from reflecting junk).
pub fn answer_binding_request(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let request = decode(datagram).ok()?;
    if request.class() != MessageClass::Request || request.method() != BINDING {
        return None;
    }
    let mut response: Message<Attribute> = Message::new(
        MessageClass::SuccessResponse,
        BINDING,
        request.transaction_id(),
    );
    response.add_attribute(XorMappedAddress::new(from));
    Some(encode(response))
}

fn decode(datagram: &[u8]) -> Result<Message<Attribute>, StunError> {
    if datagram.len() > MAX_MESSAGE_LEN || !is_stun(datagram) {
        return Err(StunError::Malformed);
    }
    MessageDecoder::<Attribute>::new()
        .decode_from_bytes(datagram)
        .ok()
        .and_then(|decoded| decoded.ok())
        .ok_or(StunError::Malformed)
}

fn encode(message: Message<Attribute>) -> Vec<u8> {
    // Encoding a Binding message with at most one address attribute has no
    // failure path in stun_codec (no size limit is reached, no integrity
    // attribute needs a key); an empty datagram would simply be ignored.
    MessageEncoder::new()
        .encode_into_bytes(message)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_is_answered_with_the_senders_address() {
        let from: SocketAddr = "198.18.0.3:41641".parse().expect("valid address");
        let request = binding_request([7; 12]);
        assert_eq!(request.len(), 20, "a bare Binding request is one header");
        assert!(is_stun(&request));

        let response = answer_binding_request(&request, from).expect("answered");

        assert!(is_stun(&response));
        assert_eq!(parse_binding_response(&response), Ok(([7; 12], from)));
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let from: SocketAddr = "[fd7a:115c:a1e0::3]:41641".parse().expect("valid address");
        let response = answer_binding_request(&binding_request([1; 12]), from).expect("answered");
        assert_eq!(parse_binding_response(&response), Ok(([1; 12], from)));
    }

    #[test]
    fn responses_and_junk_are_not_answered() {
        let from: SocketAddr = "198.18.0.3:41641".parse().expect("valid address");
        let response = answer_binding_request(&binding_request([2; 12]), from).expect("answered");
        assert_eq!(answer_binding_request(&response, from), None);
        assert_eq!(answer_binding_request(b"hello", from), None);
        assert_eq!(
            parse_binding_response(&binding_request([2; 12])),
            Err(StunError::NotBindingSuccess)
        );
    }

    #[test]
    fn wireguard_messages_are_not_stun() {
        // Type 1 (initiation, 148 bytes), 2 (response, 92), 3 (cookie, 64),
        // 4 (data, at least 32), each with a cookie-looking sender index.
        for (kind, len) in [(1u8, 148usize), (2, 92), (3, 64), (4, 32), (4, 1452)] {
            let mut message = vec![0u8; len];
            message[0] = kind;
            message[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            assert!(!is_stun(&message), "type {kind}, {len} bytes");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let from: SocketAddr = "198.18.0.3:41641".parse().expect("valid address");
            let _ = is_stun(&bytes);
            let _ = parse_binding_response(&bytes);
            let _ = answer_binding_request(&bytes, from);
        }

        #[test]
        fn any_answer_is_a_binding_response_to_the_sender(
            id in any::<[u8; 12]>(),
            ip in any::<[u8; 4]>(),
            port in any::<u16>(),
        ) {
            let from = SocketAddr::from((ip, port));
            let response = answer_binding_request(&binding_request(id), from).expect("answered");
            prop_assert_eq!(parse_binding_response(&response), Ok((id, from)));
        }
    }
}
