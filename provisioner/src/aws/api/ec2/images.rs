//! Appliance images (AMIs).

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsError, AwsResult, Sent, code};
use super::{ec2_tags, filter, tag_value};
use crate::aws::sizing::Arch;
use crate::aws::spec::{TAG_ARCH, TAG_IMAGE};

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

impl Aws {
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
            .or_fail("looking up the appliance image for", arch)?;
        let mut images: Vec<Image> = out.images().iter().map(image).collect();
        images.sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
        Ok(images.into_iter().next())
    }

    /// The image `id` (`--ami`).
    pub async fn image(&self, id: &str) -> AwsResult<Option<Image>> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(id)
            .send()
            .await
            .absent_if(|e| code(e).is_some_and(|c| c.starts_with("InvalidAMIID")))
            .or_fail("reading --ami", id)?;
        Ok(out.and_then(|o| o.images().first().map(image)))
    }
}

/// An AMI to register from a snapshot (`provisioner image publish`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImage {
    /// AMI name (unique per account and region).
    pub name: String,
    /// Description.
    pub description: String,
    /// Architecture.
    pub arch: Arch,
    /// The root volume's snapshot.
    pub snapshot_id: String,
    /// Tags, also put on the snapshot.
    pub tags: Vec<(String, String)>,
}

/// Where a snapshot import stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportState {
    /// Still running: status and progress as EC2 reports them.
    Running(String),
    /// Done: the snapshot.
    Completed(String),
    /// Failed or deleted: EC2's status and message.
    Failed(String),
}

impl Aws {
    /// Starts importing the raw disk `s3://bucket/key` as a snapshot;
    /// returns the import task's id. `role` is the VM Import service role.
    pub async fn import_snapshot(
        &self,
        bucket: &str,
        key: &str,
        description: &str,
        role: &str,
    ) -> AwsResult<String> {
        let resource = format!("s3://{bucket}/{key}");
        let out = self
            .ec2
            .import_snapshot()
            .description(description)
            .role_name(role)
            .disk_container(
                ec2t::SnapshotDiskContainer::builder()
                    .format("RAW")
                    .description(description)
                    .user_bucket(
                        ec2t::UserBucket::builder()
                            .s3_bucket(bucket)
                            .s3_key(key)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .or_fail("importing a snapshot from", &resource)?;
        out.import_task_id().map(str::to_owned).ok_or_else(|| {
            AwsError::new(
                "importing a snapshot from",
                &resource,
                "NoTaskId",
                "EC2 answered without an import task id",
            )
        })
    }

    /// Where the snapshot import `task` stands.
    pub async fn import_state(&self, task: &str) -> AwsResult<ImportState> {
        let out = self
            .ec2
            .describe_import_snapshot_tasks()
            .import_task_ids(task)
            .send()
            .await
            .or_fail("reading snapshot import task", task)?;
        let Some(d) = out
            .import_snapshot_tasks()
            .first()
            .and_then(|t| t.snapshot_task_detail())
        else {
            return Ok(ImportState::Failed(format!(
                "EC2 no longer lists task {task}"
            )));
        };
        let status = d.status().unwrap_or("unknown");
        let message = d.status_message().unwrap_or_default();
        Ok(match (status, d.snapshot_id()) {
            ("completed", Some(id)) => ImportState::Completed(id.to_owned()),
            ("deleted" | "deleting" | "error", _) | ("completed", None) => {
                ImportState::Failed(format!("{status}: {message}"))
            }
            _ => ImportState::Running(format!(
                "{status} {}% {message}",
                d.progress().unwrap_or("0")
            )),
        })
    }

    /// The image of ours named `name`, if any (a re-publish of the same disk).
    pub async fn image_named(&self, name: &str) -> AwsResult<Option<Image>> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter("name", &[name]))
            .send()
            .await
            .or_fail("looking up image", name)?;
        Ok(out.images().first().map(image))
    }

    /// Registers an HVM image booting from `n.snapshot_id` on `/dev/xvda`
    /// (gp3), with ENA, IMDSv2 required, UEFI (arm64) or UEFI-preferred
    /// (x86_64, which also boots BIOS), and tags image and snapshot.
    pub async fn register_image(&self, n: &NewImage) -> AwsResult<String> {
        let out = register_request(&self.ec2, n)
            .send()
            .await
            .or_fail("registering image", &n.name)?;
        let id = out.image_id().map(str::to_owned).ok_or_else(|| {
            AwsError::new(
                "registering image",
                &n.name,
                "NoImageId",
                "EC2 answered without an image id",
            )
        })?;
        self.ec2
            .create_tags()
            .resources(&id)
            .resources(&n.snapshot_id)
            .set_tags(Some(ec2_tags(&n.tags)))
            .send()
            .await
            .or_fail("tagging image", &id)?;
        Ok(id)
    }
}

/// The RegisterImage request for `n` (separate so its fields can be checked
/// without AWS: moto stores neither architecture, ENA nor boot mode).
fn register_request(
    ec2: &aws_sdk_ec2::Client,
    n: &NewImage,
) -> aws_sdk_ec2::operation::register_image::builders::RegisterImageFluentBuilder {
    let boot_mode = match n.arch {
        Arch::Arm64 => ec2t::BootModeValues::Uefi,
        Arch::X86_64 => ec2t::BootModeValues::UefiPreferred,
    };
    ec2.register_image()
        .name(&n.name)
        .description(&n.description)
        .architecture(ec2t::ArchitectureValues::from(n.arch.as_str()))
        .virtualization_type("hvm")
        .root_device_name("/dev/xvda")
        .ena_support(true)
        .boot_mode(boot_mode)
        .imds_support(ec2t::ImdsSupportValues::V20)
        .block_device_mappings(
            ec2t::BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    ec2t::EbsBlockDevice::builder()
                        .snapshot_id(&n.snapshot_id)
                        .volume_type(ec2t::VolumeType::Gp3)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        arch: Arch,
    ) -> aws_sdk_ec2::operation::register_image::builders::RegisterImageInputBuilder {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(config);
        let n = NewImage {
            name: "causeway-appliance-x".into(),
            description: "d".into(),
            arch,
            snapshot_id: "snap-1".into(),
            tags: vec![],
        };
        register_request(&ec2, &n).as_input().clone()
    }

    #[test]
    fn the_ami_boots_with_ena_imdsv2_and_the_arch_boot_mode() {
        let x = request(Arch::X86_64);
        assert_eq!(x.get_architecture(), &Some(ec2t::ArchitectureValues::X8664));
        assert_eq!(x.get_ena_support(), &Some(true));
        assert_eq!(
            x.get_boot_mode(),
            &Some(ec2t::BootModeValues::UefiPreferred)
        );
        assert_eq!(x.get_imds_support(), &Some(ec2t::ImdsSupportValues::V20));
        assert_eq!(x.get_virtualization_type().as_deref(), Some("hvm"));
        assert_eq!(x.get_root_device_name().as_deref(), Some("/dev/xvda"));
        let maps = x.get_block_device_mappings().clone().unwrap_or_default();
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].device_name(), Some("/dev/xvda"));
        let ebs = maps[0].ebs().expect("ebs");
        assert_eq!(ebs.snapshot_id(), Some("snap-1"));
        assert_eq!(ebs.volume_type(), Some(&ec2t::VolumeType::Gp3));
        assert_eq!(ebs.delete_on_termination(), Some(true));
        let a = request(Arch::Arm64);
        assert_eq!(a.get_architecture(), &Some(ec2t::ArchitectureValues::Arm64));
        assert_eq!(a.get_boot_mode(), &Some(ec2t::BootModeValues::Uefi));
    }
}
