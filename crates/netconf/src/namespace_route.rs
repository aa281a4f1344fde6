//! One route in another network namespace's main table, pointed at a
//! gateway: `--cloud local`'s stand-in for a cloud route table. The VPC of
//! a local deployment is a namespace; without SNAT its route to the
//! tailnet must lead to whichever subnet router is primary, and the
//! primary moves it, as it calls EC2 ReplaceRoute on AWS.

use std::fs::File;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::routes::{RouteError, netlink};

/// An rtnetlink connection into the namespace `/run/netns/NAME`.
#[derive(Debug)]
pub struct NamespaceRoutes {
    namespace: String,
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

/// What a namespace's main table has for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceRoute {
    /// No route to exactly that prefix.
    Missing,
    /// A unicast route through a gateway.
    Via(Ipv4Addr),
    /// A route without a gateway (on-link, blackhole, unreachable…).
    Other,
}

impl NamespaceRoutes {
    /// Opens a netlink socket inside the named namespace (`ip netns`
    /// names: `/run/netns/NAME`). Only the socket enters it: a short-lived
    /// thread joins the namespace, creates the socket and ends; the caller's
    /// threads stay where they are. Needs CAP_SYS_ADMIN.
    pub async fn open(namespace: &str) -> Result<Self, RouteError> {
        let path = format!("/run/netns/{namespace}");
        let in_namespace = |source| RouteError::Namespace {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(in_namespace)?;
        let runtime = tokio::runtime::Handle::current();
        let opened = std::thread::spawn(move || {
            // The socket registers with this runtime's reactor.
            let _entered = runtime.enter();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            rtnetlink::new_connection()
        })
        .join()
        .map_err(|_| in_namespace(std::io::Error::other("the namespace thread panicked")))?;
        let (connection, handle, _) = opened.map_err(in_namespace)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// What the main table has for exactly `prefix`.
    pub async fn route(&self, prefix: Ipv4Net) -> Result<NamespaceRoute, RouteError> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut dump = self.handle.route().get(request).execute();
        let main = u32::from(RouteHeader::RT_TABLE_MAIN);
        let operation = || format!("list IPv4 routes in namespace {}", self.namespace);
        while let Some(route) = dump.try_next().await.map_err(|e| netlink(operation(), e))? {
            if route.header.destination_prefix_length != prefix.prefix_len() {
                continue;
            }
            let mut table = u32::from(route.header.table);
            let mut destination = None;
            let mut gateway = None;
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Table(id) => table = *id,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => destination = Some(*d),
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                    _ => {}
                }
            }
            // A default route has no destination attribute.
            let destination = destination.unwrap_or(Ipv4Addr::UNSPECIFIED);
            if table != main || destination != prefix.network() {
                continue;
            }
            return Ok(match (route.header.kind, gateway) {
                (RouteType::Unicast, Some(gateway)) => NamespaceRoute::Via(gateway),
                _ => NamespaceRoute::Other,
            });
        }
        Ok(NamespaceRoute::Missing)
    }

    /// Points the main table's route to `prefix` at `gateway`, creating or
    /// replacing it (`ip route replace PREFIX via GATEWAY`).
    pub async fn point(&self, prefix: Ipv4Net, gateway: Ipv4Addr) -> Result<(), RouteError> {
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(prefix.network(), prefix.prefix_len())
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                netlink(
                    format!(
                        "route {prefix} via {gateway} in namespace {}",
                        self.namespace
                    ),
                    e,
                )
            })
    }
}

impl Drop for NamespaceRoutes {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
