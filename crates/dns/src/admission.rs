//! [`AdmissionState`]: how much work is in flight, in total and per source,
//! so that no client (or all of them together) can make the forwarder hold
//! more sockets, tasks and buffers than the limits say.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Limits on work in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Over all sources.
    pub total: usize,
    /// For one source address.
    pub per_source: usize,
}

/// Why work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// [`Limits::total`] reached.
    #[error("{0} in flight in total, the limit")]
    Total(usize),
    /// [`Limits::per_source`] reached for this source.
    #[error("{0} in flight from this source, the limit")]
    PerSource(usize),
}

/// Counts work in flight against [`Limits`]. Every [`AdmissionState::admit`]
/// that succeeds must be matched by one [`AdmissionState::release`].
#[derive(Debug, Clone)]
pub struct AdmissionState {
    limits: Limits,
    total: usize,
    /// Only sources with work in flight: at most `limits.total` entries.
    by_source: BTreeMap<IpAddr, usize>,
}

impl AdmissionState {
    /// Nothing in flight.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            total: 0,
            by_source: BTreeMap::new(),
        }
    }

    /// Admits one more piece of work from `source`, or says why not.
    pub fn admit(&mut self, source: IpAddr) -> Result<(), Refused> {
        if self.total >= self.limits.total {
            return Err(Refused::Total(self.total));
        }
        let count = self.by_source.entry(source.to_canonical()).or_insert(0);
        if *count >= self.limits.per_source {
            return Err(Refused::PerSource(*count));
        }
        *count += 1;
        self.total += 1;
        Ok(())
    }

    /// Ends one piece of work from `source`.
    pub fn release(&mut self, source: IpAddr) {
        let source = source.to_canonical();
        let Some(count) = self.by_source.get_mut(&source) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.by_source.remove(&source);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Work in flight over all sources.
    pub fn in_flight(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: Limits = Limits {
        total: 3,
        per_source: 2,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([100, 64, 0, last])
    }

    #[test]
    fn one_source_cannot_take_more_than_its_share_nor_all_together_more_than_the_total() {
        let mut state = AdmissionState::new(LIMITS);

        assert_eq!(state.admit(ip(1)), Ok(()));
        assert_eq!(state.admit(ip(1)), Ok(()));
        assert_eq!(state.admit(ip(1)), Err(Refused::PerSource(2)));
        assert_eq!(state.admit(ip(2)), Ok(()));
        assert_eq!(state.admit(ip(3)), Err(Refused::Total(3)));

        state.release(ip(1));
        assert_eq!(state.admit(ip(3)), Ok(()));
        assert_eq!(state.in_flight(), 3);
    }

    #[test]
    fn a_mapped_address_counts_as_its_ipv4_source() {
        let mut state = AdmissionState::new(LIMITS);
        let mapped: IpAddr = "::ffff:100.64.0.1".parse().expect("an address");

        state.admit(ip(1)).expect("room");
        state.admit(mapped).expect("room");

        assert_eq!(state.admit(ip(1)), Err(Refused::PerSource(2)));
        state.release(mapped);
        state.release(ip(1));
        assert_eq!(state.in_flight(), 0);
    }

    proptest! {
        /// After any sequence of admits and releases, the counts never
        /// pass the limits and match the work actually admitted.
        #[test]
        fn limits_hold_under_any_sequence(steps in proptest::collection::vec((any::<bool>(), 0u8..4), 0..200)) {
            let mut state = AdmissionState::new(LIMITS);
            let mut held: BTreeMap<u8, usize> = BTreeMap::new();
            for (admit, who) in steps {
                if admit {
                    if state.admit(ip(who)).is_ok() {
                        *held.entry(who).or_default() += 1;
                    }
                } else if let Some(n) = held.get_mut(&who).filter(|n| **n > 0) {
                    *n -= 1;
                    state.release(ip(who));
                }
                let total: usize = held.values().sum();
                prop_assert_eq!(state.in_flight(), total);
                prop_assert!(total <= LIMITS.total);
                prop_assert!(held.values().all(|n| *n <= LIMITS.per_source));
            }
        }
    }
}
