//! Route 53 Resolver: the inbound endpoint for `--dns resolver-endpoint`.

use aws_sdk_route53resolver::types as r53rt;

use super::Aws;
use super::error::{AwsResult, Built, Sent};
use crate::aws::spec::TAG_DEPLOYMENT;

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

impl Aws {
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
                .or_fail("reading tags of resolver endpoint", &e.id)?;
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
            .or_fail("listing resolver endpoints in", &self.region)?;
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
        const ACTION: &str = "creating resolver endpoint";
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
                    .or_invalid(ACTION, name)?,
            );
        }
        for (k, v) in tags {
            req = req.tags(
                r53rt::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .or_invalid(ACTION, name)?,
            );
        }
        let out = req.send().await.or_fail(ACTION, name)?;
        Ok(out
            .resolver_endpoint()
            .and_then(|e| e.id())
            .unwrap_or_default()
            .to_owned())
    }

    /// The endpoint's addresses, sorted.
    pub async fn resolver_addresses(&self, id: &str) -> AwsResult<Vec<String>> {
        let out = self
            .r53r
            .list_resolver_endpoint_ip_addresses()
            .resolver_endpoint_id(id)
            .send()
            .await
            .or_fail("listing addresses of resolver endpoint", id)?;
        let mut ips: Vec<String> = out
            .ip_addresses()
            .iter()
            .filter_map(|a| a.ip().map(str::to_owned))
            .collect();
        ips.sort();
        Ok(ips)
    }

    /// Deletes a resolver endpoint; gone already is fine.
    pub async fn delete_resolver_endpoint(&self, id: &str) -> AwsResult<()> {
        self.r53r
            .delete_resolver_endpoint()
            .resolver_endpoint_id(id)
            .send()
            .await
            .absent_on(&["ResourceNotFoundException"])
            .or_fail("deleting resolver endpoint", id)?;
        Ok(())
    }
}
