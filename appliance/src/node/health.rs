//! Subnet-router and exit-node health probes: the shell of
//! [`RouteHealthState`].
//!
//! Each round checks, for every advertised route, the router's own
//! forwarding path (IP forwarding on, the TUN device up, and the interface
//! the kernel routes the prefix out of up with carrier) and then the
//! route's probe target, if it has one (a TCP connection, or an ICMP echo).
//! An exit node's internet path is one more such route, `0.0.0.0/0`
//! ([`RouteProbe::for_exit_node`]); control passes its health to clients,
//! which `exit_node = "auto"` uses. `::/0` is not probed on its own: one
//! probe stands for the exit node's internet path.
//! Every check of a route runs under one deadline (`probe_timeout`), at
//! most [`MAX_CONCURRENT_PROBES`] routes are probed at once, and a round
//! starts only when the previous one is over, so a router never has more
//! than that many probes in flight. Changes of health go to the control
//! session, which reports them on the map stream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use causeway_mesh::{ProbeSettings, RouteHealthState};
use causeway_netconf::{RouteTable, forwarding_enabled};
use causeway_wire::RouteHealth;
use futures::StreamExt;
use ipnet::{IpNet, Ipv6Net};
use tokio::sync::watch;

use crate::config::{ExitNodeConfig, SubnetRouterConfig};

/// Where an exit node without an IP probe target checks its forwarding
/// path: an address in TEST-NET-1 (RFC 5737), which no network routes
/// specially, so the kernel's answer is the route to the internet. Only
/// the routing table is consulted; nothing is sent to it.
const INTERNET_PATH_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The most routes probed at the same time.
pub(crate) const MAX_CONCURRENT_PROBES: usize = 16;

/// What one route is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteProbe {
    /// The advertised prefix (health is reported for it).
    pub prefix: IpNet,
    /// What the node forwards it to: the prefix itself, or for a 4via6
    /// route the site's IPv4 range.
    pub range: IpNet,
    /// The probe target beyond the forwarding path.
    pub target: Option<ProbeTarget>,
}

/// A route's probe target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProbeTarget {
    /// A TCP connection to `host:port` must open.
    Tcp(String),
    /// An ICMP echo to this address must be answered.
    Icmp(IpAddr),
}

impl RouteProbe {
    /// The routes of a `[subnet_router]` section and their probes, in the
    /// tailnet whose IPv6 range is `ula` (for 4via6 routes).
    pub(crate) fn from_config(router: &SubnetRouterConfig, ula: Option<Ipv6Net>) -> Vec<Self> {
        router
            .routes
            .iter()
            .filter_map(|r| Some((r.advertised(ula)?, r)))
            .map(|(prefix, r)| RouteProbe {
                prefix,
                range: r.prefix,
                target: match (&r.probe_tcp, r.probe_icmp) {
                    (Some(tcp), _) => Some(ProbeTarget::Tcp(tcp.clone())),
                    (None, Some(ip)) => Some(ProbeTarget::Icmp(ip)),
                    (None, None) => None,
                },
            })
            .collect()
    }

    /// An exit node's internet path, reported as the health of its
    /// `0.0.0.0/0` route, with the `[exit_node]` probe target.
    pub(crate) fn for_exit_node(exit: &ExitNodeConfig) -> Self {
        RouteProbe {
            prefix: IpNet::V4(ipnet::Ipv4Net::default()),
            range: IpNet::V4(ipnet::Ipv4Net::default()),
            target: match (&exit.probe_tcp, exit.probe_icmp) {
                (Some(tcp), _) => Some(ProbeTarget::Tcp(tcp.clone())),
                (None, Some(ip)) => Some(ProbeTarget::Icmp(ip)),
                (None, None) => None,
            },
        }
    }

