//! Looking at a deployment without changing it, and the plan that follows
//! from what was seen. `plan_from` is pure, so plans are unit-tested on
//! made-up observations.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::services::{DnsServer, EchoServer, HttpServer, PgState, Postgres};
use super::state::{DeploymentState, Node};
use super::topology::{Site, Topology, VIA6_SITE_IDS, VPC_SUBNET};
use super::{DeployOptions, LocalDeployment, network};
use ipnet::Ipv4Net;

/// Process key of control in `state.json`.
pub const CONTROL_KEY: &str = "control";

/// How a daemon looks from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Never set up.
    Absent,
    /// Set up, not running (or not answering).
    Down,
    /// Running but not yet as wanted (e.g. no route yet).
    Degraded,
    /// Running and answering.
    Up,
}

/// What a deployment looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Whether `state.json` exists.
    pub state_exists: bool,
    /// Problems with namespaces and links (empty: healthy).
    pub network: Vec<String>,
    /// Whether no namespace of the deployment exists at all.
    pub network_absent: bool,
    /// PostgreSQL.
    pub postgres: PgState,
    /// Whether the HTTP server runs and serves the page.
    pub http: bool,
    /// Whether the VPC's resolver runs and answers for its zone.
    pub dns: bool,
    /// With `--role exit-node` or `app-connector`: whether the echo server
    /// runs and answers.
    pub echo: bool,
    /// With `--role app-connector`: whether the apps' resolver runs and
    /// answers.
    pub apps_dns: bool,
    /// With `--role via6`: whether site 2's echo server runs and answers.
    pub site2_echo: bool,
    /// Control.
    pub control: Health,
    /// Which nodes have an auth key file.
    pub auth_keys: BTreeMap<Node, bool>,
    /// The nodes.
    pub nodes: BTreeMap<Node, Health>,
}

/// What the deployment should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Control runs.
    pub control: bool,
    /// The router runs (both routers, with `ha`).
    pub router: bool,
    /// Two routers (`--ha`).
    pub ha: bool,
    /// An exit node and the echo server (`--role exit-node`).
    pub exit_node: bool,
    /// An app connector, the echo server and the apps' resolver (`--role
    /// app-connector`).
    pub app_connector: bool,
    /// Two 4via6 sites, a router each (`--role via6`).
    pub via6: bool,
    /// The routers masquerade the client (off with `--no-snat`).
    pub snat: bool,
    /// The client runs.
    pub client: bool,
}

impl From<&DeployOptions> for Wanted {
    fn from(o: &DeployOptions) -> Self {
        Self {
            control: o.start_control,
            router: o.start_router,
            ha: o.ha,
            exit_node: o.exit_node,
            app_connector: o.app_connector,
            via6: o.via6,
            snat: o.snat,
            client: o.start_client,
        }
    }
}

/// What `deploy` will do to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Create it.
    Create,
    /// It exists; start it.
    Start,
    /// It exists but is not as planned; fix it.
    Repair,
    /// Already as wanted.
    Keep,
    /// Not requested.
    Skip,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    /// The component.
    pub component: &'static str,
    /// What happens to it.
    pub action: Action,
    /// What it is, or what is wrong with it.
    pub detail: String,
}

