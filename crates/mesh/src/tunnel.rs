//! The one place that touches boringtun's `Tunn`.
//!
//! boringtun reads the monotonic clock itself for its handshake and rekey
//! timers (RFC-less, per the WireGuard paper §6); everything else in this
//! crate takes `now` from the caller. Keeping `Tunn` behind this module
//! means a later switch to a clock-injected implementation touches one file.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use causeway_wire::{PrivateKey, PublicKey};

/// Handshake messages counted per second per node before the node answers
/// initiations with cookie replies instead of doing any X25519 work
/// (WireGuard paper §5.4.7, under load). An initiation from a known peer
/// is counted twice (once here before the peer is looked up, once inside
/// boringtun's `Tunn`), so cookies start at 100 initiations a second from
/// unknown keys or 50 from known peers (a node's peers rekey once every two
/// minutes each: 50 a second is 6,000 peers).
pub(crate) const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// Keepalive for peers that cannot be reached first (WireGuard-only devices
/// behind NAT send their own; we keep ours off by default).
const PERSISTENT_KEEPALIVE: Option<u16> = None;

/// What one tunnel operation produced, as byte ranges of the caller's buffer.
#[derive(Debug)]
pub(crate) enum Output {
    /// Nothing to do.
    Done,
    /// Send `out[range]` to the peer.
    Network(std::ops::Range<usize>),
    /// Write `out[range]` to the TUN device; its inner source address.
    Tunnel(std::ops::Range<usize>, IpAddr),
    /// The operation failed (bad packet, expired session, …).
    Error(WireGuardError),
}

/// How an incoming datagram maps to a peer, before decryption.
pub(crate) enum Addressee {
    /// A handshake initiation from the holder of this static key.
    Initiator(PublicKey),
    /// A message for the session with this local index (24-bit peer slot).
    Index(u32),
    /// Under load, a handshake initiation without a valid cookie (MAC2):
    /// send the cookie reply in `out[range]` back to the sender instead.
    Cookie(std::ops::Range<usize>),
    /// Not WireGuard, or a handshake initiation whose MAC1 is not for this
    /// node's key, or one that does not decrypt: refused.
    Refused,
}

/// Node-wide WireGuard state shared by all tunnels.
pub(crate) struct Identity {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    limiter: Arc<RateLimiter>,
}

impl Identity {
    pub(crate) fn new(key: &PrivateKey) -> Self {
        let secret = key.to_static_secret();
        let public = x25519::PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        Self {
            secret,
            public,
            limiter,
        }
    }

    /// Clears the handshake rate limiter's count; call once a second.
    pub(crate) fn reset_rate_limit(&self) {
        self.limiter.reset_count();
    }

    /// Finds which peer a datagram from `from` is for. A handshake
    /// initiation is checked first: MAC1 (keyed with this node's public
    /// key) and, when more than [`HANDSHAKE_RATE_LIMIT`] handshake messages
    /// arrived this second, MAC2 (a cookie proving the sender receives at
    /// its address), both cheap BLAKE2s checks. Only an initiation that
    /// passes is decrypted (one X25519) far enough to learn the sender's
    /// static key. `out` receives a cookie reply, if one is due.
    pub(crate) fn addressee(&self, from: IpAddr, datagram: &[u8], out: &mut [u8]) -> Addressee {
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            return Addressee::Refused;
        };
        match packet {
            Packet::HandshakeInit(_) => {}
            Packet::HandshakeResponse(p) => return Addressee::Index(p.receiver_idx >> 8),
            Packet::PacketCookieReply(p) => return Addressee::Index(p.receiver_idx >> 8),
            Packet::PacketData(p) => return Addressee::Index(p.receiver_idx >> 8),
        }
        let base = out.as_ptr() as usize;
        match self.limiter.verify_packet(Some(from), datagram, out) {
            Ok(Packet::HandshakeInit(init)) => {
                match parse_handshake_anon(&self.secret, &self.public, &init) {
                    Ok(half) => {
                        Addressee::Initiator(PublicKey::from_bytes(half.peer_static_public))
                    }
                    Err(_) => Addressee::Refused,
                }
            }
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let start = cookie.as_ptr() as usize - base;
                Addressee::Cookie(start..start + cookie.len())
            }
            Ok(_) | Err(_) => Addressee::Refused,
        }
    }
}

