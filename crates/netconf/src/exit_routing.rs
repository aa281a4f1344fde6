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

use ipnet::IpNet;
use rtnetlink::packet_route::route::RouteHeader;

use crate::policy_routing::{self, OwnedTable, PlannedRoute, PlannedRule};
use crate::routes::{RouteError, RouteTable};

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

/// The table and rules of exit routing.
const OWNED: OwnedTable = OwnedTable {
    id: EXIT_ROUTE_TABLE,
    mark_priority: Some(PRIORITY_BYPASS),
};

/// What the kernel should hold while a client routes through an exit node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRoutingPlan {
    /// Rules, in the order they are added.
    pub rules: Vec<PlannedRule>,
    /// Routes in [`EXIT_ROUTE_TABLE`].
    pub routes: BTreeSet<PlannedRoute>,
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
            iif: None,
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
        });
        rules.push(PlannedRule {
            ipv6,
            priority: PRIORITY_EXIT,
            mark: None,
            iif: None,
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
    policy_routing::apply(table, OWNED, &plan.rules, &plan.routes, tun_ifindex).await?;
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
    policy_routing::clear(table, OWNED).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_routing::as_our_rule;
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::rule::{RuleAttribute, RuleMessage};

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
                    iif: None,
                    table: main
                },
                PlannedRule {
                    ipv6: false,
                    priority: 5280,
                    mark: None,
                    iif: None,
                    table: 5280
                },
                PlannedRule {
                    ipv6: true,
                    priority: 5270,
                    mark: Some((0x43_0000, 0xff_0000)),
                    iif: None,
                    table: main
                },
                PlannedRule {
                    ipv6: true,
                    priority: 5280,
                    mark: None,
                    iif: None,
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
            as_our_rule(&ours, OWNED),
            Some(PlannedRule {
                ipv6: true,
                priority: 5280,
                mark: None,
                iif: None,
                table: 5280
            })
        );
        assert_eq!(as_our_rule(&other, OWNED), None);
    }
}
