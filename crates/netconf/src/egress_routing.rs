//! Policy routing for an exit node whose forwarded internet-bound traffic
//! leaves through a second interface (the "egress" interface, e.g. an ENI
//! in a private subnet whose default route is a NAT gateway), while the
//! node's own traffic (WireGuard, control) keeps the main table and so the
//! public interface.
//!
//! Per family that is policy-routed, with `T` = [`EGRESS_ROUTE_TABLE`]:
//!
//! ```text
//! 5290: from all iif cw0 lookup T
//! table T: default via GATEWAY dev EGRESS
//!          unreachable default metric 1000000
//!          throw <the tailnet, the node's own subnet routes>
//! ```
//!
//! Only packets that arrived from the TUN device match the rule: the
//! node's own sockets send with `iif lo` and take the main table. The
//! kernel deletes the gateway route when the egress interface goes down;
//! the `unreachable` route is then what the lookup finds, so forwarded
//! traffic fails instead of falling through to the main table (the public
//! interface). The shell re-applies the plan to put the gateway route back
//! once the interface is up again.
//!
//! [`plan_egress_routing`] is pure (sans-IO); [`read_egress_interface`],
//! [`apply_egress_routing`] and [`clear_egress_routing`] talk to the
//! kernel.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};

use crate::policy_routing::{self, OwnedTable, PlannedRoute, PlannedRule};
use crate::routes::{RouteError, RouteTable, errno, netlink};

/// The routing table that holds the egress default route.
pub const EGRESS_ROUTE_TABLE: u32 = 5290;
/// Priority of the rule that sends forwarded traffic to [`EGRESS_ROUTE_TABLE`].
const PRIORITY_EGRESS: u32 = 5290;

/// The table and rules of egress routing.
const OWNED: OwnedTable = OwnedTable {
    id: EGRESS_ROUTE_TABLE,
    mark_priority: None,
};

/// An Ethernet MAC address, written `0a:1b:2c:3d:4e:5f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress(pub [u8; 6]);

/// How the configuration names the egress interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressSelector {
    /// By interface name.
    Name(String),
    /// By MAC address (a cloud knows an ENI's MAC before the OS names it).
    Mac(MacAddress),
}

/// What the kernel says about the egress interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressInterface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its IPv4 addresses with their prefix lengths, primary first.
    pub ipv4: Vec<Ipv4Net>,
    /// Whether it has a global-scope IPv6 address.
    pub ipv6_global: bool,
    /// The gateway of the main table's IPv6 default route out of it, if any
    /// (configured, or learned from router advertisements).
    pub ipv6_gateway: Option<Ipv6Addr>,
}

/// What the kernel should hold while the exit node egresses through the
/// interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRoutingPlan {
    /// The egress interface's name.
    pub interface: String,
    /// Its index (the routes leave through it).
    pub ifindex: u32,
    /// Its address in the gateway's subnet: masquerade's source.
    pub address: Ipv4Addr,
    /// The IPv4 next hop.
    pub gateway: Ipv4Addr,
    /// The IPv6 next hop, when IPv6 is policy-routed too.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Rules, in the order they are added.
    pub rules: Vec<PlannedRule>,
    /// Routes in [`EGRESS_ROUTE_TABLE`].
    pub routes: BTreeSet<PlannedRoute>,
}

impl EgressRoutingPlan {
    /// Whether IPv6 is policy-routed (else it keeps the main table).
    pub fn routes_ipv6(&self) -> bool {
        self.ipv6_gateway.is_some()
    }
}

