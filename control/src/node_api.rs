//! The node-facing listener: `POST /causeway/v1/control` upgraded to a
//! Noise IK channel, then registration and the netmap stream.
//!
//! Everything here runs before control knows who is calling, so every
//! resource a caller can hold is bounded: connections in total and per
//! source, the HTTP request head (size and time), each message before the
//! map stream opens (time) and every message (size). docs/security.md says
//! what each limit guarantees.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use causeway_tailnet::{DeltaOutcome, MapSession, NodeRecord, RegisterError, SessionId};
use causeway_wire::liveness::{LivenessEvent, LivenessState, read_deadline};
use causeway_wire::noise::{Channel, ChannelError, MAX_CLIENT_MESSAGE, Opener, Responder, Sealer};
use causeway_wire::{
    CAPABILITY_VERSION, CONTROL_PATH, ClientMessage, ControlError, ErrorCode, HANDSHAKE_HEADER,
    KEEPALIVE_CAPABILITY_VERSION, Liveness, MIN_CAPABILITY_VERSION, MapRequest, NodeId, PublicKey,
    RegisterResponse, ServerHello, ServerMessage, UPGRADE_PROTOCOL,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use crate::server::{ApplyError, Control, stopped};

/// Largest HTTP request head control reads (hyper's smallest allowed read
/// buffer); the upgrade request needs under 1 KiB.
const MAX_REQUEST_HEAD: usize = 8192;
/// Pause after a failed accept (out of file descriptors), so the loop does
/// not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the node-facing API on `listener` until shutdown.
pub(crate) async fn serve(listener: TcpListener, control: Arc<Control>) {
    let limits = Arc::new(ConnectionLimits::new(
        control.config.max_connections,
        control.config.max_connections_per_source,
    ));
    let mut shutdown = control.shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        // Over a limit the connection is closed at once: a node retries
        // with backoff.
        let Some(slot) = ConnectionLimits::admit(&limits, peer.ip()) else {
            tracing::debug!(source = %peer.ip(), "control connection over the limit; closed");
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            Arc::new(slot),
            Arc::clone(&control),
        ));
    }
}

/// One HTTP connection up to the upgrade; the upgraded channel runs in a
/// task of its own and keeps the connection's slot.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    slot: Arc<ConnectionSlot>,
    control: Arc<Control>,
) {
    let timeout = control.config.handshake_timeout;
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let control = Arc::clone(&control);
            req.extensions_mut().insert(Arc::clone(&slot));
            async move { Ok::<_, Infallible>(route(control, req.map(Body::new))) }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout(timeout, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "control connection failed"),
        Err(_) => tracing::debug!("control connection timed out before the upgrade"),
    }
}

fn route(control: Arc<Control>, req: Request) -> Response {
    if req.uri().path() != CONTROL_PATH {
        return (
            StatusCode::NOT_FOUND,
            format!("only {CONTROL_PATH} is served here\n"),
        )
            .into_response();
    }
    if req.method() != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "use POST\n").into_response();
    }
    upgrade(control, req)
}

