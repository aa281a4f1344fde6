//! `status`: what runs for a deployment (found by its tag), whether it is
//! healthy, and, when control's admin API is given, which router of an HA
//! pair is primary.

use std::fmt::Write as _;

use serde::Serialize;

use super::AwsOptions;
use super::api::{Aws, Instance};
use crate::cloud::Verdict;
use crate::console::OutputFormat;

/// One instance with its place in the HA pair.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// The instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// `primary`, `standby`, `offline` (registered, not connected), `not
    /// registered`, or `unknown` (no admin API or no answer).
    pub ha_role: String,
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
    /// Every instance runs.
    pub healthy: bool,
    /// Why not healthy, or where the primary came from.
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
    let primaries = match &opts.admin {
        Some(admin) => match admin.routes().await {
            Ok(routes) => Some(routes),
            Err(e) => {
                notes.push(format!(
                    "could not ask control which router is primary: {e:#}"
                ));
                None
            }
        },
        None => {
            if instances.len() > 1 {
                notes.push("pass --control-admin-url and --control-admin-token-file to see which instance is primary".into());
            }
            None
        }
    };
    let statuses = instances
        .into_iter()
        .map(|i| {
            let ha_role = match &primaries {
                None => "unknown".to_owned(),
                Some(routes) => match routes
                    .iter()
                    .find(|r| r.name == i.hostname || r.name == i.id || r.name == i.name)
                {
                    Some(r) if !r.primary.is_empty() => "primary".to_owned(),
                    Some(r) if !r.online => "offline".to_owned(),
                    Some(_) => "standby".to_owned(),
                    None => "not registered".to_owned(),
                },
            };
            InstanceStatus {
                instance: i,
                ha_role,
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
    for s in &statuses {
        if s.instance.state != "running" {
            notes.push(format!(
                "{} ({}) is {}",
                s.instance.name, s.instance.id, s.instance.state
            ));
        }
    }
    let healthy = !statuses.is_empty() && statuses.iter().all(|s| s.instance.state == "running");
    Ok(StatusReport {
        deployment: name.to_owned(),
        region: aws.region.clone(),
        instances: statuses,
        resources,
        healthy,
        notes,
    })
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
    }
    for res in &r.resources {
        let _ = writeln!(out, "  {res}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}
