//! Records: each organisation's references to stored content, by digest.

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
    /// Stored in the database because S3 was unavailable when it was put
    /// (policy setting `park-when-unavailable`); `coffer migrate` (or
    /// `coffer drain`) moves it to S3.
    pub parked: bool,
}

/// Reading [`Record`]s. They are written only through the lifecycle of
/// their locations ([`super::Locations`]: commit, relocate, remove).
#[async_trait]
pub trait Records: Send + Sync {
    /// This organisation's record for `sha256`.
    async fn lookup(&self, org: &str, sha256: &Digest) -> Result<Option<Record>>;

    /// [`Records::lookup`], and whether the record's location lies in a
    /// namespace its organisation claims or adopted, in one statement: the
    /// tenant-boundary check of a read costs no round trip of its own.
    /// `false` means "not shown here", and the caller takes the slow path
    /// ([`crate::catalog::boundaries::Boundaries`]); the default says so for
    /// every record.
    async fn lookup_held(&self, org: &str, sha256: &Digest) -> Result<Option<(Record, bool)>> {
        Ok(self.lookup(org, sha256).await?.map(|r| (r, false)))
    }

    /// This organisation's records in digest order, after `after`.
    async fn list(&self, org: &str, after: Option<&Digest>, limit: usize) -> Result<Vec<Record>>;

    /// Every organisation's records (`parked_only`: only parked ones), in
    /// (organisation, digest) order, after `after`: for `coffer migrate`
    /// and `coffer verify`.
    async fn scan(&self, after: Option<(&str, &Digest)>, parked_only: bool, limit: usize) -> Result<Vec<Record>>;
}
