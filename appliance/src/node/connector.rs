//! The app-connector role's shell around `causeway_dns::ConnectorRoutes`.
//!
//! - Control sends the tailnet's queries for the connector's domains here
//!   (split DNS, from the domains the node announces on its map stream).
//!   A [`DnsForwarder`] on the node's tailnet addresses, port 53, answers
//!   them for the peers whose packet filter lets them reach it, refuses
//!   names outside those domains, and learns each answer's addresses.
//! - When the learned routes change, the map loop advertises them (with
//!   the node's other routes) on the open stream; an expiry task removes
//!   routes whose time is up.
//! - A query that taught a new route waits, at most
//!   [`ROUTE_WAIT`], until control has made this node primary for it, so
//!   that the client's first packet to the address finds its route.
//! - The kernel forwards and masquerades what the data plane delivers,
//!   which is only traffic to the routes control made this node primary
//!   for (`served_prefixes`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use causeway_dns::{ConnectorRoutes, DnsAccess, Query};
use causeway_mesh::NetmapState;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::dns_forward::{Answering, DnsForwarder};
use super::status::{self, NodeStatus};
use crate::config::AppConnectorConfig;

/// Longest a DNS answer that taught a new route is held back, waiting for
/// control to make this node primary for it. Past it the answer goes
/// anyway (control may be slow or the route unapproved).
pub const ROUTE_WAIT: Duration = Duration::from_secs(2);

/// The connector in the status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConnectorStatus {
    /// The configured domains.
    pub domains: Vec<String>,
    /// Addresses learned and held now.
    pub addresses: usize,
    /// The most it holds (`max_routes`).
    pub max_routes: usize,
    /// Addresses refused because the cap was reached, since the start.
    pub over_cap: u64,
    /// Whether the DNS forwarder is answering.
    pub serving: bool,
}

/// What the forwarder needs: the route table, and where to say that the
/// routes changed.
pub struct ConnectorHook {
    routes: Mutex<ConnectorRoutes>,
    learned: watch::Sender<Vec<IpNet>>,
    /// The routes control made this node primary for.
    primary: watch::Receiver<Vec<IpNet>>,
    /// Wakes the expiry task when an earlier expiry may have appeared.
    rearm: Notify,
    /// Whether the forwarder runs.
    serving: AtomicBool,
    status: Arc<Mutex<NodeStatus>>,
}

impl ConnectorHook {
    fn table(&self) -> std::sync::MutexGuard<'_, ConnectorRoutes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the query is inside the connector's zones.
    pub fn answers(&self, query: &Query) -> bool {
        self.table().answers(query)
    }

    /// Learns the relayed answer; when it added routes, publishes them and
    /// waits (at most [`ROUTE_WAIT`]) until this node is primary for all.
    pub async fn learn(&self, answer: &[u8]) {
        let routes = {
            let mut table = self.table();
            let before = table.over_cap();
            let learned = table.learn(answer, Instant::now());
            // Once, then at every doubling: a busy connector at its cap
            // refuses on most answers, and a line for each would flood the
            // log.
            let after = table.over_cap();
            if crossed_a_power_of_two(before, after) {
                tracing::warn!(
                    refused_in_all = after,
                    max_routes = table.limits().max_routes,
                    "app connector at its route cap: new addresses are not routed"
                );
            }
            if !learned.routes_changed() {
                if learned.over_cap > 0 {
                    self.show(&table);
                }
                return;
            }
            self.show(&table);
            table.routes()
        };
        tracing::debug!(routes = routes.len(), "app connector learned new addresses");
        self.learned.send_replace(routes.clone());
        self.rearm.notify_one();
        let mut primary = self.primary.clone();
        let covered = |held: &Vec<IpNet>| {
            routes
                .iter()
                .all(|route| held.iter().any(|p| p.contains(route)))
        };
        if tokio::time::timeout(ROUTE_WAIT, primary.wait_for(covered))
            .await
            .is_err()
        {
            tracing::debug!(
                "app connector answers before control made it primary for the new routes"
            );
        }
    }

    /// Puts the table's figures in the node's status.
    fn show(&self, table: &ConnectorRoutes) {
        let current = AppConnectorStatus {
            domains: table.domains().iter().map(ToString::to_string).collect(),
            addresses: table.len(),
            max_routes: table.limits().max_routes,
            over_cap: table.over_cap(),
            serving: self.serving.load(Ordering::Relaxed),
        };
        status::set(&self.status, |s| s.app_connector = Some(current));
    }
}

