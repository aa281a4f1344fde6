//! `status`: what runs for a deployment (found by its tag) and whether it
//! is healthy: every instance running and, by control's word (its admin
//! API), every appliance registered, connected, and for routers approved
//! with one primary per route.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::AwsOptions;
use super::api::{Aws, Instance};
use super::control::NodeView;
use super::health::{self, ApplianceHealth};
use super::network;
use super::spec;
use crate::cloud::Verdict;
use crate::console::OutputFormat;
use crate::role::Role;

/// One instance with its place in the HA pair and its appliance's health.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// `primary`, `standby`, `offline` (registered, not connected), `not
    /// registered`, or `unknown` (no admin API or no answer).
    pub ha_role: String,
    /// What control says of its appliance (none: control was not asked,
    /// or the role joins no tailnet).
    pub appliance: Option<ApplianceHealth>,
    /// An exit node's egress interface and the NAT gateway behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressStatus>,
    /// An app connector's domains, as its launch template's user data
    /// names them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_connector: Option<ConnectorStatus>,
    /// A 4via6 router's site and routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via6: Option<Via6Status>,
}

/// A 4via6 router, as `status` shows it: the site and IPv4 ranges its
/// launch template's user data names, and the IPv6 routes control lists
/// for it, read back into site and range.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Via6Status {
    /// The site ID of its routes (none when the launch template could not
    /// be read).
    pub site_id: Option<u16>,
    /// The IPv4 ranges it serves at the site.
    pub ranges: Vec<String>,
    /// The 4via6 routes control lists as advertised by it.
    pub routes: Vec<Via6Route>,
}

/// One advertised 4via6 route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Via6Route {
    /// The site ID in the route.
    pub site_id: u16,
    /// The IPv4 range it stands for.
    pub range: String,
    /// The IPv6 route in the tailnet's range.
    pub prefix: String,
}

/// An app connector, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorStatus {
    /// The domains it routes (`[app_connector] domains`); empty when the
    /// launch template could not be read.
    pub domains: Vec<String>,
}

/// An exit node's egress interface, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EgressStatus {
    /// The interface (`eni-…`).
    pub interface: String,
    /// Its subnet.
    pub subnet: String,
    /// Its private address.
    pub private_ip: String,
    /// Its MAC address (the appliance's `egress_mac`).
    pub mac: String,
    /// The subnet's route table.
    pub route_table: Option<String>,
    /// The NAT gateway its default route points at.
    pub nat_gateway: Option<String>,
    /// The NAT gateway's public address: what third parties see.
    pub third_parties_see: Option<String>,
}

/// The result of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Deployment.
    pub deployment: String,
    /// Region.
    pub region: String,
    /// Instances.
    pub instances: Vec<InstanceStatus>,
    /// Other resources carrying the deployment's tag, as `kind name`.
    pub resources: Vec<String>,
    /// Every instance runs and every appliance is healthy by control's word.
    pub healthy: bool,
    /// Why not healthy.
    pub notes: Vec<String>,
}

/// Runs `status`.
pub async fn run(opts: &AwsOptions, format: OutputFormat) -> anyhow::Result<Verdict> {
    let aws = Aws::connect(&opts.endpoint).await?;
    let report = inspect(&aws, opts).await?;
    match format {
        OutputFormat::Text => crate::console::print_result(&render(&report)),
        OutputFormat::Json => {
            crate::console::print_result(&format!("{}\n", serde_json::to_string_pretty(&report)?))
        }
    }
    Ok(if report.healthy {
        Verdict::Healthy
    } else {
        Verdict::Unhealthy
    })
}

