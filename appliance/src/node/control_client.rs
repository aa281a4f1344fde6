//! The node's end of the control channel: an HTTP upgrade carrying the
//! first Noise message, then framed Noise records (see `causeway_wire`).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use causeway_wire::noise::{Initiator, Opener, Sealer};
use causeway_wire::{
    CAPABILITY_VERSION, CONTROL_PATH, ClientHello, ClientMessage, HANDSHAKE_HEADER, PrivateKey,
    PublicKey, ServerHello, ServerMessage, UPGRADE_PROTOCOL,
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
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &ClientMessage) -> anyhow::Result<()> {
        let mut out = Vec::new();
        self.sealer
            .seal(message, &mut out)
            .context("sealing a control message")?;
        self.writer
            .write_all(&out)
            .await
            .context("writing to control")?;
        self.writer.flush().await.context("writing to control")
    }

    /// Receives the next message; an error means the channel is gone.
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
