//! Recordings in S3: one PutObject for short sessions, a multipart upload
//! for long ones (parts of at least 5 MiB, S3's minimum). The web UI reads
//! them back with ListObjectsV2 and GetObject (a ranged GET for a header).

use std::path::Path;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{AlreadyStored, Storage, StoredObject};
use crate::config::S3Config;

const CONTENT_TYPE: &str = "application/x-asciicast";

/// An S3 bucket holding recordings.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    part_size: u64,
}

impl S3Storage {
    /// Storage on an already configured client.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, part_size: u64) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            part_size,
        }
    }

    /// Builds a client from the environment's credentials and `config`.
    pub async fn from_config(config: &S3Config) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        anyhow::ensure!(
            shared.region().is_some(),
            "no AWS region for S3 bucket {}: set storage.region or AWS_REGION",
            config.bucket
        );
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .build();
        Ok(Self::new(
            aws_sdk_s3::Client::from_conf(s3),
            &config.bucket,
            config.part_size_bytes,
        ))
    }

    async fn put_multipart(&self, key: &str, path: &Path, len: u64) -> anyhow::Result<()> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(CONTENT_TYPE)
            .send()
            .await
            .with_context(|| format!("starting a multipart upload of {key}"))?;
        let upload_id = created
            .upload_id()
            .with_context(|| format!("S3 returned no upload ID for {key}"))?
            .to_owned();
        match self.upload_parts(key, &upload_id, path, len).await {
            Ok(parts) => {
                let completed = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .if_none_match("*")
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match completed {
                    Ok(_) => Ok(()),
                    Err(e) if precondition_failed(e.raw_response()) => {
                        self.abort(key, &upload_id).await;
                        Err(AlreadyStored {
                            key: key.to_owned(),
                        }
                        .into())
                    }
                    Err(e) => Err(anyhow::Error::new(e))
                        .with_context(|| format!("completing the multipart upload of {key}")),
                }
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                Err(e)
            }
        }
    }

    /// Abandons a multipart upload. Best effort: a lifecycle rule cleans up
    /// what this misses.
    async fn abort(&self, key: &str, upload_id: &str) {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        len: u64,
    ) -> anyhow::Result<Vec<CompletedPart>> {
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < len {
            let size = self.part_size.min(len - offset);
            let mut buf = vec![0u8; usize::try_from(size).context("part size fits in memory")?];
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .context("seeking in the spool")?;
            file.read_exact(&mut buf)
                .await
                .with_context(|| format!("reading part {number} of {}", path.display()))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .with_context(|| format!("uploading part {number} of {key}"))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += size;
            number += 1;
        }
        Ok(parts)
    }
}

/// S3 answered 412: `If-None-Match: *` found an object under the key.
fn precondition_failed(response: Option<&aws_sdk_s3::config::http::HttpResponse>) -> bool {
    response.is_some_and(|r| r.status().as_u16() == 412)
}

impl Storage for S3Storage {
    async fn put(&self, key: &str, path: &Path, len: u64) -> anyhow::Result<()> {
        if len > self.part_size {
            return self.put_multipart(key, path, len).await;
        }
        let body = ByteStream::read_from()
            .path(path)
            .length(aws_sdk_s3::primitives::Length::Exact(len))
            .build()
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_type(CONTENT_TYPE)
            .body(body)
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if precondition_failed(e.raw_response()) => Err(AlreadyStored {
                key: key.to_owned(),
            }
            .into()),
            Err(e) => Err(anyhow::Error::new(e))
                .with_context(|| format!("putting {key} into s3://{}", self.bucket)),
        }
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<StoredObject>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("listing s3://{}/{prefix}", self.bucket))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(StoredObject {
                    key: key.to_owned(),
                    bytes: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                });
            }
        }
        // S3 lists in UTF-8 binary order already; sorting keeps the promise for look-alikes.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn read(&self, key: &str, limit: Option<u64>) -> anyhow::Result<Option<Vec<u8>>> {
        let mut get = self.client.get_object().bucket(&self.bucket).key(key);
        match limit {
            Some(0) => return Ok(Some(Vec::new())),
            Some(n) => get = get.range(format!("bytes=0-{}", n - 1)),
            None => {}
        }
        let object = match get.send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("getting {key} from s3://{}", self.bucket));
            }
        };
        let bytes = object
            .body
            .collect()
            .await
            .with_context(|| format!("reading {key} from s3://{}", self.bucket))?;
        Ok(Some(bytes.to_vec()))
    }

    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}
