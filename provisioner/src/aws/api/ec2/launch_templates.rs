//! Launch templates: what each instance boots with.

use std::collections::BTreeMap;

use aws_sdk_ec2::types as ec2t;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::super::Aws;
use super::super::error::{AwsResult, Sent, code};
use super::{ec2_tags, filter, tag_map, tag_spec};
use crate::aws::spec::{TAG_DEPLOYMENT, TemplateData};

/// A launch template and its default version's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplate {
    /// `lt-…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// The default version's number.
    pub default_version: i64,
    /// The default version's data (`None` if it could not be read).
    pub data: Option<TemplateData>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

impl Aws {
    /// The launch template `name` and its default version.
    pub async fn launch_template(&self, name: &str) -> AwsResult<Option<LaunchTemplate>> {
        let out = self
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await
            .absent_if(|e| {
                code(e).is_some_and(|c| {
                    c.starts_with("InvalidLaunchTemplateName") || c.contains("NotFound")
                })
            })
            .or_fail("reading launch template", name)?;
        let Some(lt) = out.as_ref().and_then(|o| o.launch_templates().first()) else {
            return Ok(None);
        };
        let id = lt.launch_template_id().unwrap_or_default().to_owned();
        let versions = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(&id)
            .versions("$Default")
            .send()
            .await
            .or_fail("reading launch template", name)?;
        let data = versions
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .map(template_data);
        Ok(Some(LaunchTemplate {
            id,
            name: name.to_owned(),
            default_version: lt.default_version_number().unwrap_or(1),
            data,
            tags: tag_map(lt.tags()),
        }))
    }

    /// Launch templates tagged with the deployment.
    pub async fn launch_templates_of(&self, deployment: &str) -> AwsResult<Vec<LaunchTemplate>> {
        let out = self
            .ec2
            .describe_launch_templates()
            .filters(filter(&format!("tag:{TAG_DEPLOYMENT}"), &[deployment]))
            .send()
            .await
            .or_fail("listing launch templates of deployment", deployment)?;
        Ok(out
            .launch_templates()
            .iter()
            .map(|t| LaunchTemplate {
                id: t.launch_template_id().unwrap_or_default().to_owned(),
                name: t.launch_template_name().unwrap_or_default().to_owned(),
                default_version: t.default_version_number().unwrap_or(1),
                data: None,
                tags: tag_map(t.tags()),
            })
            .collect())
    }

    /// Creates the launch template; returns its id (its version is 1).
    pub async fn create_launch_template(
        &self,
        name: &str,
        data: &TemplateData,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .version_description("causeway provisioner")
            .launch_template_data(request_data(data, tags))
            .tag_specifications(tag_spec(ec2t::ResourceType::LaunchTemplate, tags))
            .send()
            .await
            .or_fail("creating launch template", name)?;
        Ok(out
            .launch_template()
            .and_then(|t| t.launch_template_id())
            .unwrap_or_default()
            .to_owned())
    }

    /// Adds a version with `data` and makes it the default; returns its
    /// number.
    pub async fn update_launch_template(
        &self,
        id: &str,
        data: &TemplateData,
        tags: &[(String, String)],
    ) -> AwsResult<i64> {
        let out = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(id)
            .version_description("causeway provisioner")
            .launch_template_data(request_data(data, tags))
            .send()
            .await
            .or_fail("adding a version to launch template", id)?;
        let version = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap_or(1);
        self.ec2
            .modify_launch_template()
            .launch_template_id(id)
            .default_version(version.to_string())
            .send()
            .await
            .or_fail("setting the default version of launch template", id)?;
        Ok(version)
    }

    /// Deletes a launch template (gone already is fine).
    pub async fn delete_launch_template(&self, id: &str) -> AwsResult<()> {
        self.ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
            .absent_if(|e| code(e).is_some_and(|c| c.contains("NotFound")))
            .or_fail("deleting launch template", id)?;
        Ok(())
    }
}

fn template_data(d: &ec2t::ResponseLaunchTemplateData) -> TemplateData {
    let md = d.metadata_options();
    let root = d.block_device_mappings().first();
    let ebs = root.and_then(|b| b.ebs());
    TemplateData {
        image_id: d.image_id().unwrap_or_default().to_owned(),
        instance_type: d
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        instance_profile: d
            .iam_instance_profile()
            .and_then(|p| p.name())
            .unwrap_or_default()
            .to_owned(),
        user_data: d
            .user_data()
            .and_then(|s| BASE64.decode(s).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default(),
        http_tokens: md
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        hop_limit: md
            .and_then(|m| m.http_put_response_hop_limit())
            .unwrap_or(0),
        http_endpoint: md
            .and_then(|m| m.http_endpoint())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        root_device: root
            .and_then(|b| b.device_name())
            .unwrap_or_default()
            .to_owned(),
        volume_type: ebs
            .and_then(|e| e.volume_type())
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        encrypted: ebs.and_then(|e| e.encrypted()).unwrap_or(false),
        volume_size: ebs.and_then(|e| e.volume_size()).unwrap_or(0),
        key_name: d.key_name().map(str::to_owned),
    }
}

fn request_data(d: &TemplateData, tags: &[(String, String)]) -> ec2t::RequestLaunchTemplateData {
    ec2t::RequestLaunchTemplateData::builder()
        .image_id(&d.image_id)
        .instance_type(ec2t::InstanceType::from(d.instance_type.as_str()))
        .iam_instance_profile(
            ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(&d.instance_profile)
                .build(),
        )
        .user_data(BASE64.encode(d.user_data.as_bytes()))
        .metadata_options(
            ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(ec2t::LaunchTemplateHttpTokensState::from(
                    d.http_tokens.as_str(),
                ))
                .http_put_response_hop_limit(d.hop_limit)
                .http_endpoint(ec2t::LaunchTemplateInstanceMetadataEndpointState::from(
                    d.http_endpoint.as_str(),
                ))
                .build(),
        )
        .block_device_mappings(
            ec2t::LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(&d.root_device)
                .ebs(
                    ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
                        .volume_type(ec2t::VolumeType::from(d.volume_type.as_str()))
                        .encrypted(d.encrypted)
                        .volume_size(d.volume_size)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            ec2t::LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ec2t::ResourceType::Instance)
                .set_tags(Some(ec2_tags(tags)))
                .build(),
        )
        .build()
}
