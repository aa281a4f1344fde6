//! Recordings in a local directory, with retention.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use causeway_recording::{RetentionPolicy, StoredRecording, expired};

use tokio::io::AsyncReadExt;

use super::{AlreadyStored, Storage, StoredObject};
use crate::spool::sync_dir;

/// A directory of recordings: `<root>/<key>`.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Deletes recordings older than the policy allows at `now`; returns their keys.
    pub async fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now: SystemTime,
    ) -> anyhow::Result<Vec<String>> {
        let root = self.root.clone();
        let stored = tokio::task::spawn_blocking(move || list(&root))
            .await
            .context("listing recordings for retention")??;
        let mut deleted = Vec::new();
        for key in expired(policy, &stored, now) {
            let path = self.root.join(&key);
            tokio::fs::remove_file(&path)
                .await
                .with_context(|| format!("deleting expired recording {}", path.display()))?;
            tracing::info!(key = %key, "deleted a recording past retention");
            deleted.push(key);
        }
        Ok(deleted)
    }
}

impl Storage for LocalStorage {
    async fn put(&self, key: &str, path: &Path, len: u64) -> anyhow::Result<()> {
        let target = self.root.join(key);
        let parent = target
            .parent()
            .with_context(|| format!("recording key {key:?} has no directory"))?
            .to_owned();
        tokio::fs::create_dir_all(&parent)
            .await
            .with_context(|| format!("creating {}", parent.display()))?;
        let tmp = target.with_extension("cast.tmp");
        let copied = tokio::fs::copy(path, &tmp)
            .await
            .with_context(|| format!("copying {} to {}", path.display(), tmp.display()))?;
        anyhow::ensure!(
            copied == len,
            "copied {copied} bytes of {}, expected {len}",
            path.display()
        );
        let f = tokio::fs::File::open(&tmp)
            .await
            .with_context(|| format!("opening {}", tmp.display()))?;
        f.sync_all()
            .await
            .with_context(|| format!("syncing {}", tmp.display()))?;
        // A hard link, not a rename: it fails when the target exists, so a
        // stored recording is never replaced (create-only, as on S3).
        let linked = tokio::fs::hard_link(&tmp, &target).await;
        tokio::fs::remove_file(&tmp)
            .await
            .with_context(|| format!("removing {}", tmp.display()))?;
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(AlreadyStored {
                    key: key.to_owned(),
                }
                .into());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("linking {} into place", tmp.display()));
            }
        }
        sync_dir(&parent).await
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<StoredObject>> {
        let root = self.root.clone();
        let found = tokio::task::spawn_blocking(move || walk(&root))
            .await
            .context("listing recordings")??;
        Ok(found
            .into_iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, meta)| StoredObject {
                key,
                bytes: meta.len(),
            })
            .collect())
    }

    async fn read(&self, key: &str, limit: Option<u64>) -> anyhow::Result<Option<Vec<u8>>> {
        // Keys come from URLs too: never leave the root.
        anyhow::ensure!(
            !key.is_empty()
                && Path::new(key)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))),
            "recording key {key:?} is not a relative path below the storage directory"
        );
        let path = self.root.join(key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(limit.unwrap_or(u64::MAX))
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(bytes))
    }

    fn describe(&self) -> String {
        format!("dir://{}", self.root.display())
    }
}

/// Every `.cast` file below `root`, with its key and modification time.
fn list(root: &Path) -> anyhow::Result<Vec<StoredRecording>> {
    walk(root)?
        .into_iter()
        .map(|(key, meta)| {
            let modified = meta
                .modified()
                .with_context(|| format!("reading mtime of {key}"))?;
            Ok(StoredRecording { key, modified })
        })
        .collect()
}

/// Every `.cast` file below `root` (temporary files end in `.tmp`), by key.
fn walk(root: &Path) -> anyhow::Result<Vec<(String, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "cast") {
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            out.push((rel.to_string_lossy().into_owned(), meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stored_recording_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, second) = (dir.path().join("1.cast"), dir.path().join("2.cast"));
        std::fs::write(&first, b"first\n").expect("write");
        std::fs::write(&second, b"second\n").expect("write");
        let storage = LocalStorage::new(dir.path().join("store"));
        storage.put("n1/a.cast", &first, 6).await.expect("put");

        let e = storage
            .put("n1/a.cast", &second, 7)
            .await
            .expect_err("the key is taken");

        assert!(e.downcast_ref::<AlreadyStored>().is_some(), "{e:#}");
        assert_eq!(
            std::fs::read(dir.path().join("store/n1/a.cast")).expect("stored"),
            b"first\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("store/n1"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["a.cast"], "no temporary file is left behind");
    }

    #[tokio::test]
    async fn stores_and_expires_recordings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.cast");
        std::fs::write(&src, b"{}\n").expect("write");
        let storage = LocalStorage::new(dir.path().join("store"));
        storage.put("n1/a.cast", &src, 3).await.expect("put");
        assert_eq!(
            std::fs::read(dir.path().join("store/n1/a.cast")).expect("stored"),
            b"{}\n"
        );

        let now = SystemTime::now();
        let kept = storage
            .apply_retention(RetentionPolicy::days(1), now)
            .await
            .expect("retention");
        assert!(kept.is_empty());
        let later = now + Duration::from_secs(2 * 86_400);
        let gone = storage
            .apply_retention(RetentionPolicy::days(1), later)
            .await
            .expect("retention");
        assert_eq!(gone, vec!["n1/a.cast".to_owned()]);
        assert!(!dir.path().join("store/n1/a.cast").exists());
    }

    #[tokio::test]
    async fn lists_and_reads_recordings_but_nothing_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.cast");
        std::fs::write(&src, b"line one\nline two\n").expect("write");
        std::fs::write(dir.path().join("secret.cast"), b"secret\n").expect("write");
        let storage = LocalStorage::new(dir.path().join("store"));
        assert!(storage.list("").await.expect("empty list").is_empty());
        storage.put("n2/b.cast", &src, 18).await.expect("put");
        storage.put("n1/a.cast", &src, 18).await.expect("put");
        std::fs::write(dir.path().join("store/n1/x.cast.tmp"), b"").expect("write");

        let listed = storage.list("").await.expect("list");
        assert_eq!(
            listed,
            ["n1/a.cast", "n2/b.cast"].map(|key| StoredObject {
                key: key.to_owned(),
                bytes: 18
            })
        );
        assert_eq!(storage.list("n2/").await.expect("list").len(), 1);
        assert_eq!(
            storage.read("n1/a.cast", Some(9)).await.expect("read"),
            Some(b"line one\n".to_vec())
        );
        assert_eq!(
            storage.read("n1/a.cast", None).await.expect("read"),
            Some(b"line one\nline two\n".to_vec())
        );
        assert_eq!(
            storage.read("n1/none.cast", None).await.expect("read"),
            None
        );
        for outside in ["../secret.cast", "/etc/passwd", "n1/../../secret.cast", ""] {
            let err = storage.read(outside, None).await.expect_err(outside);
            assert!(err.to_string().contains("not a relative path"), "{err}");
        }
    }
}