/// What `deploy` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Deployment name.
    pub name: String,
    /// One item per component, in deploy order.
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// Whether `deploy` would change nothing.
    pub fn is_noop(&self) -> bool {
        self.items
            .iter()
            .all(|i| matches!(i.action, Action::Keep | Action::Skip))
    }

    /// The plan as text.
    pub fn render(&self, opts: &DeployOptions) -> String {
        let mut out = String::new();
        let dir = opts.state_dir.display();
        if self.is_noop() {
            let _ = writeln!(
                out,
                "deployment {} (local, state {dir}) exists and is healthy: deploy would change nothing",
                self.name
            );
            return out;
        }
        let _ = writeln!(
            out,
            "plan for deployment {} (local, state {dir}):",
            self.name
        );
        for item in &self.items {
            let sign = match item.action {
                Action::Create => "+ create",
                Action::Start => "> start ",
                Action::Repair => "~ repair",
                Action::Keep => "= keep  ",
                Action::Skip => "- skip  ",
            };
            let _ = writeln!(out, "  {sign} {:<10} {}", item.component, item.detail);
        }
        let count = |a: Action| self.items.iter().filter(|i| i.action == a).count();
        let _ = writeln!(
            out,
            "{} to create, {} to start, {} to repair, {} unchanged",
            count(Action::Create),
            count(Action::Start),
            count(Action::Repair),
            count(Action::Keep)
        );
        out
    }
}

/// Observes everything `deploy` manages.
pub fn observe(dep: &LocalDeployment) -> anyhow::Result<Observation> {
    let state = DeploymentState::load(&dep.dir)?;
    let topo = &dep.topo;
    let network = network::findings(topo)?;
    let network_absent =
        network.len() == topo.sites().len() && network.iter().all(|f| f.ends_with("is missing"));
    let vpc = dep.netns(Site::Vpc);
    let postgres = Postgres::new(dep.pg_bin.clone(), dep.dir.clone(), vpc.clone()).observe();
    let http = state
        .as_ref()
        .is_some_and(|s| HttpServer::new(dep.dir.clone(), vpc.clone()).is_healthy(s));
    let dns = state
        .as_ref()
        .is_some_and(|s| DnsServer::vpc(&dep.dir, vpc).is_healthy(s));
    let echo = topo.has_internet()
        && state
            .as_ref()
            .is_some_and(|s| EchoServer::new(dep.dir.clone(), dep.netns(Site::Web)).is_healthy(s));
    let apps_dns = topo.has_app_connector()
        && state
            .as_ref()
            .is_some_and(|s| DnsServer::apps(&dep.dir, dep.netns(Site::Web)).is_healthy(s));
    let site2_echo = topo.has_via6()
        && state.as_ref().is_some_and(|s| {
            EchoServer::site2(dep.dir.clone(), dep.netns(Site::Vpc2)).is_healthy(s)
        });
    let proc_alive = |key: &str| {
        state
            .as_ref()
            .and_then(|s| s.processes.get(key))
            .is_some_and(|p| p.is_alive())
    };
    let control = if !dep.dir.control_pub().is_file() {
        Health::Absent
    } else if !proc_alive(CONTROL_KEY) {
        Health::Down
    } else {
        match &dep.appliance {
            Some(app)
                if app
                    .admin_ready(&dep.netns(Site::Ctl), &dep.dir.admin_token())
                    .is_ok() =>
            {
                Health::Up
            }
            _ => Health::Degraded,
        }
    };
    let mut auth_keys = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for node in dep.nodes() {
        auth_keys.insert(node, dep.dir.node_auth_key(node).is_file());
        let health = if !proc_alive(node.as_str()) {
            Health::Down
        } else {
            match dep.node_status(node) {
                Ok(s) if dep.node_ready(node, &s) => Health::Up,
                _ => Health::Degraded,
            }
        };
        nodes.insert(node, health);
    }
    Ok(Observation {
        state_exists: state.is_some(),
        network,
        network_absent,
        postgres,
        http,
        dns,
        echo,
        apps_dns,
        site2_echo,
        control,
        auth_keys,
        nodes,
    })
}

