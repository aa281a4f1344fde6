//! Recordings in Azure Blob Storage as block blobs: one Put Blob for short
//! sessions; for long ones, staged blocks read from the spool one at a time
//! and a final Put Block List (the block-blob analogue of an S3 multipart
//! upload: nothing is visible under the name until the commit).
//!
//! Authentication is the VM's managed identity (an Entra ID token, https
//! only) or a SAS read from a file; the SAS travels in each request URL, so
//! every error that leaves this module has its signature redacted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use azure_core::credentials::TokenCredential;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, HttpClientOptions, RequestContent, RetryOptions,
    Transport, Url, new_http_client,
};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
    BlockBlobClient, BlockBlobClientOptions,
};
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;

use super::{AlreadyStored, Storage, StoredObject};
use crate::config::{AzureConfig, AzureCredential};

const CONTENT_TYPE: &str = "application/x-asciicast";

/// Longest a single request (one block at most) may take before the upload
/// counts as failed and the spool retries it: a half-open connection must
/// not stall a recording's upload forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Most committed blocks one block blob can have.
const MAX_BLOCKS: u64 = 50_000;

/// An Azure Blob Storage container holding recordings.
#[derive(Clone)]
pub struct AzureStorage {
    container_url: Url,
    auth: Auth,
    transport: Transport,
    block_size: u64,
}