fn upgrade(control: Arc<Control>, mut req: Request) -> Response {
    let (hello, version, machine_key, channel, msg2) = match handshake(&control, req.headers()) {
        Ok(parts) => parts,
        Err(message) => {
            tracing::debug!(%message, "refused control upgrade");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let slot = req.extensions_mut().remove::<Arc<ConnectionSlot>>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let sessions = control.sessions.clone();
    tokio::spawn(async move {
        let _alive = sessions;
        let _slot = slot;
        let timeout = control.config.handshake_timeout;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "control upgrade failed");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        let Ok(len) = u16::try_from(msg2.len()) else {
            return;
        };
        let mut record = len.to_be_bytes().to_vec();
        record.extend_from_slice(&msg2);
        let sent = tokio::time::timeout(timeout, async {
            io.write_all(&record).await?;
            io.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        if matches!(hello, ServerHello::Refused { .. }) {
            let _ = io.shutdown().await;
            return;
        }
        let mut conn = Conn::new(io, channel);
        if let Err(e) = run_channel(&control, machine_key, version, &mut conn).await {
            tracing::debug!(machine = %machine_key.short(), error = %format!("{e:#}"), "control channel ended");
        }
        conn.close().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .header(header::CONNECTION, "upgrade")
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Open connections, in total and per source.
struct ConnectionLimits {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<OpenConnections>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    per_source: BTreeMap<IpAddr, usize>,
}

/// Holds one connection's place in [`ConnectionLimits`] until dropped.
struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    source: IpAddr,
}

impl ConnectionLimits {
    fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total,
            max_per_source,
            open: Mutex::new(OpenConnections::default()),
        }
    }

    /// A slot for a connection from `peer`, or `None` over either limit.
    fn admit(limits: &Arc<Self>, peer: IpAddr) -> Option<ConnectionSlot> {
        let source = source_of(peer);
        let mut open = limits.lock();
        if open.total >= limits.max_total {
            return None;
        }
        let count = open.per_source.entry(source).or_insert(0);
        if *count >= limits.max_per_source {
            return None;
        }
        *count += 1;
        open.total += 1;
        Some(ConnectionSlot {
            limits: Arc::clone(limits),
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        // The counts are updated in single statements; a panic elsewhere
        // cannot leave them half-changed.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_source.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_source.remove(&self.source);
            }
        }
    }
}

/// What one source is: an IPv4 address, or an IPv6 /64 (one host can hold
/// a whole /64, so counting addresses would not limit it).
fn source_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
    }
}

/// Checks the upgrade headers and runs the Noise responder; returns the
/// answer, the node's capability version and machine key, and the channel.
fn handshake(
    control: &Control,
    headers: &HeaderMap,
) -> Result<(ServerHello, u32, PublicKey, Channel, Vec<u8>), String> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case(UPGRADE_PROTOCOL) {
        return Err(format!("expected header Upgrade: {UPGRADE_PROTOCOL}\n"));
    }
    let Some(encoded) = headers.get(HANDSHAKE_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(format!("missing header {HANDSHAKE_HEADER}\n"));
    };
    let msg1 = STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("header {HANDSHAKE_HEADER} is not base64: {e}\n"))?;
    let (responder, machine_key, client_hello) = Responder::accept(&control.control_key, &msg1)
        .map_err(|e| match e {
            ChannelError::SmallOrderKey => {
                "handshake failed: the machine key is a small-order Curve25519 point\n".to_owned()
            }
            e => format!("handshake failed: did the node pin the right control key? ({e})\n"),
        })?;
    let hello = if client_hello.capability_version < MIN_CAPABILITY_VERSION {
        tracing::info!(
            machine = %machine_key.short(),
            version = client_hello.capability_version,
            "refusing node with old capability version"
        );
        ServerHello::Refused {
            reason: format!(
                "node capability version {} is below the minimum {MIN_CAPABILITY_VERSION}; upgrade the appliance",
                client_hello.capability_version
            ),
        }
    } else {
        ServerHello::Accepted {
            capability_version: CAPABILITY_VERSION,
        }
    };
    let (msg2, channel) = responder
        .reply(&hello)
        .map_err(|e| format!("handshake failed: {e}\n"))?;
    Ok((
        hello,
        client_hello.capability_version,
        machine_key,
        channel,
        msg2,
    ))
}

/// One established channel.
struct Conn<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    sealer: Sealer,
    opener: Opener,
    buf: Vec<u8>,
    /// Keepalive timer and read deadline; every read and write counts (a
    /// large message still arriving is life, not silence).
    liveness: LivenessState,
    /// How long one message may take to write; `None` waits as long as TCP
    /// does.
    write_timeout: Option<Duration>,
}

impl<S: AsyncRead + AsyncWrite> Conn<S> {
    fn new(io: S, channel: Channel) -> Self {
        let (reader, writer) = tokio::io::split(io);
        let (sealer, opener) = channel.split_with_limit(MAX_CLIENT_MESSAGE);
        Self {
            reader,
            writer,
            sealer,
            opener,
            buf: vec![0; 16 * 1024],
            liveness: LivenessState::new(Instant::now()),
            write_timeout: None,
        }
    }

