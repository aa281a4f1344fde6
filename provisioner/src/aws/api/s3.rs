//! S3: the recordings bucket and the settings the contract manages on it.

use std::collections::BTreeMap;

use aws_sdk_s3::types as s3t;

use super::Aws;
use super::error::{AwsError, AwsResult, Built, Sent, code};
use crate::aws::spec::{LifecycleRule, TAG_DEPLOYMENT};

/// What S3 reports of a bucket's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSettings {
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// All four public-access-block flags true.
    pub public_access_blocked: bool,
    /// Default encryption: `AES256` or `aws:kms` with the key id.
    pub encryption: Option<(String, Option<String>)>,
    /// The bucket policy.
    pub policy: Option<String>,
    /// Lifecycle rules.
    pub lifecycle: Vec<LifecycleRule>,
}

impl Aws {
    /// Whether the bucket exists (and is ours to read).
    pub async fn bucket_exists(&self, bucket: &str) -> AwsResult<bool> {
        let found = self
            .s3
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            // HEAD has no body, so a missing bucket may come without a code.
            .absent_if(|e| {
                e.as_service_error().is_some_and(|s| s.is_not_found())
                    || matches!(code(e), Some("NotFound" | "NoSuchBucket"))
            })
            .or_fail("reading bucket", bucket)?;
        Ok(found.is_some())
    }

    /// Creates the bucket in this region.
    pub async fn create_bucket(&self, bucket: &str) -> AwsResult<()> {
        let mut req = self.s3.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                s3t::CreateBucketConfiguration::builder()
                    .location_constraint(s3t::BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        req.send().await.or_fail("creating bucket", bucket)?;
        Ok(())
    }

    /// The settings we manage on a bucket.
    pub async fn bucket_settings(&self, bucket: &str) -> AwsResult<BucketSettings> {
        let tags = self
            .s3
            .get_bucket_tagging()
            .bucket(bucket)
            .send()
            .await
            .absent_on(&["NoSuchTagSet"])
            .or_fail("reading tags of bucket", bucket)?
            .map(|o| {
                o.tag_set()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let public_access_blocked = self
            .s3
            .get_public_access_block()
            .bucket(bucket)
            .send()
            .await
            .absent_on(&["NoSuchPublicAccessBlockConfiguration"])
            .or_fail("reading the public access block of bucket", bucket)?
            .and_then(|o| o.public_access_block_configuration().cloned())
            .is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            });
        let encryption = self
            .s3
            .get_bucket_encryption()
            .bucket(bucket)
            .send()
            .await
            .absent_on(&["ServerSideEncryptionConfigurationNotFoundError"])
            .or_fail("reading the encryption of bucket", bucket)?
            .and_then(|o| {
                let rule = o.server_side_encryption_configuration()?.rules().first()?;
                let d = rule.apply_server_side_encryption_by_default()?;
                Some((
                    d.sse_algorithm().as_str().to_owned(),
                    d.kms_master_key_id().map(str::to_owned),
                ))
            });
        let policy = self
            .s3
            .get_bucket_policy()
            .bucket(bucket)
            .send()
            .await
            .absent_on(&["NoSuchBucketPolicy"])
            .or_fail("reading the policy of bucket", bucket)?
            .and_then(|o| o.policy().map(str::to_owned));
        let lifecycle = self
            .s3
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
            .absent_on(&["NoSuchLifecycleConfiguration"])
            .or_fail("reading the lifecycle of bucket", bucket)?
            .map(|o| o.rules().iter().map(lifecycle_rule).collect())
            .unwrap_or_default();
        Ok(BucketSettings {
            tags,
            public_access_blocked,
            encryption,
            policy,
            lifecycle,
        })
    }

    /// Tags the bucket.
    pub async fn tag_bucket(&self, bucket: &str, tags: &[(String, String)]) -> AwsResult<()> {
        let tagging = s3t::Tagging::builder()
            .set_tag_set(Some(
                tags.iter()
                    .filter_map(|(k, v)| s3t::Tag::builder().key(k).value(v).build().ok())
                    .collect(),
            ))
            .build()
            .or_invalid("tagging bucket", bucket)?;
        self.s3
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging)
            .send()
            .await
            .or_fail("tagging bucket", bucket)?;
        Ok(())
    }

    /// Blocks every kind of public access.
    pub async fn block_public_access(&self, bucket: &str) -> AwsResult<()> {
        self.s3
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                s3t::PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .or_fail("blocking public access to bucket", bucket)?;
        Ok(())
    }

