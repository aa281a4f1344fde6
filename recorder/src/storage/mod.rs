//! Where finished recordings end up. A backend stores one spooled file under
//! a key; the spool keeps the file until `put` returns `Ok`, so a backend
//! only has to be atomic per object (S3 objects, Azure block blobs with a
//! final commit, and a hard link into place on a local disk all are) and
//! create-only ([`AlreadyStored`]).
//!
//! The web UI reads recordings back with `list` and `read`; ingest and upload
//! never call them, so a backend's credentials need read access
//! (`s3:ListBucket`, `s3:GetObject`) only when the UI is on.

pub mod azure;
pub mod local;
pub mod s3;

use std::future::Future;
use std::path::Path;

pub use azure::AzureStorage;
pub use local::LocalStorage;
pub use s3::S3Storage;

/// `put` found an object under its key already and wrote nothing: every
/// backend writes create-only (S3 `If-None-Match: *`, Azure the same on Put
/// Blob and Put Block List, a hard link on a local disk), so a finished
/// recording is never replaced.
#[derive(Debug, thiserror::Error)]
#[error(
    "storage already holds an object under {key}; recordings are written create-only, so it was left as it is"
)]
pub struct AlreadyStored {
    /// The key that was taken.
    pub key: String,
}

/// A place that keeps recordings.
pub trait Storage: Send + Sync + 'static {
    /// Stores the `len` bytes of the file at `path` under `key`; `Ok` means
    /// durably stored. Never replaces an object: when `key` is taken it
    /// fails with [`AlreadyStored`] and writes nothing.
    fn put(
        &self,
        key: &str,
        path: &Path,
        len: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Every object whose key starts with `prefix` (all when empty), in key
    /// order. Keys are as `put` got them; the caller picks the recordings.
    fn list(&self, prefix: &str) -> impl Future<Output = anyhow::Result<Vec<StoredObject>>> + Send;

    /// The first `limit` bytes of the object under `key` (all of it when
    /// `None`); `Ok(None)` when there is no such object.
    fn read(
        &self,
        key: &str,
        limit: Option<u64>,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<u8>>>> + Send;

    /// A short description for logs, such as `s3://bucket`.
    fn describe(&self) -> String;
}

/// An object as `Storage::list` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub bytes: u64,
}
