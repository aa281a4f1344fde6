//! `--cloud local`'s route table: the VPC namespace's main table, whose
//! `100.64.0.0/10` route goes via the primary router's VPC-side address.
//! Nothing is decided here.

use std::net::Ipv4Addr;
use std::sync::Arc;

use causeway_netconf::{NamespaceRoute, NamespaceRoutes};
use ipnet::Ipv4Net;

use super::decide::Seen;

/// A connection to one namespace's routes.
#[derive(Debug, Clone)]
pub struct Namespace {
    routes: Arc<NamespaceRoutes>,
}

impl Namespace {
    /// Opens `/run/netns/NAME`.
    pub async fn open(name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            routes: Arc::new(NamespaceRoutes::open(name).await?),
        })
    }

    /// What the route to `destination` goes via.
    pub async fn observe(&self, destination: Ipv4Net) -> anyhow::Result<Seen> {
        Ok(match self.routes.route(destination).await? {
            NamespaceRoute::Missing => Seen::NoRoute,
            NamespaceRoute::Via(gateway) => Seen::Route(Some(gateway.to_string())),
            NamespaceRoute::Other => Seen::Route(Some("a route without a gateway".to_owned())),
        })
    }

    /// Creates or replaces `destination via gateway`.
    pub async fn point(&self, destination: Ipv4Net, gateway: Ipv4Addr) -> anyhow::Result<()> {
        Ok(self.routes.point(destination, gateway).await?)
    }
}
