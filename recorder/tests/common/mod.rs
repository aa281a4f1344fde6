//! Test harness: an in-process recorder on a free port, an HTTP/2 (prior
//! knowledge) client that speaks the `/v2/record` protocol, and recording
//! builders.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use causeway_recorder::{RecorderConfig, StorageConfig, UploadConfig};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, oneshot};

/// A recorder config for tests: loopback allowed, short timers, local storage.
pub fn test_config(dir: &Path) -> RecorderConfig {
    RecorderConfig {
        // Tests bind their own listener; this is never used.
        listen: "127.0.0.1:0".parse().expect("valid address"),
        allow: vec!["127.0.0.0/8".parse().expect("valid net")],
        spool_dir: dir.join("spool"),
        max_line_bytes: 64 * 1024,
        ack_interval_ms: 500,
        stall_timeout_ms: 60_000,
        header_timeout_ms: 10_000,
        max_sessions: 1_000,
        max_sessions_per_source: 1_000,
        spool_min_free_bytes: 1024 * 1024,
        upload: UploadConfig {
            retry_min_ms: 100,
            retry_max_ms: 1_000,
            concurrency: 4,
        },
        storage: StorageConfig::Local {
            dir: dir.join("store"),
            retention_days: None,
        },
        web: None,
    }
}

/// A recorder served in this process until dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Recorder {
    /// Starts a recorder with [`test_config`] changed by `change`.
    pub async fn start(change: impl FnOnce(&mut RecorderConfig)) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), change).await
    }

    /// Starts a recorder on the spool and storage of `dir` (a restart).
    pub async fn start_in(
        dir: tempfile::TempDir,
        change: impl FnOnce(&mut RecorderConfig),
    ) -> Self {
        Self::start_identified(dir, None, change).await
    }

    /// Starts a recorder that asks `who_is` which node each source is, as
    /// the appliance's recorder role does.
    pub async fn start_identified(
        dir: tempfile::TempDir,
        who_is: Option<std::sync::Arc<dyn causeway_recorder::WhoIs>>,
        change: impl FnOnce(&mut RecorderConfig),
    ) -> Self {
        let mut config = test_config(dir.path());
        change(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(causeway_recorder::serve_observed(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            causeway_recorder::RecorderStats::default(),
            who_is,
        ));
        Self {
            addr,
            dir,
            stop: Some(stop),
            task,
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
}

impl Recorder {
    /// Stops serving; returns the directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.task).await.expect("serve task");
        served.expect("serve returned Ok");
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A Tailscale-style header line for a session.
pub fn header(node: &str, connection: &str) -> String {
    format!(
        "{{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1700000000,\"env\":{{\"TERM\":\"xterm-256color\"}},\"srcNode\":\"laptop.tail-scale.ts.net\",\"srcNodeID\":\"{node}\",\"srcNodeUser\":\"alice@example.com\",\"srcNodeUserID\":42,\"sshUser\":\"alice\",\"localUser\":\"alice\",\"connectionID\":\"{connection}\"}}\n"
    )
}

/// One output event line.
pub fn event(t: f64, data: &str) -> String {
    serde_json::to_string(&(t, "o", data)).expect("serializes") + "\n"
}

/// A whole recording of `events` output lines.
pub fn recording(node: &str, connection: &str, events: usize) -> Vec<u8> {
    let mut out = header(node, connection);
    for i in 0..events {
        out.push_str(&event(
            i as f64 * 0.1,
            &format!("line {i} of {connection}\r\n"),
        ));
    }
    out.into_bytes()
}

/// One response frame of `/v2/record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u64),
    Error(String),
}

/// An open `POST /v2/record`: a body sender and the parsed ack stream.
pub struct Upload {
    pub body: Option<mpsc::Sender<Bytes>>,
    response: Incoming,
    pending: Vec<u8>,
}

impl Upload {
    /// The whole response body as text (a refusal's reason).
    pub async fn text(self) -> String {
        let body = tokio::time::timeout(Duration::from_secs(10), self.response.collect())
            .await
            .expect("the response ended within 10 s")
            .expect("response body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    /// Sends bytes of the recording.
    pub async fn send(&mut self, bytes: impl Into<Bytes>) {
        self.body
            .as_ref()
            .expect("body still open")
            .send(bytes.into())
            .await
            .expect("request body open");
    }

    /// Ends the request body.
    pub fn finish(&mut self) {
        self.body = None;
    }

    /// The next reply frame, `None` at the end of the response.
    pub async fn next_reply(&mut self) -> Option<Reply> {
        loop {
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let v: serde_json::Value = serde_json::from_slice(&line).expect("reply is JSON");
                if let Some(e) = v.get("error") {
                    return Some(Reply::Error(e.as_str().expect("error is text").to_owned()));
                }
                return Some(Reply::Ack(
                    v.get("ack").and_then(|a| a.as_u64()).unwrap_or(0),
                ));
            }
            let frame = self.response.frame().await?;
            let Ok(frame) = frame else { return None };
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }

    /// Waits (up to 10 s) for an ack of at least `n` bytes; returns it.
    pub async fn ack_at_least(&mut self, n: u64) -> u64 {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.next_reply().await {
                    Some(Reply::Ack(a)) if a >= n => return a,
                    Some(Reply::Ack(_)) => continue,
                    other => panic!("expected an ack of {n} bytes, got {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no ack of {n} bytes within 10 s"))
    }

    /// Reads replies to the end; returns the last ack and the error, if any.
    pub async fn drain(&mut self) -> (u64, Option<String>) {
        let mut last = 0;
        let result = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(reply) = self.next_reply().await {
                match reply {
                    Reply::Ack(a) => last = a,
                    Reply::Error(e) => return Some(e),
                }
            }
            None
        })
        .await
        .expect("the response ended within 20 s");
        (last, result)
    }
}

/// An HTTP/2 client with prior knowledge (h2c), as Tailscale SSH dials.
pub struct H2 {
    send: hyper::client::conn::http2::SendRequest<ChannelBody>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        Self { send }
    }

    /// `HEAD /v2/record`.
    pub async fn head(&mut self) -> StatusCode {
        let (_tx, body) = ChannelBody::new();
        drop(_tx);
        let req = Request::head("http://recorder/v2/record")
            .body(body)
            .expect("request");
        self.send
            .send_request(req)
            .await
            .expect("HEAD answered")
            .status()
    }

    /// Starts `POST /v2/record`; returns the status and the open upload.
    pub async fn post(&mut self) -> (StatusCode, Upload) {
        let (tx, body) = ChannelBody::new();
        let req = Request::post("http://recorder/v2/record")
            .body(body)
            .expect("request");
        let response = self.send.send_request(req).await.expect("POST answered");
        let status = response.status();
        (
            status,
            Upload {
                body: Some(tx),
                response: response.into_body(),
                pending: Vec::new(),
            },
        )
    }
}

/// Sends a whole recording over `/v2/record`, in chunks; returns the last ack and any error.
pub async fn send_v2(addr: SocketAddr, bytes: &[u8], chunk: usize) -> (u64, Option<String>) {
    let mut h2 = H2::connect(addr).await;
    assert_eq!(h2.head().await, StatusCode::OK);
    let (status, mut up) = h2.post().await;
    assert_eq!(status, StatusCode::OK);
    for part in bytes.chunks(chunk) {
        up.send(Bytes::copy_from_slice(part)).await;
    }
    up.finish();
    up.drain().await
}

/// A request body fed through a channel, like Go's `io.Pipe`.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// `key` without the random nonce the recorder adds to every key
/// (`…-<connection>-<16 hex digits>.cast` → `…-<connection>.cast`): the
/// name a test can know in advance.
pub fn without_nonce(key: &str) -> String {
    match key.strip_suffix(".cast").and_then(|k| k.rsplit_once('-')) {
        Some((stem, nonce))
            if nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("{stem}.cast")
        }
        _ => key.to_owned(),
    }
}

