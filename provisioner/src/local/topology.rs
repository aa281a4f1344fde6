//! The address plan of a local deployment: which namespaces exist, which
//! veth pairs join them, and which addresses they carry. Pure data, so the
//! plan can be printed and tested without touching the system.
//!
//! With `--ha` a second subnet router serves the same VPC subnet. Where
//! each router lives, for fault injection from outside (deployment NAME,
//! state directory `/run/causeway/local/NAME` unless `--state-dir`):
//!
//! | router    | namespace       | VPC side              | uplink (public side)         | public address | pid in `state.json`         |
//! |-----------|-----------------|-----------------------|------------------------------|----------------|-----------------------------|
//! | `router`  | `cw-NAME-rtr`   | `vpc0` 198.19.1.1/24  | `eth0` 198.19.0.3/24 via .0.1 | 198.18.0.3     | `.processes.router.pid`     |
//! | `router2` | `cw-NAME-rtr2`  | `vpc0` 198.19.1.2/24  | `eth0` 198.19.2.3/24 via .2.1 | 198.18.0.5     | `.processes.router2.pid`    |
//!
//! So `kill -9 "$(jq .processes.router.pid STATE/state.json)"` (or
//! `kill -STOP`) stops a router's process, `ip -n cw-NAME-rtr link set vpc0
//! down` cuts it from the VPC while it stays online, and `ip -n cw-NAME-rtr
//! link set eth0 down` cuts its uplink (control and every peer). The pid
//! is the appliance's own (`ip netns exec` execs it in place); `ip netns
//! pids cw-NAME-rtr` lists it too. Each router's public address is on no
//! interface of the router: the internet gateway (`cw-NAME-igw`) holds it
//! on its `eth0` and translates it 1:1 to the router's uplink address, as
//! a cloud's internet gateway does. The second router's uplink is in its
//! own public subnet (198.19.2.0/24, on the gateway's `lan1`), as a second
//! availability zone's would be. With `--ha` the VPC host's side is a
//! bridge (`br-vpc` in `cw-NAME-vpc`, holding 198.19.1.10/24) with a port
//! per router (`v-rtr`, `v-rtr2`); without it, a single veth (`eth0`).
//!
//! With `--role exit-node` the deployment adds an exit node and an
//! "internet" host to reach through it:
//!
//! | node / host | namespace      | interfaces                                    | public address | pid in `state.json`   |
//! |-------------|----------------|-----------------------------------------------|----------------|-----------------------|
//! | `exit`      | `cw-NAME-exit` | `eth0` 198.19.3.3/24 via .3.1 (gateway `lan2`) | 198.18.0.6     | `.processes.exit.pid` |
//! | echo server | `cw-NAME-web`  | `eth0` 198.18.0.10/24 (port `p-web` of `br0`)  | 198.18.0.10    | `.processes.echo.pid` |
//!
//! The exit node is placed like a router: its public address is held by
//! the internet gateway and translated 1:1 to its uplink address, in its
//! own public subnet (198.19.3.0/24). The echo server (port 80) answers
//! every request with the address it came from, so a request the client
//! sends through the exit node is seen from 198.18.0.6, and one that went
//! out directly would be seen from the client's own 198.18.0.4. The
//! client is configured with `exit_node = "exit"`.
//!
//! With `--role via6` two sites use the same VPC range 198.19.1.0/24 and
//! are told apart by a 4via6 site ID (see docs/dns.md, "4via6"):
//!
//! | site | router (namespace)        | its VPC address | VPC host (namespace)          | serves on port 80                   |
//! |------|---------------------------|-----------------|-------------------------------|-------------------------------------|
//! | 1    | `router` (`cw-NAME-rtr`)  | 198.19.1.1      | 198.19.1.10 (`cw-NAME-vpc`)   | the VPC web page (and db, resolver) |
//! | 2    | `router2` (`cw-NAME-rtr2`) | 198.19.1.2     | 198.19.1.10 (`cw-NAME-vpc2`)  | the echo server: the caller's address |
//!
//! Site 2's router sits where `--ha`'s second router does (public address
//! 198.18.0.5, uplink 198.19.2.3), but in front of its own VPC: a plain
//! veth to `cw-NAME-vpc2`, no bridge. Neither router advertises
//! 198.19.1.0/24 itself, only its site's 4via6 prefix; the client reaches
//! 198.19.1.10 at site N as `198-19-1-10-via-N.TAILNET-DOMAIN`.

use serde::Serialize;

