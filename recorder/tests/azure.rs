//! Azure Blob storage against Azurite (started per test on a free loopback
//! port, in memory, killed on drop): key layout, staged blocks for a long
//! session, an outage (Azurite stopped mid-session, then started again on the
//! same port) that loses nothing, and a bad config refused before anything is
//! created. Needs `azurite-blob` (`npm install -g azurite@3.35.0`, see
//! .ci/install-deps); fails loudly without it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use azure_core::http::Url;
use azure_storage_blob::models::BlockListType;
use azure_storage_blob::{BlobClient, BlobContainerClient, BlockBlobClient};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use causeway_recorder::{AzureConfig, AzureCredential, StorageConfig};
use causeway_test_support::{
    AZURITE_ACCOUNT as ACCOUNT, AZURITE_ACCOUNT_KEY as ACCOUNT_KEY, Azurite, free_port,
};
use common::{H2, recording, send_v2, test_config};
use hmac::Mac as _;
use tokio::sync::oneshot;

const CONTAINER: &str = "causeway-recordings";
/// Small blocks, so a test-sized session spans many.
const BLOCK: u64 = 64 * 1024;

/// An account SAS for the blob service (read, write, delete, list, add,
/// create on service, containers and objects), signed with the account key
/// as the Azure Storage REST reference "Create an account SAS" describes.
fn account_sas() -> String {
    account_sas_signed_with(&BASE64.decode(ACCOUNT_KEY).expect("the dev key is base64"))
}

/// [`account_sas`] signed with `key`.
fn account_sas_signed_with(key: &[u8]) -> String {
    let (permissions, services, types, expiry, version) =
        ("rwdlac", "b", "sco", "2099-01-01T00:00:00Z", "2020-12-06");
    // Fields: account, permissions, services, resource types, start, expiry,
    // IP range, protocol, version, encryption scope, and a final newline.
    let to_sign =
        format!("{ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n\n{version}\n\n");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length works");
    mac.update(to_sign.as_bytes());
    let sig = BASE64.encode(mac.finalize().into_bytes());
    let sig = sig
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("sv={version}&ss={services}&srt={types}&sp={permissions}&se={expiry}&sig={sig}")
}

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}/{ACCOUNT}")
}

/// A URL below the account with the SAS, `path` taken literally (`/` stays `/`).
fn sas_url(port: u16, path: &str) -> Url {
    Url::parse(&format!("{}/{path}?{}", endpoint(port), account_sas())).expect("valid URL")
}

async fn create_container(port: u16) {
    BlobContainerClient::new(sas_url(port, CONTAINER), None, None)
        .expect("container client")
        .create(None)
        .await
        .expect("create container");
}

/// A recorder config writing to Azurite on `port` through a file in `dir` holding `sas`.
fn azure_config(dir: &Path, port: u16, sas: &str) -> causeway_recorder::RecorderConfig {
    let sas_path = dir.join("azure.sas");
    std::fs::write(&sas_path, format!("?{sas}\n")).expect("write SAS file");
    let mut config = test_config(dir);
    config.storage = StorageConfig::Azure(AzureConfig {
        account: ACCOUNT.to_owned(),
        container: CONTAINER.to_owned(),
        prefix: "rec/prod".to_owned(),
        endpoint: Some(endpoint(port)),
        credential: AzureCredential::SasFile { path: sas_path },
        block_size_bytes: BLOCK,
    });
    config
}