/// One WireGuard tunnel to one peer.
pub(crate) struct Tunnel {
    tunn: Box<Tunn>,
}

impl Tunnel {
    /// A tunnel to `peer`, using `slot` (24 bits) as its session index.
    pub(crate) fn new(identity: &Identity, peer: &PublicKey, slot: u32) -> Self {
        let tunn = Tunn::new(
            identity.secret.clone(),
            x25519::PublicKey::from(*peer.as_bytes()),
            None,
            PERSISTENT_KEEPALIVE,
            slot,
            Some(Arc::clone(&identity.limiter)),
        );
        Self {
            tunn: Box::new(tunn),
        }
    }

    /// Encrypts an IP packet (or starts a handshake and queues it).
    pub(crate) fn encapsulate(&mut self, packet: &[u8], out: &mut [u8]) -> Output {
        let base = out.as_ptr() as usize;
        convert(base, self.tunn.encapsulate(packet, out))
    }

    /// Decrypts a datagram from `from`; an empty datagram flushes packets
    /// queued while the handshake was in flight.
    pub(crate) fn decapsulate(
        &mut self,
        from: Option<IpAddr>,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Output {
        let base = out.as_ptr() as usize;
        convert(base, self.tunn.decapsulate(from, datagram, out))
    }

    /// Starts a handshake now, unless one is already in flight.
    pub(crate) fn initiate(&mut self, out: &mut [u8]) -> Output {
        let base = out.as_ptr() as usize;
        convert(base, self.tunn.format_handshake_initiation(out, false))
    }

    /// Runs handshake, rekey and keepalive timers.
    pub(crate) fn update_timers(&mut self, out: &mut [u8]) -> Output {
        let base = out.as_ptr() as usize;
        convert(base, self.tunn.update_timers(out))
    }

    /// Time since the current session's handshake completed; `None` when
    /// there is no session (none yet, or its keys expired).
    pub(crate) fn since_handshake(&self) -> Option<Duration> {
        self.tunn.time_since_last_handshake()
    }

    /// Sends a keepalive (an empty data message, WireGuard paper §6.5) on
    /// the current session, or starts a handshake when there is none.
    pub(crate) fn keepalive(&mut self, out: &mut [u8]) -> Output {
        self.encapsulate(&[], out)
    }

    /// boringtun's round-trip estimate: from sending the last handshake
    /// initiation this side made to receiving its response (so it includes
    /// the responder's handshake work, well under a millisecond), in whole
    /// milliseconds (boringtun truncates). Kept
    /// after the session ends; `None` until this side has initiated one.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        let (_, _, _, _, rtt_ms) = self.tunn.stats();
        rtt_ms.map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// Payload bytes sent and received.
    pub(crate) fn bytes(&self) -> (usize, usize) {
        let (_, tx, rx, _, _) = self.tunn.stats();
        (tx, rx)
    }
}

/// boringtun hands back a slice of the caller's buffer; turn it into a range
/// so the caller can re-borrow the buffer afterwards.
fn convert(base: usize, result: TunnResult<'_>) -> Output {
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    match result {
        TunnResult::Done => Output::Done,
        TunnResult::Err(e) => Output::Error(e),
        TunnResult::WriteToNetwork(s) => Output::Network(range(s)),
        TunnResult::WriteToTunnelV4(s, src) => Output::Tunnel(range(s), src.into()),
        TunnResult::WriteToTunnelV6(s, src) => Output::Tunnel(range(s), src.into()),
    }
}