use crate::name::DeploymentName;

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The bridge in the "internet" namespace.
pub const BRIDGE: &str = "br0";
/// The bridge's own address: the "internet" itself.
pub const BRIDGE_ADDR: &str = "198.18.0.1/24";
/// With `--ha`: the VPC subnet's bridge, in the VPC host's namespace.
pub const VPC_BRIDGE: &str = "br-vpc";
/// Control's public address.
pub const CONTROL_ADDR: &str = "198.18.0.2";
/// The subnet router's public address. Like an EC2 instance's public IPv4,
/// it is on no interface of the router: the internet gateway holds it and
/// translates it 1:1 to [`ROUTER_UPLINK_ADDR`].
pub const ROUTER_PUBLIC_ADDR: &str = "198.18.0.3";
/// The subnet router's address in the VPC's public subnet (its uplink).
pub const ROUTER_UPLINK_ADDR: &str = "198.19.0.3";
/// The internet gateway's address in the VPC's public subnet: the router's
/// default gateway.
pub const GATEWAY_ADDR: &str = "198.19.0.1";
/// The client device's public address.
pub const CLIENT_ADDR: &str = "198.18.0.4";
/// The subnet router's address inside the VPC.
pub const ROUTER_VPC_ADDR: &str = "198.19.1.1";
/// With `--ha`: the second router's public address (on the gateway).
pub const ROUTER2_PUBLIC_ADDR: &str = "198.18.0.5";
/// With `--ha`: the second router's uplink address, in its own public subnet.
pub const ROUTER2_UPLINK_ADDR: &str = "198.19.2.3";
/// With `--ha`: the gateway's address in the second public subnet.
pub const GATEWAY2_ADDR: &str = "198.19.2.1";
/// With `--ha`: the second router's address inside the VPC.
pub const ROUTER2_VPC_ADDR: &str = "198.19.1.2";
/// With `--role exit-node`: the exit node's public address (on the
/// gateway, translated 1:1 to [`EXIT_UPLINK_ADDR`]); what the internet sees.
pub const EXIT_PUBLIC_ADDR: &str = "198.18.0.6";
/// With `--role exit-node`: the exit node's uplink address, in its own
/// public subnet.
pub const EXIT_UPLINK_ADDR: &str = "198.19.3.3";
/// With `--role exit-node`: the gateway's address in the exit node's subnet.
pub const GATEWAY3_ADDR: &str = "198.19.3.1";
/// With `--role exit-node`: the "internet" host running the echo server.
pub const WEB_ADDR: &str = "198.18.0.10";
/// With `--role via6`: the 4via6 site IDs, each served by one router.
pub const VIA6_SITE_IDS: [u16; 2] = [1, 2];
/// Every router's interface on the VPC subnet.
pub const ROUTER_VPC_IFNAME: &str = "vpc0";
/// Every router's uplink interface (towards the internet gateway).
pub const ROUTER_UPLINK_IFNAME: &str = "eth0";
/// The private VPC host running PostgreSQL and the HTTP server.
pub const VPC_HOST_ADDR: &str = "198.19.1.10";
/// The VPC subnet the router advertises.
pub const VPC_SUBNET: &str = "198.19.1.0/24";
/// The wider private range PostgreSQL accepts clients from.
pub const VPC_RANGE: &str = "198.19.0.0/16";
/// Control's node-facing port.
pub const CONTROL_PORT: u16 = 8080;
/// Control's admin API port (loopback of the control namespace).
pub const ADMIN_PORT: u16 = 8081;
/// The nodes' WireGuard UDP port.
pub const WG_PORT: u16 = 41641;
/// PostgreSQL's port.
pub const PG_PORT: u16 = 5432;
/// The HTTP server's port.
pub const HTTP_PORT: u16 = 80;
/// The VPC's private DNS zone, served by the VPC's resolver on
/// [`VPC_HOST_ADDR`] and registered in control as split DNS.
pub const VPC_DNS_ZONE: &str = "corp.internal";
/// The database's name in [`VPC_DNS_ZONE`]; it names [`VPC_HOST_ADDR`].
pub const VPC_DB_NAME: &str = "db.corp.internal";
/// With `--role app-connector`: the domain the connector serves
/// (`*.apps.example`), whose resolver and apps are on the internet host.
pub const APPS_ZONE: &str = "apps.example";
/// The apps: names under [`APPS_ZONE`] and their addresses, held by the
/// internet host on its loopback and reached from the tailnet only through
/// the app connector.
pub const APPS: [(&str, &str); 2] = [("app1", "198.18.100.11"), ("app2", "198.18.100.12")];
/// The apps' range: the internet gateway routes it to the internet host.
pub const APPS_RANGE: &str = "198.18.100.0/24";
/// The apps' authoritative resolver (dnsmasq on the internet host).
pub const APPS_RESOLVER: &str = "198.18.100.53";

/// One of the namespaces of a local deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    /// The "internet": a bridge every public veth plugs into.
    Pub,
    /// The control server.
    Ctl,
    /// The VPC's internet gateway: a 1:1 NAT between each router's public
    /// address and its uplink address, as a cloud's gateway does.
    Igw,
    /// The subnet router.
    Rtr,
    /// With `--ha`: the second subnet router.
    Rtr2,
    /// The private VPC host (no route to the tailnet, no default route).
    Vpc,
    /// With `--role via6`: site 2's VPC host, at the same address as
    /// site 1's (198.19.1.10), behind the second router.
    Vpc2,
    /// With `--role exit-node`: the exit node; with `--role app-connector`:
    /// the app connector.
    Exit,
    /// With `--role exit-node` or `app-connector`: a host on the internet
    /// running the echo server (and, for a connector, the apps' resolver).
    Web,
    /// A client device.
    Cli,
}

impl Site {
    /// Every site of a deployment with one router, in creation order.
    pub const ALL: [Site; 6] = [
        Site::Pub,
        Site::Ctl,
        Site::Igw,
        Site::Rtr,
        Site::Vpc,
        Site::Cli,
    ];

    /// Every site of an HA deployment (`--ha`), in creation order.
    pub const ALL_HA: [Site; 7] = [
        Site::Pub,
        Site::Ctl,
        Site::Igw,
        Site::Rtr,
        Site::Rtr2,
        Site::Vpc,
        Site::Cli,
    ];

    /// Every site of an exit-node deployment (`--role exit-node`), in
    /// creation order.
    pub const ALL_EXIT: [Site; 8] = [
        Site::Pub,
        Site::Ctl,
        Site::Igw,
        Site::Rtr,
        Site::Vpc,
        Site::Exit,
        Site::Web,
        Site::Cli,
    ];

    /// Every site of a 4via6 deployment (`--role via6`), in creation
    /// order.
    pub const ALL_VIA6: [Site; 8] = [
        Site::Pub,
        Site::Ctl,
        Site::Igw,
        Site::Rtr,
        Site::Rtr2,
        Site::Vpc,
        Site::Vpc2,
        Site::Cli,
    ];

    /// Every site any deployment may have: what destroy looks for.
    pub const ANY: [Site; 10] = [
        Site::Pub,
        Site::Ctl,
        Site::Igw,
        Site::Rtr,
        Site::Rtr2,
        Site::Vpc,
        Site::Vpc2,
        Site::Exit,
        Site::Web,
        Site::Cli,
    ];

