//! Policy routing for a client that sends all its traffic through an exit
//! node: a routing table of its own with a default route into the TUN
//! device, and `ip rule`s that send everything there except the node's own
//! sockets (WireGuard and control), which carry [`BYPASS_MARK`].
//!
//! Per family, with `T` = [`EXIT_ROUTE_TABLE`]:
//!
//! ```text
//! 5270: from all fwmark 0x430000/0xff0000 lookup main
//! 5280: from all lookup T
//! table T: default dev cw0; throw <each bypassed prefix>
//! ```
//!
//! A `throw` route ends the lookup in `T` and sends the kernel on to the
//! next rule (the main table), so link-local addresses and, with LAN
//! access, the directly connected subnets keep their own routes. Local
//! addresses are found first by the `local` table's rule (priority 0).
//! The rules and the table carry nothing else, so they are removed whole
//! ([`clear_exit_routing`]), also at the next start after a crash.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::IpVersion;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};

use crate::routes::{RouteError, RouteTable, errno, netlink};

/// The routing table that holds the exit node's default route.
pub const EXIT_ROUTE_TABLE: u32 = 5280;
/// The firewall mark of the node's own sockets (`SO_MARK`): their traffic
/// takes the main table, never the tunnel.
pub const BYPASS_MARK: u32 = 0x0043_0000;
/// The bits of the mark this program owns.
pub const BYPASS_MASK: u32 = 0x00ff_0000;
/// Priority of the rule that sends marked packets to the main table.
const PRIORITY_BYPASS: u32 = 5270;
/// Priority of the rule that sends everything else to [`EXIT_ROUTE_TABLE`].
const PRIORITY_EXIT: u32 = 5280;

/// What the kernel should hold while a client routes through an exit node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRoutingPlan {
    /// Rules, in the order they are added.
    pub rules: Vec<PlannedRule>,
    /// Routes in [`EXIT_ROUTE_TABLE`].
    pub routes: BTreeSet<PlannedRoute>,
}

/// One `ip rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedRule {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Its priority.
    pub priority: u32,
    /// `fwmark MARK/MASK`, if it matches on the mark.
    pub mark: Option<(u32, u32)>,
    /// The table it looks up.
    pub table: u32,
}

/// One route in [`EXIT_ROUTE_TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlannedRoute {
    /// `default dev TUN` for IPv4 (`false`) or IPv6 (`true`).
    Default {
        /// The family.
        ipv6: bool,
    },
    /// `throw PREFIX`: continue with the main table.
    Throw(IpNet),
}

/// Plans the rules and routes that send everything into the TUN device
/// but `bypass` (prefixes that keep the main table's routes).
pub fn plan_exit_routing(bypass: &BTreeSet<IpNet>) -> ExitRoutingPlan {
    let mut rules = Vec::new();
    for ipv6 in [false, true] {
        rules.push(PlannedRule {
            ipv6,
            priority: PRIORITY_BYPASS,
            mark: Some((BYPASS_MARK, BYPASS_MASK)),
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        });
        rules.push(PlannedRule {
            ipv6,
            priority: PRIORITY_EXIT,
            mark: None,
            table: EXIT_ROUTE_TABLE,
        });
    }
    let mut routes: BTreeSet<PlannedRoute> = [false, true]
        .into_iter()
        .map(|ipv6| PlannedRoute::Default { ipv6 })
        .collect();
    routes.extend(bypass.iter().map(|p| PlannedRoute::Throw(p.trunc())));
    ExitRoutingPlan { rules, routes }
}

