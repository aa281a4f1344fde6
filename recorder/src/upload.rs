//! Moves finished recordings from the spool to storage, retrying with
//! backoff through outages, and deletes a spooled file only after storage
//! confirmed it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::config::UploadConfig;
use crate::spool::{Spool, SpooledRecording};
use crate::storage::{AlreadyStored, Storage};

/// The uploader task: runs until `finished` closes, then waits for uploads in flight.
pub async fn run<S: Storage>(
    storage: Arc<S>,
    spool: Arc<Spool>,
    config: UploadConfig,
    mut finished: mpsc::UnboundedReceiver<SpooledRecording>,
) {
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(recording) = finished.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (storage, spool, config) = (Arc::clone(&storage), Arc::clone(&spool), config.clone());
        tasks.spawn(async move {
            upload_until_stored(&*storage, &spool, &config, recording).await;
            drop(slot);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn upload_until_stored<S: Storage>(
    storage: &S,
    spool: &Spool,
    config: &UploadConfig,
    mut recording: SpooledRecording,
) {
    let mut attempt = 0u32;
    loop {
        let error = match storage
            .put(&recording.key, &recording.data, recording.len)
            .await
        {
            Ok(()) => break,
            Err(e) => e,
        };
        if error.downcast_ref::<AlreadyStored>().is_some() {
            // Nothing is overwritten: store this recording under a new key.
            // (The object there may even be this recording, if an earlier
            // attempt was stored but its answer lost; a duplicate beats a
            // loss.)
            let old = recording.key.clone();
            match spool.rekey(&mut recording).await {
                Ok(()) => {
                    tracing::warn!(key = %old, new_key = %recording.key, storage = %storage.describe(), "storage already holds an object under this key; storing the recording under a new one");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(key = %old, error = %format!("{e:#}"), "could not give the recording a new key");
                }
            }
        }
        let delay = backoff(config, attempt);
        tracing::warn!(key = %recording.key, storage = %storage.describe(), attempt, retry_in = ?delay, error = %format!("{error:#}"), "upload failed; the recording stays in the spool");
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
    tracing::info!(key = %recording.key, bytes = recording.len, storage = %storage.describe(), "recording stored");
    if let Err(e) = spool.remove(&recording).await {
        tracing::warn!(key = %recording.key, error = %format!("{e:#}"), "could not delete an uploaded recording from the spool; it will be uploaded again at the next start");
    }
}

/// Doubling delay from `retry_min_ms`, capped at `retry_max_ms`.
fn backoff(config: &UploadConfig, attempt: u32) -> Duration {
    let ms = config
        .retry_min_ms
        .saturating_mul(1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX))
        .min(config.retry_max_ms);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Mutex;

    use crate::storage::StoredObject;

    /// Says the first key it is given is taken; stores the rest, by key.
    #[derive(Default)]
    struct FirstKeyTaken {
        stored: Mutex<Vec<(String, Vec<u8>)>>,
        refused: Mutex<Vec<String>>,
    }

    impl Storage for FirstKeyTaken {
        async fn put(&self, key: &str, path: &Path, _len: u64) -> anyhow::Result<()> {
            let mut refused = self.refused.lock().expect("lock");
            if refused.is_empty() {
                refused.push(key.to_owned());
                return Err(AlreadyStored {
                    key: key.to_owned(),
                }
                .into());
            }
            let bytes = std::fs::read(path)?;
            self.stored
                .lock()
                .expect("lock")
                .push((key.to_owned(), bytes));
            Ok(())
        }

        async fn list(&self, _prefix: &str) -> anyhow::Result<Vec<StoredObject>> {
            Ok(Vec::new())
        }

        async fn read(&self, _key: &str, _limit: Option<u64>) -> anyhow::Result<Option<Vec<u8>>> {
            Ok(None)
        }

        fn describe(&self) -> String {
            "test storage".into()
        }
    }

    #[tokio::test]
    async fn a_taken_key_is_replaced_by_a_new_one_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path()).await.expect("open");
        let header = causeway_recording::CastHeader::parse(
            br#"{"version":2,"timestamp":0,"srcNodeID":"n","connectionID":"c"}"#,
        )
        .expect("header");
        let mut writer = spool.create(&header, "p").await.expect("create");
        writer.append(b"{}\n").await.expect("append");
        let storage = FirstKeyTaken::default();
        let config = UploadConfig {
            retry_min_ms: 60_000,
            ..UploadConfig::default()
        };

        tokio::time::timeout(
            Duration::from_secs(5),
            upload_until_stored(&storage, &spool, &config, writer.finish()),
        )
        .await
        .expect("stored at once under a new key, without a retry delay");

        let refused = storage.refused.lock().expect("lock").clone();
        let stored = storage.stored.lock().expect("lock").clone();
        assert_eq!(refused.len(), 1);
        assert_eq!(stored.len(), 1);
        assert_ne!(stored[0].0, refused[0]);
        assert!(stored[0].0.starts_with("p/n/19700101T000000Z-c-"));
        assert_eq!(stored[0].1, b"{}\n");
        assert!(spool.in_progress().await.expect("list").is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = UploadConfig {
            retry_min_ms: 100,
            retry_max_ms: 1_000,
            concurrency: 1,
        };
        let delays: Vec<u64> = (0..6)
            .map(|a| backoff(&config, a).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff(&config, u32::MAX), Duration::from_millis(1_000));
    }
}
