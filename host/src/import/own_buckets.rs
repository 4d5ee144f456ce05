//! The buckets `coffer import` never reads from or adopts: Coffer's own,
//! whose objects are organisations' (copying from one could hand one
//! organisation's bytes to another; adopting one would make its bytes
//! undeletable).

use crate::backend::BackendKind;
use crate::coffer::Coffer;
use crate::error::Result;

impl Coffer {
    /// Whether Coffer stores objects in `bucket`, or would under this
    /// configuration (its one bucket, a bucket its per-organisation prefix
    /// names, a bucket the catalog knows).
    pub(super) async fn is_coffers_bucket(&self, bucket: &str) -> Result<bool> {
        let s3 = &self.services.config.s3;
        Ok(s3.bucket.as_deref() == Some(bucket)
            || (s3.bucket_per_org == Some(true) && s3.bucket_prefix.as_deref().is_some_and(|p| bucket.starts_with(p)))
            || self.services.catalog.containers(BackendKind::S3).await?.iter().any(|c| c == bucket))
    }
}
