//! The node's end of the control channel: an HTTP upgrade carrying the
//! first Noise message, then framed Noise records (see `causeway_wire`).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use causeway_wire::liveness::{LivenessEvent, LivenessState};
use causeway_wire::noise::{Initiator, Opener, Sealer};
use causeway_wire::{
    CAPABILITY_VERSION, CONTROL_PATH, ClientHello, ClientMessage, HANDSHAKE_HEADER, Liveness,
    PrivateKey, PublicKey, ServerHello, ServerMessage, UPGRADE_PROTOCOL,
};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the channel could not be opened, split by what the node should do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Control is unreachable or failed; retry with backoff.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// Control refused us for good (version too old, wrong pinned key, a
    /// 4xx answer other than 408 and 429).
    #[error("{0}")]
    Refused(String),
}

/// An open channel.
pub struct ControlChannel {
    sealer: Sealer,
    opener: Opener,
    reader: ReadHalf<TokioIo<Upgraded>>,
    writer: WriteHalf<TokioIo<Upgraded>>,
    buf: Vec<u8>,
    /// Keepalives and the read deadline, once control announced an
    /// interval (before that: none, as with a control of capability 1).
    liveness: LivenessState,
}

impl ControlChannel {
    /// Connects to control at `url`, authenticating with `machine_key` and
    /// requiring control to hold the private half of `control_key`.
    pub async fn connect(
        url: &str,
        control_key: &PublicKey,
        machine_key: &PrivateKey,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::connect_inner(url, control_key, machine_key),
        )
        .await
        .map_err(|_| ConnectError::Transient(anyhow!("connecting to control at {url} timed out")))?
    }

    async fn connect_inner(
        url: &str,
        control_key: &PublicKey,
        machine_key: &PrivateKey,
    ) -> Result<Self, ConnectError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| ConnectError::Refused(format!("control_url {url:?}: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(ConnectError::Refused(format!(
                "control_url {url:?}: only http:// is supported here (terminate TLS at a load balancer)"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| {
                ConnectError::Refused(format!("control_url {url:?}: expected http://HOST:PORT"))
            })?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let transient = |e: anyhow::Error| ConnectError::Transient(e);

        let tcp = connect_marked(authority.host(), port)
            .await
            .with_context(|| format!("connecting to control at {authority}"))
            .map_err(transient)?;
        tcp.set_nodelay(true).ok();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("starting HTTP with control")
            .map_err(transient)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "control HTTP connection ended");
            }
        });

        let hello = ClientHello {
            capability_version: CAPABILITY_VERSION,
        };
        let (initiator, first) = Initiator::start(machine_key, control_key, &hello)
            .map_err(|e| ConnectError::Refused(format!("starting Noise handshake: {e}")))?;
        let request = hyper::Request::post(CONTROL_PATH)
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, UPGRADE_PROTOCOL)
            .header(HANDSHAKE_HEADER, STANDARD.encode(&first))
            .body(Empty::<Bytes>::new())
            .map_err(|e| ConnectError::Refused(format!("building upgrade request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .context("sending upgrade request to control")
            .map_err(transient)?;
        let status = response.status();
        if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            let message = format!("control answered {status} to the channel upgrade: {text}");
            // A load balancer's 408 and 429 say "later", not "never".
            let later = matches!(
                status,
                hyper::StatusCode::REQUEST_TIMEOUT | hyper::StatusCode::TOO_MANY_REQUESTS
            );
            return Err(if status.is_client_error() && !later {
                ConnectError::Refused(message)
            } else {
                ConnectError::Transient(anyhow!(message))
            });
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .context("upgrading the control connection")
            .map_err(transient)?;
        let (mut reader, writer) = tokio::io::split(TokioIo::new(upgraded));

        let mut len = [0u8; 2];
        reader
            .read_exact(&mut len)
            .await
            .context("reading control's handshake")
            .map_err(transient)?;
        let mut second = vec![0u8; usize::from(u16::from_be_bytes(len))];
        reader
            .read_exact(&mut second)
            .await
            .context("reading control's handshake")
            .map_err(transient)?;
        let (server_hello, channel) = initiator.finish(&second).map_err(|e| {
            ConnectError::Refused(format!(
                "control's handshake did not verify (is control_public_key right?): {e}"
            ))
        })?;
        if let ServerHello::Refused { reason } = server_hello {
            return Err(ConnectError::Refused(format!(
                "control refused this node: {reason}"
            )));
        }
        let (sealer, opener) = channel.split();
        Ok(Self {
            sealer,
            opener,
            reader,
            writer,
            buf: vec![0u8; 64 * 1024],
            liveness: LivenessState::new(Instant::now()),
        })
    }

    /// Adopts the keepalive interval control announced: keep alive at it,
    /// and give up on control after its read deadline.
    pub fn set_liveness(&mut self, liveness: Liveness) {
        let interval = liveness.interval();
        self.liveness
            .set_intervals(Instant::now(), Some(interval), Some(interval));
    }

    /// The keepalive interval in force, once control announced one.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        self.liveness.send_every()
    }

    /// When [`ControlChannel::poll_liveness`] may next have something.
    pub fn liveness_timeout(&self) -> Option<Instant> {
        self.liveness.poll_timeout()
    }

    /// Sends a keepalive if one is due; an error when control has been
    /// silent past the read deadline (the channel is dead) or the write
    /// failed.
    pub async fn poll_liveness(&mut self) -> anyhow::Result<()> {
        match self.liveness.poll_event(Instant::now()) {
            None => Ok(()),
            Some(LivenessEvent::SendKeepAlive) => self.send(&ClientMessage::KeepAlive).await,
            Some(LivenessEvent::PeerSilent { silent_for }) => bail!(
                "control sent nothing for {} ms (read deadline {} ms)",
                silent_for.as_millis(),
                self.liveness
                    .deadline_span()
                    .unwrap_or_default()
                    .as_millis()
            ),
        }
    }

    /// Sends one message. Once an interval is known, a write that takes
    /// longer than the read deadline fails (control is not taking data).
    pub async fn send(&mut self, message: &ClientMessage) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.sealer
            .seal(message, &mut out)
            .context("sealing a control message")?;
        let write = async {
            self.writer.write_all(&out).await?;
            self.writer.flush().await
        };
        match self.liveness.deadline_span() {
            None => write.await.context("writing to control")?,
            Some(limit) => tokio::time::timeout(limit, write)
                .await
                .map_err(|_| anyhow!("writing to control: no progress within {limit:?}"))?
                .context("writing to control")?,
        }
        self.liveness.handle_sent(Instant::now());
        Ok(())
    }

    /// Receives the next message; an error means the channel is gone.
    /// Cancel-safe: bytes read are kept for the next call.
    pub async fn recv(&mut self) -> anyhow::Result<ServerMessage> {
        loop {
            if let Some(message) = self.opener.next_message().context("reading from control")? {
                return Ok(message);
            }
            let n = self
                .reader
                .read(&mut self.buf)
                .await
                .context("reading from control")?;
            if n == 0 {
                bail!("control closed the channel");
            }
            self.liveness.handle_received(Instant::now());
            self.opener.push(&self.buf[..n]);
        }
    }
}

