//! The catalog: which organisation owns which content, and where its bytes
//! live. It is what lets reads survive a change of backend, and what the
//! host checks to keep one organisation out of another's objects.

use async_trait::async_trait;
use serde::Serialize;

use crate::backend::Location;
use crate::content::Digest;
use crate::error::Result;

/// One organisation's reference to stored content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub org: String,
    pub sha256: Digest,
    pub size: u64,
    pub content_type: String,
    pub location: Location,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// Storage for [`Record`]s, keyed by (organisation, digest).
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// This organisation's record for `sha256`.
    async fn lookup(&self, org: &str, sha256: &Digest) -> Result<Option<Record>>;

    /// Record `record` unless the organisation already has a record for
    /// this digest; either way, return the record that is stored (so
    /// concurrent puts of the same content all get the same answer).
    async fn insert(&self, record: &Record) -> Result<Record>;

    /// Remove this organisation's record; return it and how many records
    /// (of any organisation) still point at its location.
    async fn remove(&self, org: &str, sha256: &Digest) -> Result<Option<(Record, u64)>>;

    /// This organisation's records in digest order, after `after`.
    async fn list(&self, org: &str, after: Option<&Digest>, limit: usize) -> Result<Vec<Record>>;

    /// The organisations that have a record at `location`.
    async fn owners(&self, location: &Location) -> Result<Vec<String>>;
}
