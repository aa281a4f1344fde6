//! Where finished recordings end up. A backend stores one spooled file under
//! a key; the spool keeps the file until `put` returns `Ok`, so a backend
//! only has to be atomic per object (S3 objects, Azure block blobs with a
//! final commit, and rename-into-place on a local disk all are).

pub mod azure;
pub mod local;
pub mod s3;

use std::future::Future;
use std::path::Path;

pub use azure::AzureStorage;
pub use local::LocalStorage;
pub use s3::S3Storage;

/// A place that keeps recordings.
pub trait Storage: Send + Sync + 'static {
    /// Stores the `len` bytes of the file at `path` under `key`; `Ok` means durably stored.
    fn put(
        &self,
        key: &str,
        path: &Path,
        len: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A short description for logs, such as `s3://bucket`.
    fn describe(&self) -> String;
}
