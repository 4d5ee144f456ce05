//! Where bytes live: the [`BlobStore`] trait, [`s3`] for S3-compatible
//! stores (the databases' stores are in [`crate::db`]), and [`Backends`],
//! which routes a [`Location`] to the store that holds it. Routing lives
//! here, never inside a backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::content::{ByteStream, Content, Digest, exact_len, verify_stream};
use crate::error::{Error, Result};

pub mod s3;

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

/// What a store knows of a blob: its size and, where the store can vouch
/// for it, its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub size: u64,
    /// The digest the store confirms: the database's column; on S3 the
    /// full-object `ChecksumSHA256` the server verified, or the digest
    /// Coffer wrote as object metadata. `None` when the store can say
    /// nothing about the bytes.
    pub sha256: Option<Digest>,
    /// Whether that digest is one the store computed and checked itself
    /// (the database's column; S3's `ChecksumSHA256`, verified by the
    /// server on upload), not metadata any writer of the bucket could set.
    pub checked_by_store: bool,
}

impl BlobMeta {
    /// Check that this blob, at `at`, holds `content`: the same size and a
    /// confirmed, equal digest. Anything else is a [`Error::Conflict`]:
    /// "already stored" is decided by digest, never by size, and stored
    /// objects are never overwritten.
    pub fn confirm(&self, at: impl fmt::Display, content: &Content) -> Result<()> {
        if self.size != content.size() {
            return Err(Error::Conflict(format!(
                "{at} holds {} bytes, not this content's {}; stored objects are never overwritten",
                self.size,
                content.size()
            )));
        }
        match self.sha256 {
            Some(d) if d == content.sha256() => Ok(()),
            Some(d) => Err(Error::Conflict(format!(
                "{at} holds other content of the same size (SHA-256 {d}, not {}); stored objects are never overwritten",
                content.sha256()
            ))),
            None => Err(Error::Conflict(format!(
                "{at} holds {} bytes whose SHA-256 cannot be confirmed (the server reports no SHA-256 checksum and \
                 the object carries no Coffer digest), so it is never taken for this content",
                self.size
            ))),
        }
    }

    /// What a store's put answers once it has tried to publish at `at`:
    /// `true` (written) when nothing was there, and otherwise `false` if
    /// the blob there is confirmed to be `content` (see [`BlobMeta::confirm`]).
    pub fn settle(existing: Option<BlobMeta>, at: impl fmt::Display, content: &Content) -> Result<bool> {
        match existing {
            None => Ok(true),
            Some(existing) => {
                existing.confirm(at, content)?;
                Ok(false)
            }
        }
    }
}

/// One object as a [`BlobStore`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub name: String,
    pub size: u64,
    /// When it was written (seconds since the Unix epoch), if known.
    pub modified: Option<u64>,
}

/// An upload that was started and neither completed nor aborted: an S3
/// multipart upload, or a database blob still being staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncompleteUpload {
    pub name: String,
    pub id: String,
    /// Its last sign of life (seconds since the Unix epoch): when an S3
    /// upload was initiated, when a database blob last had a row staged.
    pub active_at: u64,
}

/// What a presigned link asks the browser to do with the download (its
/// `Content-Disposition`, RFC 6266).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Disposition {
    /// Save it as a file. The default: content shown inline runs on the
    /// storage endpoint's origin, so an uploaded HTML or SVG file could
    /// run its scripts there.
    #[default]
    Attachment,
    /// Show it in the browser, for content the caller knows is safe to
    /// display.
    Inline,
}

impl Disposition {
    /// The header's disposition type.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Attachment => "attachment",
            Disposition::Inline => "inline",
        }
    }
}