async fn inspect(aws: &Aws, opts: &AwsOptions) -> anyhow::Result<StatusReport> {
    let name = opts.name.as_str();
    let role = opts.role.map(|r| r.as_str());
    let instances = aws.instances_of(name, role).await?;
    let mut notes = Vec::new();
    let joins = |i: &Instance| role_of(i).is_none_or(Role::needs_auth_key);
    let nodes = match &opts.admin {
        Some(admin) => match admin.nodes().await {
            Ok(nodes) => Some(nodes),
            Err(e) => {
                notes.push(format!("could not ask control about the appliances: {e:#}"));
                None
            }
        },
        None => {
            if instances.iter().any(joins) {
                notes.push(
                    "appliance health unknown: pass --control-admin-url and \
                     --control-admin-token-file so control can say whether each appliance \
                     joined, and which router is primary"
                        .into(),
                );
            }
            None
        }
    };
    let via6 = if instances.iter().any(|i| role_of(i) == Some(Role::Via6)) {
        Some(via6_of(aws, opts, &mut notes).await?)
    } else {
        None
    };
    let via6_wanted: Vec<String> = via6.as_ref().map_or_else(Vec::new, |v| {
        v.site_id.map_or_else(Vec::new, |site| {
            v.ranges
                .iter()
                .map(|r| health::via6_route(site, r))
                .collect()
        })
    });
    let judged = nodes
        .as_ref()
        .map(|nodes| judge(&instances, nodes, &via6_wanted));
    let connector = if instances
        .iter()
        .any(|i| role_of(i) == Some(Role::AppConnector))
    {
        Some(connector_of(aws, opts, &mut notes).await?)
    } else {
        None
    };
    let notes_before_egress = notes.len();
    let mut egress = egress_of(aws, name, &instances, &mut notes).await?;
    let egress_sound = notes.len() == notes_before_egress;
    let statuses = instances
        .into_iter()
        .enumerate()
        .map(|(n, i)| {
            let appliance = match &judged {
                Some(judged) if joins(&i) => judged[n].clone(),
                _ => None,
            };
            let ha_role = match (role_of(&i), &appliance) {
                // Exit nodes serve side by side: none is primary.
                (Some(Role::ExitNode), Some(h)) if h.node.is_some() && h.online => "exit node",
                // A connector is primary for what it learned, and may
                // have learned nothing yet: it is no standby.
                (Some(Role::AppConnector), Some(h)) if h.node.is_some() && h.online => {
                    "app connector"
                }
                (_, h) => h.as_ref().map_or("unknown", ApplianceHealth::ha_role),
            }
            .to_owned();
            InstanceStatus {
                egress: egress.remove(&i.id),
                app_connector: connector
                    .clone()
                    .filter(|_| role_of(&i) == Some(Role::AppConnector)),
                via6: via6
                    .clone()
                    .filter(|_| role_of(&i) == Some(Role::Via6))
                    .map(|v| Via6Status {
                        routes: nodes
                            .as_deref()
                            .and_then(|nodes| health::node_of(&i, nodes))
                            .map(advertised_via6)
                            .unwrap_or_default(),
                        ..v
                    }),
                instance: i,
                ha_role,
                appliance,
            }
        })
        .collect::<Vec<_>>();
    let mut resources = Vec::new();
    for sg in aws.security_groups_of(name).await? {
        resources.push(format!("security group {} ({})", sg.name, sg.id));
    }
    for lt in aws.launch_templates_of(name).await? {
        resources.push(format!("launch template {} ({})", lt.name, lt.id));
    }
    for s in aws.secrets_of(name).await? {
        resources.push(format!("secret {}", s.name));
    }
    for b in aws.buckets_of(name).await? {
        resources.push(format!("bucket {b}"));
    }
    for e in aws.resolver_endpoints_of(name).await? {
        resources.push(format!(
            "resolver endpoint {} ({}, {})",
            e.name, e.id, e.status
        ));
    }
    if statuses.is_empty() {
        notes.push(format!("no instance is tagged causeway:deployment={name}"));
    }
    let mut healthy = !statuses.is_empty() && egress_sound;
    for s in &statuses {
        let i = &s.instance;
        if i.state != "running" {
            notes.push(format!("{} ({}) is {}", i.name, i.id, i.state));
            healthy = false;
        }
        match &s.appliance {
            Some(h) if !h.healthy() => {
                notes.push(format!("{} ({}): {}", i.name, i.id, h.missing.join("; ")));
                healthy = false;
            }
            Some(_) => {}
            None if joins(i) => healthy = false,
            None => {}
        }
    }
    Ok(StatusReport {
        deployment: name.to_owned(),
        region: aws.region.clone(),
        instances: statuses,
        resources,
        healthy,
        notes,
    })
}

