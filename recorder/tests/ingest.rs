//! The ingest protocol end to end, in process: h2c with acks, the HTTP/1.1
//! fallback, the allow-list, malformed streams next to a good session,
//! many sessions at once, and the limits: `max_sessions` and a spool disk
//! at its free-space floor.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    H2, Recorder, Reply, event, header, recording, send_v2, stored, wait_key, wait_stored,
};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_session_is_acked_and_stored_byte_for_byte() {
    let rec = Recorder::start(|_| {}).await;
    let mut h2 = H2::connect(rec.addr).await;
    assert_eq!(h2.head().await, StatusCode::OK);
    let (status, mut up) = h2.post().await;
    assert_eq!(status, StatusCode::OK);

    let head = header("nNODE1", "conn1");
    up.send(head.clone()).await;
    assert_eq!(up.ack_at_least(head.len() as u64).await, head.len() as u64);

    // Half a line is received but not acked: only complete, synced lines are.
    let line = event(0.5, "hello\r\n");
    let (a, b) = line.as_bytes().split_at(10);
    up.send(Bytes::copy_from_slice(a)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    up.send(Bytes::copy_from_slice(b)).await;
    let total = (head.len() + line.len()) as u64;
    assert_eq!(up.ack_at_least(total).await, total);

    up.finish();
    assert_eq!(up.drain().await.1, None, "the stream ends without an error");
    let files = wait_stored(&rec.store(), 1, 10).await;
    assert_eq!(
        files
            .get("nNODE1/20231114T221320Z-conn1.cast")
            .map(Vec::as_slice),
        Some(format!("{head}{line}").as_bytes()),
        "stored: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert!(
        stored(&rec.spool()).is_empty(),
        "spool emptied after upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_gets_keepalive_acks() {
    let rec = Recorder::start(|c| c.ack_interval_ms = 200).await;
    let mut h2 = H2::connect(rec.addr).await;
    let (_, mut up) = h2.post().await;
    let head = header("nIDLE", "c");
    up.send(head.clone()).await;
    up.ack_at_least(head.len() as u64).await;
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(up.next_reply().await, Some(Reply::Ack(head.len() as u64)));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "3 keep-alives came too fast: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_fallback_with_expect_continue() {
    let rec = Recorder::start(|_| {}).await;
    let body = recording("nH1", "conn-h1", 20);
    let mut tcp = start_v1(rec.addr).await;
    let interim = read_some(&mut tcp).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue"),
        "expected 100 Continue, got {interim:?}"
    );
    for chunk in body.chunks(100) {
        tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("chunk size");
        tcp.write_all(chunk).await.expect("chunk");
        tcp.write_all(b"\r\n").await.expect("chunk end");
    }
    tcp.write_all(b"0\r\n\r\n").await.expect("last chunk");
    let response = read_some(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let files = wait_stored(&rec.store(), 1, 10).await;
    assert_eq!(files.get("nH1/20231114T221320Z-conn-h1.cast"), Some(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_sessions_a_recording_gets_503_and_the_others_go_on() {
    let rec = Recorder::start(|c| c.max_sessions = 2).await;
    let mut h2 = H2::connect(rec.addr).await;
    let mut open = open_acked(&mut h2, "nFULL", &["a", "b"]).await;

    // A third, over HTTP/2 and over the HTTP/1.1 fallback, is refused.
    assert_refused(
        &mut h2,
        StatusCode::SERVICE_UNAVAILABLE,
        "maximum of 2 recordings (max_sessions)",
    )
    .await;
    let mut tcp = start_v1(rec.addr).await;
    let answer = read_some(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");

    // The open sessions go on; once one ends, a new one is taken.
    let (mut a, head_a) = open.remove(0);
    let line = event(0.5, "still recorded\r\n");
    a.send(line.clone()).await;
    a.ack_at_least((head_a.len() + line.len()) as u64).await;
    a.finish();
    assert_eq!(a.drain().await.1, None);
    let (status, mut c) = h2.post().await;
    assert_eq!(status, StatusCode::OK, "a slot was freed");
    let head_c = header("nFULL", "c");
    c.send(head_c.clone()).await;
    c.ack_at_least(head_c.len() as u64).await;
    c.finish();
    let (mut b, _) = open.remove(0);
    b.finish();
    let files = wait_stored(&rec.store(), 3, 10).await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "nFULL/20231114T221320Z-a.cast",
            "nFULL/20231114T221320Z-b.cast",
            "nFULL/20231114T221320Z-c.cast"
        ],
        "the refused recordings stored nothing"
    );
    assert_eq!(
        files["nFULL/20231114T221320Z-a.cast"],
        format!("{head_a}{line}").into_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_sessions_per_source_a_source_gets_429_and_other_sources_go_on() {
    let rec = Recorder::start(|c| c.max_sessions_per_source = 2).await;
    let mut h2 = H2::connect(rec.addr).await;
    let mut open = open_acked(&mut h2, "nSRC", &["a", "b"]).await;

    // A third from 127.0.0.1 is refused, naming the limit.
    assert_refused(
        &mut h2,
        StatusCode::TOO_MANY_REQUESTS,
        "maximum of 2 recordings (max_sessions_per_source)",
    )
    .await;

    // Another source address (127.0.0.2) is still taken.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("address"))
        .expect("bind 127.0.0.2");
    let mut other = socket.connect(rec.addr).await.expect("connect");
    other.write_all(b"POST /record HTTP/1.1\r\nHost: recorder\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write headers");
    let answer = read_some(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 100"), "{answer:?}");
    drop(other);

    // Once one of the source's recordings ends, it may start another.
    let (mut a, _) = open.remove(0);
    a.finish();
    assert_eq!(a.drain().await.1, None);
    let (status, mut c) = h2.post().await;
    assert_eq!(status, StatusCode::OK, "the source's slot was freed");
    let head_c = header("nSRC", "c");
    c.send(head_c.clone()).await;
    c.ack_at_least(head_c.len() as u64).await;
    c.finish();
    open.remove(0).0.finish();
    let files = wait_stored(&rec.store(), 3, 10).await;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "nSRC/20231114T221320Z-a.cast",
            "nSRC/20231114T221320Z-b.cast",
            "nSRC/20231114T221320Z-c.cast"
        ],
        "the refused recording stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_without_a_complete_header_is_cut_off_at_the_header_deadline() {
    let rec = Recorder::start(|c| c.header_timeout_ms = 300).await;
    let mut h2 = H2::connect(rec.addr).await;
    let (status, mut up) = h2.post().await;
    assert_eq!(status, StatusCode::OK);
    // Part of a header; the newline never comes, and the stream stays open.
    let head = header("nSLOW", "slow");
    up.send(Bytes::copy_from_slice(&head.as_bytes()[..20]))
        .await;
    let (acked, error) = up.drain().await;
    let error = error.expect("an error frame");
    assert!(
        error.contains("no complete header line within 300ms")
            && error.contains("header_timeout_ms"),
        "{error:?}"
    );
    assert_eq!(acked, 0, "nothing was stored");
    assert!(stored(&rec.spool()).is_empty(), "nothing spooled");
    assert!(stored(&rec.store()).is_empty(), "nothing stored");
}

/// A new recording on `h2` gets `status` with a reason containing `expect`.
async fn assert_refused(h2: &mut H2, status: StatusCode, expect: &str) {
    let (got, refused) = h2.post().await;
    assert_eq!(got, status);
    let reason = refused.text().await;
    assert!(reason.contains(expect), "{reason:?}");
}

/// Starts one recording per connection ID on `h2`, each with its header acked.
async fn open_acked(
    h2: &mut H2,
    node: &str,
    connections: &[&str],
) -> Vec<(common::Upload, String)> {
    let mut open = Vec::new();
    for connection in connections {
        let (status, mut up) = h2.post().await;
        assert_eq!(status, StatusCode::OK);
        let head = header(node, connection);
        up.send(head.clone()).await;
        up.ack_at_least(head.len() as u64).await;
        open.push((up, head));
    }
    open
}

/// Connects and sends the head of a chunked `POST /record` with
/// `Expect: 100-continue`, as Tailscale SSH's HTTP/1.1 fallback does.
async fn start_v1(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"POST /record HTTP/1.1\r\nHost: recorder\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write headers");
    tcp
}

/// What the server sent next, within 5 s.
async fn read_some(tcp: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the recorder answered within 5 s")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allow_list_get_403_and_nothing_is_stored() {
    let rec = Recorder::start(|c| c.allow = vec!["100.64.0.0/10".parse().expect("net")]).await;
    let mut h2 = H2::connect(rec.addr).await;
    assert_eq!(h2.head().await, StatusCode::FORBIDDEN);
    let (status, mut up) = h2.post().await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let _ = up
        .body
        .as_ref()
        .expect("open")
        .send(Bytes::from(recording("nX", "c", 3)))
        .await;
    up.finish();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stored(&rec.store()).is_empty(), "nothing stored");
    assert!(stored(&rec.spool()).is_empty(), "nothing spooled");
}

/// Runs `bad` next to a good session on the same recorder; the good one must
/// be stored whole, the bad one must get an error containing `expect`.
async fn bad_stream_beside_a_good_one(
    bad: Vec<u8>,
    expect: &str,
    stall_after_send: bool,
) -> Recorder {
    let rec = Recorder::start(|c| {
        c.max_line_bytes = 1024;
        c.stall_timeout_ms = 1_000;
    })
    .await;
    let good = recording("nGOOD", "good", 50);
    let addr = rec.addr;
    let good_task = tokio::spawn({
        let good = good.clone();
        async move {
            let mut h2 = H2::connect(addr).await;
            let (_, mut up) = h2.post().await;
            for line in good.split_inclusive(|b| *b == b'\n') {
                up.send(Bytes::copy_from_slice(line)).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            up.finish();
            up.drain().await
        }
    });
    let mut h2 = H2::connect(rec.addr).await;
    let (_, mut up) = h2.post().await;
    up.send(bad).await;
    if !stall_after_send {
        up.finish();
    }
    let (_, error) = up.drain().await;
    let error = error.unwrap_or_else(|| panic!("expected an error containing {expect:?}"));
    assert!(
        error.contains(expect),
        "error {error:?} should contain {expect:?}"
    );
    let (acked, good_error) = good_task.await.expect("good session");
    assert_eq!((acked, good_error), (good.len() as u64, None));
    let stored_good = wait_key(&rec.store(), "nGOOD/20231114T221320Z-good.cast", 10).await;
    assert!(
        stored_good == good,
        "the good session is stored byte for byte"
    );
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_header_is_refused_and_nothing_stored() {
    let bad = format!("{{\"version\":1}}\n{}", event(0.1, "x")).into_bytes();
    let rec = bad_stream_beside_a_good_one(bad, "bad recording header", false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored(&rec.store()).len(),
        1,
        "only the good session is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_last_line_is_reported_and_complete_lines_kept() {
    let head = header("nTRUNC", "t");
    let bad = format!("{head}{}[1.0,\"o\",\"cut", event(0.1, "kept")).into_bytes();
    let rec = bad_stream_beside_a_good_one(bad, "stream ended inside line 3", false).await;
    let files = wait_stored(&rec.store(), 2, 10).await;
    assert_eq!(
        files
            .get("nTRUNC/20231114T221320Z-t.cast")
            .map(Vec::as_slice),
        Some(format!("{head}{}", event(0.1, "kept")).as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_line_is_refused() {
    let head = header("nBIG", "b");
    let bad = format!("{head}{}", event(0.1, &"x".repeat(2048))).into_bytes();
    bad_stream_beside_a_good_one(
        bad,
        "line 2 is longer than the maximum of 1024 bytes",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_event_is_refused() {
    let head = header("nEVT", "e");
    let bad = format!("{head}not json\n").into_bytes();
    bad_stream_beside_a_good_one(bad, "event line 2", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sender_is_cut_off() {
    let head = header("nSTALL", "s");
    let rec =
        bad_stream_beside_a_good_one(head.clone().into_bytes(), "recording stream stalled", true)
            .await;
    let files = wait_stored(&rec.store(), 2, 10).await;
    assert_eq!(
        files
            .get("nSTALL/20231114T221320Z-s.cast")
            .map(Vec::as_slice),
        Some(head.as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_sessions_are_stored_byte_for_byte() {
    let rec = Recorder::start(|_| {}).await;
    let mut tasks = tokio::task::JoinSet::new();
    let mut want = std::collections::BTreeMap::new();
    for i in 0..100 {
        let body = recording(&format!("n{:03}", i % 10), &format!("conn{i:03}"), 200);
        want.insert(
            format!("n{:03}/20231114T221320Z-conn{i:03}.cast", i % 10),
            body.clone(),
        );
        let addr = rec.addr;
        tasks.spawn(async move {
            let (acked, error) = send_v2(addr, &body, 997).await;
            assert_eq!((acked, error), (body.len() as u64, None));
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("session task");
    }
    let files = wait_stored(&rec.store(), 100, 60).await;
    assert_eq!(files, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_live_sessions_and_a_restart_uploads_them() {
    // Storage that never gets the recording before the stop: a path that cannot be a directory.
    let rec = Recorder::start(|c| {
        c.storage = causeway_recorder::StorageConfig::Local {
            dir: "/dev/null/not-a-dir".into(),
            retention_days: None,
        }
    })
    .await;
    let mut h2 = H2::connect(rec.addr).await;
    let (_, mut up) = h2.post().await;
    let body = recording("nSTOP", "stop", 10);
    up.send(body.clone()).await;
    up.ack_at_least(body.len() as u64).await;

    let dir = rec.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Reply::Ack(_)) = up.next_reply().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the live session ended when the recorder stopped"
    );

    let rec = Recorder::start_in(dir, |_| {}).await;
    let files = wait_stored(&rec.store(), 1, 10).await;
    assert_eq!(files.get("nSTOP/20231114T221320Z-stop.cast"), Some(&body));
}

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted at `path` until dropped: a small disk that can really
/// fill up. Mounting needs root, as every namespace test here does.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: &std::path::Path, bytes: u64) -> Self {
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "causeway-test",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed ({status}); the test needs root",
            path.display()
        );
        Self {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_at_its_free_space_floor_ends_and_refuses_recordings_and_keeps_acked_bytes() {
    // An 8 MiB spool disk that the recorder keeps 4 MiB free on.
    let spool_disk = tempfile::tempdir().expect("tempdir");
    let _tmpfs = Tmpfs::mount(spool_disk.path(), 8 * MIB);
    let rec = Recorder::start(|c| {
        c.spool_dir = spool_disk.path().to_owned();
        c.spool_min_free_bytes = 4 * MIB;
    })
    .await;

    // A 6 MiB recording is ended once the next batch would cross the floor.
    let big = recording("nDISK", "big", 200_000);
    assert!(big.len() as u64 > 6 * MIB);
    let mut h2 = H2::connect(rec.addr).await;
    let (status, mut up) = h2.post().await;
    assert_eq!(status, StatusCode::OK);
    let body = up.body.take().expect("request body");
    let sending = big.clone();
    let sender = tokio::spawn(async move {
        for part in sending.chunks(64 * 1024) {
            if body.send(Bytes::copy_from_slice(part)).await.is_err() {
                break;
            }
        }
    });
    let (acked, error) = up.drain().await;
    sender.abort();
    let error = error.expect("the recording is ended with an error");
    assert!(
        error.contains("spool disk is nearly full") && error.contains("spool_min_free_bytes"),
        "{error:?}"
    );
    assert!(
        acked > 0 && acked <= 4 * MIB,
        "acked {acked} bytes of an 8 MiB disk kept 4 MiB free"
    );
    // What was acked is stored, byte for byte; the spool empties.
    let files = wait_stored(&rec.store(), 1, 10).await;
    let stored = &files["nDISK/20231114T221320Z-big.cast"];
    assert_eq!(stored.len() as u64, acked);
    assert!(
        stored[..] == big[..stored.len()],
        "the acked prefix, byte for byte"
    );
    common::wait_spool_empty(spool_disk.path(), 10).await;

    // With the disk below the floor, new recordings get 503 over both protocols.
    let filler = spool_disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 5 * MIB as usize]).expect("fill the spool disk");
    let (status, refused) = h2.post().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = refused.text().await;
    assert!(
        reason.contains("storing 0 more would leave less than spool_min_free_bytes (4194304)"),
        "{reason:?}"
    );
    let mut tcp = start_v1(rec.addr).await;
    let answer = read_some(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");

    // Space back, recordings back.
    std::fs::remove_file(&filler).expect("remove the filler");
    let small = recording("nDISK", "small", 10);
    assert_eq!(
        send_v2(rec.addr, &small, 4096).await,
        (small.len() as u64, None)
    );
    let files = wait_stored(&rec.store(), 2, 10).await;
    assert!(files["nDISK/20231114T221320Z-small.cast"] == small);
}
