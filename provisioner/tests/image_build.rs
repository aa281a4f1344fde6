//! `provisioner image build` for real: mmdebstrap from the Debian mirror
//! this machine's apt uses, with the workspace's debug appliance. Checks
//! the manifest (packages, exposure, checksums), the GPT layout and the VHD
//! footer. Needs root, network access to the Debian mirror, the packages of
//! `.ci/install-deps`, and `cargo build --workspace --bins` first. Takes
//! about three minutes with a warm package cache (`target/image-cache`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use causeway_provisioner::image::manifest::Manifest;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a checksum")
        .to_owned()
}

#[test]
fn build_writes_a_bootable_layout_a_fixed_vhd_and_a_full_manifest() {
    let appliance = target_dir().join("debug/appliance");
    assert!(
        appliance.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        appliance.display()
    );
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["image", "build", "--arch", "x86_64", "--size-mib", "1024"])
        .arg("--appliance-bin")
        .arg(&appliance)
        .arg("--out")
        .arg(out_dir.path())
        .arg("--cache")
        .arg(target_dir().join("image-cache"))
        .output()
        .expect("provisioner runs");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Overall exposure level for causeway-appliance.service"),
        "the build prints systemd-analyze security:\n{}",
        text(&out)
    );

    let m: Manifest = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest parses");
    assert!(m.exposure <= 2.0, "exposure {}", m.exposure);
    for p in [
        "linux-image-cloud-amd64",
        "grub-efi-amd64-bin",
        "grub-pc-bin",
        "systemd",
        "systemd-resolved",
        "chrony",
        "nftables",
        "unattended-upgrades",
        "ca-certificates",
    ] {
        assert!(m.packages.contains_key(p), "{p} is in the image");
    }
    for p in ["openssh-server", "cloud-init", "sudo"] {
        assert!(!m.packages.contains_key(p), "{p} is not in the image");
    }
    assert!(
        m.appliance.version.starts_with("causeway-appliance "),
        "{:?}",
        m.appliance.version
    );
    assert_eq!(m.appliance.source_sha256, sha256(&appliance));
    assert_ne!(
        m.appliance.installed_sha256, m.appliance.source_sha256,
        "the installed binary is stripped"
    );

    let raw = out_dir.path().join("disk.raw");
    let vhd = out_dir.path().join("disk.vhd");
    assert_eq!(m.raw.bytes, 1024 << 20);
    assert_eq!(std::fs::metadata(&raw).expect("raw").len(), 1024 << 20);
    assert_eq!(m.raw.sha256, sha256(&raw));
    assert_eq!(m.vhd.sha256, sha256(&vhd));

    // A fixed VHD: the raw bytes, then a 512-byte footer whose sizes are
    // the raw size (a whole number of MiB).
    let v = std::fs::read(&vhd).expect("vhd");
    assert_eq!(v.len() as u64, (1024 << 20) + 512);
    let footer = &v[v.len() - 512..];
    assert_eq!(&footer[..8], b"conectix");
    let be64 = |o: usize| u64::from_be_bytes(footer[o..o + 8].try_into().expect("8 bytes"));
    assert_eq!(be64(40), 1024 << 20, "original size");
    assert_eq!(be64(48), 1024 << 20, "current size");
    assert_eq!(
        u32::from_be_bytes(footer[60..64].try_into().expect("4 bytes")),
        2,
        "disk type fixed"
    );
    let r = std::fs::read(&raw).expect("raw");
    assert!(v[..r.len()] == r[..], "the VHD's data is the raw disk");

    // GPT: BIOS boot, ESP, root, each on a MiB boundary; GRUB's boot.img in
    // the MBR.
    let table = Command::new("sfdisk")
        .arg("--json")
        .arg(&raw)
        .output()
        .expect("sfdisk");
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).expect("sfdisk json");
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    let got: Vec<(u64, String)> = parts
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().expect("start"),
                p["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2048, "21686148-6449-6E6F-744E-656564454649".to_owned()),
            (4096, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".to_owned()),
            (133_120, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".to_owned()),
        ]
    );
    for p in parts {
        assert_eq!(p["size"].as_u64().expect("size") % 2048, 0, "{p}");
    }
    assert_eq!(&r[510..512], &[0x55, 0xaa], "MBR signature");
    assert_eq!(
        u64::from_le_bytes(r[0x5c..0x64].try_into().expect("8 bytes")),
        2048,
        "boot.img points at core.img in the BIOS boot partition"
    );
}

#[test]
fn arm64_without_an_appliance_binary_is_refused_before_anything_runs() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["image", "build", "--arch", "arm64", "--out"])
        .arg(out_dir.path().join("out"))
        .env_remove("CAUSEWAY_APPLIANCE_BIN")
        .output()
        .expect("provisioner runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--arch arm64 needs --appliance-bin PATH"),
        "{}",
        text(&out)
    );
    assert!(!out_dir.path().join("out").exists(), "nothing was created");
}
