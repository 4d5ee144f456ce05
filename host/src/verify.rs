//! `coffer verify`: check every record against its bytes.
//!
//! For each record (or one organisation's), the bytes must be where the
//! catalog says, inside a namespace the organisation holds, with the
//! record's size and a digest the store confirms to be the record's; with
//! `deep`, they are read and hashed again. What is wrong is reported as a
//! [`Finding`] (one JSON line each on the command line), and the report
//! counts it. A full run also lists the bytes no record refers to (what
//! `coffer gc` would delete).
//!
//! Nothing is changed: verify only reads.

use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use crate::backend::Location;
use crate::catalog::Record;
use crate::catalog::lifecycle::Refs;
use crate::coffer::Coffer;
use crate::content::{Digest, verify_stream};
use crate::error::{Error, Result};
use crate::gc::Progress;

/// What `coffer verify` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Only this organisation's records (and no listing of unreferenced
    /// bytes, which belong to no organisation).
    pub org: Option<String>,
    /// Read every object and hash it again, instead of trusting the
    /// digest the store reports.
    pub deep: bool,
    /// Objects checked at once.
    pub jobs: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { org: None, deep: false, jobs: 8 }
    }
}

/// What is wrong with one object (or, for `Unreferenced`, bytes no record
/// refers to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// The bytes are not where the record says.
    Missing,
    /// The bytes there are not the record's: another size, or a digest
    /// that does not match.
    Corrupt,
    /// The store could not be asked (unavailable, failing, not configured).
    Unreadable,
    /// The record points outside every namespace its organisation holds.
    OutsideClaims,
    /// Bytes no record refers to (what `coffer gc` deletes).
    Unreferenced,
}

/// One finding, as a JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub problem: Problem,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    pub location: String,
    pub size: u64,
    pub detail: String,
}

/// What `coffer verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    pub deep: bool,
    pub checked: u64,
    pub checked_bytes: u64,
    pub ok: u64,
    /// Present with the right size, but the store reports no digest to
    /// compare (objects another system wrote); `--deep` reads them.
    pub unconfirmed: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub unreadable: u64,
    pub outside_claims: u64,
    /// Bytes no record refers to, and their size (not a fault of the
    /// records: `coffer gc` deletes them).
    pub unreferenced: u64,
    pub unreferenced_bytes: u64,
    pub elapsed_secs: f64,
}

impl VerifyReport {
    /// Whether every record's bytes are there and right.
    /// Count how `record` checked out; the finding to report, if any.
    fn tally(&mut self, record: &Record, checked: Checked) -> Option<Finding> {
        self.checked += 1;
        self.checked_bytes += record.size;
        let (problem, detail) = match checked {
            Checked::Ok => {
                self.ok += 1;
                return None;
            }
            Checked::Unconfirmed => {
                self.unconfirmed += 1;
                return None;
            }
            Checked::Wrong(problem, detail) => (problem, detail),
        };
        match problem {
            Problem::Missing => self.missing += 1,
            Problem::Corrupt => self.corrupt += 1,
            Problem::Unreadable => self.unreadable += 1,
            Problem::OutsideClaims => self.outside_claims += 1,
            Problem::Unreferenced => self.unreferenced += 1,
        }
        Some(Finding {
            problem,
            org: Some(record.org.clone()),
            sha256: Some(record.sha256),
            location: record.location.to_string(),
            size: record.size,
            detail,
        })
    }

    pub fn all_well(&self) -> bool {
        self.missing == 0 && self.corrupt == 0 && self.unreadable == 0 && self.outside_claims == 0
    }
}

/// How records are checked: `deep`, and the namespaces adopted in place
/// (read once per run).
struct How<'a> {
    deep: bool,
    adopted: &'a [(String, crate::catalog::namespace::Namespace)],
}

/// How one record checked out.
enum Checked {
    Ok,
    Unconfirmed,
    Wrong(Problem, String),
}

