//! [`DnsAccess`]: which sources the node answers DNS for, read from its own
//! packet filter.
//!
//! The data plane already drops every packet the filter refuses before it
//! reaches the kernel, and the forwarder's sockets are bound to the TUN
//! device, so a query reaches them only through that filter. The forwarder
//! checks again with this before any work, so that a filter it did not
//! expect (or a socket option that did not take) still answers nobody the
//! policy does not name.

use std::collections::BTreeSet;
use std::net::IpAddr;

use causeway_wire::{FilterRule, PacketFilter};
use ipnet::IpNet;

use crate::{DNS_PORT, Transport};

/// IANA protocol numbers.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// Who may send the node DNS queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DnsAccess {
    /// Nobody (before the first netmap).
    #[default]
    Nobody,
    /// Anyone the data plane lets in: control sent no filter, and the data
    /// plane then passes every packet from a peer.
    Unfiltered,
    /// The sources the filter lets reach one of the node's addresses on
    /// port 53, per transport.
    Sources {
        /// Over UDP.
        udp: BTreeSet<IpNet>,
        /// Over TCP.
        tcp: BTreeSet<IpNet>,
    },
}

impl DnsAccess {
    /// Reads `filter` (the netmap's) for the node whose addresses are `own`.
    pub fn from_filter(filter: Option<&PacketFilter>, own: &[IpAddr]) -> Self {
        let Some(filter) = filter else {
            return Self::Unfiltered;
        };
        let mut udp = BTreeSet::new();
        let mut tcp = BTreeSet::new();
        for rule in &filter.rules {
            if !reaches_dns(rule, own) {
                continue;
            }
            let sources = rule.sources.iter().map(IpNet::trunc);
            if allows_protocol(rule, UDP) {
                udp.extend(sources.clone());
            }
            if allows_protocol(rule, TCP) {
                tcp.extend(sources);
            }
        }
        Self::Sources { udp, tcp }
    }

    /// Whether `source` may ask over `transport`. A lookup per prefix
    /// length (33 for IPv4, 129 for IPv6), whatever the filter's size.
    pub fn allows(&self, source: IpAddr, transport: Transport) -> bool {
        let sources = match (self, transport) {
            (Self::Nobody, _) => return false,
            (Self::Unfiltered, _) => return true,
            (Self::Sources { udp, .. }, Transport::Udp) => udp,
            (Self::Sources { tcp, .. }, Transport::Tcp) => tcp,
        };
        let source = source.to_canonical();
        let max = IpNet::from(source).max_prefix_len();
        (0..=max).any(|len| IpNet::new(source, len).is_ok_and(|net| sources.contains(&net.trunc())))
    }
}

/// Whether one of `rule`'s destinations is one of `own` on port 53.
fn reaches_dns(rule: &FilterRule, own: &[IpAddr]) -> bool {
    rule.destinations.iter().any(|d| {
        d.ports.first <= DNS_PORT
            && DNS_PORT <= d.ports.last
            && own.iter().any(|a| d.prefix.contains(a))
    })
}

/// Whether `rule` allows `protocol`; no protocols means TCP, UDP, ICMP and
/// ICMPv6 (see [`FilterRule::protocols`]).
fn allows_protocol(rule: &FilterRule, protocol: u8) -> bool {
    rule.protocols.is_empty() || rule.protocols.contains(&protocol)
}

#[cfg(test)]
mod tests {
    use causeway_wire::{FilterDestination, PortRange};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("a prefix")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn rule(sources: &[&str], dest: &str, ports: (u16, u16), protocols: &[u8]) -> FilterRule {
        FilterRule {
            sources: sources.iter().map(|s| net(s)).collect(),
            destinations: vec![FilterDestination {
                prefix: net(dest),
                ports: PortRange {
                    first: ports.0,
                    last: ports.1,
                },
            }],
            protocols: protocols.to_vec(),
        }
    }

    #[test]
    fn only_sources_the_filter_lets_reach_port_53_on_an_own_address_may_ask() {
        let own = [ip("100.64.0.5"), ip("fd7a:115c:a1e0::5")];
        let filter = PacketFilter {
            rules: vec![
                // The client: DNS over UDP and TCP, as control compiles it.
                rule(&["100.64.0.1/32"], "100.64.0.5/32", (53, 53), &[6, 17]),
                // Another peer: SSH only.
                rule(&["100.64.0.2/32"], "100.64.0.5/32", (22, 22), &[]),
                // A third: UDP only, over IPv6, any port.
                rule(
                    &["100.64.0.3/32"],
                    "fd7a:115c:a1e0::5/128",
                    (0, 65535),
                    &[17],
                ),
                // The internet through the exit node is not the node itself.
                rule(&["100.64.0.4/32"], "8.8.8.0/24", (53, 53), &[]),
            ],
        };

        let access = DnsAccess::from_filter(Some(&filter), &own);

        let asks = |s: &str, t| access.allows(ip(s), t);
        assert!(asks("100.64.0.1", Transport::Udp));
        assert!(asks("100.64.0.1", Transport::Tcp));
        assert!(!asks("100.64.0.2", Transport::Udp));
        assert!(asks("100.64.0.3", Transport::Udp));
        assert!(!asks("100.64.0.3", Transport::Tcp));
        assert!(!asks("100.64.0.4", Transport::Udp));
        assert!(!asks("198.18.0.9", Transport::Udp));
        // An IPv4-mapped source (a dual-stack socket) is the IPv4 peer.
        assert!(asks("::ffff:100.64.0.1", Transport::Udp));
    }

    #[test]
    fn wide_source_prefixes_match_every_address_inside() {
        let own = [ip("100.64.0.5")];
        let filter = PacketFilter {
            rules: vec![rule(&["100.64.0.0/11"], "0.0.0.0/0", (1, 1024), &[])],
        };

        let access = DnsAccess::from_filter(Some(&filter), &own);

        assert!(access.allows(ip("100.90.1.2"), Transport::Tcp));
        assert!(!access.allows(ip("100.96.0.1"), Transport::Tcp));
    }

    #[test]
    fn no_netmap_answers_nobody_and_no_filter_answers_everyone() {
        assert!(!DnsAccess::default().allows(ip("100.64.0.1"), Transport::Udp));
        assert!(
            DnsAccess::from_filter(None, &[ip("100.64.0.5")])
                .allows(ip("100.64.0.1"), Transport::Udp)
        );
        let empty = DnsAccess::from_filter(Some(&PacketFilter::default()), &[ip("100.64.0.5")]);
        assert!(!empty.allows(ip("100.64.0.1"), Transport::Udp));
    }
}
