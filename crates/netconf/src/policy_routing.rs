//! Policy routing this program owns: a routing table of its own and the
//! `ip rule`s that lead to it, described as data ([`PlannedRule`],
//! [`PlannedRoute`]) and reconciled with the kernel over rtnetlink.
//!
//! Used by the client's exit routing (`exit_routing.rs`) and the exit
//! node's egress routing (`egress_routing.rs`); each passes an
//! [`OwnedTable`] naming its table and its rules, so neither touches the
//! other's, nor anything else in the kernel.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::IpVersion;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};

use crate::routes::{RouteError, RouteTable, errno, netlink};

/// One `ip rule`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedRule {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Its priority.
    pub priority: u32,
    /// `fwmark MARK/MASK`, if it matches on the mark.
    pub mark: Option<(u32, u32)>,
    /// `iif NAME`, if it matches on the interface a packet arrived on.
    pub iif: Option<String>,
    /// The table it looks up.
    pub table: u32,
}

/// One route in a table of ours. Routes that leave by an interface use
/// the interface the plan is applied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlannedRoute {
    /// `default dev IFACE` for IPv4 (`false`) or IPv6 (`true`).
    Default {
        /// The family.
        ipv6: bool,
    },
    /// `throw PREFIX`: continue with the next rule (the main table).
    Throw(IpNet),
    /// `unreachable default metric` [`FALLBACK_METRIC`]: what a lookup
    /// finds when the interface's route is gone (the kernel deletes it
    /// when the interface goes down), so it fails there instead of going
    /// on to the main table. Sorted before [`PlannedRoute::Gateway`], so
    /// it is in place even when the gateway route cannot be added.
    Unreachable {
        /// The family.
        ipv6: bool,
    },
    /// `default via GATEWAY dev IFACE` (the family is the gateway's).
    Gateway(IpAddr),
}

/// Metric of [`PlannedRoute::Unreachable`]: above the interface's route
/// (metric 0), so it only answers when that one is gone.
pub const FALLBACK_METRIC: u32 = 1_000_000;

/// A routing table of ours and how its rules are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnedTable {
    /// The table id.
    pub id: u32,
    /// A rule at this priority matching [`crate::BYPASS_MARK`] is ours
    /// too (it looks up the main table, not ours).
    pub mark_priority: Option<u32>,
}

/// Installs `routes` in `owned`'s table (routes leaving by `ifindex`) and
/// then `rules`. Routes go first, so no packet meets a rule that points at
/// an empty table; routes not planned are removed; the rules are replaced
/// only when they differ from the plan.
pub(crate) async fn apply(
    table: &RouteTable,
    owned: OwnedTable,
    rules: &[PlannedRule],
    routes: &BTreeSet<PlannedRoute>,
    ifindex: u32,
) -> Result<(), RouteError> {
    for route in routes {
        add_route(table, owned, *route, ifindex).await?;
    }
    for (message, found) in table_routes(table, owned, ifindex).await? {
        let keep = found.is_some_and(|f| routes.contains(&f));
        if !keep {
            delete_route(table, owned, message).await?;
        }
    }
    let mut current: Vec<PlannedRule> = our_rules(table, owned)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    current.sort();
    let mut wanted = rules.to_vec();
    wanted.sort();
    if current != wanted {
        delete_rules(table, owned).await?;
        for rule in rules {
            add_rule(table, rule).await?;
        }
    }
    Ok(())
}

/// Removes every rule of `owned` and every route in its table. Rules go
/// first, so traffic takes the main table again before the routes go.
pub(crate) async fn clear(table: &RouteTable, owned: OwnedTable) -> Result<(), RouteError> {
    delete_rules(table, owned).await?;
    for (message, _) in table_routes(table, owned, 0).await? {
        delete_route(table, owned, message).await?;
    }
    Ok(())
}