    /// The address whose route the forwarding-path check looks up: the
    /// target's when it lies in the prefix, else the prefix's first host;
    /// for an exit route, the target's whatever its family, else
    /// [`INTERNET_PATH_V4`].
    fn path_address(&self) -> IpAddr {
        let target = match &self.target {
            Some(ProbeTarget::Icmp(ip)) => Some(*ip),
            Some(ProbeTarget::Tcp(t)) => t.parse::<SocketAddr>().ok().map(|a| a.ip()),
            None => None,
        };
        if self.range.prefix_len() == 0 {
            return target.unwrap_or(IpAddr::V4(INTERNET_PATH_V4));
        }
        if let Some(ip) = target.filter(|ip| self.range.contains(ip)) {
            return ip;
        }
        match self.range {
            IpNet::V4(v4) if v4.prefix_len() < 32 => {
                IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()).saturating_add(1)))
            }
            IpNet::V6(v6) if v6.prefix_len() < 128 => {
                IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()).saturating_add(1)))
            }
            other => other.addr(),
        }
    }
}

/// Probes `routes` until the task is dropped, publishing each change of
/// health on `report` (which starts as every route healthy).
pub(crate) async fn run(
    settings: ProbeSettings,
    routes: Vec<RouteProbe>,
    tun_name: String,
    report: watch::Sender<Option<Vec<RouteHealth>>>,
) {
    let tun_name = std::sync::Arc::new(tun_name);
    let table = match RouteTable::new().await {
        Ok(table) => Some(std::sync::Arc::new(table)),
        Err(e) => {
            tracing::warn!(error = %e, "health probes cannot read routes; every route will report unhealthy");
            None
        }
    };
    let mut state =
        RouteHealthState::new(settings, routes.iter().map(|r| r.prefix), Instant::now());
    report.send_replace(Some(state.report()));
    let mut seq: u16 = 0;
    loop {
        tokio::time::sleep_until(tokio::time::Instant::from_std(state.poll_timeout())).await;
        if !state.handle_timeout(Instant::now()) {
            continue;
        }
        seq = seq.wrapping_add(1);
        let mut round = futures::stream::iter(routes.iter().cloned().map(|route| {
            let table = table.clone();
            let tun_name = tun_name.clone();
            async move {
                let outcome =
                    check(table.as_deref(), &tun_name, &route, settings.timeout, seq).await;
                (route.prefix, outcome)
            }
        }))
        .buffer_unordered(MAX_CONCURRENT_PROBES);
        while let Some((prefix, outcome)) = round.next().await {
            if let Err(reason) = &outcome {
                tracing::debug!(%prefix, %reason, "health probe failed");
            }
            state.handle_result(prefix, outcome);
            if let Some(health) = state.poll_report() {
                for h in &health {
                    tracing::info!(prefix = %h.prefix, healthy = h.healthy, reason = %h.reason, "route health");
                }
                report.send_replace(Some(health));
            }
        }
    }
}