/// Connects to control with the socket marked [`causeway_netconf::BYPASS_MARK`],
/// so the control channel keeps the host's own routes while all other
/// traffic goes through an exit node. Tries each resolved address in turn.
async fn connect_marked(host: &str, port: u16) -> anyhow::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = None;
    for address in tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
    {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .context("creating a TCP socket")?;
        super::mark_socket(&socket);
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                last = Some(anyhow::Error::new(e).context(format!("connecting to {address}")))
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("{host} has no address")))
}

#[cfg(test)]
mod tests {
    //! The node's end against a real control in process, through a TCP
    //! proxy the test can freeze: bytes stop moving both ways while every
    //! connection stays open, as with a frozen control or a partition.

    use std::net::SocketAddr;
    use std::path::Path;

    use causeway_control::{ControlConfig, Listeners, serve_on};
    use causeway_wire::liveness::read_deadline;
    use causeway_wire::{MapRequest, RegisterRequest};
    use http_body_util::Full;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::sync::{oneshot, watch};

    use super::super::sleep_until_some;
    use super::*;

    /// Slack on top of a read deadline for a busy test machine; far below
    /// the minutes TCP takes to give up.
    const SLACK: Duration = Duration::from_millis(1500);

    struct TestControl {
        node: SocketAddr,
        admin: SocketAddr,
        key: PublicKey,
        token: String,
        _stop: oneshot::Sender<()>,
    }

