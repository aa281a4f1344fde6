//! Causeway's control protocol, with no I/O: the keys nodes and control
//! hold, the messages they exchange, and the Noise IK channel that carries
//! them.
//!
//! A node opens the channel with an HTTP upgrade (`POST` [`CONTROL_PATH`])
//! whose [`HANDSHAKE_HEADER`] carries the first Noise message; control
//! answers `101 Switching Protocols` and from then on both sides speak
//! length-prefixed Noise transport records ([`noise`]). The first Noise message carries a
//! [`ClientHello`] with the node's capability version, so control can refuse
//! an old node before anything else happens.

pub mod admin;
pub mod caps;
pub mod keys;
pub mod liveness;
pub mod messages;
pub mod noise;
pub mod stun;
pub mod via6;

pub use caps::{CapGrant, PeerCapMap};
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use messages::*;

/// The capability version this build speaks.
///
/// Bump it whenever a message gains a field an older peer would misread.
///
/// - 1: registration, map stream, updates, control's keepalives.
/// - 2: [`ServerMessage::Liveness`] and [`ClientMessage::KeepAlive`]: the
///   node keeps the stream alive and both ends hold read deadlines.
pub const CAPABILITY_VERSION: u32 = 2;

/// The first capability version whose nodes send keepalives; control holds
/// no read deadline on older nodes.
pub const KEEPALIVE_CAPABILITY_VERSION: u32 = 2;

/// The oldest node capability version control still serves.
pub const MIN_CAPABILITY_VERSION: u32 = 1;

/// HTTP path of the control channel upgrade.
pub const CONTROL_PATH: &str = "/causeway/v1/control";

/// Value of the `Upgrade` header of the control channel.
pub const UPGRADE_PROTOCOL: &str = "causeway-noise";

/// Request header carrying the first Noise handshake message (base64).
pub const HANDSHAKE_HEADER: &str = "causeway-handshake";
