//! The control channel: Noise IK (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) with
//! the node's machine key as initiator static and control's key, pinned by
//! the node, as responder static. Both sides are authenticated by the end of
//! the handshake's second message.
//!
//! On the wire, after the handshake, each record is a 2-byte big-endian
//! length and that many bytes of Noise ciphertext. A record's plaintext is a
//! flag byte ([`MORE`] or [`LAST`]) and a chunk of a JSON message, so one
//! message may span several records (a Noise message is at most 65535
//! bytes; a netmap of many nodes is larger).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use snow::{HandshakeState, StatelessTransportState};

use crate::{ClientHello, PrivateKey, PublicKey, ServerHello};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Bound into the handshake so a key for another protocol cannot be reused.
const PROLOGUE: &[u8] = b"causeway control v1";

/// Largest Noise message (RFC-like limit from the Noise specification §3).
const MAX_NOISE_MESSAGE: usize = 65535;
/// Authentication tag appended by ChaChaPoly.
const TAG_LEN: usize = 16;
/// Largest message chunk in one record.
const MAX_CHUNK: usize = MAX_NOISE_MESSAGE - TAG_LEN - 1;
/// Largest whole message a receiver accepts, so a peer cannot make us
/// buffer without bound.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Flag byte: more chunks of this message follow.
pub const MORE: u8 = 0;
/// Flag byte: this chunk ends the message.
pub const LAST: u8 = 1;

/// What went wrong on the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The Noise handshake or a transport record failed to authenticate.
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// A hello or message was not the JSON we expect.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A record had a flag byte other than [`MORE`] or [`LAST`], or was empty.
    #[error("malformed record")]
    BadRecord,
    /// A message grew past [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The peer's static key is missing after the handshake.
    #[error("peer static key missing after handshake")]
    NoPeerKey,
}

fn builder() -> snow::Builder<'static> {
    snow::Builder::new(PATTERN.parse().expect("PATTERN is a valid Noise pattern"))
        .prologue(PROLOGUE)
        .expect("prologue is set once")
}

/// The node's side of the handshake, waiting for control's answer.
pub struct Initiator {
    state: HandshakeState,
}

impl Initiator {
    /// Starts a handshake; returns the state and the first message to send.
    pub fn start(
        machine_key: &PrivateKey,
        control_key: &PublicKey,
        hello: &ClientHello,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        let secret = machine_key.to_bytes();
        let mut state = builder()
            .local_private_key(&secret)?
            .remote_public_key(control_key.as_bytes())?
            .build_initiator()?;
        let payload = serde_json::to_vec(hello)?;
        let mut message = vec![0u8; MAX_NOISE_MESSAGE];
        let len = state.write_message(&payload, &mut message)?;
        message.truncate(len);
        Ok((Self { state }, message))
    }

    /// Reads control's answer. A [`ServerHello::Refused`] still returns a
    /// channel (it is authenticated), but the caller should stop there.
    pub fn finish(mut self, message: &[u8]) -> Result<(ServerHello, Channel), ChannelError> {
        let mut payload = vec![0u8; MAX_NOISE_MESSAGE];
        let len = self.state.read_message(message, &mut payload)?;
        let hello = serde_json::from_slice(&payload[..len])?;
        Ok((
            hello,
            Channel::new(self.state.into_stateless_transport_mode()?),
        ))
    }
}

/// Control's side of the handshake, after reading the first message.
pub struct Responder {
    state: HandshakeState,
}

impl Responder {
    /// Reads a node's first message: returns the node's machine key and
    /// hello. Fails when the node did not pin this control's key.
    pub fn accept(
        control_key: &PrivateKey,
        message: &[u8],
    ) -> Result<(Self, PublicKey, ClientHello), ChannelError> {
        let secret = control_key.to_bytes();
        let mut state = builder().local_private_key(&secret)?.build_responder()?;
        let mut payload = vec![0u8; MAX_NOISE_MESSAGE];
        let len = state.read_message(message, &mut payload)?;
        let hello: ClientHello = serde_json::from_slice(&payload[..len])?;
        let remote = state.get_remote_static().ok_or(ChannelError::NoPeerKey)?;
        let machine = <[u8; 32]>::try_from(remote).map_err(|_| ChannelError::NoPeerKey)?;
        Ok((Self { state }, PublicKey::from_bytes(machine), hello))
    }

    /// Writes the answer; returns the message to send and the channel.
    pub fn reply(mut self, hello: &ServerHello) -> Result<(Vec<u8>, Channel), ChannelError> {
        let payload = serde_json::to_vec(hello)?;
        let mut message = vec![0u8; MAX_NOISE_MESSAGE];
        let len = self.state.write_message(&payload, &mut message)?;
        message.truncate(len);
        Ok((
            message,
            Channel::new(self.state.into_stateless_transport_mode()?),
        ))
    }
}

/// An established channel; split it to send and receive independently.
pub struct Channel {
    state: Arc<StatelessTransportState>,
}

impl Channel {
    fn new(state: StatelessTransportState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }

    /// Splits into a sending and a receiving half.
    pub fn split(self) -> (Sealer, Opener) {
        (
            Sealer {
                state: Arc::clone(&self.state),
                nonce: 0,
            },
            Opener {
                state: self.state,
                nonce: 0,
                buffer: Vec::new(),
                message: Vec::new(),
            },
        )
    }
}