/// A store of immutable blobs addressed by container and name. Small on
/// purpose; it knows nothing of organisations, policies or the catalog.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Which kind of store this is.
    fn kind(&self) -> BackendKind;

    /// The blob's size and confirmed digest, or `None` if there is none.
    async fn head(&self, container: &str, name: &str) -> Result<Option<BlobMeta>>;

    /// Make sure the container exists.
    async fn ensure_container(&self, container: &str) -> Result<()>;

    /// Store `content` under `name`, verifying its digest on the way.
    /// Never overwrites: when the blob there is confirmed (by digest, see
    /// [`BlobMeta::confirm`]) to be this content, nothing is written and
    /// the answer is `false`; anything else there is a
    /// [`Error::Conflict`]. `true` when written.
    async fn put(&self, container: &str, name: &str, content: &Content) -> Result<bool>;

    /// Stream the blob; [`Error::NotFound`] when it does not exist.
    async fn get(&self, container: &str, name: &str) -> Result<ByteStream>;

    /// Stream bytes `start..=end` of the blob (`start <= end < size`: the
    /// caller has resolved the range against `size`, the blob's size as
    /// the catalog records it), reading only what the range needs. A store
    /// that finds the blob to be of another size answers
    /// [`Error::Integrity`]: the range would be of other content than the
    /// recorded one. The bytes themselves are unchecked: [`read`] checks
    /// their number. This default reads the whole blob and cuts the range
    /// from it; it is for stores of tests: every store of Coffer's reads
    /// the range itself.
    async fn get_range(&self, container: &str, name: &str, start: u64, end: u64, size: u64) -> Result<ByteStream> {
        let _ = size;
        Ok(crate::content::range(self.get(container, name).await?, start, end))
    }

    /// Remove the blob; removing a missing blob is not an error.
    async fn delete(&self, container: &str, name: &str) -> Result<()>;

    /// Blobs whose names start with `prefix`, in name order, after `after`.
    async fn list(&self, container: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<BlobEntry>>;

    /// Whether the store answers now (for readiness probes): one cheap
    /// request, not retried.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Every container the store holds, where it can tell (the database);
    /// `None` where it cannot or should not (S3 credentials may see
    /// buckets that are not Coffer's).
    async fn containers(&self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// Uploads in `container` that were started and never completed or
    /// aborted.
    async fn incomplete_uploads(&self, container: &str) -> Result<Vec<IncompleteUpload>>;

    /// Abort an incomplete upload, freeing what it holds.
    async fn abort_upload(&self, container: &str, upload: &IncompleteUpload) -> Result<()>;

    /// A direct download link: presigned, valid for `expires`, naming the
    /// download `filename` and asking for `disposition`; or, with `expires`
    /// `None`, the plain URL of a public bucket (which can carry neither).
    /// Only stores that serve downloads themselves have them.
    fn link(
        &self,
        container: &str,
        name: &str,
        expires: Option<Duration>,
        filename: Option<&str>,
        disposition: Disposition,
    ) -> Result<String> {
        let _ = (container, name, expires, filename, disposition);
        Err(Error::InvalidInput(format!(
            "direct links need S3: this object is stored in the {}, so download it through Coffer (coffer get)",
            self.kind()
        )))
    }
}

/// Read the object at `location` (content `sha256`, `size` bytes) from
/// `store`: the whole of it, verified against its digest as it streams
/// ([`verify_stream`]); or bytes `start..=end` (`start <= end < size`),
/// of which only those bytes are read.
///
/// What a range can be checked for: that exactly its bytes arrive from
/// the object recorded under the digest. A SHA-256 covers the whole object
/// only, so the bytes of a range are not checked against it; a client
/// that downloads in ranges checks the assembled file's SHA-256 against
/// the digest it asked for (the ETag). A range that covers the whole
/// object is read whole and verified.
pub async fn read(
    store: &dyn BlobStore,
    location: &Location,
    sha256: Digest,
    size: u64,
    range: Option<(u64, u64)>,
    what: String,
) -> Result<ByteStream> {
    let stream = open(store, location, size, range, &what).await?;
    Ok(checked(stream, sha256, size, range, what))
}

/// The bytes of a read as [`read`] takes it, unchecked: the whole object,
/// or only bytes `start..=end` of it.
pub async fn open(
    store: &dyn BlobStore,
    location: &Location,
    size: u64,
    range: Option<(u64, u64)>,
    what: &str,
) -> Result<ByteStream> {
    check_range(range, size, what)?;
    match range {
        Some((start, end)) if is_part(start, end, size) => {
            store.get_range(&location.container, &location.name, start, end, size).await
        }
        _ => store.get(&location.container, &location.name).await,
    }
}

/// `stream`, the bytes of a read [`open`]ed for `range`, checked as
/// [`read`] explains: a part in number only, the whole against `sha256`.
pub fn checked(stream: ByteStream, sha256: Digest, size: u64, range: Option<(u64, u64)>, what: String) -> ByteStream {
    match range {
        Some((start, end)) if is_part(start, end, size) => exact_len(stream, end - start + 1, what),
        _ => verify_stream(stream, sha256, size, what),
    }
}

/// That `range`, if any, lies inside an object of `size` bytes
/// (`start <= end < size`).
pub fn check_range(range: Option<(u64, u64)>, size: u64, what: &str) -> Result<()> {
    match range {
        Some((start, end)) if start > end || end >= size => {
            Err(Error::InvalidInput(format!("range {start}..={end} of {what}, which is {size} bytes long")))
        }
        _ => Ok(()),
    }
}

/// Whether bytes `start..=end` are less than the whole of `size` bytes.
pub fn is_part(start: u64, end: u64, size: u64) -> bool {
    start > 0 || end < size.saturating_sub(1)
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
