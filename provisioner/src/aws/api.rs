//! The one module that talks to AWS. Every call goes through the official
//! SDK and comes back as the plain values of [`super::sizing`],
//! [`super::network`] and [`super::spec`], so the logic that decides what
//! to do never sees an SDK type. Every failure is an [`AwsError`] naming
//! what was being done, to which resource, and AWS's error code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::time::Duration;

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types as ec2t;
use aws_sdk_route53resolver::types as r53rt;
use aws_sdk_s3::types as s3t;

use super::network::{Route, RouteTable};
use super::sizing::{Arch, InstanceType, Offerings};
use super::spec::{
    IngressRule, LIFECYCLE_RULE_ID, Lifecycle, TAG_ARCH, TAG_DEPLOYMENT, TAG_IMAGE,
    TAG_TEMPLATE_VERSION,
};

/// A failed AWS call: what, on which resource, and AWS's error code.
#[derive(Debug, thiserror::Error)]
#[error("{action} {resource}: AWS error {code}: {message}")]
pub struct AwsError {
    /// What we were doing (`creating security group`).
    pub action: String,
    /// The resource (its name or id).
    pub resource: String,
    /// AWS's error code (`InvalidGroup.Duplicate`), or the SDK's failure
    /// kind when the request never got an answer.
    pub code: String,
    /// AWS's message.
    pub message: String,
}

/// Result of an AWS call.
pub type AwsResult<T> = Result<T, AwsError>;

/// Where to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Region (default: the SDK's chain, then `us-east-1`).
    pub region: Option<String>,
    /// Endpoint URL override (tests: moto).
    pub url: Option<String>,
    /// Attempts per call (1 disables retries; tests against moto).
    pub max_attempts: Option<u32>,
}

/// The SDK clients of one region.
#[derive(Debug, Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    sm: aws_sdk_secretsmanager::Client,
    s3: aws_sdk_s3::Client,
    r53: aws_sdk_route53::Client,
    r53r: aws_sdk_route53resolver::Client,
    /// The region in use.
    pub region: String,
}

/// A VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vpc {
    /// `vpc-…`.
    pub id: String,
    /// Its associated IPv4 CIDR blocks, primary first.
    pub cidrs: Vec<String>,
    /// The owning account.
    pub owner: String,
}

/// A subnet as listed (exposure is decided from the route tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSubnet {
    /// `subnet-…`.
    pub id: String,
    /// AZ.
    pub az: String,
    /// CIDR.
    pub cidr: String,
    /// Free addresses.
    pub free_ips: u32,
}

/// An appliance image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `ami-…`.
    pub id: String,
    /// Architecture: the `causeway:arch` tag when present, else AWS's.
    pub arch: Option<Arch>,
    /// Root device (`/dev/xvda`).
    pub root_device: String,
    /// Creation date (ISO 8601).
    pub created: String,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Inbound rules.
    pub ingress: BTreeSet<IngressRule>,
    /// Its `causeway:deployment` tag.
    pub deployment: Option<String>,
}

/// What we set in a launch template, read back for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateData {
    /// AMI.
    pub image_id: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance profile name.
    pub instance_profile: String,
    /// User data, decoded.
    pub user_data: String,
    /// `HttpTokens`.
    pub http_tokens: String,
    /// `HttpPutResponseHopLimit`.
    pub hop_limit: i32,
    /// `HttpEndpoint`.
    pub http_endpoint: String,
    /// Root device name.
    pub root_device: String,
    /// Root volume type.
    pub volume_type: String,
    /// Root volume encrypted.
    pub encrypted: bool,
    /// Root volume size in GiB.
    pub volume_size: i32,
    /// A key pair (always `None` for ours).
    pub key_name: Option<String>,
}

/// A launch template and its default version's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplate {
    /// `lt-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// The default version's number.
    pub default_version: i64,
    /// The default version's data (`None` if it could not be read).
    pub data: Option<TemplateData>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// What [`Aws::run_instance`] launches.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// `lt-…`; its default version is used.
    pub template_id: &'a str,
    /// `subnet-…`.
    pub subnet: &'a str,
    /// `sg-…`.
    pub security_group: &'a str,
    /// Whether the primary interface gets a public IPv4 address.
    pub public_ip: bool,
    /// Instance profile name.
    pub instance_profile: &'a str,
    /// `Name` tag (also used in errors).
    pub name: &'a str,
    /// Tags for the instance, its volume and its interface.
    pub tags: &'a [(String, String)],
}

/// An instance of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instance {
    /// `i-…`.
    pub id: String,
    /// `Name` tag.
    pub name: String,
    /// `causeway:role` tag.
    pub role: String,
    /// `pending`, `running`, …
    pub state: String,
    /// AZ.
    pub az: String,
    /// Subnet.
    pub subnet: String,
    /// VPC.
    pub vpc: String,
    /// Type.
    pub instance_type: String,
    /// Primary ENI.
    pub eni: String,
    /// Private IPv4.
    pub private_ip: String,
    /// Public IPv4, if any.
    pub public_ip: Option<String>,
    /// The launch template version it was launched from (our tag).
    pub template_version: Option<i64>,
    /// Private DNS name's first label (the default hostname).
    pub hostname: String,
    /// Source/destination check.
    pub source_dest_check: bool,
}

/// A resolver endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverEndpoint {
    /// `rslvr-in-…`.
    pub id: String,
    /// ARN (for tags).
    pub arn: String,
    /// Name.
    pub name: String,
    /// Status (`OPERATIONAL`, `CREATING`, …).
    pub status: String,
    /// VPC.
    pub vpc: String,
}

/// A bucket lifecycle rule, reduced to what we set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRule {
    /// Id.
    pub id: String,
    /// Enabled.
    pub enabled: bool,
    /// `(days, storage class)`, sorted.
    pub transitions: Vec<(i32, String)>,
    /// Expiration days.
    pub expire_days: Option<i32>,
    /// Abort incomplete multipart uploads after days.
    pub abort_days: Option<i32>,
}

impl LifecycleRule {
    /// The rule the contract asks for.
    pub fn wanted(l: &Lifecycle) -> Self {
        Self {
            id: LIFECYCLE_RULE_ID.to_owned(),
            enabled: true,
            transitions: vec![
                (l.ia_days, "STANDARD_IA".to_owned()),
                (l.archive_days, "GLACIER".to_owned()),
            ],
            expire_days: Some(l.expire_days),
            abort_days: Some(l.abort_multipart_days),
        }
    }
}

/// What S3 reports of a bucket's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSettings {
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// All four public-access-block flags true.
    pub public_access_blocked: bool,
    /// Default encryption: `AES256` or `aws:kms` with the key id.
    pub encryption: Option<(String, Option<String>)>,
    /// The bucket policy.
    pub policy: Option<String>,
    /// Lifecycle rules.
    pub lifecycle: Vec<LifecycleRule>,
}

