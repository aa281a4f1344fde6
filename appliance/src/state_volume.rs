//! A state volume: a block device, separate from the root disk, that holds
//! the appliance's state directory so that it outlives the instance. The
//! control role keeps its key, admin token and database there; on AWS the
//! provisioner creates an encrypted EBS volume, names it in the user data
//! (`state_volume = "vol-…"`) and attaches it to whichever instance is
//! control now.
//!
//! `appliance state-volume` runs as root before the appliance's unit: it
//! waits for the named volume to be attached, gives it an ext4 file system
//! only if it is blank, and mounts it where the unit's state directory
//! lives. `appliance run` then refuses to start when the config names a
//! volume but its state directory is on the root file system, so control
//! never creates a new tailnet on a disk that dies with the instance.
//!
//! The decisions (which device is the volume, what its probe means) are
//! plain functions over what the shell reads; the shell runs `blkid`,
//! `e2fsck`, `mkfs.ext4` and `mount`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cloud::{Cloud, ConfigSource, Metadata};
use crate::config::Config;

/// Where udev links block devices by their identity.
const BY_ID: &str = "/dev/disk/by-id";
/// The ext4 label `state-volume` gives a volume it formats.
const LABEL: &str = "causeway-state";
/// How often the attachment is looked for, and reported.
const POLL: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// An EBS volume ID: `vol-` and 8 or 17 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeId(String);

impl VolumeId {
    /// Parses `text`; the error names the value and what was expected.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let hex = text.strip_prefix("vol-").unwrap_or_default();
        if !matches!(hex.len(), 8 | 17)
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!(
                "state_volume = {text:?}: expected an EBS volume ID, vol- and 17 lower-case hex digits (vol-0123456789abcdef0)"
            );
        }
        Ok(Self(text.to_owned()))
    }

    /// The serial number the volume's NVMe controller reports on a Nitro
    /// instance: the ID without its dash (`vol0123456789abcdef0`).
    pub fn nvme_serial(&self) -> String {
        self.0.replacen('-', "", 1)
    }
}

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for VolumeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// The `/dev/disk/by-id` name of `volume`'s whole disk among `names`.
///
/// udev names an NVMe disk `nvme-MODEL_SERIAL` (and, from systemd 254,
/// also `nvme-MODEL_SERIAL_NSID`), with spaces made `_`: on EC2
/// `nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0`. Partitions
/// (`-partN`) and the `nvme-eui.…`/`nvme-nvme.…` names are not matched.
pub fn find_by_id<'a>(names: &'a [String], volume: &VolumeId) -> Option<&'a str> {
    let serial = volume.nvme_serial();
    let mut found: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("nvme-") && !n.contains("-part"))
        .filter(|n| {
            let tokens: Vec<&str> = n.split('_').collect();
            match tokens.as_slice() {
                [.., last] if *last == serial => true,
                [.., s, nsid] if *s == serial => nsid.bytes().all(|b| b.is_ascii_digit()),
                _ => false,
            }
        })
        .collect();
    // The shortest is the one without the namespace suffix; both point at
    // the same disk.
    found.sort_by_key(|n| (n.len(), *n));
    found.first().copied()
}

/// What `blkid -p` found on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// No signature at all: a new volume, to be formatted.
    Blank,
    /// An ext4 file system: a volume this command formatted before.
    Ext4,
    /// Anything else, named: never formatted or mounted.
    Other(String),
}

/// Reads `blkid -p -o export DEVICE`'s exit status and output: 2 means no
/// signature; 0 with `TYPE=` a file system, `PTTYPE=` a partition table.
pub fn contents(status: Option<i32>, stdout: &str) -> anyhow::Result<Contents> {
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    match status {
        Some(2) => Ok(Contents::Blank),
        Some(0) => match (value("TYPE"), value("PTTYPE")) {
            (Some(t), _) if t == "ext4" => Ok(Contents::Ext4),
            (Some(t), _) => Ok(Contents::Other(format!("a {t} file system"))),
            (None, Some(pt)) => Ok(Contents::Other(format!("a {pt} partition table"))),
            (None, None) => Ok(Contents::Other("an unknown signature".into())),
        },
        other => bail!("blkid -p failed (exit status {other:?}): {stdout}"),
    }
}

/// The first MiB of a device blkid found no signature on, read as
/// [`Contents`]: all zeros is blank.
fn first_bytes(device: &Path) -> anyhow::Result<Contents> {
    use std::io::Read;
    let mut head = Vec::with_capacity(1 << 20);
    std::fs::File::open(device)?
        .take(1 << 20)
        .read_to_end(&mut head)?;
    Ok(zeros_or_data(&head))
}

