//! Appliance images (AMIs).

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsResult, Sent, code};
use super::{filter, tag_value};
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

fn image(i: &ec2t::Image) -> Image {
    let tagged = tag_value(i.tags(), TAG_ARCH).and_then(|a| Arch::from_aws(&a));
    Image {
        id: i.image_id().unwrap_or_default().to_owned(),
        arch: tagged.or_else(|| i.architecture().and_then(|a| Arch::from_aws(a.as_str()))),
        root_device: i.root_device_name().unwrap_or("/dev/xvda").to_owned(),
        created: i.creation_date().unwrap_or_default().to_owned(),
    }
}