/// An IAM role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamRole {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A secret's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// ARN.
    pub arn: String,
    /// Name.
    pub name: String,
    /// Scheduled for deletion.
    pub deleted: bool,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

fn fail<E, R>(action: &str, resource: impl Display) -> impl FnOnce(SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let action = action.to_owned();
    let resource = resource.to_string();
    move |e| {
        let (code, message) = match (e.code(), e.message()) {
            (Some(c), m) => (c.to_owned(), m.unwrap_or_default().to_owned()),
            (None, _) => (
                match &e {
                    SdkError::ConstructionFailure(_) => "ConstructionFailure",
                    SdkError::TimeoutError(_) => "TimeoutError",
                    SdkError::DispatchFailure(_) => "DispatchFailure",
                    SdkError::ResponseError(_) => "ResponseError",
                    SdkError::ServiceError(_) => "ServiceError",
                    _ => "SdkError",
                }
                .to_owned(),
                DisplayErrorContext(&e).to_string(),
            ),
        };
        AwsError {
            action,
            resource,
            code,
            message,
        }
    }
}

fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.code()
}

fn filter(name: &str, values: &[&str]) -> ec2t::Filter {
    ec2t::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
        .build()
}

fn ec2_tags(tags: &[(String, String)]) -> Vec<ec2t::Tag> {
    tags.iter()
        .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_spec(kind: ec2t::ResourceType, tags: &[(String, String)]) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

fn ec2_tag_map(tags: &[ec2t::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

fn secret_tag_map(tags: &[aws_sdk_secretsmanager::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

fn tag_value(tags: &[ec2t::Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_owned)
}

/// Decodes IAM's URL-encoded policy documents (RFC 3986 percent-encoding).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_policy(doc: &str) -> String {
    if doc.trim_start().starts_with('{') {
        doc.to_owned()
    } else {
        percent_decode(doc)
    }
}

impl Aws {
    /// Loads credentials and region from the SDK's default chain, with
    /// overrides; S3 uses path-style addressing when the endpoint is
    /// overridden (moto).
    pub async fn connect(ep: &Endpoint) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &ep.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &ep.url {
            loader = loader.endpoint_url(url);
        }
        if let Some(n) = ep.max_attempts {
            loader = loader
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(n));
        }
        let mut config = loader.load().await;
        if config.region().is_none() {
            config = config
                .into_builder()
                .region(aws_config::Region::new("us-east-1"))
                .build();
        }
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let path_style = ep.url.is_some() || config.endpoint_url().is_some();
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(path_style)
            .build();
        Ok(Self {
            ec2: aws_sdk_ec2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            sm: aws_sdk_secretsmanager::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            r53: aws_sdk_route53::Client::new(&config),
            r53r: aws_sdk_route53resolver::Client::new(&config),
            region,
        })
    }

    // ---------------------------------------------------------------- VPC

    /// The VPC `id`; a missing one is an error naming `--vpc`.
    pub async fn vpc(&self, id: &str) -> AwsResult<Vpc> {
        let out = self
            .ec2
            .describe_vpcs()
            .vpc_ids(id)
            .send()
            .await
            .map_err(fail("reading --vpc", id))?;
        let Some(v) = out.vpcs().first() else {
            return Err(AwsError {
                action: "reading --vpc".into(),
                resource: id.into(),
                code: "InvalidVpcID.NotFound".into(),
                message: "no such VPC".into(),
            });
        };
        let mut cidrs: Vec<String> = v.cidr_block().map(str::to_owned).into_iter().collect();
        for a in v.cidr_block_association_set() {
            let associated = a
                .cidr_block_state()
                .and_then(|s| s.state())
                .is_some_and(|s| *s == ec2t::VpcCidrBlockStateCode::Associated);
            if let Some(c) = a.cidr_block()
                && associated
                && !cidrs.iter().any(|x| x == c)
            {
                cidrs.push(c.to_owned());
            }
        }
        Ok(Vpc {
            id: id.to_owned(),
            cidrs,
            owner: v.owner_id().unwrap_or_default().to_owned(),
        })
    }

    /// The VPC's subnets.
    pub async fn subnets(&self, vpc: &str) -> AwsResult<Vec<RawSubnet>> {
        let out = self
            .ec2
            .describe_subnets()
            .filters(filter("vpc-id", &[vpc]))
            .send()
            .await
            .map_err(fail("listing subnets of", vpc))?;
        Ok(out
            .subnets()
            .iter()
            .map(|s| RawSubnet {
                id: s.subnet_id().unwrap_or_default().to_owned(),
                az: s.availability_zone().unwrap_or_default().to_owned(),
                cidr: s.cidr_block().unwrap_or_default().to_owned(),
                free_ips: s
                    .available_ip_address_count()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
            })
            .collect())
    }

    /// The VPC's route tables.
    pub async fn route_tables(&self, vpc: &str) -> AwsResult<Vec<RouteTable>> {
        let out = self
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &[vpc]))
            .send()
            .await
            .map_err(fail("listing route tables of", vpc))?;
        Ok(out
            .route_tables()
            .iter()
            .map(|t| RouteTable {
                id: t.route_table_id().unwrap_or_default().to_owned(),
                main: t.associations().iter().any(|a| a.main() == Some(true)),
                subnet_ids: t
                    .associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_owned))
                    .collect(),
                routes: t
                    .routes()
                    .iter()
                    .filter_map(|r| {
                        let destination = r.destination_cidr_block()?.to_owned();
                        let target = r
                            .network_interface_id()
                            .or(r.nat_gateway_id())
                            .or(r.gateway_id())
                            .or(r.instance_id())
                            .or(r.transit_gateway_id())
                            .or(r.vpc_peering_connection_id())
                            .unwrap_or("unknown")
                            .to_owned();
                        Some(Route {
                            destination,
                            target,
                        })
                    })
                    .collect(),
            })
            .collect())
    }

    /// Adds, replaces or deletes the tailnet route of a table.
    pub async fn set_tailnet_route(
        &self,
        table: &str,
        eni: Option<&str>,
        replace: bool,
    ) -> AwsResult<()> {
        let cidr = super::network::TAILNET_CIDR;
        let what = format!("{cidr} in {table}");
        match (eni, replace) {
            (Some(eni), false) => {
                self.ec2
                    .create_route()
                    .route_table_id(table)
                    .destination_cidr_block(cidr)
                    .network_interface_id(eni)
                    .send()
                    .await
                    .map_err(fail("adding route", &what))?;
            }
            (Some(eni), true) => {
                self.ec2
                    .replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(cidr)
                    .network_interface_id(eni)
                    .send()
                    .await
                    .map_err(fail("replacing route", &what))?;
            }
            (None, _) => {
                self.ec2
                    .delete_route()
                    .route_table_id(table)
                    .destination_cidr_block(cidr)
                    .send()
                    .await
                    .map_err(fail("deleting route", &what))?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ catalogue

    /// Instance types supporting `arch` (all when `None`), or only `only`.
    pub async fn catalogue(
        &self,
        arch: Option<Arch>,
        only: Option<&str>,
    ) -> AwsResult<Vec<InstanceType>> {
        let mut req = self.ec2.describe_instance_types();
        if let Some(a) = arch {
            req = req.filters(filter(
                "processor-info.supported-architecture",
                &[a.as_str()],
            ));
        }
        if let Some(t) = only {
            req = req.instance_types(ec2t::InstanceType::from(t));
        }
        let pages = req.into_paginator().send().collect::<Vec<_>>().await;
        let mut out = Vec::new();
        for page in pages {
            let page = match page {
                Ok(p) => p,
                Err(e) if only.is_some() && code(&e) == Some("InvalidInstanceType") => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(fail("reading the instance-type catalogue", &self.region)(e)),
            };
            for t in page.instance_types() {
                let Some(name) = t.instance_type().map(|n| n.as_str().to_owned()) else {
                    continue;
                };
                out.push(InstanceType {
                    name,
                    vcpus: t
                        .v_cpu_info()
                        .and_then(|v| v.default_v_cpus())
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    memory_mib: t
                        .memory_info()
                        .and_then(|m| m.size_in_mib())
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    arches: t
                        .processor_info()
                        .map(|p| {
                            p.supported_architectures()
                                .iter()
                                .filter_map(|a| Arch::from_aws(a.as_str()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    burstable: t.burstable_performance_supported().unwrap_or(false),
                    current_generation: t.current_generation().unwrap_or(false),
                    bare_metal: t.bare_metal().unwrap_or(false),
                    network: t
                        .network_info()
                        .and_then(|n| n.network_performance())
                        .unwrap_or("unknown")
                        .to_owned(),
                });
            }
        }
        Ok(out)
    }

    /// Instance types offered in each of `azs`.
    pub async fn offerings(&self, azs: &[String]) -> AwsResult<Offerings> {
        let mut out: Offerings = azs.iter().map(|az| (az.clone(), BTreeSet::new())).collect();
        let az_refs: Vec<&str> = azs.iter().map(String::as_str).collect();
        let pages = self
            .ec2
            .describe_instance_type_offerings()
            .location_type(ec2t::LocationType::AvailabilityZone)
            .filters(filter("location", &az_refs))
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        for page in pages {
            let page = page.map_err(fail("reading instance-type offerings in", azs.join(",")))?;
            for o in page.instance_type_offerings() {
                if let (Some(az), Some(t)) = (o.location(), o.instance_type())
                    && let Some(set) = out.get_mut(az)
                {
                    set.insert(t.as_str().to_owned());
                }
            }
        }
        Ok(out)
    }

    // --------------------------------------------------------------- images

    /// The newest image of ours for `arch` (owner self, tagged).
    pub async fn newest_image(&self, arch: Arch) -> AwsResult<Option<Image>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter(&format!("tag:{TAG_IMAGE}"), &["appliance"]))
            .filters(filter(&format!("tag:{TAG_ARCH}"), &[arch.as_str()]))
            .filters(filter("state", &["available"]))
            .send()
            .await
            .map_err(fail("looking up the appliance image for", arch))?;
        let mut images: Vec<Image> = out.images().iter().map(image).collect();
        images.sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
        Ok(images.into_iter().next())
    }

    /// The image `id` (`--ami`).
    pub async fn image(&self, id: &str) -> AwsResult<Option<Image>> {
        match self.ec2.describe_images().image_ids(id).send().await {
            Ok(out) => Ok(out.images().first().map(image)),
            Err(e) if code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(None),
            Err(e) => Err(fail("reading --ami", id)(e)),
        }
    }

    // ------------------------------------------------------ security groups

    /// The security group `name` in `vpc`.
    pub async fn security_group(&self, vpc: &str, name: &str) -> AwsResult<Option<SecurityGroup>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(filter("vpc-id", &[vpc]))
            .filters(filter("group-name", &[name]))
            .send()
            .await
            .map_err(fail("reading security group", name))?;
        Ok(out.security_groups().first().map(security_group))
    }

    /// Security groups tagged with the deployment.
    pub async fn security_groups_of(&self, deployment: &str) -> AwsResult<Vec<SecurityGroup>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .send()
            .await
            .map_err(fail("listing security groups of deployment", deployment))?;
        Ok(out.security_groups().iter().map(security_group).collect())
    }

    /// Creates a security group; returns its id.
    pub async fn create_security_group(
        &self,
        vpc: &str,
        name: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .ec2
            .create_security_group()
            .vpc_id(vpc)
            .group_name(name)
            .description(description)
            .tag_specifications(tag_spec(ec2t::ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(fail("creating security group", name))?;
        Ok(out.group_id().unwrap_or_default().to_owned())
    }

    /// Adds inbound rules.
    pub async fn authorize(&self, sg: &str, rules: &[IngressRule]) -> AwsResult<()> {
        if rules.is_empty() {
            return Ok(());
        }
        self.ec2
            .authorize_security_group_ingress()
            .group_id(sg)
            .set_ip_permissions(Some(rules.iter().map(permission).collect()))
            .send()
            .await
            .map_err(fail("adding inbound rules to security group", sg))?;
        Ok(())
    }

    /// Removes inbound rules.
    pub async fn revoke(&self, sg: &str, rules: &[IngressRule]) -> AwsResult<()> {
        if rules.is_empty() {
            return Ok(());
        }
        self.ec2
            .revoke_security_group_ingress()
            .group_id(sg)
            .set_ip_permissions(Some(rules.iter().map(permission).collect()))
            .send()
            .await
            .map_err(fail("removing inbound rules from security group", sg))?;
        Ok(())
    }

    /// Deletes a security group.
    pub async fn delete_security_group(&self, id: &str) -> AwsResult<()> {
        match self.ec2.delete_security_group().group_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("InvalidGroup.NotFound") => Ok(()),
            Err(e) => Err(fail("deleting security group", id)(e)),
        }
    }

    // ----------------------------------------------------- launch templates

    /// The launch template `name` and its default version.
    pub async fn launch_template(&self, name: &str) -> AwsResult<Option<LaunchTemplate>> {
        let out = match self
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e)
                if code(&e).is_some_and(|c| {
                    c.starts_with("InvalidLaunchTemplateName") || c.contains("NotFound")
                }) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(fail("reading launch template", name)(e)),
        };
        let Some(lt) = out.launch_templates().first() else {
            return Ok(None);
        };
        let id = lt.launch_template_id().unwrap_or_default().to_owned();
        let versions = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(&id)
            .versions("$Default")
            .send()
            .await
            .map_err(fail("reading launch template", name))?;
        let data = versions
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .map(template_data);
        Ok(Some(LaunchTemplate {
            id,
            name: name.to_owned(),
            default_version: lt.default_version_number().unwrap_or(1),
            data,
            tags: ec2_tag_map(lt.tags()),
        }))
    }

    /// Launch templates tagged with the deployment.
    pub async fn launch_templates_of(&self, deployment: &str) -> AwsResult<Vec<LaunchTemplate>> {
        let out = self
            .ec2
            .describe_launch_templates()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .send()
            .await
            .map_err(fail("listing launch templates of deployment", deployment))?;
        Ok(out
            .launch_templates()
            .iter()
            .map(|t| LaunchTemplate {
                id: t.launch_template_id().unwrap_or_default().to_owned(),
                name: t.launch_template_name().unwrap_or_default().to_owned(),
                default_version: t.default_version_number().unwrap_or(1),
                data: None,
                tags: ec2_tag_map(t.tags()),
            })
            .collect())
    }

    /// Creates the launch template; returns its id (its version is 1).
    pub async fn create_launch_template(
        &self,
        name: &str,
        data: &TemplateData,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .version_description("causeway provisioner")
            .launch_template_data(request_data(data, tags))
            .tag_specifications(tag_spec(ec2t::ResourceType::LaunchTemplate, tags))
            .send()
            .await
            .map_err(fail("creating launch template", name))?;
        Ok(out
            .launch_template()
            .and_then(|t| t.launch_template_id())
            .unwrap_or_default()
            .to_owned())
    }

    /// Adds a version with `data` and makes it the default; returns its
    /// number.
    pub async fn update_launch_template(
        &self,
        id: &str,
        data: &TemplateData,
        tags: &[(String, String)],
    ) -> AwsResult<i64> {
        let out = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(id)
            .version_description("causeway provisioner")
            .launch_template_data(request_data(data, tags))
            .send()
            .await
            .map_err(fail("adding a version to launch template", id))?;
        let version = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap_or(1);
        self.ec2
            .modify_launch_template()
            .launch_template_id(id)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(fail("setting the default version of launch template", id))?;
        Ok(version)
    }

    /// Deletes a launch template.
    pub async fn delete_launch_template(&self, id: &str) -> AwsResult<()> {
        match self
            .ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e).is_some_and(|c| c.contains("NotFound")) => Ok(()),
            Err(e) => Err(fail("deleting launch template", id)(e)),
        }
    }

    // ------------------------------------------------------------ instances

    /// Instances (not terminated) tagged with the deployment, and the role
    /// when given.
    pub async fn instances_of(
        &self,
        deployment: &str,
        role: Option<&str>,
    ) -> AwsResult<Vec<Instance>> {
        let mut req = self
            .ec2
            .describe_instances()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .filters(filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped", "shutting-down"],
            ));
        if let Some(role) = role {
            req = req.filters(filter(&format!("tag:{}", super::spec::TAG_ROLE), &[role]));
        }
        let out = req
            .send()
            .await
            .map_err(fail("listing instances of deployment", deployment))?;
        let mut found: Vec<Instance> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(instance)
            .collect();
        found.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(found)
    }

    /// Launches one instance from the template, with subnet, security
    /// group, instance profile and IMDSv2 also at the top level (moto
    /// ignores them inside a template; AWS takes the same values either way).
    pub async fn run_instance(&self, launch: &Launch<'_>) -> AwsResult<String> {
        let Launch {
            template_id,
            subnet,
            security_group: sg,
            public_ip,
            instance_profile: profile,
            name,
            tags,
        } = *launch;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .ec2
                .run_instances()
                .launch_template(
                    ec2t::LaunchTemplateSpecification::builder()
                        .launch_template_id(template_id)
                        .version("$Default")
                        .build(),
                )
                // The primary interface is given here, not in the template:
                // it carries the subnet, the group and whether the
                // instance gets a public address for direct connections.
                .network_interfaces(
                    ec2t::InstanceNetworkInterfaceSpecification::builder()
                        .device_index(0)
                        .subnet_id(subnet)
                        .groups(sg)
                        .associate_public_ip_address(public_ip)
                        .delete_on_termination(true)
                        .build(),
                )
                .iam_instance_profile(
                    ec2t::IamInstanceProfileSpecification::builder()
                        .name(profile)
                        .build(),
                )
                .metadata_options(
                    ec2t::InstanceMetadataOptionsRequest::builder()
                        .http_tokens(ec2t::HttpTokensState::Required)
                        .http_put_response_hop_limit(1)
                        .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                        .build(),
                )
                .min_count(1)
                .max_count(1)
                .tag_specifications(tag_spec(ec2t::ResourceType::Instance, tags))
                .tag_specifications(tag_spec(ec2t::ResourceType::Volume, tags))
                .tag_specifications(tag_spec(ec2t::ResourceType::NetworkInterface, tags))
                .send()
                .await;
            match result {
                Ok(out) => {
                    return Ok(out
                        .instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .unwrap_or_default()
                        .to_owned());
                }
                // A new instance profile takes seconds to become usable
                // (IAM is eventually consistent): retry that one error.
                Err(e)
                    if attempt < 10
                        && code(&e) == Some("InvalidParameterValue")
                        && e.message()
                            .is_some_and(|m| m.contains("iamInstanceProfile")) =>
                {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Err(e) => return Err(fail("launching instance", name)(e)),
            }
        }
    }

    /// Sets the source/destination check of an instance.
    pub async fn set_source_dest_check(&self, id: &str, on: bool) -> AwsResult<()> {
        self.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .source_dest_check(ec2t::AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .map_err(fail("setting the source/destination check of", id))?;
        Ok(())
    }

    /// Terminates instances.
    pub async fn terminate(&self, ids: &[String]) -> AwsResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(fail("terminating instances", ids.join(",")))?;
        Ok(())
    }

    /// The state of each instance among `ids` (terminated ones included).
    pub async fn instance_states(&self, ids: &[String]) -> AwsResult<BTreeMap<String, String>> {
        let out = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(fail("reading instances", ids.join(",")))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_owned(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }

    // ------------------------------------------------------------------ IAM

    /// The IAM role `name`.
    pub async fn role(&self, name: &str) -> AwsResult<Option<IamRole>> {
        match self.iam.get_role().role_name(name).send().await {
            Ok(out) => {
                let Some(r) = out.role() else { return Ok(None) };
                let tags = self
                    .iam
                    .list_role_tags()
                    .role_name(name)
                    .send()
                    .await
                    .map_err(fail("reading tags of IAM role", name))?
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect();
                Ok(Some(IamRole {
                    name: name.to_owned(),
                    arn: r.arn().to_owned(),
                    tags,
                }))
            }
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(fail("reading IAM role", name)(e)),
        }
    }

    /// Names of roles starting with `prefix`.
    pub async fn role_names(&self, prefix: &str) -> AwsResult<Vec<String>> {
        let pages = self
            .iam
            .list_roles()
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for page in pages {
            let page = page.map_err(fail("listing IAM roles", prefix))?;
            out.extend(
                page.roles()
                    .iter()
                    .map(|r| r.role_name().to_owned())
                    .filter(|n| n.starts_with(prefix)),
            );
        }
        Ok(out)
    }

    /// Creates an IAM role EC2 may assume.
    pub async fn create_role(
        &self,
        name: &str,
        trust: &str,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust)
            .description("Causeway appliance")
            .set_tags(Some(iam_tags(tags)))
            .send()
            .await
            .map_err(fail("creating IAM role", name))?;
        Ok(out.role().map(|r| r.arn().to_owned()).unwrap_or_default())
    }

    /// Inline policies of a role, by name, decoded.
    pub async fn role_policies(&self, role: &str) -> AwsResult<BTreeMap<String, String>> {
        let names = self
            .iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .map_err(fail("listing inline policies of IAM role", role))?;
        let mut out = BTreeMap::new();
        for name in names.policy_names() {
            let doc = self
                .iam
                .get_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .map_err(fail(
                    "reading inline policy of IAM role",
                    format!("{role}/{name}"),
                ))?;
            out.insert(name.clone(), decode_policy(doc.policy_document()));
        }
        Ok(out)
    }

    /// Sets an inline policy of a role.
    pub async fn put_role_policy(&self, role: &str, name: &str, doc: &str) -> AwsResult<()> {
        self.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(doc)
            .send()
            .await
            .map_err(fail(
                "writing inline policy of IAM role",
                format!("{role}/{name}"),
            ))?;
        Ok(())
    }

    /// Removes an inline policy of a role.
    pub async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()> {
        match self
            .iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(fail(
                "deleting inline policy of IAM role",
                format!("{role}/{name}"),
            )(e)),
        }
    }

    /// Deletes a role (its policies and profiles must be gone).
    pub async fn delete_role(&self, name: &str) -> AwsResult<()> {
        match self.iam.delete_role().role_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(fail("deleting IAM role", name)(e)),
        }
    }

    /// The roles in instance profile `name`, or `None` if it does not exist.
    pub async fn instance_profile(&self, name: &str) -> AwsResult<Option<Vec<String>>> {
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .instance_profile()
                .map(|p| p.roles().iter().map(|r| r.role_name().to_owned()).collect())),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(fail("reading instance profile", name)(e)),
        }
    }

    /// Creates an instance profile.
    pub async fn create_instance_profile(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> AwsResult<()> {
        self.iam
            .create_instance_profile()
            .instance_profile_name(name)
            .set_tags(Some(iam_tags(tags)))
            .send()
            .await
            .map_err(fail("creating instance profile", name))?;
        Ok(())
    }

    /// Puts `role` into instance profile `name`.
    pub async fn add_role_to_profile(&self, name: &str, role: &str) -> AwsResult<()> {
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .map_err(fail("adding the role to instance profile", name))?;
        Ok(())
    }

    /// Takes `role` out of instance profile `name`.
    pub async fn remove_role_from_profile(&self, name: &str, role: &str) -> AwsResult<()> {
        match self
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(fail("removing the role from instance profile", name)(e)),
        }
    }

    /// Deletes an instance profile.
    pub async fn delete_instance_profile(&self, name: &str) -> AwsResult<()> {
        match self
            .iam
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(fail("deleting instance profile", name)(e)),
        }
    }

    // ------------------------------------------------------ Secrets Manager

    /// The secret `name`'s metadata.
    pub async fn secret(&self, name: &str) -> AwsResult<Option<SecretInfo>> {
        match self.sm.describe_secret().secret_id(name).send().await {
            Ok(out) => Ok(Some(SecretInfo {
                arn: out.arn().unwrap_or_default().to_owned(),
                name: out.name().unwrap_or_default().to_owned(),
                deleted: out.deleted_date().is_some(),
                tags: secret_tag_map(out.tags()),
            })),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(fail("reading secret", name)(e)),
        }
    }

    /// Secrets tagged with the deployment.
    pub async fn secrets_of(&self, deployment: &str) -> AwsResult<Vec<SecretInfo>> {
        let out = self
            .sm
            .list_secrets()
            .filters(
                aws_sdk_secretsmanager::types::Filter::builder()
                    .key(aws_sdk_secretsmanager::types::FilterNameStringType::TagKey)
                    .values(TAG_DEPLOYMENT)
                    .build(),
            )
            .include_planned_deletion(true)
            .send()
            .await
            .map_err(fail("listing secrets of deployment", deployment))?;
        let mut found = Vec::new();
        for s in out.secret_list() {
            let ours = s
                .tags()
                .iter()
                .any(|t| t.key() == Some(TAG_DEPLOYMENT) && t.value() == Some(deployment));
            if ours {
                found.push(SecretInfo {
                    arn: s.arn().unwrap_or_default().to_owned(),
                    name: s.name().unwrap_or_default().to_owned(),
                    deleted: s.deleted_date().is_some(),
                    tags: secret_tag_map(s.tags()),
                });
            }
        }
        Ok(found)
    }

    /// Creates the secret; returns its ARN. The value is never logged.
    pub async fn create_secret(
        &self,
        name: &str,
        value: &str,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .description("Causeway auth key (read by the appliance at first registration)")
            .secret_string(value)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| {
                        aws_sdk_secretsmanager::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                    })
                    .collect(),
            ))
            .send()
            .await
            .map_err(fail("creating secret", name))?;
        Ok(out.arn().unwrap_or_default().to_owned())
    }

    /// Cancels a scheduled deletion (a deploy resuming after a destroy).
    pub async fn restore_secret(&self, name: &str) -> AwsResult<()> {
        self.sm
            .restore_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(fail("restoring secret", name))?;
        Ok(())
    }

    /// The secret's current value (to compare with `--auth-key-file`).
    pub async fn secret_value(&self, name: &str) -> AwsResult<Option<String>> {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(fail("reading the value of secret", name))?;
        Ok(out.secret_string().map(str::to_owned))
    }

    /// Stores a new value.
    pub async fn put_secret_value(&self, name: &str, value: &str) -> AwsResult<()> {
        self.sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .map_err(fail("updating the value of secret", name))?;
        Ok(())
    }

    /// Deletes a secret at once (no recovery window: a redeploy reuses the
    /// name).
    pub async fn delete_secret(&self, arn: &str) -> AwsResult<()> {
        match self
            .sm
            .delete_secret()
            .secret_id(arn)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(fail("deleting secret", arn)(e)),
        }
    }

    // ------------------------------------------------------------------- S3

    /// Whether the bucket exists (and is ours to read).
    pub async fn bucket_exists(&self, bucket: &str) -> AwsResult<bool> {
        match self.s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) if code(&e) == Some("NotFound") || code(&e) == Some("NoSuchBucket") => Ok(false),
            Err(e) => Err(fail("reading bucket", bucket)(e)),
        }
    }

    /// Creates the bucket in this region.
    pub async fn create_bucket(&self, bucket: &str) -> AwsResult<()> {
        let mut req = self.s3.create_bucket().bucket(bucket);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                s3t::CreateBucketConfiguration::builder()
                    .location_constraint(s3t::BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        req.send().await.map_err(fail("creating bucket", bucket))?;
        Ok(())
    }

    /// The settings we manage on a bucket.
    pub async fn bucket_settings(&self, bucket: &str) -> AwsResult<BucketSettings> {
        let tags = match self.s3.get_bucket_tagging().bucket(bucket).send().await {
            Ok(o) => o
                .tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect(),
            Err(e) if code(&e) == Some("NoSuchTagSet") => BTreeMap::new(),
            Err(e) => return Err(fail("reading tags of bucket", bucket)(e)),
        };
        let public_access_blocked = match self
            .s3
            .get_public_access_block()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(o) => o.public_access_block_configuration().is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            }),
            Err(e) if code(&e) == Some("NoSuchPublicAccessBlockConfiguration") => false,
            Err(e) => return Err(fail("reading the public access block of bucket", bucket)(e)),
        };
        let encryption = match self.s3.get_bucket_encryption().bucket(bucket).send().await {
            Ok(o) => o
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| {
                    (
                        d.sse_algorithm().as_str().to_owned(),
                        d.kms_master_key_id().map(str::to_owned),
                    )
                }),
            Err(e) if code(&e) == Some("ServerSideEncryptionConfigurationNotFoundError") => None,
            Err(e) => return Err(fail("reading the encryption of bucket", bucket)(e)),
        };
        let policy = match self.s3.get_bucket_policy().bucket(bucket).send().await {
            Ok(o) => o.policy().map(str::to_owned),
            Err(e) if code(&e) == Some("NoSuchBucketPolicy") => None,
            Err(e) => return Err(fail("reading the policy of bucket", bucket)(e)),
        };
        let lifecycle = match self
            .s3
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(o) => o.rules().iter().map(lifecycle_rule).collect(),
            Err(e) if code(&e) == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(e) => return Err(fail("reading the lifecycle of bucket", bucket)(e)),
        };
        Ok(BucketSettings {
            tags,
            public_access_blocked,
            encryption,
            policy,
            lifecycle,
        })
    }

    /// Tags the bucket.
    pub async fn tag_bucket(&self, bucket: &str, tags: &[(String, String)]) -> AwsResult<()> {
        let tagging = s3t::Tagging::builder()
            .set_tag_set(Some(
                tags.iter()
                    .filter_map(|(k, v)| s3t::Tag::builder().key(k).value(v).build().ok())
                    .collect(),
            ))
            .build()
            .map_err(|e| build_error("tagging bucket", bucket, e))?;
        self.s3
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send()
            .await
            .map_err(fail("tagging bucket", bucket))?;
        Ok(())
    }

    /// Blocks every kind of public access.
    pub async fn block_public_access(&self, bucket: &str) -> AwsResult<()> {
        self.s3
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                s3t::PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(fail("blocking public access to bucket", bucket))?;
        Ok(())
    }

    /// Sets default encryption: SSE-S3, or SSE-KMS with `kms_key`.
    pub async fn encrypt_bucket(&self, bucket: &str, kms_key: Option<&str>) -> AwsResult<()> {
        let default = match kms_key {
            Some(k) => s3t::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(s3t::ServerSideEncryption::AwsKms)
                .kms_master_key_id(k),
            None => s3t::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(s3t::ServerSideEncryption::Aes256),
        }
        .build()
        .map_err(|e| build_error("encrypting bucket", bucket, e))?;
        let config = s3t::ServerSideEncryptionConfiguration::builder()
            .rules(
                s3t::ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default)
                    .bucket_key_enabled(kms_key.is_some())
                    .build(),
            )
            .build()
            .map_err(|e| build_error("encrypting bucket", bucket, e))?;
        self.s3
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(config)
            .send()
            .await
            .map_err(fail("setting default encryption of bucket", bucket))?;
        Ok(())
    }

    /// Sets the bucket policy.
    pub async fn put_bucket_policy(&self, bucket: &str, policy: &str) -> AwsResult<()> {
        self.s3
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy)
            .send()
            .await
            .map_err(fail("setting the policy of bucket", bucket))?;
        Ok(())
    }

    /// Replaces the lifecycle configuration with `rule`.
    pub async fn put_lifecycle(&self, bucket: &str, rule: &LifecycleRule) -> AwsResult<()> {
        let err = |e| build_error("setting the lifecycle of bucket", bucket, e);
        let mut b = s3t::LifecycleRule::builder()
            .id(&rule.id)
            .status(if rule.enabled {
                s3t::ExpirationStatus::Enabled
            } else {
                s3t::ExpirationStatus::Disabled
            })
            .filter(s3t::LifecycleRuleFilter::builder().prefix("").build());
        for (days, class) in &rule.transitions {
            b = b.transitions(
                s3t::Transition::builder()
                    .days(*days)
                    .storage_class(s3t::TransitionStorageClass::from(class.as_str()))
                    .build(),
            );
        }
        if let Some(d) = rule.expire_days {
            b = b.expiration(s3t::LifecycleExpiration::builder().days(d).build());
        }
        if let Some(d) = rule.abort_days {
            b = b.abort_incomplete_multipart_upload(
                s3t::AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(d)
                    .build(),
            );
        }
        let config = s3t::BucketLifecycleConfiguration::builder()
            .rules(b.build().map_err(err)?)
            .build()
            .map_err(err)?;
        self.s3
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .map_err(fail("setting the lifecycle of bucket", bucket))?;
        Ok(())
    }

    /// Names of all buckets whose tags name the deployment.
    pub async fn buckets_of(&self, deployment: &str) -> AwsResult<Vec<String>> {
        let out = self
            .s3
            .list_buckets()
            .send()
            .await
            .map_err(fail("listing buckets for deployment", deployment))?;
        let mut found = Vec::new();
        for b in out.buckets() {
            let Some(name) = b.name() else { continue };
            // Buckets in other regions or of other owners answer with
            // errors here: they are not ours, so skip them.
            let Ok(tags) = self.s3.get_bucket_tagging().bucket(name).send().await else {
                continue;
            };
            if tags
                .tag_set()
                .iter()
                .any(|t| t.key() == TAG_DEPLOYMENT && t.value() == deployment)
            {
                found.push(name.to_owned());
            }
        }
        Ok(found)
    }

    /// Number of objects (and versions) in the bucket, up to one page.
    pub async fn bucket_object_count(&self, bucket: &str) -> AwsResult<usize> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(1000)
            .send()
            .await
            .map_err(fail("listing objects of bucket", bucket))?;
        Ok(out.contents().len())
    }

    /// Deletes every object of the bucket (`--delete-recordings`).
    pub async fn empty_bucket(&self, bucket: &str) -> AwsResult<usize> {
        let mut deleted = 0;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
                .map_err(fail("listing objects of bucket", bucket))?;
            let ids: Vec<s3t::ObjectIdentifier> = out
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter_map(|k| s3t::ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if ids.is_empty() {
                return Ok(deleted);
            }
            deleted += ids.len();
            let delete = s3t::Delete::builder()
                .set_objects(Some(ids))
                .build()
                .map_err(|e| build_error("emptying bucket", bucket, e))?;
            self.s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(fail("emptying bucket", bucket))?;
        }
    }

    /// Deletes an (empty) bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> AwsResult<()> {
        match self.s3.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchBucket") => Ok(()),
            Err(e) => Err(fail("deleting bucket", bucket)(e)),
        }
    }

    // ------------------------------------------------------------ Route 53

    /// Names of the private hosted zones associated with the VPC.
    pub async fn private_zones(&self, vpc: &str) -> AwsResult<Vec<String>> {
        let out = self
            .r53
            .list_hosted_zones_by_vpc()
            .vpc_id(vpc)
            .vpc_region(aws_sdk_route53::types::VpcRegion::from(
                self.region.as_str(),
            ))
            .send()
            .await
            .map_err(fail("listing private hosted zones of", vpc))?;
        Ok(out
            .hosted_zone_summaries()
            .iter()
            .map(|z| z.name().to_owned())
            .collect())
    }

    /// The resolver endpoint named `name` in `vpc`.
    pub async fn resolver_endpoint(
        &self,
        vpc: &str,
        name: &str,
    ) -> AwsResult<Option<ResolverEndpoint>> {
        Ok(self
            .resolver_endpoints()
            .await?
            .into_iter()
            .find(|e| e.name == name && e.vpc == vpc))
    }

    /// Resolver endpoints tagged with the deployment.
    pub async fn resolver_endpoints_of(
        &self,
        deployment: &str,
    ) -> AwsResult<Vec<ResolverEndpoint>> {
        let mut found = Vec::new();
        for e in self.resolver_endpoints().await? {
            let tags = self
                .r53r
                .list_tags_for_resource()
                .resource_arn(&e.arn)
                .send()
                .await
                .map_err(fail("reading tags of resolver endpoint", &e.id))?;
            if tags
                .tags()
                .iter()
                .any(|t| t.key() == TAG_DEPLOYMENT && t.value() == deployment)
            {
                found.push(e);
            }
        }
        Ok(found)
    }

    async fn resolver_endpoints(&self) -> AwsResult<Vec<ResolverEndpoint>> {
        let out = self
            .r53r
            .list_resolver_endpoints()
            .send()
            .await
            .map_err(fail("listing resolver endpoints in", &self.region))?;
        Ok(out
            .resolver_endpoints()
            .iter()
            .map(|e| ResolverEndpoint {
                id: e.id().unwrap_or_default().to_owned(),
                arn: e.arn().unwrap_or_default().to_owned(),
                name: e.name().unwrap_or_default().to_owned(),
                status: e
                    .status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                vpc: e.host_vpc_id().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// Creates an inbound endpoint with one address in each subnet.
    pub async fn create_resolver_endpoint(
        &self,
        name: &str,
        request_id: &str,
        sg: &str,
        subnets: &[String],
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let err = |e| build_error("creating resolver endpoint", name, e);
        let mut req = self
            .r53r
            .create_resolver_endpoint()
            .name(name)
            .creator_request_id(request_id)
            .security_group_ids(sg)
            .direction(r53rt::ResolverEndpointDirection::Inbound);
        for s in subnets {
            req = req.ip_addresses(
                r53rt::IpAddressRequest::builder()
                    .subnet_id(s)
                    .build()
                    .map_err(err)?,
            );
        }
        for (k, v) in tags {
            req = req.tags(r53rt::Tag::builder().key(k).value(v).build().map_err(err)?);
        }
        let out = req
            .send()
            .await
            .map_err(fail("creating resolver endpoint", name))?;
        Ok(out
            .resolver_endpoint()
            .and_then(|e| e.id())
            .unwrap_or_default()
            .to_owned())
    }

    /// The endpoint's addresses.
    pub async fn resolver_addresses(&self, id: &str) -> AwsResult<Vec<String>> {
        let out = self
            .r53r
            .list_resolver_endpoint_ip_addresses()
            .resolver_endpoint_id(id)
            .send()
            .await
            .map_err(fail("listing addresses of resolver endpoint", id))?;
        let mut ips: Vec<String> = out
            .ip_addresses()
            .iter()
            .filter_map(|a| a.ip().map(str::to_owned))
            .collect();
        ips.sort();
        Ok(ips)
    }

    /// Deletes a resolver endpoint.
    pub async fn delete_resolver_endpoint(&self, id: &str) -> AwsResult<()> {
        match self
            .r53r
            .delete_resolver_endpoint()
            .resolver_endpoint_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(fail("deleting resolver endpoint", id)(e)),
        }
    }
}

fn build_error(action: &str, resource: &str, e: impl Display) -> AwsError {
    AwsError {
        action: action.to_owned(),
        resource: resource.to_owned(),
        code: "InvalidRequest".to_owned(),
        message: e.to_string(),
    }
}

fn iam_tags(tags: &[(String, String)]) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .filter_map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .ok()
        })
        .collect()
}