/// Installs `plan` with the default routes out of `tun_ifindex`. Routes
/// are put in place before the rules, so no packet meets a rule that points
/// at an empty table; routes not in the plan are removed; the rules are
/// replaced only when they differ from the plan.
pub async fn apply_exit_routing(
    table: &RouteTable,
    plan: &ExitRoutingPlan,
    tun_ifindex: u32,
) -> Result<(), RouteError> {
    for route in &plan.routes {
        add_route(table, *route, tun_ifindex).await?;
    }
    for (message, found) in table_routes(table).await? {
        let keep = found.is_some_and(|f| plan.routes.contains(&f));
        if !keep {
            delete_route(table, message).await?;
        }
    }
    let mut current: Vec<PlannedRule> = our_rules(table)
        .await?
        .iter()
        .filter_map(|(_, r)| *r)
        .collect();
    current.sort();
    let mut wanted = plan.rules.clone();
    wanted.sort();
    if current != wanted {
        delete_rules(table).await?;
        for rule in &plan.rules {
            add_rule(table, *rule).await?;
        }
    }
    tracing::debug!(
        routes = plan.routes.len(),
        rules = plan.rules.len(),
        "exit routing applied"
    );
    Ok(())
}

/// Removes every rule that looks up [`EXIT_ROUTE_TABLE`] or carries
/// [`BYPASS_MARK`] at our priorities, and every route in the table. Rules
/// go first, so traffic takes the main table again before the routes go.
pub async fn clear_exit_routing(table: &RouteTable) -> Result<(), RouteError> {
    delete_rules(table).await?;
    for (message, _) in table_routes(table).await? {
        delete_route(table, message).await?;
    }
    Ok(())
}

async fn add_route(
    table: &RouteTable,
    route: PlannedRoute,
    tun_ifindex: u32,
) -> Result<(), RouteError> {
    let (prefix, kind) = match route {
        PlannedRoute::Default { ipv6: false } => {
            (IpNet::V4(ipnet::Ipv4Net::default()), RouteType::Unicast)
        }
        PlannedRoute::Default { ipv6: true } => {
            (IpNet::V6(ipnet::Ipv6Net::default()), RouteType::Unicast)
        }
        PlannedRoute::Throw(prefix) => (prefix, RouteType::Throw),
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.addr(), prefix.prefix_len())
        .expect("an IpNet's address and prefix length always agree")
        .table_id(EXIT_ROUTE_TABLE)
        .kind(kind);
    if kind == RouteType::Unicast {
        builder = builder.output_interface(tun_ifindex).scope(match prefix {
            IpNet::V4(_) => RouteScope::Link,
            IpNet::V6(_) => RouteScope::Universe,
        });
    }
    match table.handle().route().add(builder.build()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(netlink(
            format!("add {route:?} to table {EXIT_ROUTE_TABLE}"),
            e,
        )),
    }
}

async fn delete_route(table: &RouteTable, message: RouteMessage) -> Result<(), RouteError> {
    match table.handle().route().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
        Err(e) => Err(netlink(
            format!("remove a route from table {EXIT_ROUTE_TABLE}"),
            e,
        )),
    }
}

/// Every route in [`EXIT_ROUTE_TABLE`], with what it is when it is one we
/// plan.
async fn table_routes(
    table: &RouteTable,
) -> Result<Vec<(RouteMessage, Option<PlannedRoute>)>, RouteError> {
    let mut out = Vec::new();
    for family in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .table_id(EXIT_ROUTE_TABLE)
            .build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .table_id(EXIT_ROUTE_TABLE)
            .build(),
    ] {
        let operation = format!("list routes in table {EXIT_ROUTE_TABLE}");
        let mut dump = table.handle().route().get(family).execute();
        while let Some(route) = dump
            .try_next()
            .await
            .map_err(|e| netlink(operation.clone(), e))?
        {
            if route_table(&route) == EXIT_ROUTE_TABLE {
                let planned = planned_route(&route);
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

/// What a route read back from the kernel is, in plan terms.
fn planned_route(route: &RouteMessage) -> Option<PlannedRoute> {
    let ipv6 = match route.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let destination = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(addr)) => Some(IpAddr::V4(*addr)),
        RouteAttribute::Destination(RouteAddress::Inet6(addr)) => Some(IpAddr::V6(*addr)),
        _ => None,
    });
    let destination = destination.unwrap_or(if ipv6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    });
    let prefix = IpNet::new(destination, route.header.destination_prefix_length).ok()?;
    match route.header.kind {
        RouteType::Throw => Some(PlannedRoute::Throw(prefix)),
        RouteType::Unicast if prefix.prefix_len() == 0 => Some(PlannedRoute::Default { ipv6 }),
        _ => None,
    }
}