    async fn start_control(dir: &Path, interval: Duration) -> TestControl {
        let init = causeway_control::init(dir).expect("control init");
        let token = std::fs::read_to_string(&init.admin_token_file)
            .expect("admin token")
            .trim()
            .to_owned();
        let node = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut config = ControlConfig::new(dir);
        config.listen = node.local_addr().expect("addr");
        config.admin_listen = admin.local_addr().expect("addr");
        config.keepalive_interval = interval;
        config.router_keepalive_interval = interval;
        let (stop, stopped) = oneshot::channel::<()>();
        let control = TestControl {
            node: config.listen,
            admin: config.admin_listen,
            key: init.public_key,
            token,
            _stop: stop,
        };
        tokio::spawn(serve_on(
            config,
            Listeners {
                node,
                admin,
                stun: None,
            },
            async move {
                let _ = stopped.await;
            },
        ));
        control
    }

    /// One admin API call over a fresh HTTP/1 connection.
    async fn admin(control: &TestControl, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut last = None;
        for _ in 0..100 {
            match TcpStream::connect(control.admin).await {
                Ok(tcp) => {
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .expect("HTTP handshake");
                    tokio::spawn(connection);
                    let request = hyper::Request::builder()
                        .method(method)
                        .uri(path)
                        .header(hyper::header::HOST, "control")
                        .header(
                            hyper::header::AUTHORIZATION,
                            format!("Bearer {}", control.token),
                        )
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(
                            body.map(|b| b.to_string()).unwrap_or_default(),
                        )))
                        .expect("request");
                    let response = sender.send_request(request).await.expect("admin answers");
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes();
                    assert!(status.is_success(), "{method} {path}: {status} {bytes:?}");
                    return serde_json::from_slice(&bytes).expect("JSON");
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("admin API never answered: {last:?}");
    }

    async fn online(control: &TestControl, hostname: &str) -> bool {
        let nodes = admin(control, "GET", "/api/v1/nodes", None).await;
        nodes
            .as_array()
            .expect("array")
            .iter()
            .find(|n| n["hostname"] == json!(hostname) || n["name"] == json!(hostname))
            .unwrap_or_else(|| panic!("{hostname} not listed: {nodes}"))["online"]
            .as_bool()
            .expect("online is a bool")
    }

    /// A proxy to `target`; sending `true` on the returned sender stops all
    /// traffic through it, with every connection left open.
    async fn freezable_proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let (freeze, frozen) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, frozen.clone()));
                tokio::spawn(pipe(server_read, client_write, frozen.clone()));
            }
        });
        (address, freeze)
    }

    async fn pipe(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        mut frozen: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                () = async { let _ = frozen.wait_for(|f| *f).await; } => std::future::pending().await,
            };
            let is_frozen = *frozen.borrow();
            if is_frozen {
                // Hold the bytes and both sockets forever.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Registers and opens the map stream; returns the channel after the
    /// full map, with control's keepalive interval adopted.
    async fn open_map(
        url: &str,
        control: &TestControl,
        machine: &PrivateKey,
        node_key: &PrivateKey,
        auth_key: Option<String>,
    ) -> ControlChannel {
        let mut channel = ControlChannel::connect(url, &control.key, machine)
            .await
            .expect("channel opens");
        if auth_key.is_some() {
            channel
                .send(&ClientMessage::Register(RegisterRequest {
                    node_key: node_key.public_key(),
                    old_node_key: None,
                    auth_key,
                    hostname: "quiet".into(),
                }))
                .await
                .expect("register sent");
            let answer = channel.recv().await.expect("answer");
            assert!(matches!(answer, ServerMessage::Registered(_)), "{answer:?}");
        }
        channel
            .send(&ClientMessage::Map(MapRequest {
                node_key: node_key.public_key(),
                hostname: "quiet".into(),
                endpoints: vec![],
                advertised_routes: vec![],
                health: None,
                priority: None,
                app_connector: None,
            }))
            .await
            .expect("map request sent");
        match channel.recv().await.expect("liveness") {
            ServerMessage::Liveness(liveness) => channel.set_liveness(liveness),
            other => panic!("expected the keepalive interval first, got {other:?}"),
        }
        match channel.recv().await.expect("full map") {
            ServerMessage::Map(map) => assert!(map.is_full()),
            other => panic!("expected the full map, got {other:?}"),
        }
        channel
    }

    /// Runs the channel as `follow_control` does (answering keepalive
    /// timers) until `until`, or until the read deadline fails it.
    async fn follow(
        channel: &mut ControlChannel,
        until: tokio::time::Instant,
    ) -> anyhow::Result<u32> {
        let mut keepalives = 0;
        loop {
            let wake = channel.liveness_timeout();
            tokio::select! {
                message = channel.recv() => match message? {
                    ServerMessage::KeepAlive => keepalives += 1,
                    ServerMessage::Map(_) => {}
                    other => panic!("unexpected message {other:?}"),
                },
                () = sleep_until_some(wake) => channel.poll_liveness().await?,
                () = tokio::time::sleep_until(until) => return Ok(keepalives),
            }
        }
    }

    #[tokio::test]
    async fn a_silent_control_is_given_up_after_the_read_deadline_and_the_node_reconnects() {
        let interval = Duration::from_millis(300);
        let deadline = read_deadline(interval);
        let dir = tempfile::tempdir().expect("tempdir");
        let control = start_control(dir.path(), interval).await;
        let key = admin(
            &control,
            "POST",
            "/api/v1/keys",
            Some(json!({"reusable": true})),
        )
        .await["key"]
            .as_str()
            .expect("key")
            .to_owned();
        let (proxy, freeze) = freezable_proxy(control.node).await;
        let machine = PrivateKey::from_random_bytes(rand::random());
        let node_key = PrivateKey::from_random_bytes(rand::random());
        let url = format!("http://{proxy}");
        let mut channel = open_map(&url, &control, &machine, &node_key, Some(key)).await;
        assert_eq!(channel.keepalive_interval(), Some(interval));

        // Live: keepalives flow both ways over several deadlines.
        let keepalives = follow(&mut channel, tokio::time::Instant::now() + 4 * deadline)
            .await
            .expect("a live control is not given up");
        assert!(keepalives >= 3, "{keepalives} keepalives from control");
        assert!(online(&control, "quiet").await);

        // Frozen: nothing moves either way; nothing is closed.
        freeze.send(true).expect("proxy listens");
        let frozen_at = tokio::time::Instant::now();
        let error = follow(&mut channel, frozen_at + 10 * deadline)
            .await
            .expect_err("the node gives up on a silent control");
        let took = frozen_at.elapsed();
        eprintln!("node gave up on control after {took:?} (deadline {deadline:?}): {error:#}");
        assert!(
            format!("{error:#}").contains("control sent nothing for"),
            "{error:#}"
        );
        assert!(took <= deadline + SLACK, "{took:?}");
        // Control held the node to the same deadline.
        let offline_by = tokio::time::Instant::now() + deadline + SLACK;
        while online(&control, "quiet").await {
            assert!(
                tokio::time::Instant::now() < offline_by,
                "control kept the silent node online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Reconnecting (here on a path that works) gets a fresh stream.
        drop(channel);
        let mut again = open_map(
            &format!("http://{}", control.node),
            &control,
            &machine,
            &node_key,
            None,
        )
        .await;
        follow(&mut again, tokio::time::Instant::now() + deadline)
            .await
            .expect("the new stream lives");
        assert!(online(&control, "quiet").await);
    }
}
