//! OS adapters for the appliance's subnet-router, exit-node and device
//! roles: its own nftables table, kernel routes and addresses on the
//! tailnet interface, policy routing through an exit node (the client's)
//! and out of an exit node's egress interface, the redirect of the host's
//! DNS to that exit node, and IP forwarding.
//!
//! Everything here acts on the network namespace of the calling thread: the
//! netlink sockets are opened per call (firewall) or in [`RouteTable::new`],
//! and `/proc/sys/net` resolves against the caller's namespace. The one
//! exception is [`NamespaceRoutes`], which opens its socket in a named
//! namespace: the local cloud's stand-in for a VPC route table.

mod egress_routing;
mod exit_dns;
mod exit_routing;
mod firewall;
mod forwarding;
mod namespace_route;
mod nfnetlink;
mod policy_routing;
mod routes;

pub use egress_routing::{
    EGRESS_ROUTE_TABLE, EgressError, EgressInterface, EgressRoutingPlan, EgressSelector,
    MacAddress, MacAddressError, apply_egress_routing, clear_egress_routing, plan_egress_routing,
    read_egress_interface,
};
pub use exit_dns::{
    DnsRedirect, EXIT_DNS_TABLE, apply_dns_redirect, dns_redirect_exists, remove_dns_redirect,
};
pub use exit_routing::{
    BYPASS_MARK, BYPASS_MASK, EXIT_ROUTE_TABLE, ExitRoutingPlan, apply_exit_routing,
    clear_exit_routing, plan_exit_routing,
};
pub use firewall::{
    ExitEgress, FirewallError, FirewallPolicy, apply_firewall, firewall_exists, is_interface_name,
    remove_firewall,
};
pub use forwarding::{
    Forwarding, SubnetRouter, SubnetRouterError, enable_forwarding, forwarding_enabled,
};
pub use namespace_route::{NamespaceRoute, NamespaceRoutes};
pub use policy_routing::{FALLBACK_METRIC, PlannedRoute, PlannedRule};
pub use routes::{LinkState, RouteChanges, RouteError, RouteTable, sync_routes};
