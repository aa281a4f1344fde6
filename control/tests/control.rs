//! Control end to end, in process: `serve_on` on 127.0.0.1 ephemeral ports
//! with a temporary state directory, nodes speaking the real Noise channel
//! over a hand-made HTTP upgrade, and the admin API over HTTP.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use causeway_control::{ControlConfig, Listeners, serve_on};
use causeway_tailnet::apply_delta;
use causeway_wire::liveness::read_deadline;
use causeway_wire::noise::{Initiator, Opener, Sealer};
use causeway_wire::{
    CAPABILITY_VERSION, ClientHello, ClientMessage, ControlError, ErrorCode,
    KEEPALIVE_CAPABILITY_VERSION, Liveness, MapRequest, MapResponse, Node, NodeId, NodeUpdate,
    PrivateKey, PublicKey, RegisterRequest, RegisterResponse, ServerHello, ServerMessage,
};
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(10);

// --- harness --------------------------------------------------------------

struct Control {
    state_dir: PathBuf,
    node_addr: SocketAddr,
    admin_addr: SocketAddr,
    public_key: PublicKey,
    token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http: reqwest::Client,
}

async fn start(state_dir: &Path, tweak: impl FnOnce(&mut ControlConfig)) -> Control {
    let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (node_addr, admin_addr) = (node.local_addr().unwrap(), admin.local_addr().unwrap());
    let mut config = ControlConfig::new(state_dir);
    config.listen = node_addr;
    config.admin_listen = admin_addr;
    tweak(&mut config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(
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
    // serve_on initialises the state dir before it accepts; wait for health.
    let http = reqwest::Client::new();
    let health = format!("http://{admin_addr}/healthz");
    for _ in 0..100 {
        if http
            .get(&health)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let public_key = std::fs::read_to_string(state_dir.join("control.pub"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let token = std::fs::read_to_string(state_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    Control {
        state_dir: state_dir.to_owned(),
        node_addr,
        admin_addr,
        public_key,
        token,
        stop: Some(stop),
        task: Some(task),
        http,
    }
}

impl Control {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, self.task.take().unwrap())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_raw(method, path, body.map(|b| b.to_string()), Some(&self.token))
            .await
    }

    async fn admin_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("http://{}{path}", self.admin_addr);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `PUT /api/v1/policy` with `text` (huJSON).
    async fn put_policy(&self, text: &str) -> (u16, Value) {
        self.admin_raw(
            "PUT",
            "/api/v1/policy",
            Some(text.to_owned()),
            Some(&self.token),
        )
        .await
    }

    async fn create_key(&self, body: Value) -> String {
        let (status, v) = self.admin("POST", "/api/v1/keys", Some(body)).await;
        assert_eq!(status, 200, "{v}");
        v["key"].as_str().unwrap().to_owned()
    }

    async fn node_count(&self) -> usize {
        self.admin("GET", "/api/v1/nodes", None)
            .await
            .1
            .as_array()
            .unwrap()
            .len()
    }
}

/// A node speaking the control protocol. Once its map stream is open, a
/// node of capability version 2 or later keeps it alive from a task of its
/// own (every [`TEST_KEEPALIVE`]) until [`TestNode::go_silent`] or drop.
struct TestNode {
    reader: OwnedReadHalf,
    writer: Arc<tokio::sync::Mutex<(OwnedWriteHalf, Sealer)>>,
    opener: Opener,
    version: u32,
    keepalive: Option<JoinHandle<()>>,
    /// The last keepalive interval control sent.
    liveness: Option<Liveness>,
    node_key: PublicKey,
    hostname: String,
    /// The netmap as built from everything received.
    map: MapResponse,
}

/// Result of the HTTP upgrade when it did not produce a channel.
#[derive(Debug)]
enum Dial {
    Http(u16, String),
    Refused(String),
}

async fn dial(
    control: &Control,
    pinned: &PublicKey,
    machine: &PrivateKey,
    version: u32,
) -> Result<TestNode, Dial> {
    let hello = ClientHello {
        capability_version: version,
    };
    let (initiator, msg1) = Initiator::start(machine, pinned, &hello).unwrap();
    let mut stream = TcpStream::connect(control.node_addr).await.unwrap();
    let request = format!(
        "POST /causeway/v1/control HTTP/1.1\r\nHost: control\r\nUpgrade: causeway-noise\r\nConnection: upgrade\r\ncauseway-handshake: {}\r\nContent-Length: 0\r\n\r\n",
        STANDARD.encode(&msg1)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed during HTTP response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut rest = buf[head_end..].to_vec();
    if status != 101 {
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while rest.len() < len {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        return Err(Dial::Http(
            status,
            String::from_utf8_lossy(&rest).to_string(),
        ));
    }
    while rest.len() < 2 || rest.len() < 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]])) {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before msg2");
        rest.extend_from_slice(&chunk[..n]);
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let (server_hello, channel) = initiator.finish(&rest[2..2 + len]).unwrap();
    let (sealer, mut opener) = channel.split();
    opener.push(&rest[2 + len..]);
    if let ServerHello::Refused { reason } = server_hello {
        return Err(Dial::Refused(reason));
    }
    let (reader, writer) = stream.into_split();
    Ok(TestNode {
        reader,
        writer: Arc::new(tokio::sync::Mutex::new((writer, sealer))),
        opener,
        version,
        keepalive: None,
        liveness: None,
        node_key: PrivateKey::from_random_bytes(rand_bytes()).public_key(),
        hostname: String::new(),
        map: MapResponse::default(),
    })
}

async fn send_sealed(
    writer: &tokio::sync::Mutex<(OwnedWriteHalf, Sealer)>,
    msg: &ClientMessage,
) -> std::io::Result<()> {
    let mut writer = writer.lock().await;
    let (stream, sealer) = &mut *writer;
    let mut out = Vec::new();
    sealer.seal(msg, &mut out).unwrap();
    stream.write_all(&out).await
}

fn rand_bytes() -> [u8; 32] {
    rand::random()
}

async fn connect(control: &Control) -> TestNode {
    connect_as(control, &PrivateKey::from_random_bytes(rand_bytes())).await
}

async fn connect_as(control: &Control, machine: &PrivateKey) -> TestNode {
    dial(control, &control.public_key, machine, CAPABILITY_VERSION)
        .await
        .unwrap()
}

/// How often a test node keeps its map stream alive: shorter than any
/// interval control may ask for, so the tests need not follow changes.
const TEST_KEEPALIVE: Duration = Duration::from_millis(50);

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
    }
}

impl TestNode {
    async fn send(&mut self, msg: &ClientMessage) {
        send_sealed(&self.writer, msg).await.unwrap();
    }

    /// Starts keeping the map stream alive, if this node's version does.
    fn keep_alive(&mut self) {
        if self.version < KEEPALIVE_CAPABILITY_VERSION || self.keepalive.is_some() {
            return;
        }
        let writer = Arc::clone(&self.writer);
        self.keepalive = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(TEST_KEEPALIVE);
            loop {
                tick.tick().await;
                if send_sealed(&writer, &ClientMessage::KeepAlive)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }

    /// Stops sending anything (keepalives included) while keeping the TCP
    /// connection open, as a frozen or partitioned node would.
    async fn go_silent(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// The next message, or None when the stream ended. Records keepalive
    /// intervals control announces.
    async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            let msg = self.recv_any().await?;
            match msg {
                ServerMessage::Liveness(l) => self.liveness = Some(l),
                other => return Some(other),
            }
        }
    }

    async fn recv_any(&mut self) -> Option<ServerMessage> {
        loop {
            if let Some(msg) = self.opener.next_message().unwrap() {
                return Some(msg);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(TIMEOUT, self.reader.read(&mut chunk))
                .await
                .expect("timed out waiting for control")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.opener.push(&chunk[..n]);
        }
    }

    async fn register(
        &mut self,
        hostname: &str,
        auth_key: Option<&str>,
    ) -> Result<RegisterResponse, ControlError> {
        self.hostname = hostname.to_owned();
        let req = RegisterRequest {
            node_key: self.node_key,
            old_node_key: None,
            auth_key: auth_key.map(str::to_owned),
            hostname: hostname.to_owned(),
        };
        self.send(&ClientMessage::Register(req)).await;
        match self.recv().await {
            Some(ServerMessage::Registered(r)) => Ok(r),
            Some(ServerMessage::Error(e)) => Err(e),
            other => panic!("unexpected answer to register: {other:?}"),
        }
    }

    /// Opens the map stream and returns the full map.
    async fn map(
        &mut self,
        endpoints: &[&str],
        routes: &[&str],
    ) -> Result<MapResponse, ControlError> {
        let req = MapRequest {
            node_key: self.node_key,
            hostname: self.hostname.clone(),
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            advertised_routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            health: None,
            priority: None,
            app_connector: None,
        };
        self.send(&ClientMessage::Map(req)).await;
        match self.recv().await {
            Some(ServerMessage::Map(m)) => {
                assert!(m.is_full(), "first map must be full");
                assert_eq!(
                    self.liveness.is_some(),
                    self.version >= KEEPALIVE_CAPABILITY_VERSION,
                    "control announces the keepalive interval before the first map to new nodes only"
                );
                self.map = m.clone();
                self.keep_alive();
                Ok(m)
            }
            Some(ServerMessage::Error(e)) => Err(e),
            other => panic!("unexpected answer to map: {other:?}"),
        }
    }

    /// Waits for the next map message (skipping keepalives) and applies it.
    async fn next_delta(&mut self) -> MapResponse {
        loop {
            match self.recv().await {
                Some(ServerMessage::Map(m)) => {
                    apply_delta(&mut self.map, &m);
                    return m;
                }
                Some(ServerMessage::KeepAlive) => {}
                other => panic!("expected a map message, got {other:?}"),
            }
        }
    }

    /// Applies deltas until `pred` holds for the held map.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&MapResponse) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !pred(&self.map) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; map: {:#?}",
                self.map
            );
            self.next_delta().await;
        }
    }

    fn peer(&self, id: NodeId) -> Option<&Node> {
        self.map
            .peers
            .as_ref()
            .and_then(|p| p.iter().find(|n| n.id == id))
    }
}

