//! [`EndpointDiscoveryState`]: the addresses a node advertises to its peers.
//!
//! A node can be reached on more addresses than its interfaces show. On
//! EC2 and Azure the public IPv4 address lives on the cloud's internet
//! gateway, a 1:1 NAT, not on any interface; behind a home router the
//! outside address is the router's. So the advertised set is the union of
//! three sources: the interface addresses, the cloud's public address from
//! its metadata service (both handed in by the shell), and the
//! *server-reflexive* address: the source address control's STUN port saw
//! on a Binding request sent from the node's own WireGuard socket (RFC 5389
//! §2). Peers try all of them (see `NodeState`), and keep the one that
//! answers.
//!
//! Sans-IO like the rest of the crate: the shell hands in datagrams and the
//! time, sends what [`EndpointDiscoveryState::poll_transmit`] returns from
//! the WireGuard socket, and reports [`DiscoveryEvent`]s to control.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use causeway_wire::stun;

use crate::node::Transmit;

/// How often the reflexive address is asked for again. NATs forget idle UDP
/// mappings after 30 s or more (RFC 4787 REQ-5 asks for at least two
/// minutes; many do less); asking this often also keeps the mapping open
/// for peers that try it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(25);

/// The first retransmission timeout; it doubles per attempt (RFC 5389
/// §7.2.1 recommends 500 ms).
const INITIAL_RTO: Duration = Duration::from_millis(500);

/// Requests per round before waiting for the next [`PROBE_INTERVAL`]
/// (0.5 + 1 + 2 + 4 s of waiting, well inside the interval).
const ATTEMPTS: u32 = 4;

/// What discovery tells the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// The endpoints to advertise changed; in order of preference.
    EndpointsChanged(Vec<SocketAddr>),
}

/// Where the node can be reached, and the STUN exchange that finds the
/// address it has from outside.
#[derive(Debug)]
pub struct EndpointDiscoveryState {
    local: BTreeSet<SocketAddr>,
    cloud: Option<SocketAddr>,
    reflexive: Option<SocketAddr>,
    server: Option<SocketAddr>,
    probe: Probe,
    rng: u64,
    advertised: Vec<SocketAddr>,
    events: Option<DiscoveryEvent>,
    request: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// No server, or a request is due at this time.
    Due(Option<Instant>),
    /// A request is out; retransmit or give up at `deadline`.
    Waiting {
        transaction: [u8; 12],
        attempt: u32,
        deadline: Instant,
        transmitted: bool,
    },
}

impl EndpointDiscoveryState {
    /// Discovery with no addresses and no STUN server yet. `seed` feeds the
    /// transaction IDs, which must be unpredictable so that an off-path
    /// sender cannot forge the answer (RFC 5389 §6).
    pub fn new(seed: u64) -> Self {
        Self {
            local: BTreeSet::new(),
            cloud: None,
            reflexive: None,
            server: None,
            probe: Probe::Due(None),
            rng: seed,
            advertised: Vec::new(),
            events: None,
            request: Vec::new(),
        }
    }

    /// The addresses of the node's own interfaces, with the WireGuard port.
    pub fn set_local(&mut self, local: BTreeSet<SocketAddr>) {
        self.local = local;
        self.update();
    }

    /// The cloud's public address for this node (EC2 `public-ipv4`, Azure's
    /// public IP), with the WireGuard port.
    pub fn set_cloud(&mut self, cloud: Option<SocketAddr>) {
        self.cloud = cloud;
        self.update();
    }

    /// Control's STUN address, or none. A new server starts a probe now.
    pub fn set_stun_server(&mut self, server: Option<SocketAddr>, now: Instant) {
        if server == self.server {
            return;
        }
        self.server = server;
        self.probe = Probe::Due(server.map(|_| now));
        if server.is_none() && self.reflexive.take().is_some() {
            self.update();
        }
    }

