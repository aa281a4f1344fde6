//! A subnet router's health for each route it advertises, from probe
//! results: `unhealthy_after` failures in a row mark a route unhealthy,
//! `healthy_after` successes in a row mark it healthy again. The shell runs
//! one round of probes (the forwarding path, then the route's target) when
//! [`RouteHealthState::poll_timeout`] is due, feeds each result back, and
//! sends [`RouteHealthState::poll_report`] to control when it is `Some`.
//!
//! Counting consecutive results, not a single one, keeps one lost SYN or
//! echo from moving a route; control adds its own hold-down before a
//! recovered router may take a route back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use causeway_wire::RouteHealth;
use ipnet::IpNet;

/// How probes are paced and judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time from the start of one round to the start of the next.
    pub interval: Duration,
    /// Deadline of each probe.
    pub timeout: Duration,
    /// Failures in a row that make a healthy route unhealthy.
    pub unhealthy_after: u32,
    /// Successes in a row that make an unhealthy route healthy.
    pub healthy_after: u32,
}

impl Default for ProbeSettings {
    /// Every 500 ms, 1 s deadline, 2 failures: a router whose LAN link goes
    /// down (seen at once by the forwarding-path check) is unhealthy within
    /// about a second.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// Per-route probe counters and the health reported from them.
#[derive(Clone, Debug)]
pub struct RouteHealthState {
    settings: ProbeSettings,
    routes: BTreeMap<IpNet, RouteProbe>,
    next_round: Instant,
    report_due: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteProbe {
    healthy: bool,
    failures: u32,
    successes: u32,
    /// Why it became unhealthy (the failure that tipped it).
    reason: String,
}

impl RouteHealthState {
    /// Routes start healthy (so a router is not passed over before its
    /// first probe); the first round is due at `now`.
    pub fn new(
        settings: ProbeSettings,
        routes: impl IntoIterator<Item = IpNet>,
        now: Instant,
    ) -> Self {
        Self {
            settings,
            routes: routes
                .into_iter()
                .map(|prefix| {
                    let probe = RouteProbe {
                        healthy: true,
                        failures: 0,
                        successes: 0,
                        reason: String::new(),
                    };
                    (prefix, probe)
                })
                .collect(),
            next_round: now,
            report_due: false,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> ProbeSettings {
        self.settings
    }

    /// When the next round of probes is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_round
    }

    /// Whether a round should start now; if so, the next one is scheduled
    /// one interval after `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if now < self.next_round {
            return false;
        }
        self.next_round = now + self.settings.interval;
        true
    }

    /// Feeds one probe's outcome for `prefix`: `Err` carries why it
    /// failed. Outcomes for routes not being probed are ignored.
    pub fn handle_result(&mut self, prefix: IpNet, outcome: Result<(), String>) {
        let settings = self.settings;
        let Some(route) = self.routes.get_mut(&prefix) else {
            return;
        };
        match outcome {
            Ok(()) => {
                route.failures = 0;
                route.successes = route.successes.saturating_add(1);
                if !route.healthy && route.successes >= settings.healthy_after {
                    route.healthy = true;
                    route.reason.clear();
                    self.report_due = true;
                }
            }
            Err(reason) => {
                route.successes = 0;
                route.failures = route.failures.saturating_add(1);
                if route.healthy && route.failures >= settings.unhealthy_after {
                    route.healthy = false;
                    route.reason = reason;
                    self.report_due = true;
                }
            }
        }
    }

    /// The report to send control, once after each change of health.
    pub fn poll_report(&mut self) -> Option<Vec<RouteHealth>> {
        if !std::mem::take(&mut self.report_due) {
            return None;
        }
        Some(self.report())
    }

    /// Every route's current health, sorted by prefix.
    pub fn report(&self) -> Vec<RouteHealth> {
        self.routes
            .iter()
            .map(|(prefix, route)| RouteHealth {
                prefix: *prefix,
                healthy: route.healthy,
                reason: route.reason.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net() -> IpNet {
        "198.19.1.0/24".parse().expect("valid prefix")
    }

    fn state(now: Instant) -> RouteHealthState {
        RouteHealthState::new(ProbeSettings::default(), [net()], now)
    }

    #[test]
    fn two_failures_make_it_unhealthy_and_two_successes_bring_it_back() {
        let t0 = Instant::now();
        let mut s = state(t0);
        assert!(s.report()[0].healthy);
        assert_eq!(s.poll_report(), None);
        s.handle_result(net(), Err("eth1 has no carrier".into()));
        assert_eq!(s.poll_report(), None, "one failure is not enough");
        s.handle_result(net(), Err("eth1 is down".into()));
        let report = s.poll_report().expect("health changed");
        assert_eq!(
            report,
            vec![RouteHealth {
                prefix: net(),
                healthy: false,
                reason: "eth1 is down".into()
            }]
        );
        assert_eq!(s.poll_report(), None, "reported once");
        s.handle_result(net(), Err("still down".into()));
        assert_eq!(s.poll_report(), None);
        s.handle_result(net(), Ok(()));
        assert_eq!(s.poll_report(), None);
        s.handle_result(net(), Ok(()));
        let report = s.poll_report().expect("recovered");
        assert!(report[0].healthy);
        assert!(report[0].reason.is_empty());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut s = state(Instant::now());
        for _ in 0..5 {
            s.handle_result(net(), Err("timeout".into()));
            s.handle_result(net(), Ok(()));
        }
        assert!(s.report()[0].healthy);
        assert_eq!(s.poll_report(), None);
    }

    #[test]
    fn rounds_are_due_one_interval_apart() {
        let t0 = Instant::now();
        let mut s = state(t0);
        assert_eq!(s.poll_timeout(), t0);
        assert!(s.handle_timeout(t0));
        assert_eq!(s.poll_timeout(), t0 + Duration::from_millis(500));
        assert!(!s.handle_timeout(t0 + Duration::from_millis(499)));
        // A late round schedules from when it actually ran.
        assert!(s.handle_timeout(t0 + Duration::from_millis(1700)));
        assert_eq!(s.poll_timeout(), t0 + Duration::from_millis(2200));
    }

    #[test]
    fn results_for_unknown_routes_are_ignored() {
        let mut s = state(Instant::now());
        for _ in 0..3 {
            s.handle_result("10.0.0.0/8".parse().expect("valid"), Err("x".into()));
        }
        assert_eq!(s.poll_report(), None);
        assert_eq!(s.report().len(), 1);
    }

    proptest! {
        /// The reported health is what the last `unhealthy_after` or
        /// `healthy_after` results in a row say, and a report is due
        /// exactly when it changed.
        #[test]
        fn health_follows_runs_of_results(
            results in proptest::collection::vec(any::<bool>(), 0..60),
            unhealthy_after in 1u32..4,
            healthy_after in 1u32..4,
        ) {
            let settings = ProbeSettings { unhealthy_after, healthy_after, ..ProbeSettings::default() };
            let mut s = RouteHealthState::new(settings, [net()], Instant::now());
            let mut healthy = true;
            let mut run = 0u32;
            let mut last = None;
            for ok in results {
                run = if last == Some(ok) { run + 1 } else { 1 };
                last = Some(ok);
                s.handle_result(net(), if ok { Ok(()) } else { Err("down".into()) });
                let before = healthy;
                if ok && run >= healthy_after { healthy = true; }
                if !ok && run >= unhealthy_after { healthy = false; }
                prop_assert_eq!(s.report()[0].healthy, healthy);
                prop_assert_eq!(s.poll_report().is_some(), before != healthy);
            }
        }
    }
}
