//! The appliance's TOML configuration. Each section enables a role.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use causeway_wire::PublicKey;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where keys, the control database and the status socket live.
    pub state_dir: PathBuf,
    /// A block volume that holds `state_dir`, separate from the root disk
    /// (an EBS volume ID): `appliance state-volume` mounts it before the
    /// appliance starts, and `run` refuses to start without it.
    pub state_volume: Option<crate::state_volume::VolumeId>,
    /// Role `control`.
    pub control: Option<causeway_control::ControlConfig>,
    /// Role `recorder`: session-recording ingest, spool and storage.
    pub recorder: Option<causeway_recorder::RecorderConfig>,
    /// Role `device`.
    pub node: Option<NodeConfig>,
    /// Role `subnet-router`.
    pub subnet_router: Option<SubnetRouterConfig>,
    /// Role `exit-node`.
    pub exit_node: Option<ExitNodeConfig>,
    /// Role `app-connector`.
    pub app_connector: Option<AppConnectorConfig>,
    /// Prometheus metrics (off when absent).
    pub metrics: Option<crate::metrics::MetricsConfig>,
}

/// `[node]`: the base mesh node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Control's node-facing URL, `http://host:port`.
    pub control_url: String,
    /// Control's public key, pinned.
    pub control_public_key: Option<PublicKey>,
    /// A file holding control's public key.
    pub control_public_key_file: Option<PathBuf>,
    /// The auth key, read only for the first registration.
    pub auth_key_file: Option<PathBuf>,
    /// Or: the ARN of an AWS Secrets Manager secret holding it, fetched at
    /// first registration with the default credential chain (IMDSv2 on EC2).
    pub auth_key_secret: Option<String>,
    /// The Secrets Manager endpoint `auth_key_secret` is read from, e.g. a
    /// VPC interface endpoint without private DNS or a FIPS endpoint;
    /// default: the region's endpoint by the SDK's own rules.
    pub secrets_manager_endpoint: Option<String>,
    /// The node's host name; default: with `cloud`, the instance's host
    /// name from the metadata service, else the OS host name.
    pub hostname: Option<String>,
    /// UDP port of the WireGuard socket.
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// Name of the TUN device.
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
    /// Install routes for peers' approved subnet routes.
    #[serde(default)]
    pub accept_routes: bool,
    /// MTU of the TUN device (default 1280).
    pub mtu: Option<u16>,
    /// Endpoints to advertise; default: the addresses of local interfaces.
    #[serde(default)]
    pub advertise_endpoints: Vec<SocketAddr>,
    /// The cloud this node runs in: its public address, which is on no
    /// interface, is read from the cloud's metadata service and advertised.
    pub cloud: Option<crate::cloud::Cloud>,
    /// The exit node to send internet traffic through: a node's tailnet
    /// name, id or address, `"auto"` (an online exit node) or `"none"`
    /// (default). `appliance set --exit-node` changes it at run time.
    #[serde(default)]
    pub exit_node: ExitNodeChoiceText,
    /// With an exit node: keep the directly connected LAN subnets off the
    /// tunnel (default false: everything goes through the exit node).
    #[serde(default)]
    pub exit_node_allow_lan_access: bool,
    /// With an exit node: while none is usable (offline, removed, not
    /// found), send traffic out of the host's own routes instead of dropping
    /// it (default false: fail closed, nothing leaks).
    #[serde(default)]
    pub exit_node_fail_open: bool,
    /// With an exit node: send the host's DNS queries to the exit node's
    /// forwarder, as Tailscale does (default true); false leaves them to
    /// the host's resolvers (through the tunnel, unless LAN access keeps
    /// a LAN resolver off it).
    #[serde(default = "default_true")]
    pub exit_node_dns: bool,
    /// Run the node resolver on 100.100.100.100 (MagicDNS names of the
    /// peers, split DNS, the host's resolvers for the rest; default
    /// false).
    #[serde(default)]
    pub dns_resolver: bool,
    /// With the node resolver: point this machine at it while the
    /// appliance runs (systemd-resolved's settings for the TUN device, or
    /// the `resolv.conf` of this network namespace), and undo it on stop
    /// (or at the next start after a crash). Default true; false leaves
    /// the machine's DNS alone (ask 100.100.100.100 directly).
    #[serde(default = "default_true")]
    pub accept_dns: bool,
}

/// `node.exit_node`, checked when the file is parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitNodeChoiceText(pub causeway_mesh::ExitNodeChoice);

impl<'de> Deserialize<'de> for ExitNodeChoiceText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Self).map_err(serde::de::Error::custom)
    }
}

/// `[exit_node]`: advertise `0.0.0.0/0` and `::/0` and forward tailnet
/// traffic to the uplink, masqueraded. An admin (`routes approve`) or the
/// policy's `autoApprovers.exitNode` approves the routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitNodeConfig {
    /// Advertise and forward IPv6 (`::/0`) too (default true).
    #[serde(default = "default_true")]
    pub ipv6: bool,
    /// Forwarded internet-bound traffic leaves through this interface
    /// (policy routing), masqueraded to its address; the node's own
    /// WireGuard and control traffic keeps the main table.
    pub egress_interface: Option<String>,
    /// Or: the interface with this MAC address (what a cloud knows of a
    /// second network interface before the OS names it).
    pub egress_mac: Option<MacText>,
    /// The next hop on the egress interface (IPv4); default: the first
    /// host address of the interface's IPv4 subnet (the VPC router).
    pub egress_gateway: Option<IpAddr>,
    /// Health probe of the internet path: a TCP connection to `host:port`
    /// must open within the probe timeout (default: only the forwarding
    /// path is checked).
    pub probe_tcp: Option<String>,
    /// Health probe of the internet path: an ICMP echo to this address
    /// must be answered within the probe timeout.
    pub probe_icmp: Option<IpAddr>,
}