/// Why the egress interface cannot be used; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// No interface has this MAC address.
    #[error("no network interface has MAC address {mac}")]
    NoSuchMac {
        /// The address looked up.
        mac: MacAddress,
    },
    /// Looking the interface up failed (e.g. no interface of that name).
    #[error(transparent)]
    Lookup(#[from] RouteError),
    /// The interface has no IPv4 address.
    #[error(
        "interface {interface} has no IPv4 address; expected one in the egress subnet (e.g. 198.19.3.10/24)"
    )]
    NoIpv4Address {
        /// The interface.
        interface: String,
    },
    /// The configured gateway is not IPv4.
    #[error("gateway {gateway} is not an IPv4 address; expected the IPv4 next hop on {interface}")]
    GatewayNotIpv4 {
        /// The gateway given.
        gateway: IpAddr,
        /// The interface.
        interface: String,
    },
    /// The gateway is not a host address of the interface's subnets.
    #[error(
        "gateway {gateway} is not a host address in {interface}'s subnets ({subnets}); expected the next hop on that interface"
    )]
    GatewayOutsideSubnet {
        /// The gateway given.
        gateway: Ipv4Addr,
        /// The interface.
        interface: String,
        /// Its subnets, comma-separated.
        subnets: String,
    },
    /// The gateway is the interface's own address.
    #[error(
        "gateway {gateway} is {interface}'s own address; expected the next hop (e.g. the VPC router)"
    )]
    GatewayIsOwnAddress {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The interface.
        interface: String,
    },
    /// The default gateway (the subnet's first host) is not usable.
    #[error(
        "subnet {subnet} of {interface} has no first host address other than the interface's own; expected an explicit gateway"
    )]
    NoDefaultGateway {
        /// The interface's primary subnet.
        subnet: Ipv4Net,
        /// The interface.
        interface: String,
    },
}

impl EgressError {
    /// Whether the error is about the gateway (else about the interface).
    pub fn is_about_gateway(&self) -> bool {
        match self {
            EgressError::GatewayNotIpv4 { .. }
            | EgressError::GatewayOutsideSubnet { .. }
            | EgressError::GatewayIsOwnAddress { .. }
            | EgressError::NoDefaultGateway { .. } => true,
            EgressError::NoSuchMac { .. }
            | EgressError::Lookup(_)
            | EgressError::NoIpv4Address { .. } => false,
        }
    }
}

/// Plans the rule and routes that send traffic arriving from `tun` out of
/// `interface` via `gateway` (default: the first host address of the
/// interface's primary IPv4 subnet, the VPC router on AWS and Azure).
/// `keep_main` (the tailnet, the node's own subnet routes) keeps the main
/// table. IPv6 is policy-routed only when the interface has a global IPv6
/// address and an IPv6 default route; else it keeps the main table.
pub fn plan_egress_routing(
    tun: &str,
    interface: &EgressInterface,
    gateway: Option<IpAddr>,
    keep_main: &BTreeSet<IpNet>,
) -> Result<EgressRoutingPlan, EgressError> {
    let name = || interface.name.clone();
    let Some(primary) = interface.ipv4.first() else {
        return Err(EgressError::NoIpv4Address { interface: name() });
    };
    let (gateway, address) = match gateway {
        None => {
            let first = first_host(*primary).filter(|h| *h != primary.addr());
            let Some(first) = first else {
                return Err(EgressError::NoDefaultGateway {
                    subnet: primary.trunc(),
                    interface: name(),
                });
            };
            (first, primary.addr())
        }
        Some(v6 @ IpAddr::V6(_)) => {
            return Err(EgressError::GatewayNotIpv4 {
                gateway: v6,
                interface: name(),
            });
        }
        Some(IpAddr::V4(gateway)) => {
            if interface.ipv4.iter().any(|a| a.addr() == gateway) {
                return Err(EgressError::GatewayIsOwnAddress {
                    gateway,
                    interface: name(),
                });
            }
            let Some(own) = interface.ipv4.iter().find(|a| is_host_in(gateway, **a)) else {
                let subnets: Vec<String> = interface
                    .ipv4
                    .iter()
                    .map(|a| a.trunc().to_string())
                    .collect();
                return Err(EgressError::GatewayOutsideSubnet {
                    gateway,
                    interface: name(),
                    subnets: subnets.join(", "),
                });
            };
            (gateway, own.addr())
        }
    };
    let ipv6_gateway = interface.ipv6_gateway.filter(|_| interface.ipv6_global);

    let mut rules = vec![PlannedRule {
        ipv6: false,
        priority: PRIORITY_EGRESS,
        mark: None,
        iif: Some(tun.to_owned()),
        table: EGRESS_ROUTE_TABLE,
    }];
    let mut routes = BTreeSet::from([
        PlannedRoute::Gateway(IpAddr::V4(gateway)),
        PlannedRoute::Unreachable { ipv6: false },
    ]);
    if let Some(v6) = ipv6_gateway {
        rules.push(PlannedRule {
            ipv6: true,
            ..rules[0].clone()
        });
        routes.insert(PlannedRoute::Gateway(IpAddr::V6(v6)));
        routes.insert(PlannedRoute::Unreachable { ipv6: true });
    }
    routes.extend(
        keep_main
            .iter()
            .filter(|p| p.addr().is_ipv4() || ipv6_gateway.is_some())
            .map(|p| PlannedRoute::Throw(p.trunc())),
    );
    Ok(EgressRoutingPlan {
        interface: name(),
        ifindex: interface.index,
        address,
        gateway,
        ipv6_gateway,
        rules,
        routes,
    })
}