fn image(i: &ec2t::Image) -> Image {
    let tagged = tag_value(i.tags(), TAG_ARCH).and_then(|a| Arch::from_aws(&a));
    Image {
        id: i.image_id().unwrap_or_default().to_owned(),
        arch: tagged.or_else(|| i.architecture().and_then(|a| Arch::from_aws(a.as_str()))),
        root_device: i.root_device_name().unwrap_or("/dev/xvda").to_owned(),
        created: i.creation_date().unwrap_or_default().to_owned(),
    }
}

fn security_group(g: &ec2t::SecurityGroup) -> SecurityGroup {
    let mut ingress = BTreeSet::new();
    for p in g.ip_permissions() {
        let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
        let from_port = p.from_port().unwrap_or(-1);
        let to_port = p.to_port().unwrap_or(-1);
        let cidrs = p
            .ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .chain(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()));
        for cidr in cidrs {
            ingress.insert(IngressRule {
                protocol: protocol.clone(),
                from_port,
                to_port,
                cidr: cidr.to_owned(),
            });
        }
        for pair in p.user_id_group_pairs() {
            ingress.insert(IngressRule {
                protocol: protocol.clone(),
                from_port,
                to_port,
                cidr: pair.group_id().unwrap_or("sg-?").to_owned(),
            });
        }
    }
    SecurityGroup {
        id: g.group_id().unwrap_or_default().to_owned(),
        name: g.group_name().unwrap_or_default().to_owned(),
        ingress,
        deployment: tag_value(g.tags(), TAG_DEPLOYMENT),
    }
}