impl Coffer {
    /// Check every record (or `options.org`'s) against its bytes, telling
    /// `found` about each problem as it is found; see [`crate::verify`].
    pub async fn verify(
        &self,
        options: &VerifyOptions,
        progress: &dyn Progress,
        found: &(dyn Fn(&Finding) + Sync),
    ) -> Result<VerifyReport> {
        let started = Instant::now();
        if let Some(org) = &options.org {
            crate::org::validate_org(org)?;
        }
        let report = Mutex::new(VerifyReport { deep: options.deep, ..VerifyReport::default() });
        let catalog = &self.services.catalog;
        progress.stage("verifying", None);
        let adopted = catalog.adopted().await?;
        let how = &How { deep: options.deep, adopted: &adopted };
        // Records, then the content only names refer to.
        for refs in [Refs::Record, Refs::Names] {
            let mut after: Option<Record> = None;
            loop {
                let page = self.page(options.org.as_deref(), false, refs, after.as_ref()).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.clone());
                futures_util::stream::iter(page)
                    .for_each_concurrent(options.jobs.max(1), |record| {
                        let report = &report;
                        async move {
                            let checked = self.check_record(&record, refs, how).await;
                            let finding = report.lock().unwrap_or_else(|e| e.into_inner()).tally(&record, checked);
                            if let Some(finding) = finding {
                                found(&finding);
                            }
                            progress.advance(1);
                            progress.bytes(record.size);
                        }
                    })
                    .await;
            }
        }
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        if options.org.is_none() {
            progress.stage("unreferenced bytes", None);
            let mut list = |at: Location, size: u64| {
                found(&Finding {
                    problem: Problem::Unreferenced,
                    org: None,
                    sha256: None,
                    location: at.to_string(),
                    size,
                    detail: "no record refers to these bytes; coffer gc deletes them".into(),
                })
            };
            let scan = crate::gc::unreferenced(&self.services, progress, &mut list).await?;
            report.unreferenced = scan.orphans_deleted;
            report.unreferenced_bytes = scan.orphan_bytes;
            report.unreadable += scan.error_count;
            for e in scan.errors {
                tracing::warn!(error = %e, "verify: listing unreferenced bytes");
            }
        }
        report.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Check one record's bytes (with `Refs::Names`: the bytes of the
    /// organisation's names at its location).
    async fn check_record(&self, record: &Record, refs: Refs, how: &How<'_>) -> Checked {
        if let Err(e) = self.check_boundary(record).await {
            return match e {
                Error::Denied(m) => Checked::Wrong(Problem::OutsideClaims, m),
                e => Checked::Wrong(Problem::Unreadable, e.to_string()),
            };
        }
        let at = &record.location;
        let store = match self.services.backends.get(at.backend) {
            Ok(s) => s,
            Err(e) => return Checked::Wrong(Problem::Unreadable, e.to_string()),
        };
        let confirmed = match store.head(&at.container, &at.name).await {
            Ok(None) => {
                return self
                    .gone_or(record, refs, how, Checked::Wrong(Problem::Missing, "no bytes there".into()))
                    .await;
            }
            Err(e) => return Checked::Wrong(Problem::Unreadable, e.to_string()),
            Ok(Some(meta)) if meta.size != record.size => {
                let detail = format!("{} bytes there, the record says {}", meta.size, record.size);
                return self.gone_or(record, refs, how, Checked::Wrong(Problem::Corrupt, detail)).await;
            }
            Ok(Some(meta)) => match meta.sha256 {
                Some(d) if d != record.sha256 => {
                    let detail = format!("the store reports SHA-256 {d}");
                    return self.gone_or(record, refs, how, Checked::Wrong(Problem::Corrupt, detail)).await;
                }
                // Metadata any writer could set counts only where Coffer
                // alone writes: not in another system's adopted bucket.
                Some(_) if !meta.checked_by_store => !how.adopted.iter().any(|(_, ns)| ns.contains(at)),
                Some(_) => true,
                None => false,
            },
        };
        if !how.deep {
            return if confirmed { Checked::Ok } else { Checked::Unconfirmed };
        }
        let read = async {
            let stream = store.get(&at.container, &at.name).await?;
            let mut stream = verify_stream(stream, record.sha256, record.size, at.to_string());
            while let Some(chunk) = stream.next().await {
                chunk?;
            }
            Ok::<_, Error>(())
        };
        match read.await {
            Ok(()) => Checked::Ok,
            Err(Error::NotFound(m)) => self.gone_or(record, refs, how, Checked::Wrong(Problem::Missing, m)).await,
            Err(Error::Integrity(m)) => self.gone_or(record, refs, how, Checked::Wrong(Problem::Corrupt, m)).await,
            Err(e) => Checked::Wrong(Problem::Unreadable, e.to_string()),
        }
    }

    /// `finding`, unless the record changed meanwhile: deleted (no longer
    /// a problem), or moved by a migration (then its new place is checked).
    async fn gone_or(&self, record: &Record, refs: Refs, how: &How<'_>, finding: Checked) -> Checked {
        if refs == Refs::Names {
            return match self.services.catalog.named_at(&record.org, &record.location).await {
                Ok(false) => Checked::Ok,
                _ => finding,
            };
        }
        match self.services.catalog.lookup(&record.org, &record.sha256).await {
            Ok(Some(now)) if now.location != record.location => Box::pin(self.check_record(&now, refs, how)).await,
            Ok(None) => Checked::Ok,
            _ => finding,
        }
    }
}
