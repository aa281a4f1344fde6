//! The shell of the DNS forwarder (`causeway_dns`): UDP and TCP port 53 on
//! the node's tailnet addresses, each query forwarded to the resolvers in
//! the host's `resolv.conf` and the checked answer relayed. An exit node
//! runs it for the clients that route through it (see `exit_dns`); with
//! a MagicDNS table it is also the node's own resolver (see `resolver`),
//! answering tailnet names itself and sending split-DNS domains to their
//! resolvers.
//!
//! Everything that listens here is reachable by peers, so, in this order
//! and before any work: the sockets are bound to the TUN device (a query
//! arrives only through the data plane's packet filter), the source must
//! be one the filter lets reach port 53 ([`DnsAccess`]), the query must be
//! small and well formed ([`Query::parse`]), and the source must have room
//! under the in-flight limits ([`UDP_IN_FLIGHT`], [`TCP_CONNECTIONS`]).
//! Every wait has a deadline: [`UPSTREAM_DEADLINE`] per upstream,
//! [`TCP_READ_DEADLINE`] per TCP message.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::Context;
use causeway_dns::{
    AdmissionState, DNS_PORT, DnsAccess, MAX_QUERY_LEN, MagicDns, Query, Refused, Route,
    TCP_CONNECTIONS, TCP_QUERIES_PER_CONNECTION, TCP_READ_DEADLINE, Transport, UDP_IN_FLIGHT,
    UPSTREAM_DEADLINE, upstreams_from_resolv_conf,
};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::connector::{ConnectorHook, ROUTE_WAIT};

/// The largest datagram read from an upstream resolver. Queries ask for
/// at most `causeway_dns::MAX_UDP_PAYLOAD`; this leaves room for one that
/// ignores it (the answer is then truncated for the client).
const UPSTREAM_UDP_BUFFER: usize = 4096;
/// Pending TCP connections the kernel queues for us.
const TCP_BACKLOG: i32 = 64;

/// What the forwarder does with a query, besides relaying it.
pub enum Answering {
    /// Every query goes to the upstreams (an exit node's forwarder).
    Upstream,
    /// The node resolver: each query is first routed by this table
    /// (answered here, or sent to a split-DNS domain's resolvers). An
    /// answer from a resolver inside the tailnet (an app connector) is
    /// held, at most [`ROUTE_WAIT`], until this node routes every address
    /// in it (`routed`: its kernel routes into the tunnel), so that the
    /// first packet to an address the connector just learned finds its
    /// route.
    Names {
        names: watch::Receiver<Arc<MagicDns>>,
        routed: watch::Receiver<Vec<IpNet>>,
    },
    /// An app connector: queries outside its domains' zones are refused,
    /// and each answer is learned before it is relayed.
    Connector(Arc<ConnectorHook>),
}

/// A running forwarder; dropping it stops it and closes its sockets.
pub struct DnsForwarder {
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DnsForwarder {
    /// Listens on port 53 (UDP and TCP) of each of `addresses`, bound to
    /// the device `device` when given (the TUN device, so that only the
    /// data plane delivers queries), answering the sources `access`
    /// allows, with the resolvers named in `resolv_conf` (re-read when it
    /// changes), doing what `answering` says besides.
    pub fn start(
        addresses: &[IpAddr],
        device: Option<&str>,
        access: watch::Receiver<DnsAccess>,
        resolv_conf: PathBuf,
        answering: Answering,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            access,
            answering,
            udp: Mutex::new(AdmissionState::new(UDP_IN_FLIGHT)),
            tcp: Mutex::new(AdmissionState::new(TCP_CONNECTIONS)),
            upstreams: Upstreams {
                path: resolv_conf,
                own: addresses.to_vec(),
                cache: Mutex::new(None),
                instead: Mutex::new(None),
            },
        });
        let mut forwarder = Self {
            tasks: Vec::new(),
            shared: Arc::clone(&shared),
        };
        let mut failures = Vec::new();
        for &address in addresses {
            let local = SocketAddr::new(address, DNS_PORT);
            let sockets = udp_socket(local, device)
                .with_context(|| format!("listening for DNS on udp {local}"))
                .and_then(|udp| {
                    let tcp = tcp_listener(local, device)
                        .with_context(|| format!("listening for DNS on tcp {local}"))?;
                    Ok((udp, tcp))
                });
            match sockets {
                Ok((udp, tcp)) => {
                    forwarder
                        .tasks
                        .push(tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&shared))));
                    forwarder
                        .tasks
                        .push(tokio::spawn(serve_tcp(tcp, Arc::clone(&shared))));
                }
                // One family may be unusable (IPv6 off): serve the other.
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if forwarder.tasks.is_empty() {
            anyhow::bail!("no address to listen on: {}", failures.join("; "));
        }
        for failure in failures {
            tracing::warn!(error = %failure, "the DNS forwarder skips an address");
        }
        Ok(forwarder)
    }

    /// Sends what would go to the upstream resolvers to `server` instead
    /// (port 53), until called again with `None`.
    pub fn send_upstream_to(&self, server: Option<IpAddr>) {
        self.send_upstreams_to(server.map(|ip| vec![ip]));
    }

    /// Sends what would go to the upstream resolvers to `servers` instead
    /// (port 53, asked in turn), until called again with `None`.
    pub fn send_upstreams_to(&self, servers: Option<Vec<IpAddr>>) {
        let instead = servers.map(|list| {
            list.into_iter()
                .map(|ip| SocketAddr::new(ip, DNS_PORT))
                .collect::<Vec<_>>()
        });
        let mut slot = self
            .shared
            .upstreams
            .instead
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *slot != instead {
            tracing::info!(upstream = ?instead, "node resolver's upstream (none: the machine's resolvers)");
            *slot = instead;
        }
    }
}