/// `[app_connector]`: resolve `domains` for the tailnet and route the
/// addresses they resolve to. Control sends the tailnet's queries for
/// those domains here (split DNS); each answer's addresses become routes
/// this node advertises (approved by an admin or by a policy
/// `autoApprovers.routes` entry containing them) and forwards to,
/// masqueraded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConnectorConfig {
    /// `app.example.com` (that name) or `*.example.com` (every name below
    /// it); at most `causeway_dns::MAX_DOMAINS`.
    pub domains: Vec<String>,
    /// Shortest life of a learned route, whatever the answer's TTL
    /// (default `10m`).
    #[serde(default = "default_route_ttl_floor", with = "duration_text")]
    pub route_ttl_floor: Duration,
    /// Most addresses held; an address over it is not routed (default
    /// 1000, at most `causeway_dns::MAX_ROUTES_LIMIT`).
    #[serde(default = "default_max_routes")]
    pub max_routes: usize,
    /// The resolvers the connector asks, port 53 (at most
    /// `causeway_dns::MAX_UPSTREAMS`); default: the machine's own.
    #[serde(default)]
    pub resolvers: Vec<IpAddr>,
}

impl AppConnectorConfig {
    /// The domains, parsed.
    pub fn patterns(
        &self,
    ) -> anyhow::Result<std::collections::BTreeSet<causeway_dns::DomainPattern>> {
        self.domains
            .iter()
            .map(|d| {
                d.parse::<causeway_dns::DomainPattern>()
                    .map_err(|e| anyhow::anyhow!("app_connector.domains: {e}"))
            })
            .collect()
    }

    /// The route limits.
    pub fn limits(&self) -> causeway_dns::ConnectorLimits {
        causeway_dns::ConnectorLimits {
            ttl_floor: self.route_ttl_floor,
            max_routes: self.max_routes,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.domains.is_empty() {
            bail!(
                "app_connector.domains is empty: expected at least one domain, e.g. [\"app.example.com\", \"*.example.com\"]"
            );
        }
        if self.domains.len() > causeway_dns::MAX_DOMAINS {
            bail!(
                "app_connector.domains has {} entries: expected at most {}",
                self.domains.len(),
                causeway_dns::MAX_DOMAINS
            );
        }
        self.patterns()?;
        if !(1..=causeway_dns::MAX_ROUTES_LIMIT).contains(&self.max_routes) {
            bail!(
                "app_connector.max_routes = {}: expected 1 to {}",
                self.max_routes,
                causeway_dns::MAX_ROUTES_LIMIT
            );
        }
        if self.resolvers.len() > causeway_dns::MAX_UPSTREAMS {
            bail!(
                "app_connector.resolvers has {} entries: expected at most {}",
                self.resolvers.len(),
                causeway_dns::MAX_UPSTREAMS
            );
        }
        if self.route_ttl_floor > MAX_ROUTE_TTL_FLOOR {
            bail!(
                "app_connector.route_ttl_floor = {:?}: expected at most {:?}",
                self.route_ttl_floor,
                MAX_ROUTE_TTL_FLOOR
            );
        }
        Ok(())
    }
}

/// The longest `app_connector.route_ttl_floor` accepted.
const MAX_ROUTE_TTL_FLOOR: Duration = Duration::from_secs(7 * 24 * 3600);

fn default_route_ttl_floor() -> Duration {
    causeway_dns::DEFAULT_TTL_FLOOR
}
fn default_max_routes() -> usize {
    causeway_dns::DEFAULT_MAX_ROUTES
}

/// `exit_node.egress_mac`, checked when the file is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacText(pub causeway_netconf::MacAddress);

impl<'de> Deserialize<'de> for MacText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Self).map_err(serde::de::Error::custom)
    }
}

impl ExitNodeConfig {
    /// The routes an exit node advertises.
    pub fn routes(&self) -> Vec<IpNet> {
        let mut routes = vec![IpNet::V4(ipnet::Ipv4Net::default())];
        if self.ipv6 {
            routes.push(IpNet::V6(ipnet::Ipv6Net::default()));
        }
        routes
    }

    /// The egress interface, with the key that names it and its value
    /// as written, if one is configured.
    pub fn egress(&self) -> Option<(causeway_netconf::EgressSelector, &'static str, String)> {
        use causeway_netconf::EgressSelector;
        if let Some(name) = &self.egress_interface {
            return Some((
                EgressSelector::Name(name.clone()),
                "egress_interface",
                name.clone(),
            ));
        }
        self.egress_mac
            .map(|mac| (EgressSelector::Mac(mac.0), "egress_mac", mac.0.to_string()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.egress_interface.is_some() && self.egress_mac.is_some() {
            bail!(
                "[exit_node]: expected at most one of egress_interface and egress_mac (the egress interface by name or by MAC address)"
            );
        }
        if let Some(name) = &self.egress_interface
            && !causeway_netconf::is_interface_name(name)
        {
            bail!(
                "exit_node.egress_interface = {name:?}: expected an interface name of 1 to 15 bytes without '/', ':' or whitespace, e.g. \"eth1\""
            );
        }
        if let Some(gateway) = self.egress_gateway {
            if self.egress_interface.is_none() && self.egress_mac.is_none() {
                bail!(
                    "exit_node.egress_gateway = \"{gateway}\": set only with egress_interface or egress_mac (the interface it is the next hop on)"
                );
            }
            let usable = match gateway {
                IpAddr::V4(v4) => {
                    !(v4.is_unspecified()
                        || v4.is_loopback()
                        || v4.is_multicast()
                        || v4.is_broadcast())
                }
                IpAddr::V6(_) => false,
            };
            if !usable {
                bail!(
                    "exit_node.egress_gateway = \"{gateway}\": expected a unicast IPv4 address on the egress interface's subnet, e.g. \"198.19.3.1\""
                );
            }
        }
        check_probe(self.probe_tcp.as_deref(), self.probe_icmp).context("[exit_node]")
    }
}

/// `[subnet_router]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetRouterConfig {
    /// Routes to advertise.
    pub routes: Vec<RouteConfig>,
    /// AWS (`node.cloud = "aws"`): VPC route tables whose `100.64.0.0/10`
    /// route this node points at its own network interface whenever
    /// control makes it the primary router (the return route SNAT off
    /// needs).
    #[serde(default)]
    pub aws_route_tables: Vec<crate::node::RouteTableId>,
    /// `--cloud local`: the VPC namespace whose `100.64.0.0/10` route this
    /// node points via its own VPC-side address whenever control makes it
    /// the primary router (the local stand-in for `aws_route_tables`).
    pub local_route_table: Option<LocalRouteTable>,
    /// Among healthy routers for the same route, control gives a free
    /// route to the highest priority (default 0), then the lowest node id.
    #[serde(default)]
    pub priority: u32,
    /// Time between the starts of two rounds of health probes (default
    /// `500ms`).
    #[serde(default = "default_probe_interval", with = "duration_text")]
    pub probe_interval: Duration,
    /// Deadline of each probe (default `1s`).
    #[serde(default = "default_probe_timeout", with = "duration_text")]
    pub probe_timeout: Duration,
    /// Failed rounds in a row that make a route unhealthy (default 2).
    #[serde(default = "default_probe_count")]
    pub unhealthy_after: u32,
    /// Passed rounds in a row that make it healthy again (default 2).
    #[serde(default = "default_probe_count")]
    pub healthy_after: u32,
}

/// `[subnet_router.local_route_table]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRouteTable {
    /// The namespace, as `ip netns` names it (`/run/netns/NAME`).
    pub namespace: String,
    /// This router's address on the VPC side, which that namespace reaches.
    pub via: std::net::Ipv4Addr,
}