/// Whether a node's status is what deploy waits for: running, and for the
/// client a peer routing the VPC subnet (with `via6`, each site's 4via6
/// prefix of it) and, when it is configured with `exit_node`, all its
/// traffic going through that exit node (selected, online: which needs
/// its exit routes approved by control).
pub fn node_ready(node: Node, s: &super::NodeSummary, exit_node: Option<&str>, via6: bool) -> bool {
    match node {
        Node::Router | Node::Router2 | Node::Exit => s.is_running(),
        Node::Connector => s.is_running() && s.app_connector.as_ref().is_some_and(|c| c.serving),
        Node::Client => {
            let routed = if via6 {
                let range: Ipv4Net = VPC_SUBNET.parse().unwrap_or_default();
                VIA6_SITE_IDS
                    .iter()
                    .all(|&site| s.has_via6_route(site, range))
            } else {
                s.has_route(VPC_SUBNET)
            };
            s.is_running()
                && routed
                && exit_node.is_none_or(|name| {
                    s.exit_node
                        .as_ref()
                        .is_some_and(|e| e.routes_all_through(name))
                })
        }
    }
}

/// The plan that follows from an observation.
pub fn plan_from(obs: &Observation, topo: &Topology, want: &Wanted) -> Plan {
    let name = topo.name().as_str();
    let mut items = Vec::new();
    let mut item = |component, action, detail: String| {
        items.push(PlanItem {
            component,
            action,
            detail,
        })
    };

    let net_detail = topo.summary();
    let net_action = if obs.network_absent {
        Action::Create
    } else if obs.network.is_empty() {
        Action::Keep
    } else {
        Action::Repair
    };
    let net_detail = match net_action {
        Action::Repair => obs.network.join("; "),
        _ => net_detail,
    };
    item("network", net_action, net_detail);

    let pg_action = match obs.postgres {
        PgState::Absent => Action::Create,
        PgState::Stopped => Action::Start,
        PgState::Unhealthy => Action::Repair,
        PgState::Healthy => Action::Keep,
    };
    item(
        "postgres",
        pg_action,
        "PostgreSQL on 198.19.1.10:5432 in the VPC namespace, database causeway".into(),
    );
    let http_action = service_action(obs.http, obs.state_exists);
    item(
        "http",
        http_action,
        "python3 http.server on 198.19.1.10:80 in the VPC namespace".into(),
    );
    item(
        "dns",
        service_action(obs.dns, obs.state_exists),
        if want.via6 {
            "dnsmasq on 198.19.1.10:53 in the VPC namespace, zone corp.internal (not split DNS: 198.19.1.10 is reached only by 4via6 names)"
        } else {
            "dnsmasq on 198.19.1.10:53 in the VPC namespace, zone corp.internal (split DNS in control)"
        }
        .into(),
    );
    if want.exit_node || want.app_connector {
        let echo_action = service_action(obs.echo, obs.state_exists);
        item(
            "echo",
            echo_action,
            "echo server on 198.18.0.10:80 in cw-NAME-web (the internet): answers with the caller's address"
                .replace("NAME", name),
        );
    }
    if want.via6 {
        item(
            "echo2",
            service_action(obs.site2_echo, obs.state_exists),
            "echo server on 198.19.1.10:80 in cw-NAME-vpc2 (site 2's VPC, the same range as site 1's): answers with the caller's address"
                .replace("NAME", name),
        );
    }
    if want.app_connector {
        item(
            "apps-dns",
            service_action(obs.apps_dns, obs.state_exists),
            "dnsmasq on 198.18.100.53:53 in cw-NAME-web, zone apps.example (app1, app2 on 198.18.100.11-12, TTL 60 s), routed only through the connector"
                .replace("NAME", name),
        );
    }

    let daemon = |wanted: bool, health: Health| match (wanted, health) {
        (false, _) => Action::Skip,
        (true, Health::Absent) => Action::Create,
        (true, Health::Down) => Action::Start,
        (true, Health::Degraded) => Action::Repair,
        (true, Health::Up) => Action::Keep,
    };
    item(
        "control",
        daemon(want.control, obs.control),
        if want.exit_node {
            "appliance control on 198.18.0.2:8080 (admin 127.0.0.1:8081), policy auto-approving 198.19.1.0/24 and the exit node's exit routes"
        } else if want.via6 {
            "appliance control on 198.18.0.2:8080 (admin 127.0.0.1:8081), policy auto-approving site:1:198.19.1.0/24 and site:2:198.19.1.0/24 (4via6), not 198.19.1.0/24 itself"
        } else if want.app_connector {
            "appliance control on 198.18.0.2:8080 (admin 127.0.0.1:8081), policy auto-approving 198.19.1.0/24 and the app connector's public routes"
        } else {
            "appliance control on 198.18.0.2:8080 (admin 127.0.0.1:8081), policy auto-approving 198.19.1.0/24"
        }
        .into(),
    );
    let keys_missing = obs.auth_keys.values().any(|present| !present);
    let keys_action = match (want.control, keys_missing) {
        (false, _) => Action::Skip,
        (true, true) => Action::Create,
        (true, false) => Action::Keep,
    };
    item(
        "auth-keys",
        keys_action,
        match (want.ha || want.via6, want.exit_node, want.app_connector) {
            (true, _, _) => "auth keys for router and router2 (tag:subnet-router) and client, in 0600 files; node configs",
            (false, true, _) => "auth keys for router (tag:subnet-router), exit (tag:exit-node) and client, in 0600 files; node configs",
            (false, false, true) => "auth keys for router (tag:subnet-router), connector (tag:app-connector) and client, in 0600 files; node configs",
            (false, false, false) => "auth keys for router (tag:subnet-router) and client, in 0600 files; node configs",
        }
        .into(),
    );
    let health = |n: Node| obs.nodes.get(&n).copied().unwrap_or(Health::Down);
    let router = daemon(want.router, health(Node::Router));
    let snat = if want.snat {
        "SNAT on"
    } else {
        "no SNAT: as primary it points cw-NAME-vpc's 100.64.0.0/10 route at itself"
    };
    let router_detail = if want.via6 {
        format!(
            "site 1: appliance subnet router in cw-NAME-rtr serving 198.19.1.0/24 of cw-NAME-vpc as 4via6 site 1, advertised as its IPv6 prefix, reached as 198-19-1-10-via-1.TAILNET-DOMAIN ({snat})"
        )
    } else {
        format!("appliance subnet router in cw-NAME-rtr advertising 198.19.1.0/24 ({snat})")
    };
    item("router", router, router_detail.replace("NAME", name));
    if want.via6 {
        let router2 = daemon(want.router, health(Node::Router2));
        item(
            "router2",
            router2,
            format!("site 2: appliance subnet router in cw-NAME-rtr2 serving 198.19.1.0/24 of cw-NAME-vpc2 as 4via6 site 2, reached as 198-19-1-10-via-2.TAILNET-DOMAIN ({snat})")
                .replace("NAME", name),
        );
    }
    if want.ha {
        let router2 = daemon(want.router, health(Node::Router2));
        item(
            "router2",
            router2,
            format!("second appliance subnet router in cw-NAME-rtr2 advertising 198.19.1.0/24 (HA pair; control picks the primary; {snat})")
                .replace("NAME", name),
        );
    }
    if want.exit_node {
        let exit = daemon(want.router, health(Node::Exit));
        item(
            "exit",
            exit,
            "appliance exit node in cw-NAME-exit advertising 0.0.0.0/0, public address 198.18.0.6 on the internet gateway"
                .replace("NAME", name),
        );
    }
    if want.app_connector {
        let connector = daemon(want.router, health(Node::Connector));
        item(
            "connector",
            connector,
            "appliance app connector in cw-NAME-exit for *.apps.example, public address 198.18.0.6 on the internet gateway"
                .replace("NAME", name),
        );
    }
    let client = daemon(want.client, health(Node::Client));
    item(
        "client",
        client,
        if want.exit_node {
            "appliance client in cw-NAME-cli accepting routes, all traffic through exit node exit"
        } else {
            "appliance client in cw-NAME-cli accepting routes"
        }
        .replace("NAME", name),
    );
    Plan {
        name: name.to_owned(),
        items,
    }
}

