//! `provisioner image build` and `provisioner image publish`: the
//! appliance's machine image. `build` checks its inputs, runs
//! `images/build.sh` (mmdebstrap, GRUB, the raw disk and the VHD) and writes
//! the manifest from what the script leaves (see [`manifest`]); `publish
//! --cloud aws` uploads the raw disk to S3, imports it as a snapshot and
//! registers the AMI that `deploy` looks up by its tags (see [`publish`]).

pub mod manifest;
pub mod publish;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use self::manifest::{BuildOutputs, MANIFEST, Manifest, RAW, VHD};
use crate::aws::Arch;

/// What `image build` needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Architecture.
    pub arch: Arch,
    /// The appliance binary [default: `target/release/appliance`, x86_64 only].
    pub appliance_bin: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// The directory holding `build.sh` and the root file system overlay.
    pub images_dir: PathBuf,
    /// Where downloaded .deb files are kept between builds.
    pub cache: Option<PathBuf>,
    /// Work directory to keep (the root file system) [default: a temporary one].
    pub work: Option<PathBuf>,
    /// Disk size in MiB.
    pub size_mib: u64,
    /// SOURCE_DATE_EPOCH [default: today 00:00 UTC, chosen by the script].
    pub epoch: Option<u64>,
}

/// The machine an ELF file is for, from its header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("is not an ELF executable")]
    NotElf,
    /// An ELF for a machine we do not build.
    #[error("is an ELF for machine type {0:#x}, neither x86_64 (0x3e) nor arm64 (0xb7)")]
    OtherMachine(u16),
}

/// Reads the architecture from an ELF header (64-bit little-endian only).
pub fn elf_arch(header: &[u8]) -> Result<Arch, ElfError> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err(ElfError::NotElf);
    }
    match u16::from_le_bytes([header[18], header[19]]) {
        0x3e => Ok(Arch::X86_64),
        0xb7 => Ok(Arch::Arm64),
        m => Err(ElfError::OtherMachine(m)),
    }
}

/// The appliance binary to put in the image: `--appliance-bin`, else the
/// release build (x86_64, which this machine compiles); checked to be an
/// executable for `arch`.
pub fn appliance_for(arch: Arch, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match (given, arch) {
        (Some(p), _) => p.to_path_buf(),
        (None, Arch::X86_64) => PathBuf::from("target/release/appliance"),
        (None, Arch::Arm64) => bail!(
            "--arch arm64 needs --appliance-bin PATH: an appliance built for aarch64 (this machine builds x86_64 only)"
        ),
    };
    let mut header = [0u8; 20];
    let read = std::fs::File::open(&path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .with_context(|| {
            format!(
                "--appliance-bin {}: cannot read it (build it with `cargo build --release -p appliance`, or pass --appliance-bin)",
                path.display()
            )
        });
    read?;
    match elf_arch(&header) {
        Ok(a) if a == arch => Ok(path),
        Ok(a) => bail!(
            "--appliance-bin {}: built for {a}, but --arch is {arch}",
            path.display()
        ),
        Err(e) => bail!("--appliance-bin {}: {e}", path.display()),
    }
}

/// Builds the image; returns the manifest it wrote.
pub fn build(o: &BuildOptions) -> anyhow::Result<Manifest> {
    if o.size_mib < 512 {
        bail!("--size-mib {}: expected at least 512 (MiB)", o.size_mib);
    }
    let appliance = appliance_for(o.arch, o.appliance_bin.as_deref())?;
    let script = o.images_dir.join("build.sh");
    if !script.is_file() {
        bail!(
            "--images-dir {}: no build.sh there (run from the repository root or pass --images-dir)",
            o.images_dir.display()
        );
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("image build runs mmdebstrap in root mode and chroot: run it as root");
    }
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("--out {}: cannot create it", o.out.display()))?;
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .arg("--arch")
        .arg(o.arch.as_str())
        .arg("--appliance-bin")
        .arg(&appliance)
        .arg("--out")
        .arg(&o.out)
        .arg("--size-mib")
        .arg(o.size_mib.to_string());
    if let Some(c) = &o.cache {
        cmd.arg("--cache").arg(c);
    }
    if let Some(w) = &o.work {
        cmd.arg("--work").arg(w);
    }
    if let Some(e) = o.epoch {
        cmd.arg("--epoch").arg(e.to_string());
    }
    tracing::info!(script = %script.display(), "running the image build");
    let status = cmd
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see its output above",
            script.display()
        );
    }
    let read = |name: &str| {
        std::fs::read_to_string(o.out.join(name))
            .with_context(|| format!("reading {} from the build", o.out.join(name).display()))
    };
    let size = |name: &str| {
        std::fs::metadata(o.out.join(name))
            .map(|m| m.len())
            .with_context(|| format!("reading the size of {}", o.out.join(name).display()))
    };
    let epoch_text = read("epoch")?;
    let epoch = epoch_text
        .trim()
        .parse()
        .with_context(|| format!("the build's epoch {epoch_text:?} is not a number"))?;
    let (packages, checksums, exposure, version) = (
        read("packages.tsv")?,
        read("checksums.txt")?,
        read("exposure.txt")?,
        read("appliance.version")?,
    );
    let m = manifest::manifest(&BuildOutputs {
        arch: o.arch,
        epoch,
        packages: &packages,
        checksums: &checksums,
        exposure: &exposure,
        appliance_version: &version,
        raw_bytes: size(RAW)?,
        vhd_bytes: size(VHD)?,
    })?;
    let json = serde_json::to_string_pretty(&m).context("encoding the manifest")?;
    std::fs::write(o.out.join(MANIFEST), json + "\n")
        .with_context(|| format!("writing {}", o.out.join(MANIFEST).display()))?;
    Ok(m)
}