/// A recorder in this process, built by `serve` from its config.
struct AzureRecorder {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn start_recorder(port: u16, sas: &str) -> AzureRecorder {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = azure_config(dir.path(), port, sas);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(causeway_recorder::serve(config, listener, async {
        let _ = stopped.await;
    }));
    AzureRecorder {
        addr,
        dir,
        _stop: stop,
    }
}

/// The recorder's storage client for the test container.
fn storage(port: u16) -> causeway_recorder::AzureStorage {
    let container = Url::parse(&format!("{}/{CONTAINER}", endpoint(port))).expect("valid URL");
    causeway_recorder::AzureStorage::with_sas(container, &account_sas(), BLOCK).expect("storage")
}

/// Waits up to `secs` for the blob whose name without its random nonce is
/// `name`; returns its real name, bytes and content type.
async fn wait_blob(port: u16, name: &str, secs: u64) -> (String, Vec<u8>, Option<String>) {
    use causeway_recorder::Storage;
    let stem = name.strip_suffix(".cast").expect("a .cast name");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let listed = storage(port)
            .list(&format!("{stem}-"))
            .await
            .unwrap_or_default();
        if let Some(found) = listed
            .iter()
            .find(|o| common::without_nonce(&o.key) == name)
        {
            let blob = BlobClient::new(
                sas_url(port, &format!("{CONTAINER}/{}", found.key)),
                None,
                None,
            )
            .expect("blob client");
            let got = blob.download(None).await.expect("download a listed blob");
            let content_type = got.properties.content_type.clone();
            let bytes = got.body.collect().await.expect("blob body").to_vec();
            return (found.key.clone(), bytes, content_type);
        }
        assert!(
            Instant::now() < deadline,
            "blob {CONTAINER}/{name} did not appear within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The committed block sizes of blob `name` (empty for a single Put Blob).
async fn committed_blocks(port: u16, name: &str) -> Vec<u64> {
    let list = BlockBlobClient::new(sas_url(port, &format!("{CONTAINER}/{name}")), None, None)
        .expect("block blob client")
        .get_block_list(BlockListType::Committed, None)
        .await
        .expect("get block list")
        .into_model()
        .expect("block list");
    list.committed_blocks
        .unwrap_or_default()
        .iter()
        .map(|b| b.size.expect("block size") as u64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_land_under_the_key_layout_and_long_ones_go_in_blocks() {
    let port = free_port();
    let _azurite = Azurite::on_port(port);
    create_container(port).await;
    let rec = start_recorder(port, &account_sas()).await;

    let short = recording("nAZ", "short", 10);
    assert_eq!(send_v2(rec.addr, &short, 4096).await.1, None);
    let (name, stored, content_type) =
        wait_blob(port, "rec/prod/nAZ/20231114T221320Z-short.cast", 20).await;
    assert_eq!(stored, short);
    assert_eq!(content_type.as_deref(), Some("application/x-asciicast"));
    assert_eq!(
        committed_blocks(port, &name).await,
        Vec::<u64>::new(),
        "a short recording is one Put Blob"
    );

    let long = recording("nAZ", "long", 20_000);
    let len = long.len() as u64;
    assert!(len > 10 * BLOCK, "the long session spans many blocks");
    assert_eq!(send_v2(rec.addr, &long, 64 * 1024).await.1, None);
    let (name, stored, content_type) =
        wait_blob(port, "rec/prod/nAZ/20231114T221320Z-long.cast", 60).await;
    assert_eq!(stored.len(), long.len());
    assert!(stored == long, "the long recording is stored byte for byte");
    assert_eq!(content_type.as_deref(), Some("application/x-asciicast"));
    let blocks = committed_blocks(port, &name).await;
    assert_eq!(
        blocks.len() as u64,
        len.div_ceil(BLOCK),
        "blocks {blocks:?}"
    );
    assert!(blocks[..blocks.len() - 1].iter().all(|&b| b == BLOCK));
    assert_eq!(blocks.iter().sum::<u64>(), len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_outage_mid_session_loses_nothing() {
    let port = free_port();
    let azurite = Azurite::on_port(port);
    create_container(port).await;
    let rec = start_recorder(port, &account_sas()).await;

    // Azurite goes away while a (multi-block) session is being recorded.
    let during = recording("nOUT", "during", 3_000);
    assert!(during.len() as u64 > BLOCK);
    let (first, rest) = during.split_at(during.len() / 2);
    let mut h2 = H2::connect(rec.addr).await;
    let (_, mut up) = h2.post().await;
    up.send(Bytes::copy_from_slice(first)).await;
    up.ack_at_least(first.len() as u64 / 2).await;
    drop(azurite);
    up.send(Bytes::copy_from_slice(rest)).await;
    up.finish();
    assert_eq!(
        up.drain().await,
        (during.len() as u64, None),
        "acks do not wait for Azure"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::assert_spooled(&rec.dir.path().join("spool"), &during);

    // Azurite comes back empty (it keeps state in memory): recreate the container.
    let _azurite = Azurite::on_port(port);
    create_container(port).await;
    let (_, stored, _) = wait_blob(port, "rec/prod/nOUT/20231114T221320Z-during.cast", 30).await;
    assert!(stored == during, "stored byte for byte after the outage");
    common::wait_spool_empty(&rec.dir.path().join("spool"), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sas_keeps_the_recording_in_the_spool() {
    let port = free_port();
    let _azurite = Azurite::on_port(port);
    create_container(port).await;
    let forged = account_sas_signed_with(b"not the account key");
    let rec = start_recorder(port, &forged).await;

    let refused = recording("nSAS", "refused", 20);
    assert_eq!(send_v2(rec.addr, &refused, 4096).await.1, None);
    tokio::time::sleep(Duration::from_secs(2)).await;

    common::assert_spooled(&rec.dir.path().join("spool"), &refused);
    let listed = causeway_recorder::Storage::list(&storage(port), "rec/prod/nSAS/")
        .await
        .expect("list");
    assert!(listed.is_empty(), "nothing was stored: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_blob_is_never_replaced_small_or_in_blocks() {
    let port = free_port();
    let _azurite = Azurite::on_port(port);
    create_container(port).await;
    let storage = storage(port);
    common::assert_create_only(&storage, "rec/n/small.cast", 5).await;
    common::assert_create_only(&storage, "rec/n/blocks.cast", 20_000).await;
}

/// Runs `serve` on `config` and returns its error; it must fail at once.
async fn refused(config: causeway_recorder::RecorderConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        causeway_recorder::serve(config, listener, std::future::pending()),
    )
    .await
    .expect("serve returns at once");
    format!("{:#}", served.expect_err("the config is refused"))
}

#[tokio::test]
async fn a_bad_azure_config_is_refused_before_anything_is_created() {
    // No Azurite: a refused config must not need (or touch) the service.
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");

    let mut bad_name = azure_config(dir.path(), port, &account_sas());
    if let StorageConfig::Azure(azure) = &mut bad_name.storage {
        azure.container = "Recordings_2024".to_owned();
    }
    let err = refused(bad_name).await;
    assert!(
        err.contains("storage.container is \"Recordings_2024\""),
        "{err}"
    );

    let mut token_over_http = azure_config(dir.path(), port, &account_sas());
    if let StorageConfig::Azure(azure) = &mut token_over_http.storage {
        azure.credential = AzureCredential::default();
    }
    let err = refused(token_over_http).await;
    assert!(
        err.contains("storage.credential is managed_identity"),
        "{err}"
    );

    let mut no_sas = azure_config(dir.path(), port, &account_sas());
    let missing = dir.path().join("missing.sas");
    if let StorageConfig::Azure(azure) = &mut no_sas.storage {
        azure.credential = AzureCredential::SasFile {
            path: missing.clone(),
        };
    }
    let err = refused(no_sas).await;
    assert!(
        err.contains(&format!("storage.credential.path {}", missing.display())),
        "{err}"
    );

    let not_a_sas = dir.path().join("not-a.sas");
    std::fs::write(&not_a_sas, "AccountKey=abc\n").expect("write");
    let mut bad_sas = azure_config(dir.path(), port, &account_sas());
    if let StorageConfig::Azure(azure) = &mut bad_sas.storage {
        azure.credential = AzureCredential::SasFile { path: not_a_sas };
    }
    let err = refused(bad_sas).await;
    assert!(err.contains("does not hold a SAS"), "{err}");
    assert!(
        !err.contains("AccountKey=abc"),
        "file contents never echoed: {err}"
    );

    assert!(
        !dir.path().join("spool").exists(),
        "nothing was created for a refused config"
    );
}

/// What the web UI reads: List Blobs under the prefix (other prefixes not
/// listed, sizes right) and Get Blob whole or ranged; a missing blob is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_lists_and_reads_recordings_back() {
    use causeway_recorder::Storage;
    let port = free_port();
    let _azurite = Azurite::on_port(port);
    create_container(port).await;
    let storage = storage(port);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut written = Vec::new();
    for (key, events) in [
        ("rec/prod/nA/20231114T221320Z-one.cast", 5),
        ("rec/prod/nB/20231114T221321Z-two.cast", 20_000),
        ("rec/other/nA/20231114T221322Z-three.cast", 5),
    ] {
        let bytes = recording("nA", key, events);
        let file = dir.path().join("r.cast");
        std::fs::write(&file, &bytes).expect("write");
        storage
            .put(key, &file, bytes.len() as u64)
            .await
            .expect("put");
        written.push((key, bytes));
    }

    let listed = storage.list("rec/prod/").await.expect("list");

    let expected: Vec<(String, u64)> = written[..2]
        .iter()
        .map(|(k, b)| ((*k).to_owned(), b.len() as u64))
        .collect();
    let got: Vec<(String, u64)> = listed.into_iter().map(|o| (o.key, o.bytes)).collect();
    assert_eq!(got, expected);
    let (key, long) = &written[1];
    assert!(
        storage.read(key, None).await.expect("read").as_ref() == Some(long),
        "the whole blob comes back byte for byte"
    );
    assert_eq!(
        storage.read(key, Some(100)).await.expect("ranged read"),
        Some(long[..100].to_vec())
    );
    assert_eq!(
        storage
            .read("rec/prod/nA/missing.cast", None)
            .await
            .expect("read"),
        None
    );
}