async fn join(
    control: &Control,
    key: &str,
    hostname: &str,
    endpoints: &[&str],
    routes: &[&str],
) -> (TestNode, NodeId) {
    let mut node = connect(control).await;
    let reg = node.register(hostname, Some(key)).await.unwrap();
    node.map(endpoints, routes).await.unwrap();
    (node, reg.node_id)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A policy that lets everyone reach everything and auto-approves
/// 198.19.1.0/24 for `tag:router`.
const AUTO_APPROVE_VPC: &str = r#"{
    "autoApprovers": {"routes": {"198.19.1.0/24": ["tag:router"]}},
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}"#;

/// A client and two routers `r1` and `r2` (tagged `tag:router`, endpoints
/// 198.18.0.3-5) advertising 198.19.1.0/24, joined in that order. The
/// caller sets a policy that auto-approves the route first.
struct RouterPair {
    client: TestNode,
    client_id: NodeId,
    r1: TestNode,
    r1_id: NodeId,
    r2: TestNode,
    r2_id: NodeId,
}

async fn join_router_pair(control: &Control) -> RouterPair {
    let routers = control
        .create_key(json!({"reusable": true, "tags": ["tag:router"]}))
        .await;
    let plain = control.create_key(json!({"reusable": true})).await;
    let (client, client_id) = join(control, &plain, "client", &["198.18.0.3:1"], &[]).await;
    let vpc = &["198.19.1.0/24"];
    let (r1, r1_id) = join(control, &routers, "r1", &["198.18.0.4:1"], vpc).await;
    let (r2, r2_id) = join(control, &routers, "r2", &["198.18.0.5:1"], vpc).await;
    RouterPair {
        client,
        client_id,
        r1,
        r1_id,
        r2,
        r2_id,
    }
}

// --- tests ----------------------------------------------------------------

#[tokio::test]
async fn register_map_delta_and_endpoint_patch() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |c| {
        c.keepalive_interval = Duration::from_millis(300)
    })
    .await;
    let key = control.create_key(json!({"reusable": true})).await;

    let mut a = connect(&control).await;
    let reg = a.register("laptop", Some(&key)).await.unwrap();
    assert_eq!(reg.addresses[0], net("100.64.0.1/32"));
    assert!(reg.addresses[1].addr().to_string().starts_with("fd"));
    let full = a.map(&["198.18.0.3:41641"], &[]).await.unwrap();
    assert_eq!(full.peers, Some(vec![]));
    assert_eq!(full.node.as_ref().unwrap().name, "laptop");
    let dns = full.dns.unwrap();
    assert_eq!(dns.domain, "tailnet.causeway.internal");
    assert!(dns.records.contains_key("laptop.tailnet.causeway.internal"));

    // Idle stream: keepalives flow.
    assert_eq!(a.recv().await, Some(ServerMessage::KeepAlive));

    let (mut b, b_id) = join(&control, &key, "server", &["198.18.0.4:41641"], &[]).await;
    let b_full = b.map.clone();
    assert_eq!(b_full.peers.as_ref().unwrap().len(), 1);
    // Registration and the map request each produce a delta.
    let delta = a.next_delta().await;
    assert!(!delta.is_full());
    assert_eq!(delta.peers_changed.len(), 1);
    assert_eq!(delta.peers_changed[0].id, b_id);
    assert!(
        delta
            .dns
            .unwrap()
            .records
            .contains_key("server.tailnet.causeway.internal")
    );
    a.wait_for("server online with endpoints", |m| {
        m.peers.as_ref().unwrap().iter().any(|p| {
            p.id == b_id && p.online && p.endpoints == vec!["198.18.0.4:41641".parse().unwrap()]
        })
    })
    .await;

    let moved: SocketAddr = "198.18.0.99:5555".parse().unwrap();
    b.send(&ClientMessage::Update(NodeUpdate {
        endpoints: Some(vec![moved]),
        advertised_routes: None,
        health: None,
        priority: None,
        app_connector: None,
    }))
    .await;
    let patch = a.next_delta().await;
    assert!(patch.peers_changed.is_empty(), "{patch:?}");
    assert_eq!(patch.endpoint_patches.len(), 1);
    assert_eq!(patch.endpoint_patches[0].id, b_id);
    assert_eq!(patch.endpoint_patches[0].endpoints, vec![moved]);
    control.shutdown().await;
}

