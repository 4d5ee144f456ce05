//! Where bytes live: the [`BlobStore`] trait, one implementation per file
//! (`sqlite.rs`, and `s3.rs` for S3-compatible stores), and [`Backends`],
//! which routes a [`Location`] to the store that holds it. Routing lives
//! here, never inside a backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::content::{ByteStream, Content};
use crate::error::{Error, Result};

pub mod s3;
pub mod sqlite;

/// Which kind of store holds an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The database fallback.
    Database,
    /// An S3-compatible object store.
    S3,
}

impl BackendKind {
    /// The name stored in the catalog and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Database => "database",
            BackendKind::S3 => "s3",
        }
    }

    /// Parse a name stored in the catalog.
    pub fn parse(s: &str) -> Result<BackendKind> {
        match s {
            "database" => Ok(BackendKind::Database),
            "s3" => Ok(BackendKind::S3),
            other => Err(Error::Internal(format!("unknown backend {other:?} in the catalog"))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place for an object's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    pub backend: BackendKind,
    /// The bucket on S3; a namespace in the database.
    pub container: String,
    /// The object key.
    pub name: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.backend, self.container, self.name)
    }
}

/// One object as a [`BlobStore`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub name: String,
    pub size: u64,
}

/// A store of immutable blobs addressed by container and name. Small on
/// purpose; it knows nothing of organisations, policies or the catalog.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Which kind of store this is.
    fn kind(&self) -> BackendKind;

    /// The size of the blob, or `None` if there is none.
    async fn head(&self, container: &str, name: &str) -> Result<Option<u64>>;

    /// Make sure the container exists.
    async fn ensure_container(&self, container: &str) -> Result<()>;

    /// Store `content` under `name`, verifying its digest on the way.
    /// Never overwrites: when a blob with this content's size is already
    /// there, nothing is written and the answer is `false` (a blob of
    /// another size there is a [`Error::Conflict`]); `true` when written.
    async fn put(&self, container: &str, name: &str, content: &Content) -> Result<bool>;

    /// Stream the blob; [`Error::NotFound`] when it does not exist.
    async fn get(&self, container: &str, name: &str) -> Result<ByteStream>;

    /// Remove the blob; removing a missing blob is not an error.
    async fn delete(&self, container: &str, name: &str) -> Result<()>;

    /// Blobs whose names start with `prefix`, in name order, after `after`.
    async fn list(&self, container: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<BlobEntry>>;

    /// A direct download link: presigned, valid for `expires` and naming
    /// the download `filename`; or, with `expires` `None`, the plain URL of
    /// a public bucket. Only stores that serve downloads themselves have
    /// them.
    fn link(&self, container: &str, name: &str, expires: Option<Duration>, filename: Option<&str>) -> Result<String> {
        let _ = (container, name, expires, filename);
        Err(Error::InvalidInput(format!(
            "direct links need S3: this object is stored in the {}, so download it through Coffer (coffer get)",
            self.kind()
        )))
    }
}

/// The configured stores, by kind. The database is always there (it also
/// holds the catalog); S3 only when configured.
#[derive(Debug, Clone)]
pub struct Backends {
    pub database: Arc<dyn BlobStore>,
    pub s3: Option<Arc<dyn BlobStore>>,
}

impl Backends {
    /// The store of `kind`, or a clear error when it is not configured
    /// (for example an object stored on S3 before S3 was switched off).
    pub fn get(&self, kind: BackendKind) -> Result<&Arc<dyn BlobStore>> {
        match kind {
            BackendKind::Database => Ok(&self.database),
            BackendKind::S3 => self.s3.as_ref().ok_or_else(|| {
                Error::Config(
                    "this object is stored on S3, but S3 is not configured: set the S3 variables again \
                     (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_BUCKET or BUCKET_PER_ORG)"
                        .into(),
                )
            }),
        }
    }

    /// The configured kinds, the preferred one (S3 when configured) first.
    pub fn kinds(&self) -> Vec<BackendKind> {
        match self.s3 {
            Some(_) => vec![BackendKind::S3, BackendKind::Database],
            None => vec![BackendKind::Database],
        }
    }
}
