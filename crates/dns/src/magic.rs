//! MagicDNS and split DNS, decided per query with no I/O: a query for a
//! tailnet name (or the reverse name of a tailnet address) is answered
//! here from the netmap's records; a query under a split-DNS domain goes
//! to that domain's resolvers; anything else goes to the machine's own
//! resolvers. The shell sends and receives; this only decides and builds
//! answers (with hickory-proto).
//!
//! A node sees only the records of nodes it may see: the records are
//! filtered by the addresses of its peers and its own when the table is
//! built, so a name never reveals a node the policy hides.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use causeway_wire::{DnsConfig, via6};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::Query;

/// TTL of every answer given here, in seconds: short, since a peer's
/// record changes with the netmap and nothing tells a client's cache.
pub const MAGIC_TTL: u32 = 60;

/// Most records one table holds (the netmap's; a larger map is cut, in
/// name order, and says so).
pub const MAX_RECORDS: usize = 100_000;

/// Most split-DNS domains one table holds.
pub const MAX_SPLIT_DOMAINS: usize = 1_000;

/// The tailnet's IPv4 range, whose reverse zone is answered here.
const TAILNET_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(net) => net,
    Err(_) => panic!("100.64.0.0/10 is a valid prefix"),
};

/// Where a query goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answered here: the bytes to send back.
    Answer(Vec<u8>),
    /// Split DNS: forward to these resolvers (in order), through the mesh.
    Split {
        /// The configured domain that matched, e.g. `corp.internal.`.
        domain: String,
        /// Its resolvers.
        resolvers: Vec<IpAddr>,
    },
    /// Forward to the machine's own resolvers.
    Upstream,
}

/// A netmap's DNS configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDnsConfig {
    /// The tailnet domain is not a domain name.
    #[error("DNS domain {domain:?}: {reason}")]
    Domain {
        /// As given.
        domain: String,
        /// Why it was refused.
        reason: String,
    },
    /// A split-DNS domain is not a domain name, or has no resolver.
    #[error("split DNS domain {domain:?}: {reason}")]
    Split {
        /// As given.
        domain: String,
        /// Why it was refused.
        reason: String,
    },
    /// Too many split-DNS domains.
    #[error("{count} split DNS domains: expected at most {MAX_SPLIT_DOMAINS}")]
    TooManySplitDomains {
        /// How many were given.
        count: usize,
    },
}

/// The answers and routes one netmap's DNS configuration gives.
#[derive(Debug, Clone, Default)]
pub struct MagicDns {
    /// The tailnet domain (lower case, fully qualified); none: MagicDNS off.
    domain: Option<Name>,
    /// Host name (lower case, fully qualified) → its addresses.
    hosts: BTreeMap<Name, Vec<IpAddr>>,
    /// Address → host name, for PTR answers.
    reverse: BTreeMap<IpAddr, Name>,
    /// Split-DNS domains, most labels first (the longest suffix wins).
    split: Vec<(Name, Vec<IpAddr>)>,
    /// Records left out because they named a node this one may not see,
    /// or were malformed, or over [`MAX_RECORDS`].
    skipped: usize,
    /// The tailnet's IPv6 range, for 4via6 names (see [`MagicDns::with_via6`]).
    via6: Option<Ipv6Net>,
}

