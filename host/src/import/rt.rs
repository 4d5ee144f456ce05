//! Request Tracker external storage, adopted in place: the bucket (or
//! the part under a prefix) becomes a namespace the organisation holds,
//! marked adopted, and each object whose key is a digest is confirmed and
//! recorded where it lies.

use std::sync::Mutex;

use futures_util::StreamExt;

use super::options::{ImportOptions, ImportReport, Imported};
use crate::backend::{BackendKind, Location};
use crate::catalog::{Claimed, Committed, Namespace, Record};
use crate::coffer::Coffer;
use crate::content::{DEFAULT_CONTENT_TYPE, Digest, verify_stream};
use crate::error::{Error, Result};
use crate::gc::Progress;
use crate::org::validate_org;

impl Coffer {
    /// Adopt a Request Tracker bucket in place.
    pub(super) async fn adopt_rt(
        &self,
        bucket: &str,
        prefix: &str,
        org: &str,
        options: &ImportOptions,
        progress: &dyn Progress,
    ) -> Result<ImportReport> {
        validate_org(org)?;
        let mut report = ImportReport { source: format!("s3:{bucket}/{prefix}"), ..ImportReport::default() };
        let s3 = self.services.backends.get(BackendKind::S3)?.clone();
        let namespace =
            Namespace { backend: BackendKind::S3, container: bucket.to_string(), prefix: prefix.to_string() };
        namespace.validate()?;
        let catalog = &self.services.catalog;
        let adopted = catalog.adopted().await?;
        // A bucket adopted before (in part) is another system's: the
        // adoption itself refuses what overlaps.
        if !adopted.iter().any(|(_, ns)| ns.backend == namespace.backend && ns.container == namespace.container) {
            // Only another system's bucket: never one Coffer writes to,
            // whose bytes must stay deletable.
            let declared = self.namespaces(org).await?;
            if self.is_coffers_bucket(bucket).await? || declared.iter().any(|ns| ns.overlaps(&namespace)) {
                return Err(Error::InvalidInput(format!(
                    "bucket {bucket:?} is one Coffer stores objects in (or would, under this configuration); \
                     only another system's bucket can be adopted in place"
                )));
            }
            // It must exist and be readable before anything is recorded.
            s3.list(bucket, prefix, None, 1).await?;
        }
        if let Claimed::Taken(other) = catalog.adopt(org, &namespace).await? {
            return Err(Error::Denied(format!(
                "s3:{bucket}/{prefix} overlaps s3:{}/{}, which an organisation holds; it cannot be adopted for {org:?}",
                other.container, other.prefix
            )));
        }
        progress.stage("adopting", None);
        let report_cell = Mutex::new(report);
        let mut after: Option<String> = None;
        loop {
            let page = s3.list(bucket, prefix, after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            futures_util::stream::iter(page)
                .for_each_concurrent(options.jobs.max(1), |entry| {
                    let report = &report_cell;
                    let s3 = &s3;
                    async move {
                        let name = entry.name;
                        let key = name.strip_prefix(prefix).unwrap_or(&name);
                        let outcome = match key.parse::<Digest>() {
                            Ok(digest) => {
                                Some(self.adopt_one(s3.as_ref(), org, bucket, &name, digest, options.deep).await)
                            }
                            Err(_) => None,
                        };
                        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                        r.objects += 1;
                        match outcome {
                            None => r.skip(format!("s3:{bucket}/{name}: the key is not a SHA-256 digest; left alone")),
                            Some(Ok(Imported::Now(size))) => {
                                r.imported += 1;
                                r.imported_bytes += size;
                                progress.bytes(size);
                            }
                            Some(Ok(Imported::Already)) => r.already += 1,
                            Some(Err(e)) => r.error(format!("s3:{bucket}/{name}"), &e),
                        }
                        progress.advance(1);
                    }
                })
                .await;
        }
        report = report_cell.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(report)
    }

    /// Record the object `name` in `bucket`, named by `digest`, for `org`,
    /// where it is: reserved first (so nothing deletes it meanwhile), its
    /// digest confirmed, then committed.
    async fn adopt_one(
        &self,
        s3: &dyn crate::backend::BlobStore,
        org: &str,
        bucket: &str,
        name: &str,
        digest: Digest,
        deep: bool,
    ) -> Result<Imported> {
        let catalog = &self.services.catalog;
        if catalog.lookup(org, &digest).await?.is_some() {
            return Ok(Imported::Already);
        }
        let at = Location { backend: BackendKind::S3, container: bucket.to_string(), name: name.to_string() };
        let meta = s3.head(bucket, name).await?.ok_or_else(|| Error::NotFound(format!("{at} is gone")))?;
        let reservation = self.services.lifecycle.reserve(org, digest, meta.size, &at).await?;
        let confirmed = async {
            match meta.sha256 {
                Some(d) if meta.checked_by_store && d != digest => {
                    Err(Error::Integrity(format!("{at}: the server reports SHA-256 {d}")))
                }
                Some(_) if meta.checked_by_store && !deep => Ok(()),
                // No checksum the server checked (metadata any writer of
                // the bucket could set does not count), or asked to read:
                // hash the bytes.
                _ => {
                    let stream = s3.get(bucket, name).await?;
                    let mut stream = verify_stream(stream, digest, meta.size, at.to_string());
                    while let Some(chunk) = stream.next().await {
                        chunk?;
                    }
                    Ok(())
                }
            }
        };
        if let Err(e) = confirmed.await {
            reservation.release().await?;
            return Err(e);
        }
        let record = Record {
            org: org.to_string(),
            sha256: digest,
            size: meta.size,
            content_type: DEFAULT_CONTENT_TYPE.to_string(),
            location: at,
            created_at: crate::clock::now_secs(),
            parked: false,
        };
        match self.services.lifecycle.commit(&record, Some(&reservation)).await {
            Ok(Committed::Inserted(_)) => {
                reservation.settle();
                Ok(Imported::Now(meta.size))
            }
            Ok(Committed::Existing(_)) => {
                reservation.release().await?;
                Ok(Imported::Already)
            }
            Ok(Committed::Lost) => {
                reservation.settle();
                Err(Error::Backend {
                    message: "the reservation was reaped before the record was written; import again".into(),
                    retryable: true,
                    source: None,
                })
            }
            Err(e) => {
                reservation.release().await?;
                Err(e)
            }
        }
    }
}
