//! `plan` and `deploy`: check every flag ([`spec::check_flags`]) and read
//! the VPC, the catalogue and the image ([`super::prepare`]) before
//! anything is created; then walk the resources in dependency order, each
//! one observed ([`super::observe`]), compared with what the contract
//! wants ([`super::plan`]), and, for `deploy`, changed only where it
//! differs (so a second run changes nothing and a failed run resumes).
//! `plan` runs the same walk without applying anything; the changes
//! themselves are made in [`apply`].

mod apply;

use std::collections::BTreeMap;

use anyhow::Context;

use super::api::{Address, Aws, Instance, Volume};
use super::health::ApplianceHealth;
use super::network::{self, Subnet};
use super::observe;
use super::plan::{self, BucketWanted, Planned};
use super::prepare::{Prepared, prepare};
use super::report::{Change, Health, Item, Recorders, Report, SplitDns, dns_label};
use super::spec::{self, TemplateData};
use super::{AwsOptions, DnsMode};
use crate::cloud::Verdict;
use crate::console::{OutputFormat, Progress, ProgressSink, StepOutcome};
use crate::role::Role;

/// Whether the walk writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read and compare only.
    Plan,
    /// Create and repair.
    Apply,
}

/// Runs `plan` or `deploy`.
pub async fn run(opts: &AwsOptions, format: OutputFormat, mode: Mode) -> anyhow::Result<Verdict> {
    let role = spec::check_flags(opts)?;
    let wait_for_health = mode == Mode::Apply && !opts.health_timeout.is_zero();
    if wait_for_health && role.needs_auth_key() && opts.admin.is_none() {
        anyhow::bail!(
            "deploy waits until each appliance is healthy, which only control's admin API can tell: \
             pass --control-admin-url and --control-admin-token-file, or --health-timeout 0 to skip \
             the wait (refused before creating anything)"
        );
    }
    let aws = Aws::connect(&opts.endpoint).await?;
    let sink = match (mode, format) {
        (Mode::Plan, _) => ProgressSink::Silent,
        (Mode::Apply, OutputFormat::Text) => ProgressSink::Stdout,
        (Mode::Apply, OutputFormat::Json) => ProgressSink::Stderr,
    };
    let total = 8
        + 2 * usize::from(role.takes_egress_subnet())
        + usize::from(role == Role::Recorder)
        + usize::from(role == Role::Control)
        + usize::from(mode == Mode::Apply)
        + usize::from(mode == Mode::Apply && mints_keys(opts, role));
    let mut progress = Progress::new(sink, total);
    progress.begin("checking flags, VPC, image and instance catalogue");
    let prepared = match prepare(&aws, opts, role).await {
        Ok(p) => {
            progress.end(StepOutcome::Checked);
            p
        }
        Err(e) => {
            progress.fail();
            return Err(e.context("refused before creating anything"));
        }
    };
    progress.detail(&prepared.choice.explanation);
    if let Some(w) = &prepared.subnets.warning {
        progress.detail(&format!("warning: {w}"));
        tracing::warn!(warning = %w, "subnet choice");
    }
    let mut walk = Walk {
        aws: &aws,
        opts,
        p: &prepared,
        mode,
        items: Vec::new(),
        known: Known {
            secret_arn: prepared.secret.as_ref().map(|s| s.arn.clone()),
            ..Known::default()
        },
        instances: Vec::new(),
        split_dns: None,
        recorders: None,
        progress,
    };

    macro_rules! step {
        ($label:expr, $call:expr) => {{
            walk.progress.begin(&$label);
            let before = walk.items.len();
            let result: anyhow::Result<()> = $call.await;
            match result {
                Ok(()) => {
                    let changed = walk.items[before..]
                        .iter()
                        .any(|i| i.change != Change::Unchanged);
                    walk.progress.end(if changed {
                        StepOutcome::Changed
                    } else {
                        StepOutcome::Unchanged
                    });
                    let lines: Vec<String> = walk.items[before..].iter().map(Item::line).collect();
                    for line in lines {
                        walk.progress.detail(&line);
                    }
                }
                Err(e) => {
                    walk.progress.fail();
                    let step = walk.progress.current_step();
                    return Err(e.context(format!(
                        "deploy stopped at {step}; what was created so far stays and the next deploy resumes from here"
                    )));
                }
            }
        }};
    }

    let names = prepared.names.clone();
    step!(format!("auth key secret {}", names.secret()), walk.secret());
    step!(
        format!("IAM role and instance profile {}", names.base()),
        walk.iam()
    );
    step!(
        format!("security group {}", names.base()),
        walk.security_group()
    );
    if prepared.role == Role::Recorder {
        let bucket = prepared.bucket.clone().unwrap_or_default();
        step!(format!("recordings bucket {bucket}"), walk.bucket());
    }
    step!(format!("split DNS ({})", dns_label(opts.dns)), walk.dns());
    if prepared.role == Role::Control {
        // Before the launch template: its user data names the volume.
        step!(
            format!(
                "control's Elastic IP and state volume {}",
                names.state_volume()
            ),
            walk.control_resources()
        );
    }
    if prepared.role.takes_egress_subnet() {
        // Before the launch template: its user data names the interface's
        // MAC address.
        step!(
            format!("egress interface {} and Elastic IP", names.egress()),
            walk.egress(false)
        );
    }
    step!(
        format!("launch template {}", names.base()),
        walk.launch_template()
    );
    step!(
        format!("instances ({})", if opts.ha { "HA pair" } else { "one" }),
        walk.instances()
    );
    step!("source/destination check and return routes", walk.routing());
    if prepared.role.takes_egress_subnet() {
        step!("Elastic IP association", walk.egress(true));
    }
    if prepared.role == Role::Control {
        step!(
            "control's Elastic IP association and state volume attachment",
            walk.control_attachments()
        );
    }
    let health = match mode {
        Mode::Plan => Health::NotChecked(String::new()),
        Mode::Apply => walk.health().await?,
    };
    if mode == Mode::Apply && mints_keys(opts, role) {
        let joined = matches!(&health, Health::Checked(judged) if judged.iter().all(ApplianceHealth::healthy));
        if joined {
            step!(
                format!("retiring the auth key in {}", names.secret()),
                walk.retire_key()
            );
        } else {
            walk.progress
                .begin(&format!("retiring the auth key in {}", names.secret()));
            walk.progress.end(StepOutcome::Skipped);
        }
    }
    // After the health wait: by then the recorders have joined and control
    // knows their tailnet addresses.
    if prepared.role == Role::Recorder && mode == Mode::Apply {
        walk.recorders().await?;
    }

    let report = Report {
        command: match mode {
            Mode::Plan => "plan",
            Mode::Apply => "deploy",
        },
        deployment: opts.name.to_string(),
        role: prepared.role,
        region: aws.region.clone(),
        vpc: prepared.vpc.id.clone(),
        sizing: prepared.choice.clone(),
        image: prepared.image.id.clone(),
        arch: prepared.arch,
        subnets: prepared.subnets.subnets.clone(),
        routes: prepared.routes.clone(),
        site_id: prepared.site_id,
        warnings: prepared.subnets.warning.iter().cloned().collect(),
        items: walk.items.clone(),
        instances: walk.instances.clone(),
        split_dns: walk.split_dns.clone(),
        health,
        recorders: walk.recorders.clone(),
        domains: if prepared.role == Role::AppConnector {
            opts.domains.clone()
        } else {
            Vec::new()
        },
    };
    match format {
        OutputFormat::Text => crate::console::print_result(&report.render()),
        OutputFormat::Json => {
            crate::console::print_result(&format!("{}\n", serde_json::to_string_pretty(&report)?))
        }
    }
    Ok(match mode {
        Mode::Plan if report.unchanged() => Verdict::Healthy,
        Mode::Plan => Verdict::Unhealthy,
        Mode::Apply if report.healthy() => Verdict::Healthy,
        Mode::Apply => Verdict::Unhealthy,
    })
}

