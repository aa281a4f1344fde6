//! The SSH session recorder, linked into the appliance as role `recorder`:
//! ingest over Tailscale SSH's session-recording protocol, a local fsync'd
//! spool so every acked byte survives a crash, background upload to a local
//! directory, S3 or Azure Blob Storage, retention for the local directory,
//! and an optional web UI that lists, plays and follows recordings. Also
//! the producer (`appliance record`) that records a session to a recorder.

mod channel_body;
pub mod config;
pub mod identity;
pub mod ingest;
pub mod producer;
pub mod spool;
pub mod storage;
pub mod upload;
pub mod web;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use causeway_recording::RetentionPolicy;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use config::{
    AzureConfig, AzureCredential, RecorderConfig, S3Config, StorageConfig, UploadConfig, WebConfig,
};
pub use identity::{Identity, WhoIs, may_view};
pub use ingest::RecorderStats;
pub use storage::{AlreadyStored, AzureStorage, LocalStorage, S3Storage, Storage, StoredObject};

/// How often the local backend's retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Serves the recorder on `listener` with the configured storage until `shutdown` resolves.
pub async fn serve(
    config: RecorderConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_observed(config, listener, shutdown, RecorderStats::default(), None).await
}

/// Like [`serve`], keeping `stats` up to date for the caller's metrics.
/// With `who_is` (the recorder beside a tailnet node), every recording is
/// filed under the node that sent it and the web UI serves only the
/// viewers the tailnet policy grants the recorder capability.
pub async fn serve_observed(
    config: RecorderConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    stats: RecorderStats,
    who_is: Option<Arc<dyn WhoIs>>,
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
            let served = serve_with_stats(config, storage, listener, shutdown, stats, who_is).await;
            if let Some(task) = retention {
                task.abort();
            }
            served
        }
        StorageConfig::S3(s3) => {
            let storage = S3Storage::from_config(&s3)
                .await
                .context("configuring S3 storage")?;
            serve_with_stats(config, storage, listener, shutdown, stats, who_is).await
        }
        StorageConfig::Azure(azure) => {
            // Validate the whole config before reading the SAS file.
            config
                .validate()
                .map_err(anyhow::Error::msg)
                .context("checking the recorder configuration")?;
            let storage =
                AzureStorage::from_config(&azure).context("configuring Azure Blob storage")?;
            serve_with_stats(config, storage, listener, shutdown, stats, who_is).await
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
    serve_with_stats(
        config,
        storage,
        listener,
        shutdown,
        RecorderStats::default(),
        None,
    )
    .await
}

async fn serve_with_stats<S: Storage>(
    config: RecorderConfig,
    storage: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    stats: RecorderStats,
    who_is: Option<Arc<dyn WhoIs>>,
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
    if who_is.is_none() {
        tracing::warn!(
            "recorder without a tailnet node: recordings are filed under the node ID each sender claims, which nothing checks"
        );
    }
    let storage = Arc::new(storage);
    let web = match &config.web {
        Some(web_config) => {
            let web_listener = TcpListener::bind(web_config.listen)
                .await
                .with_context(|| format!("listening for the web UI on {}", web_config.listen))?;
            tracing::info!(listen = %web_config.listen, "recorder web UI ready");
            if who_is.is_none() {
                tracing::warn!(
                    "recorder web UI without a tailnet node: viewers are not identified, web.allow is its only access control"
                );
            }
            let web = Arc::new(web::Web::new(
                web_config,
                Arc::clone(&storage),
                Arc::clone(&spool),
                config.key_prefix(),
                who_is.clone(),
            ));
            Some(tokio::spawn(async move {
                let handler = move |peer, req| Arc::clone(&web).handle(peer, req);
                accept_loop(&web_listener, std::future::pending(), handler).await
            }))
        }
        None => None,
    };
    let uploader = tokio::spawn(upload::run(
        storage,
        Arc::clone(&spool),
        config.upload.clone(),
        finished_rx,
    ));
    let ingest = Arc::new(
        ingest::Ingest::new(Arc::new(config), spool, finished_tx)
            .observed(stats)
            .identified_by(who_is),
    );
    let handler = move |peer, req| Arc::clone(&ingest).handle(peer, req);
    let accepted = accept_loop(&listener, shutdown, handler).await;
    uploader.abort();
    if let Some(web) = web {
        web.abort();
    }
    accepted
}

/// Serves connections on `listener` with `handler` until `shutdown` resolves.
async fn accept_loop<H, F>(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> anyhow::Result<()>
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<BoxBody<Bytes, Infallible>>, Infallible>> + Send + 'static,
{
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
        let handler = handler.clone();
        let builder = Arc::clone(&builder);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| handler(peer, req));
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
