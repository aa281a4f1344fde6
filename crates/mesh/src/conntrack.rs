//! [`FlowTable`]: the flows this node opened, so the packet filter can let
//! their replies in.
//!
//! Bounded: at most `capacity` flows; opening one more evicts the least
//! recently used. Time comes from the caller. Idle timeouts, by protocol and
//! by whether the other side has answered yet:
//!
//! | flow | unanswered | answered |
//! |---|---|---|
//! | TCP | 4 min (RFC 5382 REQ-5, transitory) | 2 h 4 min (RFC 5382 REQ-5, established) |
//! | UDP, SCTP, other protocols | 30 s | 5 min (RFC 4787 REQ-5 recommends at least this) |
//! | ICMP echo | 30 s | 30 s |
//!
//! TCP flows are not followed through FIN and RST: a closed connection
//! stays tracked until its idle timeout or eviction. Harmless, as replies
//! on it can only be packets the peer could send while it was open.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::packet::{Flow, protocol};

/// How many flows a node tracks by default: by estimate about 100 bytes
/// each (key, entry, list links, hash slot), so about 6.5 MB when full.
pub const DEFAULT_FLOW_CAPACITY: NonZeroUsize = match NonZeroUsize::new(65_536) {
    Some(n) => n,
    None => unreachable!(),
};

const TCP_OPENING: Duration = Duration::from_secs(4 * 60);
const TCP_ESTABLISHED: Duration = Duration::from_secs(2 * 3600 + 4 * 60);
const DATAGRAM_UNANSWERED: Duration = Duration::from_secs(30);
const DATAGRAM_ANSWERED: Duration = Duration::from_secs(5 * 60);
const ICMP_ECHO: Duration = Duration::from_secs(30);

/// How many expired flows one [`FlowTable::expire`] call removes at most,
/// so a timer tick stays short.
const EXPIRE_BUDGET: usize = 4096;

/// Counters of the flow table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows tracked now.
    pub tracked: usize,
    /// Flows evicted so far because the table was full.
    pub evicted: u64,
}

/// A flow from this node's side: the protocol, this end and the far end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    protocol: u8,
    local: IpAddr,
    remote: IpAddr,
    local_port: u16,
    remote_port: u16,
}

impl FlowKey {
    /// The flow of a packet this node sends.
    pub(crate) fn outbound(flow: &Flow) -> Self {
        Self {
            protocol: flow.protocol,
            local: flow.source,
            remote: flow.destination,
            local_port: flow.source_port,
            remote_port: flow.destination_port,
        }
    }

    /// The flow of a packet this node receives.
    pub(crate) fn inbound(flow: &Flow) -> Self {
        Self {
            protocol: flow.protocol,
            local: flow.destination,
            remote: flow.source,
            local_port: flow.destination_port,
            remote_port: flow.source_port,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct FlowEntry {
    last_seen: Instant,
    answered: bool,
}

/// Flows this node opened, least recently used first out.
pub(crate) struct FlowTable {
    // Unbounded in the crate's sense: the cap is enforced here, so an empty
    // table does not reserve room for `capacity` flows up front.
    flows: LruCache<FlowKey, FlowEntry>,
    capacity: NonZeroUsize,
    evicted: u64,
}

impl FlowTable {
    /// An empty table holding at most `capacity` flows.
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            flows: LruCache::unbounded(),
            capacity,
            evicted: 0,
        }
    }

    /// Records a flow this node opens, or refreshes it.
    pub(crate) fn open(&mut self, key: FlowKey, now: Instant) {
        if self.refresh(key, now) {
            return;
        }
        if self.flows.len() >= self.capacity.get() {
            self.flows.pop_lru();
            self.evicted += 1;
        }
        self.flows.put(
            key,
            FlowEntry {
                last_seen: now,
                answered: false,
            },
        );
    }

    /// Refreshes a tracked flow on a packet this node sends; false when it
    /// is not tracked (or has expired).
    pub(crate) fn refresh(&mut self, key: FlowKey, now: Instant) -> bool {
        match self.flows.get_mut(&key) {
            Some(entry) if !expired(&key, entry, now) => {
                entry.last_seen = now;
                true
            }
            Some(_) => {
                self.flows.pop(&key);
                false
            }
            None => false,
        }
    }

    /// Whether a received packet answers a tracked flow; if so the flow is
    /// refreshed and marked answered.
    pub(crate) fn answer(&mut self, key: FlowKey, now: Instant) -> bool {
        match self.flows.get_mut(&key) {
            Some(entry) if !expired(&key, entry, now) => {
                entry.last_seen = now;
                entry.answered = true;
                true
            }
            Some(_) => {
                self.flows.pop(&key);
                false
            }
            None => false,
        }
    }

    /// Whether a flow is tracked and live, without touching it (for ICMP
    /// errors about it, which must not keep it alive).
    pub(crate) fn contains(&self, key: FlowKey, now: Instant) -> bool {
        self.flows
            .peek(&key)
            .is_some_and(|entry| !expired(&key, entry, now))
    }

    /// Drops flows idle past their timeout, oldest first, stopping at the
    /// first live one (a bounded amount of work per call; anything expired
    /// behind a live flow goes on a later call or when looked up).
    pub(crate) fn expire(&mut self, now: Instant) {
        for _ in 0..EXPIRE_BUDGET {
            match self.flows.peek_lru() {
                Some((key, entry)) if expired(key, entry, now) => {
                    self.flows.pop_lru();
                }
                Some(_) | None => break,
            }
        }
    }

    /// Counters.
    pub(crate) fn stats(&self) -> FlowStats {
        FlowStats {
            tracked: self.flows.len(),
            evicted: self.evicted,
        }
    }
}

fn expired(key: &FlowKey, entry: &FlowEntry, now: Instant) -> bool {
    let timeout = match (key.protocol, entry.answered) {
        (protocol::TCP, false) => TCP_OPENING,
        (protocol::TCP, true) => TCP_ESTABLISHED,
        (protocol::ICMP | protocol::ICMPV6, _) => ICMP_ECHO,
        (_, false) => DATAGRAM_UNANSWERED,
        (_, true) => DATAGRAM_ANSWERED,
    };
    now.saturating_duration_since(entry.last_seen) >= timeout
}
