//! An app connector's routes, learned from the DNS answers it relays, with
//! no I/O: for each answer to a query under one of its domains
//! (`app.example.com`, or `*.example.com` for every name below
//! `example.com`), the addresses the answer gives for that name (following
//! CNAMEs) become routes the connector advertises. Each route lives as long
//! as the answer's TTL, but at least [`ConnectorLimits::ttl_floor`] (a
//! client may keep using an address after its TTL, and a route that
//! disappears under an open connection breaks it), and is refreshed by
//! every answer that gives it again. A route expires when its time is up,
//! and goes at once when the last domain that led to it is removed. At
//! most [`ConnectorLimits::max_routes`] addresses are held; an address over
//! the cap is refused and counted, never evicting one in use.
//!
//! Addresses that are not on the internet are never learned: a resolver
//! that answers with a loopback, private (RFC 1918, unique-local),
//! link-local, multicast or tailnet address would otherwise make clients
//! route those ranges to the connector's own network.
//!
//! The routes given out are the learned addresses merged into the fewest
//! prefixes that cover exactly those addresses (two adjacent /32s become
//! one /31, and so on), so merging never routes an address nobody asked
//! for. The caller passes `now` in; nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};

use crate::Query;
use hickory_proto::rr::{Name, RData};
use ipnet::{IpNet, Ipv4Net};

/// Default shortest life of a learned route.
pub const DEFAULT_TTL_FLOOR: Duration = Duration::from_secs(600);
/// Default most addresses one connector holds.
pub const DEFAULT_MAX_ROUTES: usize = 1_000;
/// The largest `max_routes` accepted: every client holds a kernel route
/// per prefix, and every netmap carries them.
pub const MAX_ROUTES_LIMIT: usize = 65_536;
/// Most domains one connector serves.
pub const MAX_DOMAINS: usize = 1_000;

/// The tailnet's IPv4 range: never a connector route.
const TAILNET_V4: Ipv4Net = match Ipv4Net::new(std::net::Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(net) => net,
    Err(_) => panic!("100.64.0.0/10 is a valid prefix"),
};

/// One configured domain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DomainPattern {
    /// Exactly this name.
    Exact(Name),
    /// Every name below this one (`*.example.com`: `a.example.com`,
    /// `b.c.example.com`, not `example.com` itself).
    Below(Name),
}

/// A domain that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app connector domain {domain:?}: {reason}")]
pub struct BadDomain {
    /// As given.
    pub domain: String,
    /// What was expected.
    pub reason: String,
}

impl FromStr for DomainPattern {
    type Err = BadDomain;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadDomain {
            domain: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest.contains('*') {
            return Err(bad(
                "a wildcard is allowed only as the whole first label (*.example.com)",
            ));
        }
        let mut name = Name::from_ascii(rest)
            .map_err(|e| bad(&format!("not a domain name ({e})")))?
            .to_lowercase();
        name.set_fqdn(true);
        if name.is_root() {
            return Err(bad("expected a domain name like app.example.com"));
        }
        if wildcard && name.num_labels() < 2 {
            return Err(bad(
                "a wildcard over a top-level domain is too broad: expected at least *.example.com",
            ));
        }
        Ok(if wildcard {
            Self::Below(name)
        } else {
            Self::Exact(name)
        })
    }
}

impl DomainPattern {
    /// The zone whose queries go to the connector (split DNS):
    /// `example.com` for both `example.com` and `*.example.com`.
    pub fn zone(&self) -> &Name {
        match self {
            Self::Exact(name) | Self::Below(name) => name,
        }
    }

    /// Whether `name` (lower-case, fully qualified) is covered.
    fn covers(&self, name: &Name) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Below(parent) => parent != name && parent.zone_of(name),
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => write!(f, "{}", name.to_utf8().trim_end_matches('.')),
            Self::Below(name) => write!(f, "*.{}", name.to_utf8().trim_end_matches('.')),
        }
    }
}

/// How long routes live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorLimits {
    /// Shortest life of a route, whatever the answer's TTL.
    pub ttl_floor: Duration,
    /// Most addresses held.
    pub max_routes: usize,
}

