//! `provisioner image publish --cloud aws` against moto (started by the
//! test on a free port). moto does not implement ImportSnapshot, so the
//! test checks the upload and the refused import, then registers from a
//! snapshot made in moto from a volume (`--snapshot-id`) and checks the AMI
//! and that `deploy`'s lookup finds it. moto also drops RegisterImage's
//! architecture, ENA, boot mode and mappings; a unit test checks the request.

use std::path::Path;
use std::process::Output;

use causeway_provisioner::aws::Arch;
use causeway_provisioner::aws::api::Aws;
use causeway_provisioner::image::manifest::{Appliance, Disk, Manifest};
use causeway_test_support::Moto;

mod common;
use common::text;

const BUCKET: &str = "causeway-images";
const DISK_BYTES: usize = 3 << 20;

fn publish(moto: &Moto, args: &[&str]) -> Output {
    common::provisioner(moto.url())
        .args(["image", "publish"])
        .args(args)
        .output()
        .expect("provisioner runs")
}

/// An image directory as `image build` leaves it, with a small disk.
fn image_dir(dir: &Path) -> Vec<u8> {
    let disk: Vec<u8> = (0..DISK_BYTES).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("disk.raw"), &disk).expect("disk");
    let m = Manifest {
        image: "appliance".into(),
        arch: Arch::X86_64,
        debian: "12 (bookworm)".into(),
        epoch: 1_765_000_000,
        raw: Disk {
            file: "disk.raw".into(),
            bytes: DISK_BYTES as u64,
            sha256: "0123456789abcdef".repeat(4),
        },
        vhd: Disk {
            file: "disk.vhd".into(),
            bytes: DISK_BYTES as u64 + 512,
            sha256: "f".repeat(64),
        },
        appliance: Appliance {
            version: "appliance 0.1.0".into(),
            source_sha256: "1".repeat(64),
            installed_sha256: "2".repeat(64),
        },
        exposure: 1.9,
        packages: Default::default(),
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string(&m).expect("json"),
    )
    .expect("manifest");
    disk
}

#[test]
fn publish_uploads_then_registers_an_ami_that_deploy_finds() {
    let moto = Moto::start();
    let rt = common::runtime();
    let config = common::moto_config(&rt, moto.url());
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let s3 = common::s3(&config);
    rt.block_on(s3.create_bucket().bucket(BUCKET).send())
        .expect("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = image_dir(dir.path());
    let d = dir.path().to_str().expect("utf-8 path");

    // Upload, then the import moto does not implement: a clear failure
    // that says where the disk is, and no image.
    let out = publish(
        &moto,
        &["--cloud", "aws", "--image-dir", d, "--bucket", BUCKET],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let key = "causeway/images/causeway-appliance-x86_64-0123456789ab.raw";
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EC2 refused the snapshot import")
            && err.contains(&format!("s3://{BUCKET}/{key}"))
            && err.contains("--snapshot-id"),
        "{}",
        text(&out)
    );
    let stored = rt
        .block_on(s3.get_object().bucket(BUCKET).key(key).send())
        .expect("the raw disk is in S3");
    let body = rt
        .block_on(stored.body.collect())
        .expect("body")
        .into_bytes();
    assert_eq!(body.len(), DISK_BYTES);
    assert!(body[..] == disk[..], "S3 holds the disk byte for byte");
    let images = rt
        .block_on(
            ec2.describe_images()
                .owners("self")
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("name")
                        .values("causeway-appliance-x86_64-0123456789ab")
                        .build(),
                )
                .send(),
        )
        .expect("images");
    assert!(images.images().is_empty(), "no AMI without a snapshot");

    // A snapshot made another way: register from it.
    let volume = rt
        .block_on(
            ec2.create_volume()
                .availability_zone("us-east-1a")
                .size(2)
                .send(),
        )
        .expect("volume");
    let snapshot = rt
        .block_on(
            ec2.create_snapshot()
                .volume_id(volume.volume_id().expect("volume id"))
                .send(),
        )
        .expect("snapshot")
        .snapshot_id()
        .expect("snapshot id")
        .to_owned();
    let out = publish(
        &moto,
        &[
            "--cloud",
            "aws",
            "--image-dir",
            d,
            "--snapshot-id",
            &snapshot,
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ami = result["ami"].as_str().expect("ami id").to_owned();
    assert_eq!(result["snapshot"], snapshot.as_str());
    assert_eq!(result["existed"], false);

    let image = rt
        .block_on(ec2.describe_images().image_ids(&ami).send())
        .expect("describe")
        .images()
        .first()
        .cloned()
        .expect("the AMI exists");
    assert_eq!(image.name(), Some("causeway-appliance-x86_64-0123456789ab"));
    // moto keeps neither architecture, ENA, boot mode nor the block device
    // mapping of RegisterImage; the request's fields are checked by the
    // unit test in src/aws/api/ec2/images.rs.
    let tags: std::collections::BTreeMap<&str, &str> = image
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(tags.get("causeway:image"), Some(&"appliance"));
    assert_eq!(tags.get("causeway:arch"), Some(&"x86_64"));
    assert_eq!(
        tags.get("causeway:appliance-sha256").copied(),
        Some("2".repeat(64).as_str())
    );

    // deploy's lookup (newest own image with the tags) finds it.
    let aws = Aws::from_config(&config, true);
    let found = rt
        .block_on(aws.newest_image(Arch::X86_64))
        .expect("lookup")
        .expect("deploy finds the published image");
    assert_eq!(found.id, ami);
    assert_eq!(found.arch, Some(Arch::X86_64));

    // The same disk again: the AMI is found, not registered twice.
    let out = publish(
        &moto,
        &[
            "--cloud",
            "aws",
            "--image-dir",
            d,
            "--snapshot-id",
            &snapshot,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("ami: {ami} (already registered)")),
        "{}",
        text(&out)
    );
}

#[test]
fn publish_refuses_bad_input_before_calling_aws() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");

    let out = publish(
        &moto,
        &["--cloud", "aws", "--image-dir", d, "--bucket", BUCKET],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "--image-dir {d}: no manifest.json (run `provisioner image build` first)"
        )),
        "{}",
        text(&out)
    );

    image_dir(dir.path());
    let out = publish(
        &moto,
        &["--cloud", "azure", "--image-dir", d, "--bucket", BUCKET],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--cloud azure: image publish supports only --cloud aws today"),
        "{}",
        text(&out)
    );

    let out = publish(&moto, &["--cloud", "aws", "--image-dir", d]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--bucket is required"),
        "{}",
        text(&out)
    );

    std::fs::write(dir.path().join("disk.raw"), b"short").expect("truncate");
    let out = publish(
        &moto,
        &["--cloud", "aws", "--image-dir", d, "--bucket", BUCKET],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 bytes, but the manifest says"),
        "{}",
        text(&out)
    );
    // Nothing reached AWS: no bucket was needed, none was created.
    assert!(
        !moto.log().contains("PUT /causeway-images"),
        "{}",
        moto.log()
    );
}