/// The real relative path of the recording stored below `root` whose
/// name without its nonce is `name`.
pub fn stored_key(root: &Path, name: &str) -> Option<String> {
    stored_by_key(root)
        .into_keys()
        .find(|k| without_nonce(k) == name)
}

/// All stored recordings below `root`, by relative path without the nonce
/// ([`without_nonce`]).
pub fn stored(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    stored_by_key(root)
        .into_iter()
        .map(|(k, v)| (without_nonce(&k), v))
        .collect()
}

/// All stored recordings below `root`, by relative path.
pub fn stored_by_key(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("below root")
                    .to_string_lossy()
                    .into_owned();
                // A temporary file may be renamed away between listing and reading.
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        out.insert(rel, bytes);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("reading {}: {e}", path.display()),
                }
            }
        }
    }
    out
}

/// Waits (up to `secs`) until `count` recordings are stored below `root`.
pub async fn wait_stored(
    root: &Path,
    count: usize,
    secs: u64,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let found = stored(root);
        let done: usize = found.keys().filter(|k| k.ends_with(".cast")).count();
        if done >= count {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} stored recordings within {secs} s, found {:?}",
            found.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to `secs`) for the recording stored below `root` whose name
/// without its nonce is `key`.
pub async fn wait_key(root: &Path, key: &str, secs: u64) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(bytes) = stored(root).remove(key) {
            return bytes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} not stored within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that a recording with exactly `bytes` waits in `spool` (storage is down).
pub fn assert_spooled(spool: &Path, bytes: &[u8]) {
    let spooled = stored(spool);
    assert!(
        spooled.values().any(|b| *b == bytes),
        "the recording waits in the spool during the outage; spool has {:?}",
        spooled.keys()
    );
}

/// Waits (up to `secs`) until `spool` holds nothing: every upload was confirmed.
pub async fn wait_spool_empty(spool: &Path, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !stored(spool).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool not emptied within {secs} s after the upload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stores a recording of `events` events under `key` in `storage`, then a
/// different one under the same key: the second put must fail with
/// `AlreadyStored` and the first recording stay byte for byte (storage is
/// create-only).
pub async fn assert_create_only<S: causeway_recorder::Storage>(
    storage: &S,
    key: &str,
    events: usize,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = recording("n", "first", events);
    let second = recording("n", "second", events);
    let file = dir.path().join("r.cast");
    std::fs::write(&file, &first).expect("write");
    storage
        .put(key, &file, first.len() as u64)
        .await
        .expect("first put");
    std::fs::write(&file, &second).expect("write");

    let e = storage
        .put(key, &file, second.len() as u64)
        .await
        .expect_err("a second put under the same key is refused");

    assert!(
        e.downcast_ref::<causeway_recorder::AlreadyStored>()
            .is_some(),
        "{key}: {e:#}"
    );
    let kept = storage
        .read(key, None)
        .await
        .expect("read")
        .expect("still there");
    assert!(
        kept == first,
        "{key}: the first recording is kept byte for byte"
    );
}
