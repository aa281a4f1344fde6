//! The SSH session recorder, linked into the appliance as role `recorder`:
//! ingest over Tailscale SSH's session-recording protocol, a local fsync'd
//! spool so every acked byte survives a crash, background upload to a local
//! directory or S3, and retention for the local directory. Also the
//! producer (`appliance record`) that records a session to a recorder.

mod channel_body;
pub mod config;
pub mod ingest;
pub mod producer;
pub mod spool;
pub mod storage;
pub mod upload;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use causeway_recording::RetentionPolicy;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use config::{RecorderConfig, S3Config, StorageConfig, UploadConfig};
pub use storage::{LocalStorage, S3Storage, Storage};

/// How often the local backend's retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Serves the recorder on `listener` with the configured storage until `shutdown` resolves.
pub async fn serve(
    config: RecorderConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    match config.storage.clone() {
        StorageConfig::Local {
            dir,
            retention_days,
        } => {
            let storage = LocalStorage::new(dir);
            let retention = retention_days.map(|days| {
                let storage = storage.clone();
                tokio::spawn(async move { retain(storage, RetentionPolicy::days(days)).await })
            });
            let served = serve_with(config, storage, listener, shutdown).await;
            if let Some(task) = retention {
                task.abort();
            }
            served
        }
        StorageConfig::S3(s3) => {
            let storage = S3Storage::from_config(&s3)
                .await
                .context("configuring S3 storage")?;
            serve_with(config, storage, listener, shutdown).await
        }
    }
}

/// Serves the recorder with a caller-built storage backend.
pub async fn serve_with<S: Storage>(
    config: RecorderConfig,
    storage: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("checking the recorder configuration")?;
    let (spool, left) = spool::Spool::open(&config.spool_dir)
        .await
        .context("opening the recorder spool")?;
    let spool = Arc::new(spool);
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    if !left.is_empty() {
        tracing::info!(count = left.len(), "resuming uploads left in the spool");
    }
    for recording in left {
        let _ = finished_tx.send(recording);
    }
    tracing::info!(storage = %storage.describe(), "recorder storage ready");
    let uploader = tokio::spawn(upload::run(
        Arc::new(storage),
        Arc::clone(&spool),
        config.upload.clone(),
        finished_rx,
    ));
    let ingest = Arc::new(ingest::Ingest::new(Arc::new(config), spool, finished_tx));
    let accepted = accept_loop(&listener, ingest, shutdown).await;
    uploader.abort();
    accepted
}

async fn accept_loop(
    listener: &TcpListener,
    ingest: Arc<ingest::Ingest>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Notice a vanished SSH server even while its session is idle.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    // With a timer, hyper drops HTTP/1 clients that dawdle over their headers.
    builder.http1().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Dropping the set on return aborts live connections: what they had
    // acked is in the spool, and the next start uploads it.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a recorder connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ingest = Arc::clone(&ingest);
        let builder = Arc::clone(&builder);
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |req| Arc::clone(&ingest).handle(peer, req));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "recorder connection ended with an error");
            }
        });
    }
}

async fn retain(storage: LocalStorage, policy: RetentionPolicy) {
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = storage.apply_retention(policy, SystemTime::now()).await {
            tracing::warn!(error = %format!("{e:#}"), "applying retention failed");
        }
    }
}
