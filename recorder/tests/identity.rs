//! The recorder beside a tailnet node (the appliance's recorder role): it
//! asks the node which tailnet node owns each source address. Recordings
//! are filed under that node, whatever their header claims; sources no
//! node owns are refused; the web UI serves only viewers the node says
//! hold the recorder capability (a policy grant), and only requests for
//! its own host.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_recorder::{Identity, WebConfig, WhoIs};
use causeway_test_support::{free_port, wait_listening};
use causeway_wire::caps::{PeerCapMap, RECORDER_CAP};
use common::{H2, Recorder, recording, send_v2, stored, wait_stored};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// A tailnet as a netmap describes it: address → node.
#[derive(Debug, Default)]
struct Tailnet(BTreeMap<IpAddr, Identity>);

impl WhoIs for Tailnet {
    fn who_is(&self, addr: IpAddr) -> Option<Identity> {
        self.0.get(&addr).cloned()
    }
}

/// The test client's address (everything here runs on loopback) owned by
/// `node`, holding no capability.
fn loopback_is(node: &str, user: Option<&str>, tags: &[&str]) -> Arc<dyn WhoIs> {
    loopback_with_caps(node, user, tags, PeerCapMap::new())
}

/// The same, holding `caps` at the recorder's node.
fn loopback_with_caps(
    node: &str,
    user: Option<&str>,
    tags: &[&str],
    caps: PeerCapMap,
) -> Arc<dyn WhoIs> {
    let mut t = Tailnet::default();
    t.0.insert(
        [127, 0, 0, 1].into(),
        Identity {
            node: node.to_owned(),
            user: user.map(str::to_owned),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            caps,
        },
    );
    Arc::new(t)
}

/// The recorder capability with `actions`.
fn recorder_cap(actions: serde_json::Value) -> PeerCapMap {
    [(
        RECORDER_CAP.to_owned(),
        vec![serde_json::json!({ "actions": actions })],
    )]
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_is_filed_under_the_node_that_sent_it_not_the_one_it_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec =
        Recorder::start_identified(dir, Some(loopback_is("web-1", None, &["tag:web"])), |_| {})
            .await;
    // The header claims to come from db-7.
    let body = recording("db-7", "forged", 5);
    assert_eq!(send_v2(rec.addr, &body, 4096).await.1, None);
    let found = wait_stored(&rec.store(), 1, 20).await;
    let keys: Vec<&String> = found.keys().collect();
    assert_eq!(
        keys,
        ["web-1/20231114T221320Z-forged.cast"],
        "filed under the sender, not under db-7"
    );
    // The recording itself is stored as sent, header and all.
    assert_eq!(found.values().next().expect("one"), &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_no_tailnet_node_owns_is_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nobody: Arc<dyn WhoIs> = Arc::new(Tailnet::default());
    let rec = Recorder::start_identified(dir, Some(nobody), |_| {}).await;
    let mut h2 = H2::connect(rec.addr).await;
    assert_eq!(h2.head().await, StatusCode::FORBIDDEN);
    let (status, _) = h2.post().await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stored(&rec.store()).is_empty());
}

/// A recorder with a web UI on loopback, identifying viewers with `who_is`.
async fn with_web(who_is: Option<Arc<dyn WhoIs>>) -> (Recorder, SocketAddr) {
    let port = free_port();
    let web: SocketAddr = ([127, 0, 0, 1], port).into();
    let rec = Recorder::start_identified(tempfile::tempdir().expect("tempdir"), who_is, |c| {
        c.web = Some(WebConfig {
            listen: web,
            allow: vec!["127.0.0.0/8".parse().expect("net")],
            hosts: vec!["recorder.example.ts.net".to_owned()],
        });
    })
    .await;
    tokio::task::spawn_blocking(move || {
        wait_listening(port, "the web UI", Duration::from_secs(10))
    })
    .await
    .expect("waited");
    (rec, web)
}

/// `GET /` naming `host`; the status and body.
async fn get_as(web: SocketAddr, host: &str) -> (StatusCode, String) {
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/")
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = send.send_request(req).await.expect("answered");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_serves_only_its_own_host_names_and_ip_literals() {
    let (_rec, web) = with_web(None).await;
    for host in [
        web.to_string(),
        "127.0.0.1".to_owned(),
        "[::1]:8080".to_owned(),
        "recorder.example.ts.net".to_owned(),
        "Recorder.Example.TS.net.:443".to_owned(),
    ] {
        let (status, body) = get_as(web, &host).await;
        assert_eq!(status, StatusCode::OK, "Host {host}: {body}");
    }
    // A page on attacker.example that rebinds its name to the recorder's
    // address sends its own name.
    for host in ["attacker.example", "attacker.example:80", "localhost"] {
        let (status, body) = get_as(web, host).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "Host {host}: {body}");
        assert!(body.contains("[recorder.web] hosts"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_serves_nodes_granted_the_view_capability_and_refuses_others() {
    let host = "recorder.example.ts.net";
    let (_rec, web) = with_web(Some(loopback_with_caps(
        "laptop",
        Some("alice@example.com"),
        &[],
        recorder_cap(serde_json::json!(["view"])),
    )))
    .await;
    let (status, body) = get_as(web, host).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A user or tag alone is not enough: only the grant counts.
    let (_rec, web) = with_web(Some(loopback_is("laptop", Some("bob@example.com"), &[]))).await;
    let (status, body) = get_as(web, host).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("laptop (bob@example.com) may not view recordings: no grant in the tailnet policy gives it \"tailscale.com/cap/tsrecorder\""),
        "{body}"
    );
    // The capability without the view action.
    let (_rec, web) = with_web(Some(loopback_with_caps(
        "bastion",
        None,
        &["tag:ops"],
        recorder_cap(serde_json::json!([])),
    )))
    .await;
    let (status, body) = get_as(web, host).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("bastion (tag:ops) may not view"), "{body}");

    let nobody: Arc<dyn WhoIs> = Arc::new(Tailnet::default());
    let (_rec, web) = with_web(Some(nobody)).await;
    let (status, body) = get_as(web, host).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("127.0.0.1 is not the address of a node"),
        "{body}"
    );
}
