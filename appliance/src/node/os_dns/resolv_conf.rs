//! `resolv.conf` pointed at the node resolver: the file for this
//! network namespace (see the parent module), rewritten in place (same
//! inode), so that bind mounts of it see the change. The original bytes,
//! and the configuration the machine had (the forwarder's upstream
//! resolvers), are saved in the state directory first. On stop the
//! original is written back unless someone else has changed the file
//! since, in which case theirs is kept; after a crash the next start does
//! it ([`ResolvConf::recover`]).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// In the state directory: what was changed, so that a crash can be undone.
const RECORD: &str = "dns-takeover.json";
/// In the state directory: the file as it was (if there was one).
const ORIGINAL: &str = "dns-original.conf";
/// In the state directory: the configuration this machine had before,
/// which names the resolvers the node resolver forwards to.
pub const UPSTREAM: &str = "dns-upstream.conf";

/// What a takeover changed, saved before the change.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    /// The file existed (its bytes are in [`ORIGINAL`]).
    existed: bool,
    /// We created the file's directory.
    created_dir: bool,
    /// What we wrote, to tell whether someone changed it since.
    written: String,
}

/// A `resolv.conf` pointed at the node resolver until [`ResolvConf::restore`].
pub struct ResolvConf {
    state_dir: PathBuf,
    record: Record,
    resolver: IpAddr,
}

impl ResolvConf {
    /// Undoes a takeover an earlier run left behind (a crash), if any.
    pub fn recover(state_dir: &Path) -> anyhow::Result<()> {
        let path = state_dir.join(RECORD);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let record: Record = serde_json::from_slice(&text)
            .with_context(|| format!("reading {}: not a DNS takeover record", path.display()))?;
        tracing::info!(file = %record.path.display(), "putting back the resolver configuration an earlier run left");
        put_back(state_dir, &record)
    }

    /// Saves the file at `path` and points it at `resolver`. When the file
    /// does not exist, what the namespace resolves with is the first of
    /// `fallback` that can be read and that we did not write.
    pub fn take_over(
        state_dir: &Path,
        path: &Path,
        fallback: &[PathBuf],
        resolver: IpAddr,
        tailnet_domain: Option<&str>,
    ) -> anyhow::Result<Self> {
        let original = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let in_effect = match &original {
            Some(bytes) => bytes.clone(),
            None => fallback
                .iter()
                .filter_map(|path| fs::read(path).ok())
                .find(|bytes| !bytes.starts_with(causeway_dns::WRITTEN_BY.as_bytes()))
                .unwrap_or_default(),
        };
        let dir = path
            .parent()
            .context("resolv.conf path without a directory")?;
        let created_dir = !dir.exists();
        let record = Record {
            path: path.to_owned(),
            existed: original.is_some(),
            created_dir,
            written: causeway_dns::resolv_conf_pointing_at(&in_effect, resolver, tailnet_domain),
        };
        write_state(state_dir, UPSTREAM, &in_effect)?;
        if let Some(original) = &original {
            write_state(state_dir, ORIGINAL, original)?;
        }
        let json = serde_json::to_vec_pretty(&record).context("encoding the takeover record")?;
        write_state(state_dir, RECORD, &json)?;
        if created_dir {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let takeover = Self {
            state_dir: state_dir.to_owned(),
            record,
            resolver,
        };
        if let Err(e) = write_in_place(path, takeover.record.written.as_bytes()) {
            let _ = put_back(state_dir, &takeover.record);
            return Err(e);
        }
        tracing::info!(file = %path.display(), %resolver, "this machine resolves through the node resolver");
        Ok(takeover)
    }

    /// The file we manage.
    pub fn path(&self) -> &Path {
        &self.record.path
    }

    /// Follows a change of the tailnet's domain (the first search entry).
    pub fn set_domain(&mut self, tailnet_domain: Option<&str>) -> anyhow::Result<()> {
        let in_effect = fs::read(self.state_dir.join(UPSTREAM)).unwrap_or_default();
        let written =
            causeway_dns::resolv_conf_pointing_at(&in_effect, self.resolver, tailnet_domain);
        if written == self.record.written {
            return Ok(());
        }
        let before = std::mem::replace(&mut self.record.written, written);
        let json =
            serde_json::to_vec_pretty(&self.record).context("encoding the takeover record")?;
        write_state(&self.state_dir, RECORD, &json)?;
        if current(&self.record.path)?.as_deref() != Some(before.as_bytes()) {
            tracing::warn!(file = %self.record.path.display(), "someone else changed the resolver configuration; leaving it");
            return Ok(());
        }
        write_in_place(&self.record.path, self.record.written.as_bytes())
    }

    /// Puts the original back.
    pub fn restore(self) -> anyhow::Result<()> {
        put_back(&self.state_dir, &self.record)
    }
}

/// Writes the original back (or removes the file we created), unless the
/// file no longer holds what we wrote, then forgets the takeover.
fn put_back(state_dir: &Path, record: &Record) -> anyhow::Result<()> {
    let path = &record.path;
    if current(path)?.as_deref() != Some(record.written.as_bytes()) {
        tracing::warn!(file = %path.display(), "someone else changed the resolver configuration since we wrote it; keeping their version");
    } else if record.existed {
        let original_path = state_dir.join(ORIGINAL);
        let original = fs::read(&original_path)
            .with_context(|| format!("reading the saved original {}", original_path.display()))?;
        write_in_place(path, &original)?;
    } else {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        if record.created_dir
            && let Some(dir) = path.parent()
        {
            // Only if empty: someone may have put files there since.
            let _ = fs::remove_dir(dir);
        }
    }
    for name in [RECORD, ORIGINAL, UPSTREAM] {
        match fs::remove_file(state_dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {name}")),
        }
    }
    Ok(())
}

fn current(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the file's contents keeping its inode (bind mounts of it see
/// the change); creates it (0644) if missing.
fn write_in_place(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// A state file, replaced atomically.
fn write_state(state_dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = state_dir.join(name);
    let partial = state_dir.join(format!("{name}.partial"));
    fs::write(&partial, bytes)
        .and_then(|()| fs::rename(&partial, &path))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const RESOLVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 100));

    #[test]
    fn take_over_then_restore_puts_back_every_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("state dir");
        let path = dir.path().join("resolv.conf");
        let original = b"# odd spacing kept\nnameserver   198.19.0.2\nsearch a.example\n\n";
        fs::write(&path, original).expect("original");

        let takeover = ResolvConf::take_over(&state, &path, &[], RESOLVER, Some("tailnet.example"))
            .expect("takeover");

        let written = fs::read_to_string(&path).expect("written");
        assert!(
            written.contains("nameserver 100.100.100.100\n"),
            "{written}"
        );
        assert!(
            written.contains("search tailnet.example a.example\n"),
            "{written}"
        );
        assert_eq!(fs::read(state.join(UPSTREAM)).expect("upstream"), original);
        takeover.restore().expect("restore");
        assert_eq!(fs::read(&path).expect("restored"), original);
        assert!(!state.join(RECORD).exists());
    }

