//! The address plan of a local deployment: which namespaces exist, which
//! veth pairs join them, and which addresses they carry. Pure data, so the
//! plan can be printed and tested without touching the system.

use serde::Serialize;

use crate::name::DeploymentName;

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The bridge in the "internet" namespace.
pub const BRIDGE: &str = "br0";
/// The bridge's own address: the "internet" itself.
pub const BRIDGE_ADDR: &str = "198.18.0.1/24";
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

/// One of the six namespaces of a local deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    /// The "internet": a bridge every public veth plugs into.
    Pub,
    /// The control server.
    Ctl,
    /// The VPC's internet gateway: a 1:1 NAT between the router's public
    /// address and its uplink address, as a cloud's gateway does.
    Igw,
    /// The subnet router.
    Rtr,
    /// The private VPC host (no route to the tailnet, no default route).
    Vpc,
    /// A client device.
    Cli,
}

impl Site {
    /// Every site, in creation order.
    pub const ALL: [Site; 6] = [
        Site::Pub,
        Site::Ctl,
        Site::Igw,
        Site::Rtr,
        Site::Vpc,
        Site::Cli,
    ];

    /// The suffix of the namespace name.
    pub fn suffix(self) -> &'static str {
        match self {
            Site::Pub => "pub",
            Site::Ctl => "ctl",
            Site::Igw => "igw",
            Site::Rtr => "rtr",
            Site::Vpc => "vpc",
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
    /// Its address with prefix length, if any.
    pub addr: Option<&'static str>,
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
    /// The far end (bridge port or VPC host).
    pub b: LinkEnd,
}

/// The address plan of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    name: DeploymentName,
}

impl Topology {
    /// The topology of deployment `name`.
    pub fn new(name: DeploymentName) -> Self {
        Self { name }
    }

    /// The deployment name.
    pub fn name(&self) -> &DeploymentName {
        &self.name
    }

    /// The namespace of `site`: `cw-NAME-SUFFIX`.
    pub fn namespace(&self, site: Site) -> String {
        format!("cw-{}-{}", self.name, site.suffix())
    }

    /// All namespace names, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        Site::ALL.iter().map(|s| self.namespace(*s)).collect()
    }

    /// The veth pairs, in creation order.
    pub fn links(&self) -> Vec<VethLink> {
        let public = |i: usize, site: Site, addr: &'static str, port: &'static str| VethLink {
            temp_a: self.temp_name(i, 'a'),
            temp_b: self.temp_name(i, 'b'),
            a: LinkEnd {
                site,
                ifname: "eth0",
                addr: Some(addr),
                master: None,
            },
            b: LinkEnd {
                site: Site::Pub,
                ifname: port,
                addr: None,
                master: Some(BRIDGE),
            },
        };
        vec![
            public(0, Site::Ctl, "198.18.0.2/24", "p-ctl"),
            public(1, Site::Igw, "198.18.0.3/24", "p-igw"),
            public(2, Site::Cli, "198.18.0.4/24", "p-cli"),
            VethLink {
                temp_a: self.temp_name(3, 'a'),
                temp_b: self.temp_name(3, 'b'),
                a: LinkEnd {
                    site: Site::Rtr,
                    ifname: "vpc0",
                    addr: Some("198.19.1.1/24"),
                    master: None,
                },
                b: LinkEnd {
                    site: Site::Vpc,
                    ifname: "eth0",
                    addr: Some("198.19.1.10/24"),
                    master: None,
                },
            },
            VethLink {
                temp_a: self.temp_name(4, 'a'),
                temp_b: self.temp_name(4, 'b'),
                a: LinkEnd {
                    site: Site::Rtr,
                    ifname: "eth0",
                    addr: Some("198.19.0.3/24"),
                    master: None,
                },
                b: LinkEnd {
                    site: Site::Igw,
                    ifname: "lan0",
                    addr: Some("198.19.0.1/24"),
                    master: None,
                },
            },
        ]
    }

    /// The default route each site has: only the router, through the
    /// internet gateway (every other namespace reaches only its own links).
    pub fn default_gateway(&self, site: Site) -> Option<&'static str> {
        match site {
            Site::Rtr => Some(GATEWAY_ADDR),
            Site::Pub | Site::Ctl | Site::Igw | Site::Vpc | Site::Cli => None,
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

    /// Temporary names are unique per deployment and link, so concurrent
    /// deployments with different names never collide in the host namespace.
    fn temp_name(&self, link: usize, end: char) -> String {
        format!("cw-{}-{link}{end}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn longest() -> Topology {
        Topology::new("abcd-fgh".parse().expect("valid 8-char name"))
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
    }

    #[test]
    fn every_interface_name_fits_ifnamsiz_even_for_the_longest_name() {
        let topo = longest();
        for link in topo.links() {
            for name in [&link.temp_a, &link.temp_b] {
                assert!(name.len() <= MAX_IFNAME_LEN, "{name} is too long");
            }
            for end in [&link.a, &link.b] {
                assert!(end.ifname.len() <= MAX_IFNAME_LEN);
            }
        }
        assert_eq!(topo.temp_link_names()[9], "cw-abcd-fgh-4b");
    }

    #[test]
    fn temp_names_are_unique_and_final_names_unique_per_namespace() {
        let topo = longest();
        let temps: std::collections::BTreeSet<_> = topo.temp_link_names().into_iter().collect();
        assert_eq!(temps.len(), 10);
        let ends: std::collections::BTreeSet<_> = topo
            .links()
            .iter()
            .flat_map(|l| [(l.a.site, l.a.ifname), (l.b.site, l.b.ifname)])
            .collect();
        assert_eq!(ends.len(), 10);
    }

    #[test]
    fn the_routers_public_address_is_on_no_interface_of_the_router() {
        let router_addrs: Vec<_> = longest()
            .links()
            .into_iter()
            .flat_map(|l| [l.a, l.b])
            .filter(|e| e.site == Site::Rtr)
            .filter_map(|e| e.addr)
            .collect();
        assert_eq!(router_addrs, ["198.19.1.1/24", "198.19.0.3/24"]);
        assert!(
            !router_addrs
                .iter()
                .any(|a| a.starts_with(ROUTER_PUBLIC_ADDR))
        );
    }

    #[test]
    fn the_vpc_host_is_only_on_the_vpc_subnet() {
        let topo = longest();
        let vpc: Vec<_> = topo
            .links()
            .into_iter()
            .flat_map(|l| [l.a, l.b])
            .filter(|e| e.site == Site::Vpc)
            .collect();
        assert_eq!(vpc.len(), 1);
        assert_eq!(vpc[0].addr, Some("198.19.1.10/24"));
    }
}
