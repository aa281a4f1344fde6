//! OS adapters for the appliance's subnet-router, exit-node and device
//! roles: its own nftables table, kernel routes and addresses on the
//! tailnet interface, policy routing through an exit node, the redirect of
//! the host's DNS to that exit node, and IP forwarding.
//!
//! Everything here acts on the network namespace of the calling thread: the
//! netlink sockets are opened per call (firewall) or in [`RouteTable::new`],
//! and `/proc/sys/net` resolves against the caller's namespace.

mod exit_dns;
mod exit_routing;
mod firewall;
mod forwarding;
mod nfnetlink;
mod routes;

pub use exit_dns::{
    DnsRedirect, EXIT_DNS_TABLE, apply_dns_redirect, dns_redirect_exists, remove_dns_redirect,
};
pub use exit_routing::{
    BYPASS_MARK, BYPASS_MASK, EXIT_ROUTE_TABLE, ExitRoutingPlan, PlannedRoute, PlannedRule,
    apply_exit_routing, clear_exit_routing, plan_exit_routing,
};
pub use firewall::{
    FirewallError, FirewallPolicy, apply_firewall, firewall_exists, remove_firewall,
};
pub use forwarding::{
    Forwarding, SubnetRouter, SubnetRouterError, enable_forwarding, forwarding_enabled,
};
pub use routes::{LinkState, RouteChanges, RouteError, RouteTable, sync_routes};