    /// Sets default encryption: SSE-S3, or SSE-KMS with `kms_key`.
    pub async fn encrypt_bucket(&self, bucket: &str, kms_key: Option<&str>) -> AwsResult<()> {
        let default = match kms_key {
            Some(k) => s3t::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(s3t::ServerSideEncryption::AwsKms)
                .kms_master_key_id(k),
            None => s3t::ServerSideEncryptionByDefault::builder()
                .sse_algorithm(s3t::ServerSideEncryption::Aes256),
        }
        .build()
        .or_invalid("encrypting bucket", bucket)?;
        let config = s3t::ServerSideEncryptionConfiguration::builder()
            .rules(
                s3t::ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default)
                    .bucket_key_enabled(kms_key.is_some())
                    .build(),
            )
            .build()
            .or_invalid("encrypting bucket", bucket)?;
        self.s3
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(config)
            .send()
            .await
            .or_fail("setting default encryption of bucket", bucket)?;
        Ok(())
    }

    /// Sets the bucket policy.
    pub async fn put_bucket_policy(&self, bucket: &str, policy: &str) -> AwsResult<()> {
        self.s3
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy)
            .send()
            .await
            .or_fail("setting the policy of bucket", bucket)?;
        Ok(())
    }

    /// Replaces the lifecycle configuration with `rule`.
    pub async fn put_lifecycle(&self, bucket: &str, rule: &LifecycleRule) -> AwsResult<()> {
        const ACTION: &str = "setting the lifecycle of bucket";
        let mut b = s3t::LifecycleRule::builder()
            .id(&rule.id)
            .status(if rule.enabled {
                s3t::ExpirationStatus::Enabled
            } else {
                s3t::ExpirationStatus::Disabled
            })
            .filter(s3t::LifecycleRuleFilter::builder().prefix("").build());
        for (days, class) in &rule.transitions {
            b = b.transitions(
                s3t::Transition::builder()
                    .days(*days)
                    .storage_class(s3t::TransitionStorageClass::from(class.as_str()))
                    .build(),
            );
        }
        if let Some(d) = rule.expire_days {
            b = b.expiration(s3t::LifecycleExpiration::builder().days(d).build());
        }
        if let Some(d) = rule.abort_days {
            b = b.abort_incomplete_multipart_upload(
                s3t::AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(d)
                    .build(),
            );
        }
        let config = s3t::BucketLifecycleConfiguration::builder()
            .rules(b.build().or_invalid(ACTION, bucket)?)
            .build()
            .or_invalid(ACTION, bucket)?;
        self.s3
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .await
            .or_fail(ACTION, bucket)?;
        Ok(())
    }

    /// Names of all buckets whose tags name the deployment.
    pub async fn buckets_of(&self, deployment: &str) -> AwsResult<Vec<String>> {
        let out = self
            .s3
            .list_buckets()
            .send()
            .await
            .or_fail("listing buckets for deployment", deployment)?;
        let mut found = Vec::new();
        for b in out.buckets() {
            let Some(name) = b.name() else { continue };
            // Buckets in other regions or of other owners answer with
            // errors here: they are not ours, so skip them.
            let Ok(tags) = self.s3.get_bucket_tagging().bucket(name).send().await else {
                continue;
            };
            if tags
                .tag_set()
                .iter()
                .any(|t| t.key() == TAG_DEPLOYMENT && t.value() == deployment)
            {
                found.push(name.to_owned());
            }
        }
        Ok(found)
    }

    /// Number of objects in the bucket, up to one page (1000).
    pub async fn bucket_object_count(&self, bucket: &str) -> AwsResult<usize> {
        Ok(self.first_object_keys(bucket).await?.len())
    }

    /// Deletes every object of the bucket (`--delete-recordings`); returns
    /// how many.
    pub async fn empty_bucket(&self, bucket: &str) -> AwsResult<usize> {
        let mut deleted = 0;
        loop {
            let ids: Vec<s3t::ObjectIdentifier> = self
                .first_object_keys(bucket)
                .await?
                .iter()
                .filter_map(|k| s3t::ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if ids.is_empty() {
                return Ok(deleted);
            }
            deleted += ids.len();
            let delete = s3t::Delete::builder()
                .set_objects(Some(ids))
                .build()
                .or_invalid("emptying bucket", bucket)?;
            self.s3
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .or_fail("emptying bucket", bucket)?;
        }
    }

    /// Deletes an (empty) bucket; gone already is fine.
    pub async fn delete_bucket(&self, bucket: &str) -> AwsResult<()> {
        self.s3
            .delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .absent_on(&["NoSuchBucket"])
            .or_fail("deleting bucket", bucket)?;
        Ok(())
    }

    /// Uploads the file `path` as `s3://bucket/key` (one PUT, streamed from
    /// disk: up to 5 GiB); returns the object's size as S3 reports it.
    pub async fn upload_file(
        &self,
        bucket: &str,
        key: &str,
        path: &std::path::Path,
    ) -> AwsResult<i64> {
        let resource = format!("s3://{bucket}/{key}");
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| {
                AwsError::new("reading the file to upload to", &resource, "ReadFile", e)
            })?;
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .or_fail("uploading to", &resource)?;
        let head = self
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .or_fail("reading back", &resource)?;
        Ok(head.content_length().unwrap_or(0))
    }

    /// The keys of the first page (up to 1000) of the bucket's objects.
    async fn first_object_keys(&self, bucket: &str) -> AwsResult<Vec<String>> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(1000)
            .send()
            .await
            .or_fail("listing objects of bucket", bucket)?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }
}

fn lifecycle_rule(r: &s3t::LifecycleRule) -> LifecycleRule {
    let mut transitions: Vec<(i32, String)> = r
        .transitions()
        .iter()
        .map(|t| {
            (
                t.days().unwrap_or(0),
                t.storage_class()
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    transitions.sort();
    LifecycleRule {
        id: r.id().unwrap_or_default().to_owned(),
        enabled: *r.status() == s3t::ExpirationStatus::Enabled,
        transitions,
        expire_days: r.expiration().and_then(|e| e.days()),
        abort_days: r
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
    }
}
