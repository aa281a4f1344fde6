//! Kernel routes and addresses on the tailnet interface, over rtnetlink.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Kernel routes through an interface, via rtnetlink (async, tokio).
///
/// The netlink socket is opened in [`RouteTable::new`] and so belongs to the
/// network namespace of the thread that calls it.
#[derive(Debug)]
pub struct RouteTable {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

/// Why a route, address or link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The rtnetlink socket could not be opened.
    #[error("opening the rtnetlink socket")]
    Socket(#[source] std::io::Error),
    /// A named network namespace could not be entered.
    #[error("entering network namespace {path}: {source}")]
    Namespace {
        /// `/run/netns/NAME`.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No interface has this name.
    #[error("no network interface named {name:?}")]
    NoSuchInterface {
        /// The name looked up.
        name: String,
    },
    /// A route destination had host bits set; the kernel would refuse it.
    #[error("route destination {prefix} has host bits set; expected {expected}")]
    NotANetwork {
        /// The prefix given.
        prefix: IpNet,
        /// The same prefix with the host bits cleared.
        expected: IpNet,
    },
    /// The prefix is already routed through a different interface.
    #[error("route to {prefix} already exists through another interface than index {ifindex}")]
    RoutedElsewhere {
        /// The prefix that could not be added.
        prefix: IpNet,
        /// The interface it was meant for.
        ifindex: u32,
    },
    /// The kernel refused a request, or the connection failed.
    #[error("{operation}: {source}")]
    Netlink {
        /// What we asked for, e.g. `add route 198.18.1.0/24 via ifindex 3`.
        operation: String,
        /// The positive errno, when the kernel sent one.
        errno: Option<i32>,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

/// An interface's state, as the forwarding-path health check reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up: it has carrier (`IFF_RUNNING`).
    pub running: bool,
}

/// What [`sync_routes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteChanges {
    /// Routes that were added, in ascending order.
    pub added: Vec<IpNet>,
    /// Routes that were removed, in ascending order.
    pub removed: Vec<IpNet>,
}

impl RouteTable {
    /// The rtnetlink handle, for the other adapters of this crate.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Opens an rtnetlink connection and spawns it on the current tokio runtime.
    pub async fn new() -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        let connection = tokio::spawn(connection);
        Ok(Self { handle, connection })
    }

    /// Looks up an interface's index by name.
    pub async fn interface_index(&self, name: &str) -> Result<u32, RouteError> {
        let not_found = || RouteError::NoSuchInterface {
            name: name.to_owned(),
        };
        // The kernel answers an over-long name with EINVAL; it cannot exist.
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(not_found());
        }
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(not_found()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(not_found()),
            Err(e) => Err(netlink(format!("look up interface {name:?}"), e)),
        }
    }

