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
    let judged = nodes.as_ref().map(|nodes| judge(&instances, nodes));
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

/// The role an instance's tag names, if it is one we know.
fn role_of(i: &Instance) -> Option<Role> {
    <Role as clap::ValueEnum>::from_str(&i.role, false).ok()
}

/// Each instance's health, judged per role: a router should have every
/// route any router of its role advertises approved, with one primary.
fn judge(instances: &[Instance], nodes: &[NodeView]) -> Vec<Option<ApplianceHealth>> {
    let mut out = vec![None; instances.len()];
    let roles: BTreeSet<&str> = instances.iter().map(|i| i.role.as_str()).collect();
    for role in roles {
        let members: Vec<usize> = (0..instances.len())
            .filter(|&n| instances[n].role == role)
            .collect();
        let group: Vec<Instance> = members.iter().map(|&n| instances[n].clone()).collect();
        let routes: Vec<String> = if role_of(&group[0]).is_some_and(Role::advertises_routes) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