/// Installs `plan` (routes first, then the rule); what is already there
/// stays, what is not planned goes. Call it again to put back the gateway
/// route the kernel deleted while the interface was down.
pub async fn apply_egress_routing(
    table: &RouteTable,
    plan: &EgressRoutingPlan,
) -> Result<(), RouteError> {
    policy_routing::apply(table, OWNED, &plan.rules, &plan.routes, plan.ifindex).await?;
    tracing::trace!(interface = %plan.interface, "egress routing applied");
    Ok(())
}

/// Removes every rule that looks up [`EGRESS_ROUTE_TABLE`] and every route
/// in it (rules first).
pub async fn clear_egress_routing(table: &RouteTable) -> Result<(), RouteError> {
    policy_routing::clear(table, OWNED).await
}

/// Finds the interface `selector` names and reads its addresses and IPv6
/// default gateway.
pub async fn read_egress_interface(
    table: &RouteTable,
    selector: &EgressSelector,
) -> Result<EgressInterface, EgressError> {
    let (index, name) = match selector {
        EgressSelector::Name(name) => (table.interface_index(name).await?, name.clone()),
        EgressSelector::Mac(mac) => interface_by_mac(table, *mac).await?,
    };
    let mut ipv4 = Vec::new();
    let mut ipv6_global = false;
    let operation = format!("list the addresses of {name}");
    let mut dump = table
        .handle()
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(message) = dump
        .try_next()
        .await
        .map_err(|e| netlink(operation.clone(), e))?
    {
        if message.header.index != index {
            continue;
        }
        let local = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = local.or_else(|| {
            message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        match (message.header.family, address) {
            (AddressFamily::Inet, Some(IpAddr::V4(v4))) => {
                if let Ok(net) = Ipv4Net::new(v4, message.header.prefix_len) {
                    ipv4.push(net);
                }
            }
            (AddressFamily::Inet6, Some(IpAddr::V6(_))) => {
                ipv6_global |= message.header.scope == AddressScope::Universe;
            }
            _ => {}
        }
    }
    let ipv6_gateway = ipv6_default_gateway(table, index).await?;
    Ok(EgressInterface {
        name,
        index,
        ipv4,
        ipv6_global,
        ipv6_gateway,
    })
}

/// The index and name of the interface with MAC address `mac`.
async fn interface_by_mac(
    table: &RouteTable,
    mac: MacAddress,
) -> Result<(u32, String), EgressError> {
    let mut links = table.handle().link().get().execute();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(|e| netlink("list network interfaces".to_owned(), e))?
    {
        let mut name = None;
        let mut matches = false;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(bytes) => matches = bytes.as_slice() == mac.0,
                _ => {}
            }
        }
        if let (true, Some(name)) = (matches, name) {
            return Ok((link.header.index, name));
        }
    }
    Err(EgressError::NoSuchMac { mac })
}