/// Blank when `head` (a device's first bytes) holds only zeros; otherwise
/// data that no signature names, which is never formatted.
pub fn zeros_or_data(head: &[u8]) -> Contents {
    if !head.is_empty() && head.iter().all(|b| *b == 0) {
        Contents::Blank
    } else {
        Contents::Other(
            "data that blkid names no file system for (its first MiB is not zeros)".into(),
        )
    }
}

/// What `state-volume` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The config names no volume: state stays on the root disk.
    NoVolume,
    /// The volume was already mounted at the mount point.
    AlreadyMounted(VolumeId),
    /// Mounted; `formatted` when it was blank.
    Mounted { volume: VolumeId, formatted: bool },
}

/// `appliance state-volume`: reads the config from `source` as
/// `fetch-config` does and, when it names a `state_volume`, waits up to
/// `wait` for it to be attached, formats it only if blank, and mounts it
/// at `mount_point`.
pub async fn prepare(
    source: ConfigSource,
    mount_point: &Path,
    wait: Duration,
) -> anyhow::Result<Outcome> {
    let text = match source {
        ConfigSource::AwsImds => Metadata::new(Cloud::Aws).user_data().await?,
    };
    let config = Config::parse(&text, "EC2 user data")?;
    let Some(volume) = config.state_volume else {
        return Ok(Outcome::NoVolume);
    };
    let device = wait_for_attachment(&volume, wait).await?;
    if mounted_at(&device, mount_point)? {
        return Ok(Outcome::AlreadyMounted(volume));
    }
    let blkid = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&device)
        .output()
        .context("running blkid")?;
    let mut found = contents(blkid.status.code(), &String::from_utf8_lossy(&blkid.stdout))
        .with_context(|| format!("probing {volume} ({})", device.display()))?;
    if found == Contents::Blank {
        // blkid finds nothing on a device it cannot read, too: format only
        // what this command reads as zeros, as a new EBS volume does.
        found = first_bytes(&device)
            .with_context(|| format!("reading {volume} ({})", device.display()))?;
    }
    let formatted = match found {
        Contents::Blank => {
            tracing::info!(%volume, device = %device.display(), "blank volume: making an ext4 file system");
            // No reserved blocks: nothing but the appliance writes here.
            run(Command::new("mkfs.ext4")
                .args(["-q", "-L", LABEL, "-m", "0"])
                .arg(&device))?;
            true
        }
        Contents::Ext4 => {
            // Replays the journal and fixes what is safe to fix (exit 1:
            // fixed); anything worse stops here rather than mounting it.
            let status = Command::new("e2fsck")
                .arg("-p")
                .arg(&device)
                .status()
                .context("running e2fsck")?;
            if !matches!(status.code(), Some(0..=1)) {
                bail!(
                    "e2fsck -p {} ({volume}) found errors it would not fix ({status}): repair the volume by hand",
                    device.display()
                );
            }
            false
        }
        Contents::Other(what) => bail!(
            "{volume} ({}) holds {what}, not the ext4 file system this command makes: refusing to format or mount it; attach an empty volume or one made by a Causeway control",
            device.display()
        ),
    };
    create_private_dir(mount_point)?;
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "nodev,nosuid,noexec"])
        .arg(&device)
        .arg(mount_point))?;
    Ok(Outcome::Mounted { volume, formatted })
}