impl Default for ConnectorLimits {
    fn default() -> Self {
        Self {
            ttl_floor: DEFAULT_TTL_FLOOR,
            max_routes: DEFAULT_MAX_ROUTES,
        }
    }
}

/// What one answer changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// Addresses that were not routed before.
    pub added: usize,
    /// Addresses whose life was extended.
    pub refreshed: usize,
    /// Addresses left out because the cap was reached.
    pub over_cap: usize,
    /// Addresses left out because they are not on the internet.
    pub not_public: usize,
}

impl Learned {
    /// Whether the advertised routes changed.
    pub fn routes_changed(&self) -> bool {
        self.added > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    expires: Instant,
    /// The queried names that led to it.
    names: BTreeSet<Name>,
}

/// The connector's domains and the routes learned for them.
#[derive(Debug, Clone)]
pub struct ConnectorRoutes {
    domains: BTreeSet<DomainPattern>,
    limits: ConnectorLimits,
    addresses: BTreeMap<IpAddr, Entry>,
    /// The same addresses by when they expire, soonest first.
    by_expiry: BTreeSet<(Instant, IpAddr)>,
    over_cap: u64,
}

impl ConnectorRoutes {
    /// A connector serving `domains`, holding nothing yet.
    pub fn new(domains: BTreeSet<DomainPattern>, limits: ConnectorLimits) -> Self {
        Self {
            domains,
            limits,
            addresses: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            over_cap: 0,
        }
    }

    /// The limits it was made with.
    pub fn limits(&self) -> ConnectorLimits {
        self.limits
    }

    /// The domains served.
    pub fn domains(&self) -> &BTreeSet<DomainPattern> {
        &self.domains
    }

    /// Whether a query for `name` is one of ours.
    pub fn serves(&self, name: &Name) -> bool {
        let name = name.to_lowercase();
        self.domains.iter().any(|d| d.covers(&name))
    }

    /// Whether `query` asks for a name inside one of the domains' zones
    /// ([`DomainPattern::zone`]): the queries split DNS sends here, which
    /// the connector answers (only those it [serves](Self::serves) are
    /// learned); any other is refused.
    pub fn answers(&self, query: &Query) -> bool {
        let Some(question) = query.message().queries.first() else {
            return false;
        };
        let name = question.name().to_lowercase();
        self.domains.iter().any(|d| d.zone().zone_of(&name))
    }

    /// The zones to announce to control as split DNS, without the final
    /// dot, sorted and without duplicates.
    pub fn zones(&self) -> Vec<String> {
        let zones: BTreeSet<String> = self
            .domains
            .iter()
            .map(|d| d.zone().to_utf8().trim_end_matches('.').to_owned())
            .collect();
        zones.into_iter().collect()
    }

    /// Learns the addresses an upstream's answer gives for its question,
    /// if the question is one of ours. The answer must already have been
    /// checked against the query (`Query::check_answer`).
    pub fn learn(&mut self, answer: &[u8], now: Instant) -> Learned {
        let mut learned = Learned::default();
        let Ok(message) = Message::from_vec(answer) else {
            return learned;
        };
        if message.metadata.message_type != MessageType::Response
            || message.metadata.response_code != ResponseCode::NoError
        {
            return learned;
        }
        let Some(question) = message.queries.first() else {
            return learned;
        };
        let asked = question.name().to_lowercase();
        if !self.domains.iter().any(|d| d.covers(&asked)) {
            return learned;
        }
        // The names the question leads to through CNAMEs, in the answer.
        let mut chain = BTreeSet::from([asked.clone()]);
        loop {
            let before = chain.len();
            for record in &message.answers {
                if let RData::CNAME(target) = &record.data
                    && chain.contains(&record.name.to_lowercase())
                {
                    chain.insert(target.0.to_lowercase());
                }
            }
            if chain.len() == before {
                break;
            }
        }
        for record in &message.answers {
            let address = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            if !chain.contains(&record.name.to_lowercase()) {
                continue;
            }
            if !is_public(address) {
                learned.not_public += 1;
                continue;
            }
            let life = Duration::from_secs(u64::from(record.ttl)).max(self.limits.ttl_floor);
            let expires = now + life;
            let full = self.addresses.len() >= self.limits.max_routes;
            match self.addresses.get_mut(&address) {
                Some(entry) => {
                    if expires > entry.expires {
                        self.by_expiry.remove(&(entry.expires, address));
                        self.by_expiry.insert((expires, address));
                        entry.expires = expires;
                    }
                    entry.names.insert(asked.clone());
                    learned.refreshed += 1;
                }
                None if full => {
                    learned.over_cap += 1;
                    self.over_cap += 1;
                }
                None => {
                    self.by_expiry.insert((expires, address));
                    self.addresses.insert(
                        address,
                        Entry {
                            expires,
                            names: BTreeSet::from([asked.clone()]),
                        },
                    );
                    learned.added += 1;
                }
            }
        }
        learned
    }

