//! The image manifest: every package and version in the image, the
//! appliance's version and checksums, the disks' sizes and checksums and
//! the unit's exposure, put together from what `images/build.sh` leaves in
//! the output directory. Pure: the caller reads the files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aws::Arch;

/// File name of the manifest in the output directory.
pub const MANIFEST: &str = "manifest.json";
/// The raw disk (AWS).
pub const RAW: &str = "disk.raw";
/// The fixed-size VHD (Azure).
pub const VHD: &str = "disk.vhd";
/// Highest `systemd-analyze security` exposure the appliance unit may have.
pub const MAX_EXPOSURE: f64 = 2.0;

/// What is wrong with one of the build's outputs.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    /// A line of `packages.tsv` is not `NAME\tVERSION\tARCH`.
    #[error("packages.tsv line {line}: expected NAME<TAB>VERSION<TAB>ARCH, got {text:?}")]
    PackageLine {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// No packages at all.
    #[error("packages.tsv lists no packages")]
    NoPackages,
    /// `checksums.txt` lacks a file.
    #[error("checksums.txt has no sha256 for {0}")]
    NoChecksum(String),
    /// The exposure line is missing or unreadable.
    #[error("exposure.txt: no line \"Overall exposure level for ...: N.N\"")]
    NoExposure,
    /// The exposure is above the limit.
    #[error("causeway-appliance.service's exposure is {0}, above {MAX_EXPOSURE}")]
    ExposureTooHigh(f64),
}

/// A disk file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// File name in the output directory.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The appliance binary in the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appliance {
    /// What `appliance --version` printed inside the image's root file
    /// system (`unknown` when it could not run on the builder).
    pub version: String,
    /// SHA-256 of the binary given to the build.
    pub source_sha256: String,
    /// SHA-256 of `/usr/bin/appliance` in the image (stripped).
    pub installed_sha256: String,
}

/// A Debian package in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Version.
    pub version: String,
    /// Debian architecture (`amd64`, `arm64`, `all`).
    pub arch: String,
}

/// The manifest, written as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Image kind (the `causeway:image` tag's value).
    pub image: String,
    /// Architecture.
    pub arch: Arch,
    /// Debian release.
    pub debian: String,
    /// SOURCE_DATE_EPOCH of the build: every timestamp in the image.
    pub epoch: u64,
    /// The raw disk.
    pub raw: Disk,
    /// The fixed VHD.
    pub vhd: Disk,
    /// The appliance.
    pub appliance: Appliance,
    /// `systemd-analyze security` exposure of `causeway-appliance.service`.
    pub exposure: f64,
    /// Every package, by name.
    pub packages: BTreeMap<String, Package>,
}

/// The build's outputs, as text, and the disks' sizes.
#[derive(Debug, Clone)]
pub struct BuildOutputs<'a> {
    /// Architecture built.
    pub arch: Arch,
    /// SOURCE_DATE_EPOCH used.
    pub epoch: u64,
    /// `packages.tsv`.
    pub packages: &'a str,
    /// `checksums.txt` (`sha256sum` output).
    pub checksums: &'a str,
    /// `exposure.txt`.
    pub exposure: &'a str,
    /// `appliance.version`.
    pub appliance_version: &'a str,
    /// Size of `disk.raw`.
    pub raw_bytes: u64,
    /// Size of `disk.vhd`.
    pub vhd_bytes: u64,
}

/// Puts the manifest together; refuses an exposure above [`MAX_EXPOSURE`].
pub fn manifest(o: &BuildOutputs<'_>) -> Result<Manifest, ManifestError> {
    let packages = packages(o.packages)?;
    let sums = checksums(o.checksums);
    let sum = |file: &str| {
        sums.get(file)
            .cloned()
            .ok_or_else(|| ManifestError::NoChecksum(file.to_owned()))
    };
    let exposure = exposure(o.exposure)?;
    if exposure > MAX_EXPOSURE {
        return Err(ManifestError::ExposureTooHigh(exposure));
    }
    Ok(Manifest {
        image: "appliance".to_owned(),
        arch: o.arch,
        debian: "12 (bookworm)".to_owned(),
        epoch: o.epoch,
        raw: Disk {
            file: RAW.to_owned(),
            bytes: o.raw_bytes,
            sha256: sum(RAW)?,
        },
        vhd: Disk {
            file: VHD.to_owned(),
            bytes: o.vhd_bytes,
            sha256: sum(VHD)?,
        },
        appliance: Appliance {
            version: o.appliance_version.trim().to_owned(),
            source_sha256: sum("appliance.source")?,
            installed_sha256: sum("appliance.installed")?,
        },
        exposure,
        packages,
    })
}