/// The egress interface of each instance holding one (by instance id),
/// with the NAT gateway its subnet's default route points at; an egress
/// interface no instance holds, or whose subnet no longer routes through a
/// NAT gateway, is a note (and unhealthy).
async fn egress_of(
    aws: &Aws,
    name: &str,
    instances: &[Instance],
    notes: &mut Vec<String>,
) -> anyhow::Result<std::collections::BTreeMap<String, EgressStatus>> {
    let mut out = std::collections::BTreeMap::new();
    for eni in aws.egress_interfaces_of(name).await? {
        let Some(holder) = eni
            .attachment
            .as_ref()
            .and_then(|(id, _)| instances.iter().find(|i| i.id == *id))
        else {
            notes.push(format!(
                "egress interface {} ({}) is attached to no instance of the deployment",
                eni.id, eni.subnet
            ));
            continue;
        };
        let tables = aws.route_tables(&holder.vpc).await?;
        let table = network::table_of(&eni.subnet, &tables);
        let target = table
            .and_then(|t| t.routes.iter().find(|r| r.destination == "0.0.0.0/0"))
            .map(|r| r.target.clone());
        let nat_gateway = target.clone().filter(|t| t.starts_with("nat-"));
        let third_parties_see = match &nat_gateway {
            Some(id) => aws
                .nat_gateway(id)
                .await?
                .and_then(|g| g.public_ips.first().cloned()),
            None => {
                notes.push(format!(
                    "egress interface {} ({}): 0.0.0.0/0 in {} goes to {}, not a NAT gateway",
                    eni.id,
                    eni.subnet,
                    table.map_or("(no route table)", |t| t.id.as_str()),
                    target.as_deref().unwrap_or("nothing")
                ));
                None
            }
        };
        out.insert(
            holder.id.clone(),
            EgressStatus {
                interface: eni.id,
                subnet: eni.subnet,
                private_ip: eni.private_ip,
                mac: eni.mac,
                route_table: table.map(|t| t.id.clone()),
                nat_gateway,
                third_parties_see,
            },
        );
    }
    Ok(out)
}

/// The app connector's domains, read from its launch template's user data
/// (the config its instances boot with); a template that is missing or
/// names none is a note, and the domains are left empty.
async fn connector_of(
    aws: &Aws,
    opts: &AwsOptions,
    notes: &mut Vec<String>,
) -> anyhow::Result<ConnectorStatus> {
    let name = spec::Names::new(opts.name.clone(), Role::AppConnector).base();
    let template = aws.launch_template(&name).await?;
    let domains = template
        .as_ref()
        .and_then(|t| t.data.as_ref())
        .and_then(|d| domains_in_user_data(&d.user_data));
    if domains.is_none() {
        notes.push(format!(
            "launch template {name}: no [app_connector] domains in its user data; the connector's domains are unknown"
        ));
    }
    Ok(ConnectorStatus {
        domains: domains.unwrap_or_default(),
    })
}

/// `[app_connector] domains` in an appliance config.
fn domains_in_user_data(text: &str) -> Option<Vec<String>> {
    let v: toml::Value = toml::from_str(text).ok()?;
    let list = v.get("app_connector")?.get("domains")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect(),
    )
}

/// The 4via6 router's site and ranges, read from its launch template's
/// user data; a template that is missing or names no site is a note.
async fn via6_of(
    aws: &Aws,
    opts: &AwsOptions,
    notes: &mut Vec<String>,
) -> anyhow::Result<Via6Status> {
    let name = spec::Names::new(opts.name.clone(), Role::Via6).base();
    let template = aws.launch_template(&name).await?;
    let site = template
        .as_ref()
        .and_then(|t| t.data.as_ref())
        .and_then(|d| site_in_user_data(&d.user_data));
    if site.is_none() {
        notes.push(format!(
            "launch template {name}: no [subnet_router] routes with a site_id in its user data; the 4via6 site is unknown"
        ));
    }
    let (site_id, ranges) = site.map_or((None, Vec::new()), |(s, r)| (Some(s), r));
    Ok(Via6Status {
        site_id,
        ranges,
        routes: Vec::new(),
    })
}

/// The site ID and the ranges of `[subnet_router] routes` in an appliance
/// config, when every route carries the same `site_id`.
fn site_in_user_data(text: &str) -> Option<(u16, Vec<String>)> {
    let v: toml::Value = toml::from_str(text).ok()?;
    let routes = v.get("subnet_router")?.get("routes")?.as_array()?;
    let mut site = None;
    let mut ranges = Vec::new();
    for r in routes {
        let this = u16::try_from(r.get("site_id")?.as_integer()?).ok()?;
        if *site.get_or_insert(this) != this {
            return None;
        }
        ranges.push(r.get("prefix")?.as_str()?.to_owned());
    }
    site.map(|s| (s, ranges))
}

/// The 4via6 routes control lists as advertised by `node`, read back
/// into site and range with the node's tailnet /48.
fn advertised_via6(node: &NodeView) -> Vec<Via6Route> {
    health::node_ula(node).map_or_else(Vec::new, |ula| {
        health::via6_routes(ula, &node.advertised_routes)
            .into_iter()
            .map(|(site_id, range, prefix)| Via6Route {
                site_id,
                range: range.to_string(),
                prefix: prefix.to_string(),
            })
            .collect()
    })
}