/// Sending half: turns messages into records.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// Appends the records carrying `message` to `out`.
    pub fn seal<T: Serialize>(
        &mut self,
        message: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        let json = serde_json::to_vec(message)?;
        let mut chunks = json.chunks(MAX_CHUNK).peekable();
        let mut plain = Vec::with_capacity(MAX_CHUNK + 1);
        let mut cipher = vec![0u8; MAX_NOISE_MESSAGE];
        // An empty message still needs one (LAST) record.
        let mut first = true;
        while first || chunks.peek().is_some() {
            first = false;
            let chunk = chunks.next().unwrap_or(&[]);
            plain.clear();
            plain.push(if chunks.peek().is_some() { MORE } else { LAST });
            plain.extend_from_slice(chunk);
            let len = self.state.write_message(self.nonce, &plain, &mut cipher)?;
            self.nonce += 1;
            let len16 = u16::try_from(len).map_err(|_| ChannelError::TooLarge)?;
            out.extend_from_slice(&len16.to_be_bytes());
            out.extend_from_slice(&cipher[..len]);
        }
        Ok(())
    }
}

/// Receiving half: buffers bytes from the stream and yields messages.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    buffer: Vec<u8>,
    message: Vec<u8>,
}

impl Opener {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, if the buffered bytes hold one. An error
    /// means the channel is broken and must be closed.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ChannelError> {
        let mut plain = vec![0u8; MAX_NOISE_MESSAGE];
        loop {
            let Some(len_bytes) = self.buffer.get(..2) else {
                return Ok(None);
            };
            let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            if self.buffer.len() < 2 + len {
                return Ok(None);
            }
            let n = self
                .state
                .read_message(self.nonce, &self.buffer[2..2 + len], &mut plain)?;
            self.nonce += 1;
            self.buffer.drain(..2 + len);
            let Some((&flag, chunk)) = plain[..n].split_first() else {
                return Err(ChannelError::BadRecord);
            };
            if self.message.len() + chunk.len() > MAX_MESSAGE {
                return Err(ChannelError::TooLarge);
            }
            self.message.extend_from_slice(chunk);
            match flag {
                MORE => continue,
                LAST => {
                    let parsed = serde_json::from_slice(&self.message);
                    self.message.clear();
                    return Ok(Some(parsed?));
                }
                _ => return Err(ChannelError::BadRecord),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CAPABILITY_VERSION, ClientMessage, MapResponse, NodeUpdate, ServerMessage};
    use proptest::prelude::*;

    fn handshake() -> ((Sealer, Opener), (Sealer, Opener), PublicKey) {
        let control = PrivateKey::from_random_bytes([1; 32]);
        let machine = PrivateKey::from_random_bytes([2; 32]);
        let hello = ClientHello {
            capability_version: CAPABILITY_VERSION,
        };
        let (initiator, m1) =
            Initiator::start(&machine, &control.public_key(), &hello).expect("start");
        let (responder, seen_machine, seen_hello) =
            Responder::accept(&control, &m1).expect("accept");
        assert_eq!(seen_hello, hello);
        let (m2, server) = responder
            .reply(&ServerHello::Accepted {
                capability_version: CAPABILITY_VERSION,
            })
            .expect("reply");
        let (server_hello, client) = initiator.finish(&m2).expect("finish");
        assert!(matches!(server_hello, ServerHello::Accepted { .. }));
        (client.split(), server.split(), seen_machine)
    }

    #[test]
    fn control_learns_the_machine_key() {
        let (_, _, machine) = handshake();
        assert_eq!(machine, PrivateKey::from_random_bytes([2; 32]).public_key());
    }

    #[test]
    fn a_node_pinning_another_key_is_refused() {
        let control = PrivateKey::from_random_bytes([1; 32]);
        let impostor = PrivateKey::from_random_bytes([3; 32]);
        let machine = PrivateKey::from_random_bytes([2; 32]);
        let hello = ClientHello {
            capability_version: 1,
        };
        let (_, m1) = Initiator::start(&machine, &impostor.public_key(), &hello).expect("start");
        assert!(Responder::accept(&control, &m1).is_err());
    }

    #[test]
    fn large_messages_span_records_and_arrive_whole() {
        let ((mut tx, _), (_, mut rx), _) = handshake();
        let big = ServerMessage::Map(MapResponse {
            seq: 1,
            peers_removed: (0..40_000).map(crate::NodeId).collect(),
            ..Default::default()
        });
        let mut wire = Vec::new();
        tx.seal(&big, &mut wire).expect("seal");
        assert!(
            wire.len() > MAX_NOISE_MESSAGE,
            "test must cross a record boundary"
        );
        // Feed one byte at a time: the opener must cope with any split.
        let mut got = None;
        for b in &wire {
            rx.push(std::slice::from_ref(b));
            if let Some(m) = rx.next_message::<ServerMessage>().expect("opens") {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(big));
    }

    #[test]
    fn a_flipped_bit_breaks_the_channel() {
        let ((mut tx, _), (_, mut rx), _) = handshake();
        let mut wire = Vec::new();
        let msg = ClientMessage::Update(NodeUpdate {
            endpoints: None,
            advertised_routes: None,
        });
        tx.seal(&msg, &mut wire).expect("seal");
        wire[5] ^= 1;
        rx.push(&wire);
        assert!(rx.next_message::<ClientMessage>().is_err());
    }

    proptest! {
        #[test]
        fn garbage_first_messages_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let control = PrivateKey::from_random_bytes([1; 32]);
            prop_assert!(Responder::accept(&control, &bytes).is_err());
        }

        #[test]
        fn garbage_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let ((_, _), (_, mut rx), _) = handshake();
            rx.push(&bytes);
            let _ = rx.next_message::<ClientMessage>();
        }
    }
}