/// Parses `dpkg-query -W` output: `NAME\tVERSION\tARCH` per line.
pub fn packages(text: &str) -> Result<BTreeMap<String, Package>, ManifestError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || ManifestError::PackageLine {
            line: i + 1,
            text: line.to_owned(),
        };
        let mut f = line.split('\t');
        let (Some(name), Some(version), Some(arch), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad());
        };
        if name.is_empty() || version.is_empty() || arch.is_empty() {
            return Err(bad());
        }
        out.insert(
            name.to_owned(),
            Package {
                version: version.to_owned(),
                arch: arch.to_owned(),
            },
        );
    }
    if out.is_empty() {
        return Err(ManifestError::NoPackages);
    }
    Ok(out)
}

/// Parses `sha256sum` output into file name (last path component) → hex.
fn checksums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (sum, path) = l.split_once("  ")?;
            let name = path.rsplit('/').next()?;
            let ok = sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| (name.to_owned(), sum.to_ascii_lowercase()))
        })
        .collect()
}

/// The number in systemd-analyze's "Overall exposure level for UNIT: N.N ..." line.
fn exposure(text: &str) -> Result<f64, ManifestError> {
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("Overall exposure level for ")?;
            let (_, value) = rest.split_once(": ")?;
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .ok_or(ManifestError::NoExposure)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMS: &str = "\
1111111111111111111111111111111111111111111111111111111111111111  /out/disk.raw
2222222222222222222222222222222222222222222222222222222222222222  /out/disk.vhd
3333333333333333333333333333333333333333333333333333333333333333  /src/appliance.source
4444444444444444444444444444444444444444444444444444444444444444  /work/appliance.installed
";
    const EXPOSURE: &str = "  NAME  DESCRIPTION  EXPOSURE\n\u{2717} PrivateNetwork= ... 0.5\n\n\u{2192} Overall exposure level for causeway-appliance.service: 1.9 OK \u{1f642}\n";

    fn outputs<'a>(packages: &'a str, exposure: &'a str) -> BuildOutputs<'a> {
        BuildOutputs {
            arch: Arch::X86_64,
            epoch: 1_765_000_000,
            packages,
            checksums: SUMS,
            exposure,
            appliance_version: "appliance 0.1.0\n",
            raw_bytes: 2 << 30,
            vhd_bytes: (2 << 30) + 512,
        }
    }

    #[test]
    fn manifest_holds_packages_checksums_version_and_exposure() {
        let m = manifest(&outputs(
            "chrony\t4.3-2+deb12u1\tamd64\nbase-files\t12.4+deb12u13\tamd64\n",
            EXPOSURE,
        ))
        .expect("valid outputs");
        assert_eq!(m.exposure, 1.9);
        assert_eq!(m.appliance.version, "appliance 0.1.0");
        assert_eq!(m.appliance.source_sha256, "3".repeat(64));
        assert_eq!(m.appliance.installed_sha256, "4".repeat(64));
        assert_eq!(m.raw.sha256, "1".repeat(64));
        assert_eq!(m.vhd.bytes, (2 << 30) + 512);
        let names: Vec<&str> = m.packages.keys().map(String::as_str).collect();
        assert_eq!(names, ["base-files", "chrony"], "sorted by name");
        assert_eq!(m.packages["chrony"].version, "4.3-2+deb12u1");
        let json = serde_json::to_value(&m).expect("serializes");
        assert_eq!(json["arch"], "x86_64");
        assert_eq!(json["packages"]["chrony"]["arch"], "amd64");
    }

    #[test]
    fn a_malformed_package_line_is_named_with_its_number() {
        let err = manifest(&outputs("chrony\t4.3\tamd64\nbroken line\n", EXPOSURE))
            .expect_err("must fail");
        assert_eq!(
            err,
            ManifestError::PackageLine {
                line: 2,
                text: "broken line".into()
            }
        );
        assert_eq!(
            manifest(&outputs("", EXPOSURE)).expect_err("must fail"),
            ManifestError::NoPackages
        );
    }

    #[test]
    fn exposure_above_two_or_missing_is_refused() {
        let high = EXPOSURE.replace("1.9 OK", "2.4 OK");
        assert_eq!(
            manifest(&outputs("a\t1\tall\n", &high)).expect_err("must fail"),
            ManifestError::ExposureTooHigh(2.4)
        );
        assert_eq!(
            manifest(&outputs("a\t1\tall\n", "nothing here")).expect_err("must fail"),
            ManifestError::NoExposure
        );
        let exactly = EXPOSURE.replace("1.9 OK", "2.0 OK");
        assert_eq!(
            manifest(&outputs("a\t1\tall\n", &exactly))
                .expect("2.0 is allowed")
                .exposure,
            2.0
        );
    }

    #[test]
    fn a_missing_checksum_names_the_file() {
        let mut o = outputs("a\t1\tall\n", EXPOSURE);
        let sums = SUMS.replace("/out/disk.vhd", "/out/other");
        o.checksums = &sums;
        assert_eq!(
            manifest(&o).expect_err("must fail"),
            ManifestError::NoChecksum("disk.vhd".into())
        );
    }
}
