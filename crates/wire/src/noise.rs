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
/// Largest whole message a receiver accepts by default, so a peer cannot
/// make us buffer without bound. Nodes read control's netmaps with this
/// limit (a netmap of thousands of nodes is megabytes).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest whole message control accepts from a node. A registration needs
/// under 1 KiB; an update with 1,000 IPv4 routes is about 16 KiB (see the
/// test `a_message_over_the_split_limit_breaks_the_channel`). Control reads messages before it knows whether the sender
/// is registered, so this is what any client can make it buffer.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

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
    /// A message grew past the receiver's limit ([`MAX_MESSAGE`] unless
    /// the channel was split with another).
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit it crossed.
        limit: usize,
    },
    /// The initiator's static key is a small-order Curve25519 point: every
    /// Diffie-Hellman with it is all zeros, so it proves nothing.
    #[error("static key is a small-order Curve25519 point")]
    SmallOrderKey,
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
        let machine = PublicKey::from_bytes(machine);
        if machine.is_small_order() {
            return Err(ChannelError::SmallOrderKey);
        }
        Ok((Self { state }, machine, hello))
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

    /// Splits into a sending and a receiving half; the receiver accepts
    /// messages of up to [`MAX_MESSAGE`] bytes.
    pub fn split(self) -> (Sealer, Opener) {
        self.split_with_limit(MAX_MESSAGE)
    }

    /// Like [`Channel::split`], with a receiver that refuses messages
    /// longer than `max_message` bytes.
    pub fn split_with_limit(self, max_message: usize) -> (Sealer, Opener) {
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
                max_message,
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
            let len16 = u16::try_from(len).map_err(|_| ChannelError::TooLarge {
                limit: MAX_NOISE_MESSAGE,
            })?;
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
    max_message: usize,
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
            if self.message.len() + chunk.len() > self.max_message {
                return Err(ChannelError::TooLarge {
                    limit: self.max_message,
                });
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
        let (client, server, seen_machine) = channels();
        (client.split(), server.split(), seen_machine)
    }

    /// Client channel, server channel and the machine key control saw.
    fn channels() -> (Channel, Channel, PublicKey) {
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
        (client, server, seen_machine)
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
            health: None,
            priority: None,
            app_connector: None,
        });
        tx.seal(&msg, &mut wire).expect("seal");
        wire[5] ^= 1;
        rx.push(&wire);
        assert!(rx.next_message::<ClientMessage>().is_err());
    }

    /// A Dh that, given the marker private key, claims a small-order public
    /// key and computes all-zero results: what an attacker without any
    /// secret would send.
    struct SmallOrderDh {
        inner: Box<dyn snow::types::Dh>,
        fake: bool,
    }

    const MARKER: [u8; 32] = [0xAA; 32];
    /// The order-8 point of RFC 7748's list of small-order u-coordinates.
    const ORDER_8: [u8; 32] = [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ];

    impl snow::types::Dh for SmallOrderDh {
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        fn pub_len(&self) -> usize {
            self.inner.pub_len()
        }
        fn priv_len(&self) -> usize {
            self.inner.priv_len()
        }
        fn set(&mut self, privkey: &[u8]) {
            self.fake = privkey == MARKER;
            self.inner.set(privkey);
        }
        fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
            self.inner.generate(rng)
        }
        fn pubkey(&self) -> &[u8] {
            if self.fake {
                &ORDER_8
            } else {
                self.inner.pubkey()
            }
        }
        fn privkey(&self) -> &[u8] {
            self.inner.privkey()
        }
        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            if self.fake {
                out[..32].fill(0);
                Ok(())
            } else {
                self.inner.dh(pubkey, out)
            }
        }
    }

    struct SmallOrderResolver(snow::resolvers::DefaultResolver);

    impl snow::resolvers::CryptoResolver for SmallOrderResolver {
        fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
            self.0.resolve_rng()
        }
        fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
            Some(Box::new(SmallOrderDh {
                inner: self.0.resolve_dh(choice)?,
                fake: false,
            }))
        }
        fn resolve_hash(
            &self,
            choice: &snow::params::HashChoice,
        ) -> Option<Box<dyn snow::types::Hash>> {
            self.0.resolve_hash(choice)
        }
        fn resolve_cipher(
            &self,
            choice: &snow::params::CipherChoice,
        ) -> Option<Box<dyn snow::types::Cipher>> {
            self.0.resolve_cipher(choice)
        }
    }

    #[test]
    fn small_order_points_are_recognised() {
        let mut p_minus_1 = [0xff; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        let mut p = p_minus_1;
        p[0] = 0xed;
        let mut one = [0; 32];
        one[0] = 1;
        for bytes in [[0; 32], one, ORDER_8, p_minus_1, p] {
            assert!(
                PublicKey::from_bytes(bytes).is_small_order(),
                "{bytes:02x?}"
            );
        }
        assert!(
            !PrivateKey::from_random_bytes([5; 32])
                .public_key()
                .is_small_order()
        );
    }

    #[test]
    fn a_small_order_machine_key_is_refused() {
        let control = PrivateKey::from_random_bytes([1; 32]);
        let mut initiator = snow::Builder::with_resolver(
            PATTERN.parse().expect("pattern"),
            Box::new(SmallOrderResolver(snow::resolvers::DefaultResolver)),
        )
        .prologue(PROLOGUE)
        .expect("prologue")
        .local_private_key(&MARKER)
        .expect("key")
        .remote_public_key(control.public_key().as_bytes())
        .expect("remote")
        .build_initiator()
        .expect("initiator");
        let hello = serde_json::to_vec(&ClientHello {
            capability_version: CAPABILITY_VERSION,
        })
        .expect("hello");
        let mut m1 = vec![0u8; MAX_NOISE_MESSAGE];
        let len = initiator.write_message(&hello, &mut m1).expect("write");
        m1.truncate(len);
        assert!(matches!(
            Responder::accept(&control, &m1),
            Err(ChannelError::SmallOrderKey)
        ));
    }

    #[test]
    fn a_message_over_the_split_limit_breaks_the_channel() {
        let (client, server, _) = channels();
        let (mut tx, _) = client.split();
        let (_, mut rx) = server.split_with_limit(MAX_CLIENT_MESSAGE);
        let update = |n: usize| {
            ClientMessage::Update(NodeUpdate {
                endpoints: None,
                advertised_routes: Some(
                    (0..n)
                        .map(|i| {
                            format!("10.{}.{}.0/24", i / 256, i % 256)
                                .parse()
                                .expect("net")
                        })
                        .collect(),
                ),
                health: None,
                priority: None,
                app_connector: None,
            })
        };
        let mut wire = Vec::new();
        tx.seal(&update(1_000), &mut wire).expect("seal");
        rx.push(&wire);
        assert_eq!(
            rx.next_message::<ClientMessage>().expect("fits"),
            Some(update(1_000))
        );
        wire.clear();
        tx.seal(&update(5_000), &mut wire).expect("seal");
        rx.push(&wire);
        assert!(matches!(
            rx.next_message::<ClientMessage>(),
            Err(ChannelError::TooLarge {
                limit: MAX_CLIENT_MESSAGE
            })
        ));
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
