//! An exit node's egress: the second network interface the provisioner
//! creates in a private subnet (created, read, deleted), and the NAT
//! gateway that subnet's default route points at (read only).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsResult, Sent};
use super::{filter, tag_map, tag_spec};
use crate::aws::spec::{EGRESS_INTERFACE, TAG_DEPLOYMENT, TAG_INTERFACE};

/// A network interface the deployment created itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkInterface {
    /// `eni-…`.
    pub id: String,
    /// Subnet.
    pub subnet: String,
    /// AZ.
    pub az: String,
    /// Its MAC address, which the appliance finds the interface by.
    pub mac: String,
    /// Primary private IPv4.
    pub private_ip: String,
    /// `available`, `in-use`, …
    pub status: String,
    /// The instance it is attached to, and at which device index.
    pub attachment: Option<(String, i32)>,
    /// Source/destination check.
    pub source_dest_check: bool,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// A NAT gateway, as `status` and `plan` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NatGateway {
    /// `nat-…`.
    pub id: String,
    /// `pending`, `available`, `deleting`, `deleted`, `failed`.
    pub state: String,
    /// Its public IPv4 addresses: what third parties see.
    pub public_ips: Vec<String>,
}

/// What [`Aws::create_egress_interface`] creates.
#[derive(Debug, Clone, Copy)]
pub struct NewInterface<'a> {
    /// `subnet-…`.
    pub subnet: &'a str,
    /// `sg-…`.
    pub security_group: &'a str,
    /// Description.
    pub description: &'a str,
    /// Tags (with [`TAG_INTERFACE`]).
    pub tags: &'a [(String, String)],
}

impl Aws {
    /// The egress interfaces tagged with the deployment (not the instances'
    /// own primary interfaces, which carry no [`TAG_INTERFACE`]).
    pub async fn egress_interfaces_of(&self, deployment: &str) -> AwsResult<Vec<NetworkInterface>> {
        let out = self
            .ec2
            .describe_network_interfaces()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .filters(filter(&format!("tag:{TAG_INTERFACE}"), &[EGRESS_INTERFACE]))
            .send()
            .await
            .or_fail("listing egress interfaces of deployment", deployment)?;
        let mut found: Vec<NetworkInterface> =
            out.network_interfaces().iter().map(interface).collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// Creates an interface in a subnet with one security group, tagged,
    /// and turns its source/destination check off (it sends the tailnet's
    /// forwarded traffic).
    pub async fn create_egress_interface(
        &self,
        name: &str,
        new: &NewInterface<'_>,
    ) -> AwsResult<NetworkInterface> {
        let out = self
            .ec2
            .create_network_interface()
            .subnet_id(new.subnet)
            .groups(new.security_group)
            .description(new.description)
            .tag_specifications(tag_spec(ec2t::ResourceType::NetworkInterface, new.tags))
            .send()
            .await
            .or_fail("creating network interface", name)?;
        let Some(created) = out.network_interface() else {
            return Err(super::super::error::AwsError::new(
                "creating network interface",
                name,
                "EmptyResponse",
                "CreateNetworkInterface returned no interface",
            ));
        };
        let mut eni = interface(created);
        self.set_interface_source_dest_check(&eni.id, false).await?;
        eni.source_dest_check = false;
        Ok(eni)
    }

    /// Sets the source/destination check of an interface.
    pub async fn set_interface_source_dest_check(&self, id: &str, on: bool) -> AwsResult<()> {
        self.ec2
            .modify_network_interface_attribute()
            .network_interface_id(id)
            .source_dest_check(ec2t::AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .or_fail("setting the source/destination check of", id)?;
        Ok(())
    }

    /// Deletes an interface (gone already is fine). AWS refuses while it
    /// is attached: the error's code is `InvalidNetworkInterface.InUse`.
    pub async fn delete_network_interface(&self, id: &str) -> AwsResult<()> {
        self.ec2
            .delete_network_interface()
            .network_interface_id(id)
            .send()
            .await
            .absent_on(&["InvalidNetworkInterfaceID.NotFound"])
            .or_fail("deleting network interface", id)?;
        Ok(())
    }

    /// Deletes an interface once it is detached: an instance terminated a
    /// moment ago still holds it for a while. Waits up to `timeout`.
    pub async fn delete_network_interface_when_detached(
        &self,
        id: &str,
        timeout: Duration,
    ) -> AwsResult<()> {
        let started = Instant::now();
        loop {
            match self.delete_network_interface(id).await {
                Err(e)
                    if e.code == "InvalidNetworkInterface.InUse" && started.elapsed() < timeout =>
                {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                done => return done,
            }
        }
    }

    /// NAT gateway `id`, if it exists.
    pub async fn nat_gateway(&self, id: &str) -> AwsResult<Option<NatGateway>> {
        let out = self
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .absent_on(&["NatGatewayNotFound", "InvalidNatGatewayID.NotFound"])
            .or_fail("reading NAT gateway", id)?;
        Ok(out.and_then(|o| {
            o.nat_gateways().first().map(|g| NatGateway {
                id: g.nat_gateway_id().unwrap_or_default().to_owned(),
                state: g.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                public_ips: g
                    .nat_gateway_addresses()
                    .iter()
                    .filter_map(|a| a.public_ip().map(str::to_owned))
                    .collect(),
            })
        }))
    }
}

fn interface(n: &ec2t::NetworkInterface) -> NetworkInterface {
    NetworkInterface {
        id: n.network_interface_id().unwrap_or_default().to_owned(),
        subnet: n.subnet_id().unwrap_or_default().to_owned(),
        az: n.availability_zone().unwrap_or_default().to_owned(),
        mac: n.mac_address().unwrap_or_default().to_owned(),
        private_ip: n.private_ip_address().unwrap_or_default().to_owned(),
        status: n
            .status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        attachment: n.attachment().and_then(|a| {
            Some((
                a.instance_id().filter(|i| !i.is_empty())?.to_owned(),
                a.device_index().unwrap_or_default(),
            ))
        }),
        source_dest_check: n.source_dest_check().unwrap_or(true),
        tags: tag_map(n.tag_set()),
    }
}
