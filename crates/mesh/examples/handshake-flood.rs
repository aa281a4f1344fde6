//! How many handshake-shaped datagrams one core of a node absorbs per
//! second while a peer's transfer keeps going, beside the baseline of one
//! X25519 per datagram (what the node did before it checked MAC1 and the
//! rate limiter first).
//!
//! ```text
//! cargo run -p causeway-mesh --example handshake-flood -- [SECONDS]
//! ```
//!
//! In process, on the sans-IO core: a router and a peer with an
//! established session, and initiations from strangers (who know the
//! router's public key, as every peer does) sent to the router. Each phase
//! runs SECONDS (default 3) of wall-clock time; the node's timers run once
//! a second as the data-plane driver runs them, so the rate limiter lets
//! its 100 initiations a second through to X25519 and answers the rest
//! with cookies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn};
use causeway_mesh::{Delivery, NodeState};
use causeway_wire::{Node, NodeId, PrivateKey};
use ipnet::IpNet;

const BUF: usize = 2048;
/// Distinct stranger initiations, replayed in turn.
const STRANGERS: u32 = 256;
/// Flood rates offered, datagrams a second.
const RATES: [u64; 3] = [1_000, 5_000, 20_000];
/// Inner packet size of the transfer (a full 1420-MTU packet).
const PACKET: usize = 1420;

fn describe(id: u64, key: &PrivateKey) -> Node {
    let own = IpNet::from(IpAddr::V4(Ipv4Addr::new(100, 64, 0, id as u8)));
    Node {
        id: NodeId(id),
        name: format!("n{id}"),
        node_key: key.public_key(),
        key_expiry: None,
        addresses: vec![own],
        allowed_ips: vec![own],
        primary_routes: vec![],
        endpoints: vec![endpoint(id)],
        tags: vec![],
        online: true,
        user: None,
        wireguard_only: false,
        exit_routes: vec![],
        exit_unhealthy: false,
    }
}

/// Seals `packet` on `node`: the datagram it sends.
fn seal(node: &mut NodeState, packet: &[u8], out: &mut [u8]) -> anyhow::Result<Vec<u8>> {
    let transmit = node
        .handle_tun_packet(packet, out, Instant::now())
        .map_err(|e| anyhow!("sealing a packet: {e:?}"))?
        .context("sealing a packet sent nothing")?;
    Ok(transmit.payload.to_vec())
}

fn endpoint(id: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, id as u8)), 41641)
}

fn ipv4_packet(source: u8, destination: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[100, 64, 0, source]);
    p[16..20].copy_from_slice(&[100, 64, 0, destination]);
    p
}

struct Bench {
    router: NodeState,
    router_key: PrivateKey,
    peer: NodeState,
    strangers: Vec<Vec<u8>>,
    packet: Vec<u8>,
    next_timers: Instant,
    sealed: Vec<u8>,
    out: Vec<u8>,
}

#[derive(Default)]
struct Figures {
    flood: u64,
    cookies: u64,
    data: u64,
}

impl Bench {
    fn new() -> anyhow::Result<Self> {
        let router_key = PrivateKey::from_random_bytes([1; 32]);
        let peer_key = PrivateKey::from_random_bytes([2; 32]);
        let mut router = NodeState::new(&router_key, 1);
        let mut peer = NodeState::new(&peer_key, 2);
        router.set_peers([&describe(2, &peer_key)]);
        peer.set_peers([&describe(1, &router_key)]);
        let strangers = (0..STRANGERS)
            .map(|i| {
                let mut secret = [0x55; 32];
                secret[..4].copy_from_slice(&i.to_le_bytes());
                let mut stranger = NodeState::new(&PrivateKey::from_random_bytes(secret), 3);
                stranger.set_peers([&describe(1, &router_key)]);
                seal(&mut stranger, &ipv4_packet(99, 1, 40), &mut [0u8; BUF])
            })
            .collect::<anyhow::Result<_>>()?;
        let mut bench = Self {
            router,
            router_key,
            peer,
            strangers,
            packet: ipv4_packet(2, 1, PACKET),
            next_timers: Instant::now(),
            sealed: vec![0u8; BUF],
            out: vec![0u8; BUF],
        };
        bench.establish()?;
        Ok(bench)
    }

    /// Runs the handshake between peer and router to completion.
    fn establish(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let first = seal(&mut self.peer, &self.packet, &mut self.sealed)?;
        let mut wire = vec![(endpoint(2), first, true)];
        while let Some((from, datagram, to_router)) = wire.pop() {
            let (node, reply_from) = if to_router {
                (&mut self.router, endpoint(1))
            } else {
                (&mut self.peer, endpoint(2))
            };
            if let Delivery::Network(t) = node.handle_datagram(from, &datagram, &mut self.out, now)
            {
                wire.push((reply_from, t.payload.to_vec(), !to_router));
            }
            while let Some(t) = node.poll_transmit(&mut self.out, now) {
                wire.push((reply_from, t.payload.to_vec(), !to_router));
            }
        }
        self.transfer_one().context("establishing the session")
    }