/// Waits for the volume's by-id link, reporting every 30 s; the provisioner
/// attaches the volume once the instance runs, so it may come after boot.
async fn wait_for_attachment(volume: &VolumeId, wait: Duration) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let mut reported = Duration::ZERO;
    loop {
        let names: Vec<String> = match std::fs::read_dir(BY_ID) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("listing {BY_ID}")),
        };
        if let Some(name) = find_by_id(&names, volume) {
            let link = Path::new(BY_ID).join(name);
            return std::fs::canonicalize(&link)
                .with_context(|| format!("resolving {}", link.display()));
        }
        let waited = started.elapsed();
        if waited >= wait {
            bail!(
                "state volume {volume}: not attached after {} s (no {BY_ID}/nvme-*_{} link); attach it to this instance (provisioner deploy does), or remove state_volume from the config",
                wait.as_secs(),
                volume.nvme_serial()
            );
        }
        if waited >= reported + REPORT_EVERY {
            reported = waited;
            tracing::info!(%volume, waited_s = waited.as_secs(), "waiting for the state volume to be attached");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `device` is what is mounted at `mount_point`; an error when
/// something else is.
fn mounted_at(device: &Path, mount_point: &Path) -> anyhow::Result<bool> {
    let Ok(at) = std::fs::metadata(mount_point) else {
        return Ok(false);
    };
    let dev = std::fs::metadata(device)
        .with_context(|| format!("reading {}", device.display()))?
        .rdev();
    if at.dev() == dev {
        return Ok(true);
    }
    let parent = mount_point.parent().unwrap_or(Path::new("/"));
    let parent_dev = std::fs::metadata(parent)
        .with_context(|| format!("reading {}", parent.display()))?
        .dev();
    if at.dev() != parent_dev {
        bail!(
            "{} is already a mount point of another file system: unmount it first",
            mount_point.display()
        );
    }
    Ok(false)
}

/// Creates `dir` and its missing parents with mode 0700 (systemd keeps a
/// dynamic user's state under /var/lib/private, which must stay 0700).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating mount point {}", dir.display()))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// For `run`: when the config names a state volume, `state_dir` must be on
/// a file system other than the root's (the mounted volume), or the
/// appliance refuses to start.
pub fn check_mounted(volume: &VolumeId, state_dir: &Path) -> anyhow::Result<()> {
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("reading {}", p.display()))
    };
    if dev(state_dir)? == dev(Path::new("/"))? {
        bail!(
            "state_volume = \"{volume}\", but state_dir {} is on the root file system: the volume is not mounted (`appliance state-volume` mounts it before the appliance starts); refusing to start on state that would not outlive the instance",
            state_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> VolumeId {
        VolumeId::parse("vol-0123456789abcdef0").expect("valid")
    }

    #[test]
    fn volume_ids_are_checked_and_give_the_nvme_serial() {
        assert_eq!(id().nvme_serial(), "vol0123456789abcdef0");
        assert!(VolumeId::parse("vol-1234abcd").is_ok());
        for bad in [
            "",
            "vol-",
            "vol-0123456789ABCDEF0",
            "vol-0123456789abcdef",
            "snap-0123456789abcdef0",
            "vol-0123456789abcdefg",
        ] {
            let err = VolumeId::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("state_volume = {bad:?}")), "{err}");
        }
    }

    #[test]
    fn the_volume_is_found_by_its_serial_on_ec2_and_under_qemu() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let ec2 = names(&[
            "nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaaa",
            "nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaaa-part1",
            "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0_1",
            "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0",
            "nvme-nvme.1d0f-766f6c30313233343536373839616263646566300-416d617a6f6e-00000001",
        ]);
        assert_eq!(
            find_by_id(&ec2, &id()),
            Some("nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0")
        );
        let qemu = names(&["nvme-QEMU_NVMe_Ctrl_vol0123456789abcdef0"]);
        assert_eq!(
            find_by_id(&qemu, &id()),
            Some("nvme-QEMU_NVMe_Ctrl_vol0123456789abcdef0")
        );
        // Another volume, a partition of ours, a serial that only starts
        // the same, a non-NVMe disk: none of them.
        let others = names(&[
            "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0-part1",
            "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef01",
            "virtio-vol0123456789abcdef0",
            "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0_x",
        ]);
        assert_eq!(find_by_id(&others, &id()), None);
    }

    #[test]
    fn only_a_blank_volume_is_formatted_and_only_ext4_mounted() {
        assert_eq!(contents(Some(2), "").expect("blank"), Contents::Blank);
        assert_eq!(
            contents(
                Some(0),
                "DEVNAME=/dev/nvme1n1\nLABEL=causeway-state\nTYPE=ext4\nUSAGE=filesystem\n"
            )
            .expect("ext4"),
            Contents::Ext4
        );
        assert_eq!(
            contents(Some(0), "TYPE=xfs\n").expect("xfs"),
            Contents::Other("a xfs file system".into())
        );
        assert_eq!(
            contents(Some(0), "PTUUID=abc\nPTTYPE=gpt\n").expect("gpt"),
            Contents::Other("a gpt partition table".into())
        );
        assert!(contents(Some(4), "").is_err());
        assert!(contents(None, "").is_err());
        // No signature, but not zeros (or nothing read): never formatted.
        assert_eq!(zeros_or_data(&[0; 4096]), Contents::Blank);
        let mut data = vec![0; 4096];
        data[1000] = 7;
        assert!(matches!(zeros_or_data(&data), Contents::Other(_)));
        assert!(matches!(zeros_or_data(&[]), Contents::Other(_)));
    }

    #[test]
    fn run_refuses_a_state_dir_on_the_root_file_system() {
        let err = check_mounted(&id(), Path::new("/"))
            .expect_err("the root is the root")
            .to_string();
        assert!(
            err.contains("state_volume = \"vol-0123456789abcdef0\"") && err.contains("not mounted"),
            "{err}"
        );
        // /proc is another file system.
        check_mounted(&id(), Path::new("/proc")).expect("a separate file system");
    }
}
