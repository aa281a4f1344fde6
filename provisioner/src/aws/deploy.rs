//! `plan` and `deploy`: check every flag and read the VPC, the catalogue
//! and the image before anything is created; then walk the resources in
//! dependency order, each one read, compared with what the contract wants,
//! and created or repaired only when it differs (so a second run changes
//! nothing and a failed run resumes). `plan` runs the same walk without
//! writing.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::api::{Aws, Image, Instance, Launch, LifecycleRule, SecretInfo, TemplateData, Vpc};
use super::control::AuthKey;
use super::network::{self, RouteChange, RouteTable, Subnet, SubnetChoice};
use super::sizing::{self, Arch, Choice, Criteria};
use super::spec::{self, IngressRule, Lifecycle, Names, SplitDnsEntry};
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

/// What happened (deploy) or would happen (plan) to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Created.
    Create,
    /// Changed in place.
    Update,
    /// Deleted (extra instances, stray rules).
    Delete,
    /// Already as wanted.
    Unchanged,
}

/// One resource in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Kind (`security group`).
    pub kind: &'static str,
    /// Name or id.
    pub name: String,
    /// The change.
    pub change: Change,
    /// What differs, when something does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Split DNS as computed for control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitDns {
    /// Mode.
    pub mode: DnsMode,
    /// Resolver addresses.
    pub resolvers: Vec<String>,
    /// Entries for control.
    pub entries: Vec<SplitDnsEntry>,
    /// Whether they were registered in control.
    pub registered_in_control: bool,
    /// Why not.
    pub note: String,
}

/// The result of `plan` or `deploy`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `plan` or `deploy`.
    pub command: &'static str,
    /// Deployment name.
    pub deployment: String,
    /// Role.
    pub role: Role,
    /// Region.
    pub region: String,
    /// VPC.
    pub vpc: String,
    /// Sizing choice and its explanation.
    pub sizing: Choice,
    /// Image and its architecture.
    pub image: String,
    /// Architecture.
    pub arch: Arch,
    /// Chosen subnets.
    pub subnets: Vec<Subnet>,
    /// Advertised routes.
    pub routes: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Resources.
    pub items: Vec<Item>,
    /// Instances after the run.
    pub instances: Vec<Instance>,
    /// Split DNS.
    pub split_dns: Option<SplitDns>,
}

/// Everything checked and read before anything is created.
#[derive(Debug)]
struct Prepared {
    names: Names,
    role: Role,
    vpc: Vpc,
    subnets: SubnetChoice,
    dns_subnets: Vec<String>,
    image: Image,
    arch: Arch,
    choice: Choice,
    routes: Vec<String>,
    lifecycle: Option<Lifecycle>,
    bucket: Option<String>,
    count: usize,
    auth_key: Option<AuthKey>,
    secret: Option<SecretInfo>,
}

/// Runs `plan` or `deploy`.
pub async fn run(opts: &AwsOptions, format: OutputFormat, mode: Mode) -> anyhow::Result<Verdict> {
    let early = early_checks(opts)?;
    let aws = Aws::connect(&opts.endpoint).await?;
    let sink = match (mode, format) {
        (Mode::Plan, _) => ProgressSink::Silent,
        (Mode::Apply, OutputFormat::Text) => ProgressSink::Stdout,
        (Mode::Apply, OutputFormat::Json) => ProgressSink::Stderr,
    };
    let total = 8 + usize::from(early == Role::Recorder);
    let mut progress = Progress::new(sink, total);
    progress.begin("checking flags, VPC, image and instance catalogue");
    let prepared = match prepare(&aws, opts, early).await {
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
        secret_arn: prepared.secret.as_ref().map(|s| s.arn.clone()),
        sg_id: None,
        template_id: None,
        template_version: 0,
        instances: Vec::new(),
        split_dns: None,
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
                    let lines: Vec<String> = walk.items[before..].iter().map(item_line).collect();
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
    step!(
        format!("launch template {}", names.base()),
        walk.launch_template()
    );
    step!(
        format!("instances ({})", if opts.ha { "HA pair" } else { "one" }),
        walk.instances()
    );
    step!("source/destination check and return routes", walk.routing());

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
        warnings: prepared.subnets.warning.iter().cloned().collect(),
        items: walk.items.clone(),
        instances: walk.instances.clone(),
        split_dns: walk.split_dns.clone(),
    };
    match format {
        OutputFormat::Text => crate::console::print_result(&render(&report)),
        OutputFormat::Json => {
            crate::console::print_result(&format!("{}\n", serde_json::to_string_pretty(&report)?))
        }
    }
    Ok(match mode {
        Mode::Plan if report.items.iter().all(|i| i.change == Change::Unchanged) => {
            Verdict::Healthy
        }
        Mode::Plan => Verdict::Unhealthy,
        Mode::Apply if report.instances.iter().all(|i| i.state == "running") => Verdict::Healthy,
        Mode::Apply => Verdict::Unhealthy,
    })
}

fn dns_label(mode: DnsMode) -> &'static str {
    match mode {
        DnsMode::Vpc => "VPC resolver",
        DnsMode::ResolverEndpoint => "Route 53 Resolver inbound endpoint",
    }
}