impl MagicDns {
    /// Builds the table from the netmap's DNS configuration, keeping only
    /// records whose addresses are all in `visible` (the node's own and
    /// its peers'). A record whose name is not under `domain` or does not
    /// parse is skipped (counted in [`MagicDns::skipped`]); a bad domain or
    /// split entry refuses the whole configuration.
    pub fn new(config: &DnsConfig, visible: &BTreeSet<IpAddr>) -> Result<Self, BadDnsConfig> {
        let DnsConfig {
            domain,
            records,
            split,
        } = config;
        let domain = if domain.is_empty() {
            None
        } else {
            Some(fqdn(domain).map_err(|reason| BadDnsConfig::Domain {
                domain: domain.to_owned(),
                reason,
            })?)
        };
        if split.len() > MAX_SPLIT_DOMAINS {
            return Err(BadDnsConfig::TooManySplitDomains { count: split.len() });
        }
        let mut split_domains = Vec::with_capacity(split.len());
        for (name, resolvers) in split {
            let bad = |reason: String| BadDnsConfig::Split {
                domain: name.clone(),
                reason,
            };
            let parsed = fqdn(name).map_err(bad)?;
            if resolvers.is_empty() {
                return Err(bad("no resolver; expected at least one address".to_owned()));
            }
            split_domains.push((parsed, resolvers.clone()));
        }
        split_domains.sort_by(|a, b| b.0.num_labels().cmp(&a.0.num_labels()).then(a.0.cmp(&b.0)));

        let mut table = Self {
            domain,
            split: split_domains,
            ..Self::default()
        };
        for (name, addrs) in records {
            let usable = table.hosts.len() < MAX_RECORDS
                && !addrs.is_empty()
                && addrs.iter().all(|a| visible.contains(a));
            let parsed = fqdn(name).ok().filter(|n| {
                table
                    .domain
                    .as_ref()
                    .is_some_and(|d| d.zone_of(n) && d != n)
            });
            match parsed {
                Some(host) if usable => {
                    for addr in addrs {
                        table.reverse.entry(*addr).or_insert_with(|| host.clone());
                    }
                    table.hosts.insert(host, addrs.clone());
                }
                _ => table.skipped += 1,
            }
        }
        Ok(table)
    }

    /// Answers 4via6 names under the tailnet domain: `10-0-0-5-via-7` is
    /// the address `10.0.0.5` at site 7, whose AAAA is its address in the
    /// tailnet's IPv6 range `ula` (`causeway_wire::via6`). A host name
    /// from the netmap of the same spelling wins.
    pub fn with_via6(mut self, ula: Ipv6Net) -> Self {
        self.via6 = Some(ula);
        self
    }

    /// Records left out (not visible to this node, malformed, or over the cap).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Host names answered here.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Where `query` goes, and the answer when it is answered here.
    pub fn route(&self, query: &Query) -> Route {
        let message = query.message();
        let Some(question) = message.queries.first() else {
            return Route::Upstream;
        };
        let name = question.name().to_lowercase();
        let qtype = question.query_type();
        if self.domain.as_ref().is_some_and(|d| d.zone_of(&name)) {
            return Route::Answer(self.answer_host(message, &name, qtype));
        }
        if let Some(answer) = self.answer_reverse(message, &name, qtype) {
            return Route::Answer(answer);
        }
        if let Some((domain, resolvers)) = self.split.iter().find(|(d, _)| d.zone_of(&name)) {
            return Route::Split {
                domain: domain.to_string(),
                resolvers: resolvers.clone(),
            };
        }
        Route::Upstream
    }