    /// The next message, or `None` at end of stream. Cancel-safe: the only
    /// await is the read, and bytes are pushed right after it.
    async fn recv(&mut self) -> anyhow::Result<Option<ClientMessage>> {
        loop {
            if let Some(msg) = self.opener.next_message()? {
                return Ok(Some(msg));
            }
            let n = self.reader.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.liveness.handle_received(Instant::now());
            self.opener.push(&self.buf[..n]);
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.sealer.seal(msg, &mut out)?;
        let write = async {
            self.writer.write_all(&out).await?;
            self.writer.flush().await
        };
        match self.write_timeout {
            None => write.await?,
            Some(limit) => tokio::time::timeout(limit, write)
                .await
                .map_err(|_| anyhow::anyhow!("a write did not finish within {limit:?}"))??,
        }
        self.liveness.handle_sent(Instant::now());
        Ok(())
    }

    async fn send_error(&mut self, code: ErrorCode, message: String) -> anyhow::Result<()> {
        self.send(&ServerMessage::Error(ControlError { code, message }))
            .await
    }

    async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

async fn run_channel<S: AsyncRead + AsyncWrite>(
    control: &Arc<Control>,
    machine_key: PublicKey,
    version: u32,
    conn: &mut Conn<S>,
) -> anyhow::Result<()> {
    let deadline = control.config.handshake_timeout;
    loop {
        let Ok(received) = tokio::time::timeout(deadline, conn.recv()).await else {
            anyhow::bail!("no message within {}s", deadline.as_secs());
        };
        let Some(msg) = received? else {
            return Ok(());
        };
        if let Some(name) = small_order_key(&msg) {
            let message =
                format!("{name} is a small-order Curve25519 point; expected a real public key");
            conn.send_error(ErrorCode::BadRequest, message).await?;
            return Ok(());
        }
        match msg {
            ClientMessage::Register(req) => {
                let lifetime =
                    i64::try_from(control.config.node_key_expiry.as_secs()).unwrap_or(i64::MAX);
                let result = control.apply(
                    |state, now| {
                        state
                            .register(machine_key, &req, lifetime, now)
                            .map(|r| (r.node_id, r.changes))
                    },
                    None,
                );
                match result {
                    Ok(id) => {
                        let Some(node) = control.node(id) else {
                            conn.send_error(
                                ErrorCode::Internal,
                                "node vanished during registration".into(),
                            )
                            .await?;
                            return Ok(());
                        };
                        tracing::info!(node = %id, "node registered");
                        tracing::debug!(node = %id, hostname = %node.hostname, "registered host");
                        let response = RegisterResponse {
                            node_id: id,
                            addresses: node.addresses(),
                            key_expiry: node.key_expiry,
                            tags: node.tags.clone(),
                        };
                        conn.send(&ServerMessage::Registered(response)).await?;
                    }
                    Err(e) => {
                        let (code, message) = refusal(e);
                        tracing::info!(machine = %machine_key.short(), ?code, %message, "registration refused");
                        conn.send_error(code, message).await?;
                        return Ok(());
                    }
                }
            }
            ClientMessage::Map(req) => {
                return map_stream(control, machine_key, version, &req, conn).await;
            }
            // Before the map stream each message has the handshake timeout;
            // keepalives there would hold a connection open for nothing.
            ClientMessage::Update(_) | ClientMessage::KeepAlive => {
                conn.send_error(
                    ErrorCode::BadRequest,
                    "update or keepalive sent before a map request".into(),
                )
                .await?;
                return Ok(());
            }
        }
    }
}

/// Which key field, if any, is a small-order point (whose Diffie-Hellman
/// results are all zeros, so a WireGuard session with it proves nothing).
fn small_order_key(msg: &ClientMessage) -> Option<&'static str> {
    let (node_key, old_node_key) = match msg {
        ClientMessage::Register(req) => (&req.node_key, req.old_node_key.as_ref()),
        ClientMessage::Map(req) => (&req.node_key, None),
        ClientMessage::Update(_) | ClientMessage::KeepAlive => return None,
    };
    if node_key.is_small_order() {
        return Some("node_key");
    }
    if old_node_key.is_some_and(PublicKey::is_small_order) {
        return Some("old_node_key");
    }
    None
}

fn refusal(e: ApplyError<RegisterError>) -> (ErrorCode, String) {
    match e {
        ApplyError::Refused(e) => (e.code(), e.to_string()),
        ApplyError::Storage(_) => (
            ErrorCode::Internal,
            "control could not store the change; try again".into(),
        ),
    }
}

async fn map_stream<S: AsyncRead + AsyncWrite>(
    control: &Arc<Control>,
    machine_key: PublicKey,
    version: u32,
    req: &MapRequest,
    conn: &mut Conn<S>,
) -> anyhow::Result<()> {
    // Connect, subscribe and take the full map under one lock, so the
    // stream sees every later change and none twice.
    let opened = {
        let mut inner = control.lock();
        let connected = control.apply_locked(
            &mut inner,
            |state, now| {
                state
                    .connect(machine_key, req, now)
                    .map(|(id, session, changes)| ((id, session, now), changes))
            },
            None,
        );
        connected.map(|(id, session, now)| {
            let rx = control.subscribe(&inner);
            let mut map = MapSession::new(id);
            let mut full = map.full_map(&inner.state, now);
            full.stun_port = control.stun_port;
            let serves = inner.state.node(id).is_some_and(serves_routes);
            (id, session, rx, map, full, serves)
        })
    };
    let (id, session, mut rx, mut map, full, serves) = match opened {
        Ok(parts) => parts,
        Err(e) => {
            let (code, message) = refusal(e);
            conn.send_error(code, message).await?;
            return Ok(());
        }
    };
    tracing::info!(node = %id, "map stream open");
    let liveness = StreamLiveness::new(control, version, serves, conn);
    let result = stream_loop(
        control, id, session, &mut rx, &mut map, full, liveness, conn,
    )
    .await;
    let disconnected = control.apply(
        |state, now| Ok::<_, std::convert::Infallible>(((), state.disconnect(id, session, now))),
        None,
    );
    if let Err(ApplyError::Storage(e)) = disconnected {
        tracing::warn!(node = %id, error = %format!("{e:#}"), "recording disconnect failed");
    }
    tracing::info!(node = %id, "map stream closed");
    if control.node(id).is_some_and(|n| n.ephemeral) {
        control.schedule_ephemeral_removal(id, Some(session));
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn stream_loop<S: AsyncRead + AsyncWrite>(
    control: &Arc<Control>,
    id: NodeId,
    session: SessionId,
    rx: &mut tokio::sync::broadcast::Receiver<Arc<causeway_tailnet::PreparedChange>>,
    map: &mut MapSession,
    full: causeway_wire::MapResponse,
    mut liveness: StreamLiveness,
    conn: &mut Conn<S>,
) -> anyhow::Result<()> {
    let mut shutdown = control.shutdown.clone();
    if let Some(told) = liveness.pending.take() {
        conn.send(&told).await?;
    }
    conn.send(&ServerMessage::Map(full)).await?;
    loop {
        let wake = conn.liveness.poll_timeout();
        tokio::select! {
            msg = conn.recv() => {
                match msg? {
                    None => return Ok(()),
                    Some(ClientMessage::KeepAlive) => {}
                    Some(ClientMessage::Update(update)) => {
                        let applied = control.apply(
                            |state, now| Ok::<_, std::convert::Infallible>(((), state.update(id, session, &update, now))),
                            None,
                        );
                        if let Err(ApplyError::Storage(e)) = applied {
                            tracing::warn!(node = %id, error = %format!("{e:#}"), "storing update failed");
                        }
                    }
                    Some(ClientMessage::Register(_) | ClientMessage::Map(_)) => {
                        conn.send_error(ErrorCode::BadRequest, "only update and keepalive messages are allowed on an open map stream".into()).await?;
                        return Ok(());
                    }
                }
            }
            change = rx.recv() => {
                let (outcome, about_me) = match change {
                    Ok(change) => (map.delta(&change), change.nodes.contains_key(&id)),
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::debug!(node = %id, skipped, "stream lagged; sending a full map");
                        let inner = control.lock();
                        let now = crate::server::unix_now();
                        *rx = control.subscribe(&inner);
                        let mut full = map.full_map(&inner.state, now);
                        full.stun_port = control.stun_port;
                        (DeltaOutcome::Send(Box::new(full)), true)
                    }
                    Err(RecvError::Closed) => return Ok(()),
                };
                match outcome {
                    DeltaOutcome::Send(delta) => conn.send(&ServerMessage::Map(*delta)).await?,
                    DeltaOutcome::Nothing => {}
                    DeltaOutcome::SelfRemoved => {
                        conn.send_error(ErrorCode::NodeUnknown, "this node was deleted by an admin".into()).await?;
                        return Ok(());
                    }
                    DeltaOutcome::SelfExpired => {
                        conn.send_error(ErrorCode::NodeKeyExpired, "node key expired; register a new node key with old_node_key set".into()).await?;
                        return Ok(());
                    }
                }
                // Approved or advertised routes may have changed: a router
                // keeps alive at the router interval.
                if about_me {
                    let serves = control.lock().state.node(id).is_some_and(serves_routes);
                    liveness.retune(control, serves, conn);
                    if let Some(told) = liveness.pending.take() {
                        tracing::debug!(node = %id, ?told, "keepalive interval changed");
                        conn.send(&told).await?;
                    }
                }
            }
            () = sleep_until_some(wake) => {
                match conn.liveness.poll_event(Instant::now()) {
                    Some(LivenessEvent::PeerSilent { silent_for }) => {
                        tracing::info!(
                            node = %id,
                            silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX),
                            "node silent past its read deadline; closing its stream"
                        );
                        return Ok(());
                    }
                    Some(LivenessEvent::SendKeepAlive) => conn.send(&ServerMessage::KeepAlive).await?,
                    None => {}
                }
            }
            () = stopped(&mut shutdown) => return Ok(()),
        }
    }
}

/// Sleeps until `when`, or forever when there is nothing to wake for.
async fn sleep_until_some(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await,
        None => std::future::pending().await,
    }
}