impl AzureStorage {
    /// Builds the backend `config` describes; reads the SAS file now, so a
    /// missing or malformed one stops the start.
    pub fn from_config(config: &AzureConfig) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let mut container_url = config.endpoint_url().map_err(anyhow::Error::msg)?;
        container_url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("storage.endpoint cannot have a path appended"))?
            .pop_if_empty()
            .push(&config.container);
        match &config.credential {
            AzureCredential::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                let credential = ManagedIdentityCredential::new(Some(options))
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("setting up the managed identity credential")?;
                Self::with_token(container_url, credential, config.block_size_bytes)
            }
            AzureCredential::SasFile { path } => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading storage.credential.path {}", path.display())
                })?;
                Self::with_sas(container_url, &text, config.block_size_bytes)
                    .with_context(|| format!("reading storage.credential.path {}", path.display()))
            }
        }
    }

    /// Storage on `container_url` (`<endpoint>/<container>`) authorised by
    /// the SAS in `sas` (a query string; with or without a leading `?`).
    pub fn with_sas(container_url: Url, sas: &str, block_size: u64) -> anyhow::Result<Self> {
        Ok(Self::new(
            container_url,
            Auth::Sas(Sas::parse(sas)?),
            block_size,
        ))
    }

    /// Storage on `container_url` authorised by Entra ID tokens from `credential` (https only).
    pub fn with_token(
        container_url: Url,
        credential: Arc<dyn TokenCredential>,
        block_size: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            container_url.scheme() == "https",
            "Azure Blob endpoint {container_url} is not https: Entra ID tokens are only sent over https"
        );
        Ok(Self::new(
            container_url,
            Auth::Token(credential),
            block_size,
        ))
    }

    fn new(container_url: Url, auth: Auth, block_size: u64) -> Self {
        // One HTTP client (and connection pool) for every request. The blob
        // client reads bodies raw, so decompression stays off, as its own
        // default transport has it.
        let transport = Transport::new(new_http_client(Some(HttpClientOptions {
            automatic_decompression: false,
        })));
        Self {
            container_url,
            auth,
            transport,
            block_size,
        }
    }

    /// The URL of blob `key` (each `/`-separated part of the key one
    /// percent-encoded path segment, so the blob's name is the key) or of
    /// the container when `key` is `None`, with the SAS when there is one;
    /// and the token credential when there is one.
    fn url(&self, key: Option<&str>) -> anyhow::Result<(Url, Option<Arc<dyn TokenCredential>>)> {
        let mut url = self.container_url.clone();
        if let Some(key) = key {
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("the container URL cannot have a path appended"))?
                .extend(key.split('/'));
        }
        let credential = match &self.auth {
            Auth::Token(credential) => Some(Arc::clone(credential)),
            Auth::Sas(sas) => {
                url.set_query(Some(&sas.0));
                None
            }
        };
        Ok((url, credential))
    }

    /// Options every client gets: the shared transport, and a few quick
    /// retries (the spool retries a failed upload forever; these only save
    /// re-sending a long session's earlier blocks after a blip).
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(self.transport.clone()),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: 3,
                initial_delay: azure_core::time::Duration::milliseconds(200),
                max_delay: azure_core::time::Duration::seconds(2),
                max_total_elapsed: azure_core::time::Duration::seconds(10),
            }),
            ..Default::default()
        }
    }

    /// A client for writing the block blob `key`.
    fn block_blob(&self, key: &str) -> anyhow::Result<BlockBlobClient> {
        let (url, credential) = self.url(Some(key))?;
        let options = BlockBlobClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlockBlobClient::new(url, credential, Some(options)).map_err(Self::error)
    }

    /// A client for reading the blob `key`.
    fn blob(&self, key: &str) -> anyhow::Result<BlobClient> {
        let (url, credential) = self.url(Some(key))?;
        let options = BlobClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobClient::new(url, credential, Some(options)).map_err(Self::error)
    }

    /// A client for the container (listing).
    fn container(&self) -> anyhow::Result<BlobContainerClient> {
        let (url, credential) = self.url(None)?;
        let options = BlobContainerClientOptions {
            client_options: self.client_options(),
            ..Default::default()
        };
        BlobContainerClient::new(url, credential, Some(options)).map_err(Self::error)
    }

    /// Stages `len` bytes of `file` as blocks of `block` bytes, then commits them.
    async fn put_blocks(
        &self,
        blob: &BlockBlobClient,
        key: &str,
        file: &mut tokio::fs::File,
        len: u64,
        block: u64,
    ) -> anyhow::Result<()> {
        let mut ids = Vec::new();
        let mut offset = 0u64;
        while offset < len {
            let size = block.min(len - offset);
            let index = ids.len();
            let buf = read_exactly(file, size)
                .await
                .with_context(|| format!("reading block {index} of {key} from the spool"))?;
            // Block IDs must all have the same length within a blob; the
            // same IDs on a retry replace the blocks staged before.
            let id = format!("{index:06}").into_bytes();
            timed(blob.stage_block(&id, size, RequestContent::from(buf), None))
                .await
                .and_then(|r| r.map_err(Self::error))
                .with_context(|| format!("staging block {index} of {key}"))?;
            ids.push(id);
            offset += size;
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let options = BlockBlobClientCommitBlockListOptions {
            blob_content_type: Some(CONTENT_TYPE.to_owned()),
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        let content = list
            .try_into()
            .map_err(Self::error)
            .context("encoding the block list")?;
        let committed = timed(blob.commit_block_list(content, Some(options)))
            .await
            .with_context(|| format!("committing the block list of {key}"))?;
        match committed {
            Ok(_) => Ok(()),
            Err(e) => Err(Self::put_error(e, key))
                .with_context(|| format!("committing the block list of {key}")),
        }
    }

    /// Uploads `len` bytes of `file` in one Put Blob.
    async fn put_one(
        &self,
        blob: &BlockBlobClient,
        key: &str,
        file: &mut tokio::fs::File,
        len: u64,
    ) -> anyhow::Result<()> {
        let body = read_exactly(file, len)
            .await
            .with_context(|| format!("reading {key} from the spool"))?;
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(CONTENT_TYPE.to_owned()),
            // Never split: a short recording is one Put Blob.
            partition_size: std::num::NonZero::new(len.max(1)),
            if_none_match: Some("*".into()),
            ..Default::default()
        };
        let uploaded = timed(blob.upload(RequestContent::from(body), Some(options)))
            .await
            .with_context(|| format!("putting {key} into {}", self.describe()))?;
        match uploaded {
            Ok(_) => Ok(()),
            Err(e) => Err(Self::put_error(e, key))
                .with_context(|| format!("putting {key} into {}", self.describe())),
        }
    }

    /// A failed write: [`AlreadyStored`] when `If-None-Match: *` found a
    /// blob (Azure answers 409 `BlobAlreadyExists`, or 412), else
    /// [`Self::error`].
    fn put_error(e: azure_core::Error, key: &str) -> anyhow::Error {
        if let azure_core::error::ErrorKind::HttpResponse { status, .. } = e.kind()
            && matches!(u16::from(*status), 409 | 412)
        {
            return AlreadyStored {
                key: key.to_owned(),
            }
            .into();
        }
        Self::error(e)
    }

    /// An SDK error as text with any SAS signature redacted (a transport
    /// error quotes the request URL, and with it the SAS).
    fn error(e: azure_core::Error) -> anyhow::Error {
        // The service's answer: its status and error code say it all (the
        // body is an XML document repeating them).
        if let azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } = e.kind()
        {
            let code = error_code.as_deref().unwrap_or("no error code");
            return anyhow::anyhow!("Azure Blob answered HTTP {status} ({code})");
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        anyhow::anyhow!("Azure Blob request failed: {}", redact_sig(&text))
    }
}

