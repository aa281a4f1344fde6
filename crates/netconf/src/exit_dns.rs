//! DNS through an exit node, on the client: an nftables table of its own
//! that sends the host's DNS queries to the exit node's forwarder, applied
//! as one atomic batch and read back like the firewall (see
//! [`crate::apply_firewall`]), and removed whole.
//!
//! Per family with an exit-node address `E` (IPv4 shown):
//!
//! ```text
//! table inet causeway-exit-dns {
//!   chain output {      # type nat hook output priority dstnat
//!     meta nfproto ipv4 meta l4proto udp th dport 53 ip daddr != 127.0.0.0/8
//!       ip daddr != 100.64.0.0/10 meta mark & 0xff0000 != 0x430000 dnat ip to E:53
//!     (the same for tcp)
//!   }
//!   chain postrouting { # type nat hook postrouting priority srcnat
//!     oifname TUN meta nfproto ipv4 meta l4proto udp th dport 53 ip daddr E
//!       ip saddr != 100.64.0.0/10 masquerade
//!     (the same for tcp)
//!   }
//! }
//! ```
//!
//! Queries to loopback (a local stub such as systemd-resolved's, whose own
//! upstream queries are then redirected) and to tailnet addresses are left
//! alone, and so are the node's own marked sockets ([`crate::BYPASS_MARK`]).
//! A query whose original route chose a source outside the tailnet (a
//! resolver on the LAN with LAN access on) is masqueraded to the TUN
//! device's address, which is the one the exit node's filter lets in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftnl::Policy;

use crate::firewall::{
    Action, ChainKind, ChainPlan, FirewallError, Match, RulePlan, TablePlan, comment,
    interface_name, invalid, table_name,
};
use crate::{BYPASS_MARK, BYPASS_MASK};

/// The nftables table (family `inet`) the redirect lives in.
pub const EXIT_DNS_TABLE: &str = "causeway-exit-dns";

/// The DNS port (RFC 1035).
const DNS_PORT: u16 = 53;
/// IANA protocol numbers.
const TCP: u8 = 6;
const UDP: u8 = 17;

/// Where the host's DNS goes while it routes through an exit node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRedirect {
    /// The tailnet TUN interface, e.g. `cw0`.
    pub tun_interface: String,
    /// The tailnet's IPv4 range, normally `100.64.0.0/10`.
    pub tailnet_v4: Ipv4Net,
    /// The tailnet's IPv6 /48, if it has one.
    pub tailnet_v6: Option<Ipv6Net>,
    /// The exit node's IPv4 tailnet address: IPv4 queries go there.
    pub exit_v4: Option<Ipv4Addr>,
    /// The exit node's IPv6 tailnet address: IPv6 queries go there. Needs
    /// `tailnet_v6`.
    pub exit_v6: Option<Ipv6Addr>,
}

/// Installs the redirect as one atomic batch (replacing any earlier one)
/// and verifies it; a bad [`DnsRedirect`] is refused before anything is
/// sent.
pub fn apply_dns_redirect(redirect: &DnsRedirect) -> Result<(), FirewallError> {
    plan(redirect)?.apply("redirecting DNS to the exit node")?;
    tracing::debug!(
        exit_v4 = ?redirect.exit_v4,
        exit_v6 = ?redirect.exit_v6,
        "DNS redirected to the exit node"
    );
    Ok(())
}

/// Removes the redirect; not an error when there is none.
pub fn remove_dns_redirect() -> Result<(), FirewallError> {
    crate::remove_firewall(EXIT_DNS_TABLE)
}

/// Whether the redirect's table exists (for tests and `status`).
pub fn dns_redirect_exists() -> Result<bool, FirewallError> {
    crate::firewall_exists(EXIT_DNS_TABLE)
}