/// The shortest time one message to a node may take to write: a full map
/// can be megabytes, so even a short keepalive interval leaves it this long.
const MIN_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which keepalive interval a map stream runs at, and whether the node must
/// be told.
struct StreamLiveness {
    /// Whether the node keeps the stream alive itself (capability version
    /// [`KEEPALIVE_CAPABILITY_VERSION`] or later).
    keeps_alive: bool,
    /// The interval the node was last told.
    told: Option<Duration>,
    /// A [`ServerMessage::Liveness`] to send.
    pending: Option<ServerMessage>,
}

impl StreamLiveness {
    /// Sets up `conn`'s keepalives for a node of capability `version`:
    /// control's keepalive at `keepalive_interval` and no read deadline for
    /// an old node (it sends nothing unasked), the node's interval both
    /// ways for a newer one.
    fn new<S>(control: &Control, version: u32, serves: bool, conn: &mut Conn<S>) -> Self {
        let keeps_alive = version >= KEEPALIVE_CAPABILITY_VERSION;
        let mut liveness = Self {
            keeps_alive,
            told: None,
            pending: None,
        };
        if keeps_alive {
            liveness.retune(control, serves, conn);
        } else {
            conn.liveness.set_intervals(
                Instant::now(),
                Some(control.config.keepalive_interval),
                None,
            );
        }
        liveness
    }

    /// Picks the interval for a node that does or does not serve approved
    /// routes; when it changed, arms `conn` and queues the message telling
    /// the node.
    fn retune<S>(&mut self, control: &Control, serves: bool, conn: &mut Conn<S>) {
        if !self.keeps_alive {
            return;
        }
        let config = &control.config;
        let wanted = if serves {
            config.router_keepalive_interval
        } else {
            config.keepalive_interval
        };
        let told = Liveness::new(wanted);
        let interval = told.interval();
        if self.told == Some(interval) {
            return;
        }
        self.told = Some(interval);
        conn.liveness
            .set_intervals(Instant::now(), Some(interval), Some(interval));
        conn.write_timeout = Some(read_deadline(interval).max(MIN_WRITE_TIMEOUT));
        self.pending = Some(ServerMessage::Liveness(told));
    }
}

/// Whether a node serves any approved route (an HA candidate).
fn serves_routes(node: &NodeRecord) -> bool {
    !node.advertised_routes.is_disjoint(&node.approved_routes)
}