struct Shared {
    access: watch::Receiver<DnsAccess>,
    answering: Answering,
    udp: Mutex<AdmissionState>,
    tcp: Mutex<AdmissionState>,
    upstreams: Upstreams,
}

impl Shared {
    fn allows(&self, source: IpAddr, transport: Transport) -> bool {
        self.access.borrow().allows(source, transport)
    }

    fn admission(&self, transport: Transport) -> &Mutex<AdmissionState> {
        match transport {
            Transport::Udp => &self.udp,
            Transport::Tcp => &self.tcp,
        }
    }
}

/// One admitted query (UDP) or connection (TCP); released on drop.
struct Permit {
    shared: Arc<Shared>,
    source: IpAddr,
    transport: Transport,
}

impl Permit {
    fn take(shared: &Arc<Shared>, source: IpAddr, transport: Transport) -> Result<Self, Refused> {
        shared
            .admission(transport)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(source)?;
        Ok(Self {
            shared: Arc::clone(shared),
            source,
            transport,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared
            .admission(self.transport)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.source);
    }
}

/// The upstream resolvers, re-read when `resolv.conf` changes (DHCP, a
/// cloud agent); a file that cannot be read keeps the last list.
struct Upstreams {
    path: PathBuf,
    own: Vec<IpAddr>,
    cache: Mutex<Option<(SystemTime, Vec<SocketAddr>)>>,
    /// Used instead of the file's resolvers when set (the exit node's
    /// forwarder).
    instead: Mutex<Option<Vec<SocketAddr>>>,
}

impl Upstreams {
    fn current(&self) -> Vec<SocketAddr> {
        if let Some(instead) = self
            .instead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return instead;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if let (Some(modified), Some((seen, list))) = (modified, cache.as_ref())
            && modified == *seen
        {
            return list.clone();
        }
        let read = std::fs::read(&self.path).map(|text| {
            let (list, errors) = upstreams_from_resolv_conf(&text, &self.own);
            for error in errors {
                tracing::warn!(file = %self.path.display(), %error, "skipping a line of resolv.conf");
            }
            list
        });
        match (read, modified) {
            (Ok(list), Some(modified)) => {
                tracing::info!(upstreams = ?list, "DNS forwarder's upstream resolvers");
                *cache = Some((modified, list.clone()));
                list
            }
            (Ok(list), None) => list,
            (Err(e), _) => {
                tracing::warn!(file = %self.path.display(), error = %e, "reading the upstream resolvers; keeping the last ones");
                cache
                    .as_ref()
                    .map(|(_, list)| list.clone())
                    .unwrap_or_default()
            }
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    // One byte over the limit, so that a longer query is seen as such.
    let mut buf = vec![0u8; MAX_QUERY_LEN + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "receiving a DNS query");
                continue;
            }
        };
        let source = from.ip();
        if !shared.allows(source, Transport::Udp) {
            tracing::trace!(%source, "DNS query from a source the filter does not let use this node");
            continue;
        }
        let bytes = &buf[..len];
        let query = match Query::parse(bytes, Transport::Udp) {
            Ok(query) => query,
            Err(bad) => {
                tracing::debug!(%source, error = %bad, "refusing a DNS query");
                if let Some(answer) = bad.answer(bytes) {
                    let _ = socket.send_to(&answer, from).await;
                }
                continue;
            }
        };
        let permit = match Permit::take(&shared, source, Transport::Udp) {
            Ok(permit) => permit,
            Err(e) => {
                tracing::debug!(%source, error = %e, "DNS query refused");
                let _ = socket.send_to(&query.refused(), from).await;
                continue;
            }
        };
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let answer = forward(&permit.shared, &query).await;
            if let Err(e) = socket.send_to(&answer, from).await {
                tracing::debug!(%source, error = %e, "sending a DNS answer");
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a DNS connection");
                continue;
            }
        };
        let source = from.ip();
        if !shared.allows(source, Transport::Tcp) {
            tracing::trace!(%source, "DNS connection from a source the filter does not let use this node");
            continue;
        }
        let permit = match Permit::take(&shared, source, Transport::Tcp) {
            Ok(permit) => permit,
            Err(e) => {
                tracing::debug!(%source, error = %e, "DNS connection refused");
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(stream, &permit).await {
                tracing::debug!(%source, error = %format!("{e:#}"), "DNS connection closed");
            }
            drop(permit);
        });
    }
}