/// Reads the manifest of a built image directory.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "--image-dir {}: no {MANIFEST} (run `provisioner image build` first)",
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not an image manifest", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, 1];
        h.resize(18, 0);
        h.extend_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn elf_machine_picks_the_architecture() {
        assert_eq!(elf_arch(&header(2, 0x3e)), Ok(Arch::X86_64));
        assert_eq!(elf_arch(&header(2, 0xb7)), Ok(Arch::Arm64));
        assert_eq!(
            elf_arch(&header(2, 0x28)),
            Err(ElfError::OtherMachine(0x28))
        );
        assert_eq!(elf_arch(&header(1, 0x3e)), Err(ElfError::NotElf));
        assert_eq!(elf_arch(b"#!/bin/sh\necho hi\n\n\n"), Err(ElfError::NotElf));
    }

    #[test]
    fn appliance_bin_is_checked_against_arch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let x86 = dir.path().join("x86");
        std::fs::write(&x86, header(2, 0x3e)).expect("write");
        assert_eq!(
            appliance_for(Arch::X86_64, Some(&x86)).expect("matches"),
            x86
        );
        let err = appliance_for(Arch::Arm64, Some(&x86)).expect_err("wrong arch");
        assert!(
            err.to_string()
                .contains("built for x86_64, but --arch is arm64"),
            "{err}"
        );
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\necho not an elf at all\n").expect("write");
        let err = appliance_for(Arch::X86_64, Some(&script)).expect_err("not elf");
        assert!(
            err.to_string().contains("is not an ELF executable"),
            "{err}"
        );
        let err = appliance_for(Arch::Arm64, None).expect_err("arm64 needs a binary");
        assert!(
            err.to_string()
                .contains("--arch arm64 needs --appliance-bin"),
            "{err}"
        );
        let err =
            appliance_for(Arch::X86_64, Some(&dir.path().join("missing"))).expect_err("missing");
        assert!(err.to_string().contains("cannot read it"), "{err}");
    }

    #[test]
    fn a_bad_size_or_images_dir_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let x86 = dir.path().join("x86");
        std::fs::write(&x86, header(2, 0x3e)).expect("write");
        let mut o = BuildOptions {
            arch: Arch::X86_64,
            appliance_bin: Some(x86),
            out: dir.path().join("out"),
            images_dir: dir.path().to_path_buf(),
            cache: None,
            work: None,
            size_mib: 100,
            epoch: None,
        };
        let err = build(&o).expect_err("too small");
        assert!(err.to_string().contains("--size-mib 100"), "{err}");
        o.size_mib = 2048;
        let err = build(&o).expect_err("no build.sh");
        assert!(err.to_string().contains("no build.sh there"), "{err}");
        assert!(!o.out.exists(), "nothing was created");
    }
}
