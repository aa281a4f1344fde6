//! Moves finished recordings from the spool to storage, retrying with
//! backoff through outages, and deletes a spooled file only after storage
//! confirmed it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use crate::config::UploadConfig;
use crate::spool::{Spool, SpooledRecording};
use crate::storage::Storage;

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
            upload_until_stored(&*storage, &spool, &config, &recording).await;
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
    recording: &SpooledRecording,
) {
    let mut attempt = 0u32;
    loop {
        match storage
            .put(&recording.key, &recording.data, recording.len)
            .await
        {
            Ok(()) => break,
            Err(e) => {
                let delay = backoff(config, attempt);
                tracing::warn!(key = %recording.key, storage = %storage.describe(), attempt, retry_in = ?delay, error = %format!("{e:#}"), "upload failed; the recording stays in the spool");
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
    tracing::info!(key = %recording.key, bytes = recording.len, storage = %storage.describe(), "recording stored");
    if let Err(e) = spool.remove(recording).await {
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