    /// Drops the routes whose time is up (at or before `now`); returns
    /// whether any went.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while let Some(&(expires, address)) = self.by_expiry.first()
            && expires <= now
        {
            self.by_expiry.pop_first();
            self.addresses.remove(&address);
            changed = true;
        }
        changed
    }

    /// Serves `domains` from now on. Routes learned only through domains
    /// no longer served go at once; returns whether any went.
    pub fn set_domains(&mut self, domains: BTreeSet<DomainPattern>) -> bool {
        self.domains = domains;
        let before = self.addresses.len();
        let served = &self.domains;
        let by_expiry = &mut self.by_expiry;
        self.addresses.retain(|address, entry| {
            entry
                .names
                .retain(|name| served.iter().any(|d| d.covers(name)));
            let keep = !entry.names.is_empty();
            if !keep {
                by_expiry.remove(&(entry.expires, *address));
            }
            keep
        });
        self.addresses.len() != before
    }

    /// The routes to advertise: the learned addresses merged into the
    /// fewest prefixes covering exactly them, in order.
    pub fn routes(&self) -> Vec<IpNet> {
        let hosts: Vec<IpNet> = self.addresses.keys().map(|&ip| IpNet::from(ip)).collect();
        IpNet::aggregate(&hosts)
    }

    /// When the next route expires, for the caller's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|&(expires, _)| expires)
    }

    /// How many addresses are held.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Addresses refused for the cap since the start.
    pub fn over_cap(&self) -> u64 {
        self.over_cap
    }
}