    #[test]
    fn a_crash_is_undone_at_the_next_start_and_a_created_file_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("state dir");
        let path = dir.path().join("netns").join("resolv.conf");
        let fallback = dir.path().join("host-resolv.conf");
        fs::write(&fallback, "nameserver 198.18.0.53\n").expect("host file");
        let fallback = [dir.path().join("missing"), fallback];

        let takeover =
            ResolvConf::take_over(&state, &path, &fallback, RESOLVER, None).expect("takeover");
        std::mem::forget(takeover); // the process dies here

        assert_eq!(
            fs::read(state.join(UPSTREAM)).expect("upstream"),
            b"nameserver 198.18.0.53\n"
        );
        assert!(path.exists());
        ResolvConf::recover(&state).expect("recover");
        assert!(!path.exists());
        assert!(
            !path.parent().expect("dir").exists(),
            "the directory we created is gone"
        );
        ResolvConf::recover(&state).expect("nothing left to recover");
    }

    #[test]
    fn a_file_someone_else_changed_meanwhile_is_left_as_they_wrote_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().to_owned();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, "nameserver 198.19.0.2\n").expect("original");

        let mut takeover =
            ResolvConf::take_over(&state, &path, &[], RESOLVER, None).expect("takeover");
        fs::write(&path, "nameserver 198.19.9.9\n").expect("someone else");
        takeover
            .set_domain(Some("tailnet.example"))
            .expect("domain");
        takeover.restore().expect("restore");

        assert_eq!(fs::read(&path).expect("theirs"), b"nameserver 198.19.9.9\n");
    }

    #[test]
    fn the_domain_is_followed_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        fs::write(&path, "nameserver 198.19.0.2\n").expect("original");
        let inode = fs::metadata(&path).expect("meta").ino();

        let mut takeover =
            ResolvConf::take_over(dir.path(), &path, &[], RESOLVER, None).expect("takeover");
        takeover
            .set_domain(Some("tailnet.example"))
            .expect("domain");

        let written = fs::read_to_string(&path).expect("written");
        assert!(written.contains("search tailnet.example\n"), "{written}");
        assert_eq!(
            fs::metadata(&path).expect("meta").ino(),
            inode,
            "same inode"
        );
        takeover.restore().expect("restore");
    }
}