    /// Handles a STUN datagram from the WireGuard socket. Returns whether it
    /// was the answer we waited for; anything else (a stale or forged
    /// answer, another sender) changes nothing.
    pub fn handle_stun(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) -> bool {
        let Probe::Waiting { transaction, .. } = self.probe else {
            return false;
        };
        if Some(from) != self.server {
            return false;
        }
        let Ok((id, address)) = stun::parse_binding_response(datagram) else {
            return false;
        };
        if id != transaction {
            return false;
        }
        self.probe = Probe::Due(Some(now + PROBE_INTERVAL));
        if self.reflexive != Some(address) {
            self.reflexive = Some(address);
            self.update();
        }
        true
    }

    /// Advances the probe schedule.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.probe {
            Probe::Due(Some(due)) if now >= due => self.start_attempt(0, now),
            Probe::Waiting {
                attempt, deadline, ..
            } if now >= deadline => {
                if attempt + 1 < ATTEMPTS {
                    self.start_attempt(attempt + 1, now);
                } else {
                    // No answer this round. The last reflexive address stays
                    // advertised: peers try every endpoint, so a stale one
                    // costs a datagram, while dropping a good one during a
                    // short outage of control would cut peers off.
                    self.probe = Probe::Due(Some(now + PROBE_INTERVAL));
                }
            }
            Probe::Due(_) | Probe::Waiting { .. } => {}
        }
    }

    /// When [`EndpointDiscoveryState::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.probe {
            Probe::Due(due) => due,
            Probe::Waiting { deadline, .. } => Some(deadline),
        }
    }

    /// The Binding request to send, once per attempt.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        let server = self.server?;
        let Probe::Waiting { transmitted, .. } = &mut self.probe else {
            return None;
        };
        if std::mem::replace(transmitted, true) {
            return None;
        }
        Some(Transmit {
            destination: server,
            payload: &self.request,
        })
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.take()
    }

    /// The endpoints to advertise now, in order of preference.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.advertised
    }

    /// The address control's STUN port saw, if it answered.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.reflexive
    }

    fn start_attempt(&mut self, attempt: u32, now: Instant) {
        // A new transaction ID per attempt: an answer to an earlier attempt
        // that arrives late is as good, but keeping only the newest keeps
        // the state one value.
        let transaction = self.next_transaction_id();
        self.request = stun::binding_request(transaction);
        self.probe = Probe::Waiting {
            transaction,
            attempt,
            deadline: now + INITIAL_RTO * 2u32.pow(attempt),
            transmitted: false,
        };
    }

    fn next_transaction_id(&mut self) -> [u8; 12] {
        let mut id = [0u8; 12];
        for chunk in id.chunks_mut(8) {
            let word = splitmix64(&mut self.rng).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        id
    }

    /// Advertised in order of preference for a peer that can try only one
    /// (a plain WireGuard device gets the first in its config): the address
    /// seen from outside, then the cloud's public address, then interface
    /// addresses, which often work only inside their own network.
    fn update(&mut self) {
        let mut all: Vec<SocketAddr> = Vec::new();
        for address in self
            .reflexive
            .into_iter()
            .chain(self.cloud)
            .chain(self.local.iter().copied())
        {
            if !all.contains(&address) {
                all.push(address);
            }
        }
        if all != self.advertised {
            self.advertised = all.clone();
            self.events = Some(DiscoveryEvent::EndpointsChanged(all));
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a seeded sequence, so the
/// core takes its randomness from the shell once and stays deterministic.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("valid socket address")
    }

    fn sent(d: &mut EndpointDiscoveryState) -> Option<(SocketAddr, Vec<u8>)> {
        d.poll_transmit()
            .map(|t| (t.destination, t.payload.to_vec()))
    }

    #[test]
    fn the_reflexive_address_joins_the_interface_addresses() {
        let now = Instant::now();
        let server = addr("198.18.0.2:3478");
        let mut d = EndpointDiscoveryState::new(7);
        d.set_local([addr("198.19.0.5:41641")].into());
        assert_eq!(
            d.poll_event(),
            Some(DiscoveryEvent::EndpointsChanged(vec![addr(
                "198.19.0.5:41641"
            )]))
        );

        d.set_stun_server(Some(server), now);
        d.handle_timeout(now);
        let (to, request) = sent(&mut d).expect("a Binding request");
        assert_eq!(to, server);
        assert_eq!(sent(&mut d), None, "one datagram per attempt");

        let seen = addr("198.18.0.3:41641");
        let answer = stun::answer_binding_request(&request, seen).expect("answered");
        assert!(d.handle_stun(server, &answer, now));

        assert_eq!(
            d.poll_event(),
            Some(DiscoveryEvent::EndpointsChanged(vec![
                seen,
                addr("198.19.0.5:41641")
            ]))
        );
        assert_eq!(d.poll_timeout(), Some(now + PROBE_INTERVAL));
    }

    #[test]
    fn answers_from_elsewhere_or_for_other_transactions_are_ignored() {
        let now = Instant::now();
        let server = addr("198.18.0.2:3478");
        let mut d = EndpointDiscoveryState::new(1);
        d.set_stun_server(Some(server), now);
        d.handle_timeout(now);
        let (_, request) = sent(&mut d).expect("a Binding request");
        let forged = stun::answer_binding_request(&request, addr("203.0.113.9:1")).expect("answer");

        assert!(!d.handle_stun(addr("198.18.0.66:3478"), &forged, now));
        let other =
            stun::answer_binding_request(&stun::binding_request([0; 12]), addr("203.0.113.9:1"))
                .expect("answer");
        assert!(!d.handle_stun(server, &other, now));
        assert_eq!(d.reflexive(), None);
        assert_eq!(d.poll_event(), None);
    }

    #[test]
    fn unanswered_requests_back_off_then_wait_for_the_next_round() {
        let start = Instant::now();
        let mut d = EndpointDiscoveryState::new(3);
        d.set_stun_server(Some(addr("198.18.0.2:3478")), start);
        let mut now = start;
        let mut gaps = Vec::new();
        for _ in 0..ATTEMPTS {
            d.handle_timeout(now);
            assert!(sent(&mut d).is_some());
            let next = d.poll_timeout().expect("a deadline");
            gaps.push(next - now);
            now = next;
        }
        assert_eq!(
            gaps,
            [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
        );
        d.handle_timeout(now);
        assert_eq!(sent(&mut d), None);
        assert_eq!(d.poll_timeout(), Some(now + PROBE_INTERVAL));
    }

    #[test]
    fn transaction_ids_differ_per_attempt_and_follow_the_seed() {
        let now = Instant::now();
        let ids = |seed| {
            let mut d = EndpointDiscoveryState::new(seed);
            d.set_stun_server(Some(addr("198.18.0.2:3478")), now);
            let mut ids = Vec::new();
            let mut t = now;
            for _ in 0..3 {
                d.handle_timeout(t);
                ids.push(sent(&mut d).expect("request").1[8..20].to_vec());
                t = d.poll_timeout().expect("deadline");
            }
            ids
        };
        let a = ids(42);
        assert_eq!(a, ids(42));
        assert_ne!(a, ids(43));
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn the_cloud_address_is_advertised_and_duplicates_collapse() {
        let mut d = EndpointDiscoveryState::new(0);
        let public = addr("198.18.0.50:41641");
        d.set_local([addr("198.19.1.5:41641")].into());
        d.set_cloud(Some(public));
        assert_eq!(d.endpoints(), [public, addr("198.19.1.5:41641")]);
        d.set_cloud(Some(public));
        d.poll_event();
        d.set_cloud(Some(public));
        assert_eq!(d.poll_event(), None, "no change, no event");
    }
}
