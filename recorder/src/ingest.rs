//! The ingest endpoint, following Tailscale SSH's session-recording
//! protocol: `HEAD /v2/record` answers 200 so the client knows HTTP/2 acks
//! are spoken; `POST /v2/record` streams the recording up while the response
//! streams `{"ack":N}` lines back; `POST /record` (HTTP/1.1 with
//! `Expect: 100-continue`) is the fallback without acks.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use causeway_recording::{
    AckFrame, CastHeader, EventError, FrameError, HeaderError, HeaderTimeout, IngestState,
    LineFramer, Stalled, validate_event,
};
use futures::FutureExt;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::channel_body::ChannelBody;
use crate::config::RecorderConfig;
use crate::identity::{Identity, WhoIs};
use crate::spool::{Spool, SpoolWriter, SpooledRecording};

/// Bytes of already-arrived frames gathered before one spool append and
/// fsync (hyper's default HTTP/2 stream window is 1 MiB).
const SYNC_BATCH_BYTES: usize = 1 << 20;

/// The response body type of every ingest route.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// Why a recording stream was ended; the text goes back to the sender.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The first line is not an acceptable header.
    #[error("bad recording header: {0}")]
    Header(#[from] HeaderError),
    /// An event line is malformed.
    #[error("bad recording event: {0}")]
    Event(#[from] EventError),
    /// A line is too long, or the stream ended inside one.
    #[error("bad recording stream: {0}")]
    Frame(#[from] FrameError),
    /// The header line did not arrive in time.
    #[error("bad recording header: {0}")]
    HeaderTimeout(#[from] HeaderTimeout),
    /// The sender went silent.
    #[error("recording stream stalled: {0}")]
    Stalled(#[from] Stalled),
    /// The request body failed (connection reset, protocol error).
    #[error("reading the recording stream failed: {0}")]
    Body(#[from] hyper::Error),
    /// The spool could not store the bytes; details are in the recorder's log.
    #[error("the recorder could not store the recording")]
    Spool(#[source] anyhow::Error),
    /// Storing more would leave the spool's filesystem below its floor.
    #[error(
        "the recorder's spool disk is nearly full: {free} bytes free, and storing {bytes} more would leave less than spool_min_free_bytes ({floor}); try another recorder"
    )]
    SpoolFull {
        /// Bytes free on the spool's filesystem.
        free: u64,
        /// Bytes about to be stored (0 when a recording starts).
        bytes: u64,
        /// The configured `spool_min_free_bytes`.
        floor: u64,
    },
}

impl SessionError {
    /// The HTTP/1.1 fallback's status for this error: the sender's fault,
    /// or the recorder's.
    fn status(&self) -> StatusCode {
        match self {
            Self::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::SpoolFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Live figures of a running recorder, for the appliance's metrics.
#[derive(Debug, Clone, Default)]
pub struct RecorderStats(Arc<StatsInner>);

#[derive(Debug, Default)]
struct StatsInner {
    receiving: AtomicUsize,
    started: AtomicU64,
    refused: AtomicU64,
}

impl RecorderStats {
    /// Recordings being received now.
    pub fn receiving(&self) -> usize {
        self.0.receiving.load(Ordering::Relaxed)
    }

    /// Recordings accepted since start.
    pub fn started(&self) -> u64 {
        self.0.started.load(Ordering::Relaxed)
    }

    /// Recordings refused since start (allow-list, `max_sessions_per_source`,
    /// `max_sessions`, spool full).
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self) {
        self.0.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Recordings being received per source address (`max_sessions_per_source`).
/// An address is in the map only while it has a recording.
#[derive(Debug, Default)]
struct PerSource(Mutex<BTreeMap<IpAddr, usize>>);

impl PerSource {
    /// Counts one more recording from `source`, unless it has `limit` already.
    fn try_take(self: &Arc<Self>, source: IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(source).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            source,
        })
    }
}

/// A recording's place among its source's `max_sessions_per_source`.
#[derive(Debug)]
struct SourceSlot {
    sources: Arc<PerSource>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self
            .sources
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// A recording's place among the `max_sessions` and its source's share;
/// counted while it lives.
#[derive(Debug)]
struct SessionSlot {
    _permit: OwnedSemaphorePermit,
    _source: SourceSlot,
    stats: RecorderStats,
}

impl SessionSlot {
    fn new(permit: OwnedSemaphorePermit, source: SourceSlot, stats: &RecorderStats) -> Self {
        stats.0.receiving.fetch_add(1, Ordering::Relaxed);
        stats.0.started.fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            _source: source,
            stats: stats.clone(),
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.stats.0.receiving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared state of the ingest routes.
#[derive(Debug)]
pub struct Ingest {
    config: Arc<RecorderConfig>,
    spool: Arc<Spool>,
    finished: mpsc::UnboundedSender<SpooledRecording>,
    /// One permit per recording being received (`max_sessions`).
    sessions: Arc<Semaphore>,
    /// Recordings being received per source (`max_sessions_per_source`).
    per_source: Arc<PerSource>,
    stats: RecorderStats,
    /// Names the node behind each source, when the recorder runs beside one.
    who_is: Option<Arc<dyn WhoIs>>,
}

impl Ingest {
    /// Routes that spool into `spool` and hand finished recordings to `finished`.
    pub fn new(
        config: Arc<RecorderConfig>,
        spool: Arc<Spool>,
        finished: mpsc::UnboundedSender<SpooledRecording>,
    ) -> Self {
        Self {
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            per_source: Arc::default(),
            config,
            spool,
            finished,
            stats: RecorderStats::default(),
            who_is: None,
        }
    }

    /// Files every recording under the node `who_is` names for its source
    /// (not the `srcNodeID` its header claims), and refuses sources that
    /// are not tailnet nodes. `None`: the header's claim names the key.
    pub fn identified_by(mut self, who_is: Option<Arc<dyn WhoIs>>) -> Self {
        self.who_is = who_is;
        self
    }

    /// Keeps `stats` up to date.
    pub fn observed(mut self, stats: RecorderStats) -> Self {
        self.stats = stats;
        self
    }

    /// Answers one request from `peer`.
    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        if !self.allowed(peer.ip()) {
            self.stats.refuse();
            tracing::debug!(%peer, "refused a recording from a source outside the allow-list");
            return Ok(text(
                StatusCode::FORBIDDEN,
                "source address is not allowed to send recordings\n",
            ));
        }
        let sender = match &self.who_is {
            None => None,
            Some(who_is) => match who_is.who_is(peer.ip().to_canonical()) {
                Some(node) => Some(node),
                None => {
                    self.stats.refuse();
                    tracing::debug!(%peer, "refused a recording from an address no tailnet node owns");
                    return Ok(text(
                        StatusCode::FORBIDDEN,
                        "source address is not a node of this tailnet: recordings are filed under the node control says sent them\n",
                    ));
                }
            },
        };
        let response = match (req.method(), req.uri().path()) {
            (&Method::HEAD, "/v2/record") => text(StatusCode::OK, ""),
            (&Method::POST, path @ ("/v2/record" | "/record")) => {
                let limit = self.config.max_sessions_per_source;
                let Some(source) = self.per_source.try_take(peer.ip().to_canonical(), limit) else {
                    self.stats.refuse();
                    tracing::warn!(
                        max_sessions_per_source = limit,
                        "refused a recording: its source is sending max_sessions_per_source"
                    );
                    tracing::debug!(%peer, "source at max_sessions_per_source");
                    return Ok(text(
                        StatusCode::TOO_MANY_REQUESTS,
                        &format!(
                            "this source address is already sending its maximum of {limit} recordings (max_sessions_per_source)\n"
                        ),
                    ));
                };
                let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
                    self.stats.refuse();
                    tracing::warn!(
                        max_sessions = self.config.max_sessions,
                        "refused a recording: max_sessions are being received"
                    );
                    return Ok(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "the recorder is receiving its maximum of {} recordings (max_sessions), try another recorder\n",
                            self.config.max_sessions
                        ),
                    ));
                };
                if let Err(full) = self.room_for(0).await {
                    self.stats.refuse();
                    tracing::warn!(error = %full, "refused a recording");
                    return Ok(text(full.status(), &format!("{full}\n")));
                }
                let permit = SessionSlot::new(permit, source, &self.stats);
                if path == "/v2/record" {
                    self.start_v2(peer, sender, req.into_body(), permit)
                } else {
                    self.record_v1(peer, sender, req.into_body(), permit).await
                }
            }
            (_, "/v2/record" | "/record") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        Ok(response)
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.config.allow.iter().any(|net| net.contains(&ip))
    }

    /// Streams acks back while a task reads the recording.
    fn start_v2(
        self: Arc<Self>,
        peer: SocketAddr,
        sender: Option<Identity>,
        body: Incoming,
        permit: SessionSlot,
    ) -> Response<ResponseBody> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let result = self.receive(peer, sender, body, Some(&tx)).await;
            drop(permit);
            if let Err(e) = result {
                let _ = tx
                    .send(Bytes::from(AckFrame::Error(e.to_string()).to_line()))
                    .await;
            }
        });
        // The `/v2/record` response: ack lines as the session task sends them.
        let mut response = Response::new(ChannelBody::new(rx).boxed());
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }

    /// Reads the whole recording, then answers.
    async fn record_v1(
        self: Arc<Self>,
        peer: SocketAddr,
        sender: Option<Identity>,
        body: Incoming,
        _permit: SessionSlot,
    ) -> Response<ResponseBody> {
        match self.receive(peer, sender, body, None).await {
            Ok(()) => text(StatusCode::OK, ""),
            Err(e) => text(e.status(), &format!("{e}\n")),
        }
    }

    /// Reads one recording into the spool; acked bytes reach storage even
    /// when the stream ends in an error.
    async fn receive(
        &self,
        peer: SocketAddr,
        sender: Option<Identity>,
        body: Incoming,
        acks: Option<&mpsc::Sender<Bytes>>,
    ) -> Result<(), SessionError> {
        let started = Instant::now().into_std();
        let mut session = Session {
            framer: LineFramer::new(self.config.max_line_bytes),
            state: IngestState::new(
                started,
                self.config.ack_interval(),
                self.config.stall_timeout(),
            )
            .with_header_timeout(started, self.config.header_timeout()),
            writer: None,
            sender,
        };
        let result = self.pump(&mut session, body, acks).await;
        match &result {
            Ok(()) => tracing::debug!(%peer, bytes = session.state.durable(), "recording finished"),
            Err(e) => {
                // Peer addresses stay at DEBUG; the key names the node.
                let key = session.writer.as_ref().map(|w| w.key().to_owned());
                tracing::info!(key, bytes = session.state.durable(), error = %e, "recording ended with an error");
                tracing::debug!(%peer, error = %e, "recording ended with an error");
            }
        }
        if let Some(writer) = session.writer.take() {
            self.close(writer).await;
        }
        result
    }

    async fn pump(
        &self,
        s: &mut Session,
        mut body: Incoming,
        acks: Option<&mpsc::Sender<Bytes>>,
    ) -> Result<(), SessionError> {
        let mut ended = false;
        while !ended {
            let deadline = Instant::from_std(s.state.poll_timeout());
            tokio::select! {
                frame = body.frame() => {
                    let Some(frame) = frame else { break };
                    s.take(frame?)?;
                    // Frames that have already arrived share one fsync: a
                    // fast sender's 16 KiB HTTP/2 frames would otherwise
                    // cost one each.
                    while s.framer.buffered() < SYNC_BATCH_BYTES {
                        match body.frame().now_or_never() {
                            Some(Some(frame)) => s.take(frame?)?,
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    self.store_complete_lines(s).await?;
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now().into_std();
                    s.state.check_header(now)?;
                    s.state.check_stall(now)?;
                }
            }
            if let (Some(tx), Some(ack)) = (acks, s.state.poll_ack(Instant::now().into_std())) {
                // A client that stopped reading acks will be cut off by h2 flow control anyway.
                let _ = tx.try_send(Bytes::from(ack.to_line()));
            }
        }
        s.framer.finish()?;
        if s.writer.is_none() {
            return Err(HeaderError::Json(
                "the stream was empty, expected a header line".to_owned(),
            )
            .into());
        }
        Ok(())
    }

    /// Validates the complete lines, stores the valid ones, then reports the first bad one.
    async fn store_complete_lines(&self, s: &mut Session) -> Result<(), SessionError> {
        let mut line_no = s.framer.lines_completed() - s.framer.lines().count() as u64;
        let mut valid = 0usize;
        let mut header = None;
        let mut failure = None;
        for line in s.framer.lines() {
            line_no += 1;
            let checked = if line_no == 1 {
                CastHeader::parse(line)
                    .map(|h| header = Some(h))
                    .map_err(SessionError::from)
            } else {
                validate_event(line, line_no).map_err(SessionError::from)
            };
            if let Err(e) = checked {
                failure = Some(e);
                break;
            }
            valid += line.len() + 1;
        }
        if let Some(mut header) = header {
            if let Some(sender) = &s.sender {
                if sender.node != header.src_node_id {
                    tracing::info!(
                        claimed = %header.src_node_id,
                        node = %sender,
                        "filing a recording under the node control names, not the srcNodeID its header claims"
                    );
                }
                // The key names the sender; the stored header is unchanged.
                header.src_node_id.clone_from(&sender.node);
            }
            let writer = self
                .spool
                .create(&header, self.config.key_prefix())
                .await
                .map_err(spool_error)?;
            tracing::debug!(node = %header.src_node_id, connection = %header.connection_id, "recording started");
            s.writer = Some(writer);
            s.state.handle_header();
        }
        if valid > 0
            && let Some(writer) = s.writer.as_mut()
        {
            self.room_for(valid as u64).await?;
            let durable = writer
                .append(&s.framer.complete()[..valid])
                .await
                .map_err(spool_error)?;
            s.state.handle_durable(durable);
        }
        s.framer.consume_complete();
        failure.map_or(Ok(()), Err)
    }

    /// Errs when storing `bytes` more would leave less than
    /// `spool_min_free_bytes` free. When free space cannot be read, the
    /// write goes ahead: a full disk still fails it, unacked.
    async fn room_for(&self, bytes: u64) -> Result<(), SessionError> {
        let floor = self.config.spool_min_free_bytes;
        if floor == 0 {
            return Ok(());
        }
        match self.spool.free_bytes().await {
            Ok(free) if free.saturating_sub(bytes) < floor => {
                Err(SessionError::SpoolFull { free, bytes, floor })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the spool's free space");
                Ok(())
            }
        }
    }

    /// Hands a recording to the uploader, or drops it if it holds nothing.
    async fn close(&self, writer: SpoolWriter) {
        if writer.is_empty() {
            if let Err(e) = self.spool.discard(writer).await {
                tracing::warn!(error = %format!("{e:#}"), "could not remove an empty spooled recording");
            }
            return;
        }
        if self.finished.send(writer.finish()).is_err() {
            tracing::debug!(
                "uploader stopped; the recording stays in the spool for the next start"
            );
        }
    }
}

struct Session {
    framer: LineFramer,
    state: IngestState,
    writer: Option<SpoolWriter>,
    /// The node that sends it, as control names it.
    sender: Option<Identity>,
}

impl Session {
    /// Takes in a received frame's data; trailers carry nothing here.
    fn take(&mut self, frame: Frame<Bytes>) -> Result<(), SessionError> {
        if let Ok(data) = frame.into_data() {
            self.state
                .handle_received(data.len() as u64, Instant::now().into_std());
            self.framer.push(&data)?;
        }
        Ok(())
    }
}

fn spool_error(e: anyhow::Error) -> SessionError {
    tracing::warn!(error = %format!("{e:#}"), "spooling a recording failed");
    SessionError::Spool(e)
}

fn text(status: StatusCode, body: &str) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *response.status_mut() = status;
    response
}
