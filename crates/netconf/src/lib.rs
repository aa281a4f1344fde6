//! OS adapters for the appliance's subnet-router and device roles: its own
//! nftables table, kernel routes and addresses on the tailnet interface, and
//! IP forwarding.
//!
//! Everything here acts on the network namespace of the calling thread: the
//! netlink sockets are opened per call (firewall) or in [`RouteTable::new`],
//! and `/proc/sys/net` resolves against the caller's namespace.

mod firewall;
mod forwarding;
mod nfnetlink;
mod routes;

pub use firewall::{
    FirewallError, FirewallPolicy, apply_firewall, firewall_exists, remove_firewall,
};
pub use forwarding::{
    Forwarding, SubnetRouter, SubnetRouterError, enable_forwarding, forwarding_enabled,
};
pub use routes::{LinkState, RouteChanges, RouteError, RouteTable, sync_routes};
