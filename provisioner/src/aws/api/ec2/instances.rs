//! Instances: launching, reading, the source/destination check, terminating.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsResult, Sent, code, fail};
use super::{filter, tag_spec, tag_value};
use crate::aws::spec::{TAG_DEPLOYMENT, TAG_ROLE, TAG_TEMPLATE_VERSION};

/// What [`Aws::run_instance`] launches.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// `lt-…`; its default version is used.
    pub template_id: &'a str,
    /// `subnet-…`.
    pub subnet: &'a str,
    /// `sg-…`.
    pub security_group: &'a str,
    /// Whether the primary interface gets a public IPv4 address (never
    /// with an egress interface: AWS assigns none at launch to an instance
    /// with two interfaces, so an Elastic IP is associated instead).
    pub public_ip: bool,
    /// An existing interface (`eni-…`) attached at launch as device index 1.
    pub egress_interface: Option<&'a str>,
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

impl Aws {
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
            req = req.filters(filter(&format!("tag:{TAG_ROLE}"), &[role]));
        }
        let out = req
            .send()
            .await
            .or_fail("listing instances of deployment", deployment)?;
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.run_instance_once(launch).await {
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
                Err(e) => return Err(fail("launching instance", launch.name, e)),
            }
        }
    }

    async fn run_instance_once(
        &self,
        launch: &Launch<'_>,
    ) -> Result<
        aws_sdk_ec2::operation::run_instances::RunInstancesOutput,
        aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::run_instances::RunInstancesError>,
    > {
        self.ec2
            .run_instances()
            .launch_template(
                ec2t::LaunchTemplateSpecification::builder()
                    .launch_template_id(launch.template_id)
                    .version("$Default")
                    .build(),
            )
            // The primary interface is given here, not in the template: it
            // carries the subnet, the group and whether the instance gets a
            // public address for direct connections.
            .set_network_interfaces(Some(interfaces(launch)))
            .iam_instance_profile(
                ec2t::IamInstanceProfileSpecification::builder()
                    .name(launch.instance_profile)
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
            .tag_specifications(tag_spec(ec2t::ResourceType::Instance, launch.tags))
            .tag_specifications(tag_spec(ec2t::ResourceType::Volume, launch.tags))
            .tag_specifications(tag_spec(ec2t::ResourceType::NetworkInterface, launch.tags))
            .send()
            .await
    }

    /// Sets the source/destination check of an instance.
    pub async fn set_source_dest_check(&self, id: &str, on: bool) -> AwsResult<()> {
        self.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .source_dest_check(ec2t::AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .or_fail("setting the source/destination check of", id)?;
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
            .or_fail("terminating instances", ids.join(","))?;
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
            .or_fail("reading instances", ids.join(","))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_owned(),
                    state_name(i),
                )
            })
            .collect())
    }
}

/// The interfaces of a launch: the primary one, and the egress interface
/// at device index 1. The egress interface outlives the instance, so a
/// replacement gets it back with the MAC address its config names.
fn interfaces(launch: &Launch<'_>) -> Vec<ec2t::InstanceNetworkInterfaceSpecification> {
    let mut out = vec![
        ec2t::InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(launch.subnet)
            .groups(launch.security_group)
            .associate_public_ip_address(launch.public_ip && launch.egress_interface.is_none())
            .delete_on_termination(true)
            .build(),
    ];
    if let Some(eni) = launch.egress_interface {
        out.push(
            ec2t::InstanceNetworkInterfaceSpecification::builder()
                .device_index(1)
                .network_interface_id(eni)
                .delete_on_termination(false)
                .build(),
        );
    }
    out
}

fn state_name(i: &ec2t::Instance) -> String {
    i.state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default()
}

fn instance(i: &ec2t::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_owned(),
        name: tag_value(i.tags(), "Name").unwrap_or_default(),
        role: tag_value(i.tags(), TAG_ROLE).unwrap_or_default(),
        state: state_name(i),
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
        template_version: tag_value(i.tags(), TAG_TEMPLATE_VERSION).and_then(|v| v.parse().ok()),
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
