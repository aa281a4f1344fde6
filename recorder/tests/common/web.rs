//! Web UI harness: a recorder with `[web]` on a free loopback port, an
//! HTTP/1.1 client, and headers with chosen nodes, users and start times.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use causeway_recorder::WebConfig;
use causeway_test_support::{free_port, wait_listening};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::Recorder;

/// A recorder whose web UI listens on loopback and allows `allow`.
pub async fn start_with_web(allow: &str) -> (Recorder, SocketAddr) {
    let port = free_port();
    let web: SocketAddr = ([127, 0, 0, 1], port).into();
    let allow = allow.parse().expect("valid net");
    let rec = Recorder::start(|c| {
        c.web = Some(WebConfig {
            listen: web,
            allow: vec![allow],
            hosts: Vec::new(),
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

/// A header line naming `node`, tailnet user `user` (SSH user: the part
/// before `@`) and start `timestamp`.
pub fn header_for(node: &str, connection: &str, user: &str, timestamp: i64) -> String {
    let short = user.split('@').next().unwrap_or(user);
    format!(
        "{{\"version\":2,\"width\":40,\"height\":8,\"timestamp\":{timestamp},\"srcNode\":\"{node}.tail-scale.ts.net\",\"srcNodeID\":\"{node}\",\"srcNodeUser\":\"{user}\",\"sshUser\":\"{short}\",\"localUser\":\"{short}\",\"connectionID\":\"{connection}\"}}\n"
    )
}

/// `GET path`; returns the response with its body still streaming.
pub async fn get_streaming(web: SocketAddr, path: &str) -> Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, web.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    send.send_request(req).await.expect("answered")
}

/// `GET path`; returns status, headers and the whole body (within 10 s).
pub async fn get(web: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = get_streaming(web, path).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("the body of {path} did not end within 10 s"))
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// `GET path` expecting 200; returns the body as text.
pub async fn get_text(web: SocketAddr, path: &str) -> String {
    let (status, _, body) = get(web, path).await;
    let text = String::from_utf8(body).expect("UTF-8");
    assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
    text
}

/// The session ID of the recording stored in `store` as `name` (its key
/// without the prefix, `.cast` and the random nonce).
pub fn stored_id(store: &std::path::Path, name: &str) -> String {
    let key = super::stored_key(store, &format!("{name}.cast"))
        .unwrap_or_else(|| panic!("no recording {name} stored"));
    key.strip_suffix(".cast").expect("a .cast key").to_owned()
}

/// The ID the list `page` shows for the session named `name` (an ID is
/// `name` plus a random nonce).
pub fn listed_id(page: &str, name: &str) -> Option<String> {
    let start = page.find(&format!("data-id=\"{name}-"))? + "data-id=\"".len();
    let len = page[start..].find('"')?;
    Some(page[start..start + len].to_owned())
}