/// Checks that need no AWS call: the role, required flags, route syntax,
/// lifecycle days. Returns the role.
fn early_checks(opts: &AwsOptions) -> anyhow::Result<Role> {
    let Some(role) = opts.role else {
        anyhow::bail!("--role is required with --cloud aws");
    };
    if opts.vpc.is_none() {
        anyhow::bail!("--vpc is required with --cloud aws (the VPC the {role} serves)");
    }
    if role != Role::Control {
        let Some(url) = &opts.control_url else {
            anyhow::bail!(
                "--control-url is required for role {role}: the appliance's config names control"
            );
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            anyhow::bail!("--control-url {url:?}: expected http(s)://HOST:PORT");
        }
        if opts.control_public_key.is_none() {
            anyhow::bail!(
                "--control-public-key is required for role {role}: the appliance pins control's key"
            );
        }
    }
    for r in &opts.routes {
        check_prefix(r).with_context(|| format!("--route {r}"))?;
    }
    if role == Role::Recorder {
        Lifecycle::new(opts.ia_days, opts.archive_days, opts.expire_days)
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(bucket) = &opts.bucket {
        check_bucket_name(bucket).with_context(|| format!("--bucket {bucket:?}"))?;
    }
    if !(8..=16384).contains(&opts.root_volume_gib) {
        anyhow::bail!(
            "--root-volume-size {}: expected 8 to 16384 GiB",
            opts.root_volume_gib
        );
    }
    Ok(role)
}

/// S3's bucket naming rules: 3-63 of `a-z0-9.-`, starting and ending with
/// a letter or digit, not shaped like an IP address.
fn check_bucket_name(name: &str) -> anyhow::Result<()> {
    if !(3..=63).contains(&name.len()) {
        anyhow::bail!("a bucket name has 3 to 63 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        anyhow::bail!("{c:?} is not allowed in a bucket name (only a-z, 0-9, '.', '-')");
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        anyhow::bail!("a bucket name starts and ends with a letter or digit");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name.contains("..") {
        anyhow::bail!("a bucket name is not an IP address and has no '..'");
    }
    Ok(())
}

fn check_prefix(s: &str) -> anyhow::Result<()> {
    let (addr, len) = s
        .split_once('/')
        .context("expected an address prefix like 10.0.0.0/16")?;
    let addr: IpAddr = addr.parse().context("not an IP address")?;
    let len: u8 = len.parse().context("bad prefix length")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        anyhow::bail!("prefix length {len} is over {max}");
    }
    Ok(())
}

async fn prepare(aws: &Aws, opts: &AwsOptions, role: Role) -> anyhow::Result<Prepared> {
    let names = Names::new(opts.name.clone(), role);
    let vpc_id = opts.vpc.as_deref().context("--vpc is required")?;
    let vpc = aws.vpc(vpc_id).await?;
    let raw = aws.subnets(&vpc.id).await?;
    let tables: Vec<RouteTable> = aws.route_tables(&vpc.id).await?;
    let subnets: Vec<Subnet> = raw
        .iter()
        .map(|s| Subnet {
            id: s.id.clone(),
            az: s.az.clone(),
            cidr: s.cidr.clone(),
            free_ips: s.free_ips,
            exposure: network::exposure_of(&s.id, &tables),
        })
        .collect();
    let count = if opts.ha { 2 } else { 1 };
    let choice = network::choose_subnets(&vpc.id, &subnets, count)?;
    let dns_subnets = match opts.dns {
        DnsMode::Vpc => Vec::new(),
        DnsMode::ResolverEndpoint => network::choose_subnets(&vpc.id, &subnets, 2)
            .context("--dns resolver-endpoint needs addresses in two availability zones")?
            .subnets
            .into_iter()
            .map(|s| s.id)
            .collect(),
    };

    let image = match &opts.ami {
        Some(id) => aws
            .image(id)
            .await?
            .with_context(|| format!("--ami {id}: no such image in {}", aws.region))?,
        None => aws.newest_image(opts.arch).await?.with_context(|| {
            format!(
                "no appliance image for {arch} in {region}: expected an image owned by this account tagged {}=appliance and {}={arch} (bake one with images/, or pass --ami)",
                spec::TAG_IMAGE,
                spec::TAG_ARCH,
                arch = opts.arch,
                region = aws.region
            )
        })?,
    };
    let arch = image.arch.unwrap_or(opts.arch);

    let azs: Vec<String> = choice.subnets.iter().map(|s| s.az.clone()).collect();
    let criteria = Criteria {
        arch,
        allow_burstable: opts.allow_burstable,
        size: opts.size,
        azs: azs.clone(),
    };
    let offerings = aws.offerings(&azs).await?;
    let sizing = match &opts.instance_type {
        Some(t) => {
            let catalogue = aws.catalogue(None, Some(t)).await?;
            sizing::validate(t, &catalogue, &offerings, &criteria)?
        }
        None => {
            let catalogue = aws.catalogue(Some(arch), None).await?;
            sizing::choose(&catalogue, &offerings, &criteria)?
        }
    };

    let routes = if opts.routes.is_empty() {
        vpc.cidrs.clone()
    } else {
        opts.routes.clone()
    };
    let lifecycle = (role == Role::Recorder)
        .then(|| Lifecycle::new(opts.ia_days, opts.archive_days, opts.expire_days))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let bucket = (role == Role::Recorder).then(|| {
        opts.bucket
            .clone()
            .unwrap_or_else(|| names.bucket(&vpc.owner))
    });

    let (secret, auth_key) = if role.needs_auth_key() {
        let secret = aws.secret(&names.secret()).await?;
        let auth_key = match &opts.auth_key_file {
            Some(path) => Some(AuthKey::from_file(path)?),
            None => None,
        };
        let usable = secret.as_ref().is_some_and(|s| !s.deleted);
        if !usable && auth_key.is_none() && opts.admin.is_none() {
            anyhow::bail!(
                "role {role} needs an auth key and secret {} does not exist yet: pass --auth-key-file FILE, or --control-admin-url URL with --control-admin-token-file FILE to mint one",
                names.secret()
            );
        }
        (secret, auth_key)
    } else {
        (None, None)
    };

    Ok(Prepared {
        names,
        role,
        vpc,
        subnets: choice,
        dns_subnets,
        image,
        arch,
        choice: sizing,
        routes,
        lifecycle,
        bucket,
        count,
        auth_key,
        secret,
    })
}

struct Walk<'a> {
    aws: &'a Aws,
    opts: &'a AwsOptions,
    p: &'a Prepared,
    mode: Mode,
    items: Vec<Item>,
    secret_arn: Option<String>,
    sg_id: Option<String>,
    template_id: Option<String>,
    /// The launch template's default version once `launch_template` ran
    /// (in a plan: the version deploy would make the default).
    template_version: i64,
    instances: Vec<Instance>,
    split_dns: Option<SplitDns>,
    progress: Progress,
}

impl Walk<'_> {
    fn apply(&self) -> bool {
        self.mode == Mode::Apply
    }

    fn push(
        &mut self,
        kind: &'static str,
        name: impl Into<String>,
        change: Change,
        detail: Option<String>,
    ) {
        self.items.push(Item {
            kind,
            name: name.into(),
            change,
            detail,
        });
    }

    fn tags(&self, name: &str) -> Vec<(String, String)> {
        self.p.names.tags(name)
    }

    async fn secret(&mut self) -> anyhow::Result<()> {
        if !self.p.role.needs_auth_key() {
            return Ok(());
        }
        let name = self.p.names.secret();
        if let Some(s) = &self.p.secret {
            check_owner(&s.tags, self.opts.name.as_str(), "secret", &name)?;
        }
        match &self.p.secret {
            Some(s) if s.deleted => {
                if self.apply() {
                    self.aws.restore_secret(&name).await?;
                }
                self.push(
                    "secret",
                    &name,
                    Change::Update,
                    Some("restored from scheduled deletion".into()),
                );
            }
            Some(_) => {
                let mut change = Change::Unchanged;
                if let Some(key) = &self.p.auth_key {
                    let current = self.aws.secret_value(&name).await?;
                    if current.as_deref() != Some(key.expose()) {
                        change = Change::Update;
                        if self.apply() {
                            self.aws.put_secret_value(&name, key.expose()).await?;
                        }
                    }
                }
                let detail = (change == Change::Update)
                    .then(|| "value replaced from --auth-key-file".to_owned());
                self.push("secret", &name, change, detail);
            }
            None => {
                if self.apply() {
                    let key = match (&self.p.auth_key, &self.opts.admin) {
                        (Some(k), _) => k.clone(),
                        (None, Some(admin)) => admin
                            .create_key(self.p.role.as_str())
                            .await
                            .context("minting an auth key in control")?,
                        (None, None) => anyhow::bail!("no auth key source"),
                    };
                    let arn = self
                        .aws
                        .create_secret(&name, key.expose(), &self.tags(&name))
                        .await?;
                    self.secret_arn = Some(arn);
                }
                let source = if self.p.auth_key.is_some() {
                    "from --auth-key-file"
                } else {
                    "minted by control's admin API"
                };
                self.push("secret", &name, Change::Create, Some(source.into()));
            }
        }
        Ok(())
    }

    async fn iam(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.base();
        let role = self.aws.role(&name).await?;
        if let Some(r) = &role {
            check_owner(&r.tags, self.opts.name.as_str(), "IAM role", &name)?;
            self.push("IAM role", &name, Change::Unchanged, None);
        } else {
            if self.apply() {
                self.aws
                    .create_role(&name, &spec::trust_policy(), &self.tags(&name))
                    .await?;
            }
            self.push("IAM role", &name, Change::Create, None);
        }
        let mut wanted: Vec<(&'static str, Option<String>)> = Vec::new();
        if self.p.role.needs_auth_key() {
            wanted.push((
                spec::SECRET_POLICY_NAME,
                self.secret_arn.as_deref().map(spec::secret_policy),
            ));
        }
        if let Some(bucket) = &self.p.bucket {
            wanted.push((
                spec::RECORDINGS_POLICY_NAME,
                Some(spec::recordings_policy(bucket, self.opts.recorder_ui)),
            ));
        }
        let actual = if role.is_some() {
            self.aws.role_policies(&name).await?
        } else {
            Default::default()
        };
        for (pname, doc) in &wanted {
            let label = format!("{name}/{pname}");
            let change = match (actual.get(*pname), doc) {
                (None, _) => Change::Create,
                (Some(a), Some(d)) if spec::same_policy(a, d) => Change::Unchanged,
                (Some(_), _) => Change::Update,
            };
            if change != Change::Unchanged && self.apply() {
                let doc = doc.as_deref().context("the secret's ARN is unknown")?;
                self.aws.put_role_policy(&name, pname, doc).await?;
            }
            self.push("IAM inline policy", label, change, None);
        }
        for extra in actual
            .keys()
            .filter(|k| !wanted.iter().any(|(w, _)| w == k))
        {
            if self.apply() {
                self.aws.delete_role_policy(&name, extra).await?;
            }
            self.push(
                "IAM inline policy",
                format!("{name}/{extra}"),
                Change::Delete,
                Some("not part of the least-privilege policy".into()),
            );
        }
        match self.aws.instance_profile(&name).await? {
            Some(roles) if roles.contains(&name) => {
                self.push("instance profile", &name, Change::Unchanged, None);
            }
            Some(_) => {
                if self.apply() {
                    self.aws.add_role_to_profile(&name, &name).await?;
                }
                self.push(
                    "instance profile",
                    &name,
                    Change::Update,
                    Some("role added".into()),
                );
            }
            None => {
                if self.apply() {
                    self.aws
                        .create_instance_profile(&name, &self.tags(&name))
                        .await?;
                    self.aws.add_role_to_profile(&name, &name).await?;
                }
                self.push("instance profile", &name, Change::Create, None);
            }
        }
        Ok(())
    }

    async fn ensure_sg(
        &mut self,
        name: &str,
        description: &str,
        wanted: &std::collections::BTreeSet<IngressRule>,
    ) -> anyhow::Result<Option<String>> {
        let existing = self.aws.security_group(&self.p.vpc.id, name).await?;
        let (id, actual) = match existing {
            Some(sg) => {
                let tags = sg
                    .deployment
                    .iter()
                    .map(|d| (spec::TAG_DEPLOYMENT.to_owned(), d.clone()))
                    .collect();
                check_owner(&tags, self.opts.name.as_str(), "security group", name)?;
                (Some(sg.id), sg.ingress)
            }
            None => {
                let id = if self.apply() {
                    Some(
                        self.aws
                            .create_security_group(
                                &self.p.vpc.id,
                                name,
                                description,
                                &self.tags(name),
                            )
                            .await?,
                    )
                } else {
                    None
                };
                let (add, _) = spec::rule_diff(wanted, &Default::default());
                if let Some(id) = &id {
                    self.aws.authorize(id, &add).await?;
                }
                self.push(
                    "security group",
                    name,
                    Change::Create,
                    Some(rules_line(wanted)),
                );
                return Ok(id);
            }
        };
        let (add, remove) = spec::rule_diff(wanted, &actual);
        if add.is_empty() && remove.is_empty() {
            self.push(
                "security group",
                name,
                Change::Unchanged,
                Some(rules_line(wanted)),
            );
            return Ok(id);
        }
        if let (Some(id), true) = (&id, self.apply()) {
            self.aws.revoke(id, &remove).await?;
            self.aws.authorize(id, &add).await?;
        }
        let detail = format!(
            "inbound +[{}] -[{}]",
            add.iter().map(rule_label).collect::<Vec<_>>().join(", "),
            remove.iter().map(rule_label).collect::<Vec<_>>().join(", ")
        );
        self.push("security group", name, Change::Update, Some(detail));
        Ok(id)
    }

    async fn security_group(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.base();
        let (protocol, port) = spec::listen_port(self.p.role);
        let description = format!(
            "Causeway {} appliance: inbound {} {port} only",
            self.p.role,
            protocol.to_uppercase()
        );
        self.sg_id = self
            .ensure_sg(&name, &description, &spec::appliance_ingress(self.p.role))
            .await?;
        Ok(())
    }

    async fn bucket(&mut self) -> anyhow::Result<()> {
        let (Some(bucket), Some(lifecycle)) = (self.p.bucket.clone(), self.p.lifecycle) else {
            return Ok(());
        };
        let exists = self.aws.bucket_exists(&bucket).await?;
        let settings = if exists {
            Some(self.aws.bucket_settings(&bucket).await?)
        } else {
            if self.apply() {
                self.aws.create_bucket(&bucket).await?;
            }
            None
        };
        let tags = self.tags(&bucket);
        let tagged = settings
            .as_ref()
            .is_some_and(|s| tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)));
        if let Some(s) = &settings {
            check_owner(&s.tags, self.opts.name.as_str(), "bucket", &bucket)?;
        }
        let change = match (exists, tagged) {
            (false, _) => Change::Create,
            (true, true) => Change::Unchanged,
            (true, false) => Change::Update,
        };
        if change != Change::Unchanged && self.apply() {
            self.aws.tag_bucket(&bucket, &tags).await?;
        }
        self.push("bucket", &bucket, change, None);

        let fresh = |ok: bool| {
            if !exists {
                Change::Create
            } else if ok {
                Change::Unchanged
            } else {
                Change::Update
            }
        };

        let blocked = settings.as_ref().is_some_and(|s| s.public_access_blocked);
        let c = fresh(blocked);
        if c != Change::Unchanged && self.apply() {
            self.aws.block_public_access(&bucket).await?;
        }
        self.push(
            "bucket public access block",
            &bucket,
            c,
            Some("all four settings on".into()),
        );

        let want_enc = match &self.opts.kms_key {
            Some(k) => ("aws:kms".to_owned(), Some(k.clone())),
            None => ("AES256".to_owned(), None),
        };
        let enc_ok = settings
            .as_ref()
            .is_some_and(|s| s.encryption.as_ref() == Some(&want_enc));
        let c = fresh(enc_ok);
        if c != Change::Unchanged && self.apply() {
            self.aws
                .encrypt_bucket(&bucket, self.opts.kms_key.as_deref())
                .await?;
        }
        self.push("bucket encryption", &bucket, c, Some(want_enc.0.clone()));

        let policy = spec::tls_only_bucket_policy(&bucket);
        let policy_ok = settings
            .as_ref()
            .and_then(|s| s.policy.as_deref())
            .is_some_and(|p| spec::same_policy(p, &policy));
        let c = fresh(policy_ok);
        if c != Change::Unchanged && self.apply() {
            self.aws.put_bucket_policy(&bucket, &policy).await?;
        }
        self.push(
            "bucket policy",
            &bucket,
            c,
            Some("deny aws:SecureTransport=false".into()),
        );

        let rule = LifecycleRule::wanted(&lifecycle);
        let lc_ok = settings
            .as_ref()
            .is_some_and(|s| s.lifecycle == std::slice::from_ref(&rule));
        let c = fresh(lc_ok);
        if c != Change::Unchanged && self.apply() {
            self.aws.put_lifecycle(&bucket, &rule).await?;
        }
        self.push(
            "bucket lifecycle",
            &bucket,
            c,
            Some(format!(
                "STANDARD_IA after {} d, GLACIER after {} d, expire after {} d, abort uploads after {} d",
                lifecycle.ia_days,
                lifecycle.archive_days,
                lifecycle.expire_days,
                lifecycle.abort_multipart_days
            )),
        );
        Ok(())
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
            DnsMode::ResolverEndpoint => {
                let sg_name = self.p.names.dns_security_group();
                let sg = self
                    .ensure_sg(
                        &sg_name,
                        "Causeway split DNS: Route 53 Resolver inbound endpoint, DNS from the VPC and the tailnet",
                        &spec::dns_ingress(&self.p.vpc.cidrs),
                    )
                    .await?;
                let ep_name = self.p.names.resolver_endpoint();
                match self.aws.resolver_endpoint(&self.p.vpc.id, &ep_name).await? {
                    Some(ep) => {
                        self.push(
                            "resolver endpoint",
                            &ep_name,
                            Change::Unchanged,
                            Some(ep.id.clone()),
                        );
                        self.aws.resolver_addresses(&ep.id).await?
                    }
                    None => {
                        self.push(
                            "resolver endpoint",
                            &ep_name,
                            Change::Create,
                            Some(format!("inbound, in {}", self.p.dns_subnets.join(" and "))),
                        );
                        match (sg, self.apply()) {
                            (Some(sg), true) => {
                                let request = format!("{ep_name}-{}", self.p.vpc.id);
                                let id = self
                                    .aws
                                    .create_resolver_endpoint(
                                        &ep_name,
                                        &request,
                                        &sg,
                                        &self.p.dns_subnets,
                                        &self.tags(&ep_name),
                                    )
                                    .await?;
                                self.aws.resolver_addresses(&id).await?
                            }
                            _ => Vec::new(),
                        }
                    }
                }
            }
        };
        let mut domains = self.aws.private_zones(&self.p.vpc.id).await?;
        domains.push(spec::vpc_internal_domain(&self.aws.region));
        let entries = spec::split_dns_entries(&domains, &resolvers);
        let (registered_in_control, note) = self.register_split_dns(&entries).await?;
        self.split_dns = Some(SplitDns {
            mode: self.opts.dns,
            resolvers,
            entries,
            registered_in_control,
            note,
        });
        Ok(())
    }

    /// Registers split-DNS entries in control through its admin API, each
    /// only when control's entry differs. Returns whether they are
    /// registered, and a note saying how to do it otherwise.
    async fn register_split_dns(
        &mut self,
        entries: &[SplitDnsEntry],
    ) -> anyhow::Result<(bool, String)> {
        if entries.iter().any(|e| e.nameservers.is_empty()) {
            return Ok((
                false,
                "the entries are registered in control once deploy has created the resolver endpoint".into(),
            ));
        }
        let Some(admin) = self.opts.admin.clone() else {
            return Ok((
                false,
                "pass --control-admin-url and --control-admin-token-file to register these in control, or run `appliance admin dns set-split DOMAIN --resolver IP` there".into(),
            ));
        };
        let current = admin.split_dns().await?;
        for e in entries {
            let change = match current.get(&e.domain) {
                Some(now) if *now == e.nameservers => Change::Unchanged,
                Some(_) => Change::Update,
                None => Change::Create,
            };
            let detail = (change != Change::Unchanged).then(|| e.nameservers.join(", "));
            self.push("split-DNS entry in control", &e.domain, change, detail);
            if change != Change::Unchanged && self.apply() {
                admin.set_split_dns(&e.domain, &e.nameservers).await?;
            }
        }
        Ok((self.apply(), String::new()))
    }

    fn template_data(&self) -> TemplateData {
        let config = spec::ApplianceConfig {
            role: self.p.role,
            control_url: self.opts.control_url.clone().unwrap_or_default(),
            control_public_key: self.opts.control_public_key.clone().unwrap_or_default(),
            auth_key_secret: if self.p.role.needs_auth_key() {
                Some(
                    self.secret_arn
                        .clone()
                        .unwrap_or_else(|| "(the secret's ARN, known after deploy)".into()),
                )
            } else {
                None
            },
            routes: self.p.routes.clone(),
            snat: self.opts.snat,
        };
        TemplateData {
            image_id: self.p.image.id.clone(),
            instance_type: self.p.choice.instance_type.clone(),
            instance_profile: self.p.names.base(),
            user_data: spec::user_data(&config),
            http_tokens: "required".into(),
            hop_limit: 1,
            http_endpoint: "enabled".into(),
            root_device: self.p.image.root_device.clone(),
            volume_type: "gp3".into(),
            encrypted: true,
            volume_size: self.opts.root_volume_gib,
            key_name: None,
        }
    }

    async fn launch_template(&mut self) -> anyhow::Result<()> {
        let name = self.p.names.base();
        let wanted = self.template_data();
        let existing = self.aws.launch_template(&name).await?;
        if let Some(lt) = &existing {
            check_owner(&lt.tags, self.opts.name.as_str(), "launch template", &name)?;
        }
        match existing {
            None => {
                if self.apply() {
                    let id = self
                        .aws
                        .create_launch_template(&name, &wanted, &self.tags(&name))
                        .await?;
                    self.template_id = Some(id);
                }
                self.template_version = 1;
                self.push(
                    "launch template",
                    &name,
                    Change::Create,
                    Some(template_line(&wanted)),
                );
            }
            Some(lt) => {
                let differs = lt
                    .data
                    .as_ref()
                    .map(|d| template_diff(d, &wanted))
                    .unwrap_or_else(|| vec!["unreadable default version"]);
                if differs.is_empty() {
                    self.template_version = lt.default_version;
                    self.push(
                        "launch template",
                        &name,
                        Change::Unchanged,
                        Some(template_line(&wanted)),
                    );
                } else {
                    // A plan predicts the version the update will create.
                    self.template_version = lt.default_version + 1;
                    if self.apply() {
                        self.template_version = self
                            .aws
                            .update_launch_template(&lt.id, &wanted, &self.tags(&name))
                            .await?;
                    }
                    self.push(
                        "launch template",
                        &name,
                        Change::Update,
                        Some(format!(
                            "new default version {} ({} changed); instances are replaced one at a time",
                            self.template_version,
                            differs.join(", ")
                        )),
                    );
                }
                self.template_id = Some(lt.id);
            }
        }
        Ok(())
    }

    async fn instances(&mut self) -> anyhow::Result<()> {
        let role = self.p.role.as_str();
        let existing = self
            .aws
            .instances_of(self.opts.name.as_str(), Some(role))
            .await?;
        let wanted: Vec<String> = (0..self.p.count)
            .map(|i| self.p.names.instance(i, self.opts.ha))
            .collect();
        let mut launched = Vec::new();
        for (i, name) in wanted.iter().enumerate() {
            let subnet = self.p.subnets.subnets[i].clone();
            if let Some(inst) = existing.iter().find(|x| &x.name == name) {
                if inst.template_version == Some(self.template_version) {
                    let detail = format!(
                        "{} {} in {} ({})",
                        inst.id, inst.instance_type, inst.az, inst.state
                    );
                    self.push("instance", name, Change::Unchanged, Some(detail));
                    continue;
                }
                // Replaced one at a time, each new instance running before
                // the next old one goes, so an HA pair always has one
                // router up.
                let detail = format!(
                    "replace {} (launched from template version {}, the default is now {})",
                    inst.id,
                    inst.template_version
                        .map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
                    self.template_version
                );
                self.push("instance", name, Change::Update, Some(detail));
                if self.apply() {
                    self.progress
                        .detail(&format!("replacing {name} ({})", inst.id));
                    let old = [inst.id.clone()];
                    self.aws.terminate(&old).await?;
                    self.wait_for(&old, "terminated").await?;
                    let id = self.launch(name, &subnet).await?;
                    self.wait_for(&[id], "running").await?;
                }
                continue;
            }
            if self.apply() {
                launched.push(self.launch(name, &subnet).await?);
            }
            self.push(
                "instance",
                name,
                Change::Create,
                Some(format!(
                    "{} in {} ({})",
                    self.p.choice.instance_type, subnet.az, subnet.id
                )),
            );
        }
        let extras: Vec<&Instance> = existing
            .iter()
            .filter(|x| !wanted.contains(&x.name))
            .collect();
        for x in &extras {
            self.push(
                "instance",
                &x.name,
                Change::Delete,
                Some(format!(
                    "{} is not part of this deployment's shape any more",
                    x.id
                )),
            );
        }
        if self.apply() {
            let ids: Vec<String> = extras.iter().map(|x| x.id.clone()).collect();
            self.aws.terminate(&ids).await?;
            self.wait_for(&launched, "running").await?;
        }
        self.instances = self
            .aws
            .instances_of(self.opts.name.as_str(), Some(role))
            .await?
            .into_iter()
            .filter(|x| wanted.contains(&x.name))
            .collect();
        Ok(())
    }

    /// Launches instance `name` into `subnet` from the launch template,
    /// tagged with the template version; a public address when the subnet
    /// is public, for direct connections.
    async fn launch(&mut self, name: &str, subnet: &network::Subnet) -> anyhow::Result<String> {
        let (Some(lt), Some(sg)) = (&self.template_id, &self.sg_id) else {
            anyhow::bail!("the launch template or security group is missing");
        };
        let mut tags = self.tags(name);
        tags.push((
            spec::TAG_TEMPLATE_VERSION.to_owned(),
            self.template_version.to_string(),
        ));
        let profile = self.p.names.base();
        let launch = Launch {
            template_id: lt,
            subnet: &subnet.id,
            security_group: sg,
            public_ip: subnet.exposure == network::Exposure::Public,
            instance_profile: &profile,
            name,
            tags: &tags,
        };
        Ok(self.aws.run_instance(&launch).await?)
    }

    async fn wait_for(&mut self, ids: &[String], state: &str) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let states = self.aws.instance_states(ids).await?;
            let line = ids
                .iter()
                .map(|id| format!("{id}: {}", states.get(id).map_or("unknown", String::as_str)))
                .collect::<Vec<_>>()
                .join(", ");
            if line != last {
                self.progress.detail(&line);
                last = line.clone();
            }
            if ids
                .iter()
                .all(|id| states.get(id).is_some_and(|s| s == state))
            {
                return Ok(());
            }
            if let Some((id, s)) = states
                .iter()
                .find(|(_, s)| state == "running" && (*s == "terminated" || *s == "shutting-down"))
            {
                anyhow::bail!("instance {id} went {s} while starting; see its console output");
            }
            if started.elapsed() > self.opts.wait_timeout {
                anyhow::bail!(
                    "instances not {state} after {} s ({line}); deploy again to keep waiting",
                    self.opts.wait_timeout.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    async fn routing(&mut self) -> anyhow::Result<()> {
        let forwards = self.p.role.advertises_routes();
        let want_check = self.opts.snat || !forwards;
        for inst in self.instances.clone() {
            if inst.source_dest_check == want_check {
                continue;
            }
            if self.apply() {
                self.aws.set_source_dest_check(&inst.id, want_check).await?;
            }
            self.push(
                "source/destination check",
                &inst.id,
                Change::Update,
                Some(
                    if want_check {
                        "enabled (SNAT on)"
                    } else {
                        "disabled (--no-snat)"
                    }
                    .into(),
                ),
            );
        }
        if forwards {
            let tables = self.aws.route_tables(&self.p.vpc.id).await?;
            let ours: Vec<String> = self.instances.iter().map(|i| i.eni.clone()).collect();
            let want = if self.opts.snat {
                None
            } else {
                self.instances.first().map(|i| i.eni.clone())
            };
            if !self.opts.snat && want.is_none() {
                for t in &tables {
                    self.push(
                        "route",
                        format!("{} in {}", network::TAILNET_CIDR, t.id),
                        Change::Create,
                        Some("-> the first instance's ENI".into()),
                    );
                }
            }
            for change in network::tailnet_route_changes(&tables, want.as_deref(), &ours) {
                let (table, item_change, eni, replace) = match &change {
                    RouteChange::Create { table, eni } => {
                        (table.clone(), Change::Create, Some(eni.clone()), false)
                    }
                    RouteChange::Replace { table, eni } => {
                        (table.clone(), Change::Update, Some(eni.clone()), true)
                    }
                    RouteChange::Delete { table } => (table.clone(), Change::Delete, None, false),
                };
                if self.apply() {
                    self.aws
                        .set_tailnet_route(&table, eni.as_deref(), replace)
                        .await?;
                }
                self.push(
                    "route",
                    format!("{} in {table}", network::TAILNET_CIDR),
                    item_change,
                    eni.map(|e| format!("-> {e}")),
                );
            }
        }
        if !self
            .items
            .iter()
            .any(|i| i.kind == "route" || i.kind == "source/destination check")
        {
            let detail = if self.opts.snat || !forwards {
                "SNAT on: source/destination check on, no tailnet return routes"
            } else {
                "SNAT off: source/destination check off, tailnet return routes in place"
            };
            self.push(
                "routing",
                self.p.names.base(),
                Change::Unchanged,
                Some(detail.into()),
            );
        }
        Ok(())
    }
}

fn check_owner(
    tags: &std::collections::BTreeMap<String, String>,
    deployment: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    match tags.get(spec::TAG_DEPLOYMENT) {
        Some(d) if d == deployment => Ok(()),
        Some(d) => anyhow::bail!(
            "{kind} {name} belongs to deployment {d:?} ({}={d}); refusing to take it over",
            spec::TAG_DEPLOYMENT
        ),
        None if kind == "bucket" => Ok(()),
        None => anyhow::bail!(
            "{kind} {name} exists but is not tagged {}={deployment}; refusing to take it over",
            spec::TAG_DEPLOYMENT
        ),
    }
}

fn template_diff(a: &TemplateData, b: &TemplateData) -> Vec<&'static str> {
    let mut out = Vec::new();
    let fields: [(&'static str, bool); 12] = [
        ("image", a.image_id == b.image_id),
        ("instance type", a.instance_type == b.instance_type),
        ("instance profile", a.instance_profile == b.instance_profile),
        ("user data", a.user_data == b.user_data),
        ("HttpTokens", a.http_tokens == b.http_tokens),
        ("hop limit", a.hop_limit == b.hop_limit),
        ("HttpEndpoint", a.http_endpoint == b.http_endpoint),
        ("root device", a.root_device == b.root_device),
        ("volume type", a.volume_type == b.volume_type),
        ("encryption", a.encrypted == b.encrypted),
        ("volume size", a.volume_size == b.volume_size),
        ("key pair", a.key_name == b.key_name),
    ];
    for (name, same) in fields {
        if !same {
            out.push(name);
        }
    }
    out
}

fn template_line(d: &TemplateData) -> String {
    format!(
        "{} {}, IMDSv2 required (hop limit {}), {} GiB encrypted {} root, no key pair",
        d.image_id, d.instance_type, d.hop_limit, d.volume_size, d.volume_type
    )
}

fn rule_label(r: &IngressRule) -> String {
    format!("{} {} from {}", r.protocol, r.from_port, r.cidr)
}

fn rules_line(rules: &std::collections::BTreeSet<IngressRule>) -> String {
    format!(
        "inbound only: {}",
        rules.iter().map(rule_label).collect::<Vec<_>>().join(", ")
    )
}

fn change_word(c: Change) -> &'static str {
    match c {
        Change::Create => "create",
        Change::Update => "update",
        Change::Delete => "delete",
        Change::Unchanged => "unchanged",
    }
}

