//! The VPC, its subnets and route tables, and the tailnet return route.

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsError, AwsResult, Sent};
use super::filter;
use crate::aws::network::{Route, RouteTable, TAILNET_CIDR};

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

impl Aws {
    /// The VPC `id`; a missing one is an error naming `--vpc`.
    pub async fn vpc(&self, id: &str) -> AwsResult<Vpc> {
        let out = self
            .ec2
            .describe_vpcs()
            .vpc_ids(id)
            .send()
            .await
            .or_fail("reading --vpc", id)?;
        let Some(v) = out.vpcs().first() else {
            return Err(AwsError::new(
                "reading --vpc",
                id,
                "InvalidVpcID.NotFound",
                "no such VPC",
            ));
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
            .or_fail("listing subnets of", vpc)?;
        Ok(out.subnets().iter().map(raw_subnet).collect())
    }

    /// The VPC's route tables.
    pub async fn route_tables(&self, vpc: &str) -> AwsResult<Vec<RouteTable>> {
        let out = self
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &[vpc]))
            .send()
            .await
            .or_fail("listing route tables of", vpc)?;
        Ok(out.route_tables().iter().map(route_table).collect())
    }

    /// Adds (`eni`, not `replace`), replaces (`eni`, `replace`) or deletes
    /// (no `eni`) the tailnet route of a table.
    pub async fn set_tailnet_route(
        &self,
        table: &str,
        eni: Option<&str>,
        replace: bool,
    ) -> AwsResult<()> {
        let what = format!("{TAILNET_CIDR} in {table}");
        match (eni, replace) {
            (Some(eni), false) => {
                self.ec2
                    .create_route()
                    .route_table_id(table)
                    .destination_cidr_block(TAILNET_CIDR)
                    .network_interface_id(eni)
                    .send()
                    .await
                    .or_fail("adding route", &what)?;
            }
            (Some(eni), true) => {
                self.ec2
                    .replace_route()
                    .route_table_id(table)
                    .destination_cidr_block(TAILNET_CIDR)
                    .network_interface_id(eni)
                    .send()
                    .await
                    .or_fail("replacing route", &what)?;
            }
            (None, _) => {
                self.ec2
                    .delete_route()
                    .route_table_id(table)
                    .destination_cidr_block(TAILNET_CIDR)
                    .send()
                    .await
                    .or_fail("deleting route", &what)?;
            }
        }
        Ok(())
    }
}

fn raw_subnet(s: &ec2t::Subnet) -> RawSubnet {
    RawSubnet {
        id: s.subnet_id().unwrap_or_default().to_owned(),
        az: s.availability_zone().unwrap_or_default().to_owned(),
        cidr: s.cidr_block().unwrap_or_default().to_owned(),
        free_ips: s
            .available_ip_address_count()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    }
}

fn route_table(t: &ec2t::RouteTable) -> RouteTable {
    RouteTable {
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
    }
}