    /// A name under the tailnet domain: its addresses of the asked
    /// family, NOERROR with no answer for another type, NXDOMAIN for an
    /// unknown name.
    fn answer_host(&self, query: &Message, name: &Name, qtype: RecordType) -> Vec<u8> {
        let via;
        let addrs = match self.hosts.get(name) {
            Some(addrs) => addrs,
            None => match self.via6_address(name) {
                Some(address) => {
                    via = [IpAddr::V6(address)];
                    &via[..]
                }
                None => return respond(query, ResponseCode::NXDomain, Vec::new()),
            },
        };
        let records = addrs
            .iter()
            .filter_map(|addr| match (addr, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rdata| Record::from_rdata(query.queries[0].name().clone(), MAGIC_TTL, rdata))
            .collect();
        respond(query, ResponseCode::NoError, records)
    }

    /// The 4via6 address `name` spells (`A-B-C-D-via-SITE.DOMAIN.`).
    fn via6_address(&self, name: &Name) -> Option<Ipv6Addr> {
        let ula = self.via6?;
        let domain = self.domain.as_ref()?;
        if name.num_labels() != domain.num_labels() + 1 {
            return None;
        }
        let label = std::str::from_utf8(name.iter().next()?).ok()?;
        let (v4, site) = label.split_once("-via-")?;
        let site: u16 = site.parse().ok()?;
        let v4: Ipv4Addr = v4.replace('-', ".").parse().ok()?;
        Some(via6::via6_address(ula, site, v4))
    }

    /// A reverse name (`in-addr.arpa.`, `ip6.arpa.`) of a tailnet address:
    /// its host name. `None` when the name is not a reverse name this
    /// table answers for (the tailnet's IPv4 range, or an address a record
    /// holds): it goes on like any other query.
    fn answer_reverse(&self, query: &Message, name: &Name, qtype: RecordType) -> Option<Vec<u8>> {
        let net = name.parse_arpa_name().ok()?;
        let addr = single_address(net)?;
        let host = self.reverse.get(&addr);
        let in_tailnet = matches!(addr, IpAddr::V4(v4) if TAILNET_V4.contains(&v4));
        if host.is_none() && !in_tailnet {
            return None;
        }
        let Some(host) = host else {
            return Some(respond(query, ResponseCode::NXDomain, Vec::new()));
        };
        let records = match qtype {
            RecordType::PTR | RecordType::ANY => vec![Record::from_rdata(
                query.queries[0].name().clone(),
                MAGIC_TTL,
                RData::PTR(PTR(host.clone())),
            )],
            _ => Vec::new(),
        };
        Some(respond(query, ResponseCode::NoError, records))
    }
}

/// The reverse zones whose names this table answers (PTR): the tailnet's
/// IPv4 range, as the 64 zones `64.100.in-addr.arpa` to
/// `127.100.in-addr.arpa` (100.64.0.0/10 is not on an octet boundary), and
/// the tailnet's IPv6 /48 `ula` as one `ip6.arpa` zone. A resolver that
/// routes by domain (systemd-resolved) sends reverse lookups of tailnet
/// addresses here only for these.
pub fn reverse_zones(ula: Option<Ipv6Net>) -> Vec<String> {
    let first = TAILNET_V4.network().octets()[1];
    let last = TAILNET_V4.broadcast().octets()[1];
    let v4 = (first..=last).map(|second| format!("{second}.100.in-addr.arpa"));
    let v6 = ula.map(|ula| {
        let nibbles: String = ula
            .trunc()
            .network()
            .octets()
            .iter()
            .take(6)
            .flat_map(|byte| [byte >> 4, byte & 0xf])
            .rev()
            .map(|nibble| format!("{nibble:x}."))
            .collect();
        format!("{nibbles}ip6.arpa")
    });
    v4.chain(v6).collect()
}

/// A lower-case, fully qualified name from configuration text.
fn fqdn(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text).map_err(|e| format!("{e}; expected a domain name"))?;
    if name.is_root() {
        return Err("the root; expected a domain name".to_owned());
    }
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// The address a reverse name stands for, when it names one address.
fn single_address(net: IpNet) -> Option<IpAddr> {
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// An authoritative answer to `query` with `code` and `answers`.
fn respond(query: &Message, code: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
    let mut answer = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    answer.metadata.response_code = code;
    answer.metadata.authoritative = true;
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.add_queries(query.queries.iter().cloned());
    answer.add_answers(answers);
    // A question of at most 271 bytes and a few short records: encoding
    // cannot fail, but an empty answer is the safe fallback.
    answer.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Transport;

    fn addr(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn config(
        domain: &str,
        records: BTreeMap<String, Vec<IpAddr>>,
        split: BTreeMap<String, Vec<IpAddr>>,
    ) -> DnsConfig {
        DnsConfig {
            domain: domain.to_owned(),
            records,
            split,
        }
    }

    fn table() -> MagicDns {
        let records = BTreeMap::from([
            (
                "router.tailnet.example".to_owned(),
                vec![addr("100.64.0.1"), addr("fd7a:115c:a1e0::1")],
            ),
            (
                "client.tailnet.example".to_owned(),
                vec![addr("100.64.0.2"), addr("fd7a:115c:a1e0::2")],
            ),
            // A node this one may not see.
            (
                "hidden.tailnet.example".to_owned(),
                vec![addr("100.64.0.9")],
            ),
            // Not under the tailnet domain.
            ("evil.example.com".to_owned(), vec![addr("100.64.0.1")]),
        ]);
        let split = BTreeMap::from([
            ("corp.internal".to_owned(), vec![addr("198.19.0.2")]),
            ("eu.corp.internal".to_owned(), vec![addr("198.19.8.2")]),
        ]);
        let visible = BTreeSet::from([
            addr("100.64.0.1"),
            addr("fd7a:115c:a1e0::1"),
            addr("100.64.0.2"),
            addr("fd7a:115c:a1e0::2"),
        ]);
        MagicDns::new(&config("Tailnet.Example", records, split), &visible).expect("valid")
    }

    fn ask(table: &MagicDns, name: &str, qtype: RecordType) -> Route {
        let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).expect("name"),
            qtype,
        ));
        let bytes = message.to_vec().expect("encodes");
        table.route(&Query::parse(&bytes, Transport::Udp).expect("a query"))
    }

