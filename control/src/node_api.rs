//! The node-facing listener: `POST /causeway/v1/control` upgraded to a
//! Noise IK channel, then registration and the netmap stream.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use causeway_tailnet::{DeltaOutcome, MapSession, RegisterError, SessionId};
use causeway_wire::noise::{Channel, Opener, Responder, Sealer};
use causeway_wire::{
    CAPABILITY_VERSION, CONTROL_PATH, ClientMessage, ControlError, ErrorCode, HANDSHAKE_HEADER,
    MIN_CAPABILITY_VERSION, MapRequest, NodeId, PublicKey, RegisterResponse, ServerHello,
    ServerMessage, UPGRADE_PROTOCOL,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::broadcast::error::RecvError;

use crate::server::{ApplyError, Control};

/// The node-facing router.
pub(crate) fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route(CONTROL_PATH, post(upgrade))
        .with_state(control)
}

async fn upgrade(State(control): State<Arc<Control>>, mut req: Request) -> Response {
    let (hello, machine_key, channel, msg2) = match handshake(&control, req.headers()) {
        Ok(parts) => parts,
        Err(message) => {
            tracing::debug!(%message, "refused control upgrade");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let sessions = control.sessions.clone();
    tokio::spawn(async move {
        let _alive = sessions;
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
        if io.write_all(&record).await.is_err() || io.flush().await.is_err() {
            return;
        }
        if matches!(hello, ServerHello::Refused { .. }) {
            let _ = io.shutdown().await;
            return;
        }
        let mut conn = Conn::new(io, channel);
        if let Err(e) = run_channel(&control, machine_key, &mut conn).await {
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

/// Checks the upgrade headers and runs the Noise responder.
fn handshake(
    control: &Control,
    headers: &HeaderMap,
) -> Result<(ServerHello, PublicKey, Channel, Vec<u8>), String> {
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
        .map_err(|e| {
            format!("handshake failed: did the node pin the right control key? ({e})\n")
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
    Ok((hello, machine_key, channel, msg2))
}

/// One established channel.
struct Conn<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    sealer: Sealer,
    opener: Opener,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite> Conn<S> {
    fn new(io: S, channel: Channel) -> Self {
        let (reader, writer) = tokio::io::split(io);
        let (sealer, opener) = channel.split();
        Self {
            reader,
            writer,
            sealer,
            opener,
            buf: vec![0; 16 * 1024],
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
            self.opener.push(&self.buf[..n]);
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.sealer.seal(msg, &mut out)?;
        self.writer.write_all(&out).await?;
        self.writer.flush().await?;
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
    conn: &mut Conn<S>,
) -> anyhow::Result<()> {
    loop {
        let Some(msg) = conn.recv().await? else {
            return Ok(());
        };
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
            ClientMessage::Map(req) => return map_stream(control, machine_key, &req, conn).await,
            ClientMessage::Update(_) => {
                conn.send_error(
                    ErrorCode::BadRequest,
                    "update sent before a map request".into(),
                )
                .await?;
                return Ok(());
            }
        }
    }
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
            (id, session, rx, map, full)
        })
    };
    let (id, session, mut rx, mut map, full) = match opened {
        Ok(parts) => parts,
        Err(e) => {
            let (code, message) = refusal(e);
            conn.send_error(code, message).await?;
            return Ok(());
        }
    };
    tracing::info!(node = %id, "map stream open");
    let result = stream_loop(control, id, session, &mut rx, &mut map, full, conn).await;
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

async fn stream_loop<S: AsyncRead + AsyncWrite>(
    control: &Arc<Control>,
    id: NodeId,
    session: SessionId,
    rx: &mut tokio::sync::broadcast::Receiver<Arc<causeway_tailnet::PreparedChange>>,
    map: &mut MapSession,
    full: causeway_wire::MapResponse,
    conn: &mut Conn<S>,
) -> anyhow::Result<()> {
    let keepalive: Duration = control.config.keepalive_interval;
    let mut shutdown = control.shutdown.clone();
    conn.send(&ServerMessage::Map(full)).await?;
    let mut idle_until = tokio::time::Instant::now() + keepalive;
    loop {
        tokio::select! {
            msg = conn.recv() => {
                match msg? {
                    None => return Ok(()),
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
                        conn.send_error(ErrorCode::BadRequest, "only update messages are allowed on an open map stream".into()).await?;
                        return Ok(());
                    }
                }
            }
            change = rx.recv() => {
                let outcome = match change {
                    Ok(change) => map.delta(&change),
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::debug!(node = %id, skipped, "stream lagged; sending a full map");
                        let inner = control.lock();
                        let now = crate::server::unix_now();
                        *rx = control.subscribe(&inner);
                        let mut full = map.full_map(&inner.state, now);
                        full.stun_port = control.stun_port;
                        DeltaOutcome::Send(Box::new(full))
                    }
                    Err(RecvError::Closed) => return Ok(()),
                };
                match outcome {
                    DeltaOutcome::Send(delta) => {
                        conn.send(&ServerMessage::Map(*delta)).await?;
                        idle_until = tokio::time::Instant::now() + keepalive;
                    }
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
            }
            () = tokio::time::sleep_until(idle_until) => {
                conn.send(&ServerMessage::KeepAlive).await?;
                idle_until = tokio::time::Instant::now() + keepalive;
            }
            () = crate::server::stopped(&mut shutdown) => return Ok(()),
        }
    }
}
