//! S3 storage against moto in server mode (started per test on a free port,
//! killed on drop, from causeway-test-support): key layout, multipart for a long session, and an outage
//! (moto stopped, then restarted on the same port) that loses nothing; the
//! web UI listing and serving what is in the bucket; a listing past S3's
//! 1000-key page.
//! Needs `moto_server` (`pip install 'moto[server]'`); fails loudly without it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use causeway_recorder::{RecorderConfig, S3Storage, Storage, StorageConfig};
use causeway_test_support::{
    Moto, REGION, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, free_port, wait_listening,
};
use common::{recording, send_v2, test_config};
use tokio::sync::oneshot;

const BUCKET: &str = "causeway-recordings";
const PART: u64 = 5 * 1024 * 1024;

/// An S3 client for moto on `port`, with SDK retries off (the spool retries).
async fn client(port: u16) -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
            None,
            None,
            "test",
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

async fn start_recorder(
    s3: aws_sdk_s3::Client,
    change: impl FnOnce(&mut RecorderConfig),
) -> S3Recorder {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    change(&mut config);
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

/// moto on a free port with the bucket, and a client for it.
async fn moto_with_bucket() -> (u16, Moto, aws_sdk_s3::Client) {
    let moto = Moto::start();
    let port = moto.port();
    let s3 = client(port).await;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    (port, moto, s3)
}

/// moto with the bucket, and a recorder writing to it.
async fn moto_and_recorder() -> (u16, Moto, aws_sdk_s3::Client, S3Recorder) {
    let (port, moto, s3) = moto_with_bucket().await;
    let rec = start_recorder(s3.clone(), |_| {}).await;
    (port, moto, s3, rec)
}

/// Waits up to `secs` for the object whose key without its random nonce is
/// `name`; returns its bytes and ETag.
async fn wait_object(s3: &aws_sdk_s3::Client, name: &str, secs: u64) -> (Vec<u8>, String) {
    let stem = name.strip_suffix(".cast").expect("a .cast name");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let listed = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("{stem}-"))
            .send()
            .await;
        let key = listed.ok().and_then(|l| {
            l.contents()
                .iter()
                .filter_map(|o| o.key())
                .find(|k| common::without_nonce(k) == name)
                .map(str::to_owned)
        });
        if let Some(key) = key {
            let out = s3
                .get_object()
                .bucket(BUCKET)
                .key(&key)
                .send()
                .await
                .expect("get a listed object");
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
            "s3://{BUCKET}/{name} did not appear within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The keys `storage` lists under `prefix`, in its order.
async fn listed_keys(storage: &S3Storage, prefix: &str) -> Vec<String> {
    storage
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Puts a three-byte object at `key`.
async fn put_small(
    s3: &aws_sdk_s3::Client,
    key: String,
) -> Result<(), aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::put_object::PutObjectError>> {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(b"{}\n".to_vec().into())
        .send()
        .await
        .map(drop)
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
    let _moto = Moto::options().listen("127.0.0.1", port).start();
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket again");
    let (stored, _) = wait_object(&s3, "rec/prod/nOUT/20231114T221320Z-during.cast", 30).await;
    assert!(stored == during, "stored byte for byte after the outage");
    common::wait_spool_empty(&rec.dir.path().join("spool"), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_lists_and_serves_recordings_from_the_bucket() {
    let (_, _moto, s3) = moto_with_bucket().await;
    for stray in [
        "rec/prod/nX/notes.txt",
        "rec/other/nX/20231114T221320Z-c.cast",
    ] {
        put_small(&s3, stray.to_owned())
            .await
            .expect("put a stray object");
    }
    let web_port = free_port();
    let rec = start_recorder(s3.clone(), |c| {
        c.web = Some(causeway_recorder::WebConfig {
            listen: ([127, 0, 0, 1], web_port).into(),
            allow: vec!["127.0.0.0/8".parse().expect("net")],
            hosts: Vec::new(),
        });
    })
    .await;
    let body = recording("nWEB", "web", 30);
    assert_eq!(send_v2(rec.addr, &body, 4096).await.1, None);
    wait_object(&s3, "rec/prod/nWEB/20231114T221320Z-web.cast", 20).await;

    let storage = S3Storage::new(s3.clone(), BUCKET, PART);
    let listed = listed_keys(&storage, "rec/prod/").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        common::without_nonce(&listed[0]),
        "rec/prod/nWEB/20231114T221320Z-web.cast"
    );
    assert_eq!(listed[1], "rec/prod/nX/notes.txt");
    let key = listed[0].as_str();
    let id = key
        .strip_prefix("rec/prod/")
        .and_then(|k| k.strip_suffix(".cast"))
        .expect("a recording key");
    assert_eq!(
        storage.read(key, Some(12)).await.expect("ranged read"),
        Some(body[..12].to_vec())
    );
    assert_eq!(
        storage
            .read("rec/prod/none.cast", None)
            .await
            .expect("read"),
        None
    );

    wait_listening(web_port, "the web UI", Duration::from_secs(10));
    let web = ([127, 0, 0, 1], web_port).into();
    let list = common::web::get_text(web, "/").await;
    assert!(list.contains(&format!("data-id=\"{id}\"")), "{list}");
    assert!(
        list.contains("1 session"),
        "only the recording under the prefix: {list}"
    );
    let (status, _, downloaded) = common::web::get(web, &format!("/sessions/{id}.cast")).await;
    assert_eq!(status, hyper::StatusCode::OK);
    assert!(
        downloaded == body,
        "the download is the object byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_longer_than_one_page_is_whole() {
    use futures::{StreamExt, TryStreamExt};

    // S3 returns at most 1000 keys a page; 1005 under the prefix need two.
    const KEYS: usize = 1005;
    let (_, _moto, s3) = moto_with_bucket().await;
    // Zero-padded, so generated in key order.
    let expected: Vec<String> = (0..KEYS)
        .map(|i| format!("rec/prod/nPAGE/20231114T221320Z-{i:04}.cast"))
        .collect();
    let puts = expected
        .iter()
        .cloned()
        .chain(["rec/other/nPAGE/20231114T221320Z-x.cast".to_owned()]);
    futures::stream::iter(puts)
        .map(|key| put_small(&s3, key))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("put the objects");
    let first_page = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("rec/prod/")
        .send()
        .await
        .expect("one ListObjectsV2 call");
    assert_eq!(
        first_page.is_truncated(),
        Some(true),
        "the listing spans more than one page"
    );

    let listed = listed_keys(&S3Storage::new(s3, BUCKET, PART), "rec/prod/").await;
    assert_eq!(listed.len(), KEYS);
    assert!(listed == expected, "every key under the prefix, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_object_is_never_replaced() {
    let (_, _moto, s3) = moto_with_bucket().await;
    let storage = S3Storage::new(s3, BUCKET, PART);
    // One PutObject only: moto 5.2 answers CompleteMultipartUpload with a
    // `CompleteMultipartUploadResponse` root the SDK refuses (real S3 sends
    // `CompleteMultipartUploadResult`), so a multipart put cannot succeed
    // against it, with or without `If-None-Match`.
    common::assert_create_only(&storage, "rec/n/small.cast", 5).await;
}