/// Whether deploy fills the auth key's secret with keys it mints in
/// control (rather than `--auth-key-file`'s), and so refreshes and
/// retires them.
fn mints_keys(opts: &AwsOptions, role: Role) -> bool {
    role.needs_auth_key() && opts.auth_key_file.is_none() && opts.admin.is_some()
}

/// What the walk has learnt of resources an earlier step read or made,
/// for the steps that need them.
#[derive(Debug, Default)]
struct Known {
    /// The auth key's secret.
    secret_arn: Option<String>,
    /// Security group ids by name.
    security_groups: BTreeMap<String, String>,
    /// The resolver endpoint this run created.
    resolver_created: Option<String>,
    /// The launch template.
    template_id: Option<String>,
    /// The launch template's default version once `launch_template` ran
    /// (in a plan: the version deploy would make the default).
    template_version: i64,
    /// Instances launched by this step, waited for at its end.
    launched: Vec<String>,
    /// Control's Elastic IP (`eipalloc-…`), once seen or allocated.
    address: Option<String>,
    /// Control's state volume (`vol-…`), once seen or created.
    volume: Option<String>,
    /// The egress interface (`eni-…`) and its MAC, once seen or created.
    egress_interface: Option<(String, String)>,
}

struct Walk<'a> {
    aws: &'a Aws,
    opts: &'a AwsOptions,
    p: &'a Prepared,
    mode: Mode,
    items: Vec<Item>,
    known: Known,
    instances: Vec<Instance>,
    split_dns: Option<SplitDns>,
    recorders: Option<Recorders>,
    progress: Progress,
}