    /// The suffix of the namespace name.
    pub fn suffix(self) -> &'static str {
        match self {
            Site::Pub => "pub",
            Site::Ctl => "ctl",
            Site::Igw => "igw",
            Site::Rtr => "rtr",
            Site::Rtr2 => "rtr2",
            Site::Vpc => "vpc",
            Site::Vpc2 => "vpc2",
            Site::Exit => "exit",
            Site::Web => "web",
            Site::Cli => "cli",
        }
    }
}

/// One end of a veth pair, as it looks once moved and renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkEnd {
    /// The namespace it lives in.
    pub site: Site,
    /// Its final name there.
    pub ifname: &'static str,
    /// Its addresses with prefix length (the first is the primary one).
    pub addrs: Vec<&'static str>,
    /// The bridge it is a port of, if any.
    pub master: Option<&'static str>,
}

/// A veth pair and the temporary names its ends have in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VethLink {
    /// Temporary host-namespace name of end `a`.
    pub temp_a: String,
    /// Temporary host-namespace name of end `b`.
    pub temp_b: String,
    /// The node-side end.
    pub a: LinkEnd,
    /// The far end (bridge port, gateway or VPC host).
    pub b: LinkEnd,
}

/// A bridge and the address it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgePlan {
    /// The namespace it lives in.
    pub site: Site,
    /// Its name.
    pub name: &'static str,
    /// Its address with prefix length.
    pub addr: &'static str,
}

/// Where one subnet router lives: what fault injection from outside needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterPlan {
    /// Its host name in the tailnet, and its key under `processes` in
    /// `state.json` (where its pid is recorded).
    pub key: &'static str,
    /// Its site.
    pub site: Site,
    /// Its namespace (`cw-NAME-rtr`, `cw-NAME-rtr2`).
    pub namespace: String,
    /// Its public address, held by the internet gateway.
    pub public_addr: &'static str,
    /// Its uplink interface (towards the gateway).
    pub uplink_ifname: &'static str,
    /// Its uplink address.
    pub uplink_addr: &'static str,
    /// Its default gateway (the internet gateway's address on its subnet).
    pub gateway: &'static str,
    /// Its interface on the VPC subnet.
    pub vpc_ifname: &'static str,
    /// Its address on the VPC subnet.
    pub vpc_addr: &'static str,
}

/// The exit node (`--role exit-node`) or app connector (`--role
/// app-connector`): where it lives and the address the internet sees it
/// from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitPlan {
    /// Its host name in the tailnet (what the client's `exit_node` names),
    /// and its key under `processes` in `state.json`.
    pub key: &'static str,
    /// Its namespace (`cw-NAME-exit` for both; uplink `eth0`, default route
    /// via [`GATEWAY3_ADDR`]).
    pub namespace: String,
    /// The address the internet sees it from, held by the gateway.
    pub public_addr: &'static str,
    /// Its uplink address, behind the public one.
    pub uplink_addr: &'static str,
}

impl ExitPlan {
    /// Says whose address the echo server saw a client's request come
    /// from: this exit node's public address, the client's own (the
    /// request bypassed the exit node), or something else.
    pub fn describe_caller(&self, seen: &str) -> String {
        let what = self.what();
        if seen == self.public_addr {
            format!(
                "{seen}: the {what}'s public address, not the client's own {CLIENT_ADDR} (through {})",
                if self.key == "connector" {
                    "the app connector".to_owned()
                } else {
                    format!("{what} {}", self.key)
                }
            )
        } else if seen == CLIENT_ADDR {
            format!("{seen}: the client's own address (NOT through the {what})")
        } else {
            format!(
                "{seen:?} (neither the {what}'s {} nor the client's {CLIENT_ADDR})",
                self.public_addr
            )
        }
    }

    /// "exit node" or "app connector".
    pub fn what(&self) -> &'static str {
        if self.key == "connector" {
            "app connector"
        } else {
            "exit node"
        }
    }
}

/// With `--role via6`: one 4via6 site, the router serving it and the VPC
/// behind that router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Via6SitePlan {
    /// The site ID in the router's config and in the 4via6 addresses.
    pub id: u16,
    /// The router serving it (its host name and process key).
    pub router: &'static str,
    /// The router's namespace.
    pub router_namespace: String,
    /// The router's address in this site's VPC: what the site's hosts see
    /// the client as (SNAT).
    pub router_vpc_addr: &'static str,
    /// The VPC host's namespace.
    pub vpc: Site,
    /// The VPC host's namespace name.
    pub vpc_namespace: String,
}

impl Via6SitePlan {
    /// The MagicDNS name of the VPC host at this site,
    /// `198-19-1-10-via-SITE.DOMAIN` (answered with its 4via6 address).
    pub fn host_name(&self, domain: &str) -> String {
        format!(
            "{}-via-{}.{domain}",
            VPC_HOST_ADDR.replace('.', "-"),
            self.id
        )
    }
}

/// One 1:1 translation the internet gateway makes: a public address to a
/// node's uplink address and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PublicNat {
    /// The public address (on the gateway's `eth0`).
    pub public_addr: &'static str,
    /// The node's uplink address behind it.
    pub uplink_addr: &'static str,
}

/// The address plan of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    name: DeploymentName,
    ha: bool,
    /// The node behind the gateway's third address, and the internet host.
    edge: bool,
    /// That node is an app connector, not an exit node.
    connector: bool,
    /// Two 4via6 sites (`--role via6`): the second router in front of its
    /// own VPC.
    via6: bool,
}

impl Topology {
    /// The topology of deployment `name`, with one subnet router.
    pub fn new(name: DeploymentName) -> Self {
        Self::for_layout(name, false, false)
    }

    /// The topology of deployment `name`, with two subnet routers if `ha`.
    pub fn with_ha(name: DeploymentName, ha: bool) -> Self {
        Self::for_layout(name, ha, false)
    }