/// The running role: the forwarder while the node has addresses, and the
/// expiry task.
pub struct AppConnector {
    hook: Arc<ConnectorHook>,
    zones: Vec<String>,
    routes: watch::Receiver<Vec<IpNet>>,
    access: watch::Sender<DnsAccess>,
    tun_name: String,
    upstreams: PathBuf,
    /// `app_connector.resolvers`: asked instead of `upstreams`' when set.
    resolvers: Vec<IpAddr>,
    forwarder: Option<DnsForwarder>,
    expiry: JoinHandle<()>,
}

impl Drop for AppConnector {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

impl AppConnector {
    /// Starts with no routes; serves DNS from the first netmap on.
    /// `primary` follows the routes control makes this node primary for.
    ///
    /// It resolves with `app_connector.resolvers`, else with the resolvers
    /// named in `upstreams` (the machine's `resolv.conf`, or the node
    /// resolver's copy of what it named).
    pub fn start(
        config: &AppConnectorConfig,
        tun_name: &str,
        upstreams: PathBuf,
        primary: watch::Receiver<Vec<IpNet>>,
        status: Arc<Mutex<NodeStatus>>,
    ) -> anyhow::Result<Self> {
        let table = ConnectorRoutes::new(config.patterns()?, config.limits());
        let zones = table.zones();
        let (learned, routes) = watch::channel(Vec::new());
        let hook = Arc::new(ConnectorHook {
            routes: Mutex::new(table),
            learned,
            primary,
            rearm: Notify::new(),
            serving: AtomicBool::new(false),
            status,
        });
        hook.show(&hook.table());
        let expiry = tokio::spawn(expire(Arc::clone(&hook)));
        tracing::info!(domains = ?config.domains, "app connector");
        Ok(Self {
            hook,
            zones,
            routes,
            access: watch::Sender::new(DnsAccess::default()),
            tun_name: tun_name.to_owned(),
            upstreams,
            resolvers: config.resolvers.clone(),
            forwarder: None,
            expiry,
        })
    }

    /// The zones control should send here as split DNS.
    pub fn zones(&self) -> Vec<String> {
        self.zones.clone()
    }

    /// The routes learned now (marking them seen).
    pub fn routes(&mut self) -> Vec<IpNet> {
        self.routes.borrow_and_update().clone()
    }

    /// Resolves when the learned routes change.
    pub async fn changed(&mut self) {
        if self.routes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Follows the netmap: answers on the node's addresses, for the
    /// sources its filter lets reach port 53.
    pub fn update(&mut self, netmap: &NetmapState) {
        let Some(me) = netmap.node() else {
            return;
        };
        let own: Vec<IpAddr> = me.addresses.iter().map(IpNet::addr).collect();
        self.access
            .send_replace(DnsAccess::from_filter(netmap.filter(), &own));
        if self.forwarder.is_some() {
            return;
        }
        match DnsForwarder::start(
            &own,
            Some(&self.tun_name),
            self.access.subscribe(),
            self.upstreams.clone(),
            Answering::Connector(Arc::clone(&self.hook)),
        ) {
            Ok(forwarder) => {
                if !self.resolvers.is_empty() {
                    forwarder.send_upstreams_to(Some(self.resolvers.clone()));
                }
                tracing::info!(zones = ?self.zones, "app connector answering DNS for its domains");
                self.forwarder = Some(forwarder);
                self.hook.serving.store(true, Ordering::Relaxed);
                self.hook.show(&self.hook.table());
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "starting the app connector's DNS forwarder");
            }
        }
    }
}

/// Whether a count went from `before` to a higher power of two (or past
/// one) at `after`: 0 → 1, 1 → 2, 3 → 4, 7 → 9, ...
fn crossed_a_power_of_two(before: u64, after: u64) -> bool {
    after > before && (before == 0 || after.ilog2() > before.ilog2())
}

/// Removes routes whose time is up, sleeping until the next expiry (or
/// until a new route may expire sooner).
async fn expire(hook: Arc<ConnectorHook>) {
    loop {
        let next = hook.table().next_expiry();
        let sleep = async {
            match next {
                Some(when) => tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                let routes = {
                    let mut table = hook.table();
                    let expired = table.expire(Instant::now());
                    if expired {
                        hook.show(&table);
                    }
                    expired.then(|| table.routes())
                };
                if let Some(routes) = routes {
                    tracing::debug!(routes = routes.len(), "app connector routes expired");
                    hook.learned.send_replace(routes);
                }
            }
            () = hook.rearm.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crossed_a_power_of_two;

    #[test]
    fn a_count_is_logged_at_its_first_and_at_every_doubling() {
        let logged: Vec<u64> = (1..=40)
            .filter(|&n| crossed_a_power_of_two(n - 1, n))
            .collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32]);
        assert!(crossed_a_power_of_two(7, 9));
        assert!(!crossed_a_power_of_two(9, 9));
        assert!(!crossed_a_power_of_two(9, 12));
    }
}
