//! Secrets Manager: the auth key's secret. Values pass through, never into
//! an error, a log line or a `Debug` output.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::types as smt;

use super::Aws;
use super::error::{AwsResult, Sent};
use crate::aws::spec::TAG_DEPLOYMENT;

/// A secret's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// ARN.
    pub arn: String,
    /// Name.
    pub name: String,
    /// Scheduled for deletion.
    pub deleted: bool,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

const NOT_FOUND: &[&str] = &["ResourceNotFoundException"];

impl Aws {
    /// The secret `name`'s metadata.
    pub async fn secret(&self, name: &str) -> AwsResult<Option<SecretInfo>> {
        let out = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .absent_on(NOT_FOUND)
            .or_fail("reading secret", name)?;
        Ok(out.map(|s| SecretInfo {
            arn: s.arn().unwrap_or_default().to_owned(),
            name: s.name().unwrap_or_default().to_owned(),
            deleted: s.deleted_date().is_some(),
            tags: tag_map(s.tags()),
        }))
    }

    /// Secrets tagged with the deployment.
    pub async fn secrets_of(&self, deployment: &str) -> AwsResult<Vec<SecretInfo>> {
        let out = self
            .sm
            .list_secrets()
            .filters(
                smt::Filter::builder()
                    .key(smt::FilterNameStringType::TagKey)
                    .values(TAG_DEPLOYMENT)
                    .build(),
            )
            .include_planned_deletion(true)
            .send()
            .await
            .or_fail("listing secrets of deployment", deployment)?;
        Ok(out
            .secret_list()
            .iter()
            .filter(|s| {
                s.tags()
                    .iter()
                    .any(|t| t.key() == Some(TAG_DEPLOYMENT) && t.value() == Some(deployment))
            })
            .map(|s| SecretInfo {
                arn: s.arn().unwrap_or_default().to_owned(),
                name: s.name().unwrap_or_default().to_owned(),
                deleted: s.deleted_date().is_some(),
                tags: tag_map(s.tags()),
            })
            .collect())
    }

    /// Creates the secret; returns its ARN. The value is never logged.
    pub async fn create_secret(
        &self,
        name: &str,
        value: &str,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .description("Causeway auth key (read by the appliance at first registration)")
            .secret_string(value)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| smt::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .or_fail("creating secret", name)?;
        Ok(out.arn().unwrap_or_default().to_owned())
    }

    /// Cancels a scheduled deletion (a deploy resuming after a destroy).
    pub async fn restore_secret(&self, name: &str) -> AwsResult<()> {
        self.sm
            .restore_secret()
            .secret_id(name)
            .send()
            .await
            .or_fail("restoring secret", name)?;
        Ok(())
    }

    /// The secret's current value (to compare with `--auth-key-file`).
    pub async fn secret_value(&self, name: &str) -> AwsResult<Option<String>> {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .or_fail("reading the value of secret", name)?;
        Ok(out.secret_string().map(str::to_owned))
    }

    /// Stores a new value.
    pub async fn put_secret_value(&self, name: &str, value: &str) -> AwsResult<()> {
        self.sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .or_fail("updating the value of secret", name)?;
        Ok(())
    }

    /// Deletes a secret at once (no recovery window: a redeploy reuses the
    /// name); gone already is fine.
    pub async fn delete_secret(&self, arn: &str) -> AwsResult<()> {
        self.sm
            .delete_secret()
            .secret_id(arn)
            .force_delete_without_recovery(true)
            .send()
            .await
            .absent_on(NOT_FOUND)
            .or_fail("deleting secret", arn)?;
        Ok(())
    }
}

fn tag_map(tags: &[smt::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}