/// A service process: kept while it runs, started again in a deployment
/// that exists, created in a new one.
fn service_action(running: bool, state_exists: bool) -> Action {
    if running {
        Action::Keep
    } else if state_exists {
        Action::Start
    } else {
        Action::Create
    }
}

#[cfg(test)]
mod tests {
    use super::super::NodeSummary;
    use super::*;

    fn all_wanted() -> Wanted {
        Wanted {
            control: true,
            router: true,
            ha: false,
            snat: true,
            exit_node: false,
            app_connector: false,
            via6: false,
            client: true,
        }
    }

    fn topo(ha: bool) -> Topology {
        Topology::with_ha("t".parse().expect("valid"), ha)
    }

    fn nothing() -> Observation {
        Observation {
            state_exists: false,
            network: Site::ALL
                .iter()
                .map(|s| format!("namespace cw-t-{} is missing", s.suffix()))
                .collect(),
            network_absent: true,
            postgres: PgState::Absent,
            http: false,
            dns: false,
            echo: false,
            apps_dns: false,
            site2_echo: false,
            control: Health::Absent,
            auth_keys: [(Node::Router, false), (Node::Client, false)].into(),
            nodes: [(Node::Router, Health::Down), (Node::Client, Health::Down)].into(),
        }
    }

    fn healthy() -> Observation {
        Observation {
            state_exists: true,
            network: vec![],
            network_absent: false,
            postgres: PgState::Healthy,
            http: true,
            dns: true,
            echo: false,
            apps_dns: false,
            site2_echo: false,
            control: Health::Up,
            auth_keys: [(Node::Router, true), (Node::Client, true)].into(),
            nodes: [(Node::Router, Health::Up), (Node::Client, Health::Up)].into(),
        }
    }

