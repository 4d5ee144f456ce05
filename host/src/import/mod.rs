//! `coffer import`: adopt the stores people already have. Nothing in a
//! source is ever modified or deleted.
//!
//! - **Request Tracker external storage** (one bucket, keys that are the
//!   SHA-256 of the content, no organisations): adopted *in place* for one
//!   organisation. The bucket (or the part under a prefix) becomes a
//!   namespace the organisation holds, marked adopted: Coffer never
//!   deletes bytes there. Each key must be a digest; its object is reserved
//!   (so nothing deletes it meanwhile), its digest confirmed — by the
//!   SHA-256 checksum the server reports, or, when it reports none or with
//!   `deep`, by reading the bytes — and only then recorded.
//! - **OpenKAT Bytes on S3** (a bucket per organisation, `PREFIX + org`, or
//!   one bucket with `org/` keys; object names are raw-file ids) and
//!   **directories** (OpenKAT's file layout `ORG/ID[:3]/ID`, or any tree
//!   for one organisation): each object is read and stored through an
//!   ordinary put (policy, de-duplication, verification), and a mapping
//!   line `{org, raw_id, sha256, size}` is appended to the mapping file
//!   once it is stored, so the platform can update its references. A run
//!   again skips what the mapping file lists and the catalog still has.
//!
//! - this file: [`Coffer::import`], which hands a source to the one below;
//! - `rt.rs`: Request Tracker, adopted in place;
//! - `copy.rs`: OpenKAT (S3 or files) and directories, copied;
//! - `mapping.rs`: the mapping file;
//! - `options.rs`: what an import is asked and what it reports;
//! - `own_buckets.rs`: Coffer's own buckets, never imported from.

mod copy;
mod mapping;
mod options;
mod own_buckets;
mod rt;

use std::time::Instant;

pub use self::mapping::MappingLine;
pub use self::options::{ImportOptions, ImportReport, ImportSource};
use crate::coffer::Coffer;
use crate::error::Result;
use crate::gc::Progress;

impl Coffer {
    /// Import `options.source`; see [`crate::import`].
    pub async fn import(&self, options: &ImportOptions, progress: &dyn Progress) -> Result<ImportReport> {
        let started = Instant::now();
        let mut report = match &options.source {
            ImportSource::RequestTracker { bucket, prefix, org } => {
                self.adopt_rt(bucket, prefix, org, options, progress).await?
            }
            other => self.copy_in(other, options, progress).await?,
        };
        report.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