/// Answers queries on one connection, one at a time (RFC 7766 allows a
/// server to), until the client closes it, stalls past the deadline, or
/// has sent [`TCP_QUERIES_PER_CONNECTION`].
async fn tcp_connection(mut stream: TcpStream, permit: &Permit) -> anyhow::Result<()> {
    for _ in 0..TCP_QUERIES_PER_CONNECTION {
        let Some(bytes) = timeout(TCP_READ_DEADLINE, read_query(&mut stream))
            .await
            .context("no whole query within the read deadline")??
        else {
            return Ok(());
        };
        // The filter may have changed since the connection opened.
        if !permit.shared.allows(permit.source, Transport::Tcp) {
            anyhow::bail!("the filter no longer lets this source use the node's DNS");
        }
        let answer = match Query::parse(&bytes, Transport::Tcp) {
            Ok(query) => forward(&permit.shared, &query).await,
            Err(bad) => {
                let answer = bad.answer(&bytes);
                let Some(answer) = answer else {
                    return Err(bad).context("refusing a DNS query");
                };
                answer
            }
        };
        timeout(TCP_READ_DEADLINE, write_message(&mut stream, &answer))
            .await
            .context("the client did not take the answer within the deadline")??;
    }
    Ok(())
}

/// Reads one length-prefixed query; `None` when the client closed the
/// connection between queries. A length over [`MAX_QUERY_LEN`] ends the
/// connection before anything is allocated for it.
async fn read_query(stream: &mut TcpStream) -> anyhow::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 2];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("reading a query's length"),
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    anyhow::ensure!(
        len <= MAX_QUERY_LEN,
        "a query of {len} bytes: expected at most {MAX_QUERY_LEN}"
    );
    let mut bytes = vec![0u8; len];
    stream
        .read_exact(&mut bytes)
        .await
        .context("reading a query")?;
    Ok(Some(bytes))
}

/// Writes one length-prefixed message (at most 65535 bytes, which every
/// DNS message is).
pub(crate) async fn write_message(
    stream: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
) -> anyhow::Result<()> {
    let len = u16::try_from(bytes.len()).context("a DNS message over 65535 bytes")?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.context("writing")?;
    Ok(())
}

/// The answer to `query`: from the MagicDNS table when it has one, else
/// from a split-DNS domain's resolvers, else from the upstreams; on an
/// app connector, learned from before it is relayed.
async fn forward(shared: &Shared, query: &Query) -> Vec<u8> {
    let route = match &shared.answering {
        Answering::Upstream => Route::Upstream,
        Answering::Names { names, .. } => names.borrow().route(query),
        Answering::Connector(hook) => {
            if !hook.answers(query) {
                tracing::trace!(question = %query.question(), "DNS query outside the connector's domains refused");
                return query.refused();
            }
            let answer = ask_in_turn(&shared.upstreams.current(), query).await;
            hook.learn(&answer).await;
            return answer;
        }
    };
    let upstreams = match route {
        Route::Answer(answer) => {
            tracing::trace!(question = %query.question(), "DNS answered from the netmap");
            return answer;
        }
        Route::Split { domain, resolvers } => {
            tracing::trace!(question = %query.question(), %domain, "DNS to a split domain's resolvers");
            let in_tailnet = resolvers.iter().all(|ip| in_tailnet(*ip));
            let upstreams: Vec<SocketAddr> = resolvers
                .into_iter()
                .map(|ip| SocketAddr::new(ip, DNS_PORT))
                .collect();
            let answer = ask_in_turn(&upstreams, query).await;
            if in_tailnet && let Answering::Names { routed, .. } = &shared.answering {
                until_routed(routed.clone(), &answer).await;
            }
            return answer;
        }
        Route::Upstream => shared.upstreams.current(),
    };
    ask_in_turn(&upstreams, query).await
}

/// Whether `ip` is a tailnet address (a peer's, e.g. an app connector's).
fn in_tailnet(ip: IpAddr) -> bool {
    let tailnet: ipnet::IpNet = super::TAILNET_V4
        .parse()
        .expect("TAILNET_V4 is a valid prefix");
    tailnet.contains(&ip)
}