    /// The plan's item for `component`.
    fn item<'a>(plan: &'a Plan, component: &str) -> &'a PlanItem {
        plan.items
            .iter()
            .find(|i| i.component == component)
            .unwrap_or_else(|| panic!("no {component} in {:?}", plan.items))
    }

    fn actions(plan: &Plan) -> Vec<(&'static str, Action)> {
        plan.items.iter().map(|i| (i.component, i.action)).collect()
    }

    #[test]
    fn empty_machine_plans_to_create_everything() {
        let plan = plan_from(&nothing(), &topo(false), &all_wanted());
        assert_eq!(
            actions(&plan),
            [
                ("network", Action::Create),
                ("postgres", Action::Create),
                ("http", Action::Create),
                ("dns", Action::Create),
                ("control", Action::Create),
                ("auth-keys", Action::Create),
                ("router", Action::Start),
                ("client", Action::Start),
            ]
        );
        assert!(!plan.is_noop());
        let text = plan.render(&DeployOptions::new("t".parse().expect("valid")));
        assert!(text.contains("+ create network"), "{text}");
        assert!(
            text.contains("namespaces cw-t-{pub,ctl,igw,rtr,vpc,cli}"),
            "{text}"
        );
        assert!(!text.contains("router2"), "{text}");
        assert!(
            text.contains("6 to create, 2 to start, 0 to repair, 0 unchanged"),
            "{text}"
        );
    }

    #[test]
    fn healthy_deployment_plans_no_change() {
        let plan = plan_from(&healthy(), &topo(false), &all_wanted());
        assert!(plan.is_noop());
        let text = plan.render(&DeployOptions::new("t".parse().expect("valid")));
        assert!(
            text.contains("exists and is healthy: deploy would change nothing"),
            "{text}"
        );
    }

    #[test]
    fn a_dead_router_and_a_broken_link_are_restarted_and_repaired() {
        let mut obs = healthy();
        obs.nodes.insert(Node::Router, Health::Down);
        obs.network = vec!["p-rtr in cw-t-pub is missing".into()];
        let plan = plan_from(&obs, &topo(false), &all_wanted());
        assert_eq!(plan.items[0].action, Action::Repair);
        assert_eq!(plan.items[0].detail, "p-rtr in cw-t-pub is missing");
        assert_eq!(item(&plan, "router").action, Action::Start);
        assert_eq!(item(&plan, "client").action, Action::Keep);
    }

    #[test]
    fn an_app_connector_plans_the_echo_server_the_apps_resolver_and_the_connector() {
        let want = Wanted {
            app_connector: true,
            ..all_wanted()
        };
        let topo = Topology::with_app_connector("t".parse().expect("valid"));
        let plan = plan_from(&nothing(), &topo, &want);
        let components: Vec<&str> = plan.items.iter().map(|i| i.component).collect();
        assert_eq!(
            components,
            [
                "network",
                "postgres",
                "http",
                "dns",
                "echo",
                "apps-dns",
                "control",
                "auth-keys",
                "router",
                "connector",
                "client"
            ]
        );
        let keys = plan
            .items
            .iter()
            .find(|i| i.component == "auth-keys")
            .expect("auth keys");
        assert!(
            keys.detail.contains("connector (tag:app-connector)"),
            "{}",
            keys.detail
        );
    }

    #[test]
    fn via6_plans_site_2s_echo_server_and_router_and_lists_both_sites() {
        let want = Wanted {
            via6: true,
            ..all_wanted()
        };
        let mut obs = nothing();
        obs.auth_keys.insert(Node::Router2, false);
        obs.nodes.insert(Node::Router2, Health::Down);
        let topo = Topology::with_via6("t".parse().expect("valid"));
        let plan = plan_from(&obs, &topo, &want);
        let components: Vec<&str> = plan.items.iter().map(|i| i.component).collect();
        assert_eq!(
            components,
            [
                "network",
                "postgres",
                "http",
                "dns",
                "echo2",
                "control",
                "auth-keys",
                "router",
                "router2",
                "client"
            ]
        );
        assert!(
            item(&plan, "router").detail.starts_with("site 1: ")
                && item(&plan, "router").detail.contains("198-19-1-10-via-1"),
            "{:?}",
            item(&plan, "router")
        );
        assert!(
            item(&plan, "router2")
                .detail
                .contains("cw-t-vpc2 as 4via6 site 2"),
            "{:?}",
            item(&plan, "router2")
        );
        assert!(
            item(&plan, "control")
                .detail
                .contains("site:1:198.19.1.0/24 and site:2:198.19.1.0/24"),
            "{:?}",
            item(&plan, "control")
        );
        assert!(
            item(&plan, "network").detail.contains("rtr2,vpc,vpc2,cli"),
            "{:?}",
            item(&plan, "network")
        );
    }

    #[test]
    fn a_via6_client_is_ready_only_with_both_sites_4via6_routes() {
        let ula = "fd7a:115c:a1e0::/48";
        let status = |routes: &[&str]| {
            NodeSummary::from_status(&serde_json::json!({
                "state": "running",
                "addresses": ["100.64.0.3/32", "fd7a:115c:a1e0::3/128"],
                "kernel_routes": routes,
                "peers": [{"name": "router", "allowed_ips": routes}],
            }))
        };
        let site1 = "fd7a:115c:a1e0:b1a:0:1:c613:100/120";
        let site2 = "fd7a:115c:a1e0:b1a:0:2:c613:100/120";
        let both = status(&[site1, site2]);
        assert_eq!(
            both.tailnet_ula().map(|n| n.to_string()).as_deref(),
            Some(ula)
        );
        assert!(node_ready(Node::Client, &both, None, true));
        assert!(!node_ready(Node::Client, &status(&[site1]), None, true));
        // The plain IPv4 route is not what a via6 client waits for, and
        // the via6 routes are not what a plain one waits for.
        assert!(!node_ready(
            Node::Client,
            &status(&[VPC_SUBNET]),
            None,
            true
        ));
        assert!(!node_ready(Node::Client, &both, None, false));
    }

    #[test]
    fn services_only_skips_the_appliance() {
        let want = Wanted {
            control: false,
            router: false,
            ha: false,
            snat: true,
            exit_node: false,
            app_connector: false,
            via6: false,
            client: false,
        };
        let plan = plan_from(&nothing(), &topo(false), &want);
        let skipped = plan
            .items
            .iter()
            .filter(|i| i.action == Action::Skip)
            .count();
        assert_eq!(skipped, 4);
    }

    #[test]
    fn ha_plans_the_second_router_and_its_network() {
        let mut obs = nothing();
        obs.auth_keys.insert(Node::Router2, false);
        obs.nodes.insert(Node::Router2, Health::Down);
        let want = Wanted {
            ha: true,
            snat: true,
            ..all_wanted()
        };
        let plan = plan_from(&obs, &topo(true), &want);
        let components: Vec<_> = plan.items.iter().map(|i| i.component).collect();
        assert_eq!(
            components,
            [
                "network",
                "postgres",
                "http",
                "dns",
                "control",
                "auth-keys",
                "router",
                "router2",
                "client"
            ]
        );
        let router2 = item(&plan, "router2");
        assert_eq!(router2.action, Action::Start);
        assert!(router2.detail.contains("cw-t-rtr2"), "{router2:?}");
        assert!(
            plan.items[0]
                .detail
                .contains("{pub,ctl,igw,rtr,rtr2,vpc,cli}")
                && plan.items[0].detail.contains("br-vpc 198.19.1.10/24"),
            "{}",
            plan.items[0].detail
        );
        assert!(item(&plan, "auth-keys").detail.contains("router2"));
    }

    #[test]
    fn exit_node_plans_the_echo_server_and_the_exit_node_before_the_client() {
        let mut obs = nothing();
        obs.auth_keys.insert(Node::Exit, false);
        obs.nodes.insert(Node::Exit, Health::Down);
        let want = Wanted {
            exit_node: true,
            ..all_wanted()
        };
        let exit_topo = Topology::for_layout("t".parse().expect("valid"), false, true);
        let plan = plan_from(&obs, &exit_topo, &want);
        assert_eq!(
            actions(&plan),
            [
                ("network", Action::Create),
                ("postgres", Action::Create),
                ("http", Action::Create),
                ("dns", Action::Create),
                ("echo", Action::Create),
                ("control", Action::Create),
                ("auth-keys", Action::Create),
                ("router", Action::Start),
                ("exit", Action::Start),
                ("client", Action::Start),
            ]
        );
        assert!(
            plan.items[0]
                .detail
                .contains("{pub,ctl,igw,rtr,vpc,exit,web,cli}"),
            "{}",
            plan.items[0].detail
        );
        assert!(item(&plan, "echo").detail.contains("cw-t-web"));
        assert!(item(&plan, "control").detail.contains("exit routes"));
        assert!(
            item(&plan, "auth-keys")
                .detail
                .contains("exit (tag:exit-node)")
        );
        assert!(item(&plan, "exit").detail.contains("cw-t-exit"));
        assert!(item(&plan, "exit").detail.contains("198.18.0.6"));
        assert!(
            item(&plan, "client")
                .detail
                .contains("through exit node exit")
        );

        // A healthy exit deployment plans nothing; a dead echo server is restarted.
        let mut up = healthy();
        up.echo = true;
        up.auth_keys.insert(Node::Exit, true);
        up.nodes.insert(Node::Exit, Health::Up);
        assert!(plan_from(&up, &exit_topo, &want).is_noop());
        up.echo = false;
        let again = plan_from(&up, &exit_topo, &want);
        assert_eq!(item(&again, "echo").action, Action::Start);
        // The subnet-router plan has neither.
        let single = plan_from(&healthy(), &topo(false), &all_wanted());
        assert!(
            !single
                .items
                .iter()
                .any(|i| i.component == "echo" || i.component == "exit")
        );
    }
}
