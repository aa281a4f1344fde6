//! The node's own resolver, opt-in with `node.dns_resolver = true`: UDP
//! and TCP port 53 on [`RESOLVER_ADDR`] (100.100.100.100, the address
//! Tailscale clients use; control never assigns it), for this machine's
//! own processes. A tailnet name, or the reverse name of a tailnet
//! address, is answered from the netmap (only names of nodes this one may
//! see); a name under a split-DNS domain goes to that domain's resolvers,
//! through the mesh; anything else to the resolvers of the host's
//! `resolv.conf` as it was before the node changed it. The answering is
//! `causeway_dns::MagicDns`; the sockets and forwarding are the exit
//! node's forwarder's ([`DnsForwarder`]). With `node.accept_dns` (the
//! default) the machine points at it while it runs: its `resolv.conf`,
//! or systemd-resolved's settings for the TUN device ([`OsDns`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use causeway_dns::{DnsAccess, MagicDns};
use causeway_mesh::NetmapState;
use causeway_netconf::RouteTable;
use ipnet::IpNet;
use tokio::sync::watch;

use super::dns_forward::{Answering, DnsForwarder};
use super::exit_dns::RESOLV_CONF;
use super::os_dns::{self, Names, OsDns, Target};
use super::status::{self, NodeStatus};
use crate::config::NodeConfig;

/// Where the node resolver listens.
pub const RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// The running resolver; dropping it stops it.
pub struct NodeResolver {
    names: watch::Sender<Arc<MagicDns>>,
    /// The file naming the machine's own resolvers (see
    /// [`Self::upstreams`]).
    upstreams: PathBuf,
    /// This node's kernel routes into the tunnel (see [`Self::routed`]).
    routed: watch::Sender<Vec<IpNet>>,
    access: watch::Sender<DnsAccess>,
    /// The machine's DNS settings, while they point here.
    os: Option<OsDns>,
    /// The names the OS was last told of.
    os_names: Names,
    status: Arc<Mutex<NodeStatus>>,
    forwarder: DnsForwarder,
}