impl Storage for AzureStorage {
    async fn put(&self, key: &str, path: &Path, len: u64) -> anyhow::Result<()> {
        let blob = self.block_blob(key)?;
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let block = block_size_for(len, self.block_size);
        if len > block {
            return self.put_blocks(&blob, key, &mut file, len, block).await;
        }
        self.put_one(&blob, key, &mut file, len).await
    }

    /// List Blobs under `prefix`, page by page (the service returns names in
    /// order).
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<StoredObject>> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            ..Default::default()
        };
        let mut pages = self
            .container()?
            .list_blobs(Some(options))
            .map_err(Self::error)?
            .into_pages();
        let mut out = Vec::new();
        while let Some(page) = timed(pages.try_next())
            .await?
            .map_err(Self::error)
            .with_context(|| format!("listing {} under {prefix:?}", self.describe()))?
        {
            let page = page.into_model().map_err(Self::error)?;
            for item in page.blob_items {
                let Some(key) = item.name else { continue };
                let bytes = item
                    .properties
                    .and_then(|p| p.content_length)
                    .unwrap_or_default();
                out.push(StoredObject { key, bytes });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Get Blob, with `x-ms-range` when only the first `limit` bytes are wanted.
    async fn read(&self, key: &str, limit: Option<u64>) -> anyhow::Result<Option<Vec<u8>>> {
        if limit == Some(0) {
            return Ok(Some(Vec::new()));
        }
        let options = BlobClientDownloadOptions {
            range: limit.map(|n| (0..n).into()),
            ..Default::default()
        };
        let downloaded = match timed(self.blob(key)?.download(Some(options))).await? {
            Ok(d) => d,
            Err(e) if e.http_status() == Some(azure_core::http::StatusCode::NotFound) => {
                return Ok(None);
            }
            // A range past the end of an empty blob.
            Err(e)
                if e.http_status()
                    == Some(azure_core::http::StatusCode::RequestedRangeNotSatisfiable) =>
            {
                return Ok(Some(Vec::new()));
            }
            Err(e) => {
                return Err(Self::error(e))
                    .with_context(|| format!("reading {key} from {}", self.describe()));
            }
        };
        let bytes = timed(downloaded.body.collect())
            .await?
            .map_err(Self::error)
            .with_context(|| format!("reading {key} from {}", self.describe()))?;
        Ok(Some(bytes.to_vec()))
    }

    fn describe(&self) -> String {
        let mut url = self.container_url.clone();
        url.set_query(None);
        format!("azure+{url}")
    }
}

impl std::fmt::Debug for AzureStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStorage")
            .field("container", &self.describe())
            .field("block_size", &self.block_size)
            .finish_non_exhaustive()
    }
}