/// The gateway of the main table's IPv6 default route out of `ifindex`.
async fn ipv6_default_gateway(
    table: &RouteTable,
    ifindex: u32,
) -> Result<Option<Ipv6Addr>, RouteError> {
    let request = RouteMessageBuilder::<Ipv6Addr>::new().build();
    let mut dump = table.handle().route().get(request).execute();
    let main = u32::from(RouteHeader::RT_TABLE_MAIN);
    loop {
        let route = match dump.try_next().await {
            Ok(Some(route)) => route,
            Ok(None) => return Ok(None),
            // No IPv6 in this kernel or namespace: no IPv6 gateway.
            Err(e) if errno(&e) == Some(libc::EAFNOSUPPORT) => return Ok(None),
            Err(e) => return Err(netlink("list IPv6 routes".to_owned(), e)),
        };
        if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
            continue;
        }
        let mut table_id = u32::from(route.header.table);
        let mut oif = None;
        let mut gateway = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Table(id) => table_id = *id,
                RouteAttribute::Oif(index) => oif = Some(*index),
                RouteAttribute::Gateway(RouteAddress::Inet6(gw)) => gateway = Some(*gw),
                _ => {}
            }
        }
        if table_id == main && oif == Some(ifindex) && gateway.is_some() {
            return Ok(gateway);
        }
    }
}

/// The subnet's first host address (network + 1), if it has one besides
/// the network and broadcast addresses.
fn first_host(net: Ipv4Net) -> Option<Ipv4Addr> {
    if net.prefix_len() >= 31 {
        return None;
    }
    let first = u32::from(net.network()).checked_add(1)?;
    Some(Ipv4Addr::from(first))
}

/// Whether `ip` is a host address (not network, not broadcast) of `net`.
fn is_host_in(ip: Ipv4Addr, net: Ipv4Net) -> bool {
    if !net.contains(&ip) {
        return false;
    }
    net.prefix_len() >= 31 || (ip != net.network() && ip != net.broadcast())
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a MAC address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?}: expected a MAC address of six hex pairs separated by ':', e.g. 0a:1b:2c:3d:4e:5f"
)]
pub struct MacAddressError {
    /// The text given.
    pub text: String,
}

