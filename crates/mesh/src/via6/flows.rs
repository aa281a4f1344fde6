//! [`Via6Flows`]: the 4via6 flows a router translated, so their replies
//! go back as IPv6.
//!
//! Bounded: at most `capacity` flows. One LRU list per timeout class, so
//! the least recently used flow of a class is also the first of it to
//! expire, and both expiry and "is anything expired?" cost O(1) per flow.
//! When the table is full, a new flow takes the place of an expired one
//! if there is any; otherwise it is refused (never grows, never evicts a
//! live flow: a client cannot push other clients' flows out).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Idle timeouts per class, as conntrack's: TCP until both sides have
/// spoken or once it closes (RFC 5382 REQ-5, transitory: 4 min),
/// established TCP (RFC 5382 REQ-5: 2 h 4 min), UDP (RFC 4787 REQ-5: at
/// least 2 min), ICMP echo (30 s).
const TIMEOUTS: [Duration; CLASSES] = [
    Duration::from_secs(4 * 60),
    Duration::from_secs(2 * 3600 + 4 * 60),
    Duration::from_secs(2 * 60),
    Duration::from_secs(30),
];

const CLASSES: usize = 4;

/// How many expired flows one [`Via6Flows::expire`] call removes at most,
/// so a timer tick stays short.
const EXPIRE_BUDGET: usize = 4096;

/// A flow's timeout class (an index into [`TIMEOUTS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    TcpTransitory = 0,
    TcpEstablished = 1,
    Udp = 2,
    Icmp = 3,
}

/// A 4via6 flow, as the IPv4 side sees it: the client's tailnet IPv4
/// address and port (or ICMP echo identifier), the remote host and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FlowKey {
    pub protocol: u8,
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
}

/// Where a flow's replies go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FlowEntry {
    /// The client's tailnet IPv6 address (the translated packets' source).
    pub client: Ipv6Addr,
    /// The site the remote host is at.
    pub site: u16,
    /// TCP FIN or RST seen: stays transitory.
    pub closing: bool,
    last_seen: Instant,
}

impl FlowEntry {
    pub(super) fn new(client: Ipv6Addr, site: u16, now: Instant) -> Self {
        Self {
            client,
            site,
            closing: false,
            last_seen: now,
        }
    }
}

/// The table is full of live flows.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full;

/// 4via6 flows, bounded, one LRU list per timeout class.
pub(super) struct Via6Flows {
    // Unbounded in the crate's sense: the cap is enforced here, over all
    // classes together, so an empty table reserves nothing up front.
    classes: [LruCache<FlowKey, FlowEntry>; CLASSES],
    capacity: NonZeroUsize,
}

impl Via6Flows {
    /// An empty table holding at most `capacity` flows.
    pub(super) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            classes: std::array::from_fn(|_| LruCache::unbounded()),
            capacity,
        }
    }

    /// Flows held now (expired ones included until they are removed).
    pub(super) fn len(&self) -> usize {
        self.classes.iter().map(LruCache::len).sum()
    }

    /// The most flows the table holds.
    pub(super) fn capacity(&self) -> usize {
        self.capacity.get()
    }

    /// A live flow and its class, refreshed (`touch`) or only looked at (an
    /// ICMP error about a flow must not keep it alive). An expired flow is
    /// removed and not returned.
    pub(super) fn get(
        &mut self,
        key: &FlowKey,
        now: Instant,
        touch: bool,
    ) -> Option<(Class, FlowEntry)> {
        let class = self.class_of(key)?;
        let list = &mut self.classes[class as usize];
        let entry = list.peek(key).copied()?;
        if expired(class, &entry, now) {
            list.pop(key);
            return None;
        }
        if touch && let Some(live) = list.get_mut(key) {
            live.last_seen = now;
        }
        Some((class, entry))
    }

    /// Stores a flow in `class` (moving it there if it was in another),
    /// refreshed at `now`. A new flow when the table is full takes the
    /// place of an expired one, or is refused.
    pub(super) fn put(
        &mut self,
        key: FlowKey,
        mut entry: FlowEntry,
        class: Class,
        now: Instant,
    ) -> Result<(), Full> {
        entry.last_seen = now;
        match self.class_of(&key) {
            Some(old) => {
                self.classes[old as usize].pop(&key);
            }
            None if self.len() >= self.capacity.get() && !self.evict_one_expired(now) => {
                return Err(Full);
            }
            None => {}
        }
        self.classes[class as usize].put(key, entry);
        Ok(())
    }

    /// Drops flows idle past their timeout, at most [`EXPIRE_BUDGET`].
    pub(super) fn expire(&mut self, now: Instant) {
        let mut budget = EXPIRE_BUDGET;
        for (index, list) in self.classes.iter_mut().enumerate() {
            let class = CLASS_ORDER[index];
            while budget > 0
                && list
                    .peek_lru()
                    .is_some_and(|(_, entry)| expired(class, entry, now))
            {
                list.pop_lru();
                budget -= 1;
            }
        }
    }

    /// Forgets every flow.
    pub(super) fn clear(&mut self) {
        self.classes.iter_mut().for_each(LruCache::clear);
    }

    fn class_of(&self, key: &FlowKey) -> Option<Class> {
        CLASS_ORDER
            .into_iter()
            .find(|&class| self.classes[class as usize].contains(key))
    }

    /// Removes the least recently used flow of the first class whose
    /// oldest flow has expired; false if none has.
    fn evict_one_expired(&mut self, now: Instant) -> bool {
        for class in CLASS_ORDER {
            let list = &mut self.classes[class as usize];
            if list
                .peek_lru()
                .is_some_and(|(_, entry)| expired(class, entry, now))
            {
                list.pop_lru();
                return true;
            }
        }
        false
    }
}

