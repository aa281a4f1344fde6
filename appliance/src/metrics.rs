//! `[metrics]`: the appliance's Prometheus metrics, served as text on
//! `GET /metrics` (docs/reference/metrics.md lists every metric).
//!
//! Off unless the section is present, and only on a loopback or tailnet
//! address: the figures name peers and routes, which are not for the open
//! network. Every scrape takes a fresh snapshot of the node's status and the
//! data plane's counters (the same ones `appliance status` shows), so the
//! packet path keeps no metric state of its own.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use ipnet::IpNet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::watch;

use crate::node::NodeHandle;
use crate::node::status::{NodeStatus, PeerStatus, StatusState};

/// How long one request may take, from accept to the last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 8;

/// How often binding is retried while the address is not there yet (a
/// tailnet address appears once the node has joined).
const BIND_RETRY: Duration = Duration::from_secs(1);

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`: a loopback or tailnet address.
    pub listen: SocketAddr,
}

impl MetricsConfig {
    /// Refuses addresses outside loopback and the tailnet's ranges.
    pub fn validate(&self) -> anyhow::Result<()> {
        let ip = self.listen.ip().to_canonical();
        let tailnet_v4: IpNet = crate::node::TAILNET_V4
            .parse()
            .expect("TAILNET_V4 is a valid prefix");
        let ula: IpNet = "fc00::/7".parse().expect("a valid prefix");
        if ip.is_loopback() || tailnet_v4.contains(&ip) || ula.contains(&ip) {
            return Ok(());
        }
        bail!(
            "metrics.listen = {}: expected a loopback address (127.0.0.1) or this node's tailnet \
             address (in 100.64.0.0/10 or the tailnet's ULA range); metrics name peers and \
             routes and are not served on other networks",
            self.listen
        )
    }
}

/// Where a scrape reads its figures; roles fill it in as they start.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    node: Arc<OnceLock<NodeHandle>>,
    recorder: Arc<OnceLock<RecorderSource>>,
}

#[derive(Debug)]
struct RecorderSource {
    stats: causeway_recorder::RecorderStats,
    spool_dir: PathBuf,
}

impl Sources {
    /// The node role's status and data plane.
    pub fn set_node(&self, node: NodeHandle) {
        let _ = self.node.set(node);
    }

    /// The recorder role's counters and spool.
    pub fn set_recorder(&self, stats: causeway_recorder::RecorderStats, spool_dir: PathBuf) {
        let _ = self.recorder.set(RecorderSource { stats, spool_dir });
    }

    async fn snapshot(&self) -> Snapshot {
        let node = match self.node.get() {
            Some(node) => Some(node.snapshot().await),
            None => None,
        };
        let recorder = match self.recorder.get() {
            Some(r) => Some(RecorderFigures {
                receiving: r.stats.receiving() as u64,
                started: r.stats.started(),
                refused: r.stats.refused(),
                spool_bytes: causeway_recorder::spool::bytes_held(&r.spool_dir)
                    .await
                    .unwrap_or(0),
            }),
            None => None,
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Snapshot {
            node,
            recorder,
            unix_now,
        }
    }
}

/// Binds `listen` now, or returns `None` if the address does not exist
/// yet (a tailnet address appears once the node has joined; [`serve`] then
/// keeps trying). Any other failure is an error, reported at start.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Ok(None),
        Err(e) => bail!("binding the metrics listener {listen} (metrics.listen): {e}"),
    }
}

/// Serves `GET /metrics` on `listener` (or, if it is `None`, on `listen`
/// once that address exists) until `shutdown` fires.
pub async fn serve(
    listen: SocketAddr,
    listener: Option<tokio::net::TcpListener>,
    sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = match listener {
        Some(l) => l,
        None => loop {
            tokio::select! {
                () = tokio::time::sleep(BIND_RETRY) => {}
                _ = shutdown.changed() => return Ok(()),
            }
            if let Some(l) = bind(listen).await? {
                break l;
            }
            tracing::debug!(%listen, "metrics address not there yet");
        },
    };
    tracing::info!(%listen, "serving metrics");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a metrics connection failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        // Over the limit the connection is closed at once: a scraper retries.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let sources = sources.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| answer(sources.clone(), req));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
                Err(_) => tracing::debug!("metrics connection timed out"),
            }
        });
    }
}

async fn answer(
    sources: Sources,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    let reply = |status: hyper::StatusCode, content_type: &'static str, body: String| {
        let mut response =
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        response
    };
    Ok(match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => reply(
            hyper::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(sources.snapshot().await),
        ),
        (_, "/metrics") => reply(
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        ),
        _ => reply(
            hyper::StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics is served here\n".into(),
        ),
    })
}

/// One scrape's figures.
#[derive(Debug, Clone)]
struct Snapshot {
    node: Option<NodeStatus>,
    recorder: Option<RecorderFigures>,
    unix_now: u64,
}

#[derive(Debug, Clone, Copy)]
struct RecorderFigures {
    receiving: u64,
    started: u64,
    refused: u64,
    spool_bytes: u64,
}

/// The text exposition of a snapshot (OpenMetrics 1.0).
fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("causeway");
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

type Labels<'a> = Vec<(&'static str, String)>;

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.0;
        if let Some(node) = &s.node {
            encode_node(&mut encoder, node, s.unix_now)?;
        }
        if let Some(r) = &s.recorder {
            gauge(
                &mut encoder,
                "recorder_sessions",
                "Recordings being received now.",
                &[(vec![], r.receiving as i64)],
            )?;
            counter(
                &mut encoder,
                "recorder_sessions_started",
                "Recordings accepted since start.",
                &[(vec![], r.started)],
            )?;
            counter(
                &mut encoder,
                "recorder_sessions_refused",
                "Recordings refused since start (allow-list, max_sessions, max_sessions_per_source, spool full).",
                &[(vec![], r.refused)],
            )?;
            gauge(
                &mut encoder,
                "recorder_spool_bytes",
                "Bytes in the spool: recordings being received or waiting for upload.",
                &[(vec![], i64::try_from(r.spool_bytes).unwrap_or(i64::MAX))],
            )?;
        }
        Ok(())
    }
}

fn encode_node(
    encoder: &mut DescriptorEncoder,
    node: &NodeStatus,
    unix_now: u64,
) -> Result<(), fmt::Error> {
    let states = [
        StatusState::Starting,
        StatusState::Registering,
        StatusState::RotatingKey,
        StatusState::Running,
        StatusState::Reconnecting,
    ];
    let state_rows: Vec<(Labels, i64)> = states
        .iter()
        .map(|st| {
            (
                vec![("state", state_name(*st).to_owned())],
                i64::from(node.state == *st),
            )
        })
        .collect();
    gauge(
        encoder,
        "node_state",
        "1 for the node's current life-cycle state.",
        &state_rows,
    )?;
    gauge(
        encoder,
        "control_connected",
        "1 while the control channel is open.",
        &[(vec![], i64::from(node.control_connected))],
    )?;
    gauge(
        encoder,
        "netmap_seq",
        "Sequence number of the last netmap applied.",
        &[(vec![], i64::try_from(node.netmap_seq).unwrap_or(i64::MAX))],
    )?;
    gauge(
        encoder,
        "endpoints",
        "Endpoints the node advertises.",
        &[(vec![], node.endpoints.len() as i64)],
    )?;
    let routes: Vec<(Labels, i64)> = node
        .advertised_routes
        .iter()
        .map(|r| {
            (
                vec![("prefix", r.to_string())],
                i64::from(node.primary_routes.contains(r)),
            )
        })
        .collect();
    gauge(
        encoder,
        "route_primary",
        "For each advertised route: 1 if this node is its primary router.",
        &routes,
    )?;
    let health: Vec<(Labels, i64)> = node
        .route_health
        .iter()
        .map(|h| (vec![("prefix", h.prefix.to_string())], i64::from(h.healthy)))
        .collect();
    gauge(
        encoder,
        "route_healthy",
        "For each probed route: 1 if this router's health probes pass.",
        &health,
    )?;
    let drops: Vec<(Labels, u64)> = node
        .dropped_by_reason
        .iter()
        .map(|(reason, n)| (vec![("reason", reason.clone())], *n))
        .collect();
    counter(
        encoder,
        "packets_dropped",
        "Packets the data plane discarded, by reason.",
        &drops,
    )?;
    let filter_rules: Vec<(Labels, i64)> = node
        .filter_rules
        .map(|n| (vec![], i64::try_from(n).unwrap_or(i64::MAX)))
        .into_iter()
        .collect();
    gauge(
        encoder,
        "packet_filter_rules",
        "Rules in the packet filter from control (absent before the first netmap).",
        &filter_rules,
    )?;
    gauge(
        encoder,
        "peers",
        "Peers in the netmap.",
        &[(vec![], node.peers.len() as i64)],
    )?;
    let peer = |p: &crate::node::status::PeerStatus| {
        vec![("peer", p.name.clone()), ("node_id", p.id.to_string())]
    };
    let tx: Vec<(Labels, u64)> = node.peers.iter().map(|p| (peer(p), p.tx_bytes)).collect();
    counter(
        encoder,
        "peer_tx_bytes",
        "Payload bytes sent to a peer.",
        &tx,
    )?;
    let rx: Vec<(Labels, u64)> = node.peers.iter().map(|p| (peer(p), p.rx_bytes)).collect();
    counter(
        encoder,
        "peer_rx_bytes",
        "Payload bytes received from a peer.",
        &rx,
    )?;
    // Per peer, the Unix time `age` seconds before now, where known.
    let timestamps = |age: fn(&PeerStatus) -> Option<u64>| -> Vec<(Labels, i64)> {
        node.peers
            .iter()
            .filter_map(|p| {
                let at = unix_now.saturating_sub(age(p)?);
                Some((peer(p), i64::try_from(at).unwrap_or(i64::MAX)))
            })
            .collect()
    };
    let handshakes = timestamps(|p| p.last_handshake_seconds);
    gauge(
        encoder,
        "peer_last_handshake_timestamp_seconds",
        "Unix time of the last completed handshake with a peer (absent if none).",
        &handshakes,
    )?;
    let received = timestamps(|p| p.last_received_ms.map(|ms| ms / 1000));
    gauge(
        encoder,
        "peer_last_received_timestamp_seconds",
        "Unix time of the last authenticated packet from a peer (absent if none).",
        &received,
    )
}

fn state_name(state: StatusState) -> &'static str {
    match state {
        StatusState::Starting => "starting",
        StatusState::Registering => "registering",
        StatusState::RotatingKey => "rotating_key",
        StatusState::Running => "running",
        StatusState::Reconnecting => "reconnecting",
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), fmt::Error> {
    let probe = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), fmt::Error> {
    let probe = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn allowed(ip: IpAddr) -> bool {
        MetricsConfig {
            listen: SocketAddr::new(ip, 9100),
        }
        .validate()
        .is_ok()
    }
    use causeway_wire::{NodeId, PublicKey};

    fn node_status() -> NodeStatus {
        NodeStatus {
            state: StatusState::Running,
            node_id: Some(NodeId(1)),
            name: Some("router".into()),
            node_key: None,
            addresses: vec![],
            control_url: "http://198.18.0.2:8080".into(),
            control_connected: true,
            control_keepalive_ms: Some(1000),
            session: "running".into(),
            endpoints: vec!["198.18.0.3:41641".parse().expect("valid")],
            netmap_seq: 7,
            advertised_routes: vec![
                "198.19.1.0/24".parse().expect("valid"),
                "198.19.2.0/24".parse().expect("valid"),
            ],
            primary_routes: vec!["198.19.1.0/24".parse().expect("valid")],
            route_health: vec![causeway_wire::RouteHealth {
                prefix: "198.19.2.0/24".parse().expect("valid"),
                healthy: false,
                reason: "vpc1 has no carrier".into(),
            }],
            kernel_routes: vec![],
            filter_rules: Some(2),
            filter_refused: None,
            served_prefixes: vec![],
            dropped_packets: 3,
            dropped_by_reason: [("garbage".to_owned(), 2), ("filtered".to_owned(), 1)].into(),
            peers: vec![PeerStatus {
                id: NodeId(2),
                name: "client".into(),
                node_key: PublicKey::from_bytes([2; 32]),
                endpoint: None,
                last_handshake_seconds: Some(10),
                last_received_ms: Some(2500),
                tx_bytes: 1500,
                rx_bytes: 900,
                allowed_ips: vec![],
            }],
            exit_node: Default::default(),
            vpc_routes: std::collections::BTreeMap::new(),
            egress: None,
            os_dns: None,
            app_connector: None,
            via6: None,
        }
    }

    #[test]
    fn a_snapshot_renders_every_documented_metric_with_its_value() {
        let text = render(Snapshot {
            node: Some(node_status()),
            recorder: Some(RecorderFigures {
                receiving: 2,
                started: 5,
                refused: 1,
                spool_bytes: 4096,
            }),
            unix_now: 1_800_000_000,
        });
        for line in [
            "causeway_node_state{state=\"running\"} 1",
            "causeway_node_state{state=\"reconnecting\"} 0",
            "causeway_control_connected 1",
            "causeway_route_primary{prefix=\"198.19.1.0/24\"} 1",
            "causeway_route_primary{prefix=\"198.19.2.0/24\"} 0",
            "causeway_route_healthy{prefix=\"198.19.2.0/24\"} 0",
            "causeway_packets_dropped_total{reason=\"garbage\"} 2",
            "causeway_packets_dropped_total{reason=\"filtered\"} 1",
            "causeway_packet_filter_rules 2",
            "causeway_peer_tx_bytes_total{peer=\"client\",node_id=\"2\"} 1500",
            "causeway_peer_rx_bytes_total{peer=\"client\",node_id=\"2\"} 900",
            "causeway_peer_last_handshake_timestamp_seconds{peer=\"client\",node_id=\"2\"} 1799999990",
            "causeway_peer_last_received_timestamp_seconds{peer=\"client\",node_id=\"2\"} 1799999998",
            "causeway_recorder_sessions 2",
            "causeway_recorder_sessions_refused_total 1",
            "causeway_recorder_spool_bytes 4096",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn only_loopback_and_tailnet_addresses_may_serve_metrics() {
        for ok in ["127.0.0.1", "::1", "100.64.0.7", "fd7a:115c:a1e0::1"] {
            assert!(allowed(ok.parse().expect("valid")), "{ok}");
        }
        for refused in ["0.0.0.0", "198.18.0.3", "::", "10.0.0.1"] {
            assert!(!allowed(refused.parse().expect("valid")), "{refused}");
        }
        let err = MetricsConfig {
            listen: "0.0.0.0:9100".parse().expect("valid"),
        }
        .validate()
        .expect_err("refused");
        assert!(
            err.to_string().contains("metrics.listen = 0.0.0.0:9100"),
            "{err}"
        );
    }
}