    fn answered(route: Route) -> Message {
        match route {
            Route::Answer(bytes) => Message::from_vec(&bytes).expect("decodes"),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_peer_name_is_answered_with_its_addresses_of_the_asked_family() {
        let t = table();
        let a = answered(ask(&t, "ROUTER.tailnet.example.", RecordType::A));
        assert_eq!(a.metadata.id, 0x4242);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative && a.metadata.recursion_desired);
        let got: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, ["100.64.0.1"]);
        assert_eq!(a.answers[0].ttl, MAGIC_TTL);
        // The answer keeps the question's case (0x20 randomisation).
        assert_eq!(a.answers[0].name.to_string(), "ROUTER.tailnet.example.");
        let aaaa = answered(ask(&t, "router.tailnet.example.", RecordType::AAAA));
        let got: Vec<String> = aaaa.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, ["fd7a:115c:a1e0::1"]);
        let mx = answered(ask(&t, "router.tailnet.example.", RecordType::MX));
        assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
        assert!(mx.answers.is_empty());
    }

    #[test]
    fn reverse_zones_cover_the_tailnet_and_are_answered_here() {
        let zones = reverse_zones(Some("fd7a:115c:a1e0::/48".parse().expect("valid")));
        assert_eq!(zones.len(), 65);
        assert_eq!(zones[0], "64.100.in-addr.arpa");
        assert_eq!(zones[63], "127.100.in-addr.arpa");
        assert_eq!(zones[64], "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa");
        assert_eq!(reverse_zones(None).len(), 64);
        // The names a PTR query for a tailnet address asks fall in them,
        // and the table answers them.
        let t = table();
        for (address, zone) in [("100.64.0.1", &zones[0]), ("fd7a:115c:a1e0::1", &zones[64])] {
            let arpa = Name::from(addr(address)).to_ascii();
            assert!(arpa.ends_with(&format!("{zone}.")), "{arpa} in {zone}");
            let answer = answered(ask(&t, &arpa, RecordType::PTR));
            assert_eq!(answer.answers.len(), 1, "{arpa}");
        }
    }

    #[test]
    fn via_names_are_answered_with_the_4via6_address() {
        let t = table().with_via6("fd7a:115c:a1e0::/48".parse().expect("valid"));
        let aaaa = answered(ask(&t, "10-0-0-5-VIA-7.tailnet.example.", RecordType::AAAA));
        let got: Vec<String> = aaaa.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, ["fd7a:115c:a1e0:b1a:0:7:a00:5"]);
        // No IPv4 address: the name exists, with no A record.
        let a = answered(ask(&t, "10-0-0-5-via-7.tailnet.example.", RecordType::A));
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        for name in [
            "10-0-0-5-via-70000.tailnet.example.",
            "10-0-0-256-via-7.tailnet.example.",
            "10-0-5-via-7.tailnet.example.",
            "x.10-0-0-5-via-7.tailnet.example.",
        ] {
            let a = answered(ask(&t, name, RecordType::AAAA));
            assert_eq!(a.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        // Without the tailnet's range (the node has no IPv6 address yet).
        let a = answered(ask(
            &table(),
            "10-0-0-5-via-7.tailnet.example.",
            RecordType::AAAA,
        ));
        assert_eq!(a.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn unknown_and_hidden_names_under_the_domain_do_not_exist() {
        let t = table();
        for name in [
            "nobody.tailnet.example.",
            "hidden.tailnet.example.",
            "tailnet.example.",
        ] {
            let a = answered(ask(&t, name, RecordType::A));
            assert_eq!(a.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        assert_eq!(t.hosts(), 2);
        assert_eq!(
            t.skipped(),
            2,
            "the hidden node and the name outside the domain"
        );
    }

    #[test]
    fn reverse_names_of_tailnet_addresses_are_answered_here() {
        let t = table();
        let ptr = answered(ask(&t, "1.0.64.100.in-addr.arpa.", RecordType::PTR));
        let got: Vec<String> = ptr.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, ["router.tailnet.example."]);
        let v6 = Name::from(addr("fd7a:115c:a1e0::2")).to_string();
        let ptr6 = answered(ask(&t, &v6, RecordType::PTR));
        let got: Vec<String> = ptr6.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, ["client.tailnet.example."]);
        // An unknown tailnet address does not exist; another address is
        // not ours to answer.
        let unknown = answered(ask(&t, "9.0.64.100.in-addr.arpa.", RecordType::PTR));
        assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            ask(&t, "1.1.168.192.in-addr.arpa.", RecordType::PTR),
            Route::Upstream
        );
    }

    #[test]
    fn split_domains_take_the_longest_match_and_everything_else_goes_upstream() {
        let t = table();
        assert_eq!(
            ask(&t, "db.corp.internal.", RecordType::A),
            Route::Split {
                domain: "corp.internal.".into(),
                resolvers: vec![addr("198.19.0.2")]
            }
        );
        assert_eq!(
            ask(&t, "DB.EU.corp.internal.", RecordType::A),
            Route::Split {
                domain: "eu.corp.internal.".into(),
                resolvers: vec![addr("198.19.8.2")]
            }
        );
        assert_eq!(ask(&t, "notcorp.internal.", RecordType::A), Route::Upstream);
        assert_eq!(ask(&t, "example.com.", RecordType::A), Route::Upstream);
    }

    #[test]
    fn without_a_domain_nothing_is_answered_here_but_split_dns_still_routes() {
        let split = BTreeMap::from([("corp.internal".to_owned(), vec![addr("198.19.0.2")])]);
        let t =
            MagicDns::new(&config("", BTreeMap::new(), split), &BTreeSet::new()).expect("valid");
        assert_eq!(
            ask(&t, "router.tailnet.example.", RecordType::A),
            Route::Upstream
        );
        assert!(matches!(
            ask(&t, "db.corp.internal.", RecordType::A),
            Route::Split { .. }
        ));
    }

    #[test]
    fn bad_configuration_is_refused_naming_the_entry() {
        let empty = BTreeSet::new();
        let err = MagicDns::new(
            &config("bad..domain", BTreeMap::new(), BTreeMap::new()),
            &empty,
        )
        .expect_err("bad domain");
        assert!(
            err.to_string().starts_with("DNS domain \"bad..domain\""),
            "{err}"
        );
        let split = BTreeMap::from([("corp.internal".to_owned(), Vec::new())]);
        let err = MagicDns::new(&config("t.example", BTreeMap::new(), split), &empty)
            .expect_err("no resolver");
        assert_eq!(
            err.to_string(),
            "split DNS domain \"corp.internal\": no resolver; expected at least one address"
        );
        let many: BTreeMap<String, Vec<IpAddr>> = (0..=MAX_SPLIT_DOMAINS)
            .map(|i| (format!("d{i}.example"), vec![addr("198.19.0.2")]))
            .collect();
        let err = MagicDns::new(&config("t.example", BTreeMap::new(), many), &empty)
            .expect_err("too many");
        assert!(
            matches!(err, BadDnsConfig::TooManySplitDomains { count } if count == MAX_SPLIT_DOMAINS + 1)
        );
    }

    proptest! {
        /// Any name and type under, beside or outside the tailnet domain:
        /// never a panic, and every answer decodes, keeps the id and the
        /// question, and holds only records of the asked name.
        #[test]
        fn any_question_routes_and_every_answer_is_well_formed(
            labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,18}[a-zA-Z0-9])?", 0..4),
            suffix in prop_oneof![
                Just("tailnet.example."),
                Just("corp.internal."),
                Just("in-addr.arpa."),
                Just("64.100.in-addr.arpa."),
                Just("example.com."),
            ],
            qtype in prop_oneof![
                Just(RecordType::A),
                Just(RecordType::AAAA),
                Just(RecordType::PTR),
                Just(RecordType::ANY),
                Just(RecordType::TXT),
            ],
        ) {
            let mut name = labels.join(".");
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(suffix);
            if let Route::Answer(bytes) = ask(&table(), &name, qtype) {
                let answer = Message::from_vec(&bytes).expect("decodes");
                prop_assert_eq!(answer.metadata.id, 0x4242);
                prop_assert_eq!(answer.queries.len(), 1);
                for record in &answer.answers {
                    prop_assert_eq!(record.name.to_lowercase(), Name::from_ascii(&name).expect("name").to_lowercase());
                }
            }
        }
    }
}
