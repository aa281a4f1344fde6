//! `destroy`: removes exactly what carries `causeway:deployment=NAME`, in
//! dependency order (return routes, instances, Elastic IPs, volumes and
//! egress interfaces,
//! launch templates, resolver endpoints, security groups, IAM, secrets,
//! buckets), then lists again to
//! prove nothing is left. Every step tolerates what is already gone, so a
//! failed destroy is simply run again.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::AwsOptions;
use super::api::Aws;
use super::network;
use super::spec::TAG_DEPLOYMENT;
use super::wait::{self, Waited};
use crate::cloud::Verdict;
use crate::console::{OutputFormat, Progress, ProgressSink, StepOutcome};

/// The result of `destroy`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DestroyReport {
    /// Deployment.
    pub deployment: String,
    /// What was deleted, as `kind name`.
    pub deleted: Vec<String>,
    /// What still carries the tag afterwards.
    pub leftovers: Vec<String>,
}

/// Runs `destroy`.
pub async fn run(opts: &AwsOptions, format: OutputFormat) -> anyhow::Result<Verdict> {
    if let Some(role) = opts.role {
        anyhow::bail!(
            "--role {role}: destroy --cloud aws removes the whole deployment (everything tagged {TAG_DEPLOYMENT}={}); run it without --role",
            opts.name
        );
    }
    let aws = Aws::connect(&opts.endpoint).await?;
    let sink = match format {
        OutputFormat::Text => ProgressSink::Stdout,
        OutputFormat::Json => ProgressSink::Stderr,
    };
    let mut d = Destroyer {
        aws: &aws,
        opts,
        name: opts.name.to_string(),
        progress: Progress::new(sink, 9),
        report: DestroyReport {
            deployment: opts.name.to_string(),
            ..Default::default()
        },
    };
    macro_rules! step {
        ($label:expr, $call:expr) => {{
            d.progress.begin($label);
            let before = d.report.deleted.len();
            match $call.await {
                Ok(()) => {
                    let n = d.report.deleted.len() - before;
                    d.progress.end(if n > 0 {
                        StepOutcome::Changed
                    } else {
                        StepOutcome::Unchanged
                    });
                    let lines: Vec<String> = d.report.deleted[before..].to_vec();
                    for l in lines {
                        d.progress.detail(&format!("deleted {l}"));
                    }
                }
                Err(e) => {
                    d.progress.fail();
                    let step = d.progress.current_step();
                    return Err(e.context(format!(
                        "destroy stopped at {step}; run destroy again to continue"
                    )));
                }
            }
        }};
    }
    step!("return routes and instances", d.instances());
    step!(
        "Elastic IPs, volumes and egress interfaces",
        d.addresses_and_volumes()
    );
    step!("launch templates", d.launch_templates());
    step!("resolver endpoints", d.resolver_endpoints());
    step!("security groups", d.security_groups());
    step!("IAM roles, inline policies and instance profiles", d.iam());
    step!("secrets", d.secrets());
    step!("recordings buckets", d.buckets());
    d.progress.begin("checking nothing tagged is left");
    let leftovers = leftovers(&aws, &d.name).await?;
    d.progress.end(StepOutcome::Checked);
    d.report.leftovers = leftovers;
    let report = d.report;
    match format {
        OutputFormat::Text => crate::console::print_result(&render(&report)),
        OutputFormat::Json => {
            crate::console::print_result(&format!("{}\n", serde_json::to_string_pretty(&report)?))
        }
    }
    if !report.leftovers.is_empty() {
        anyhow::bail!(
            "destroy left resources behind: {}",
            report.leftovers.join(", ")
        );
    }
    Ok(Verdict::Healthy)
}

