//! The sans-IO core of the appliance's DNS service: what an exit node
//! needs to answer its clients' queries by asking its own resolvers, and
//! the MagicDNS and split-DNS decisions of the node resolver, with no
//! sockets, no clock and no randomness here (the shell in
//! `appliance/src/node/dns_forward.rs` owns those).
//!
//! - [`Query`]: a query checked with hickory-proto before anything is
//!   forwarded (a standard query, exactly one question, at most
//!   [`MAX_QUERY_LEN`] bytes), and the upstream's answer checked against it
//!   (same id, same question) before it is relayed.
//! - [`DnsAccess`]: who may ask, read from the node's own packet filter
//!   (the sources it lets reach one of the node's addresses on port 53).
//! - [`AdmissionState`]: bounded work in flight, in total and per source.
//! - [`upstreams_from_resolv_conf`]: the resolvers to forward to, from the
//!   host's `resolv.conf`.
//! - [`MagicDns`]: per query, answer a tailnet name or reverse name from
//!   the netmap's records (only of nodes this one may see), send a name
//!   under a split-DNS domain to that domain's resolvers, or send it to
//!   the machine's own. The node resolver (`node.dns_resolver`) serves it
//!   with the exit node's forwarder.
//! - [`resolv_conf_pointing_at`]: the `resolv.conf` a node writes while
//!   its resolver runs (`node.accept_dns`).
//! - [`ConnectorRoutes`]: an app connector's routes, learned from the
//!   answers it relays for its domains, with TTL expiry (and a floor), a
//!   cap, exact merging into wider prefixes, and removal with a domain.
//!   Used by the appliance's `app-connector` role.
//! - [`reverse_zones`]: the tailnet's reverse zones, which systemd-resolved
//!   routes to the node resolver.
//! - [`Lookup`]: one query of our own and the reading of its answer
//!   (`appliance dns query`).

mod access;
mod admission;
mod connector;
mod lookup;
mod magic;
mod os_resolv;
mod query;
mod upstream;

use std::time::Duration;

pub use access::DnsAccess;
pub use admission::{AdmissionState, Limits, Refused};
pub use connector::{
    BadDomain, ConnectorLimits, ConnectorRoutes, DEFAULT_MAX_ROUTES, DEFAULT_TTL_FLOOR,
    DomainPattern, Learned, MAX_DOMAINS, MAX_ROUTES_LIMIT, answer_addresses,
};
pub use lookup::{Answer, BadLookup, Lookup};
pub use magic::{
    BadDnsConfig, MAGIC_TTL, MAX_RECORDS, MAX_SPLIT_DOMAINS, MagicDns, Route, reverse_zones,
};
pub use os_resolv::{WRITTEN_BY, resolv_conf_pointing_at};
pub use query::{BadAnswer, BadQuery, MAX_QUERY_LEN, MAX_UDP_PAYLOAD, Query};
pub use upstream::{MAX_UPSTREAMS, upstreams_from_resolv_conf};

/// The DNS port (RFC 1035).
pub const DNS_PORT: u16 = 53;

/// How a query arrived, and so how it is forwarded and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// One datagram each way; answers larger than the client accepts are
    /// truncated (TC set) so that it retries over TCP.
    Udp,
    /// Two-byte length-prefixed messages on a connection (RFC 7766).
    Tcp,
}

/// Queries over UDP in flight at once, over all sources.
pub const UDP_IN_FLIGHT: Limits = Limits {
    total: 256,
    per_source: 32,
};
/// TCP connections open at once, over all sources.
pub const TCP_CONNECTIONS: Limits = Limits {
    total: 64,
    per_source: 4,
};
/// How long one upstream resolver gets to answer; the next one (at most
/// [`MAX_UPSTREAMS`]) is asked after that.
pub const UPSTREAM_DEADLINE: Duration = Duration::from_secs(2);
/// How long a TCP client gets to send a whole query, counted from the
/// connection's start or the previous answer; an idle or slow client is
/// closed after it.
pub const TCP_READ_DEADLINE: Duration = Duration::from_secs(10);
/// Queries answered on one TCP connection before it is closed.
pub const TCP_QUERIES_PER_CONNECTION: usize = 100;