/// One route's checks under one deadline; `Err` says what failed.
async fn check(
    table: Option<&RouteTable>,
    tun_name: &str,
    route: &RouteProbe,
    timeout: Duration,
    seq: u16,
) -> Result<(), String> {
    let checks = async {
        let Some(table) = table else {
            return Err("cannot read the routing table".to_owned());
        };
        forwarding_path(table, tun_name, route.path_address()).await?;
        match &route.target {
            Some(ProbeTarget::Tcp(target)) => tcp_connect(target).await,
            Some(ProbeTarget::Icmp(ip)) => icmp_echo(*ip, seq).await,
            None => Ok(()),
        }
    };
    tokio::time::timeout(timeout, checks)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// Forwarding on, the TUN device up, and the interface that routes to
/// `address` up with carrier.
pub(crate) async fn forwarding_path(
    table: &RouteTable,
    tun_name: &str,
    address: IpAddr,
) -> Result<(), String> {
    match forwarding_enabled(address.is_ipv6()) {
        Ok(true) => {}
        Ok(false) => return Err("IP forwarding is off".to_owned()),
        Err(e) => return Err(format!("reading the forwarding setting: {e}")),
    }
    let tun = table
        .interface_index(tun_name)
        .await
        .map_err(|e| format!("TUN device: {e}"))?;
    let tun_state = table
        .link_state(tun)
        .await
        .map_err(|e| format!("TUN device: {e}"))?;
    if !tun_state.up || !tun_state.running {
        return Err(format!("TUN device {tun_name} is down"));
    }
    let out = table
        .route_to(address)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no route to {address}"))?;
    if out == tun {
        return Err(format!(
            "the route to {address} leads back into the tailnet"
        ));
    }
    let link = table.link_state(out).await.map_err(|e| e.to_string())?;
    if !link.up {
        return Err(format!("{} (towards {address}) is down", link.name));
    }
    if !link.running {
        return Err(format!("{} (towards {address}) has no carrier", link.name));
    }
    Ok(())
}

/// Opens (and at once closes) a TCP connection to `target` (`host:port`;
/// a name is resolved by the system resolver).
async fn tcp_connect(target: &str) -> Result<(), String> {
    tokio::net::TcpStream::connect(target)
        .await
        .map(drop)
        .map_err(|e| format!("TCP connect to {target}: {e}"))
}

/// Sends one ICMP echo request to `target` and waits for its reply. Uses an
/// unprivileged ICMP ("ping") socket where `net.ipv4.ping_group_range`
/// allows it, else a raw socket (root or CAP_NET_RAW).
async fn icmp_echo(target: IpAddr, seq: u16) -> Result<(), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => (s, false),
        Err(_) => Socket::new(domain, Type::from(libc::SOCK_RAW), Some(protocol))
            .map(|s| (s, true))
            .map_err(|e| format!("opening an ICMP socket: {e}"))?,
    };
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("ICMP socket: {e}"))?;
    // With a ping socket the kernel sets the identifier; with a raw one we
    // choose it, and skip other processes' replies by it.
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(0);
    let echo = etherparse::IcmpEchoHeader { id, seq };
    let payload = b"causeway-health";
    let request: Vec<u8> = match target {
        IpAddr::V4(_) => {
            let header = etherparse::Icmpv4Header::with_checksum(
                etherparse::Icmpv4Type::EchoRequest(echo),
                payload,
            );
            header.to_bytes().iter().chain(payload).copied().collect()
        }
        // The kernel fills in the ICMPv6 checksum (it covers the addresses).
        IpAddr::V6(_) => {
            let header = etherparse::Icmpv6Header::new(etherparse::Icmpv6Type::EchoRequest(echo));
            header.to_bytes().iter().chain(payload).copied().collect()
        }
    };
    // Connected, the socket only receives what the target sends.
    socket
        .connect(&socket2::SockAddr::from(SocketAddr::new(target, 0)))
        .map_err(|e| format!("ICMP socket to {target}: {e}"))?;
    // tokio's UDP socket is a thin wrapper over send/recv on a datagram
    // descriptor; the ICMP socket is one (ping or raw), so it serves as
    // the async handle without any unsafe registration.
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))
        .map_err(|e| format!("ICMP socket: {e}"))?;
    socket
        .send(&request)
        .await
        .map_err(|e| format!("ICMP echo to {target}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let len = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("ICMP echo to {target}: {e}"))?;
        if is_reply(&buf[..len], target, raw, echo) {
            return Ok(());
        }
    }
}

