//! S3 storage against moto in server mode (started per test on a free port,
//! killed on drop): key layout, multipart for a long session, and an outage
//! (moto stopped, then restarted on the same port) that loses nothing.
//! Needs `moto_server` (`pip install 'moto[server]'`); fails loudly without it.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use causeway_recorder::{S3Storage, StorageConfig};
use common::{free_port, recording, send_v2, test_config};
use tokio::sync::oneshot;

const BUCKET: &str = "causeway-recordings";
const PART: u64 = 5 * 1024 * 1024;

/// One moto_server process on `port`; dropped means killed.
struct MotoServer {
    child: Child,
}

impl MotoServer {
    fn on_port(port: u16) -> Self {
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = spawned.unwrap_or_else(|e| {
            panic!("moto_server is missing ({e}): the S3 tests need it; install with `pip install 'moto[server]'`")
        });
        let server = Self { child };
        common::wait_listening(port, "moto_server", 30);
        server
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 client for moto on `port`, with SDK retries off (the spool retries).
async fn client(port: u16) -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A recorder in this process writing to S3 under prefix `rec/prod`.
struct S3Recorder {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn start_recorder(s3: aws_sdk_s3::Client) -> S3Recorder {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.storage = StorageConfig::S3(causeway_recorder::S3Config {
        bucket: BUCKET.to_owned(),
        prefix: "rec/prod".to_owned(),
        region: None,
        endpoint_url: None,
        force_path_style: true,
        part_size_bytes: PART,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(causeway_recorder::serve_with(
        config,
        S3Storage::new(s3, BUCKET, PART),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    S3Recorder {
        addr,
        dir,
        _stop: stop,
    }
}

/// moto with the bucket, and a recorder writing to it.
async fn moto_and_recorder() -> (u16, MotoServer, aws_sdk_s3::Client, S3Recorder) {
    let port = free_port();
    let moto = MotoServer::on_port(port);
    let s3 = client(port).await;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let rec = start_recorder(s3.clone()).await;
    (port, moto, s3, rec)
}

/// Waits up to `secs` for `key` in the bucket; returns its bytes and ETag.
async fn wait_object(s3: &aws_sdk_s3::Client, key: &str, secs: u64) -> (Vec<u8>, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(out) = s3.get_object().bucket(BUCKET).key(key).send().await {
            let etag = out.e_tag().unwrap_or_default().to_owned();
            let bytes = out
                .body
                .collect()
                .await
                .expect("object body")
                .into_bytes()
                .to_vec();
            return (bytes, etag);
        }
        assert!(
            Instant::now() < deadline,
            "s3://{BUCKET}/{key} did not appear within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_land_under_the_key_layout_and_long_ones_go_multipart() {
    let (_, _moto, s3, rec) = moto_and_recorder().await;

    let short = recording("nS3", "short", 10);
    assert_eq!(send_v2(rec.addr, &short, 4096).await.1, None);
    let (stored, etag) = wait_object(&s3, "rec/prod/nS3/20231114T221320Z-short.cast", 20).await;
    assert_eq!(stored, short);
    assert!(
        !etag.contains('-'),
        "a short recording is one PutObject, ETag {etag}"
    );

    let long = recording("nS3", "long", 150_000);
    assert!(
        long.len() as u64 > PART + PART / 5,
        "the long session spans two parts"
    );
    assert_eq!(send_v2(rec.addr, &long, 64 * 1024).await.1, None);
    let (stored, etag) = wait_object(&s3, "rec/prod/nS3/20231114T221320Z-long.cast", 60).await;
    assert_eq!(stored.len(), long.len());
    assert!(stored == long, "the long recording is stored byte for byte");
    assert!(
        etag.trim_matches('"').ends_with("-2"),
        "a long recording is a 2-part multipart upload, ETag {etag}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_loses_nothing() {
    let (port, moto, s3, rec) = moto_and_recorder().await;

    drop(moto);
    let during = recording("nOUT", "during", 500);
    let (acked, error) = send_v2(rec.addr, &during, 4096).await;
    assert_eq!(
        (acked, error),
        (during.len() as u64, None),
        "acks do not wait for S3"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::assert_spooled(&rec.dir.path().join("spool"), &during);

    // moto comes back empty (it keeps state in memory): recreate the bucket.
    let _moto = MotoServer::on_port(port);
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket again");
    let (stored, _) = wait_object(&s3, "rec/prod/nOUT/20231114T221320Z-during.cast", 30).await;
    assert!(stored == during, "stored byte for byte after the outage");
    common::wait_spool_empty(&rec.dir.path().join("spool"), 5).await;
}
