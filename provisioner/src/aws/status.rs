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
    let statuses = instances
        .into_iter()
        .enumerate()
        .map(|(n, i)| {
            let appliance = match &judged {
                Some(judged) if joins(&i) => judged[n].clone(),
                _ => None,
            };
            let ha_role = appliance
                .as_ref()
                .map_or("unknown", ApplianceHealth::ha_role)
                .to_owned();
            InstanceStatus {
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
    let mut healthy = !statuses.is_empty();
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
    }
    for res in &r.resources {
        let _ = writeln!(out, "  {res}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}
