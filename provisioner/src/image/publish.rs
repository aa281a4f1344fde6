//! `provisioner image publish --cloud aws`: the raw disk to S3, a snapshot
//! imported from it (VM Import), an AMI registered from the snapshot (HVM,
//! ENA, IMDSv2 required, UEFI on arm64, UEFI-preferred on x86_64) and
//! tagged `causeway:image=appliance` and `causeway:arch=ARCH`, which is what
//! `deploy` looks up (`newest_image`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::manifest::{Manifest, RAW};
use crate::aws::api::{Aws, Endpoint, ImportState, NewImage};
use crate::aws::spec::{TAG_ARCH, TAG_IMAGE};
use crate::console::{Progress, StepOutcome};

/// Tag holding the appliance binary's SHA-256 (as installed in the image).
pub const TAG_APPLIANCE_SHA256: &str = "causeway:appliance-sha256";

/// What `image publish` needs.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The directory `image build` wrote (manifest and disk.raw).
    pub image_dir: PathBuf,
    /// The S3 bucket the raw disk is uploaded to (must exist).
    pub bucket: Option<String>,
    /// Region and endpoint.
    pub endpoint: Endpoint,
    /// Register from this snapshot instead of uploading and importing.
    pub snapshot_id: Option<String>,
    /// The VM Import service role.
    pub import_role: String,
    /// How long to wait for the import.
    pub wait_timeout: Duration,
}

/// What `image publish` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The AMI.
    pub ami: String,
    /// Its root snapshot.
    pub snapshot: String,
    /// Where the raw disk was uploaded (none with `--snapshot-id`).
    pub object: Option<String>,
    /// The AMI existed already (same name: the same disk published before).
    pub existed: bool,
}

/// The names one image gets: S3 key, AMI name, tags. The disk's checksum
/// is in the key and the name, so publishing the same disk twice finds the
/// first AMI instead of registering a second.
pub fn names(m: &Manifest) -> (String, NewImage) {
    let short = m.raw.sha256.get(..12).unwrap_or(&m.raw.sha256);
    let name = format!("causeway-{}-{}-{short}", m.image, m.arch);
    let key = format!("causeway/images/{name}.raw");
    let image = NewImage {
        description: format!(
            "Causeway {} ({}), Debian {}, {}",
            m.image, m.arch, m.debian, m.appliance.version
        ),
        name: name.clone(),
        arch: m.arch,
        snapshot_id: String::new(),
        tags: vec![
            ("Name".to_owned(), name),
            (TAG_IMAGE.to_owned(), m.image.clone()),
            (TAG_ARCH.to_owned(), m.arch.as_str().to_owned()),
            (
                TAG_APPLIANCE_SHA256.to_owned(),
                m.appliance.installed_sha256.clone(),
            ),
        ],
    };
    (key, image)
}