#[tokio::test]
async fn bad_auth_keys_are_refused_and_register_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let single = control.create_key(json!({})).await;
    let expired = control.create_key(json!({"expiry_seconds": 0})).await;
    let revoked = control.create_key(json!({"reusable": true})).await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    let (status, _) = control
        .admin("DELETE", &format!("/api/v1/keys/{revoked_id}"), None)
        .await;
    assert_eq!(status, 200);

    let mut first = connect(&control).await;
    first.register("first", Some(&single)).await.unwrap();
    assert_eq!(control.node_count().await, 1);

    let cases = [
        ("cwk_garbage", "not known"),
        (
            "cwk_000000000000_000000000000000000000000000000000000000000000000",
            "not known",
        ),
        (expired.as_str(), "expired"),
        (revoked.as_str(), "revoked"),
        (single.as_str(), "already used"),
    ];
    for (key, needle) in cases {
        let mut node = connect(&control).await;
        let err = node.register("intruder", Some(key)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::AuthKeyRefused, "{key}");
        assert!(err.message.contains(needle), "{key}: {}", err.message);
        assert_eq!(node.recv().await, None, "channel closes after an error");
    }
    let mut no_key = connect(&control).await;
    let err = no_key.register("intruder", None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthKeyRefused);
    assert!(err.message.contains("no auth key"), "{}", err.message);
    assert_eq!(control.node_count().await, 1);
    control.shutdown().await;
}

#[tokio::test]
async fn old_capability_version_and_wrong_pinned_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let machine = PrivateKey::from_random_bytes(rand_bytes());
    match dial(&control, &control.public_key, &machine, 0).await {
        Err(Dial::Refused(reason)) => assert_eq!(
            reason,
            format!(
                "node capability version 0 is below the minimum {}; upgrade the appliance",
                causeway_wire::MIN_CAPABILITY_VERSION
            )
        ),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    let wrong = PrivateKey::from_random_bytes(rand_bytes()).public_key();
    match dial(&control, &wrong, &machine, CAPABILITY_VERSION).await {
        Err(Dial::Http(400, body)) => {
            assert!(
                body.contains("handshake failed: did the node pin the right control key?"),
                "{body}"
            );
        }
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
    control.shutdown().await;
}

#[tokio::test]
async fn routes_appear_only_after_approval() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (mut client, _) = join(&control, &key, "client", &["198.18.0.3:41641"], &[]).await;
    let (_router, router_id) = join(
        &control,
        &key,
        "router",
        &["198.18.0.4:41641"],
        &["198.19.1.0/24"],
    )
    .await;
    client
        .wait_for("router as peer", |m| m.peers.as_ref().unwrap().len() == 1)
        .await;
    let route = net("198.19.1.0/24");
    assert!(!client.peer(router_id).unwrap().allowed_ips.contains(&route));

    let (status, routes) = control.admin("GET", "/api/v1/routes", None).await;
    assert_eq!(status, 200);
    assert_eq!(routes[0]["advertised"], json!(["198.19.1.0/24"]));
    assert_eq!(routes[0]["approved"], json!([]));

    let (status, v) = control
        .admin(
            "POST",
            "/api/v1/routes/approve",
            Some(json!({"node": "router", "prefix": "198.19.1.0/24"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["primary"], json!(["198.19.1.0/24"]));
    client
        .wait_for("approved route", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.allowed_ips.contains(&route) && p.primary_routes == vec![route])
        })
        .await;

    let (status, _) = control
        .admin(
            "POST",
            "/api/v1/routes/unapprove",
            Some(json!({"node": router_id.0.to_string(), "prefix": "198.19.1.0/24"})),
        )
        .await;
    assert_eq!(status, 200);
    client
        .wait_for("route withdrawn", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .all(|p| p.primary_routes.is_empty())
        })
        .await;
    control.shutdown().await;
}