/// The addresses (A and AAAA records) in an answer's answer section; none
/// for bytes that are not a DNS message.
pub fn answer_addresses(answer: &[u8]) -> Vec<IpAddr> {
    let Ok(message) = Message::from_vec(answer) else {
        return Vec::new();
    };
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// Whether `ip` may be a connector route: an address on the internet, not
/// one of this machine's, its LAN's or the tailnet's.
fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || TAILNET_V4.contains(&v4))
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query as Question};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Record, RecordType};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("a name")
    }

    fn domains(list: &[&str]) -> BTreeSet<DomainPattern> {
        list.iter().map(|d| d.parse().expect("a domain")).collect()
    }

    /// An answer to `asked` with these records (owner, data, ttl).
    fn answer(asked: &str, records: &[(&str, RData, u32)]) -> Vec<u8> {
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        message.metadata.response_code = ResponseCode::NoError;
        message.add_query(Question::query(name(asked), RecordType::A));
        for (owner, data, ttl) in records {
            message.add_answer(Record::from_rdata(name(owner), *ttl, data.clone()));
        }
        message.to_vec().expect("encodes")
    }

    fn a(ip: [u8; 4]) -> RData {
        RData::A(A(Ipv4Addr::from(ip)))
    }

    #[test]
    fn domains_are_parsed_and_refused_with_a_reason() {
        assert_eq!(
            "App.Example.com"
                .parse::<DomainPattern>()
                .expect("exact")
                .to_string(),
            "app.example.com"
        );
        assert_eq!(
            "*.example.com."
                .parse::<DomainPattern>()
                .expect("wildcard")
                .to_string(),
            "*.example.com"
        );
        for (bad, why) in [
            ("*.com", "too broad"),
            ("a.*.example.com", "whole first label"),
            ("", "expected a domain name"),
            ("bad..name", "not a domain name"),
        ] {
            let err = bad.parse::<DomainPattern>().expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn a_wildcard_covers_names_below_not_itself_and_exact_only_itself() {
        let c = ConnectorRoutes::new(
            domains(&["*.example.com", "app.other.net"]),
            ConnectorLimits::default(),
        );
        assert!(c.serves(&name("a.example.com.")));
        assert!(c.serves(&name("B.c.Example.com.")));
        assert!(!c.serves(&name("example.com.")));
        assert!(!c.serves(&name("badexample.com.")));
        assert!(c.serves(&name("app.other.net.")));
        assert!(!c.serves(&name("x.app.other.net.")));
    }

    #[test]
    fn queries_inside_the_zones_are_answered_and_the_zones_announced() {
        let c = ConnectorRoutes::new(
            domains(&["*.example.com", "app.other.net", "x.example.com"]),
            ConnectorLimits::default(),
        );
        let ask = |text: &str| {
            let mut message = Message::new(3, MessageType::Query, OpCode::Query);
            message.add_query(Question::query(name(text), RecordType::A));
            let bytes = message.to_vec().expect("encodes");
            c.answers(&Query::parse(&bytes, crate::Transport::Udp).expect("a query"))
        };
        assert!(ask("example.com."));
        assert!(ask("a.b.Example.COM."));
        assert!(ask("app.other.net."));
        assert!(ask("deep.app.other.net."));
        assert!(!ask("other.net."));
        assert!(!ask("example.org."));
        assert_eq!(c.zones(), ["app.other.net", "example.com", "x.example.com"]);
    }

    #[test]
    fn an_answer_through_a_cname_is_learned_and_lives_at_least_the_floor() {
        let now = Instant::now();
        let limits = ConnectorLimits {
            ttl_floor: Duration::from_secs(300),
            max_routes: 10,
        };
        let mut c = ConnectorRoutes::new(domains(&["*.example.com"]), limits);
        let bytes = answer(
            "www.example.com.",
            &[
                (
                    "www.example.com.",
                    RData::CNAME(CNAME(name("edge.cdn.net."))),
                    30,
                ),
                ("edge.cdn.net.", a([198, 18, 5, 1]), 30),
                (
                    "edge.cdn.net.",
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
                    900,
                ),
                // Not in the question's chain: ignored.
                ("other.example.org.", a([198, 18, 9, 9]), 30),
            ],
        );

        let learned = c.learn(&bytes, now);

        assert_eq!(learned.added, 2, "{learned:?}");
        assert_eq!(
            c.routes(),
            vec![
                "198.18.5.1/32".parse::<IpNet>().expect("net"),
                "2001:db8::1/128".parse().expect("net")
            ]
        );
        assert_eq!(c.next_expiry(), Some(now + Duration::from_secs(300)));
        assert!(!c.expire(now + Duration::from_secs(299)));
        assert!(c.expire(now + Duration::from_secs(300)));
        assert_eq!(
            c.routes(),
            vec!["2001:db8::1/128".parse::<IpNet>().expect("net")]
        );
        assert!(c.expire(now + Duration::from_secs(900)));
        assert!(c.is_empty());
    }

    #[test]
    fn names_not_served_and_addresses_not_on_the_internet_are_not_learned() {
        let now = Instant::now();
        let mut c = ConnectorRoutes::new(domains(&["app.example.com"]), ConnectorLimits::default());
        let other = answer(
            "www.example.com.",
            &[("www.example.com.", a([198, 18, 1, 1]), 60)],
        );
        assert_eq!(c.learn(&other, now), Learned::default());
        let inside = answer(
            "app.example.com.",
            &[
                ("app.example.com.", a([10, 0, 0, 5]), 60),
                ("app.example.com.", a([127, 0, 0, 1]), 60),
                ("app.example.com.", a([100, 64, 0, 7]), 60),
                ("app.example.com.", a([169, 254, 169, 254]), 60),
                (
                    "app.example.com.",
                    RData::AAAA(AAAA("fd7a::1".parse().expect("ula"))),
                    60,
                ),
            ],
        );
        let learned = c.learn(&inside, now);
        assert_eq!(learned.not_public, 5, "{learned:?}");
        assert!(c.is_empty());
        assert!(c.learn(b"not dns", now) == Learned::default());
    }

    #[test]
    fn the_cap_refuses_new_addresses_and_keeps_the_old() {
        let now = Instant::now();
        let limits = ConnectorLimits {
            ttl_floor: Duration::from_secs(60),
            max_routes: 2,
        };
        let mut c = ConnectorRoutes::new(domains(&["*.example.com"]), limits);
        for (i, host) in ["a", "b", "c"].iter().enumerate() {
            let owner = format!("{host}.example.com.");
            let octet = u8::try_from(i).expect("small") * 2 + 1;
            c.learn(
                &answer(&owner, &[(&owner, a([198, 18, 0, octet]), 60)]),
                now,
            );
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.over_cap(), 1);
        // Once one expires there is room again.
        c.expire(now + Duration::from_secs(60));
        let again = c.learn(
            &answer(
                "c.example.com.",
                &[("c.example.com.", a([198, 18, 0, 5]), 60)],
            ),
            now + Duration::from_secs(61),
        );
        assert_eq!(again.added, 1);
    }

    #[test]
    fn removing_a_domain_removes_its_routes_at_once_but_not_shared_ones() {
        let now = Instant::now();
        let mut c = ConnectorRoutes::new(
            domains(&["a.example.com", "b.example.com"]),
            ConnectorLimits::default(),
        );
        c.learn(
            &answer(
                "a.example.com.",
                &[
                    ("a.example.com.", a([198, 18, 0, 1]), 60),
                    ("a.example.com.", a([198, 18, 0, 2]), 60),
                ],
            ),
            now,
        );
        c.learn(
            &answer(
                "b.example.com.",
                &[("b.example.com.", a([198, 18, 0, 2]), 60)],
            ),
            now,
        );

        assert!(c.set_domains(domains(&["b.example.com"])));

        assert_eq!(
            c.routes(),
            vec!["198.18.0.2/32".parse::<IpNet>().expect("net")]
        );
        assert!(!c.set_domains(domains(&["b.example.com"])));
    }

    proptest! {
        /// Merged routes cover exactly the learned addresses, the cap
        /// holds, and nothing outlives its time.
        #[test]
        fn routes_cover_exactly_what_was_learned(
            answers in proptest::collection::vec(
                (0u8..4, proptest::collection::vec((any::<u8>(), 0u32..1000), 1..6), 0u64..2000),
                1..40,
            ),
            max_routes in 1usize..64,
            check_at in 0u64..4000,
        ) {
            let start = Instant::now();
            let limits = ConnectorLimits { ttl_floor: Duration::from_secs(120), max_routes };
            let mut c = ConnectorRoutes::new(domains(&["*.example.com"]), limits);
            let mut latest: BTreeMap<IpAddr, Instant> = BTreeMap::new();
            for (host, records, at) in &answers {
                let owner = format!("h{host}.example.com.");
                let rdata: Vec<(&str, RData, u32)> = records
                    .iter()
                    .map(|(last, ttl)| (owner.as_str(), a([198, 18, 7, *last]), *ttl))
                    .collect();
                let now = start + Duration::from_secs(*at);
                c.learn(&answer(&owner, &rdata), now);
                prop_assert!(c.len() <= max_routes);
                prop_assert_eq!(c.by_expiry.len(), c.addresses.len());
            }
            for (ip, entry) in &c.addresses {
                latest.insert(*ip, entry.expires);
            }
            let now = start + Duration::from_secs(check_at);
            c.expire(now);
            let expected: BTreeSet<IpAddr> = latest
                .iter()
                .filter(|(_, expires)| **expires > now)
                .map(|(ip, _)| *ip)
                .collect();
            let covered: BTreeSet<IpAddr> = c
                .routes()
                .iter()
                .flat_map(|net| net.hosts().chain([net.network(), net.broadcast()]))
                .collect();
            prop_assert_eq!(covered, expected);
        }
    }
}