const CLASS_ORDER: [Class; CLASSES] = [
    Class::TcpTransitory,
    Class::TcpEstablished,
    Class::Udp,
    Class::Icmp,
];

fn expired(class: Class, entry: &FlowEntry, now: Instant) -> bool {
    now.saturating_duration_since(entry.last_seen) >= TIMEOUTS[class as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            protocol: 17,
            client: Ipv4Addr::new(100, 64, 0, 1),
            client_port: port,
            remote: Ipv4Addr::new(10, 0, 0, 5),
            remote_port: 53,
        }
    }

    fn entry(now: Instant) -> FlowEntry {
        FlowEntry::new("fd7a:115c:a1e0::1".parse().expect("valid"), 7, now)
    }

    #[test]
    fn full_table_refuses_until_a_flow_expires() {
        let now = Instant::now();
        let mut flows = Via6Flows::new(NonZeroUsize::new(2).expect("non-zero"));
        flows
            .put(key(1), entry(now), Class::Udp, now)
            .expect("room");
        let later = now + Duration::from_secs(60);
        flows
            .put(key(2), entry(later), Class::Udp, later)
            .expect("room");

        assert_eq!(
            flows.put(key(3), entry(later), Class::Udp, later),
            Err(Full)
        );
        assert_eq!(flows.len(), 2);
        // A refreshed flow is no new flow: always allowed.
        assert_eq!(flows.put(key(2), entry(later), Class::Udp, later), Ok(()));

        // Flow 1 expires at 2 min; flow 3 takes its place, flow 2 stays.
        let expiry = now + TIMEOUTS[Class::Udp as usize];
        flows
            .put(key(3), entry(expiry), Class::Udp, expiry)
            .expect("room");
        assert_eq!(flows.len(), 2);
        assert!(flows.get(&key(1), expiry, false).is_none());
        assert!(flows.get(&key(2), expiry, false).is_some());
        assert!(flows.get(&key(3), expiry, false).is_some());
    }

    #[test]
    fn expiry_follows_each_class_timeout() {
        let now = Instant::now();
        let mut flows = Via6Flows::new(NonZeroUsize::new(16).expect("non-zero"));
        let icmp = FlowKey {
            protocol: 1,
            ..key(9)
        };
        flows.put(icmp, entry(now), Class::Icmp, now).expect("room");
        flows
            .put(key(1), entry(now), Class::Udp, now)
            .expect("room");

        flows.expire(now + Duration::from_secs(29));
        assert_eq!(flows.len(), 2);
        flows.expire(now + Duration::from_secs(30));
        assert_eq!(flows.len(), 1);
        assert!(
            flows
                .get(&key(1), now + Duration::from_secs(30), false)
                .is_some()
        );
        flows.expire(now + Duration::from_secs(120));
        assert_eq!(flows.len(), 0);
    }

    #[test]
    fn moving_a_flow_between_classes_keeps_one_copy() {
        let now = Instant::now();
        let mut flows = Via6Flows::new(NonZeroUsize::new(4).expect("non-zero"));
        let tcp = FlowKey {
            protocol: 6,
            ..key(1)
        };
        flows
            .put(tcp, entry(now), Class::TcpTransitory, now)
            .expect("room");
        flows
            .put(tcp, entry(now), Class::TcpEstablished, now)
            .expect("room");

        assert_eq!(flows.len(), 1);
        let (class, _) = flows.get(&tcp, now, true).expect("tracked");
        assert_eq!(class, Class::TcpEstablished);
        // Established TCP outlives the transitory timeout.
        let later = now + Duration::from_secs(3600);
        assert!(flows.get(&tcp, later, false).is_some());
    }

    #[test]
    fn looking_without_touching_does_not_refresh() {
        let now = Instant::now();
        let mut flows = Via6Flows::new(NonZeroUsize::new(4).expect("non-zero"));
        flows
            .put(key(1), entry(now), Class::Udp, now)
            .expect("room");
        let middle = now + Duration::from_secs(100);
        assert!(flows.get(&key(1), middle, false).is_some());
        assert!(
            flows
                .get(&key(1), now + Duration::from_secs(120), false)
                .is_none()
        );

        flows
            .put(key(2), entry(now), Class::Udp, now)
            .expect("room");
        assert!(flows.get(&key(2), middle, true).is_some());
        assert!(
            flows
                .get(&key(2), now + Duration::from_secs(120), false)
                .is_some()
        );
    }
}