    /// The interface the kernel would send a packet to `destination` out
    /// of (a route lookup, like `ip route get`); `None` when it has no
    /// route (unreachable, blackhole or prohibit count as none).
    pub async fn route_to(&self, destination: IpAddr) -> Result<Option<u32>, RouteError> {
        let message = match destination {
            IpAddr::V4(v4) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(v4, 32)
                .build(),
            IpAddr::V6(v6) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(v6, 128)
                .build(),
        };
        let mut answer = self.handle.route().get(message).execute();
        let route = match answer.try_next().await {
            Ok(route) => route,
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(netlink(format!("look up the route to {destination}"), e)),
        };
        let Some(route) = route else {
            return Ok(None);
        };
        if route.header.kind == RouteType::Local {
            // One of our own addresses: the kernel answers with the
            // loopback device, but the interface that holds the address is
            // the one that leads there.
            let mut addresses = self
                .handle
                .address()
                .get()
                .set_address_filter(destination)
                .execute();
            return match addresses.try_next().await {
                Ok(found) => Ok(found.map(|a| a.header.index)),
                Err(e) => Err(netlink(
                    format!("look up the interface of {destination}"),
                    e,
                )),
            };
        }
        if route.header.kind != RouteType::Unicast {
            return Ok(None);
        }
        Ok(route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        }))
    }

    /// The state of interface `ifindex`.
    pub async fn link_state(&self, ifindex: u32) -> Result<LinkState, RouteError> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => {
                return Err(RouteError::NoSuchInterface {
                    name: format!("index {ifindex}"),
                });
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                return Err(RouteError::NoSuchInterface {
                    name: format!("index {ifindex}"),
                });
            }
            Err(e) => return Err(netlink(format!("read the state of ifindex {ifindex}"), e)),
        };
        let name = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok(LinkState {
            index: ifindex,
            name,
            up: link.header.flags.contains(LinkFlags::Up),
            running: link.header.flags.contains(LinkFlags::Running),
        })
    }

    /// Adds a route to `prefix` out of the interface; an identical existing route is success.
    pub async fn add(&self, prefix: IpNet, ifindex: u32) -> Result<(), RouteError> {
        check_network(prefix)?;
        let message = route_message(prefix, ifindex)
            .scope(match prefix {
                // What `ip route add … dev X` uses for a route without a gateway.
                IpNet::V4(_) => RouteScope::Link,
                IpNet::V6(_) => RouteScope::Universe,
            })
            .build();
        match self.handle.route().add(message).execute().await {
            Ok(()) => {
                tracing::debug!(%prefix, ifindex, "added route");
                Ok(())
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                // IPv4 refuses a second route to the same prefix and metric
                // whatever the device, so make sure the existing one is ours.
                if self.list(ifindex).await?.contains(&prefix) {
                    Ok(())
                } else {
                    Err(RouteError::RoutedElsewhere { prefix, ifindex })
                }
            }
            Err(e) => Err(netlink(
                format!("add route {prefix} via ifindex {ifindex}"),
                e,
            )),
        }
    }

    /// Removes the route to `prefix` out of the interface; a missing route is success.
    pub async fn remove(&self, prefix: IpNet, ifindex: u32) -> Result<(), RouteError> {
        check_network(prefix)?;
        // Scope "nowhere" and protocol "unspec" match any route, as `ip route del` does.
        let message = route_message(prefix, ifindex)
            .scope(RouteScope::NoWhere)
            .protocol(RouteProtocol::Unspec)
            .build();
        match self.handle.route().del(message).execute().await {
            Ok(()) => {
                tracing::debug!(%prefix, ifindex, "removed route");
                Ok(())
            }
            Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
            Err(e) => Err(netlink(
                format!("remove route {prefix} via ifindex {ifindex}"),
                e,
            )),
        }
    }

    /// Destination prefixes of the main table's IPv4 and IPv6 routes out of the interface.
    ///
    /// Link-local (`fe80::/10`) and multicast destinations are left out: the
    /// kernel manages them and they are never tailnet routes.
    pub async fn list(&self, ifindex: u32) -> Result<Vec<IpNet>, RouteError> {
        let routes = self.list_with_protocol(ifindex).await?;
        Ok(routes.into_iter().map(|(prefix, _)| prefix).collect())
    }

    /// Adds an address (with its prefix length) to the interface; an existing one is success.
    pub async fn add_address(&self, ifindex: u32, addr: IpNet) -> Result<(), RouteError> {
        let request = self
            .handle
            .address()
            .add(ifindex, addr.addr(), addr.prefix_len());
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(netlink(
                format!("add address {addr} to ifindex {ifindex}"),
                e,
            )),
        }
    }

    /// Sets the interface administratively up.
    pub async fn set_up(&self, ifindex: u32) -> Result<(), RouteError> {
        let message = LinkUnspec::new_with_index(ifindex).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| netlink(format!("set ifindex {ifindex} up"), e))
    }

    /// Routes out of the interface with the protocol that installed them, sorted and deduplicated.
    async fn list_with_protocol(
        &self,
        ifindex: u32,
    ) -> Result<Vec<(IpNet, RouteProtocol)>, RouteError> {
        let mut routes = BTreeSet::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let operation = format!("list {:?} routes", family.header.address_family);
            let mut dump = self.handle.route().get(family).execute();
            while let Some(route) = dump
                .try_next()
                .await
                .map_err(|e| netlink(operation.clone(), e))?
            {
                if let Some(prefix) = route_prefix_on(&route, ifindex) {
                    routes.insert((prefix, protocol_key(route.header.protocol)));
                }
            }
        }
        // BTreeSet cannot hold RouteProtocol (no Ord); map the key back.
        Ok(routes
            .into_iter()
            .map(|(prefix, protocol)| (prefix, RouteProtocol::from(protocol)))
            .collect())
    }
}

