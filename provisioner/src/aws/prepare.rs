//! What `plan` and `deploy` check and read before anything is created: the
//! VPC and its subnets, the image, the instance-type catalogue, the auth
//! key's source. Any refusal here changes nothing.

use anyhow::Context;

use super::api::{Aws, Image, SecretInfo, Vpc};
use super::control::AuthKey;
use super::network::{self, EgressSubnet, RouteTable, Subnet, SubnetChoice};
use super::sizing::{self, Arch, Choice, Criteria};
use super::spec::{self, Lifecycle, Names};
use super::{AwsOptions, DnsMode};
use crate::role::Role;

/// Everything checked and read before anything is created.
#[derive(Debug)]
pub struct Prepared {
    /// The deployment's resource names.
    pub names: Names,
    /// The role.
    pub role: Role,
    /// The VPC.
    pub vpc: Vpc,
    /// The instances' subnets (one per instance).
    pub subnets: SubnetChoice,
    /// The resolver endpoint's subnets (`--dns resolver-endpoint`).
    pub dns_subnets: Vec<String>,
    /// The image.
    pub image: Image,
    /// The image's architecture.
    pub arch: Arch,
    /// The instance type and why.
    pub choice: Choice,
    /// Advertised routes.
    pub routes: Vec<String>,
    /// Role via6: the site ID of every route.
    pub site_id: Option<u16>,
    /// The VPC's route tables (IDs, sorted): with SNAT off each gets the
    /// tailnet's return route, which the HA primary points at itself.
    pub route_tables: Vec<String>,
    /// The exit node's egress subnet and its NAT gateway (`--egress-subnet`).
    pub egress: Option<EgressSubnet>,
    /// The NAT gateway's public address: what third parties see.
    pub nat_public_ip: Option<String>,
    /// The recordings lifecycle (recorder only).
    pub lifecycle: Option<Lifecycle>,
    /// The recordings bucket (recorder only).
    pub bucket: Option<String>,
    /// How many instances.
    pub count: usize,
    /// The key from `--auth-key-file`.
    pub auth_key: Option<AuthKey>,
    /// The auth key's secret as it is now.
    pub secret: Option<SecretInfo>,
}

/// Reads and decides what `plan` and `deploy` need for `role`, refusing
/// before anything is created when the VPC, image, catalogue or auth key
/// cannot serve the deployment.
pub async fn prepare(aws: &Aws, opts: &AwsOptions, role: Role) -> anyhow::Result<Prepared> {
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
    let mut route_tables: Vec<String> = tables.iter().map(|t| t.id.clone()).collect();
    route_tables.sort();
    let count = if opts.ha { 2 } else { 1 };
    let (egress, nat_public_ip) = match &opts.egress_subnet {
        Some(id) => {
            let e = network::egress_subnet(&vpc.id, id, &subnets, &tables)?;
            let ip = nat_public_ip(aws, &e).await?;
            (Some(e), ip)
        }
        None => (None, None),
    };
    // Both interfaces of an instance are in one AZ: the egress subnet's.
    let choice = match &egress {
        Some(e) => network::subnet_beside(&vpc.id, e, &subnets)?,
        None => network::choose_subnets(&vpc.id, &subnets, count)?,
    };
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

    let routes = if role == Role::ExitNode {
        spec::EXIT_ROUTES.iter().map(|r| (*r).to_owned()).collect()
    } else if role == Role::AppConnector {
        // Its routes are what its domains resolve to, learned at run time:
        // none are known here, so health asks for none.
        Vec::new()
    } else if opts.routes.is_empty() {
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
        site_id: (role == Role::Via6)
            .then_some(opts.site_id)
            .flatten()
            .and_then(|s| u16::try_from(s).ok()),
        route_tables,
        egress,
        nat_public_ip,
        lifecycle,
        bucket,
        count,
        auth_key,
        secret,
    })
}

/// The public address of the egress subnet's NAT gateway, refusing a
/// gateway that is gone or failed (its route is a black hole).
async fn nat_public_ip(aws: &Aws, e: &EgressSubnet) -> anyhow::Result<Option<String>> {
    let gateway = aws.nat_gateway(&e.nat_gateway).await?;
    match gateway {
        Some(g) if matches!(g.state.as_str(), "pending" | "available") => {
            Ok(g.public_ips.first().cloned())
        }
        found => anyhow::bail!(
            "--egress-subnet {}: its route table {} sends 0.0.0.0/0 to {}, which is {}; expected a NAT gateway that is available",
            e.subnet.id,
            e.route_table,
            e.nat_gateway,
            found.map_or_else(|| "not found".to_owned(), |g| g.state)
        ),
    }
}