#[tokio::test]
async fn auto_approvers_and_failover_between_two_routers() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let policy = r#"{
        // routers may carry the VPC
        "autoApprovers": {"routes": {"198.19.1.0/24": ["tag:router"],},},
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    }"#;
    let (status, v) = control.put_policy(policy).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = control
        .put_policy(r#"{"autoApprovers": {"routes": {"10.0.0.1/8": []}}}"#)
        .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("10.0.0.1/8"), "{v}");
    let (_, text) = control.admin("GET", "/api/v1/policy", None).await;
    assert_eq!(
        text.as_str().unwrap(),
        policy,
        "invalid policy must not replace the old one"
    );

    let route = net("198.19.1.0/24");
    let RouterPair {
        mut client,
        r1,
        r1_id,
        r2: _r2,
        r2_id,
        ..
    } = join_router_pair(&control).await;
    let plain = control.create_key(json!({"reusable": true})).await;
    let (_other, other_id) = join(
        &control,
        &plain,
        "untagged",
        &["198.18.0.6:1"],
        &["198.19.2.0/24"],
    )
    .await;
    client
        .wait_for("r1 primary", |m| m.peers.as_ref().unwrap().len() == 3)
        .await;
    client
        .wait_for("r1 primary", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.id == r1_id && p.primary_routes == vec![route])
        })
        .await;
    assert!(
        client.peer(r2_id).unwrap().primary_routes.is_empty(),
        "one primary per prefix"
    );
    assert!(
        client.peer(other_id).unwrap().primary_routes.is_empty(),
        "untagged router is not auto-approved"
    );

    drop(r1);
    client
        .wait_for("failover to r2", |m| {
            let peers = m.peers.as_ref().unwrap();
            peers
                .iter()
                .any(|p| p.id == r2_id && p.allowed_ips.contains(&route))
                && peers
                    .iter()
                    .any(|p| p.id == r1_id && !p.online && p.primary_routes.is_empty())
        })
        .await;
    control.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_state_and_nodes_remap() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let public_key = control.public_key;
    let key = control.create_key(json!({"reusable": true})).await;
    let machine = PrivateKey::from_random_bytes(rand_bytes());
    let mut router = connect_as(&control, &machine).await;
    let reg = router.register("router", Some(&key)).await.unwrap();
    router
        .map(&["198.18.0.4:1"], &["198.19.1.0/24"])
        .await
        .unwrap();
    let (status, _) = control
        .admin(
            "POST",
            "/api/v1/routes/approve",
            Some(json!({"node": "router", "prefix": "198.19.1.0/24"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, nodes_before) = control.admin("GET", "/api/v1/nodes", None).await;
    let node_key = router.node_key;
    drop(router);
    control.shutdown().await;

    let control = start(dir.path(), |_| {}).await;
    assert_eq!(control.public_key, public_key);
    let (_, nodes_after) = control.admin("GET", "/api/v1/nodes", None).await;
    let (before, after) = (&nodes_before[0], &nodes_after[0]);
    for field in [
        "id",
        "name",
        "node_key",
        "machine_key",
        "addresses",
        "key_expiry",
        "approved_routes",
        "advertised_routes",
    ] {
        assert_eq!(before[field], after[field], "{field}");
    }
    assert_eq!(after["online"], json!(false));
    // The reusable key survives too.
    let (mut other, _) = join(&control, &key, "other", &["198.18.0.5:1"], &[]).await;
    assert_eq!(
        other.map.node.as_ref().unwrap().addresses[0],
        net("100.64.0.2/32")
    );

    let mut router = connect_as(&control, &machine).await;
    router.node_key = node_key;
    router.hostname = "router".into();
    let full = router
        .map(&["198.18.0.4:1"], &["198.19.1.0/24"])
        .await
        .unwrap();
    assert_eq!(full.node.as_ref().unwrap().id, reg.node_id);
    assert_eq!(
        full.node.as_ref().unwrap().primary_routes,
        vec![net("198.19.1.0/24")]
    );
    other
        .wait_for("router back with its route", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.id == reg.node_id && p.online && !p.primary_routes.is_empty())
        })
        .await;
    control.shutdown().await;
}