impl LocalRouteTable {
    fn validate(&self) -> anyhow::Result<()> {
        let name = &self.namespace;
        if name.is_empty()
            || name.len() > 255
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
        {
            bail!(
                "subnet_router.local_route_table.namespace = {name:?}: expected the name of a network namespace in /run/netns, e.g. \"cw-demo-vpc\""
            );
        }
        let via = self.via;
        if via.is_unspecified()
            || via.is_loopback()
            || via.is_multicast()
            || via.is_broadcast()
            || via.is_link_local()
        {
            bail!(
                "subnet_router.local_route_table.via = \"{via}\": expected this router's unicast IPv4 address on the VPC side, e.g. \"198.19.1.2\""
            );
        }
        Ok(())
    }
}

impl SubnetRouterConfig {
    /// The route tables that follow this node when it is primary, if any.
    pub fn return_route(&self) -> Option<crate::node::ReturnRoute> {
        if let Some(local) = &self.local_route_table {
            return Some(crate::node::ReturnRoute::Namespace {
                name: local.namespace.clone(),
                via: local.via,
            });
        }
        (!self.aws_route_tables.is_empty())
            .then(|| crate::node::ReturnRoute::Aws(self.aws_route_tables.clone()))
    }

    /// The probe pacing and thresholds.
    pub fn probe_settings(&self) -> causeway_mesh::ProbeSettings {
        causeway_mesh::ProbeSettings {
            interval: self.probe_interval,
            timeout: self.probe_timeout,
            unhealthy_after: self.unhealthy_after,
            healthy_after: self.healthy_after,
        }
    }
}

/// One advertised route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The prefix.
    pub prefix: IpNet,
    /// Masquerade tailnet sources (default). Off keeps source addresses;
    /// the network then needs a return route for the tailnet via this node.
    #[serde(default = "default_true")]
    pub snat: bool,
    /// Health probe: a TCP connection to `host:port` must open within the
    /// probe timeout (e.g. a database behind the router).
    pub probe_tcp: Option<String>,
    /// Health probe: an ICMP echo to this address must be answered within
    /// the probe timeout.
    pub probe_icmp: Option<IpAddr>,
    /// 4via6: serve this IPv4 range as site `site_id` (0–65535). The node
    /// advertises the range's IPv6 route in the tailnet's range instead of
    /// the IPv4 prefix, and translates between the two, so sites that use
    /// the same range stay apart (docs/dns.md, "4via6").
    pub site_id: Option<u16>,
}

impl RouteConfig {
    /// The route this node advertises for the range: the prefix, or for a
    /// 4via6 site its IPv6 route in the tailnet whose range is `ula`.
    pub fn advertised(&self, ula: Option<Ipv6Net>) -> Option<IpNet> {
        match (self.site_id, self.prefix, ula) {
            (None, prefix, _) => Some(prefix),
            (Some(site), IpNet::V4(range), Some(ula)) => Some(IpNet::V6(
                causeway_wire::via6::via6_prefix(ula, site, range),
            )),
            (Some(_), _, _) => None,
        }
    }

    /// The 4via6 site and range this route serves, if it is one.
    pub fn via6_site(&self) -> Option<(u16, Ipv4Net)> {
        match (self.site_id, self.prefix) {
            (Some(site), IpNet::V4(range)) => Some((site, range)),
            _ => None,
        }
    }
}

/// Serde adapter for durations written as `500ms`, `2s`, `1m`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        causeway_control::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

fn default_probe_interval() -> Duration {
    causeway_mesh::ProbeSettings::default().interval
}
fn default_probe_timeout() -> Duration {
    causeway_mesh::ProbeSettings::default().timeout
}
fn default_probe_count() -> u32 {
    causeway_mesh::ProbeSettings::default().unhealthy_after
}

/// The shortest probe interval accepted: faster would only load the
/// targets without failing over sooner than control can act.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// The longest probe interval or timeout accepted.
const MAX_PROBE_PERIOD: Duration = Duration::from_secs(300);
/// The most results in a row a threshold may ask for.
const MAX_PROBE_COUNT: u32 = 100;
/// The most routes one router may advertise (each is probed every round).
pub const MAX_ROUTES: usize = 256;