impl Drop for RouteTable {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Reconciles the interface's routes so that exactly `wanted` remain.
///
/// Adds what is missing and removes what is extra. Routes the kernel added
/// itself (protocol `kernel`, i.e. the connected routes of the interface's
/// own addresses) are never removed, and count as present if wanted. Every
/// prefix in `wanted` is checked before anything changes. Changes stop at the
/// first failure, leaving the earlier ones in place; calling again resumes.
pub async fn sync_routes(
    table: &RouteTable,
    ifindex: u32,
    wanted: &BTreeSet<IpNet>,
) -> Result<RouteChanges, RouteError> {
    for prefix in wanted {
        check_network(*prefix)?;
    }
    let current = table.list_with_protocol(ifindex).await?;
    let present: BTreeSet<IpNet> = current.iter().map(|(prefix, _)| *prefix).collect();
    let removable: BTreeSet<IpNet> = current
        .iter()
        .filter(|(_, protocol)| *protocol != RouteProtocol::Kernel)
        .map(|(prefix, _)| *prefix)
        .collect();

    let mut changes = RouteChanges::default();
    for prefix in wanted.difference(&present) {
        table.add(*prefix, ifindex).await?;
        changes.added.push(*prefix);
    }
    for prefix in removable.difference(wanted) {
        table.remove(*prefix, ifindex).await?;
        changes.removed.push(*prefix);
    }
    if !changes.added.is_empty() || !changes.removed.is_empty() {
        tracing::debug!(
            ifindex,
            added = changes.added.len(),
            removed = changes.removed.len(),
            "synced routes"
        );
    }
    Ok(changes)
}

/// A unicast route in the main table for `prefix` out of `ifindex`.
fn route_message(prefix: IpNet, ifindex: u32) -> RouteMessageBuilder<IpAddr> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.addr(), prefix.prefix_len())
        .expect("an IpNet's address and prefix length always agree");
    builder
        .output_interface(ifindex)
        .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
}

/// The destination of `route` if it is a main-table unicast route out of `ifindex` worth reporting.
fn route_prefix_on(route: &RouteMessage, ifindex: u32) -> Option<IpNet> {
    let mut table = u32::from(route.header.table);
    let mut oif = None;
    let mut destination = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => {
                destination = Some(IpAddr::V4(*addr));
            }
            RouteAttribute::Destination(RouteAddress::Inet6(addr)) => {
                destination = Some(IpAddr::V6(*addr));
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || oif != Some(ifindex)
        || route.header.kind != RouteType::Unicast
    {
        return None;
    }
    // No destination attribute means the default route of that family.
    let destination = destination.or(match route.header.address_family {
        AddressFamily::Inet => Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        AddressFamily::Inet6 => Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
        _ => None,
    })?;
    let prefix = IpNet::new(destination, route.header.destination_prefix_length).ok()?;
    let excluded = match prefix {
        IpNet::V4(net) => net.addr().is_multicast(),
        IpNet::V6(net) => net.addr().is_multicast() || net.addr().is_unicast_link_local(),
    };
    (!excluded).then_some(prefix)
}

/// A sortable stand-in for [`RouteProtocol`].
fn protocol_key(protocol: RouteProtocol) -> u8 {
    u8::from(protocol)
}

fn check_network(prefix: IpNet) -> Result<(), RouteError> {
    let expected = prefix.trunc();
    if expected != prefix {
        return Err(RouteError::NotANetwork { prefix, expected });
    }
    Ok(())
}

/// The positive errno of a kernel error reply.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

pub(crate) fn netlink(operation: String, source: rtnetlink::Error) -> RouteError {
    RouteError::Netlink {
        operation,
        errno: errno(&source),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, oif: u32, table: u8, protocol: RouteProtocol) -> RouteMessage {
        let net: IpNet = prefix.parse().expect("test prefix");
        let mut message = route_message(net, oif).protocol(protocol).build();
        message.header.table = table;
        message
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Table(_)));
        message
    }

    #[test]
    fn main_table_routes_on_the_interface_are_reported() {
        let message = route(
            "198.19.1.0/24",
            3,
            RouteHeader::RT_TABLE_MAIN,
            RouteProtocol::Static,
        );

        assert_eq!(
            route_prefix_on(&message, 3),
            Some("198.19.1.0/24".parse().expect("net"))
        );
        assert_eq!(route_prefix_on(&message, 4), None);
    }

    #[test]
    fn other_tables_link_local_and_multicast_are_left_out() {
        let local = route("198.19.1.0/24", 3, 255, RouteProtocol::Kernel);
        let link_local = route(
            "fe80::/64",
            3,
            RouteHeader::RT_TABLE_MAIN,
            RouteProtocol::Kernel,
        );
        let multicast = route(
            "ff00::/8",
            3,
            RouteHeader::RT_TABLE_MAIN,
            RouteProtocol::Kernel,
        );

        assert_eq!(route_prefix_on(&local, 3), None);
        assert_eq!(route_prefix_on(&link_local, 3), None);
        assert_eq!(route_prefix_on(&multicast, 3), None);
    }

    #[test]
    fn host_bits_are_rejected_with_the_canonical_prefix() {
        let prefix: IpNet = "198.19.1.7/24".parse().expect("net");

        let error = check_network(prefix).expect_err("host bits set");

        assert_eq!(
            error.to_string(),
            "route destination 198.19.1.7/24 has host bits set; expected 198.19.1.0/24"
        );
    }
}