fn permission(r: &IngressRule) -> ec2t::IpPermission {
    let b = ec2t::IpPermission::builder()
        .ip_protocol(&r.protocol)
        .from_port(r.from_port)
        .to_port(r.to_port);
    if r.cidr.contains(':') {
        b.ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6(&r.cidr).build())
            .build()
    } else {
        b.ip_ranges(ec2t::IpRange::builder().cidr_ip(&r.cidr).build())
            .build()
    }
}

fn instance(i: &ec2t::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_owned(),
        name: tag_value(i.tags(), "Name").unwrap_or_default(),
        role: tag_value(i.tags(), super::spec::TAG_ROLE).unwrap_or_default(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        az: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_owned(),
        subnet: i.subnet_id().unwrap_or_default().to_owned(),
        vpc: i.vpc_id().unwrap_or_default().to_owned(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        eni: i
            .network_interfaces()
            .iter()
            .find(|n| n.attachment().and_then(|a| a.device_index()) == Some(0))
            .or_else(|| i.network_interfaces().first())
            .and_then(|n| n.network_interface_id())
            .unwrap_or_default()
            .to_owned(),
        private_ip: i.private_ip_address().unwrap_or_default().to_owned(),
        public_ip: i.public_ip_address().map(str::to_owned),
        template_version: i
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_TEMPLATE_VERSION))
            .and_then(|t| t.value())
            .and_then(|v| v.parse().ok()),
        hostname: i
            .private_dns_name()
            .unwrap_or_default()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned(),
        source_dest_check: i.source_dest_check().unwrap_or(true),
    }
}