impl Walk<'_> {
    fn deployment(&self) -> &str {
        self.opts.name.as_str()
    }

    fn tags(&self, name: &str) -> Vec<(String, String)> {
        self.p.names.tags(name)
    }

    /// Adds `planned`'s items to the report and, for `deploy`, applies its
    /// actions in order.
    async fn take(&mut self, planned: Planned) -> anyhow::Result<()> {
        self.items.extend(planned.items);
        if self.mode == Mode::Apply {
            for action in planned.actions {
                self.apply(action).await?;
            }
        }
        Ok(())
    }

    async fn secret(&mut self) -> anyhow::Result<()> {
        if !self.p.role.needs_auth_key() {
            return Ok(());
        }
        let name = self.p.names.secret();
        let exists = self.p.secret.as_ref().is_some_and(|s| !s.deleted);
        let seen = observe::secret(self.aws, &name, exists, self.p.auth_key.as_ref()).await?;
        let planned = plan::secret(
            self.p.secret.as_ref(),
            &seen,
            &name,
            self.deployment(),
            self.p.auth_key.is_some(),
        )?;
        self.take(planned).await
    }

    async fn iam(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.base();
        let seen = observe::iam(self.aws, &name).await?;
        let mut wanted = plan::wanted_policies(
            self.p.role.needs_auth_key(),
            self.known.secret_arn.as_deref(),
            self.p.bucket.as_deref(),
            self.opts.recorder_ui,
            self.opts.kms_key.as_deref(),
        );
        let tables = self.return_route_tables();
        if !tables.is_empty() {
            wanted.push((
                spec::RETURN_ROUTE_POLICY_NAME,
                Some(spec::return_route_policy(
                    &self.aws.region,
                    &self.p.vpc.owner,
                    tables,
                )),
            ));
        }
        let planned = plan::iam(&seen, &name, self.deployment(), &wanted)?;
        self.take(planned).await
    }

    /// Security group `name` in the VPC with exactly `wanted` inbound.
    async fn ensure_security_group(
        &mut self,
        name: &str,
        description: &str,
        wanted: &std::collections::BTreeSet<spec::IngressRule>,
    ) -> anyhow::Result<()> {
        let seen = self.aws.security_group(&self.p.vpc.id, name).await?;
        let planned =
            plan::security_group(seen.as_ref(), name, description, self.deployment(), wanted)?;
        if let Some(sg) = seen {
            self.known.security_groups.insert(name.to_owned(), sg.id);
        }
        self.take(planned).await
    }

    async fn security_group(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.base();
        let (protocol, port) = spec::listen_port(self.p.role);
        let description = format!(
            "Causeway {} appliance: inbound {} {port} only",
            self.p.role,
            protocol.to_uppercase()
        );
        self.ensure_security_group(&name, &description, &spec::appliance_ingress(self.p.role))
            .await?;
        if self.p.egress.is_some() {
            // The egress interface takes no connections: replies to the
            // traffic it sends are let in by the group's connection
            // tracking, nothing else.
            self.ensure_security_group(
                &self.p.names.egress(),
                "Causeway exit node egress interface: no inbound",
                &std::collections::BTreeSet::new(),
            )
            .await?;
        }
        Ok(())
    }

    async fn bucket(&mut self) -> anyhow::Result<()> {
        let (Some(bucket), Some(lifecycle)) = (self.p.bucket.clone(), self.p.lifecycle) else {
            return Ok(());
        };
        let seen = observe::bucket(self.aws, &bucket).await?;
        let tags = self.tags(&bucket);
        let planned = plan::bucket(
            &seen,
            &BucketWanted {
                name: &bucket,
                deployment: self.deployment(),
                tags: &tags,
                kms_key: self.opts.kms_key.as_deref(),
                lifecycle,
            },
        )?;
        self.take(planned).await
    }

    async fn dns(&mut self) -> anyhow::Result<()> {
        let resolvers = match self.opts.dns {
            DnsMode::Vpc => {
                let primary = self
                    .p
                    .vpc
                    .cidrs
                    .first()
                    .context("the VPC has no IPv4 CIDR")?;
                vec![network::vpc_resolver(primary)?.to_string()]
            }
            DnsMode::ResolverEndpoint => self.resolver_endpoint().await?,
        };
        let domains = observe::private_domains(self.aws, &self.p.vpc.id).await?;
        let entries = spec::split_dns_entries(&domains, &resolvers);
        let resolvers_known = entries.iter().all(|e| !e.nameservers.is_empty());
        let control = match (&self.opts.admin, resolvers_known) {
            (Some(admin), true) => Some(observe::control_split_dns(admin).await?),
            _ => None,
        };
        let planned = plan::split_dns(&entries, control.as_ref());
        let registered_in_control = planned.note.is_none() && self.mode == Mode::Apply;
        self.take(planned.planned).await?;
        self.split_dns = Some(SplitDns {
            mode: self.opts.dns,
            resolvers,
            entries,
            registered_in_control,
            note: planned.note.unwrap_or_default(),
        });
        Ok(())
    }

    /// The inbound endpoint and its security group; returns its addresses
    /// (none in a plan that would create it).
    async fn resolver_endpoint(&mut self) -> anyhow::Result<Vec<String>> {
        let sg_name = self.p.names.dns_security_group();
        self.ensure_security_group(
            &sg_name,
            "Causeway split DNS: Route 53 Resolver inbound endpoint, DNS from the VPC and the tailnet",
            &spec::dns_ingress(&self.p.vpc.cidrs),
        )
        .await?;
        let ep_name = self.p.names.resolver_endpoint();
        let seen = observe::resolver(self.aws, &self.p.vpc.id, &ep_name).await?;
        let planned = plan::resolver_endpoint(&seen, &ep_name, &sg_name, &self.p.dns_subnets);
        self.take(planned).await?;
        match self.known.resolver_created.take() {
            Some(id) => Ok(self.aws.resolver_addresses(&id).await?),
            None => Ok(seen.addresses),
        }
    }

    /// The route tables whose tailnet route the instances move (SNAT off,
    /// a role that forwards); empty otherwise.
    fn return_route_tables(&self) -> &[String] {
        if self.p.role.advertises_routes() && !self.opts.snat {
            &self.p.route_tables
        } else {
            &[]
        }
    }

    /// The launch template the contract wants, with the secret's ARN (a
    /// placeholder in a plan that would create the secret).
    fn wanted_template(&self) -> anyhow::Result<TemplateData> {
        let config = spec::ApplianceConfig {
            role: self.p.role,
            control_url: self.opts.control_url.clone().unwrap_or_default(),
            control_public_key: self.opts.control_public_key.clone().unwrap_or_default(),
            auth_key_secret: self.p.role.needs_auth_key().then(|| {
                self.known
                    .secret_arn
                    .clone()
                    .unwrap_or_else(|| "(the secret's ARN, known after deploy)".into())
            }),
            secrets_manager_endpoint: self.opts.secrets_manager_endpoint.clone(),
            state_volume: (self.p.role == Role::Control).then(|| {
                self.known
                    .volume
                    .clone()
                    .unwrap_or_else(|| "(the state volume's ID, known after deploy)".into())
            }),
            routes: self.p.routes.clone(),
            site_id: self.p.site_id,
            snat: self.opts.snat,
            aws_route_tables: self.return_route_tables().to_vec(),
            recorder: self.p.bucket.as_ref().map(|bucket| spec::RecorderData {
                bucket: bucket.clone(),
                region: self.aws.region.clone(),
                allow: self.opts.recorder_allow.clone(),
                ui: self.opts.recorder_ui,
            }),
            egress_mac: self.p.egress.as_ref().map(|_| {
                self.known.egress_interface.as_ref().map_or_else(
                    || "(the egress interface's MAC address, known after deploy)".into(),
                    |(_, mac)| mac.clone(),
                )
            }),
            app_connector: (self.p.role == Role::AppConnector).then(|| spec::ConnectorData {
                domains: self.opts.domains.clone(),
                max_routes: self.opts.max_routes,
                route_ttl_floor: self.opts.route_ttl_floor,
            }),
        };
        Ok(TemplateData::wanted(
            &self.p.image.id,
            &self.p.image.root_device,
            &self.p.choice.instance_type,
            &self.p.names.base(),
            spec::user_data(&config)?,
            self.opts.root_volume_gib,
        ))
    }

    async fn launch_template(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.base();
        let seen = self.aws.launch_template(&name).await?;
        let (planned, version) = plan::launch_template(
            seen.as_ref(),
            &name,
            self.deployment(),
            &self.wanted_template()?,
        )?;
        self.known.template_id = seen.map(|lt| lt.id);
        self.known.template_version = version;
        self.take(planned).await
    }

    async fn instances(&mut self) -> anyhow::Result<()> {
        let role = self.p.role.as_str();
        let existing = self.aws.instances_of(self.deployment(), Some(role)).await?;
        let wanted: Vec<(String, Subnet)> = (0..self.p.count)
            .map(|i| {
                (
                    self.p.names.instance(i, self.opts.ha),
                    self.p.subnets.subnets[i].clone(),
                )
            })
            .collect();
        let planned = plan::instances(
            &existing,
            &wanted,
            self.known.template_version,
            &self.p.choice.instance_type,
        );
        let launching = planned.actions.iter().any(|a| {
            matches!(
                a,
                plan::Action::Launch { .. } | plan::Action::Replace { .. }
            )
        });
        if launching && mints_keys(self.opts, self.p.role) {
            // A booting instance joins with what the secret holds: after a
            // healthy deploy that is no key at all.
            let name = self.p.names.secret();
            let held = observe::minted_secret(self.aws, &name, self.opts.admin.as_ref()).await?;
            let expiry = self.opts.auth_key_expiry.as_secs();
            self.take(plan::refresh_key(&held, launching, &name, expiry))
                .await?;
        }
        self.take(planned).await?;
        let launched = std::mem::take(&mut self.known.launched);
        self.wait_for(&launched, "running").await?;
        self.instances = self
            .aws
            .instances_of(self.deployment(), Some(role))
            .await?
            .into_iter()
            .filter(|x| wanted.iter().any(|(w, _)| *w == x.name))
            .collect();
        Ok(())
    }

    /// The last step of `deploy`: waits (`--health-timeout`) until every
    /// instance's appliance is healthy by control's word.
    async fn health(&mut self) -> anyhow::Result<Health> {
        self.progress.begin("appliance health, from control");
        let why_not = if !self.p.role.needs_auth_key() {
            Some(format!(
                "role {} joins no tailnet; its instance state is its health",
                self.p.role
            ))
        } else if self.opts.health_timeout.is_zero() {
            Some("not waited for (--health-timeout 0)".to_owned())
        } else {
            None
        };
        let (Some(admin), None) = (&self.opts.admin, &why_not) else {
            self.progress.end(StepOutcome::Skipped);
            return Ok(Health::NotChecked(why_not.unwrap_or_default()));
        };
        let routes = if let Some(site) = self.p.site_id {
            // A 4via6 router advertises each range as its site's IPv6
            // route, which only the node's address tells: health looks it
            // up per node.
            self.p
                .routes
                .iter()
                .map(|r| super::health::via6_route(site, r))
                .collect()
        } else if self.p.role.advertises_routes() {
            self.p.routes.clone()
        } else {
            Vec::new()
        };
        let judged = match super::wait::appliances(
            admin,
            &self.instances,
            &routes,
            self.opts.health_timeout,
            &mut self.progress,
        )
        .await
        {
            Ok(judged) => judged,
            Err(e) => {
                self.progress.fail();
                return Err(e.context("asking control whether the appliances are healthy"));
            }
        };
        if judged.iter().all(ApplianceHealth::healthy) {
            self.progress.end(StepOutcome::Checked);
        } else {
            self.progress.fail();
        }
        Ok(Health::Checked(judged))
    }

    /// After every instance joined: the minted key in the secret is
    /// revoked and the secret cleared, so a key read from it later
    /// registers nothing. The next deploy that launches an instance mints
    /// a new one ([`plan::refresh_key`]).
    async fn retire_key(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.secret();
        let held = observe::minted_secret(self.aws, &name, self.opts.admin.as_ref()).await?;
        self.take(plan::retire_key(&held, &name)).await
    }

    /// The recorders as SSH servers reach them: their tailnet addresses from
    /// control (when its admin API is given), for the producer's list.
    async fn recorders(&mut self) -> anyhow::Result<()> {
        let recorders = match &self.opts.admin {
            Some(admin) => match admin.nodes().await {
                Ok(nodes) => Recorders::new(&self.instances, Some(nodes.as_slice())),
                Err(e) => {
                    let mut r = Recorders::new(&self.instances, None);
                    r.note = Some(format!(
                        "could not ask control for the recorders' tailnet addresses: {e:#}"
                    ));
                    r
                }
            },
            None => Recorders::new(&self.instances, None),
        };
        self.recorders = Some(recorders);
        Ok(())
    }

    /// Control's Elastic IP and state volume as they are now, remembered
    /// in `known`.
    async fn observe_control_state(&mut self) -> anyhow::Result<(Vec<Address>, Vec<Volume>)> {
        let names = &self.p.names;
        let addresses = self.aws.addresses_of(self.deployment()).await?;
        let volumes = self.aws.volumes_of(self.deployment()).await?;
        let (address_name, volume_name) = (names.base(), names.state_volume());
        for a in addresses
            .iter()
            .filter(|a| a.tags.get("Name") == Some(&address_name))
        {
            self.known.address = Some(a.allocation_id.clone());
        }
        for v in volumes
            .iter()
            .filter(|v| v.tags.get("Name") == Some(&volume_name))
        {
            self.known.volume = Some(v.id.clone());
        }
        Ok((addresses, volumes))
    }

    /// What control's address and volume should be.
    fn control_state_wanted(&self) -> anyhow::Result<ControlStateNames> {
        let az = self
            .p
            .subnets
            .subnets
            .first()
            .map(|s| s.az.clone())
            .context("control has no subnet")?;
        Ok(ControlStateNames {
            address: self.p.names.base(),
            volume: self.p.names.state_volume(),
            az,
            size_gib: self.opts.state_volume_gib,
        })
    }

    /// Control's Elastic IP and state volume, made when missing.
    async fn control_resources(&mut self) -> anyhow::Result<()> {
        let (addresses, volumes) = self.observe_control_state().await?;
        let names = self.control_state_wanted()?;
        let planned = plan::control_resources(&addresses, &volumes, &names.wanted())?;
        self.take(planned).await
    }

    /// Control's Elastic IP and state volume, attached to the control
    /// instance (a replacement gets them back).
    async fn control_attachments(&mut self) -> anyhow::Result<()> {
        let (addresses, volumes) = self.observe_control_state().await?;
        let names = self.control_state_wanted()?;
        let Some(instance) = self.instances.first().cloned() else {
            return Ok(());
        };
        let planned = plan::control_attachments(&addresses, &volumes, &instance, &names.wanted())?;
        self.take(planned).await?;
        if self.mode == Mode::Apply {
            // The report shows the instance with its Elastic IP.
            self.instances = self
                .aws
                .instances_of(self.deployment(), Some(self.p.role.as_str()))
                .await?;
        }
        Ok(())
    }

    /// The exit node's egress interface and Elastic IP as they are now,
    /// remembered in `known`.
    async fn observe_egress(
        &mut self,
    ) -> anyhow::Result<(Vec<super::api::NetworkInterface>, Vec<Address>)> {
        let interfaces = self.aws.egress_interfaces_of(self.deployment()).await?;
        let addresses = self.aws.addresses_of(self.deployment()).await?;
        let (eni_name, address_name) = (self.p.names.egress(), self.p.names.base());
        for i in interfaces
            .iter()
            .filter(|i| i.tags.get("Name") == Some(&eni_name))
        {
            self.known.egress_interface = Some((i.id.clone(), i.mac.clone()));
        }
        for a in addresses
            .iter()
            .filter(|a| a.tags.get("Name") == Some(&address_name))
        {
            self.known.address = Some(a.allocation_id.clone());
        }
        Ok((interfaces, addresses))
    }

    /// Before the launch template (`after_launch` false): the egress
    /// interface and Elastic IP, made when missing. After the instances
    /// run: the Elastic IP on the exit node's own interface; without
    /// `--egress-subnet`, a left-over egress interface and address go.
    async fn egress(&mut self, after_launch: bool) -> anyhow::Result<()> {
        let (interfaces, addresses) = self.observe_egress().await?;
        let (eni_name, address_name) = (self.p.names.egress(), self.p.names.base());
        let wanted = plan::EgressWanted {
            interface_name: &eni_name,
            address_name: &address_name,
            subnet: self.p.egress.as_ref(),
            nat_public_ip: self.p.nat_public_ip.as_deref(),
        };
        let planned = if after_launch {
            plan::egress_attachments(&interfaces, &addresses, self.instances.first(), &wanted)?
        } else {
            plan::egress_resources(&interfaces, &addresses, &wanted)?
        };
        let refresh = after_launch && !planned.actions.is_empty() && self.mode == Mode::Apply;
        self.take(planned).await?;
        if refresh {
            // The report shows the instance with its Elastic IP.
            self.instances = self
                .aws
                .instances_of(self.deployment(), Some(self.p.role.as_str()))
                .await?;
        }
        Ok(())
    }

    async fn routing(&mut self) -> anyhow::Result<()> {
        let forwards = self.p.role.advertises_routes();
        let tables = if forwards {
            self.aws.route_tables(&self.p.vpc.id).await?
        } else {
            Vec::new()
        };
        let planned = plan::routing(
            &self.instances,
            &tables,
            self.p.role,
            self.opts.snat,
            &self.p.names.base(),
        );
        self.take(planned).await
    }
}

/// Control's Elastic IP and volume names, AZ and size, owned; lent to the
/// planner as a [`plan::ControlStateWanted`].
struct ControlStateNames {
    address: String,
    volume: String,
    az: String,
    size_gib: i32,
}

impl ControlStateNames {
    fn wanted(&self) -> plan::ControlStateWanted<'_> {
        plan::ControlStateWanted {
            address_name: &self.address,
            volume_name: &self.volume,
            az: &self.az,
            size_gib: self.size_gib,
        }
    }
}