fn item_line(i: &Item) -> String {
    let mut line = format!("{:<9} {} {}", change_word(i.change), i.kind, i.name);
    if let Some(d) = &i.detail {
        let _ = write!(line, " ({d})");
    }
    line
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} for deployment {}, role {}, in {} ({})",
        r.command, r.deployment, r.role, r.region, r.vpc
    );
    let _ = writeln!(out, "  sizing:  {}", r.sizing.explanation);
    let _ = writeln!(out, "  image:   {} ({})", r.image, r.arch);
    let subnets: Vec<String> = r
        .subnets
        .iter()
        .map(|s| format!("{} ({}, {:?})", s.id, s.az, s.exposure).to_lowercase())
        .collect();
    let _ = writeln!(out, "  subnets: {}", subnets.join(", "));
    let _ = writeln!(out, "  routes:  {}", r.routes.join(", "));
    for w in &r.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    if r.command == "plan" {
        for i in &r.items {
            let _ = writeln!(out, "  {}", item_line(i));
        }
    }
    for i in &r.instances {
        let _ = writeln!(
            out,
            "  instance {} {} {} in {} ({}), private {}{}",
            i.name,
            i.id,
            i.instance_type,
            i.az,
            i.state,
            i.private_ip,
            i.public_ip
                .as_ref()
                .map(|p| format!(", public {p}"))
                .unwrap_or_default()
        );
    }
    if let Some(d) = &r.split_dns {
        let _ = writeln!(
            out,
            "  split DNS via {}: {}",
            dns_label(d.mode),
            d.resolvers.join(", ")
        );
        if d.entries.is_empty() {
            let _ = writeln!(
                out,
                "    no private hosted zones are associated with the VPC"
            );
        }
        for e in &d.entries {
            let _ = writeln!(out, "    {} -> {}", e.domain, e.nameservers.join(", "));
        }
        if !d.registered_in_control && !d.entries.is_empty() {
            let _ = writeln!(out, "    note: {}", d.note);
        }
    }
    let count = |c| r.items.iter().filter(|i| i.change == c).count();
    let verb = if r.command == "plan" { "to " } else { "" };
    let _ = writeln!(
        out,
        "{} {verb}create, {} {verb}update, {} {verb}delete, {} unchanged",
        count(Change::Create),
        count(Change::Update),
        count(Change::Delete),
        count(Change::Unchanged)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(role: Role) -> AwsOptions {
        let mut o = AwsOptions::new("t".parse().expect("name"));
        o.role = Some(role);
        o.vpc = Some("vpc-1".into());
        o.control_url = Some("https://c:8080".into());
        o.control_public_key = Some("AAAA=".into());
        o
    }

    #[test]
    fn flags_are_checked_before_any_aws_call_naming_the_flag() {
        assert_eq!(
            early_checks(&opts(Role::Relay)).expect("valid"),
            Role::Relay
        );
        let mut o = opts(Role::Relay);
        o.vpc = None;
        assert!(
            early_checks(&o)
                .expect_err("no vpc")
                .to_string()
                .contains("--vpc")
        );
        let mut o = opts(Role::ExitNode);
        o.control_url = None;
        assert!(
            early_checks(&o)
                .expect_err("no url")
                .to_string()
                .contains("--control-url")
        );
        let mut o = opts(Role::Control);
        o.control_url = None;
        o.control_public_key = None;
        assert!(early_checks(&o).is_ok(), "control needs no control URL");
        let mut o = opts(Role::SubnetRouter);
        o.routes = vec!["10.0.0.0/33".into()];
        assert!(
            format!("{:#}", early_checks(&o).expect_err("bad route"))
                .contains("--route 10.0.0.0/33")
        );
        let mut o = opts(Role::Recorder);
        o.expire_days = 60;
        assert!(
            early_checks(&o)
                .expect_err("order")
                .to_string()
                .contains("--expire-days")
        );
        let mut o = opts(Role::Recorder);
        o.bucket = Some("Bad_Name".into());
        assert!(format!("{:#}", early_checks(&o).expect_err("bucket")).contains("--bucket"));
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("causeway-prod-recordings-123456789012").is_ok());
        for bad in ["ab", "Upper", "a_b", "-ab", "ab-", "10.0.0.1", "a..b"] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_diff_names_what_changed() {
        let a = TemplateData {
            image_id: "ami-1".into(),
            instance_type: "c7g.xlarge".into(),
            instance_profile: "p".into(),
            user_data: "x".into(),
            http_tokens: "required".into(),
            hop_limit: 1,
            http_endpoint: "enabled".into(),
            root_device: "/dev/xvda".into(),
            volume_type: "gp3".into(),
            encrypted: true,
            volume_size: 8,
            key_name: None,
        };
        let mut b = a.clone();
        assert!(template_diff(&a, &b).is_empty());
        b.http_tokens = "optional".into();
        b.user_data = "y".into();
        assert_eq!(template_diff(&a, &b), ["user data", "HttpTokens"]);
    }
}
