//! The local spool: every recording is written and fsync'd here before its
//! bytes are acked, and stays until storage confirms the upload. A crash
//! loses nothing acked: at start the spool is scanned and whatever it holds
//! is uploaded again.
//!
//! Layout: `<id>.meta` (JSON: the storage key) is written and synced before
//! `<id>.cast` gets its first byte, so a `.cast` without `.meta` never held
//! an acked byte and is deleted at start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use causeway_recording::{CastHeader, complete_prefix_len, object_key, with_nonce};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// The spool directory and the keys of the recordings it holds.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next_id: AtomicU64,
    keys: Mutex<BTreeSet<String>>,
}

/// A finished recording in the spool, waiting for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledRecording {
    /// Spool file stem.
    pub id: String,
    /// Storage key.
    pub key: String,
    /// Path of the recording's bytes.
    pub data: PathBuf,
    /// Length of the recording in bytes.
    pub len: u64,
}

/// An open recording: appends are durable when they return.
#[derive(Debug)]
pub struct SpoolWriter {
    file: tokio::fs::File,
    recording: SpooledRecording,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    key: String,
}

/// Bytes held in the spool directory `dir` now: recordings being received
/// and recordings waiting for upload.
pub async fn bytes_held(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let metadata = entry.metadata().await?;
        if metadata.is_file() {
            total += metadata.len();
        }
    }
    Ok(total)
}