    /// The topology of deployment `name`: two subnet routers if `ha`, an
    /// exit node and the internet's echo server if `exit_node`. Both at
    /// once is the union of every layout: not a deployment anyone deploys,
    /// but everything a destroy must look for.
    pub fn for_layout(name: DeploymentName, ha: bool, exit_node: bool) -> Self {
        Self {
            name,
            ha,
            edge: exit_node,
            connector: false,
            via6: false,
        }
    }

    /// The topology of deployment `name` with two 4via6 sites (`--role
    /// via6`): site 1 as with one router, site 2's router where `--ha`'s
    /// second router is, in front of its own VPC with the same range.
    pub fn with_via6(name: DeploymentName) -> Self {
        Self {
            name,
            ha: false,
            edge: false,
            connector: false,
            via6: true,
        }
    }

    /// The topology of deployment `name` with an app connector where an
    /// exit node would be (`--role app-connector`): the same namespaces and
    /// links, and the apps and their resolver on the internet host.
    pub fn with_app_connector(name: DeploymentName) -> Self {
        Self {
            name,
            ha: false,
            edge: true,
            connector: true,
            via6: false,
        }
    }

    /// The deployment name.
    pub fn name(&self) -> &DeploymentName {
        &self.name
    }

    /// Whether it has two subnet routers.
    pub fn ha(&self) -> bool {
        self.ha
    }

    /// Whether it has two 4via6 sites (`--role via6`).
    pub fn has_via6(&self) -> bool {
        self.via6
    }

    /// Whether it has a second router: the HA pair's, or site 2's.
    pub fn has_router2(&self) -> bool {
        self.ha || self.via6
    }

    /// With `--role via6`: the sites, in site ID order.
    pub fn via6_sites(&self) -> Vec<Via6SitePlan> {
        if !self.via6 {
            return Vec::new();
        }
        self.routers()
            .into_iter()
            .zip(VIA6_SITE_IDS)
            .zip([Site::Vpc, Site::Vpc2])
            .map(|((r, id), vpc)| Via6SitePlan {
                id,
                router: r.key,
                router_namespace: r.namespace,
                router_vpc_addr: r.vpc_addr,
                vpc,
                vpc_namespace: self.namespace(vpc),
            })
            .collect()
    }

    /// Whether it has an exit node (and the internet's echo server).
    pub fn has_exit_node(&self) -> bool {
        self.edge && !self.connector
    }

    /// Whether it has an app connector (and the internet's echo server,
    /// apps and their resolver).
    pub fn has_app_connector(&self) -> bool {
        self.edge && self.connector
    }

    /// Whether it has the internet host (the echo server): with an exit
    /// node or an app connector.
    pub fn has_internet(&self) -> bool {
        self.edge
    }