async fn add_route(
    table: &RouteTable,
    owned: OwnedTable,
    route: PlannedRoute,
    ifindex: u32,
) -> Result<(), RouteError> {
    let default_of = |ipv6: bool| {
        if ipv6 {
            IpNet::V6(ipnet::Ipv6Net::default())
        } else {
            IpNet::V4(ipnet::Ipv4Net::default())
        }
    };
    let (prefix, kind) = match route {
        PlannedRoute::Default { ipv6 } => (default_of(ipv6), RouteType::Unicast),
        PlannedRoute::Gateway(gateway) => (default_of(gateway.is_ipv6()), RouteType::Unicast),
        PlannedRoute::Unreachable { ipv6 } => (default_of(ipv6), RouteType::Unreachable),
        PlannedRoute::Throw(prefix) => (prefix, RouteType::Throw),
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.addr(), prefix.prefix_len())
        .expect("an IpNet's address and prefix length always agree")
        .table_id(owned.id)
        .kind(kind);
    match route {
        PlannedRoute::Default { ipv6 } => {
            // What `ip route add default dev X` uses for a route without a gateway.
            let scope = if ipv6 {
                RouteScope::Universe
            } else {
                RouteScope::Link
            };
            builder = builder.output_interface(ifindex).scope(scope);
        }
        PlannedRoute::Gateway(gateway) => {
            builder = builder
                .gateway(gateway)
                .expect("the gateway's family is the destination's")
                .output_interface(ifindex);
        }
        PlannedRoute::Unreachable { .. } => builder = builder.priority(FALLBACK_METRIC),
        PlannedRoute::Throw(_) => {}
    }
    match table.handle().route().add(builder.build()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(netlink(format!("add {route:?} to table {}", owned.id), e)),
    }
}

async fn delete_route(
    table: &RouteTable,
    owned: OwnedTable,
    message: RouteMessage,
) -> Result<(), RouteError> {
    match table.handle().route().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
        Err(e) => Err(netlink(
            format!("remove a route from table {}", owned.id),
            e,
        )),
    }
}

/// Every route in `owned`'s table, with what it is when it is one we
/// plan with `ifindex`.
async fn table_routes(
    table: &RouteTable,
    owned: OwnedTable,
    ifindex: u32,
) -> Result<Vec<(RouteMessage, Option<PlannedRoute>)>, RouteError> {
    let mut out = Vec::new();
    for family in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .table_id(owned.id)
            .build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .table_id(owned.id)
            .build(),
    ] {
        let operation = format!("list routes in table {}", owned.id);
        let mut dump = table.handle().route().get(family).execute();
        while let Some(route) = dump
            .try_next()
            .await
            .map_err(|e| netlink(operation.clone(), e))?
        {
            if route_table(&route) == owned.id {
                let planned = planned_route(&route, ifindex);
                out.push((route, planned));
            }
        }
    }
    Ok(out)
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(id) => Some(*id),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// What a route read back from the kernel is, in plan terms; a route out
/// of another interface than `ifindex` is none of ours.
pub(crate) fn planned_route(route: &RouteMessage, ifindex: u32) -> Option<PlannedRoute> {
    let ipv6 = match route.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => {
                destination = Some(IpAddr::V4(*addr));
            }
            RouteAttribute::Destination(RouteAddress::Inet6(addr)) => {
                destination = Some(IpAddr::V6(*addr));
            }
            RouteAttribute::Gateway(RouteAddress::Inet(addr)) => gateway = Some(IpAddr::V4(*addr)),
            RouteAttribute::Gateway(RouteAddress::Inet6(addr)) => {
                gateway = Some(IpAddr::V6(*addr));
            }
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let destination = destination.unwrap_or(if ipv6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    });
    let prefix = IpNet::new(destination, route.header.destination_prefix_length).ok()?;
    let default = prefix.prefix_len() == 0;
    match route.header.kind {
        RouteType::Throw => Some(PlannedRoute::Throw(prefix)),
        RouteType::Unreachable if default => Some(PlannedRoute::Unreachable { ipv6 }),
        RouteType::Unicast if default && oif == Some(ifindex) => Some(match gateway {
            Some(gateway) => PlannedRoute::Gateway(gateway),
            None => PlannedRoute::Default { ipv6 },
        }),
        _ => None,
    }
}

async fn add_rule(table: &RouteTable, rule: &PlannedRule) -> Result<(), RouteError> {
    let mut request = table
        .handle()
        .rule()
        .add()
        .table_id(rule.table)
        .priority(rule.priority)
        .action(RuleAction::ToTable);
    if let Some((mark, mask)) = rule.mark {
        request = request.fw_mark(mark);
        request
            .message_mut()
            .attributes
            .push(RuleAttribute::FwMask(mask));
    }
    if let Some(iif) = &rule.iif {
        request = request.input_interface(iif.clone());
    }
    let result = if rule.ipv6 {
        request.v6().execute().await
    } else {
        request.v4().execute().await
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(netlink(format!("add rule {rule:?}"), e)),
    }
}