async fn add_rule(table: &RouteTable, rule: PlannedRule) -> Result<(), RouteError> {
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

/// Rules that are ours: at our priorities, looking up our table or the
/// main table for our mark.
async fn our_rules(
    table: &RouteTable,
) -> Result<Vec<(RuleMessage, Option<PlannedRule>)>, RouteError> {
    let mut out = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let operation = format!("list {version:?} rules");
        let mut dump = table.handle().rule().get(version).execute();
        while let Some(rule) = dump
            .try_next()
            .await
            .map_err(|e| netlink(operation.clone(), e))?
        {
            if let Some(planned) = as_our_rule(&rule) {
                out.push((rule, Some(planned)));
            }
        }
    }
    Ok(out)
}

/// A rule read back from the kernel, if it is one of ours.
fn as_our_rule(rule: &RuleMessage) -> Option<PlannedRule> {
    let mut table = u32::from(rule.header.table);
    let mut priority = 0;
    let mut mark = None;
    let mut mask = None;
    for attribute in &rule.attributes {
        match attribute {
            RuleAttribute::Table(id) => table = *id,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            _ => {}
        }
    }
    let ipv6 = rule.header.family == AddressFamily::Inet6;
    let ours =
        table == EXIT_ROUTE_TABLE || (priority == PRIORITY_BYPASS && mark == Some(BYPASS_MARK));
    ours.then(|| PlannedRule {
        ipv6,
        priority,
        mark: mark.map(|m| (m, mask.unwrap_or(u32::MAX))),
        table,
    })
}

async fn delete_rules(table: &RouteTable) -> Result<(), RouteError> {
    for (rule, planned) in our_rules(table).await? {
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

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    #[test]
    fn the_plan_sends_everything_but_marked_and_bypassed_traffic_to_the_tunnel() {
        let bypass = BTreeSet::from([
            net("169.254.0.0/16"),
            net("198.18.0.0/24"),
            net("fe80::/10"),
        ]);

        let plan = plan_exit_routing(&bypass);

        let main = u32::from(RouteHeader::RT_TABLE_MAIN);
        assert_eq!(
            plan.rules,
            [
                PlannedRule {
                    ipv6: false,
                    priority: 5270,
                    mark: Some((0x43_0000, 0xff_0000)),
                    table: main
                },
                PlannedRule {
                    ipv6: false,
                    priority: 5280,
                    mark: None,
                    table: 5280
                },
                PlannedRule {
                    ipv6: true,
                    priority: 5270,
                    mark: Some((0x43_0000, 0xff_0000)),
                    table: main
                },
                PlannedRule {
                    ipv6: true,
                    priority: 5280,
                    mark: None,
                    table: 5280
                },
            ]
        );
        assert_eq!(
            plan.routes.into_iter().collect::<Vec<_>>(),
            [
                PlannedRoute::Default { ipv6: false },
                PlannedRoute::Default { ipv6: true },
                PlannedRoute::Throw(net("169.254.0.0/16")),
                PlannedRoute::Throw(net("198.18.0.0/24")),
                PlannedRoute::Throw(net("fe80::/10")),
            ]
        );
    }

    #[test]
    fn rules_read_back_are_recognised_as_ours_only_by_table_or_mark() {
        let mut ours = RuleMessage::default();
        ours.header.family = AddressFamily::Inet6;
        ours.attributes = vec![
            RuleAttribute::Table(EXIT_ROUTE_TABLE),
            RuleAttribute::Priority(PRIORITY_EXIT),
        ];
        let mut other = RuleMessage::default();
        other.header.family = AddressFamily::Inet;
        other.header.table = RouteHeader::RT_TABLE_MAIN;
        other.attributes = vec![RuleAttribute::Priority(32766)];

        assert_eq!(
            as_our_rule(&ours),
            Some(PlannedRule {
                ipv6: true,
                priority: 5280,
                mark: None,
                table: 5280
            })
        );
        assert_eq!(as_our_rule(&other), None);
    }
}