/// Waits, at most [`ROUTE_WAIT`], until `routed` covers every address in
/// `answer`.
async fn until_routed(mut routed: watch::Receiver<Vec<IpNet>>, answer: &[u8]) {
    let addresses = causeway_dns::answer_addresses(answer);
    if addresses.is_empty() {
        return;
    }
    let covered = |routes: &Vec<IpNet>| {
        addresses
            .iter()
            .all(|ip| routes.iter().any(|r| r.contains(ip)))
    };
    if timeout(ROUTE_WAIT, routed.wait_for(covered)).await.is_err() {
        tracing::debug!(
            ?addresses,
            "answering before this node routes the addresses"
        );
    }
}

/// Asks each upstream in turn, over the transport the query came by,
/// until one answers within [`UPSTREAM_DEADLINE`]; SERVFAIL if none does.
async fn ask_in_turn(upstreams: &[SocketAddr], query: &Query) -> Vec<u8> {
    for &upstream in upstreams {
        let attempt = async {
            match query.transport() {
                Transport::Udp => ask_over_udp(upstream, query).await,
                Transport::Tcp => ask_over_tcp(upstream, query).await,
            }
        };
        match timeout(UPSTREAM_DEADLINE, attempt).await {
            Ok(Ok(answer)) => {
                tracing::trace!(%upstream, question = %query.question(), "DNS answer relayed");
                return answer;
            }
            Ok(Err(e)) => {
                tracing::debug!(%upstream, error = %format!("{e:#}"), "upstream resolver failed");
            }
            Err(_) => tracing::debug!(%upstream, "upstream resolver did not answer in time"),
        }
    }
    query.server_failure()
}

/// One query over a fresh socket (a new random source port per query,
/// RFC 5452), connected so that only the upstream's datagrams arrive;
/// datagrams that do not answer this query are ignored until the deadline.
async fn ask_over_udp(upstream: SocketAddr, query: &Query) -> anyhow::Result<Vec<u8>> {
    let socket = UdpSocket::bind(unspecified(upstream))
        .await
        .context("binding")?;
    super::mark_socket(&socket);
    socket.connect(upstream).await.context("connecting")?;
    socket.send(query.wire()).await.context("sending")?;
    let mut buf = vec![0u8; UPSTREAM_UDP_BUFFER];
    loop {
        let len = socket.recv(&mut buf).await.context("receiving")?;
        match query.check_answer(&buf[..len]) {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                tracing::debug!(%upstream, error = %e, "ignoring a datagram from the upstream")
            }
        }
    }
}

async fn ask_over_tcp(upstream: SocketAddr, query: &Query) -> anyhow::Result<Vec<u8>> {
    let socket = match upstream {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("creating a socket")?;
    super::mark_socket(&socket);
    let mut stream = socket.connect(upstream).await.context("connecting")?;
    write_message(&mut stream, query.wire()).await?;
    let answer = read_answer(&mut stream).await?;
    query.check_answer(&answer).context("checking the answer")
}

/// Reads one length-prefixed answer (any length up to 65535 bytes).
pub(crate) async fn read_answer(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> anyhow::Result<Vec<u8>> {
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .await
        .context("reading the answer's length")?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream
        .read_exact(&mut answer)
        .await
        .context("reading the answer")?;
    Ok(answer)
}

fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// A socket for `local`, bound to `device` if given, that may bind the
/// address before the kernel has it ready (IPv6 duplicate detection).
fn bound_socket(
    local: SocketAddr,
    device: Option<&str>,
    kind: socket2::Type,
) -> anyhow::Result<socket2::Socket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = socket2::Socket::new(socket2::Domain::for_address(local), kind, None)
        .context("creating a socket")?;
    if local.is_ipv6() {
        socket.set_only_v6(true).context("IPV6_V6ONLY")?;
    }
    if let Some(device) = device {
        setsockopt(&socket, sockopt::BindToDevice, &OsString::from(device))
            .with_context(|| format!("binding to device {device}"))?;
    }
    if let Err(e) = setsockopt(&socket, sockopt::IpFreebind, &true) {
        tracing::debug!(error = %e, "IP_FREEBIND");
    }
    socket.set_reuse_address(true).context("SO_REUSEADDR")?;
    socket.set_nonblocking(true).context("O_NONBLOCK")?;
    socket.bind(&local.into()).context("binding")?;
    Ok(socket)
}

fn udp_socket(local: SocketAddr, device: Option<&str>) -> anyhow::Result<UdpSocket> {
    let socket = bound_socket(local, device, socket2::Type::DGRAM)?;
    UdpSocket::from_std(socket.into()).context("registering with tokio")
}

fn tcp_listener(local: SocketAddr, device: Option<&str>) -> anyhow::Result<TcpListener> {
    let socket = bound_socket(local, device, socket2::Type::STREAM)?;
    socket.listen(TCP_BACKLOG).context("listening")?;
    TcpListener::from_std(socket.into()).context("registering with tokio")
}
