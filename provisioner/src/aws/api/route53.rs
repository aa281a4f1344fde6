//! Route 53: the private hosted zones split DNS points at.

use super::Aws;
use super::error::{AwsResult, Sent};

impl Aws {
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
            .or_fail("listing private hosted zones of", vpc)?;
        Ok(out
            .hosted_zone_summaries()
            .iter()
            .map(|z| z.name().to_owned())
            .collect())
    }
}