fn template_data(d: &ec2t::ResponseLaunchTemplateData) -> TemplateData {
    let md = d.metadata_options();
    let root = d.block_device_mappings().first();
    let ebs = root.and_then(|b| b.ebs());
    TemplateData {
        image_id: d.image_id().unwrap_or_default().to_owned(),
        instance_type: d
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        instance_profile: d
            .iam_instance_profile()
            .and_then(|p| p.name())
            .unwrap_or_default()
            .to_owned(),
        user_data: d.user_data().and_then(base64_decode).unwrap_or_default(),
        http_tokens: md
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        hop_limit: md
            .and_then(|m| m.http_put_response_hop_limit())
            .unwrap_or(0),
        http_endpoint: md
            .and_then(|m| m.http_endpoint())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        root_device: root
            .and_then(|b| b.device_name())
            .unwrap_or_default()
            .to_owned(),
        volume_type: ebs
            .and_then(|e| e.volume_type())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        encrypted: ebs.and_then(|e| e.encrypted()).unwrap_or(false),
        volume_size: ebs.and_then(|e| e.volume_size()).unwrap_or(0),
        key_name: d.key_name().map(str::to_owned),
    }
}

fn request_data(d: &TemplateData, tags: &[(String, String)]) -> ec2t::RequestLaunchTemplateData {
    ec2t::RequestLaunchTemplateData::builder()
        .image_id(&d.image_id)
        .instance_type(ec2t::InstanceType::from(d.instance_type.as_str()))
        .iam_instance_profile(
            ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(&d.instance_profile)
                .build(),
        )
        .user_data(base64_encode(&d.user_data))
        .metadata_options(
            ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(ec2t::LaunchTemplateHttpTokensState::from(
                    d.http_tokens.as_str(),
                ))
                .http_put_response_hop_limit(d.hop_limit)
                .http_endpoint(ec2t::LaunchTemplateInstanceMetadataEndpointState::from(
                    d.http_endpoint.as_str(),
                ))
                .build(),
        )
        .block_device_mappings(
            ec2t::LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(&d.root_device)
                .ebs(
                    ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_type(ec2t::VolumeType::from(d.volume_type.as_str()))
                        .encrypted(d.encrypted)
                        .volume_size(d.volume_size)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            ec2t::LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ec2t::ResourceType::Instance)
                .set_tags(Some(ec2_tags(tags)))
                .build(),
        )
        .build()
}

