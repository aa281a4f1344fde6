//! DNS through the exit node, both ends, as in Tailscale.
//!
//! - On an exit node (one control approved exit routes for), a
//!   [`DnsForwarder`] answers on the node's tailnet addresses, port 53, for
//!   the peers whose packet filter lets them use it (control adds that
//!   rule for whoever may use the exit node), forwarding to the resolvers
//!   of the node's own `/etc/resolv.conf`.
//! - On a client routing through an exit node, the host's DNS queries are
//!   redirected to that exit node's forwarder (`causeway_netconf::DnsRedirect`,
//!   an nftables table of its own), unless `node.exit_node_dns = false`.
//!   Without an exit node nothing changes; the redirect is removed on stop
//!   and at start (a crash leaves it behind).

use std::net::IpAddr;
use std::path::PathBuf;

use causeway_dns::DnsAccess;
use causeway_mesh::NetmapState;
use causeway_netconf::DnsRedirect;
use causeway_wire::Node;
use ipnet::IpNet;
use tokio::sync::watch;

use super::dns_forward::{Answering, DnsForwarder};
use crate::config::NodeConfig;

/// Where the host's resolvers are named. Under `ip netns exec NAME` this is
/// the namespace's own `/etc/netns/NAME/resolv.conf`, mounted over it.
pub(super) const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Owns the exit node's forwarder and the client's redirect.
pub struct ExitDnsDriver {
    redirect_enabled: bool,
    tun_name: String,
    /// The redirect installed now, if any.
    redirect: Option<DnsRedirect>,
    access: watch::Sender<DnsAccess>,
    forwarder: Option<DnsForwarder>,
    /// The exit node's resolver while this host's DNS goes to it.
    exit_resolver: Option<IpAddr>,
}

impl ExitDnsDriver {
    /// Removes a redirect an earlier run left behind; serves and redirects
    /// nothing until [`ExitDnsDriver::update`] says so.
    pub fn start(config: &NodeConfig) -> Self {
        if let Err(e) = causeway_netconf::remove_dns_redirect() {
            tracing::warn!(error = %format!("{e:#}"), "removing a DNS redirect left by an earlier run");
        }
        Self {
            redirect_enabled: config.exit_node_dns,
            tun_name: config.tun_name.clone(),
            redirect: None,
            access: watch::Sender::new(DnsAccess::default()),
            forwarder: None,
            exit_resolver: None,
        }
    }

    /// Follows the netmap: serves while this node is an approved exit node,
    /// with the access its filter gives; redirects the host's DNS to
    /// `exit_peer` while the client routes through it.
    pub fn update(&mut self, netmap: &NetmapState, exit_peer: Option<&Node>) {
        let Some(me) = netmap.node() else {
            return;
        };
        // The node resolver's upstream: the exit node's forwarder while
        // this host's DNS goes to it.
        self.exit_resolver = exit_peer
            .filter(|_| self.redirect_enabled)
            .and_then(|peer| peer.addresses.iter().map(IpNet::addr).find(IpAddr::is_ipv4));
        let own: Vec<IpAddr> = me.addresses.iter().map(IpNet::addr).collect();
        self.access
            .send_replace(DnsAccess::from_filter(netmap.filter(), &own));
        self.serve(!me.exit_routes.is_empty(), &own);
        let wanted = exit_peer
            .filter(|_| self.redirect_enabled)
            .map(|peer| redirect_to(&self.tun_name, me, peer));
        self.redirect(wanted);
    }

    /// The exit node's tailnet address while this host's DNS goes to its
    /// forwarder (an exit node in use and `exit_node_dns`).
    pub fn exit_resolver(&self) -> Option<IpAddr> {
        self.exit_resolver
    }

    /// Stops the forwarder and removes the redirect.
    pub fn stop(mut self) {
        self.forwarder = None;
        self.redirect(None);
    }

    fn serve(&mut self, exit_node: bool, own: &[IpAddr]) {
        match (exit_node, self.forwarder.is_some()) {
            (true, false) => {
                match DnsForwarder::start(
                    own,
                    Some(&self.tun_name),
                    self.access.subscribe(),
                    PathBuf::from(RESOLV_CONF),
                    Answering::Upstream,
                ) {
                    Ok(forwarder) => {
                        tracing::info!("answering DNS for the clients of this exit node");
                        self.forwarder = Some(forwarder);
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "starting the exit node's DNS forwarder");
                    }
                }
            }
            (false, true) => {
                self.forwarder = None;
                tracing::info!("no longer an exit node: DNS forwarder stopped");
            }
            (true, true) | (false, false) => {}
        }
    }

    fn redirect(&mut self, wanted: Option<DnsRedirect>) {
        if wanted == self.redirect {
            return;
        }
        let result = match &wanted {
            Some(redirect) => causeway_netconf::apply_dns_redirect(redirect),
            None => causeway_netconf::remove_dns_redirect(),
        };
        match result {
            Ok(()) => {
                if let Some(r) = &wanted {
                    tracing::info!(exit_v4 = ?r.exit_v4, exit_v6 = ?r.exit_v6, "DNS goes to the exit node");
                } else {
                    tracing::info!("DNS takes the host's own resolvers");
                }
                self.redirect = wanted;
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "changing the DNS redirect"),
        }
    }
}

/// The redirect from this node (`me`) to `exit`'s tailnet addresses. IPv6
/// only when both are in the tailnet's /48.
fn redirect_to(tun_name: &str, me: &Node, exit: &Node) -> DnsRedirect {
    let tailnet_v6 = me.addresses.iter().find_map(|a| match a {
        IpNet::V6(v6) => ipnet::Ipv6Net::new(v6.addr(), 48).ok().map(|n| n.trunc()),
        IpNet::V4(_) => None,
    });
    let tailnet_v4: ipnet::Ipv4Net = super::TAILNET_V4
        .parse()
        .expect("TAILNET_V4 is a valid prefix");
    DnsRedirect {
        tun_interface: tun_name.to_owned(),
        tailnet_v4,
        tailnet_v6,
        exit_v4: exit.addresses.iter().find_map(|a| match a {
            IpNet::V4(v4) if tailnet_v4.contains(&v4.addr()) => Some(v4.addr()),
            IpNet::V4(_) | IpNet::V6(_) => None,
        }),
        exit_v6: exit.addresses.iter().find_map(|a| match a {
            IpNet::V6(v6) if tailnet_v6.is_some_and(|n| n.contains(&v6.addr())) => Some(v6.addr()),
            IpNet::V4(_) | IpNet::V6(_) => None,
        }),
    }
}