impl NodeConfig {
    /// The host name the node registers with: the configured one, else the
    /// OS host name.
    pub fn hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "node".to_owned())
        })
    }
}
fn default_listen_port() -> u16 {
    41641
}
fn default_tun_name() -> String {
    "cw0".to_owned()
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Reads and validates a config file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text, &format!("config file {}", path.display()))
    }

    /// Parses and validates config text; errors name `source` (a file, or
    /// e.g. "EC2 user data") and the key.
    pub fn parse(text: &str, source: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).with_context(|| format!("parsing {source}"))?;
        config
            .validate()
            .with_context(|| format!("checking {source}"))?;
        Ok(config)
    }

    /// The roles the file enables, in a fixed order.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if self.control.is_some() {
            roles.push("control");
        }
        if self.recorder.is_some() {
            roles.push("recorder");
        }
        if self.node.is_some() {
            roles.push("device");
        }
        if self.subnet_router.is_some() {
            roles.push("subnet-router");
        }
        if self.exit_node.is_some() {
            roles.push("exit-node");
        }
        if self.app_connector.is_some() {
            roles.push("app-connector");
        }
        roles
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.control.is_none() && self.node.is_none() && self.recorder.is_none() {
            bail!("no role enabled: expected a [control], [node] or [recorder] section");
        }
        if let Some(control) = &self.control {
            control.validate()?;
        }
        if let Some(recorder) = &self.recorder {
            recorder.validate().map_err(anyhow::Error::msg)?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.validate()?;
        }
        if self.subnet_router.is_some() && self.node.is_none() {
            bail!("[subnet_router] needs a [node] section: a router is a mesh node");
        }
        if self.exit_node.is_some() && self.node.is_none() {
            bail!("[exit_node] needs a [node] section: an exit node is a mesh node");
        }
        if let Some(exit) = &self.exit_node {
            exit.validate()?;
        }
        if self.app_connector.is_some() && self.node.is_none() {
            bail!("[app_connector] needs a [node] section: an app connector is a mesh node");
        }
        if let Some(connector) = &self.app_connector {
            connector.validate()?;
        }
        if let Some(node) = &self.node {
            if self.exit_node.is_some() && node.exit_node.0 != causeway_mesh::ExitNodeChoice::Off {
                bail!(
                    "node.exit_node = {:?}: an exit node cannot use another exit node; remove node.exit_node or [exit_node]",
                    node.exit_node.0.to_string()
                );
            }
            if !node.control_url.starts_with("http://") && !node.control_url.starts_with("https://")
            {
                bail!(
                    "node.control_url = {:?}: expected http://HOST:PORT",
                    node.control_url
                );
            }
            if node.control_public_key.is_none() == node.control_public_key_file.is_none() {
                bail!(
                    "[node]: expected exactly one of control_public_key and control_public_key_file"
                );
            }
            if node.auth_key_file.is_some() && node.auth_key_secret.is_some() {
                bail!(
                    "[node]: expected at most one of auth_key_file and auth_key_secret (the auth key's source)"
                );
            }
            if let Some(arn) = &node.auth_key_secret {
                crate::secrets::SecretArn::parse(arn).context("node.auth_key_secret")?;
            }
            if let Some(url) = &node.secrets_manager_endpoint {
                if node.auth_key_secret.is_none() {
                    bail!(
                        "node.secrets_manager_endpoint = {url:?}: set only with node.auth_key_secret (the secret it is read from)"
                    );
                }
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    bail!("node.secrets_manager_endpoint = {url:?}: expected https://HOST[:PORT]");
                }
            }
            if node.tun_name.is_empty() || node.tun_name.len() > 15 {
                bail!(
                    "node.tun_name = {:?}: expected 1 to 15 characters",
                    node.tun_name
                );
            }
        }
        if let Some(router) = &self.subnet_router {
            let tables = &router.aws_route_tables;
            if !tables.is_empty()
                && self.node.as_ref().and_then(|n| n.cloud) != Some(crate::cloud::Cloud::Aws)
            {
                bail!(
                    "subnet_router.aws_route_tables needs node.cloud = \"aws\": the route's target is this instance's network interface, read from EC2's metadata service"
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = tables.iter().find(|t| !seen.insert(*t)) {
                bail!(
                    "subnet_router.aws_route_tables lists {twice} twice; expected each table once"
                );
            }
            if let Some(local) = &router.local_route_table {
                if !tables.is_empty() {
                    bail!(
                        "subnet_router: aws_route_tables and local_route_table are both set; expected at most one (the VPC route tables on AWS, the VPC namespace with --cloud local)"
                    );
                }
                local.validate()?;
            }
            router.validate()?;
        }
        Ok(())
    }
}

