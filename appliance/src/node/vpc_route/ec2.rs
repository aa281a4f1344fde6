//! The EC2 calls behind the VPC return route: read one table's tailnet
//! route, replace it, create it. Nothing is decided here.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::decide::{RouteTableId, Seen};

/// How long one EC2 call may take: the failover waits on it, and a call
/// that hangs is better retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// An EC2 client for the route calls.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
}

impl Ec2 {
    /// A client from the SDK's default chain (on EC2: the instance role
    /// and the region from IMDSv2; `AWS_ENDPOINT_URL_EC2` or
    /// `AWS_ENDPOINT_URL` redirect it, e.g. to a VPC endpoint). The SDK's
    /// own retries are off: the caller retries, and shows each failure.
    pub async fn connect() -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        Self {
            client: aws_sdk_ec2::Client::new(&config),
        }
    }

    /// What `table`'s route to `destination` points at.
    pub async fn observe(&self, table: &RouteTableId, destination: &str) -> anyhow::Result<Seen> {
        let out = self
            .client
            .describe_route_tables()
            .route_table_ids(table.as_str())
            .send()
            .await
            .map_err(|e| aws_error("DescribeRouteTables", table, e))?;
        let found = out
            .route_tables()
            .iter()
            .find(|t| t.route_table_id() == Some(table.as_str()))
            .with_context(|| format!("route table {table}: EC2 did not return it"))?;
        let Some(route) = found
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some(destination))
        else {
            return Ok(Seen::NoRoute);
        };
        let target = [
            route.network_interface_id(),
            route.gateway_id(),
            route.nat_gateway_id(),
            route.transit_gateway_id(),
            route.vpc_peering_connection_id(),
            route.instance_id(),
        ]
        .into_iter()
        .flatten()
        .next()
        .map(str::to_owned);
        Ok(Seen::Route(target))
    }

    /// Points `table`'s route to `destination` at `eni` (ReplaceRoute).
    pub async fn replace(
        &self,
        table: &RouteTableId,
        destination: &str,
        eni: &str,
    ) -> anyhow::Result<()> {
        self.client
            .replace_route()
            .route_table_id(table.as_str())
            .destination_cidr_block(destination)
            .network_interface_id(eni)
            .send()
            .await
            .map_err(|e| aws_error("ReplaceRoute", table, e))?;
        Ok(())
    }

    /// Adds `destination → eni` to `table` (CreateRoute).
    pub async fn create(
        &self,
        table: &RouteTableId,
        destination: &str,
        eni: &str,
    ) -> anyhow::Result<()> {
        self.client
            .create_route()
            .route_table_id(table.as_str())
            .destination_cidr_block(destination)
            .network_interface_id(eni)
            .send()
            .await
            .map_err(|e| aws_error("CreateRoute", table, e))?;
        Ok(())
    }
}

/// An SDK error as one line naming the call, the table, AWS's code and
/// message (`UnauthorizedOperation`, `InvalidRouteTableID.NotFound`, …).
fn aws_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    call: &str,
    table: &RouteTableId,
    e: E,
) -> anyhow::Error {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => {
            anyhow::anyhow!("EC2 {call} on {table}: {code}: {message}")
        }
        (Some(code), None) => anyhow::anyhow!("EC2 {call} on {table}: {code}"),
        _ => anyhow::Error::new(e).context(format!("EC2 {call} on {table}: no answer")),
    }
}