/// Whether `packet` (as read from the ICMP socket) answers `echo`. A raw
/// IPv4 socket hands over the IP header too; a ping socket's identifier
/// is the kernel's, so only the sequence number is compared there.
fn is_reply(packet: &[u8], target: IpAddr, raw: bool, echo: etherparse::IcmpEchoHeader) -> bool {
    let matches =
        |got: etherparse::IcmpEchoHeader| got.seq == echo.seq && (!raw || got.id == echo.id);
    match target {
        IpAddr::V4(_) => {
            let icmp = if raw {
                match etherparse::Ipv4Header::from_slice(packet) {
                    Ok((_, rest)) => rest,
                    Err(_) => return false,
                }
            } else {
                packet
            };
            matches!(
                etherparse::Icmpv4Header::from_slice(icmp),
                Ok((etherparse::Icmpv4Header { icmp_type: etherparse::Icmpv4Type::EchoReply(got), .. }, _)) if matches(got)
            )
        }
        IpAddr::V6(_) => matches!(
            etherparse::Icmpv6Header::from_slice(packet),
            Ok((etherparse::Icmpv6Header { icmp_type: etherparse::Icmpv6Type::EchoReply(got), .. }, _)) if matches(got)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(prefix: &str, target: Option<ProbeTarget>) -> RouteProbe {
        RouteProbe {
            prefix: prefix.parse().expect("valid prefix"),
            range: prefix.parse().expect("valid prefix"),
            target,
        }
    }

    #[test]
    fn the_path_check_looks_up_the_target_inside_the_prefix_else_its_first_host() {
        let tcp = |t: &str| Some(ProbeTarget::Tcp(t.to_owned()));
        assert_eq!(
            probe("198.19.1.0/24", tcp("198.19.1.10:80")).path_address(),
            "198.19.1.10".parse::<IpAddr>().expect("valid")
        );
        assert_eq!(
            probe("198.19.1.0/24", tcp("db.internal:5432")).path_address(),
            "198.19.1.1".parse::<IpAddr>().expect("valid")
        );
        assert_eq!(
            probe(
                "198.19.1.0/24",
                Some(ProbeTarget::Icmp("10.9.9.9".parse().expect("valid")))
            )
            .path_address(),
            "198.19.1.1".parse::<IpAddr>().expect("valid")
        );
        assert_eq!(
            probe("198.19.1.7/32", None).path_address(),
            "198.19.1.7".parse::<IpAddr>().expect("valid")
        );
        assert_eq!(
            probe("fd00:1::/64", None).path_address(),
            "fd00:1::1".parse::<IpAddr>().expect("valid")
        );
    }

    #[test]
    fn an_exit_node_checks_the_path_to_its_target_else_to_the_internet() {
        let exit = |tcp: Option<&str>, icmp: Option<&str>| ExitNodeConfig {
            probe_tcp: tcp.map(str::to_owned),
            probe_icmp: icmp.map(|ip| ip.parse().expect("valid")),
            ..ExitNodeConfig::default()
        };
        let plain = RouteProbe::for_exit_node(&exit(None, None));
        assert_eq!(plain.prefix, "0.0.0.0/0".parse::<IpNet>().expect("valid"));
        assert_eq!(plain.target, None);
        assert_eq!(plain.path_address(), IpAddr::V4(INTERNET_PATH_V4));
        let tcp = RouteProbe::for_exit_node(&exit(Some("198.18.100.10:8000"), None));
        assert_eq!(
            tcp.target,
            Some(ProbeTarget::Tcp("198.18.100.10:8000".to_owned()))
        );
        assert_eq!(
            tcp.path_address(),
            "198.18.100.10".parse::<IpAddr>().expect("valid")
        );
        let named = RouteProbe::for_exit_node(&exit(Some("example.com:443"), None));
        assert_eq!(named.path_address(), IpAddr::V4(INTERNET_PATH_V4));
        // An IPv6 target is checked over IPv6, though reported under 0.0.0.0/0.
        let icmp6 = RouteProbe::for_exit_node(&exit(None, Some("2001:db8:100::10")));
        assert_eq!(
            icmp6.path_address(),
            "2001:db8:100::10".parse::<IpAddr>().expect("valid")
        );
    }

    #[test]
    fn echo_replies_are_matched_by_sequence_and_on_raw_sockets_by_id() {
        let echo = etherparse::IcmpEchoHeader { id: 7, seq: 3 };
        let target: IpAddr = "198.19.1.10".parse().expect("valid");
        let reply = |id, seq| {
            etherparse::Icmpv4Header::with_checksum(
                etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id, seq }),
                b"",
            )
            .to_bytes()
            .to_vec()
        };
        assert!(is_reply(&reply(999, 3), target, false, echo));
        assert!(!is_reply(&reply(999, 3), target, true, echo));
        assert!(!is_reply(&reply(7, 4), target, false, echo));
        let request =
            etherparse::Icmpv4Header::with_checksum(etherparse::Icmpv4Type::EchoRequest(echo), b"")
                .to_bytes()
                .to_vec();
        assert!(!is_reply(&request, target, false, echo));
        // A raw socket's packet starts with the IPv4 header.
        let ip = etherparse::Ipv4Header::new(
            8,
            64,
            etherparse::IpNumber::ICMP,
            [198, 19, 1, 10],
            [198, 19, 1, 2],
        )
        .expect("valid header");
        let mut raw = ip.to_bytes().to_vec();
        raw.extend(reply(7, 3));
        assert!(is_reply(&raw, target, true, echo));
    }
}