impl NodeResolver {
    /// Puts [`RESOLVER_ADDR`] on the TUN device, points the machine at it
    /// (with `accept_dns`) and listens there. Until the first netmap it
    /// answers nothing from the tailnet and sends every query to the
    /// host's resolvers. DNS settings that cannot be taken over are left
    /// alone, and the status says why.
    pub async fn start(
        routes: &RouteTable,
        ifindex: u32,
        config: &NodeConfig,
        state_dir: &Path,
        status: Arc<Mutex<NodeStatus>>,
    ) -> anyhow::Result<Self> {
        routes
            .add_address(ifindex, IpNet::from(IpAddr::V4(RESOLVER_ADDR)))
            .await
            .with_context(|| format!("adding the resolver address {RESOLVER_ADDR}"))?;
        let resolver = IpAddr::V4(RESOLVER_ADDR);
        let (os, shown) = if config.accept_dns {
            match Target::locate() {
                Target::Unmanaged(reason) => {
                    tracing::warn!(%reason, "leaving this machine's DNS configuration alone");
                    (None, format!("not pointed here: {reason}"))
                }
                target => match OsDns::take_over(
                    state_dir,
                    &target,
                    &config.tun_name,
                    resolver,
                    &Names::default(),
                ) {
                    Ok(os) => {
                        let shown = os.describe(resolver);
                        (Some(os), shown)
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "pointing this machine at the node resolver");
                        (None, format!("not pointed here: {e:#}"))
                    }
                },
            }
        } else {
            (
                None,
                "not pointed here (node.accept_dns = false)".to_owned(),
            )
        };
        status::set(&status, |s| s.os_dns = Some(shown));
        // The resolvers this machine had: saved before the takeover, since
        // the file itself now names us.
        let upstreams = if os.as_ref().is_some_and(OsDns::saved_upstreams) {
            state_dir.join(os_dns::UPSTREAM)
        } else {
            PathBuf::from(RESOLV_CONF)
        };
        let (names, names_rx) = watch::channel(Arc::new(MagicDns::default()));
        let (routed, routed_rx) = watch::channel(Vec::new());
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
            upstreams.clone(),
            Answering::Names {
                names: names_rx,
                routed: routed_rx,
            },
        );
        let forwarder = match forwarder {
            Ok(forwarder) => forwarder,
            Err(e) => {
                if let Some(os) = os {
                    let _ = os.restore();
                }
                return Err(e).context("starting the node resolver");
            }
        };
        tracing::info!(listen = %RESOLVER_ADDR, "node resolver answering MagicDNS and split DNS");
        Ok(Self {
            names,
            upstreams,
            routed,
            access,
            os,
            os_names: Names::default(),
            status,
            forwarder,
        })
    }

    /// While an exit node is in use (with `exit_node_dns`), names that are
    /// neither the tailnet's nor a split domain's go to its forwarder
    /// (`exit_resolver`) instead of the machine's resolvers.
    pub fn follow_exit(&self, exit_resolver: Option<IpAddr>) {
        self.forwarder.send_upstream_to(exit_resolver);
    }

    /// The file that names the resolvers this machine had before the node
    /// resolver took its place: what anything on the node that resolves
    /// for others must ask (asking `resolv.conf`, which may now name the
    /// node resolver, could loop back through split DNS).
    pub fn upstreams(&self) -> PathBuf {
        self.upstreams.clone()
    }

    /// The prefixes this node now routes into the tunnel (its kernel
    /// routes, installed): an answer from an app connector waits for its
    /// addresses to be among them.
    pub fn routed(&self, routes: &BTreeSet<IpNet>) {
        let routes: Vec<IpNet> = routes.iter().copied().collect();
        self.routed.send_if_modified(|held| {
            let changed = *held != routes;
            if changed {
                held.clone_from(&routes);
            }
            changed
        });
    }

    /// Puts the machine's DNS settings back, then stops answering.
    pub fn stop(mut self) {
        if let Some(os) = self.os.take() {
            let what = os.describe(IpAddr::V4(RESOLVER_ADDR));
            match os.restore() {
                Ok(()) => tracing::info!(%what, "put back the resolver configuration"),
                Err(e) => {
                    tracing::warn!(%what, error = %format!("{e:#}"), "putting back the resolver configuration")
                }
            }
        }
        status::set(&self.status, |s| s.os_dns = None);
    }

    /// Follows the netmap: the names of this node and its peers, and the
    /// split-DNS domains. A configuration that cannot be used keeps the
    /// previous table and says why.
    pub fn update(&mut self, netmap: &NetmapState) {
        let own: Vec<IpAddr> = netmap
            .node()
            .map(|me| me.addresses.iter().map(IpNet::addr).collect())
            .unwrap_or_default();
        let visible: BTreeSet<IpAddr> = netmap
            .peers()
            .flat_map(|peer| peer.addresses.iter().map(IpNet::addr))
            .chain(own.iter().copied())
            .collect();
        let ula = own.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(causeway_wire::via6::tailnet_ula(*v6)),
            IpAddr::V4(_) => None,
        });
        match MagicDns::new(netmap.dns(), &visible) {
            Ok(table) => {
                let table = match ula {
                    Some(ula) => table.with_via6(ula),
                    None => table,
                };
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
        let dns = netmap.dns();
        let tailnet_domain = Some(dns.domain.clone()).filter(|domain| !domain.is_empty());
        let names = Names {
            // Reverse names are answered with MagicDNS only.
            reverse: match tailnet_domain {
                Some(_) => causeway_dns::reverse_zones(ula),
                None => Vec::new(),
            },
            tailnet_domain,
            split: dns.split.keys().cloned().collect(),
        };
        if names != self.os_names {
            if let Some(os) = &mut self.os {
                match os.set_names(&names) {
                    Ok(()) => {
                        let shown = os.describe(IpAddr::V4(RESOLVER_ADDR));
                        status::set(&self.status, |s| s.os_dns = Some(shown));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "telling the OS the resolver's domains");
                    }
                }
            }
            self.os_names = names;
        }
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