    /// Sends one packet from the peer to the router; fails unless it
    /// arrives.
    fn transfer_one(&mut self) -> anyhow::Result<()> {
        let datagram = seal(&mut self.peer, &self.packet, &mut self.sealed)?;
        let delivery =
            self.router
                .handle_datagram(endpoint(2), &datagram, &mut self.out, Instant::now());
        ensure!(
            matches!(delivery, Delivery::Tun(_)),
            "the transfer stopped: {delivery:?}"
        );
        Ok(())
    }

    /// Runs the router's timers once a second, as the driver does.
    fn timers(&mut self) {
        let now = Instant::now();
        if now >= self.next_timers {
            self.router.handle_timeout(now);
            while self.router.poll_transmit(&mut self.out, now).is_some() {}
            self.next_timers = now + Duration::from_secs(1);
        }
    }

    /// Offers `rate` flood datagrams a second and spends every moment
    /// not needed for them on the transfer.
    fn run(&mut self, seconds: Duration, flood: Flood, rate: u64) -> anyhow::Result<Figures> {
        let mut figures = Figures::default();
        let cookies_before = self.router.cookie_replies();
        let secret = self.router_key.to_static_secret();
        let public = boringtun::x25519::PublicKey::from(&secret);
        let start = Instant::now();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= seconds {
                break;
            }
            let due = (rate as f64 * elapsed.as_secs_f64()) as u64;
            if figures.flood >= due {
                self.transfer_one()?;
                figures.data += 1;
                self.timers();
                continue;
            }
            let i = figures.flood as usize;
            let initiation = &self.strangers[i % self.strangers.len()];
            let source =
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 9, (i % 251) as u8)), 5000);
            match flood {
                Flood::X25519Each => {
                    let Ok(Packet::HandshakeInit(init)) = Tunn::parse_incoming_packet(initiation)
                    else {
                        anyhow::bail!("a stranger sent something other than an initiation");
                    };
                    parse_handshake_anon(&secret, &public, &init)
                        .map_err(|e| anyhow!("baseline decryption failed: {e:?}"))?;
                }
                Flood::Router { bad_mac1 } => {
                    let mut datagram = initiation.clone();
                    if bad_mac1 {
                        datagram[120] ^= 1;
                    }
                    let now = Instant::now();
                    let _ = self
                        .router
                        .handle_datagram(source, &datagram, &mut self.out, now);
                }
            }
            figures.flood += 1;
            self.timers();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let per_second = |n: u64| (n as f64 / elapsed) as u64;
        Ok(Figures {
            flood: per_second(figures.flood),
            cookies: per_second(self.router.cookie_replies() - cookies_before),
            data: per_second(figures.data),
        })
    }
}

#[derive(Clone, Copy)]
enum Flood {
    /// Baseline: one X25519 per datagram, as before MAC1 was checked first.
    X25519Each,
    /// Through the router's packet path.
    Router { bad_mac1: bool },
}

fn main() -> anyhow::Result<()> {
    let seconds = match std::env::args().nth(1) {
        Some(s) => s
            .parse::<u64>()
            .with_context(|| format!("SECONDS {s:?}: expected a whole number"))?,
        None => 3,
    };
    let seconds = Duration::from_secs(seconds);
    let mut bench = Bench::new()?;
    let mbit = |packets: u64| packets as f64 * PACKET as f64 * 8.0 / 1e6;
    let alone = bench.run(seconds, Flood::Router { bad_mac1: false }, 0)?;
    println!(
        "one core, {}s per row, {PACKET}-byte packets; transfer alone: {:.0} Mbit/s",
        seconds.as_secs(),
        mbit(alone.data)
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>12}",
        "flood", "offered/s", "handled/s", "cookies/s", "transfer"
    );
    for (name, flood) in [
        (
            "baseline: one X25519 each (before the fix)",
            Flood::X25519Each,
        ),
        (
            "stranger initiations, valid MAC1",
            Flood::Router { bad_mac1: false },
        ),
        (
            "initiations with a bad MAC1",
            Flood::Router { bad_mac1: true },
        ),
    ] {
        for rate in RATES {
            let f = bench.run(seconds, flood, rate)?;
            println!(
                "{name:<44} {rate:>9} {:>9} {:>9} {:>6.0} Mbit/s ({:.0} %)",
                f.flood,
                f.cookies,
                mbit(f.data),
                100.0 * f.data as f64 / alone.data.max(1) as f64
            );
        }
    }
    Ok(())
}