/// Everything still tagged with the deployment.
pub async fn leftovers(aws: &Aws, name: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for i in aws.instances_of(name, None).await? {
        out.push(format!("instance {} ({})", i.name, i.id));
    }
    for a in aws.addresses_of(name).await? {
        out.push(format!("Elastic IP {} ({})", a.public_ip, a.allocation_id));
    }
    for v in aws.volumes_of(name).await? {
        out.push(format!("volume {}", v.id));
    }
    for e in aws.egress_interfaces_of(name).await? {
        out.push(format!("egress interface {}", e.id));
    }
    for t in aws.launch_templates_of(name).await? {
        out.push(format!("launch template {}", t.name));
    }
    for e in aws.resolver_endpoints_of(name).await? {
        out.push(format!("resolver endpoint {}", e.id));
    }
    for g in aws.security_groups_of(name).await? {
        out.push(format!("security group {} ({})", g.name, g.id));
    }
    for r in iam_roles_of(aws, name).await? {
        out.push(format!("IAM role {r}"));
    }
    for s in aws.secrets_of(name).await? {
        out.push(format!("secret {}", s.name));
    }
    for b in aws.buckets_of(name).await? {
        out.push(format!("bucket {b}"));
    }
    Ok(out)
}

async fn iam_roles_of(aws: &Aws, name: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for role in aws.role_names(&format!("causeway-{name}-")).await? {
        if let Some(r) = aws.role(&role).await?
            && r.tags.get(TAG_DEPLOYMENT).map(String::as_str) == Some(name)
        {
            out.push(role);
        }
    }
    Ok(out)
}

struct Destroyer<'a> {
    aws: &'a Aws,
    opts: &'a AwsOptions,
    name: String,
    progress: Progress,
    report: DestroyReport,
}

