//! Security groups and their inbound rules.

use std::collections::BTreeSet;

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsResult, Sent};
use super::{filter, tag_spec, tag_value};
use crate::aws::spec::{IngressRule, TAG_DEPLOYMENT};

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

impl Aws {
    /// The security group `name` in `vpc`.
    pub async fn security_group(&self, vpc: &str, name: &str) -> AwsResult<Option<SecurityGroup>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(filter("vpc-id", &[vpc]))
            .filters(filter("group-name", &[name]))
            .send()
            .await
            .or_fail("reading security group", name)?;
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
            .or_fail("listing security groups of deployment", deployment)?;
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
            .or_fail("creating security group", name)?;
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
            .or_fail("adding inbound rules to security group", sg)?;
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
            .or_fail("removing inbound rules from security group", sg)?;
        Ok(())
    }

    /// Deletes a security group (gone already is fine).
    pub async fn delete_security_group(&self, id: &str) -> AwsResult<()> {
        self.ec2
            .delete_security_group()
            .group_id(id)
            .send()
            .await
            .absent_on(&["InvalidGroup.NotFound"])
            .or_fail("deleting security group", id)?;
        Ok(())
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
        let groups = p
            .user_id_group_pairs()
            .iter()
            .map(|pair| pair.group_id().unwrap_or("sg-?"));
        for source in cidrs.chain(groups) {
            ingress.insert(IngressRule {
                protocol: protocol.clone(),
                from_port,
                to_port,
                cidr: source.to_owned(),
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