/// The role an instance's tag names, if it is one we know.
fn role_of(i: &Instance) -> Option<Role> {
    <Role as clap::ValueEnum>::from_str(&i.role, false).ok()
}

/// Each instance's health, judged per role: a router should have every
/// route any router of its role advertises approved, with one primary; a
/// 4via6 router every route its user data names (`via6_wanted`, as
/// `site:N:CIDR`), when known.
fn judge(
    instances: &[Instance],
    nodes: &[NodeView],
    via6_wanted: &[String],
) -> Vec<Option<ApplianceHealth>> {
    let mut out = vec![None; instances.len()];
    let roles: BTreeSet<&str> = instances.iter().map(|i| i.role.as_str()).collect();
    for role in roles {
        let members: Vec<usize> = (0..instances.len())
            .filter(|&n| instances[n].role == role)
            .collect();
        let group: Vec<Instance> = members.iter().map(|&n| instances[n].clone()).collect();
        let routes: Vec<String> =
            if role_of(&group[0]) == Some(Role::Via6) && !via6_wanted.is_empty() {
                via6_wanted.to_vec()
            } else if role_of(&group[0]).is_some_and(Role::advertises_routes) {
                group
                    .iter()
                    .filter_map(|i| health::node_of(i, nodes))
                    .flat_map(|n| n.advertised_routes.iter().map(ToString::to_string))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            };
        for (n, h) in members
            .into_iter()
            .zip(health::assess(&group, nodes, &routes))
        {
            out[n] = Some(h);
        }
    }
    out
}

fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "deployment {} in {}: {}",
        r.deployment,
        r.region,
        if r.healthy { "healthy" } else { "NOT healthy" }
    );
    for s in &r.instances {
        let i = &s.instance;
        let _ = writeln!(
            out,
            "  {} {} {} {} in {} ({}), {}, private {}{}",
            i.name,
            i.role,
            i.id,
            i.instance_type,
            i.az,
            i.state,
            s.ha_role,
            i.private_ip,
            i.public_ip
                .as_ref()
                .map(|p| format!(", public {p}"))
                .unwrap_or_default()
        );
        if let Some(h) = &s.appliance {
            let _ = writeln!(out, "    {}", h.describe());
        }
        if i.role == Role::ExitNode.as_str() {
            let _ = writeln!(out, "    {}", exit_node_line(s));
        }
        if let Some(c) = &s.app_connector {
            let _ = writeln!(out, "    {}", connector_line(c, s.appliance.as_ref()));
        }
        if let Some(v) = &s.via6 {
            let _ = writeln!(out, "    {}", via6_line(v));
        }
    }
    for res in &r.resources {
        let _ = writeln!(out, "  {res}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

/// What an exit node's line says: the routes it offers and where the
/// tailnet's internet traffic leaves, so what third parties see.
fn exit_node_line(s: &InstanceStatus) -> String {
    let offers = "exit node: offers 0.0.0.0/0 and ::/0";
    match &s.egress {
        Some(e) => format!(
            "{offers}; internet traffic leaves through egress interface {} ({}, MAC {}) in {}, 0.0.0.0/0 via {} in {}: third parties see {}",
            e.interface,
            e.private_ip,
            e.mac,
            e.subnet,
            e.nat_gateway.as_deref().unwrap_or("(no NAT gateway)"),
            e.route_table.as_deref().unwrap_or("(no route table)"),
            e.third_parties_see.as_deref().unwrap_or("(unknown)")
        ),
        None => format!(
            "{offers}; internet traffic leaves through its own interface: third parties see {}",
            s.instance
                .public_ip
                .as_deref()
                .unwrap_or("(no public address)")
        ),
    }
}

/// What an app connector's line says: the domains it routes and, when
/// control was asked, how many routes it has learned and advertises.
fn connector_line(c: &ConnectorStatus, health: Option<&ApplianceHealth>) -> String {
    let domains = if c.domains.is_empty() {
        "(unknown)".to_owned()
    } else {
        c.domains.join(", ")
    };
    match health.filter(|h| h.node.is_some()) {
        Some(h) => format!(
            "app connector: routes what {domains} resolve to; {} learned route(s) advertised",
            h.routes.len()
        ),
        None => format!("app connector: routes what {domains} resolve to"),
    }
}

/// What a 4via6 router's line says: its site, its ranges and the IPv6
/// routes control lists for them.
fn via6_line(v: &Via6Status) -> String {
    let site = v
        .site_id
        .map_or_else(|| "(unknown)".to_owned(), |s| s.to_string());
    let ranges = if v.ranges.is_empty() {
        "(unknown)".to_owned()
    } else {
        v.ranges.join(", ")
    };
    let routes: Vec<String> = v
        .routes
        .iter()
        .map(|r| format!("site {} {} as {}", r.site_id, r.range, r.prefix))
        .collect();
    if routes.is_empty() {
        format!(
            "4via6 site {site}: serves {ranges}; no 4via6 route advertised (or control not asked)"
        )
    } else {
        format!(
            "4via6 site {site}: serves {ranges}; advertises {}",
            routes.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_via6_site_is_read_from_its_user_data_and_its_routes_from_control() {
        let text = "[node]\ncontrol_url = \"http://c\"\n\n[subnet_router]\nroutes = [\n  { prefix = \"10.0.0.0/16\", snat = true, site_id = 7 },\n  { prefix = \"10.1.0.0/24\", snat = true, site_id = 7 },\n]\n";
        assert_eq!(
            site_in_user_data(text),
            Some((7, vec!["10.0.0.0/16".to_owned(), "10.1.0.0/24".to_owned()]))
        );
        let plain = "[subnet_router]\nroutes = [{ prefix = \"10.0.0.0/16\", snat = true }]\n";
        assert_eq!(site_in_user_data(plain), None);
        let mixed = "[subnet_router]\nroutes = [{ prefix = \"10.0.0.0/16\", site_id = 7 }, { prefix = \"10.1.0.0/16\", site_id = 8 }]\n";
        assert_eq!(site_in_user_data(mixed), None);
        assert_eq!(site_in_user_data("not toml ["), None);

        let node: NodeView = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "ip-10-0-1-5", "hostname": "ip-10-0-1-5",
            "node_key": "k", "machine_key": null,
            "addresses": ["100.64.0.5/32", "fd7a:115c:a1e0::5/128"],
            "tags": ["tag:via6"], "user": null, "ephemeral": false,
            "wireguard_only": false, "online": true, "key_expiry": null,
            "expired": false, "last_seen": null, "endpoints": [],
            "advertised_routes": ["fd7a:115c:a1e0:b1a:0:7:a00:0/112", "198.19.0.0/16"],
            "approved_routes": [], "primary_routes": [], "standby_routes": []
        }))
        .expect("a node view");
        let routes = advertised_via6(&node);
        assert_eq!(
            routes,
            [Via6Route {
                site_id: 7,
                range: "10.0.0.0/16".into(),
                prefix: "fd7a:115c:a1e0:b1a:0:7:a00:0/112".into(),
            }]
        );
        let v = Via6Status {
            site_id: Some(7),
            ranges: vec!["10.0.0.0/16".into()],
            routes,
        };
        assert_eq!(
            via6_line(&v),
            "4via6 site 7: serves 10.0.0.0/16; advertises site 7 10.0.0.0/16 as fd7a:115c:a1e0:b1a:0:7:a00:0/112"
        );
        assert!(
            via6_line(&Via6Status::default())
                .starts_with("4via6 site (unknown): serves (unknown); no 4via6 route")
        );
    }

    #[test]
    fn the_connector_domains_are_read_from_its_user_data() {
        let text = "state_dir = \"/var/lib/causeway\"\n[node]\ncontrol_url = \"http://c\"\n\n[app_connector]\ndomains = [\"app.example.com\", \"*.example.net\"]\nmax_routes = 5\n";
        assert_eq!(
            domains_in_user_data(text),
            Some(vec![
                "app.example.com".to_owned(),
                "*.example.net".to_owned()
            ])
        );
        assert_eq!(domains_in_user_data("[exit_node]\nipv6 = true\n"), None);
        assert_eq!(domains_in_user_data("not toml ["), None);

        let c = ConnectorStatus {
            domains: vec!["app.example.com".into(), "*.example.net".into()],
        };
        assert_eq!(
            connector_line(&c, None),
            "app connector: routes what app.example.com, *.example.net resolve to"
        );
        let health = ApplianceHealth {
            node: Some("ip-10-0-1-5".into()),
            online: true,
            last_seen: None,
            key_expiry: None,
            routes: vec!["198.18.100.12/31".into()],
            primary_routes: vec!["198.18.100.12/31".into()],
            missing: vec![],
        };
        assert_eq!(
            connector_line(&c, Some(&health)),
            "app connector: routes what app.example.com, *.example.net resolve to; 1 learned route(s) advertised"
        );
        let unknown = ConnectorStatus { domains: vec![] };
        assert!(connector_line(&unknown, None).contains("(unknown)"));
    }
}