fn lifecycle_rule(r: &s3t::LifecycleRule) -> LifecycleRule {
    let mut transitions: Vec<(i32, String)> = r
        .transitions()
        .iter()
        .map(|t| {
            (
                t.days().unwrap_or(0),
                t.storage_class()
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    transitions.sort();
    LifecycleRule {
        id: r.id().unwrap_or_default().to_owned(),
        enabled: *r.status() == s3t::ExpirationStatus::Enabled,
        transitions,
        expire_days: r.expiration().and_then(|e| e.days()),
        abort_days: r
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
    }
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn base64_decode(s: &str) -> Option<String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_policy_documents_are_url_decoded() {
        assert_eq!(
            decode_policy("%7B%22Version%22%3A%222012-10-17%22%7D"),
            r#"{"Version":"2012-10-17"}"#
        );
        assert_eq!(decode_policy(r#"{"a":1}"#), r#"{"a":1}"#);
    }

    #[test]
    fn an_aws_error_names_the_action_resource_and_code() {
        let e = AwsError {
            action: "creating security group".into(),
            resource: "causeway-x-relay".into(),
            code: "InvalidGroup.Duplicate".into(),
            message: "exists".into(),
        };
        assert_eq!(
            e.to_string(),
            "creating security group causeway-x-relay: AWS error InvalidGroup.Duplicate: exists"
        );
    }
}
