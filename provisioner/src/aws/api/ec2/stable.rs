//! What keeps control's identity across instance replacement: its Elastic
//! IP (allocated, associated, released) and its state volume (created,
//! attached, detached, deleted).

use std::collections::BTreeMap;

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsResult, Sent};
use super::{filter, tag_map, tag_spec};
use crate::aws::spec::TAG_DEPLOYMENT;

/// An Elastic IP of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Address {
    /// `eipalloc-…`.
    pub allocation_id: String,
    /// The public IPv4 address.
    pub public_ip: String,
    /// `eipassoc-…` while associated.
    pub association_id: Option<String>,
    /// The instance it is associated with.
    pub instance_id: Option<String>,
    /// The network interface it is associated with.
    pub interface_id: Option<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// An EBS volume of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Volume {
    /// `vol-…`.
    pub id: String,
    /// AZ.
    pub az: String,
    /// Size in GiB.
    pub size_gib: i32,
    /// Volume type (`gp3`).
    pub volume_type: String,
    /// Encrypted at rest.
    pub encrypted: bool,
    /// `creating`, `available`, `in-use`, …
    pub state: String,
    /// Instance and device it is attached (or attaching) to.
    pub attachment: Option<(String, String)>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// What [`Aws::create_volume`] creates.
#[derive(Debug, Clone, Copy)]
pub struct NewVolume<'a> {
    /// AZ (the instance's).
    pub az: &'a str,
    /// Size in GiB.
    pub size_gib: i32,
    /// Tags.
    pub tags: &'a [(String, String)],
}

impl Aws {
    /// The Elastic IPs tagged with the deployment.
    pub async fn addresses_of(&self, deployment: &str) -> AwsResult<Vec<Address>> {
        let out = self
            .ec2
            .describe_addresses()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .send()
            .await
            .or_fail("listing Elastic IPs of deployment", deployment)?;
        let mut found: Vec<Address> = out
            .addresses()
            .iter()
            .map(|a| Address {
                allocation_id: a.allocation_id().unwrap_or_default().to_owned(),
                public_ip: a.public_ip().unwrap_or_default().to_owned(),
                association_id: a.association_id().map(str::to_owned),
                instance_id: a.instance_id().filter(|i| !i.is_empty()).map(str::to_owned),
                interface_id: a
                    .network_interface_id()
                    .filter(|i| !i.is_empty())
                    .map(str::to_owned),
                tags: tag_map(a.tags()),
            })
            .collect();
        found.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
        Ok(found)
    }