/// Publishes the image; progress goes to `progress`.
pub async fn publish(o: &PublishOptions, progress: &mut Progress) -> anyhow::Result<Published> {
    let m = super::read_manifest(&o.image_dir)?;
    let raw = o.image_dir.join(RAW);
    let size = std::fs::metadata(&raw)
        .with_context(|| format!("--image-dir {}: no {RAW}", o.image_dir.display()))?
        .len();
    if size != m.raw.bytes {
        bail!(
            "{}: {size} bytes, but the manifest says {}: the directory holds another build's disk",
            raw.display(),
            m.raw.bytes
        );
    }
    if o.snapshot_id.is_none() && o.bucket.is_none() {
        bail!("--bucket is required to upload the raw disk (or pass --snapshot-id)");
    }
    let (key, mut image) = names(&m);
    let aws = Aws::connect(&o.endpoint).await?;

    progress.begin(&format!("looking for an AMI named {}", image.name));
    if let Some(found) = aws.image_named(&image.name).await? {
        progress.end(StepOutcome::Checked);
        progress.detail(&format!("{} is already registered", found.id));
        return Ok(Published {
            ami: found.id,
            snapshot: o.snapshot_id.clone().unwrap_or_default(),
            object: None,
            existed: true,
        });
    }
    progress.end(StepOutcome::Checked);

    let (snapshot, object) = match (&o.snapshot_id, &o.bucket) {
        (Some(s), _) => (s.clone(), None),
        (None, Some(bucket)) => {
            let object = format!("s3://{bucket}/{key}");
            progress.begin(&format!(
                "uploading {} ({} MiB) to {object}",
                raw.display(),
                size >> 20
            ));
            let stored = aws
                .upload_file(bucket, &key, &raw)
                .await
                .map_err(Into::into);
            let stored = step(progress, stored)?;
            if u64::try_from(stored).ok() != Some(size) {
                bail!("{object}: S3 holds {stored} bytes, the disk has {size}");
            }
            progress.begin(&format!("importing {object} as a snapshot"));
            let task = aws
                .import_snapshot(bucket, &key, &image.description, &o.import_role)
                .await;
            let task = step(progress, task.with_context(|| {
                format!(
                    "EC2 refused the snapshot import (VM Import needs the service role {:?}; an emulator may not implement ImportSnapshot); the disk stays at {object}, and `--snapshot-id` registers from a snapshot made another way",
                    o.import_role
                )
            }))?;
            progress.begin(&format!("waiting for import task {task}"));
            let waited = wait_import(&aws, &task, o.wait_timeout, progress).await;
            let snapshot = step(progress, waited)?;
            (snapshot, Some(object))
        }
        (None, None) => {
            bail!("--bucket is required to upload the raw disk (or pass --snapshot-id)")
        }
    };

    image.snapshot_id = snapshot.clone();
    progress.begin(&format!("registering {} from {snapshot}", image.name));
    let ami = step(
        progress,
        aws.register_image(&image).await.map_err(Into::into),
    )?;
    Ok(Published {
        ami,
        snapshot,
        object,
        existed: false,
    })
}

/// Ends the current step as done or failed with `r`.
fn step<T>(progress: &mut Progress, r: anyhow::Result<T>) -> anyhow::Result<T> {
    match r {
        Ok(v) => {
            progress.end(StepOutcome::Changed);
            Ok(v)
        }
        Err(e) => {
            progress.fail();
            Err(e)
        }
    }
}

async fn wait_import(
    aws: &Aws,
    task: &str,
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match aws.import_state(task).await? {
            ImportState::Completed(id) => return Ok(id),
            ImportState::Failed(why) => bail!("snapshot import {task} failed: {why}"),
            ImportState::Running(line) => {
                if line != last {
                    progress.detail(&line);
                    last = line;
                }
            }
        }
        if started.elapsed() > timeout {
            bail!(
                "snapshot import {task} still not done after {} s (last: {last}); raise --aws-wait-timeout or register later with --snapshot-id",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Arch;
    use crate::image::manifest::{Appliance, Disk};

    #[test]
    fn names_carry_the_disk_checksum_and_the_tags_deploy_looks_for() {
        let m = Manifest {
            image: "appliance".into(),
            arch: Arch::X86_64,
            debian: "12 (bookworm)".into(),
            epoch: 1,
            raw: Disk {
                file: "disk.raw".into(),
                bytes: 1 << 31,
                sha256: "abcdef0123456789".repeat(4),
            },
            vhd: Disk {
                file: "disk.vhd".into(),
                bytes: (1 << 31) + 512,
                sha256: "0".repeat(64),
            },
            appliance: Appliance {
                version: "appliance 0.1.0".into(),
                source_sha256: "1".repeat(64),
                installed_sha256: "2".repeat(64),
            },
            exposure: 1.9,
            packages: Default::default(),
        };
        let (key, image) = names(&m);
        assert_eq!(image.name, "causeway-appliance-x86_64-abcdef012345");
        assert_eq!(
            key,
            "causeway/images/causeway-appliance-x86_64-abcdef012345.raw"
        );
        assert_eq!(image.arch, Arch::X86_64);
        assert!(
            image
                .tags
                .contains(&("causeway:image".into(), "appliance".into()))
        );
        assert!(
            image
                .tags
                .contains(&("causeway:arch".into(), "x86_64".into()))
        );
        assert!(
            image
                .tags
                .contains(&(TAG_APPLIANCE_SHA256.into(), "2".repeat(64)))
        );
    }
}
