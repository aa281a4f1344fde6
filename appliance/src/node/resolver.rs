//! The node's own resolver, opt-in with `node.dns_resolver = true`: UDP
//! and TCP port 53 on [`RESOLVER_ADDR`] (100.100.100.100, the address
//! Tailscale clients use; control never assigns it), for this machine's
//! own processes. A tailnet name, or the reverse name of a tailnet
//! address, is answered from the netmap (only names of nodes this one may
//! see); a name under a split-DNS domain goes to that domain's resolvers,
//! through the mesh; anything else to the resolvers of the host's
//! `resolv.conf`. The answering is `causeway_dns::MagicDns`; the sockets
//! and forwarding are the exit node's forwarder's ([`DnsForwarder`]).
//!
//! Not built yet: pointing the OS at it (systemd-resolved or
//! `resolv.conf`). Ask it directly, e.g. `dig @100.100.100.100 NAME`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use causeway_dns::{DnsAccess, MagicDns};
use causeway_mesh::NetmapState;
use causeway_netconf::RouteTable;
use ipnet::IpNet;
use tokio::sync::watch;

use super::dns_forward::DnsForwarder;
use super::exit_dns::RESOLV_CONF;

/// Where the node resolver listens.
pub const RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// The running resolver; dropping it stops it.
pub struct NodeResolver {
    names: watch::Sender<Arc<MagicDns>>,
    access: watch::Sender<DnsAccess>,
    _forwarder: DnsForwarder,
}

impl NodeResolver {
    /// Puts [`RESOLVER_ADDR`] on the TUN device and listens there. Until
    /// the first netmap it answers nothing from the tailnet and sends
    /// every query to the host's resolvers.
    pub async fn start(routes: &RouteTable, ifindex: u32) -> anyhow::Result<Self> {
        routes
            .add_address(ifindex, IpNet::from(IpAddr::V4(RESOLVER_ADDR)))
            .await
            .with_context(|| format!("adding the resolver address {RESOLVER_ADDR}"))?;
        let (names, names_rx) = watch::channel(Arc::new(MagicDns::default()));
        let (access, access_rx) = watch::channel(local_only(&[]));
        // Not bound to the TUN device: this machine's own queries arrive
        // on the loopback path. Peers cannot reach the address (no peer's
        // routes hold it, and the packet filter only passes traffic to
        // this node's tailnet addresses), and only local sources are
        // answered.
        let forwarder = DnsForwarder::start(
            &[IpAddr::V4(RESOLVER_ADDR)],
            None,
            access_rx,
            PathBuf::from(RESOLV_CONF),
            Some(names_rx),
        )
        .context("starting the node resolver")?;
        tracing::info!(listen = %RESOLVER_ADDR, "node resolver answering MagicDNS and split DNS");
        Ok(Self {
            names,
            access,
            _forwarder: forwarder,
        })
    }

    /// Follows the netmap: the names of this node and its peers, and the
    /// split-DNS domains. A configuration that cannot be used keeps the
    /// previous table and says why.
    pub fn update(&self, netmap: &NetmapState) {
        let own: Vec<IpAddr> = netmap
            .node()
            .map(|me| me.addresses.iter().map(IpNet::addr).collect())
            .unwrap_or_default();
        let visible: BTreeSet<IpAddr> = netmap
            .peers()
            .flat_map(|peer| peer.addresses.iter().map(IpNet::addr))
            .chain(own.iter().copied())
            .collect();
        match MagicDns::new(netmap.dns(), &visible) {
            Ok(table) => {
                tracing::debug!(
                    hosts = table.hosts(),
                    skipped = table.skipped(),
                    "node resolver's names"
                );
                self.names.send_replace(Arc::new(table));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control sent a DNS configuration the node resolver cannot use; keeping the previous one");
            }
        }
        self.access.send_replace(local_only(&own));
    }
}

/// Only this machine: the resolver address itself (the source a local
/// query to it gets) and the node's own tailnet addresses.
fn local_only(own: &[IpAddr]) -> DnsAccess {
    let sources: BTreeSet<IpNet> = own
        .iter()
        .copied()
        .chain([IpAddr::V4(RESOLVER_ADDR)])
        .map(IpNet::from)
        .collect();
    DnsAccess::Sources {
        udp: sources.clone(),
        tcp: sources,
    }
}