impl Spool {
    /// Opens (creating) the spool and returns the recordings left by a
    /// previous run, each cut back to its last complete line.
    pub async fn open(dir: &Path) -> anyhow::Result<(Self, Vec<SpooledRecording>)> {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
        let mut left = Vec::new();
        let mut stems = BTreeSet::new();
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .with_context(|| format!("reading spool directory {}", dir.display()))?;
        while let Some(entry) = entries.next_entry().await.context("listing the spool")? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                remove_if_exists(&path).await?;
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            stems.insert(stem.to_owned());
        }
        let mut keys = BTreeSet::new();
        for stem in stems {
            let meta_path = dir.join(format!("{stem}.meta"));
            let data = dir.join(format!("{stem}.cast"));
            let meta = match tokio::fs::read(&meta_path).await {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    remove_if_exists(&data).await?;
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", meta_path.display()));
                }
            };
            let meta: Meta = match serde_json::from_slice(&meta) {
                Ok(m) => m,
                Err(e) => {
                    // Leave both files for an operator rather than refuse to start.
                    tracing::warn!(file = %meta_path.display(), error = %e, "skipping a spooled recording with unreadable metadata");
                    continue;
                }
            };
            let len = recover(&data).await?;
            if len == 0 {
                remove_if_exists(&data).await?;
                remove_if_exists(&meta_path).await?;
                continue;
            }
            keys.insert(meta.key.clone());
            left.push(SpooledRecording {
                id: stem,
                key: meta.key,
                data,
                len,
            });
        }
        sync_dir(dir).await?;
        let spool = Self {
            dir: dir.to_owned(),
            next_id: AtomicU64::new(0),
            keys: Mutex::new(keys),
        };
        Ok((spool, left))
    }

    /// Bytes free for unprivileged writers on the spool's filesystem.
    pub async fn free_bytes(&self) -> anyhow::Result<u64> {
        let dir = self.dir.clone();
        let stat = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&dir))
            .await
            .context("asking the spool's filesystem for free space")?
            .with_context(|| format!("statvfs on spool directory {}", self.dir.display()))?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Starts a recording for `header`, under a key no other spooled recording has.
    pub async fn create(&self, header: &CastHeader, prefix: &str) -> anyhow::Result<SpoolWriter> {
        let key = self.reserve_key(header, prefix);
        let id = format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let data = self.dir.join(format!("{id}.cast"));
        let result = async {
            self.write_meta(&id, &key).await?;
            let file = tokio::fs::File::create(&data)
                .await
                .with_context(|| format!("creating {}", data.display()))?;
            sync_dir(&self.dir).await?;
            anyhow::Ok(file)
        }
        .await;
        match result {
            Ok(file) => Ok(SpoolWriter {
                file,
                recording: SpooledRecording {
                    id,
                    key,
                    data,
                    len: 0,
                },
            }),
            Err(e) => {
                self.release_key(&key);
                Err(e)
            }
        }
    }

    /// Deletes an uploaded recording: metadata first, so a crash in between
    /// leaves a `.cast` without `.meta`, which the next start deletes.
    pub async fn remove(&self, recording: &SpooledRecording) -> anyhow::Result<()> {
        remove_if_exists(&self.dir.join(format!("{}.meta", recording.id))).await?;
        remove_if_exists(&recording.data).await?;
        self.release_key(&recording.key);
        Ok(())
    }

    /// Drops a recording that never got a byte (nothing was acked).
    pub async fn discard(&self, writer: SpoolWriter) -> anyhow::Result<()> {
        let recording = writer.recording;
        drop(writer.file);
        self.remove(&recording).await
    }

    /// The recordings in the spool now (being received, or waiting for
    /// upload), by key; `len` is what was written so far.
    pub async fn in_progress(&self) -> anyhow::Result<Vec<SpooledRecording>> {
        let mut out = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .with_context(|| format!("reading spool directory {}", self.dir.display()))?;
        while let Some(entry) = entries.next_entry().await.context("listing the spool")? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "meta") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let data = self.dir.join(format!("{id}.cast"));
            // Either file may go away at any moment: the upload just finished.
            let (Ok(meta), Ok(stat)) = (
                tokio::fs::read(&path).await,
                tokio::fs::metadata(&data).await,
            ) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<Meta>(&meta) else {
                continue;
            };
            out.push(SpooledRecording {
                id: id.to_owned(),
                key: meta.key,
                data,
                len: stat.len(),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    fn reserve_key(&self, header: &CastHeader, prefix: &str) -> String {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let key = object_key(prefix, header, rand::random()).to_string();
            if keys.insert(key.clone()) {
                return key;
            }
        }
    }

    /// Gives `recording` a new key (a new random nonce), for when storage
    /// already holds an object under its key: nothing is overwritten.
    pub async fn rekey(&self, recording: &mut SpooledRecording) -> anyhow::Result<()> {
        let key = {
            let mut keys = self
                .keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                let key = with_nonce(&recording.key, rand::random());
                if keys.insert(key.clone()) {
                    break key;
                }
            }
        };
        if let Err(e) = self.write_meta(&recording.id, &key).await {
            self.release_key(&key);
            return Err(e);
        }
        self.release_key(&recording.key);
        recording.key = key;
        Ok(())
    }

    /// Writes `<id>.meta` atomically (temporary file, sync, rename).
    async fn write_meta(&self, id: &str, key: &str) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!("{id}.meta.tmp"));
        let meta = serde_json::to_vec(&Meta {
            key: key.to_owned(),
        })
        .context("encoding spool metadata")?;
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&meta).await.context("writing spool metadata")?;
        f.sync_all().await.context("syncing spool metadata")?;
        tokio::fs::rename(&tmp, self.dir.join(format!("{id}.meta")))
            .await
            .context("renaming spool metadata")?;
        sync_dir(&self.dir).await
    }

    fn release_key(&self, key: &str) {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

impl SpoolWriter {
    /// Appends complete lines and syncs them; returns the durable length.
    pub async fn append(&mut self, bytes: &[u8]) -> anyhow::Result<u64> {
        self.file
            .write_all(bytes)
            .await
            .context("writing to the spool")?;
        self.file.flush().await.context("flushing the spool")?;
        self.file.sync_data().await.context("syncing the spool")?;
        self.recording.len += bytes.len() as u64;
        Ok(self.recording.len)
    }

    /// The storage key of this recording.
    pub fn key(&self) -> &str {
        &self.recording.key
    }

    /// Bytes durable so far.
    pub fn len(&self) -> u64 {
        self.recording.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.recording.len == 0
    }

    /// Closes the recording, ready for upload.
    pub fn finish(self) -> SpooledRecording {
        self.recording
    }
}

/// Cuts a spool file back to its last newline (a crash may have torn the
/// last, never acked, write) and returns its length.
async fn recover(data: &Path) -> anyhow::Result<u64> {
    let bytes = match tokio::fs::read(data).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", data.display())),
    };
    let keep = complete_prefix_len(&bytes);
    if keep < bytes.len() {
        tracing::warn!(file = %data.display(), kept = keep, dropped = bytes.len() - keep, "cutting a torn last line from a spooled recording");
        let f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(data)
            .await
            .with_context(|| format!("opening {} to cut it", data.display()))?;
        f.set_len(keep as u64)
            .await
            .context("cutting a torn line")?;
        f.sync_all().await.context("syncing a cut spool file")?;
    }
    Ok(keep as u64)
}

async fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Makes creations, renames and removals in `dir` durable.
pub(crate) async fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    let d = tokio::fs::File::open(dir)
        .await
        .with_context(|| format!("opening directory {} to sync it", dir.display()))?;
    d.sync_all()
        .await
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_progress_lists_what_the_spool_holds_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, left) = Spool::open(dir.path()).await.expect("open");
        assert!(left.is_empty());
        let header =
            CastHeader::parse(br#"{"version":2,"timestamp":0,"srcNodeID":"n","connectionID":"c"}"#)
                .expect("header");
        let mut writer = spool.create(&header, "p").await.expect("create");
        writer.append(b"line\n").await.expect("append");
        // Not a recording: no metadata.
        std::fs::write(dir.path().join("stray.cast"), b"x\n").expect("write");

        let listed = spool.in_progress().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(
            listed[0].key.starts_with("p/n/19700101T000000Z-c-"),
            "{}",
            listed[0].key
        );
        assert_eq!(listed[0].key, writer.key());
        assert_eq!(listed[0].len, 5);

        let finished = writer.finish();
        spool.remove(&finished).await.expect("remove");
        assert!(spool.in_progress().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn two_recordings_with_one_header_get_unguessable_keys_and_a_rekey_sticks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path()).await.expect("open");
        let header =
            CastHeader::parse(br#"{"version":2,"timestamp":0,"srcNodeID":"n","connectionID":"c"}"#)
                .expect("header");
        let mut a = spool.create(&header, "p").await.expect("create");
        let b = spool.create(&header, "p").await.expect("create");
        assert_ne!(a.key(), b.key());
        a.append(b"line\n").await.expect("append");
        let mut recording = a.finish();
        let old = recording.key.clone();

        spool.rekey(&mut recording).await.expect("rekey");

        assert_ne!(recording.key, old);
        assert!(recording.key.starts_with("p/n/19700101T000000Z-c-"));
        drop(spool);
        let (_, left) = Spool::open(dir.path()).await.expect("reopen");
        assert!(left.iter().any(|r| r.key == recording.key), "{left:?}");
        assert!(left.iter().all(|r| r.key != old));
    }

    #[tokio::test]
    async fn open_recovers_what_a_crash_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // A recording whose last write was torn mid-line.
        std::fs::write(d.join("1-0.meta"), br#"{"key":"n/a.cast"}"#).expect("write");
        std::fs::write(d.join("1-0.cast"), b"{\"h\":1}\n[0,\"o\",\"x\"]\n[1,\"o").expect("write");
        // Data without metadata never had an acked byte; a temporary metadata file never took effect.
        std::fs::write(d.join("2-0.cast"), b"junk\n").expect("write");
        std::fs::write(d.join("3-0.meta.tmp"), b"{").expect("write");
        // Unreadable metadata is left alone for an operator.
        std::fs::write(d.join("4-0.meta"), b"not json").expect("write");
        std::fs::write(d.join("4-0.cast"), b"kept\n").expect("write");

        let (_spool, left) = Spool::open(d).await.expect("open");

        assert_eq!(
            left,
            vec![SpooledRecording {
                id: "1-0".to_owned(),
                key: "n/a.cast".to_owned(),
                data: d.join("1-0.cast"),
                len: 20,
            }]
        );
        assert_eq!(
            std::fs::read(d.join("1-0.cast")).expect("read"),
            b"{\"h\":1}\n[0,\"o\",\"x\"]\n"
        );
        assert!(!d.join("2-0.cast").exists());
        assert!(!d.join("3-0.meta.tmp").exists());
        assert!(d.join("4-0.meta").exists() && d.join("4-0.cast").exists());
    }
}