impl Destroyer<'_> {
    fn deleted(&mut self, what: String) {
        self.report.deleted.push(what);
    }

    async fn instances(&mut self) -> anyhow::Result<()> {
        let instances = self.aws.instances_of(&self.name, None).await?;
        let enis: Vec<String> = instances.iter().map(|i| i.eni.clone()).collect();
        let vpcs: std::collections::BTreeSet<String> = instances
            .iter()
            .map(|i| i.vpc.clone())
            .filter(|v| !v.is_empty())
            .collect();
        for vpc in vpcs {
            let tables = self.aws.route_tables(&vpc).await?;
            for change in network::tailnet_route_changes(&tables, None, &enis) {
                if let network::RouteChange::Delete { table } = change {
                    self.aws.set_tailnet_route(&table, None, false).await?;
                    self.deleted(format!("route {} in {table}", network::TAILNET_CIDR));
                }
            }
        }
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.aws.terminate(&ids).await?;
        let waited = wait::instances(
            self.aws,
            &ids,
            self.opts.wait_timeout,
            "gone",
            &mut self.progress,
            |states| {
                Ok(ids
                    .iter()
                    .all(|id| states.get(id).is_none_or(|s| s == "terminated")))
            },
        )
        .await?;
        if let Waited::TimedOut(line) = waited {
            anyhow::bail!(
                "instances not terminated after {} s ({line})",
                self.opts.wait_timeout.as_secs()
            );
        }
        for i in instances {
            self.deleted(format!("instance {} ({})", i.name, i.id));
        }
        Ok(())
    }

    /// Elastic IPs (control's, an exit node's) are released, control's
    /// state volume and an exit node's egress interface deleted (the only
    /// way they go: replacing the instance keeps them).
    async fn addresses_and_volumes(&mut self) -> anyhow::Result<()> {
        for e in self.aws.egress_interfaces_of(&self.name).await? {
            self.aws
                .delete_network_interface_when_detached(&e.id, self.opts.wait_timeout)
                .await?;
            self.deleted(format!("egress interface {} ({})", e.id, e.subnet));
        }
        for a in self.aws.addresses_of(&self.name).await? {
            self.aws.release_address(&a).await?;
            self.deleted(format!("Elastic IP {} ({})", a.public_ip, a.allocation_id));
        }
        for v in self.aws.volumes_of(&self.name).await? {
            // Detached when its instance terminated; a volume still held
            // (by an instance outside the deployment) is let go first.
            if v.attachment.is_some() {
                self.aws.detach_volume(&v.id).await?;
            }
            let started = Instant::now();
            loop {
                match self.aws.delete_volume(&v.id).await {
                    Ok(()) => break,
                    Err(e)
                        if e.code == "VolumeInUse"
                            && started.elapsed() < self.opts.wait_timeout =>
                    {
                        self.progress
                            .detail(&format!("{} still attached; waiting", v.id));
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            self.deleted(format!("volume {}", v.id));
        }
        Ok(())
    }

    async fn launch_templates(&mut self) -> anyhow::Result<()> {
        for t in self.aws.launch_templates_of(&self.name).await? {
            self.aws.delete_launch_template(&t.id).await?;
            self.deleted(format!("launch template {} ({})", t.name, t.id));
        }
        Ok(())
    }

    async fn resolver_endpoints(&mut self) -> anyhow::Result<()> {
        for e in self.aws.resolver_endpoints_of(&self.name).await? {
            self.aws.delete_resolver_endpoint(&e.id).await?;
            self.deleted(format!("resolver endpoint {} ({})", e.name, e.id));
        }
        Ok(())
    }

    async fn security_groups(&mut self) -> anyhow::Result<()> {
        for g in self.aws.security_groups_of(&self.name).await? {
            // Network interfaces of terminated instances and resolver
            // endpoints are released a little later: wait for that.
            let started = Instant::now();
            loop {
                match self.aws.delete_security_group(&g.id).await {
                    Ok(()) => break,
                    Err(e)
                        if e.code == "DependencyViolation"
                            && started.elapsed() < self.opts.wait_timeout =>
                    {
                        self.progress
                            .detail(&format!("{} still in use; waiting", g.id));
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            self.deleted(format!("security group {} ({})", g.name, g.id));
        }
        Ok(())
    }

    async fn iam(&mut self) -> anyhow::Result<()> {
        for role in iam_roles_of(self.aws, &self.name).await? {
            if let Some(roles) = self.aws.instance_profile(&role).await? {
                for r in roles {
                    self.aws.remove_role_from_profile(&role, &r).await?;
                }
                self.aws.delete_instance_profile(&role).await?;
                self.deleted(format!("instance profile {role}"));
            }
            for policy in self.aws.role_policies(&role).await?.keys() {
                self.aws.delete_role_policy(&role, policy).await?;
                self.deleted(format!("IAM inline policy {role}/{policy}"));
            }
            self.aws.delete_role(&role).await?;
            self.deleted(format!("IAM role {role}"));
        }
        Ok(())
    }

    async fn secrets(&mut self) -> anyhow::Result<()> {
        for s in self.aws.secrets_of(&self.name).await? {
            self.aws.delete_secret(&s.arn).await?;
            self.deleted(format!("secret {}", s.name));
        }
        Ok(())
    }

    async fn buckets(&mut self) -> anyhow::Result<()> {
        for b in self.aws.buckets_of(&self.name).await? {
            let objects = self.aws.bucket_object_count(&b).await?;
            if objects > 0 {
                if !self.opts.delete_recordings {
                    anyhow::bail!(
                        "bucket {b} still holds recordings ({objects}{} objects); copy them elsewhere, then run destroy with --delete-recordings",
                        if objects >= 1000 { "+" } else { "" }
                    );
                }
                let n = self
                    .aws
                    .empty_bucket(&b)
                    .await
                    .with_context(|| format!("emptying bucket {b}"))?;
                self.progress
                    .detail(&format!("deleted {n} recordings from {b}"));
            }
            self.aws.delete_bucket(&b).await?;
            self.deleted(format!("bucket {b}"));
        }
        Ok(())
    }
}

fn render(r: &DestroyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "destroyed deployment {}: {} resources deleted, {} left",
        r.deployment,
        r.deleted.len(),
        r.leftovers.len()
    );
    for l in &r.leftovers {
        let _ = writeln!(out, "  left: {l}");
    }
    out
}