impl FromStr for MacAddress {
    type Err = MacAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || MacAddressError {
            text: text.to_owned(),
        };
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eth1(ipv4: &[&str]) -> EgressInterface {
        EgressInterface {
            name: "eth1".to_owned(),
            index: 3,
            ipv4: ipv4.iter().map(|a| a.parse().expect("net")).collect(),
            ipv6_global: false,
            ipv6_gateway: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn keep() -> BTreeSet<IpNet> {
        ["100.64.0.0/10", "fd7a:115c:a1e0::/48", "198.19.1.0/24"]
            .iter()
            .map(|p| p.parse().expect("net"))
            .collect()
    }

    #[test]
    fn the_default_gateway_is_the_first_host_of_the_primary_subnet() {
        let plan =
            plan_egress_routing("cw0", &eth1(&["198.19.3.10/24"]), None, &keep()).expect("valid");

        assert_eq!(plan.gateway, Ipv4Addr::new(198, 19, 3, 1));
        assert_eq!(plan.address, Ipv4Addr::new(198, 19, 3, 10));
        assert_eq!(
            plan.rules,
            [PlannedRule {
                ipv6: false,
                priority: 5290,
                mark: None,
                iif: Some("cw0".to_owned()),
                table: 5290,
            }]
        );
        assert_eq!(
            plan.routes.iter().copied().collect::<Vec<_>>(),
            [
                PlannedRoute::Throw("100.64.0.0/10".parse().expect("net")),
                PlannedRoute::Throw("198.19.1.0/24".parse().expect("net")),
                PlannedRoute::Unreachable { ipv6: false },
                PlannedRoute::Gateway(ip("198.19.3.1")),
            ]
        );
        assert!(!plan.routes_ipv6());
    }

    #[test]
    fn ipv6_is_routed_only_with_a_global_address_and_a_gateway() {
        let mut interface = eth1(&["198.19.3.10/24"]);
        interface.ipv6_gateway = Some("fe80::1".parse().expect("ip"));
        let without_global = plan_egress_routing("cw0", &interface, None, &keep()).expect("valid");
        interface.ipv6_global = true;

        let plan = plan_egress_routing("cw0", &interface, None, &keep()).expect("valid");

        assert!(!without_global.routes_ipv6());
        assert!(plan.routes_ipv6());
        assert_eq!(plan.rules.len(), 2);
        assert!(plan.rules[1].ipv6 && plan.rules[1].iif.as_deref() == Some("cw0"));
        assert!(plan.routes.contains(&PlannedRoute::Gateway(ip("fe80::1"))));
        assert!(
            plan.routes
                .contains(&PlannedRoute::Unreachable { ipv6: true })
        );
        assert!(plan.routes.contains(&PlannedRoute::Throw(
            "fd7a:115c:a1e0::/48".parse().expect("net")
        )));
    }

    #[test]
    fn a_configured_gateway_picks_the_address_of_its_subnet() {
        let interface = eth1(&["198.19.3.10/24", "198.19.4.10/24"]);

        let plan = plan_egress_routing("cw0", &interface, Some(ip("198.19.4.254")), &keep())
            .expect("valid");

        assert_eq!(plan.gateway, Ipv4Addr::new(198, 19, 4, 254));
        assert_eq!(plan.address, Ipv4Addr::new(198, 19, 4, 10));
    }

    #[test]
    fn bad_gateways_and_interfaces_are_refused_with_what_was_expected() {
        let cases = [
            (eth1(&[]), None, "eth1 has no IPv4 address", false),
            (
                eth1(&["198.19.3.10/24"]),
                Some("198.19.9.1"),
                "gateway 198.19.9.1 is not a host address in eth1's subnets (198.19.3.0/24)",
                true,
            ),
            (
                eth1(&["198.19.3.10/24"]),
                Some("198.19.3.255"),
                "gateway 198.19.3.255 is not a host address",
                true,
            ),
            (
                eth1(&["198.19.3.10/24"]),
                Some("198.19.3.10"),
                "gateway 198.19.3.10 is eth1's own address",
                true,
            ),
            (
                eth1(&["198.19.3.10/24"]),
                Some("fe80::1"),
                "gateway fe80::1 is not an IPv4 address",
                true,
            ),
            (
                eth1(&["198.19.3.1/24"]),
                None,
                "subnet 198.19.3.0/24 of eth1 has no first host address other than the interface's own",
                true,
            ),
            (
                eth1(&["198.19.3.10/32"]),
                None,
                "subnet 198.19.3.10/32 of eth1 has no first host",
                true,
            ),
        ];
        for (interface, gateway, expected, about_gateway) in cases {
            let error = plan_egress_routing("cw0", &interface, gateway.map(ip), &keep())
                .expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
            assert_eq!(error.is_about_gateway(), about_gateway, "{error}");
        }
    }

    #[test]
    fn mac_addresses_parse_in_either_case_and_print_lowercase() {
        let mac: MacAddress = "0A:1b:2c:3d:4e:5F".parse().expect("valid");

        assert_eq!(mac.0, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(mac.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:60",
            "0a-1b-2c-3d-4e-5f",
            "0a:1b:2c:3d:4e:5g",
            "a:1b:2c:3d:4e:5f0",
            "+a:1b:2c:3d:4e:5f",
        ] {
            let error = bad.parse::<MacAddress>().expect_err(bad);
            assert!(
                error.to_string().contains("expected a MAC address"),
                "{error}"
            );
        }
    }

    proptest! {
        #[test]
        fn mac_addresses_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = MacAddress(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddress>(), Ok(mac));
        }

        #[test]
        fn mac_parsing_never_panics(text in "\\PC{0,24}") {
            let _ = text.parse::<MacAddress>();
        }
    }
}