    /// Its sites, in creation order.
    pub fn sites(&self) -> &'static [Site] {
        if self.via6 {
            return &Site::ALL_VIA6;
        }
        match (self.ha, self.edge) {
            (false, false) => &Site::ALL,
            (true, false) => &Site::ALL_HA,
            (false, true) => &Site::ALL_EXIT,
            (true, true) => &Site::ANY,
        }
    }

    /// The namespace of `site`: `cw-NAME-SUFFIX`.
    pub fn namespace(&self, site: Site) -> String {
        format!("cw-{}-{}", self.name, site.suffix())
    }

    /// All namespace names, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        self.sites().iter().map(|s| self.namespace(*s)).collect()
    }

    /// The subnet routers: one, or two with `--ha` or `--role via6`.
    pub fn routers(&self) -> Vec<RouterPlan> {
        let mut out = vec![RouterPlan {
            key: "router",
            site: Site::Rtr,
            namespace: self.namespace(Site::Rtr),
            public_addr: ROUTER_PUBLIC_ADDR,
            uplink_ifname: ROUTER_UPLINK_IFNAME,
            uplink_addr: ROUTER_UPLINK_ADDR,
            gateway: GATEWAY_ADDR,
            vpc_ifname: ROUTER_VPC_IFNAME,
            vpc_addr: ROUTER_VPC_ADDR,
        }];
        if self.has_router2() {
            out.push(RouterPlan {
                key: "router2",
                site: Site::Rtr2,
                namespace: self.namespace(Site::Rtr2),
                public_addr: ROUTER2_PUBLIC_ADDR,
                uplink_ifname: ROUTER_UPLINK_IFNAME,
                uplink_addr: ROUTER2_UPLINK_ADDR,
                gateway: GATEWAY2_ADDR,
                vpc_ifname: ROUTER_VPC_IFNAME,
                vpc_addr: ROUTER2_VPC_ADDR,
            });
        }
        out
    }

    /// The exit node, with `--role exit-node`.
    pub fn exit_node(&self) -> Option<ExitPlan> {
        self.edge_node().filter(|_| !self.connector)
    }

    /// The app connector, with `--role app-connector`.
    pub fn app_connector(&self) -> Option<ExitPlan> {
        self.edge_node().filter(|_| self.connector)
    }

    /// The exit node or app connector.
    fn edge_node(&self) -> Option<ExitPlan> {
        self.edge.then(|| ExitPlan {
            key: if self.connector { "connector" } else { "exit" },
            namespace: self.namespace(Site::Exit),
            public_addr: EXIT_PUBLIC_ADDR,
            uplink_addr: EXIT_UPLINK_ADDR,
        })
    }

    /// Routes besides the default one, as (destination, via): with an app
    /// connector, the internet gateway reaches the apps through the
    /// internet host.
    pub fn static_routes(&self, site: Site) -> Vec<(&'static str, &'static str)> {
        match site {
            Site::Igw if self.has_app_connector() => vec![(APPS_RANGE, WEB_ADDR)],
            _ => Vec::new(),
        }
    }

    /// Addresses on a site's loopback (with prefix length): with an app
    /// connector, the internet host holds the apps and their resolver.
    pub fn loopback_addrs(&self, site: Site) -> Vec<String> {
        match site {
            Site::Web if self.has_app_connector() => APPS
                .iter()
                .map(|(_, addr)| *addr)
                .chain([APPS_RESOLVER])
                .map(|addr| format!("{addr}/32"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every 1:1 translation of the internet gateway: each router's, then
    /// the exit node's.
    pub fn public_nat(&self) -> Vec<PublicNat> {
        let mut out: Vec<PublicNat> = self
            .routers()
            .iter()
            .map(|r| PublicNat {
                public_addr: r.public_addr,
                uplink_addr: r.uplink_addr,
            })
            .collect();
        out.extend(self.edge_node().map(|x| PublicNat {
            public_addr: x.public_addr,
            uplink_addr: x.uplink_addr,
        }));
        out
    }

    /// The bridges: the internet's, and with `--ha` the VPC subnet's.
    pub fn bridges(&self) -> Vec<BridgePlan> {
        let mut out = vec![BridgePlan {
            site: Site::Pub,
            name: BRIDGE,
            addr: BRIDGE_ADDR,
        }];
        if self.ha {
            out.push(BridgePlan {
                site: Site::Vpc,
                name: VPC_BRIDGE,
                addr: "198.19.1.10/24",
            });
        }
        out
    }

    /// The veth pairs, in creation order. Each pair has a fixed index (and
    /// so fixed temporary names) whatever the layout: 0-4 for every
    /// deployment, 5-6 for the second router (`--ha` or site 2 of `--role
    /// via6`), 7-8 for the exit node and
    /// the echo server's host; so destroy finds the links of any layout.
    pub fn links(&self) -> Vec<VethLink> {
        let end = |site, ifname, addrs: Vec<&'static str>, master| LinkEnd {
            site,
            ifname,
            addrs,
            master,
        };
        let public = |addrs: Vec<&'static str>, site, port| {
            (
                end(site, "eth0", addrs, None),
                end(Site::Pub, port, vec![], Some(BRIDGE)),
            )
        };
        let mut gateway_addrs = vec!["198.18.0.3/24"];
        if self.has_router2() {
            gateway_addrs.push("198.18.0.5/24");
        }
        if self.edge {
            gateway_addrs.push("198.18.0.6/24");
        }
        let vpc_side = |router_addr, port| {
            let host = if self.ha {
                end(Site::Vpc, port, vec![], Some(VPC_BRIDGE))
            } else {
                end(Site::Vpc, "eth0", vec!["198.19.1.10/24"], None)
            };
            (
                end(Site::Rtr, ROUTER_VPC_IFNAME, vec![router_addr], None),
                host,
            )
        };
        let mut pairs = vec![
            (0, public(vec!["198.18.0.2/24"], Site::Ctl, "p-ctl")),
            (1, public(gateway_addrs, Site::Igw, "p-igw")),
            (2, public(vec!["198.18.0.4/24"], Site::Cli, "p-cli")),
            (3, vpc_side("198.19.1.1/24", "v-rtr")),
            (
                4,
                (
                    end(Site::Rtr, ROUTER_UPLINK_IFNAME, vec!["198.19.0.3/24"], None),
                    end(Site::Igw, "lan0", vec!["198.19.0.1/24"], None),
                ),
            ),
        ];
        if self.has_router2() {
            let (mut a, mut b) = vpc_side("198.19.1.2/24", "v-rtr2");
            a.site = Site::Rtr2;
            if self.via6 {
                // Site 2's own VPC, with the same host address as site 1's.
                b = end(Site::Vpc2, "eth0", vec!["198.19.1.10/24"], None);
            }
            pairs.push((5, (a, b)));
            pairs.push((
                6,
                (
                    end(
                        Site::Rtr2,
                        ROUTER_UPLINK_IFNAME,
                        vec!["198.19.2.3/24"],
                        None,
                    ),
                    end(Site::Igw, "lan1", vec!["198.19.2.1/24"], None),
                ),
            ));
        }
        if self.edge {
            pairs.push((
                7,
                (
                    end(
                        Site::Exit,
                        ROUTER_UPLINK_IFNAME,
                        vec!["198.19.3.3/24"],
                        None,
                    ),
                    end(Site::Igw, "lan2", vec!["198.19.3.1/24"], None),
                ),
            ));
            pairs.push((8, public(vec!["198.18.0.10/24"], Site::Web, "p-web")));
        }
        pairs
            .into_iter()
            .map(|(i, (a, b))| VethLink {
                temp_a: self.temp_name(i, 'a'),
                temp_b: self.temp_name(i, 'b'),
                a,
                b,
            })
            .collect()
    }

    /// The default route each site has: only the routers and the exit
    /// node, through the internet gateway (every other namespace reaches only its own links).
    pub fn default_gateway(&self, site: Site) -> Option<&'static str> {
        match site {
            Site::Rtr => Some(GATEWAY_ADDR),
            Site::Rtr2 if self.has_router2() => Some(GATEWAY2_ADDR),
            Site::Exit if self.edge => Some(GATEWAY3_ADDR),
            Site::Rtr2
            | Site::Exit
            | Site::Pub
            | Site::Ctl
            | Site::Igw
            | Site::Vpc
            | Site::Vpc2
            | Site::Web
            | Site::Cli => None,
        }
    }

    /// Every temporary veth name this deployment may leave in the host
    /// namespace if it is interrupted.
    pub fn temp_link_names(&self) -> Vec<String> {
        self.links()
            .into_iter()
            .flat_map(|l| [l.temp_a, l.temp_b])
            .collect()
    }

    /// One line saying what the network is, for plans.
    pub fn summary(&self) -> String {
        let suffixes: Vec<&str> = self.sites().iter().map(|s| s.suffix()).collect();
        let bridges: Vec<String> = self
            .bridges()
            .iter()
            .map(|b| format!("{} {} ({})", b.name, b.addr, b.site.suffix()))
            .collect();
        format!(
            "namespaces cw-{}-{{{}}}, bridge{} {}, {} veth pairs, VPC {VPC_SUBNET}",
            self.name,
            suffixes.join(","),
            if bridges.len() == 1 { "" } else { "s" },
            bridges.join(" and "),
            self.links().len()
        )
    }

    /// Temporary names are unique per deployment and link, so concurrent
    /// deployments with different names never collide in the host namespace.
    fn temp_name(&self, link: usize, end: char) -> String {
        format!("cw-{}-{link}{end}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn longest(ha: bool) -> Topology {
        Topology::with_ha("abcd-fgh".parse().expect("valid 8-char name"), ha)
    }

    fn all_ends(topo: &Topology) -> Vec<LinkEnd> {
        topo.links().into_iter().flat_map(|l| [l.a, l.b]).collect()
    }

    /// The addresses of the link ends at `site` (only on `ifname`, if given).
    fn addrs_on(ends: &[LinkEnd], site: Site, ifname: Option<&str>) -> Vec<&'static str> {
        ends.iter()
            .filter(|e| e.site == site && ifname.is_none_or(|i| e.ifname == i))
            .flat_map(|e| e.addrs.clone())
            .collect()
    }

    /// Every address of the plan (link ends and bridges), with its place.
    fn all_addrs(topo: &Topology) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = all_ends(topo)
            .iter()
            .flat_map(|e| {
                e.addrs
                    .iter()
                    .map(move |a| (format!("{:?}/{}", e.site, e.ifname), *a))
            })
            .collect();
        out.extend(
            topo.bridges()
                .iter()
                .map(|b| (format!("{:?}/{}", b.site, b.name), b.addr)),
        );
        out
    }

    #[test]
    fn namespaces_follow_the_naming_scheme() {
        let topo = Topology::new(DeploymentName::default());
        assert_eq!(
            topo.namespaces(),
            [
                "cw-demo-pub",
                "cw-demo-ctl",
                "cw-demo-igw",
                "cw-demo-rtr",
                "cw-demo-vpc",
                "cw-demo-cli"
            ]
        );
        let ha = Topology::with_ha(DeploymentName::default(), true);
        assert_eq!(
            ha.namespaces(),
            [
                "cw-demo-pub",
                "cw-demo-ctl",
                "cw-demo-igw",
                "cw-demo-rtr",
                "cw-demo-rtr2",
                "cw-demo-vpc",
                "cw-demo-cli"
            ]
        );
    }

    #[test]
    fn every_interface_name_fits_ifnamsiz_even_for_the_longest_name() {
        for ha in [false, true] {
            let topo = longest(ha);
            for link in topo.links() {
                for name in [&link.temp_a, &link.temp_b] {
                    assert!(name.len() <= MAX_IFNAME_LEN, "{name} is too long");
                }
                for end in [&link.a, &link.b] {
                    assert!(end.ifname.len() <= MAX_IFNAME_LEN);
                }
            }
            for b in topo.bridges() {
                assert!(b.name.len() <= MAX_IFNAME_LEN);
            }
        }
        assert_eq!(longest(false).temp_link_names()[9], "cw-abcd-fgh-4b");
        assert_eq!(longest(true).temp_link_names()[13], "cw-abcd-fgh-6b");
    }

    #[test]
    fn temp_names_are_unique_and_final_names_unique_per_namespace() {
        for (ha, pairs) in [(false, 5), (true, 7)] {
            let topo = longest(ha);
            let temps: BTreeSet<_> = topo.temp_link_names().into_iter().collect();
            assert_eq!(temps.len(), 2 * pairs);
            let mut ends: BTreeSet<_> =
                all_ends(&topo).iter().map(|e| (e.site, e.ifname)).collect();
            assert_eq!(ends.len(), 2 * pairs);
            for b in topo.bridges() {
                assert!(ends.insert((b.site, b.name)), "{} clashes", b.name);
            }
        }
    }

    #[test]
    fn ha_keeps_the_single_router_temp_names_so_destroy_finds_both() {
        let single = longest(false).temp_link_names();
        let ha = longest(true).temp_link_names();
        assert_eq!(&ha[..single.len()], &single[..]);
    }

    #[test]
    fn no_address_is_used_twice() {
        for ha in [false, true] {
            let topo = longest(ha);
            let addrs = all_addrs(&topo);
            let mut seen = BTreeSet::new();
            for (place, addr) in &addrs {
                let host = addr.split('/').next().unwrap_or(addr);
                assert!(seen.insert(host), "{addr} on {place} is used twice");
            }
            // Each router's public address is one of the gateway's, so
            // it was checked above.
            for r in topo.routers() {
                assert!(seen.contains(r.public_addr), "{}", r.public_addr);
            }
        }
    }

    #[test]
    fn each_routers_public_address_is_held_by_the_gateway_not_the_router() {
        let topo = longest(true);
        let ends = all_ends(&topo);
        let gateway = addrs_on(&ends, Site::Igw, Some("eth0"));
        assert_eq!(gateway, ["198.18.0.3/24", "198.18.0.5/24"]);
        for r in topo.routers() {
            let own = addrs_on(&ends, r.site, None);
            assert!(
                !own.iter()
                    .any(|a| a.starts_with(&format!("{}/", r.public_addr))),
                "{} holds its public address: {own:?}",
                r.key
            );
            assert!(own.contains(&format!("{}/24", r.vpc_addr).as_str()));
            assert!(own.contains(&format!("{}/24", r.uplink_addr).as_str()));
            assert_eq!(topo.default_gateway(r.site), Some(r.gateway));
        }
    }

    #[test]
    fn the_single_router_plan_is_unchanged() {
        let topo = longest(false);
        let router_addrs: Vec<_> = all_ends(&topo)
            .into_iter()
            .filter(|e| e.site == Site::Rtr)
            .flat_map(|e| e.addrs)
            .collect();
        assert_eq!(router_addrs, ["198.19.1.1/24", "198.19.0.3/24"]);
        assert_eq!(topo.routers().len(), 1);
        assert_eq!(topo.bridges().len(), 1);
        assert_eq!(topo.default_gateway(Site::Rtr2), None);
    }

    #[test]
    fn the_vpc_host_is_only_on_the_vpc_subnet() {
        let topo = longest(false);
        let vpc: Vec<_> = all_ends(&topo)
            .into_iter()
            .filter(|e| e.site == Site::Vpc)
            .collect();
        assert_eq!(vpc.len(), 1);
        assert_eq!(vpc[0].addrs, ["198.19.1.10/24"]);
        // With --ha its address moves to the VPC bridge; the ports have none.
        let ha = longest(true);
        let ports: Vec<_> = all_ends(&ha)
            .into_iter()
            .filter(|e| e.site == Site::Vpc)
            .collect();
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| p.addrs.is_empty()));
        assert!(ports.iter().all(|p| p.master == Some(VPC_BRIDGE)));
        assert_eq!(ha.bridges()[1].addr, "198.19.1.10/24");
    }

    #[test]
    fn routers_name_what_fault_injection_needs() {
        let routers = Topology::with_ha(DeploymentName::default(), true).routers();
        let seen: Vec<_> = routers
            .iter()
            .map(|r| {
                (
                    r.key,
                    r.namespace.as_str(),
                    r.vpc_ifname,
                    r.vpc_addr,
                    r.uplink_ifname,
                    r.uplink_addr,
                    r.public_addr,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "router",
                    "cw-demo-rtr",
                    "vpc0",
                    "198.19.1.1",
                    "eth0",
                    "198.19.0.3",
                    "198.18.0.3"
                ),
                (
                    "router2",
                    "cw-demo-rtr2",
                    "vpc0",
                    "198.19.1.2",
                    "eth0",
                    "198.19.2.3",
                    "198.18.0.5"
                ),
            ]
        );
    }

    #[test]
    fn the_summary_is_deterministic_and_says_what_ha_adds() {
        assert_eq!(
            Topology::new(DeploymentName::default()).summary(),
            "namespaces cw-demo-{pub,ctl,igw,rtr,vpc,cli}, bridge br0 198.18.0.1/24 (pub), 5 veth pairs, VPC 198.19.1.0/24"
        );
        assert_eq!(
            Topology::with_ha(DeploymentName::default(), true).summary(),
            "namespaces cw-demo-{pub,ctl,igw,rtr,rtr2,vpc,cli}, bridges br0 198.18.0.1/24 (pub) and br-vpc 198.19.1.10/24 (vpc), 7 veth pairs, VPC 198.19.1.0/24"
        );
    }

    #[test]
    fn an_app_connector_takes_the_exit_nodes_place_and_the_apps_sit_behind_the_gateway() {
        let exit = exit_layout();
        let topo = Topology::with_app_connector("abcd-fgh".parse().expect("valid 8-char name"));
        // The same namespaces and links: destroy's union layout finds both.
        assert_eq!(topo.sites(), exit.sites());
        assert_eq!(topo.links(), exit.links());
        assert_eq!(topo.public_nat(), exit.public_nat());
        assert!(topo.exit_node().is_none() && !topo.has_exit_node());
        let connector = topo.app_connector().expect("a connector");
        assert_eq!(connector.key, "connector");
        assert_eq!(connector.namespace, "cw-abcd-fgh-exit");
        assert_eq!(connector.what(), "app connector");
        // The apps and their resolver on the internet host, which the
        // gateway (and so only the connector) routes to.
        assert_eq!(
            topo.loopback_addrs(Site::Web),
            ["198.18.100.11/32", "198.18.100.12/32", "198.18.100.53/32"]
        );
        assert_eq!(topo.static_routes(Site::Igw), [(APPS_RANGE, WEB_ADDR)]);
        assert!(topo.static_routes(Site::Cli).is_empty());
        assert!(exit.loopback_addrs(Site::Web).is_empty());
        assert!(exit.static_routes(Site::Igw).is_empty());
    }

    fn exit_layout() -> Topology {
        Topology::for_layout("abcd-fgh".parse().expect("valid 8-char name"), false, true)
    }

    #[test]
    fn the_exit_layout_adds_the_exit_node_and_the_web_host() {
        let topo = Topology::for_layout(DeploymentName::default(), false, true);
        assert_eq!(
            topo.summary(),
            "namespaces cw-demo-{pub,ctl,igw,rtr,vpc,exit,web,cli}, bridge br0 198.18.0.1/24 (pub), 7 veth pairs, VPC 198.19.1.0/24"
        );
        let exit = topo.exit_node().expect("an exit node");
        assert_eq!(
            (
                exit.key,
                exit.namespace.as_str(),
                exit.public_addr,
                exit.uplink_addr
            ),
            ("exit", "cw-demo-exit", "198.18.0.6", "198.19.3.3")
        );
        assert_eq!(topo.default_gateway(Site::Exit), Some("198.19.3.1"));
        assert_eq!(topo.default_gateway(Site::Web), None);
        assert_eq!(topo.routers().len(), 1);
        assert!(
            Topology::new(DeploymentName::default())
                .exit_node()
                .is_none()
        );
        let web: Vec<_> = all_ends(&topo)
            .into_iter()
            .filter(|e| e.site == Site::Web)
            .collect();
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].addrs, [format!("{WEB_ADDR}/24").as_str()]);
    }

    #[test]
    fn the_gateway_translates_the_exit_nodes_public_address_which_it_alone_holds() {
        let topo = exit_layout();
        let ends = all_ends(&topo);
        let gateway = addrs_on(&ends, Site::Igw, Some("eth0"));
        assert_eq!(gateway, ["198.18.0.3/24", "198.18.0.6/24"]);
        let own = addrs_on(&ends, Site::Exit, None);
        assert_eq!(own, ["198.19.3.3/24"]);
        assert_eq!(
            topo.public_nat(),
            [
                PublicNat {
                    public_addr: "198.18.0.3",
                    uplink_addr: "198.19.0.3"
                },
                PublicNat {
                    public_addr: "198.18.0.6",
                    uplink_addr: "198.19.3.3"
                },
            ]
        );
    }

    #[test]
    fn exit_links_keep_their_own_indexes_and_names_fit() {
        let topo = exit_layout();
        let temps = topo.temp_link_names();
        assert_eq!(temps.len(), 14);
        assert_eq!(&temps[..10], &longest(false).temp_link_names()[..]);
        assert_eq!(
            &temps[10..],
            [
                "cw-abcd-fgh-7a",
                "cw-abcd-fgh-7b",
                "cw-abcd-fgh-8a",
                "cw-abcd-fgh-8b"
            ]
        );
        assert!(temps.iter().all(|t| t.len() <= MAX_IFNAME_LEN));
        let mut ends: BTreeSet<_> = all_ends(&topo).iter().map(|e| (e.site, e.ifname)).collect();
        assert_eq!(ends.len(), 14);
        assert!(ends.insert((Site::Pub, BRIDGE)));
    }

    #[test]
    fn the_union_layout_holds_every_layouts_namespaces_and_links_for_destroy() {
        let name: DeploymentName = "abcd-fgh".parse().expect("valid");
        let union = Topology::for_layout(name.clone(), true, true);
        let all_ns: BTreeSet<String> = union.namespaces().into_iter().collect();
        let all_temps: BTreeSet<String> = union.temp_link_names().into_iter().collect();
        assert_eq!(all_ns.len(), Site::ANY.len());
        assert_eq!(all_temps.len(), 18);
        for (ha, exit) in [(false, false), (true, false), (false, true)] {
            let topo = Topology::for_layout(name.clone(), ha, exit);
            assert!(topo.namespaces().iter().all(|n| all_ns.contains(n)));
            assert!(topo.temp_link_names().iter().all(|t| all_temps.contains(t)));
        }
    }

    #[test]
    fn no_address_is_used_twice_with_the_exit_node_either() {
        for topo in [
            exit_layout(),
            Topology::for_layout("u".parse().expect("valid"), true, true),
        ] {
            let mut seen = BTreeSet::new();
            for (place, addr) in all_addrs(&topo) {
                let host = addr.split('/').next().unwrap_or(addr);
                assert!(seen.insert(host), "{addr} on {place} is used twice");
            }
        }
    }

    #[test]
    fn via6_puts_a_second_vpc_with_the_same_range_behind_the_second_router() {
        let topo = Topology::with_via6("abcd-fgh".parse().expect("valid 8-char name"));
        assert_eq!(
            topo.summary(),
            "namespaces cw-abcd-fgh-{pub,ctl,igw,rtr,rtr2,vpc,vpc2,cli}, bridge br0 198.18.0.1/24 (pub), 7 veth pairs, VPC 198.19.1.0/24"
        );
        let ends = all_ends(&topo);
        // The same host address at both sites, each on its own link.
        assert_eq!(addrs_on(&ends, Site::Vpc, Some("eth0")), ["198.19.1.10/24"]);
        assert_eq!(
            addrs_on(&ends, Site::Vpc2, Some("eth0")),
            ["198.19.1.10/24"]
        );
        assert_eq!(addrs_on(&ends, Site::Rtr2, Some("vpc0")), ["198.19.1.2/24"]);
        assert_eq!(topo.bridges().len(), 1, "no VPC bridge: two separate VPCs");
        assert_eq!(topo.default_gateway(Site::Rtr2), Some(GATEWAY2_ADDR));
        assert_eq!(topo.default_gateway(Site::Vpc2), None);
        assert!(!topo.ha() && topo.has_router2() && topo.has_via6());
        let sites: Vec<_> = topo
            .via6_sites()
            .into_iter()
            .map(|s| (s.id, s.router, s.router_vpc_addr, s.vpc_namespace))
            .collect();
        assert_eq!(
            sites,
            [
                (1, "router", "198.19.1.1", "cw-abcd-fgh-vpc".to_owned()),
                (2, "router2", "198.19.1.2", "cw-abcd-fgh-vpc2".to_owned()),
            ]
        );
        assert_eq!(
            topo.via6_sites()[1].host_name("tailnet.causeway.internal"),
            "198-19-1-10-via-2.tailnet.causeway.internal"
        );
        assert!(longest(true).via6_sites().is_empty());
        // Its links keep the HA pair's indexes, so the union layout (what
        // destroy looks for) holds its names and namespaces.
        let union = Topology::for_layout("abcd-fgh".parse().expect("valid"), true, true);
        let union_temps: BTreeSet<String> = union.temp_link_names().into_iter().collect();
        assert!(
            topo.temp_link_names()
                .iter()
                .all(|t| union_temps.contains(t))
        );
        let union_ns: BTreeSet<String> = union.namespaces().into_iter().collect();
        assert!(topo.namespaces().iter().all(|n| union_ns.contains(n)));
        let mut seen = BTreeSet::new();
        for (place, addr) in all_addrs(&topo) {
            if place.starts_with("Vpc2/") {
                continue; // the overlap is the point
            }
            let host = addr.split('/').next().unwrap_or(addr);
            assert!(seen.insert(host), "{addr} on {place} is used twice");
        }
    }

    #[test]
    fn the_echo_servers_answer_is_named() {
        let exit = exit_layout().exit_node().expect("exit");
        assert_eq!(
            exit.describe_caller("198.18.0.6"),
            "198.18.0.6: the exit node's public address, not the client's own 198.18.0.4 (through exit node exit)"
        );
        assert_eq!(
            exit.describe_caller("198.18.0.4"),
            "198.18.0.4: the client's own address (NOT through the exit node)"
        );
        assert_eq!(
            exit.describe_caller("10.0.0.1"),
            "\"10.0.0.1\" (neither the exit node's 198.18.0.6 nor the client's 198.18.0.4)"
        );
    }
}