#[tokio::test]
async fn admin_api_rejects_bad_requests_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (_node, _) = join(
        &control,
        &key,
        "router",
        &["198.18.0.4:1"],
        &["198.19.1.0/24"],
    )
    .await;

    let (status, _) = control.admin_raw("GET", "/api/v1/nodes", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = control
        .admin_raw("GET", "/api/v1/nodes", None, Some("wrong"))
        .await;
    assert_eq!(status, 401);

    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/keys",
            Some("{not json"),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/api/v1/keys",
            Some(r#"{"tags": ["router"]}"#),
            400,
            "\"router\"",
        ),
        (
            "POST",
            "/api/v1/keys",
            Some(r#"{"reuseable": true}"#),
            400,
            "reuseable",
        ),
        (
            "POST",
            "/api/v1/keys",
            Some(r#"{"user": "alice"}"#),
            400,
            "invalid user \"alice\"",
        ),
        ("DELETE", "/api/v1/keys/nope", None, 404, "nope"),
        ("DELETE", "/api/v1/nodes/99", None, 404, "99"),
        ("DELETE", "/api/v1/nodes/abc", None, 400, "abc"),
        ("POST", "/api/v1/nodes/99/expire", None, 404, "99"),
        (
            "POST",
            "/api/v1/routes/approve",
            Some(r#"{"node": "router", "prefix": "198.19.1.0"}"#),
            400,
            "198.19.1.0",
        ),
        (
            "POST",
            "/api/v1/routes/approve",
            Some(r#"{"node": "router", "prefix": "198.19.1.1/24"}"#),
            400,
            "host bits",
        ),
        (
            "POST",
            "/api/v1/routes/approve",
            Some(r#"{"node": "ghost", "prefix": "198.19.1.0/24"}"#),
            404,
            "ghost",
        ),
        (
            "POST",
            "/api/v1/routes/approve",
            Some(r#"{"node": "router", "prefix": "198.19.9.0/24"}"#),
            400,
            "does not advertise",
        ),
        (
            "POST",
            "/api/v1/wireguard-devices",
            Some(r#"{"name": "bad name!"}"#),
            400,
            "bad name!",
        ),
        (
            "POST",
            "/api/v1/wireguard-devices",
            Some(r#"{"name": "printer", "user": "bob@"}"#),
            400,
            "invalid user \"bob@\"",
        ),
        ("PUT", "/api/v1/policy", Some("{"), 400, "huJSON"),
        ("GET", "/api/v1/nope", None, 404, "no such endpoint"),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, v) = control
            .admin_raw(method, path, body.map(str::to_owned), Some(&control.token))
            .await;
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        let message = v["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{method} {path}: {message}");
    }
    let (_, keys) = control.admin("GET", "/api/v1/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(keys[0].get("key").is_none(), "secrets are never listed");
    let (_, routes) = control.admin("GET", "/api/v1/routes", None).await;
    assert_eq!(routes[0]["approved"], json!([]));
    assert_eq!(control.node_count().await, 1);
    control.shutdown().await;
}

#[tokio::test]
async fn users_come_from_keys_and_devices_approve_routes_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let policy = r#"{
        "groups": {"group:ops": ["alice@example.com"]},
        "autoApprovers": {"routes": {"198.19.1.0/24": ["group:ops"]}},
    }"#;
    let (status, v) = control.put_policy(policy).await;
    assert_eq!(status, 200, "{v}");

    let (status, alice_key) = control
        .admin(
            "POST",
            "/api/v1/keys",
            Some(json!({"reusable": true, "user": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, 200, "{alice_key}");
    assert_eq!(alice_key["user"], json!("alice@example.com"));
    let plain = control.create_key(json!({"reusable": true})).await;
    let (_alice, alice_id) = join(
        &control,
        alice_key["key"].as_str().unwrap(),
        "alice-laptop",
        &["198.18.0.3:1"],
        &["198.19.1.0/24"],
    )
    .await;
    let (_other, other_id) = join(
        &control,
        &plain,
        "other",
        &["198.18.0.4:1"],
        &["198.19.1.0/24"],
    )
    .await;
    let (status, device) = control
        .admin(
            "POST",
            "/api/v1/wireguard-devices",
            Some(json!({"name": "printer", "user": "bob@example.com"})),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["node"]["user"], json!("bob@example.com"));
    let device_id = device["node"]["id"].clone();

    let users = |nodes: &Value| -> Vec<(Value, Value)> {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].clone(), n["user"].clone()))
            .collect()
    };
    let want = vec![
        (json!(alice_id.0), json!("alice@example.com")),
        (json!(other_id.0), Value::Null),
        (device_id, json!("bob@example.com")),
    ];
    let (_, nodes) = control.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(users(&nodes), want);
    // The group approver names alice: only her node's route is approved.
    let (_, routes) = control.admin("GET", "/api/v1/routes", None).await;
    let approved: Vec<(Value, Value)> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["node"].clone(), r["approved"].clone()))
        .collect();
    assert_eq!(
        approved,
        vec![
            (json!(alice_id.0), json!(["198.19.1.0/24"])),
            (json!(other_id.0), json!([])),
        ]
    );
    control.shutdown().await;

    let control = start(dir.path(), |_| {}).await;
    let (_, nodes) = control.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(users(&nodes), want);
    let (_, keys) = control.admin("GET", "/api/v1/keys", None).await;
    let key_users: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["user"])
        .collect();
    let alice_key_id = &alice_key["id"];
    let alice_row = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| &k["id"] == alice_key_id)
        .unwrap();
    assert_eq!(alice_row["user"], json!("alice@example.com"), "{keys}");
    assert_eq!(
        key_users.iter().filter(|u| u.is_null()).count(),
        1,
        "{keys}"
    );
    control.shutdown().await;
}

#[tokio::test]
async fn admin_cli_creates_keys_and_devices_for_users_and_lists_them() {
    use causeway_control::admin_cli::{AdminArgs, output};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let url = format!("http://{}", control.admin_addr);
    let token_file = control.state_dir.join("admin.token");
    let cli = |args: &[&str]| {
        let mut argv = vec![
            "admin",
            "--url",
            url.as_str(),
            "--token-file",
            token_file.to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().admin
    };

    let key = output(cli(&[
        "keys",
        "create",
        "--reusable",
        "--user",
        "carol@example.com",
    ]))
    .await
    .unwrap();
    assert!(key.starts_with("cwk_"), "{key}");
    let keys = output(cli(&["keys", "list"])).await.unwrap();
    let header = keys.lines().next().unwrap();
    assert!(header.contains("TAGS  USER"), "{keys}");
    assert!(
        keys.lines().nth(1).unwrap().contains("carol@example.com"),
        "{keys}"
    );

    let (_node, _) = join(&control, &key, "carol-laptop", &["198.18.0.3:1"], &[]).await;
    let config = output(cli(&[
        "wg-device",
        "add",
        "printer",
        "--user",
        "dave@example.com",
    ]))
    .await
    .unwrap();
    assert!(config.starts_with("[Interface]"), "{config}");
    let nodes = output(cli(&["nodes", "list"])).await.unwrap();
    let rows: Vec<&str> = nodes.lines().collect();
    assert!(rows[0].contains("USER"), "{nodes}");
    assert!(
        rows[1].contains("carol-laptop") && rows[1].contains("carol@example.com"),
        "{nodes}"
    );
    assert!(
        rows[2].contains("printer") && rows[2].contains("dave@example.com"),
        "{nodes}"
    );
    let json = output(cli(&["--json", "nodes", "list"])).await.unwrap();
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[1]["user"], json!("dave@example.com"));
    control.shutdown().await;
}

#[tokio::test]
async fn wireguard_only_device_gets_a_config_and_appears_as_peer() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (mut router, router_id) = join(
        &control,
        &key,
        "router",
        &["198.18.0.4:41641"],
        &["198.19.1.0/24"],
    )
    .await;
    control
        .admin(
            "POST",
            "/api/v1/routes/approve",
            Some(json!({"node": "router", "prefix": "198.19.1.0/24"})),
        )
        .await;
    let (_quiet, _) = join(&control, &key, "no-endpoints", &[], &[]).await;

    let (status, v) = control
        .admin(
            "POST",
            "/api/v1/wireguard-devices",
            Some(json!({"name": "printer"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let config = v["config"].as_str().unwrap();
    let device_id = NodeId(v["node"]["id"].as_u64().unwrap());
    let router_key = router.node_key;
    assert!(config.starts_with("[Interface]\nPrivateKey = "), "{config}");
    let private = config
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("PrivateKey = ");
    let private = PrivateKey::from_base64(private).unwrap();
    assert_eq!(
        v["node"]["node_key"],
        json!(private.public_key().to_string())
    );
    let v4 = v["node"]["addresses"][0].as_str().unwrap();
    let v6 = v["node"]["addresses"][1].as_str().unwrap();
    assert!(
        config.contains(&format!("Address = {v4}, {v6}")),
        "{config}"
    );
    assert_eq!(
        config.matches("[Peer]").count(),
        1,
        "only nodes with endpoints: {config}"
    );
    assert!(config.contains(&format!("PublicKey = {router_key}")));
    assert!(
        config.contains(&format!(
            "AllowedIPs = {}, 198.19.1.0/24",
            router
                .map
                .node
                .as_ref()
                .unwrap()
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        "{config}"
    );
    assert!(config.contains("Endpoint = 198.18.0.4:41641"));
    assert!(config.contains("PersistentKeepalive = 25"));
    // The private key is not stored anywhere control keeps.
    let db = std::fs::read(control.state_dir.join("control.db")).unwrap();
    let wal = std::fs::read(control.state_dir.join("control.db-wal")).unwrap_or_default();
    let secret = private.to_base64();
    for bytes in [db, wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    router
        .wait_for("device as peer", |m| {
            m.peers.as_ref().unwrap().iter().any(|p| p.id == device_id)
        })
        .await;
    let device = router.peer(device_id).unwrap();
    assert!(device.wireguard_only && device.online && device.endpoints.is_empty());
    assert_ne!(device.id, router_id);
    control.shutdown().await;
}

#[tokio::test]
async fn ephemeral_node_is_removed_after_its_stream_closes() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |c| {
        c.ephemeral_grace = Duration::from_millis(500)
    })
    .await;
    let durable = control.create_key(json!({"reusable": true})).await;
    let ephemeral = control.create_key(json!({"ephemeral": true})).await;
    let (mut watcher, _) = join(&control, &durable, "watcher", &["198.18.0.3:1"], &[]).await;
    let (eph, eph_id) = join(&control, &ephemeral, "ci-runner", &["198.18.0.9:1"], &[]).await;
    watcher
        .wait_for("ephemeral peer", |m| {
            m.peers.as_ref().unwrap().iter().any(|p| p.id == eph_id)
        })
        .await;
    drop(eph);
    watcher
        .wait_for("ephemeral removed", |m| {
            m.peers.as_ref().unwrap().iter().all(|p| p.id != eph_id)
        })
        .await;
    assert_eq!(control.node_count().await, 1);
    control.shutdown().await;
}

#[tokio::test]
async fn expired_node_key_forces_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (mut watcher, _) = join(&control, &key, "watcher", &["198.18.0.3:1"], &[]).await;
    let machine = PrivateKey::from_random_bytes(rand_bytes());
    let mut node = connect_as(&control, &machine).await;
    let reg = node.register("laptop", Some(&key)).await.unwrap();
    node.map(&["198.18.0.7:1"], &[]).await.unwrap();
    watcher
        .wait_for("laptop", |m| m.peers.as_ref().unwrap().len() == 1)
        .await;

    let (status, v) = control
        .admin(
            "POST",
            &format!("/api/v1/nodes/{}/expire", reg.node_id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    loop {
        match node.recv().await {
            Some(ServerMessage::Error(e)) => {
                assert_eq!(e.code, ErrorCode::NodeKeyExpired);
                break;
            }
            Some(ServerMessage::KeepAlive | ServerMessage::Map(_)) => {}
            other => panic!("expected NodeKeyExpired, got {other:?}"),
        }
    }
    watcher
        .wait_for("expired node dropped", |m| {
            m.peers.as_ref().unwrap().is_empty()
        })
        .await;

    // Mapping with the expired key is refused; rotating with the old key
    // (no auth key) works and the node comes back.
    let mut again = connect_as(&control, &machine).await;
    again.node_key = node.node_key;
    again.hostname = "laptop".into();
    assert_eq!(
        again.map(&[], &[]).await.unwrap_err().code,
        ErrorCode::NodeKeyExpired
    );
    let mut rotated = connect_as(&control, &machine).await;
    let new_key = PrivateKey::from_random_bytes(rand_bytes()).public_key();
    rotated
        .send(&ClientMessage::Register(RegisterRequest {
            node_key: new_key,
            old_node_key: Some(node.node_key),
            auth_key: None,
            hostname: "laptop".into(),
        }))
        .await;
    match rotated.recv().await {
        Some(ServerMessage::Registered(r)) => assert_eq!(r.node_id, reg.node_id),
        other => panic!("expected Registered, got {other:?}"),
    }
    rotated.node_key = new_key;
    rotated.hostname = "laptop".into();
    rotated.map(&["198.18.0.7:1"], &[]).await.unwrap();
    watcher
        .wait_for("rotated node back", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.id == reg.node_id && p.node_key == new_key)
        })
        .await;
    control.shutdown().await;
}

#[tokio::test]
async fn split_dns_reaches_nodes_survives_restart_and_refuses_bad_entries() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (mut node, _) = join(&control, &key, "laptop", &["198.18.0.4:1"], &[]).await;

    let (status, body) = control
        .admin(
            "PUT",
            "/api/v1/dns/split/Corp.Example.",
            Some(json!({"resolvers": ["198.19.0.2", "198.19.0.3"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["domain"], json!("corp.example"));
    node.wait_for("the split-DNS entry", |m| {
        m.dns
            .as_ref()
            .is_some_and(|d| d.split.contains_key("corp.example"))
    })
    .await;
    let split = &node.map.dns.as_ref().unwrap().split["corp.example"];
    assert_eq!(
        split,
        &vec![
            "198.19.0.2".parse::<std::net::IpAddr>().unwrap(),
            "198.19.0.3".parse().unwrap()
        ]
    );

    for (path, body, expected) in [
        (
            "/api/v1/dns/split/corp..example",
            json!({"resolvers": ["198.19.0.2"]}),
            "labels",
        ),
        (
            "/api/v1/dns/split/other.example",
            json!({"resolvers": []}),
            "expected 1 to 8",
        ),
        (
            "/api/v1/dns/split/other.example",
            json!({"resolvers": ["dns.example"]}),
            "expected an IPv4 or IPv6 address",
        ),
        (
            "/api/v1/dns/split/other.example",
            json!({"servers": ["198.19.0.2"]}),
            "unknown field",
        ),
    ] {
        let (status, answer) = control.admin("PUT", path, Some(body)).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    let (status, _) = control
        .admin("DELETE", "/api/v1/dns/split/nowhere.example", None)
        .await;
    assert_eq!(status, 404);
    let (_, listed) = control.admin("GET", "/api/v1/dns/split", None).await;
    assert_eq!(
        listed,
        json!({"corp.example": ["198.19.0.2", "198.19.0.3"]})
    );
    drop(node);
    control.shutdown().await;

    let control = start(dir.path(), |_| {}).await;
    let (_, listed) = control.admin("GET", "/api/v1/dns/split", None).await;
    assert_eq!(
        listed,
        json!({"corp.example": ["198.19.0.2", "198.19.0.3"]})
    );
    let (node, _) = join(&control, &key, "phone", &["198.18.0.5:1"], &[]).await;
    assert!(
        node.map
            .dns
            .as_ref()
            .unwrap()
            .split
            .contains_key("corp.example")
    );
    let (status, _) = control
        .admin("DELETE", "/api/v1/dns/split/corp.example", None)
        .await;
    assert_eq!(status, 200);
    let (_, listed) = control.admin("GET", "/api/v1/dns/split", None).await;
    assert_eq!(listed, json!({}));
    control.shutdown().await;
}

// --- limits before authentication ------------------------------------------

/// Opens a TCP connection to control's node port from `source` (any
/// 127.0.0.0/8 address is local).
async fn connect_from(control: &Control, source: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(control.node_addr).await.unwrap()
}

/// Whether control answers an HTTP request from `source` (a connection
/// over a limit is closed without an answer).
async fn answered_from(control: &Control, source: [u8; 4]) -> bool {
    let mut stream = connect_from(control, source).await;
    let request = "GET / HTTP/1.1\r\nHost: control\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("control neither answered nor closed");
    answer.starts_with(b"HTTP/1.1 404")
}

#[tokio::test]
async fn a_message_larger_than_a_registration_needs_closes_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({})).await;
    let mut node = connect(&control).await;
    node.send(&ClientMessage::Register(RegisterRequest {
        node_key: node.node_key,
        old_node_key: None,
        auth_key: Some(key.clone()),
        hostname: "h".repeat(100 * 1024),
    }))
    .await;
    assert_eq!(node.recv().await, None, "closed without an answer");
    assert_eq!(control.node_count().await, 0);
    // An ordinary registration with the same key still works.
    let mut node = connect(&control).await;
    node.register("ordinary", Some(&key)).await.unwrap();
    assert_eq!(control.node_count().await, 1);
    control.shutdown().await;
}

#[tokio::test]
async fn silent_clients_are_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |c| c.handshake_timeout = Duration::from_secs(1)).await;
    // Upgraded, then silent: no first message.
    let mut node = connect(&control).await;
    assert_eq!(
        node.recv().await,
        None,
        "closed for want of a first message"
    );
    // Half a request head, then silent.
    let mut stream = connect_from(&control, [127, 0, 0, 1]).await;
    stream
        .write_all(b"POST /causeway/v1/control HTTP/1.1\r\nHost: control\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("control kept a half-sent request head open");
    assert!(
        read.is_err() || !rest.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    control.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_per_source_and_total_limits_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |c| {
        c.max_connections = 3;
        c.max_connections_per_source = 2;
        c.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    assert!(answered_from(&control, [127, 0, 0, 2]).await);
    let held_a = connect_from(&control, [127, 0, 0, 2]).await;
    let held_b = connect_from(&control, [127, 0, 0, 2]).await;
    // The listener accepts in order: once this one is answered, both held
    // connections above are counted.
    assert!(answered_from(&control, [127, 0, 0, 3]).await);
    assert!(
        !answered_from(&control, [127, 0, 0, 2]).await,
        "a third connection from one source is closed"
    );
    let held_c = connect_from(&control, [127, 0, 0, 3]).await;
    // Wait until held_c is counted: then every source is refused.
    let mut full = false;
    for _ in 0..200 {
        if !answered_from(&control, [127, 0, 0, 4]).await {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(full, "a fourth connection in total is closed");
    assert!(!answered_from(&control, [127, 0, 0, 1]).await);
    // Closing connections frees their places.
    drop((held_a, held_b, held_c));
    let mut freed = false;
    for _ in 0..200 {
        if answered_from(&control, [127, 0, 0, 2]).await {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "places are given back when connections close");
    let key = control.create_key(json!({})).await;
    let mut node = connect(&control).await;
    node.register("after", Some(&key)).await.unwrap();
    control.shutdown().await;
}

#[tokio::test]
async fn small_order_node_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let mut one = [0u8; 32];
    one[0] = 1;
    for small in [[0u8; 32], one] {
        let mut node = connect(&control).await;
        node.node_key = PublicKey::from_bytes(small);
        let err = node.register("small", Some(&key)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert_eq!(
            err.message,
            "node_key is a small-order Curve25519 point; expected a real public key"
        );
    }
    assert_eq!(control.node_count().await, 0);
    control.shutdown().await;
}

// --- liveness -------------------------------------------------------------

/// Whether the admin API lists node `id` as online.
async fn online(control: &Control, id: NodeId) -> bool {
    let (status, nodes) = control.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    let node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == json!(id.0))
        .unwrap_or_else(|| panic!("node {id} not listed: {nodes}"));
    node["online"].as_bool().unwrap()
}

/// Waits (up to `limit`) for the admin API to list node `id` offline.
async fn until_offline(control: &Control, id: NodeId, limit: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    while online(control, id).await {
        assert!(
            start.elapsed() < limit,
            "node {id} still online {limit:?} after it went silent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Control with these keepalive intervals for ordinary nodes and routers.
async fn start_with_intervals(dir: &Path, ordinary: Duration, router: Duration) -> Control {
    start(dir, |c| {
        c.keepalive_interval = ordinary;
        c.router_keepalive_interval = router;
    })
    .await
}

/// Slack on top of a read deadline for the test's own polling and a busy
/// machine; far below the minutes TCP takes to give up on a frozen peer.
const DEADLINE_SLACK: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_silent_node_is_marked_offline_within_its_read_deadline() {
    let interval = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |c| c.keepalive_interval = interval).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (mut watcher, watcher_id) = join(&control, &key, "watcher", &["198.18.0.3:1"], &[]).await;
    let (mut quiet, quiet_id) = join(&control, &key, "quiet", &["198.18.0.4:1"], &[]).await;
    assert_eq!(quiet.liveness.map(|l| l.interval()), Some(interval));
    // Keepalives hold both streams open over several deadlines.
    tokio::time::sleep(3 * read_deadline(interval)).await;
    assert!(online(&control, watcher_id).await);
    assert!(online(&control, quiet_id).await);

    // The TCP connection stays open; the node neither writes nor reads.
    quiet.go_silent().await;
    let took = until_offline(&control, quiet_id, read_deadline(interval) + DEADLINE_SLACK).await;
    eprintln!(
        "silent node offline after {took:?} (deadline {:?})",
        read_deadline(interval)
    );
    watcher
        .wait_for("quiet offline", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.id == quiet_id && !p.online)
        })
        .await;
    assert!(online(&control, watcher_id).await, "a live node stays");
    // Control closed the silent node's connection.
    assert!(
        quiet.recv_until_closed().await,
        "control closed the silent node"
    );
    control.shutdown().await;
}

#[tokio::test]
async fn a_silent_primary_router_fails_over_and_clients_hear_of_it() {
    let router_interval = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    // The ordinary interval is long: only the router interval can make the
    // failover fast enough for this test.
    let control = start_with_intervals(dir.path(), Duration::from_secs(30), router_interval).await;
    let (status, v) = control.put_policy(AUTO_APPROVE_VPC).await;
    assert_eq!(status, 200, "{v}");
    let route = net("198.19.1.0/24");
    let RouterPair {
        mut client,
        client_id,
        mut r1,
        r1_id,
        mut r2,
        r2_id,
    } = join_router_pair(&control).await;
    assert_eq!(
        client.liveness.map(|l| l.interval()),
        Some(Duration::from_secs(30))
    );
    for router in [&mut r1, &mut r2] {
        router.until_liveness(router_interval).await;
    }
    client
        .wait_for("r1 primary", |m| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.id == r1_id && p.primary_routes == vec![route])
        })
        .await;

    r1.go_silent().await;
    let started = tokio::time::Instant::now();
    client
        .wait_for("failover to r2", |m| {
            let peers = m.peers.as_ref().unwrap();
            peers.iter().any(|p| {
                p.id == r2_id && p.primary_routes == vec![route] && p.allowed_ips.contains(&route)
            }) && peers
                .iter()
                .any(|p| p.id == r1_id && !p.online && p.primary_routes.is_empty())
        })
        .await;
    let took = started.elapsed();
    eprintln!(
        "silent primary replaced after {took:?} (deadline {:?})",
        read_deadline(router_interval)
    );
    assert!(
        took < read_deadline(router_interval) + DEADLINE_SLACK,
        "failover took {took:?}"
    );
    assert!(
        online(&control, client_id).await,
        "the idle client stays online"
    );
    assert!(online(&control, r2_id).await);
    control.shutdown().await;
}

#[tokio::test]
async fn a_node_that_starts_serving_routes_is_told_the_shorter_interval() {
    let router_interval = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let control = start_with_intervals(dir.path(), Duration::from_secs(30), router_interval).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let (mut router, router_id) = join(
        &control,
        &key,
        "router",
        &["198.18.0.4:1"],
        &["198.19.1.0/24"],
    )
    .await;
    // Advertised but not approved: not an HA candidate yet.
    assert_eq!(
        router.liveness.map(|l| l.interval()),
        Some(Duration::from_secs(30))
    );
    let (status, v) = control
        .admin(
            "POST",
            "/api/v1/routes/approve",
            Some(json!({"node": "router", "prefix": "198.19.1.0/24"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    router.until_liveness(router_interval).await;
    // The short deadline now applies.
    router.go_silent().await;
    until_offline(
        &control,
        router_id,
        read_deadline(router_interval) + DEADLINE_SLACK,
    )
    .await;
    control.shutdown().await;
}

#[tokio::test]
async fn an_old_node_that_sends_no_keepalives_keeps_its_stream() {
    let interval = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let control = start_with_intervals(dir.path(), interval, interval).await;
    let key = control.create_key(json!({"reusable": true})).await;
    let old_version = KEEPALIVE_CAPABILITY_VERSION - 1;
    let machine = PrivateKey::from_random_bytes(rand_bytes());
    let mut old = dial(&control, &control.public_key, &machine, old_version)
        .await
        .unwrap();
    let id = old.register("old", Some(&key)).await.unwrap().node_id;
    // `map` asserts that no interval is announced to an old node.
    old.map(&["198.18.0.4:1"], &[]).await.unwrap();
    assert!(old.keepalive.is_none(), "an old node sends no keepalives");
    // Many deadlines pass: control keeps sending its keepalives and keeps
    // the stream open.
    let until = tokio::time::Instant::now() + 5 * read_deadline(interval);
    let mut keepalives = 0;
    while tokio::time::Instant::now() < until {
        match old.recv().await {
            Some(ServerMessage::KeepAlive) => keepalives += 1,
            Some(ServerMessage::Map(_)) => {}
            other => panic!("expected keepalives on an open stream, got {other:?}"),
        }
    }
    assert!(keepalives >= 5, "{keepalives} keepalives");
    assert!(online(&control, id).await);
    control.shutdown().await;
}

#[tokio::test]
async fn a_keepalive_before_the_map_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |_| {}).await;
    let mut node = connect(&control).await;
    node.send(&ClientMessage::KeepAlive).await;
    match node.recv().await {
        Some(ServerMessage::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(node.recv().await, None);
    control.shutdown().await;
}

impl TestNode {
    /// Reads until control announces `interval`.
    async fn until_liveness(&mut self, interval: Duration) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while self.liveness.map(|l| l.interval()) != Some(interval) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "control never announced {interval:?}; last {:?}",
                self.liveness
            );
            let msg = self.recv().await;
            assert!(
                msg.is_some(),
                "stream closed before {interval:?} was announced"
            );
        }
    }

    /// Reads and discards until control closes the connection; true when it did.
    async fn recv_until_closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.recv().await.is_none() {
                return true;
            }
        }
        false
    }
}

fn health_update(prefix: IpNet, healthy: bool, reason: &str) -> ClientMessage {
    ClientMessage::Update(NodeUpdate {
        health: Some(vec![causeway_wire::RouteHealth {
            prefix,
            healthy,
            reason: reason.into(),
        }]),
        ..NodeUpdate::default()
    })
}

/// The admin API's view of one router's route.
async fn route_row(control: &Control, name: &str) -> Value {
    let (status, routes) = control.admin("GET", "/api/v1/routes", None).await;
    assert_eq!(status, 200, "{routes}");
    routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no router {name} in {routes}"))
}

#[tokio::test]
async fn an_unhealthy_router_hands_over_and_a_hold_down_ending_hands_back() {
    let dir = tempfile::tempdir().unwrap();
    let control = start(dir.path(), |c| c.route_hold_down = Duration::from_secs(2)).await;
    assert_eq!(control.put_policy(AUTO_APPROVE_VPC).await.0, 200);
    let route = net("198.19.1.0/24");
    let RouterPair {
        mut client,
        mut r1,
        r1_id,
        mut r2,
        r2_id,
        ..
    } = join_router_pair(&control).await;
    let primary_is = |id: NodeId| {
        move |m: &MapResponse| {
            m.peers
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.id == id && p.allowed_ips.contains(&route) && p.online)
        }
    };
    client.wait_for("r1 primary", primary_is(r1_id)).await;
    // Past the hold-down both routers are eligible.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let row = route_row(&control, "r2").await;
    assert_eq!(row["health"][0]["standing"], "eligible", "{row}");
    assert_eq!(row["standby"], json!(["198.19.1.0/24"]), "{row}");

    // r1 stays online but reports its LAN link down: r2 takes over and the
    // client hears it.
    r1.send(&health_update(
        route,
        false,
        "eth1 (towards 198.19.1.1) has no carrier",
    ))
    .await;
    client.wait_for("failover to r2", primary_is(r2_id)).await;
    assert!(client.peer(r1_id).unwrap().primary_routes.is_empty());
    assert!(client.peer(r1_id).unwrap().online);
    let row = route_row(&control, "r1").await;
    assert_eq!(row["unhealthy"], json!(["198.19.1.0/24"]), "{row}");
    assert_eq!(row["health"][0]["standing"], "unhealthy", "{row}");
    assert_eq!(
        row["health"][0]["reason"], "eth1 (towards 198.19.1.1) has no carrier",
        "{row}"
    );
    let (_, nodes) = control.admin("GET", "/api/v1/nodes", None).await;
    let r2_view = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "r2")
        .unwrap();
    assert_eq!(
        r2_view["primary_routes"],
        json!(["198.19.1.0/24"]),
        "{r2_view}"
    );

    // r1 recovers and r2 fails while r1 is still in hold-down: the route
    // stays on r2 until r1 has been healthy for the hold-down, then the
    // timer moves it with no further message from anyone.
    r1.send(&health_update(route, true, "")).await;
    r2.send(&health_update(route, false, "no answer within 1s"))
        .await;
    // Let control apply both before reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let row = route_row(&control, "r1").await;
    assert_eq!(row["health"][0]["standing"], "hold_down", "{row}");
    assert_eq!(row["primary"], json!([]), "{row}");
    assert_eq!(
        route_row(&control, "r2").await["primary"],
        json!(["198.19.1.0/24"])
    );
    client
        .wait_for("hand-back to r1 by the timer", primary_is(r1_id))
        .await;
    let row = route_row(&control, "r2").await;
    assert_eq!(row["primary"], json!([]), "{row}");
    control.shutdown().await;
}