/// Rules that are `owned`'s.
async fn our_rules(
    table: &RouteTable,
    owned: OwnedTable,
) -> Result<Vec<(RuleMessage, PlannedRule)>, RouteError> {
    let mut out = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let operation = format!("list {version:?} rules");
        let mut dump = table.handle().rule().get(version).execute();
        while let Some(rule) = dump
            .try_next()
            .await
            .map_err(|e| netlink(operation.clone(), e))?
        {
            if let Some(planned) = as_our_rule(&rule, owned) {
                out.push((rule, planned));
            }
        }
    }
    Ok(out)
}

/// A rule read back from the kernel, if it is one of `owned`'s: it looks
/// up our table, or it is the mark rule at our priority.
pub(crate) fn as_our_rule(rule: &RuleMessage, owned: OwnedTable) -> Option<PlannedRule> {
    let mut table = u32::from(rule.header.table);
    let mut priority = 0;
    let mut mark = None;
    let mut mask = None;
    let mut iif = None;
    for attribute in &rule.attributes {
        match attribute {
            RuleAttribute::Table(id) => table = *id,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            RuleAttribute::Iifname(name) => iif = Some(name.clone()),
            _ => {}
        }
    }
    let ipv6 = rule.header.family == AddressFamily::Inet6;
    let mark_rule =
        owned.mark_priority == Some(priority) && mark == Some(crate::exit_routing::BYPASS_MARK);
    let ours = table == owned.id || mark_rule;
    ours.then(|| PlannedRule {
        ipv6,
        priority,
        mark: mark.map(|m| (m, mask.unwrap_or(u32::MAX))),
        iif,
        table,
    })
}

async fn delete_rules(table: &RouteTable, owned: OwnedTable) -> Result<(), RouteError> {
    for (rule, planned) in our_rules(table, owned).await? {
        match table.handle().rule().del(rule).execute().await {
            Ok(()) => {}
            Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH)) => {}
            Err(e) => return Err(netlink(format!("remove rule {planned:?}"), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNED: OwnedTable = OwnedTable {
        id: 5290,
        mark_priority: None,
    };

    fn default_route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.kind = kind;
        route.attributes = attributes;
        route.attributes.push(RouteAttribute::Table(OWNED.id));
        route
    }

    #[test]
    fn routes_read_back_are_planned_routes_only_out_of_our_interface() {
        let gateway = default_route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet("198.19.3.1".parse().expect("ip"))),
                RouteAttribute::Oif(7),
            ],
        );
        let unreachable = default_route(
            RouteType::Unreachable,
            vec![RouteAttribute::Priority(FALLBACK_METRIC)],
        );

        assert_eq!(
            planned_route(&gateway, 7),
            Some(PlannedRoute::Gateway("198.19.3.1".parse().expect("ip")))
        );
        assert_eq!(planned_route(&gateway, 8), None);
        assert_eq!(
            planned_route(&unreachable, 7),
            Some(PlannedRoute::Unreachable { ipv6: false })
        );
    }

    #[test]
    fn an_iif_rule_is_read_back_with_its_interface() {
        let mut rule = RuleMessage::default();
        rule.header.family = AddressFamily::Inet;
        rule.attributes = vec![
            RuleAttribute::Table(OWNED.id),
            RuleAttribute::Priority(5290),
            RuleAttribute::Iifname("cw0".to_owned()),
        ];
        let mut marked_elsewhere = RuleMessage::default();
        marked_elsewhere.attributes = vec![
            RuleAttribute::Table(254),
            RuleAttribute::Priority(5270),
            RuleAttribute::FwMark(crate::exit_routing::BYPASS_MARK),
        ];

        assert_eq!(
            as_our_rule(&rule, OWNED),
            Some(PlannedRule {
                ipv6: false,
                priority: 5290,
                mark: None,
                iif: Some("cw0".to_owned()),
                table: 5290
            })
        );
        assert_eq!(as_our_rule(&marked_elsewhere, OWNED), None);
    }
}