impl SubnetRouterConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.routes.len() > MAX_ROUTES {
            bail!(
                "subnet_router.routes: {} routes; expected at most {MAX_ROUTES}",
                self.routes.len()
            );
        }
        if !(MIN_PROBE_INTERVAL..=MAX_PROBE_PERIOD).contains(&self.probe_interval) {
            bail!(
                "subnet_router.probe_interval = {:?}: expected {}ms to {}s",
                self.probe_interval,
                MIN_PROBE_INTERVAL.as_millis(),
                MAX_PROBE_PERIOD.as_secs()
            );
        }
        if self.probe_timeout.is_zero() || self.probe_timeout > MAX_PROBE_PERIOD {
            bail!(
                "subnet_router.probe_timeout = {:?}: expected more than 0 and at most {}s",
                self.probe_timeout,
                MAX_PROBE_PERIOD.as_secs()
            );
        }
        for (key, value) in [
            ("unhealthy_after", self.unhealthy_after),
            ("healthy_after", self.healthy_after),
        ] {
            if !(1..=MAX_PROBE_COUNT).contains(&value) {
                bail!("subnet_router.{key} = {value}: expected 1 to {MAX_PROBE_COUNT}");
            }
        }
        for route in &self.routes {
            if route.prefix.prefix_len() == 0 {
                bail!(
                    "subnet_router.routes: {} is an exit route; use an [exit_node] section instead",
                    route.prefix
                );
            }
            if route.prefix != route.prefix.trunc() {
                bail!(
                    "subnet_router.routes: prefix {} has host bits set; expected {}",
                    route.prefix,
                    route.prefix.trunc()
                );
            }
            check_probe(route.probe_tcp.as_deref(), route.probe_icmp)
                .with_context(|| format!("subnet_router.routes: route {}", route.prefix))?;
            if let Some(site) = route.site_id
                && route.prefix.addr().is_ipv6()
            {
                bail!(
                    "subnet_router.routes: route {} with site_id = {site}: 4via6 sites hold IPv4 ranges; drop site_id for an IPv6 prefix",
                    route.prefix
                );
            }
        }
        let sites: Vec<(u16, Ipv4Net)> = self
            .routes
            .iter()
            .filter_map(RouteConfig::via6_site)
            .collect();
        for (i, (site_a, a)) in sites.iter().enumerate() {
            for (site_b, b) in &sites[i + 1..] {
                if site_a != site_b && (a.contains(b) || b.contains(a)) {
                    bail!(
                        "subnet_router.routes: {a} at site_id = {site_a} overlaps {b} at site_id = {site_b}; one router reaches one LAN, which cannot hold both"
                    );
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for route in &self.routes {
            if !seen.insert((route.prefix, route.site_id)) {
                match route.site_id {
                    Some(site) => bail!(
                        "subnet_router.routes: route {} at site_id = {site} is listed twice",
                        route.prefix
                    ),
                    None => bail!(
                        "subnet_router.routes: route {} is listed twice",
                        route.prefix
                    ),
                }
            }
        }
        Ok(())
    }
}

/// A health probe's target: at most one of `probe_tcp` and `probe_icmp`,
/// and `probe_tcp` as `HOST:PORT`.
fn check_probe(tcp: Option<&str>, icmp: Option<IpAddr>) -> anyhow::Result<()> {
    if tcp.is_some() && icmp.is_some() {
        bail!("expected at most one of probe_tcp and probe_icmp");
    }
    if let Some(target) = tcp
        && target.parse::<SocketAddr>().is_err()
    {
        let valid = target.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !valid {
            bail!(
                "probe_tcp = {target:?}: expected HOST:PORT, e.g. 198.19.1.10:5432 or db.internal:5432"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    const NODE: &str = r#"
        state_dir = "/tmp/x"
        [node]
        control_url = "http://198.18.0.2:8080"
        control_public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    "#;

    #[test]
    fn a_state_volume_is_an_ebs_volume_id() {
        let with = |v: &str| format!("state_volume = {v:?}\n{NODE}");
        let config = parse(&with("vol-0123456789abcdef0")).expect("valid");
        assert_eq!(
            config.state_volume.map(|v| v.to_string()).as_deref(),
            Some("vol-0123456789abcdef0")
        );
        let err = format!("{:#}", parse(&with("/dev/sdf")).expect_err("a device name"));
        assert!(
            err.contains("state_volume = \"/dev/sdf\": expected an EBS volume ID"),
            "{err}"
        );
    }

    #[test]
    fn an_app_connector_needs_domains_and_bounded_limits() {
        let connector = |body: &str| parse(&format!("{NODE}\n[app_connector]\n{body}"));
        let config = connector(r#"domains = ["app.example.com", "*.example.net"]"#).expect("valid");
        assert_eq!(config.roles(), ["device", "app-connector"]);
        let c = config.app_connector.expect("connector");
        assert_eq!(c.limits(), causeway_dns::ConnectorLimits::default());
        assert_eq!(c.patterns().expect("parsed").len(), 2);
        let c =
            connector("domains = [\"a.example.com\"]\nroute_ttl_floor = \"30s\"\nmax_routes = 5")
                .expect("valid")
                .app_connector
                .expect("connector");
        assert_eq!(c.limits().ttl_floor, Duration::from_secs(30));
        assert_eq!(c.limits().max_routes, 5);
        for (body, expected) in [
            ("domains = []", "app_connector.domains is empty"),
            (
                r#"domains = ["*.com"]"#,
                "app connector domain \"*.com\": a wildcard over a top-level domain is too broad",
            ),
            (
                r#"domains = ["a.*.example.com"]"#,
                "a wildcard is allowed only as the whole first label",
            ),
            (
                "domains = [\"a.example.com\"]\nmax_routes = 0",
                "app_connector.max_routes = 0: expected 1 to 65536",
            ),
            (
                "domains = [\"a.example.com\"]\nroute_ttl_floor = \"30d\"",
                "app_connector.route_ttl_floor",
            ),
            (
                "domains = [\"a.example.com\"]\nresolvers = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\", \"192.0.2.4\"]",
                "app_connector.resolvers has 4 entries: expected at most 3",
            ),
        ] {
            let err = format!("{:#}", connector(body).expect_err(body));
            assert!(err.contains(expected), "{body}: {err}");
        }
        let err = format!(
            "{:#}",
            parse(
                "state_dir = \"/tmp/x\"\n[control]\n[app_connector]\ndomains = [\"a.example.com\"]"
            )
            .expect_err("no node")
        );
        assert!(
            err.contains("[app_connector] needs a [node] section"),
            "{err}"
        );
    }

    #[test]
    fn a_minimal_node_config_gets_defaults() {
        let config = parse(NODE).expect("valid config");
        let node = config.node.expect("node role");
        assert_eq!(node.listen_port, 41641);
        assert_eq!(node.tun_name, "cw0");
        assert!(!node.accept_routes);
    }

    #[test]
    fn routes_default_to_snat_and_host_bits_are_refused() {
        let ok = parse(&format!(
            "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.0/24\" }}]"
        ))
        .expect("valid");
        assert!(ok.subnet_router.expect("router role").routes[0].snat);
        let err = parse(&format!(
            "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.7/24\" }}]"
        ))
        .expect_err("host bits refused");
        assert!(err.to_string().contains("198.19.1.7/24"), "{err}");
    }

    #[test]
    fn a_4via6_site_route_is_advertised_in_the_tailnet_range_and_checked() {
        let router = |routes: &str| parse(&format!("{NODE}\n[subnet_router]\nroutes = [{routes}]"));
        let ok = router(r#"{ prefix = "10.0.0.0/24", site_id = 7 }, { prefix = "198.19.1.0/24" }"#)
            .expect("valid");
        let routes = ok.subnet_router.expect("router role").routes;
        let ula: Ipv6Net = "fd7a:115c:a1e0::/48".parse().expect("valid");
        assert_eq!(
            routes[0]
                .advertised(Some(ula))
                .map(|p| p.to_string())
                .as_deref(),
            Some("fd7a:115c:a1e0:b1a:0:7:a00:0/120")
        );
        assert_eq!(routes[0].advertised(None), None, "not before registering");
        assert_eq!(
            routes[1].advertised(None).map(|p| p.to_string()).as_deref(),
            Some("198.19.1.0/24")
        );
        assert_eq!(
            routes[0].via6_site(),
            Some((7, "10.0.0.0/24".parse().expect("valid")))
        );
        // The same range at two sites may not share a router; the same
        // site twice, an IPv6 range, or a site ID out of range are refused.
        for (routes, expected) in [
            (
                r#"{ prefix = "10.0.0.0/24", site_id = 7 }, { prefix = "10.0.0.0/25", site_id = 8 }"#,
                "overlaps 10.0.0.0/25 at site_id = 8",
            ),
            (
                r#"{ prefix = "10.0.0.0/24", site_id = 7 }, { prefix = "10.0.0.0/24", site_id = 7 }"#,
                "listed twice",
            ),
            (
                r#"{ prefix = "fd00::/64", site_id = 7 }"#,
                "4via6 sites hold IPv4 ranges",
            ),
            (r#"{ prefix = "10.0.0.0/24", site_id = 70000 }"#, "site_id"),
        ] {
            let err = router(routes).expect_err(routes);
            assert!(format!("{err:#}").contains(expected), "{routes}: {err:#}");
        }
    }

    #[test]
    fn a_local_route_table_names_a_namespace_and_a_unicast_address() {
        let router = |node_extra: &str, table: &str| {
            parse(&format!(
                "{NODE}{node_extra}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.0/24\", snat = false }}]\n{table}\n"
            ))
        };
        let config = router(
            "",
            "[subnet_router.local_route_table]\nnamespace = \"cw-demo-vpc\"\nvia = \"198.19.1.2\"",
        )
        .expect("valid");
        let route = config
            .subnet_router
            .expect("router")
            .return_route()
            .expect("a return route");
        assert_eq!(
            format!("{route:?}"),
            "Namespace { name: \"cw-demo-vpc\", via: 198.19.1.2 }"
        );
        for (bad, expected) in [
            (
                "namespace = \"../etc\"\nvia = \"198.19.1.2\"",
                "local_route_table.namespace = \"../etc\": expected the name of a network namespace",
            ),
            (
                "namespace = \"\"\nvia = \"198.19.1.2\"",
                "local_route_table.namespace = \"\"",
            ),
            (
                "namespace = \"cw-demo-vpc\"\nvia = \"224.0.0.1\"",
                "local_route_table.via = \"224.0.0.1\": expected this router's unicast IPv4 address",
            ),
        ] {
            let err = format!(
                "{:#}",
                router("", &format!("[subnet_router.local_route_table]\n{bad}")).expect_err(bad)
            );
            assert!(err.contains(expected), "{bad}: {err}");
        }
        let err = format!(
            "{:#}",
            router(
                "cloud = \"aws\"",
                "aws_route_tables = [\"rtb-12345678\"]\n[subnet_router.local_route_table]\nnamespace = \"v\"\nvia = \"198.19.1.2\"",
            )
            .expect_err("both")
        );
        assert!(
            err.contains("aws_route_tables and local_route_table are both set"),
            "{err}"
        );
    }

    #[test]
    fn vpc_route_tables_need_aws_and_well_formed_unique_ids() {
        let router = |cloud: &str, tables: &str| {
            parse(&format!(
                "{NODE}{cloud}\n[subnet_router]\nroutes = [{{ prefix = \"10.0.0.0/16\", snat = false }}]\naws_route_tables = {tables}\n"
            ))
        };
        let config = router(
            "cloud = \"aws\"",
            "[\"rtb-0123456789abcdef0\", \"rtb-12345678\"]",
        )
        .expect("valid");
        let tables: Vec<String> = config
            .subnet_router
            .expect("router")
            .aws_route_tables
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(tables, ["rtb-0123456789abcdef0", "rtb-12345678"]);
        let err = router("", "[\"rtb-12345678\"]").expect_err("not on AWS");
        assert!(
            err.to_string().contains("needs node.cloud = \"aws\""),
            "{err}"
        );
        let err =
            router("cloud = \"aws\"", "[\"rtb-12345678\", \"rtb-12345678\"]").expect_err("twice");
        assert!(
            err.to_string().contains("lists rtb-12345678 twice"),
            "{err}"
        );
        let err = router("cloud = \"aws\"", "[\"subnet-12345678\"]").expect_err("not a table");
        assert!(
            format!("{err:#}").contains("\"subnet-12345678\": expected a VPC route table ID"),
            "{err:#}"
        );
    }

    #[test]
    fn probes_get_defaults_that_detect_a_dead_link_within_about_a_second() {
        let config = parse(&format!(
            "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.0/24\", probe_tcp = \"198.19.1.10:80\" }}]"
        ))
        .expect("valid");
        let router = config.subnet_router.expect("router role");
        let settings = router.probe_settings();
        assert_eq!(settings, causeway_mesh::ProbeSettings::default());
        assert_eq!(settings.interval, Duration::from_millis(500));
        assert_eq!(settings.timeout, Duration::from_secs(1));
        assert_eq!(settings.unhealthy_after, 2);
        assert_eq!(router.priority, 0);
        assert_eq!(
            router.routes[0].probe_tcp.as_deref(),
            Some("198.19.1.10:80")
        );
        let config = parse(&format!(
            "{NODE}\n[subnet_router]\npriority = 7\nprobe_interval = \"250ms\"\nprobe_timeout = \"2s\"\nunhealthy_after = 3\nhealthy_after = 5\nroutes = [{{ prefix = \"198.19.1.0/24\", probe_icmp = \"198.19.1.1\" }}]"
        ))
        .expect("valid");
        let router = config.subnet_router.expect("router role");
        assert_eq!(router.priority, 7);
        assert_eq!(
            router.probe_settings(),
            causeway_mesh::ProbeSettings {
                interval: Duration::from_millis(250),
                timeout: Duration::from_secs(2),
                unhealthy_after: 3,
                healthy_after: 5,
            }
        );
    }

    #[test]
    fn bad_probe_settings_are_refused_by_name() {
        let route = r#"routes = [{ prefix = "198.19.1.0/24" }]"#;
        for (line, expected) in [
            (
                "probe_interval = \"10ms\"",
                "subnet_router.probe_interval = 10ms: expected 100ms to 300s",
            ),
            (
                "probe_timeout = \"0s\"",
                "subnet_router.probe_timeout = 0ns: expected more than 0",
            ),
            (
                "unhealthy_after = 0",
                "subnet_router.unhealthy_after = 0: expected 1 to 100",
            ),
            (
                "healthy_after = 101",
                "subnet_router.healthy_after = 101: expected 1 to 100",
            ),
        ] {
            let err = parse(&format!("{NODE}\n[subnet_router]\n{line}\n{route}")).expect_err(line);
            assert!(format!("{err:#}").contains(expected), "{line}: {err:#}");
        }
        for (probe, expected) in [
            (
                r#"probe_tcp = "198.19.1.10""#,
                "probe_tcp = \"198.19.1.10\": expected HOST:PORT",
            ),
            (
                r#"probe_tcp = "db:0""#,
                "probe_tcp = \"db:0\": expected HOST:PORT",
            ),
            (
                r#"probe_tcp = "db:5432", probe_icmp = "198.19.1.1""#,
                "at most one of probe_tcp and probe_icmp",
            ),
        ] {
            let text = format!(
                "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.0/24\", {probe} }}]"
            );
            let err = parse(&text).expect_err(probe);
            assert!(format!("{err:#}").contains(expected), "{probe}: {err:#}");
        }
        let err = parse(&format!(
            "{NODE}\n[subnet_router]\nprobe_interval = \"soon\"\n{route}"
        ))
        .expect_err("not a duration");
        assert!(
            format!("{err:#}").contains("invalid duration \"soon\""),
            "{err:#}"
        );
        // A host name with a port is fine (resolved when probed).
        parse(&format!(
            "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.0/24\", probe_tcp = \"db.internal:5432\" }}]"
        ))
        .expect("valid");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = parse(&format!("{NODE}\nlisten_prot = 1")).expect_err("typo refused");
        assert!(format!("{err:#}").contains("listen_prot"), "{err:#}");
    }

    #[test]
    fn the_auth_key_comes_from_a_file_or_a_secret_not_both() {
        let arn =
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/p/relay-authkey-AbCdEf";
        let config = parse(&format!("{NODE}auth_key_secret = \"{arn}\"\n")).expect("valid");
        assert_eq!(
            config.node.expect("node").auth_key_secret.as_deref(),
            Some(arn)
        );
        let err = parse(&format!(
            "{NODE}auth_key_secret = \"{arn}\"\nauth_key_file = \"/k\"\n"
        ))
        .expect_err("both refused");
        assert!(err.to_string().contains("at most one"), "{err}");
        let err =
            parse(&format!("{NODE}auth_key_secret = \"causeway/p\"\n")).expect_err("not an ARN");
        assert!(
            format!("{err:#}").contains("node.auth_key_secret"),
            "{err:#}"
        );
    }

    #[test]
    fn a_secrets_manager_endpoint_needs_a_secret_and_a_url() {
        let arn =
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/p/relay-authkey-AbCdEf";
        let url = "https://vpce-0abc.secretsmanager.us-east-1.vpce.amazonaws.com";
        let config = parse(&format!(
            "{NODE}auth_key_secret = \"{arn}\"\nsecrets_manager_endpoint = \"{url}\"\n"
        ))
        .expect("valid");
        assert_eq!(
            config
                .node
                .expect("node")
                .secrets_manager_endpoint
                .as_deref(),
            Some(url)
        );
        let err = parse(&format!("{NODE}secrets_manager_endpoint = \"{url}\"\n"))
            .expect_err("no secret to read");
        assert!(
            format!("{err:#}").contains("only with node.auth_key_secret"),
            "{err:#}"
        );
        let err = parse(&format!(
            "{NODE}auth_key_secret = \"{arn}\"\nsecrets_manager_endpoint = \"vpce-0abc\"\n"
        ))
        .expect_err("not a URL");
        assert!(
            format!("{err:#}").contains("\"vpce-0abc\": expected https://"),
            "{err:#}"
        );
    }

    #[test]
    fn roles_are_listed_in_a_fixed_order() {
        let config = parse(&format!(
            "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"198.19.1.0/24\" }}]"
        ))
        .expect("valid");
        assert_eq!(config.roles(), ["device", "subnet-router"]);
    }

    #[test]
    fn an_exit_node_choice_is_checked_and_an_exit_node_uses_none() {
        let config = parse(&format!(
            "{NODE}exit_node = \"auto\"\nexit_node_allow_lan_access = true\n"
        ))
        .expect("valid");
        let node = config.node.expect("node");
        assert_eq!(node.exit_node.0, causeway_mesh::ExitNodeChoice::Auto);
        assert!(node.exit_node_allow_lan_access);
        assert!(!node.exit_node_fail_open);
        assert!(node.exit_node_dns, "DNS follows the exit node by default");
        let off = parse(&format!(
            "{NODE}exit_node = \"auto\"\nexit_node_dns = false\n"
        ))
        .expect("valid");
        assert!(!off.node.expect("node").exit_node_dns);
        let err = parse(&format!("{NODE}exit_node_dns = \"yes\"\n")).expect_err("not a boolean");
        assert!(format!("{err:#}").contains("exit_node_dns"), "{err:#}");
        let err = parse(&format!("{NODE}exit_node = \"exit 1\"\n")).expect_err("a space");
        assert!(
            format!("{err:#}").contains("exit node \"exit 1\": expected a node name"),
            "{err:#}"
        );
        let err = parse(&format!("{NODE}exit_node = \"exit1\"\n[exit_node]\n"))
            .expect_err("an exit node using an exit node");
        assert!(
            err.to_string()
                .contains("an exit node cannot use another exit node"),
            "{err}"
        );
        let exit = parse(&format!("{NODE}\n[exit_node]\n")).expect("valid");
        assert_eq!(exit.roles(), ["device", "exit-node"]);
        assert_eq!(
            exit.exit_node.expect("role").routes(),
            [
                "0.0.0.0/0".parse::<IpNet>().expect("net"),
                "::/0".parse().expect("net")
            ]
        );
        let err = parse(&format!(
            "{NODE}\n[subnet_router]\nroutes = [{{ prefix = \"0.0.0.0/0\" }}]"
        ))
        .expect_err("exit route as a subnet route");
        assert!(
            err.to_string().contains("use an [exit_node] section"),
            "{err}"
        );
    }

    #[test]
    fn an_exit_node_takes_one_internet_probe_and_bad_ones_are_named() {
        let exit = parse(&format!(
            "{NODE}\n[exit_node]\nprobe_tcp = \"198.18.100.10:8000\"\n"
        ))
        .expect("valid");
        let exit = exit.exit_node.expect("role");
        assert_eq!(exit.probe_tcp.as_deref(), Some("198.18.100.10:8000"));
        assert_eq!(exit.probe_icmp, None);
        let exit = parse(&format!(
            "{NODE}\n[exit_node]\nprobe_icmp = \"2001:db8::1\"\n"
        ))
        .expect("valid");
        assert_eq!(
            exit.exit_node.expect("role").probe_icmp,
            Some("2001:db8::1".parse().expect("address"))
        );
        for (probe, expected) in [
            (
                r#"probe_tcp = "example.com""#,
                "[exit_node]: probe_tcp = \"example.com\": expected HOST:PORT",
            ),
            (
                r#"probe_tcp = "example.com:443"
probe_icmp = "198.18.100.10""#,
                "[exit_node]: expected at most one of probe_tcp and probe_icmp",
            ),
        ] {
            let err = parse(&format!("{NODE}\n[exit_node]\n{probe}\n")).expect_err(probe);
            assert!(format!("{err:#}").contains(expected), "{probe}: {err:#}");
        }
        let err = parse(&format!("{NODE}\n[exit_node]\nprobe_icmp = \"internet\"\n"))
            .expect_err("not an address");
        assert!(format!("{err:#}").contains("probe_icmp"), "{err:#}");
    }

    #[test]
    fn an_egress_interface_is_named_or_found_by_mac_with_an_optional_gateway() {
        let exit = |keys: &str| parse(&format!("{NODE}\n[exit_node]\n{keys}\n"));
        let by_name =
            exit("egress_interface = \"eth1\"\negress_gateway = \"198.19.3.1\"").expect("valid");
        let by_name = by_name.exit_node.expect("role");
        assert_eq!(
            by_name.egress(),
            Some((
                causeway_netconf::EgressSelector::Name("eth1".to_owned()),
                "egress_interface",
                "eth1".to_owned()
            ))
        );
        assert_eq!(
            by_name.egress_gateway,
            Some("198.19.3.1".parse().expect("ip"))
        );
        let by_mac = exit("egress_mac = \"0A:1b:2c:3d:4e:5f\"").expect("valid");
        let (selector, key, value) = by_mac.exit_node.expect("role").egress().expect("egress");
        assert_eq!(
            selector,
            causeway_netconf::EgressSelector::Mac(causeway_netconf::MacAddress([
                0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f
            ]))
        );
        assert_eq!((key, value.as_str()), ("egress_mac", "0a:1b:2c:3d:4e:5f"));
        assert_eq!(
            exit("").expect("valid").exit_node.expect("role").egress(),
            None
        );
    }

    #[test]
    fn bad_egress_keys_are_refused_by_name() {
        for (keys, expected) in [
            (
                "egress_interface = \"eth1\"\negress_mac = \"0a:1b:2c:3d:4e:5f\"",
                "expected at most one of egress_interface and egress_mac",
            ),
            (
                "egress_mac = \"0a:1b:2c:3d:4e\"",
                "\"0a:1b:2c:3d:4e\": expected a MAC address",
            ),
            (
                "egress_interface = \"eth/1\"",
                "exit_node.egress_interface = \"eth/1\": expected an interface name",
            ),
            (
                "egress_interface = \"an-interface-name\"",
                "exit_node.egress_interface = \"an-interface-name\": expected",
            ),
            (
                "egress_gateway = \"198.19.3.1\"",
                "exit_node.egress_gateway = \"198.19.3.1\": set only with egress_interface or egress_mac",
            ),
            (
                "egress_interface = \"eth1\"\negress_gateway = \"fe80::1\"",
                "exit_node.egress_gateway = \"fe80::1\": expected a unicast IPv4 address",
            ),
            (
                "egress_interface = \"eth1\"\negress_gateway = \"255.255.255.255\"",
                "exit_node.egress_gateway = \"255.255.255.255\": expected a unicast IPv4 address",
            ),
            ("egress_gw = \"198.19.3.1\"", "egress_gw"),
        ] {
            let err = parse(&format!("{NODE}\n[exit_node]\n{keys}\n")).expect_err(keys);
            assert!(format!("{err:#}").contains(expected), "{keys}: {err:#}");
        }
    }

    #[test]
    fn a_file_with_no_role_is_refused() {
        let err = parse("state_dir = \"/tmp/x\"").expect_err("no role");
        assert!(err.to_string().contains("no role"));
    }
}