fn plan(redirect: &DnsRedirect) -> Result<TablePlan, FirewallError> {
    let table = table_name(EXIT_DNS_TABLE)?;
    let tun = interface_name("tun_interface", &redirect.tun_interface)?;
    let tailnet_v4 = IpNet::V4(redirect.tailnet_v4);
    if redirect.tailnet_v4.trunc() != redirect.tailnet_v4 {
        return Err(invalid(
            "tailnet_v4",
            redirect.tailnet_v4,
            "a network prefix without host bits, e.g. 100.64.0.0/10",
        ));
    }
    let mut targets = Vec::new();
    if let Some(exit) = redirect.exit_v4 {
        if !redirect.tailnet_v4.contains(&exit) {
            return Err(invalid(
                "exit_v4",
                exit,
                "the exit node's address inside tailnet_v4",
            ));
        }
        let loopback = IpNet::V4(
            Ipv4Net::new(Ipv4Addr::LOCALHOST, 8)
                .expect("8 <= 32")
                .trunc(),
        );
        targets.push((Match::Ipv4, IpAddr::V4(exit), tailnet_v4, loopback));
    }
    if let Some(exit) = redirect.exit_v6 {
        let Some(tailnet_v6) = redirect.tailnet_v6.filter(|n| n.contains(&exit)) else {
            return Err(invalid(
                "exit_v6",
                exit,
                "the exit node's address inside tailnet_v6",
            ));
        };
        let loopback = IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).expect("128 <= 128"));
        targets.push((
            Match::Ipv6,
            IpAddr::V6(exit),
            IpNet::V6(tailnet_v6.trunc()),
            loopback,
        ));
    }
    let mut output = Vec::new();
    let mut postrouting = Vec::new();
    for (family, exit, tailnet, loopback) in targets {
        for (protocol, name) in [(UDP, "udp"), (TCP, "tcp")] {
            output.push(RulePlan {
                comment: comment(&format!(
                    "causeway: DNS over {name} to the exit node {exit}"
                )),
                matches: vec![
                    family.clone(),
                    Match::Protocol(protocol),
                    Match::DestinationPort(DNS_PORT),
                    Match::DestinationNot(loopback),
                    Match::DestinationNot(tailnet),
                    Match::MarkNot {
                        mark: BYPASS_MARK,
                        mask: BYPASS_MASK,
                    },
                ],
                action: Action::DestinationNat(exit, DNS_PORT),
            });
            postrouting.push(RulePlan {
                comment: comment(&format!(
                    "causeway: DNS over {name} to {exit} from a tailnet address"
                )),
                matches: vec![
                    Match::OutputInterface(tun.clone()),
                    family.clone(),
                    Match::Protocol(protocol),
                    Match::DestinationPort(DNS_PORT),
                    Match::Destination(IpNet::from(exit)),
                    Match::SourceNot(tailnet),
                ],
                action: Action::Masquerade,
            });
        }
    }
    Ok(TablePlan {
        table,
        chains: vec![
            ChainPlan {
                name: "output",
                kind: ChainKind::OutputNat,
                policy: Policy::Accept,
                rules: output,
            },
            ChainPlan {
                name: "postrouting",
                kind: ChainKind::SourceNat,
                policy: Policy::Accept,
                rules: postrouting,
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> DnsRedirect {
        DnsRedirect {
            tun_interface: "cw0".to_owned(),
            tailnet_v4: "100.64.0.0/10".parse().expect("net"),
            tailnet_v6: Some("fd7a:115c:a1e0::/48".parse().expect("net")),
            exit_v4: Some("100.64.0.5".parse().expect("ip")),
            exit_v6: Some("fd7a:115c:a1e0::5".parse().expect("ip")),
        }
    }

    #[test]
    fn queries_of_each_family_and_transport_go_to_the_exit_nodes_address() {
        let plan = plan(&redirect()).expect("valid");

        let output = &plan.chains[0];
        assert_eq!(output.kind, ChainKind::OutputNat);
        let targets: Vec<(Match, Action)> = output
            .rules
            .iter()
            .map(|r| (r.matches[1].clone(), r.action))
            .collect();
        let v4: IpAddr = "100.64.0.5".parse().expect("ip");
        let v6: IpAddr = "fd7a:115c:a1e0::5".parse().expect("ip");
        assert_eq!(
            targets,
            [
                (Match::Protocol(17), Action::DestinationNat(v4, 53)),
                (Match::Protocol(6), Action::DestinationNat(v4, 53)),
                (Match::Protocol(17), Action::DestinationNat(v6, 53)),
                (Match::Protocol(6), Action::DestinationNat(v6, 53)),
            ]
        );
        // Never loopback, the tailnet, or the node's own marked sockets.
        assert_eq!(
            output.rules[0].matches[3..],
            [
                Match::DestinationNot("127.0.0.0/8".parse().expect("net")),
                Match::DestinationNot("100.64.0.0/10".parse().expect("net")),
                Match::MarkNot {
                    mark: 0x43_0000,
                    mask: 0xff_0000
                },
            ]
        );
        assert_eq!(
            output.rules[0].expression_kinds(),
            [
                "meta",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "cmp",
                "payload",
                "bitwise",
                "cmp",
                "payload",
                "bitwise",
                "cmp",
                "meta",
                "bitwise",
                "cmp",
                "counter",
                "immediate",
                "immediate",
                "nat"
            ]
        );
        let postrouting = &plan.chains[1];
        assert_eq!(postrouting.rules.len(), 4);
        assert!(
            postrouting
                .rules
                .iter()
                .all(|r| r.action == Action::Masquerade)
        );
        assert_eq!(
            postrouting.rules[2].matches[4..],
            [
                Match::Destination("fd7a:115c:a1e0::5/128".parse().expect("net")),
                Match::SourceNot("fd7a:115c:a1e0::/48".parse().expect("net")),
            ]
        );
    }

    #[test]
    fn an_ipv4_only_exit_node_redirects_ipv4_only() {
        let plan = plan(&DnsRedirect {
            exit_v6: None,
            ..redirect()
        })
        .expect("valid");

        assert_eq!(plan.chains[0].rules.len(), 2);
        assert!(
            plan.chains[0]
                .rules
                .iter()
                .all(|r| r.matches[0] == Match::Ipv4)
        );
    }

    #[test]
    fn an_exit_address_outside_the_tailnet_is_refused_by_name() {
        let cases = [
            (
                DnsRedirect {
                    exit_v4: Some("198.18.0.21".parse().expect("ip")),
                    ..redirect()
                },
                "exit_v4",
            ),
            (
                DnsRedirect {
                    tailnet_v6: None,
                    ..redirect()
                },
                "exit_v6",
            ),
            (
                DnsRedirect {
                    tun_interface: "a b".to_owned(),
                    ..redirect()
                },
                "tun_interface",
            ),
            (
                DnsRedirect {
                    tailnet_v4: "100.64.0.1/10".parse().expect("net"),
                    ..redirect()
                },
                "tailnet_v4",
            ),
        ];
        for (bad, field) in cases {
            let error = plan(&bad).expect_err("refused");
            assert!(
                matches!(error, FirewallError::InvalidPolicy { field: f, .. } if f == field),
                "{field}: {error}"
            );
        }
    }
}