    /// Allocates an Elastic IP in the VPC scope, tagged.
    pub async fn allocate_address(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> AwsResult<Address> {
        let out = self
            .ec2
            .allocate_address()
            .domain(ec2t::DomainType::Vpc)
            .tag_specifications(tag_spec(ec2t::ResourceType::ElasticIp, tags))
            .send()
            .await
            .or_fail("allocating Elastic IP", name)?;
        Ok(Address {
            allocation_id: out.allocation_id().unwrap_or_default().to_owned(),
            public_ip: out.public_ip().unwrap_or_default().to_owned(),
            association_id: None,
            instance_id: None,
            interface_id: None,
            tags: tags.iter().cloned().collect(),
        })
    }

    /// Associates the Elastic IP with an instance, taking it from any other
    /// (the instance it followed may have been replaced). An instance with
    /// more than one interface needs the interface named (`interface`,
    /// its primary one).
    pub async fn associate_address(
        &self,
        allocation_id: &str,
        instance_id: &str,
        interface: Option<&str>,
    ) -> AwsResult<()> {
        let req = self.ec2.associate_address().allocation_id(allocation_id);
        let req = match interface {
            Some(eni) => req.network_interface_id(eni),
            None => req.instance_id(instance_id),
        };
        req.allow_reassociation(true).send().await.or_fail(
            "associating Elastic IP",
            format!("{allocation_id} with {instance_id}"),
        )?;
        Ok(())
    }

    /// Releases an Elastic IP, disassociating it first.
    pub async fn release_address(&self, address: &Address) -> AwsResult<()> {
        if let Some(assoc) = &address.association_id {
            self.ec2
                .disassociate_address()
                .association_id(assoc)
                .send()
                .await
                .absent_on(&["InvalidAssociationID.NotFound"])
                .or_fail("disassociating Elastic IP", &address.allocation_id)?;
        }
        self.ec2
            .release_address()
            .allocation_id(&address.allocation_id)
            .send()
            .await
            .absent_on(&["InvalidAllocationID.NotFound"])
            .or_fail("releasing Elastic IP", &address.allocation_id)?;
        Ok(())
    }

    /// The EBS volumes tagged with the deployment (root volumes included:
    /// the launch template tags them too), not deleted.
    pub async fn volumes_of(&self, deployment: &str) -> AwsResult<Vec<Volume>> {
        let out = self
            .ec2
            .describe_volumes()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .filters(filter(
                "status",
                &["creating", "available", "in-use", "error"],
            ))
            .send()
            .await
            .or_fail("listing volumes of deployment", deployment)?;
        let mut found: Vec<Volume> = out.volumes().iter().map(volume).collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// One volume by id (`None` once deleted).
    pub async fn volume(&self, id: &str) -> AwsResult<Option<Volume>> {
        let out = self
            .ec2
            .describe_volumes()
            .volume_ids(id)
            .send()
            .await
            .absent_on(&["InvalidVolume.NotFound"])
            .or_fail("reading volume", id)?;
        Ok(out.and_then(|o| o.volumes().first().map(volume)))
    }

    /// Creates an encrypted gp3 volume; returns its id.
    pub async fn create_volume(&self, name: &str, v: &NewVolume<'_>) -> AwsResult<String> {
        let out = self
            .ec2
            .create_volume()
            .availability_zone(v.az)
            .size(v.size_gib)
            .volume_type(ec2t::VolumeType::Gp3)
            .encrypted(true)
            .tag_specifications(tag_spec(ec2t::ResourceType::Volume, v.tags))
            .send()
            .await
            .or_fail("creating volume", name)?;
        Ok(out.volume_id().unwrap_or_default().to_owned())
    }

    /// Attaches a volume to an instance as `device`.
    pub async fn attach_volume(&self, id: &str, instance_id: &str, device: &str) -> AwsResult<()> {
        self.ec2
            .attach_volume()
            .volume_id(id)
            .instance_id(instance_id)
            .device(device)
            .send()
            .await
            .or_fail(
                "attaching volume",
                format!("{id} to {instance_id} as {device}"),
            )?;
        Ok(())
    }

    /// Detaches a volume from whatever holds it.
    pub async fn detach_volume(&self, id: &str) -> AwsResult<()> {
        self.ec2
            .detach_volume()
            .volume_id(id)
            .send()
            .await
            .absent_on(&["IncorrectState", "InvalidAttachment.NotFound"])
            .or_fail("detaching volume", id)?;
        Ok(())
    }

    /// Deletes a volume (gone already is fine).
    pub async fn delete_volume(&self, id: &str) -> AwsResult<()> {
        self.ec2
            .delete_volume()
            .volume_id(id)
            .send()
            .await
            .absent_on(&["InvalidVolume.NotFound"])
            .or_fail("deleting volume", id)?;
        Ok(())
    }
}

fn volume(v: &ec2t::Volume) -> Volume {
    Volume {
        id: v.volume_id().unwrap_or_default().to_owned(),
        az: v.availability_zone().unwrap_or_default().to_owned(),
        size_gib: v.size().unwrap_or_default(),
        volume_type: v
            .volume_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        encrypted: v.encrypted().unwrap_or(false),
        state: v.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        attachment: v
            .attachments()
            .iter()
            .find(|a| {
                a.state()
                    .is_some_and(|s| matches!(s.as_str(), "attaching" | "attached"))
            })
            .map(|a| {
                (
                    a.instance_id().unwrap_or_default().to_owned(),
                    a.device().unwrap_or_default().to_owned(),
                )
            }),
        tags: tag_map(v.tags()),
    }
}