/// How requests are authorised.
#[derive(Clone)]
enum Auth {
    /// A bearer token from this credential on every request.
    Token(Arc<dyn TokenCredential>),
    /// The SAS query string appended to every request URL.
    Sas(Sas),
}

/// A shared access signature; never printed.
#[derive(Clone)]
struct Sas(String);

impl Sas {
    /// Parses the contents of a SAS file: one query string, `?` optional.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let query = text.trim().trim_start_matches('?');
        anyhow::ensure!(!query.is_empty(), "the file is empty, expected a SAS");
        let has_sig = query
            .split('&')
            .any(|pair| pair.starts_with("sig=") && pair.len() > 4);
        anyhow::ensure!(
            has_sig && !query.contains(char::is_whitespace),
            "the file does not hold a SAS: expected one URL query string with a sig= parameter"
        );
        Ok(Self(query.to_owned()))
    }
}

/// The block size for a recording of `len` bytes: the configured one, grown
/// when the recording would otherwise need more blocks than a blob can hold.
fn block_size_for(len: u64, configured: u64) -> u64 {
    configured.max(len.div_ceil(MAX_BLOCKS))
}

/// The next `size` bytes of `file`.
async fn read_exactly(file: &mut tokio::fs::File, size: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(size).context("the block fits in memory")?];
    file.read_exact(&mut buf).await?;
    Ok(buf)
}

/// `fut`, failing after [`REQUEST_TIMEOUT`].
async fn timed<T>(fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))
}

/// `text` with the value of every `sig=` parameter replaced by `REDACTED`.
fn redact_sig(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        let (before, after) = rest.split_at(at + "sig=".len());
        out.push_str(before);
        out.push_str("REDACTED");
        let end = after
            .find(|c: char| c == '&' || c == ')' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_grow_only_when_a_blob_would_need_too_many() {
        assert_eq!(block_size_for(0, 1024), 1024);
        assert_eq!(block_size_for(50_000 * 1024, 1024), 1024);
        assert_eq!(block_size_for(50_000 * 1024 + 1, 1024), 1025);
        let huge = 3 * 1024 * 1024 * 1024 * 1024; // 3 TiB at 1 KiB blocks
        let block = block_size_for(huge, 1024);
        assert!(huge.div_ceil(block) <= MAX_BLOCKS, "block {block}");
    }

    #[test]
    fn redacts_every_signature() {
        let text = "error sending request for url (http://h/c/b?sv=2020-12-06&sig=abc%2Bdef%3D&se=x): refused; sig=zzz";
        assert_eq!(
            redact_sig(text),
            "error sending request for url (http://h/c/b?sv=2020-12-06&sig=REDACTED&se=x): refused; sig=REDACTED"
        );
    }

    #[test]
    fn a_sas_file_must_hold_a_signature() {
        assert!(Sas::parse("?sv=2020-12-06&ss=b&sig=abc\n").is_ok());
        for bad in ["", "  \n", "sv=2020-12-06&ss=b", "sig=", "sv=1&sig=a b"] {
            assert!(Sas::parse(bad).is_err(), "{bad:?} is not a SAS");
        }
    }

    #[tokio::test]
    async fn a_failed_request_does_not_leak_the_sas() {
        // Nothing listens on a port we just released: the request fails at connect.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url =
            Url::parse(&format!("http://127.0.0.1:{port}/devstoreaccount1/c")).expect("valid URL");
        let storage =
            AzureStorage::with_sas(url, "sv=2020-12-06&sig=TOPSECRETSIG", 1024).expect("storage");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("r.cast");
        std::fs::write(&file, b"{}\n").expect("write");

        let err = storage
            .put("n/a.cast", &file, 3)
            .await
            .expect_err("refused");

        let text = format!("{err:#}");
        assert!(text.contains("n/a.cast"), "{text}");
        assert!(!text.contains("TOPSECRETSIG"), "the SAS leaked: {text}");
        assert!(!format!("{storage:?}").contains("TOPSECRETSIG"));
        assert!(!storage.describe().contains("TOPSECRETSIG"));
    }
}
