//! `coffer gc`: reclaim what crashes and failures left behind, after a
//! grace period, through the same transactions as every other operation
//! (README "Guarantees"):
//!
//! 1. reservations no put has touched within the grace period are released
//!    (their bytes deleted if nothing else refers to them);
//! 2. deletions whose holder died (tombstones past their lease) are taken
//!    over and finished;
//! 3. uploads started before the grace period and never completed (S3
//!    multipart uploads, staged database blobs) are aborted;
//! 4. bytes that nothing refers to, written before the grace period, are
//!    deleted under a tombstone — only if they are demonstrably Coffer's:
//!    named by their own SHA-256 and confirmed to hold it. Anything else is
//!    counted as kept and left alone.
//!
//! gc assumes this catalog is the only one using these stores: hosts that
//! share a bucket must share the catalog too.

use std::time::Duration;

use serde::Serialize;

use crate::backend::{BackendKind, Location};
use crate::coffer::Coffer;
use crate::error::{Error, Result};
use crate::policy::host::HostServices;

/// What `coffer gc` should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Only what is older than this is reclaimed (default 24 h). Keep it
    /// longer than your longest upload.
    pub older_than: Duration,
    /// Count what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { older_than: Duration::from_secs(24 * 3600), dry_run: false }
    }
}

/// Most error and warning lines a report keeps (the counts are complete).
const MAX_LINES: usize = 100;

/// Keep `line` in a report's `lines`, up to [`MAX_LINES`] of them.
pub(crate) fn keep_line(lines: &mut Vec<String>, line: String) {
    if lines.len() < MAX_LINES {
        lines.push(line);
    }
}

/// What `coffer gc` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub older_than_secs: u64,
    /// Abandoned reservations released.
    pub reservations_released: u64,
    /// Unfinished deletions taken over and finished.
    pub deletions_finished: u64,
    /// Incomplete uploads aborted.
    pub uploads_aborted: u64,
    /// Unreferenced blobs deleted, and their bytes.
    pub orphans_deleted: u64,
    pub orphan_bytes: u64,
    /// Unreferenced objects that are not demonstrably Coffer's, left alone.
    pub kept_unrecognised: u64,
    pub error_count: u64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl GcReport {
    fn error(&mut self, what: String) {
        tracing::warn!(error = %what, "gc");
        self.error_count += 1;
        keep_line(&mut self.errors, what);
    }

    fn warning(&mut self, what: String) {
        keep_line(&mut self.warnings, what);
    }
}

/// Progress of long work, for a progress bar. Every method has a default
/// that does nothing.
pub trait Progress: Send + Sync {
    /// A new stage begins, with this many items if known.
    fn stage(&self, _name: &str, _items: Option<u64>) {}
    /// `n` more items are done.
    fn advance(&self, _n: u64) {}
    /// `n` more bytes are done.
    fn bytes(&self, _n: u64) {}
    /// Whether totals are shown, and so worth a pass of their own to count.
    fn wants_totals(&self) -> bool {
        false
    }
}

/// No progress shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

impl Coffer {
    /// Reclaim what crashes and failures left behind, older than
    /// `options.older_than`: abandoned reservations, unfinished deletions,
    /// incomplete uploads, and unreferenced bytes (see [`crate::gc`]).
    pub async fn gc(&self, options: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
        run(&self.services, options, progress).await
    }
}

/// Run gc over `services`' catalog and stores.
async fn run(services: &HostServices, options: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
    // In the catalog's clock, which its reservations were touched in.
    let now = services.catalog.now().await?;
    let cutoff = now.saturating_sub(options.older_than.as_secs());
    let mut report =
        GcReport { dry_run: options.dry_run, older_than_secs: options.older_than.as_secs(), ..GcReport::default() };
    let (catalog, lifecycle) = (&services.catalog, &services.lifecycle);
    if options.older_than < crate::catalog::lifecycle::HEARTBEAT * 2 && !options.dry_run {
        report.warning(format!(
            "--older-than {} s is shorter than two heartbeats of a running put ({} s): puts running right now may \
             be taken for abandoned (they start again; a multipart upload aborted under them fails)",
            options.older_than.as_secs(),
            (crate::catalog::lifecycle::HEARTBEAT * 2).as_secs()
        ));
    }

    let scan = containers_to_scan(services).await?;

    // 1. Abandoned reservations.
    let abandoned = catalog.pending_untouched_since(cutoff).await?;
    progress.stage("abandoned reservations", Some(abandoned.len() as u64));
    for p in abandoned {
        if options.dry_run {
            report.reservations_released += 1;
        } else {
            match lifecycle.reap(&p, cutoff).await {
                Ok(true) => report.reservations_released += 1,
                Ok(false) => {} // it came alive, or finished, meanwhile
                Err(e) => report.error(format!("releasing the reservation of {} for {}: {e}", p.location, p.org)),
            }
        }
        progress.advance(1);
    }

    // 2. Deletions whose holder gave up or died.
    let tombstones = catalog.tombstones().await?;
    progress.stage("unfinished deletions", Some(tombstones.len() as u64));
    for t in tombstones {
        // Taken over only strictly after its lease, as `take_over` does.
        if t.lease_until >= now {
            report.warning(format!(
                "{} is being deleted right now (lease until {}); left to its holder",
                t.location, t.lease_until
            ));
        } else if options.dry_run {
            report.deletions_finished += 1;
        } else {
            match lifecycle.take_over_and_finish(&t).await {
                Ok(true) => report.deletions_finished += 1,
                Ok(false) => {}
                Err(e) => report.error(format!("finishing the deletion of {}: {e}", t.location)),
            }
        }
        progress.advance(1);
    }

    // 3. Incomplete uploads.
    progress.stage("incomplete uploads", Some(scan.len() as u64));
    for (kind, container) in &scan {
        let store = services.backends.get(*kind)?;
        match store.incomplete_uploads(container).await {
            Ok(uploads) => {
                for u in uploads.into_iter().filter(|u| u.active_at <= cutoff) {
                    // A put that is alive (touched since the cutoff) may be
                    // uploading this right now.
                    let at = Location { backend: *kind, container: container.clone(), name: u.name.clone() };
                    if catalog.pending_at(&at).await?.iter().any(|p| p.touched_at > cutoff) {
                        continue;
                    }
                    if options.dry_run {
                        report.uploads_aborted += 1;
                        continue;
                    }
                    match store.abort_upload(container, &u).await {
                        Ok(()) => report.uploads_aborted += 1,
                        Err(e) => {
                            report.error(format!("aborting the upload {} of {kind}:{container}/{}: {e}", u.id, u.name))
                        }
                    }
                }
            }
            Err(Error::Unsupported(m)) => report.warning(m),
            Err(Error::NotFound(_)) => {} // the bucket is gone: nothing in it
            Err(e) => report.error(format!("listing incomplete uploads in {kind}:{container}: {e}")),
        }
        progress.advance(1);
    }

    // 4. Unreferenced bytes.
    progress.stage("unreferenced bytes", None);
    for (kind, container) in &scan {
        let mut ignore = |_: Location, _: u64| {};
        let found = orphans(services, *kind, container, cutoff, options.dry_run, &mut report, progress, &mut ignore);
        if let Err(e) = found.await {
            match e {
                Error::NotFound(_) => {}
                e => report.error(format!("looking for unreferenced bytes in {kind}:{container}: {e}")),
            }
        }
    }
    Ok(report)
}

/// What gc scans for incomplete uploads and unreferenced bytes: every
/// container the catalog knows (including those a crashed put's
/// reservation named), what the database holds, and the configured
/// bucket; never a container with a namespace adopted in place (another
/// system's bucket, where Coffer aborts and deletes nothing).
async fn containers_to_scan(services: &HostServices) -> Result<Vec<(BackendKind, String)>> {
    let adopted = services.catalog.adopted().await?;
    let mut scan: Vec<(BackendKind, String)> = Vec::new();
    for kind in services.backends.kinds() {
        let mut containers = services.catalog.containers(kind).await?;
        if let Some(all) = services.backends.get(kind)?.containers().await? {
            containers.extend(all);
        }
        if kind == BackendKind::S3
            && let Some(bucket) = &services.config.s3.bucket
        {
            containers.push(bucket.clone());
        }
        containers.sort();
        containers.dedup();
        containers.retain(|c| !adopted.iter().any(|(_, ns)| ns.backend == kind && ns.container == *c));
        scan.extend(containers.into_iter().map(|c| (kind, c)));
    }
    Ok(scan)
}

/// Call `found` for every blob gc would delete now (unreferenced, and
/// demonstrably Coffer's), changing nothing; for `coffer verify`. The
/// report counts them, and the errors met.
pub(crate) async fn unreferenced(
    services: &HostServices,
    progress: &dyn Progress,
    found: &mut (dyn FnMut(Location, u64) + Send),
) -> Result<GcReport> {
    let cutoff = services.catalog.now().await?;
    let mut report = GcReport { dry_run: true, ..GcReport::default() };
    for (kind, container) in containers_to_scan(services).await? {
        match orphans(services, kind, &container, cutoff, true, &mut report, progress, found).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => report.error(format!("looking for unreferenced bytes in {kind}:{container}: {e}")),
        }
    }
    Ok(report)
}

/// Page through `container`, deleting what nothing refers to (with
/// `dry_run`, only counting it and telling `found`).
#[allow(clippy::too_many_arguments)]
async fn orphans(
    services: &HostServices,
    kind: BackendKind,
    container: &str,
    cutoff: u64,
    dry_run: bool,
    report: &mut GcReport,
    progress: &dyn Progress,
    found: &mut (dyn FnMut(Location, u64) + Send),
) -> Result<()> {
    const PAGE: usize = 1000;
    let store = services.backends.get(kind)?;
    let mut after: Option<String> = None;
    loop {
        let page = store.list(container, "", after.as_deref(), PAGE).await?;
        let names: Vec<String> = page.iter().map(|e| e.name.clone()).collect();
        let referenced = services.catalog.referenced(kind, container, &names).await?;
        for entry in &page {
            progress.advance(1);
            let old = entry.modified.is_some_and(|m| m <= cutoff);
            if referenced.contains(&entry.name) || !old {
                continue;
            }
            // Coffer's own bytes are named by their digest and hold it.
            let Some(meta) = store.head(container, &entry.name).await? else { continue };
            let ours = meta.sha256.is_some_and(|d| entry.name.ends_with(&d.to_string()));
            if !ours {
                report.kept_unrecognised += 1;
                report.warning(format!(
                    "{kind}:{container}/{} is unreferenced but not demonstrably Coffer's; kept",
                    entry.name
                ));
                continue;
            }
            let at = Location { backend: kind, container: container.to_string(), name: entry.name.clone() };
            if dry_run {
                report.orphans_deleted += 1;
                report.orphan_bytes += meta.size;
                found(at, meta.size);
                continue;
            }
            // Referenced after all (a put reserved it since the listing)?
            // Then the transaction refuses and the bytes stay.
            let asked = std::time::Instant::now();
            let Some(tombstone) = services.catalog.tombstone_if_unreferenced(&at, &services.lifecycle.lease()).await?
            else {
                continue;
            };
            match services.lifecycle.finish(&tombstone, asked).await {
                Ok(()) => {
                    report.orphans_deleted += 1;
                    report.orphan_bytes += meta.size;
                }
                Err(e) => report.error(format!("deleting unreferenced {at}: {e}")),
            }
        }
        // A short page need not be the last (S3 may return fewer keys than
        // asked while more remain): only an empty one is.
        match page.last() {
            Some(last) => after = Some(last.name.clone()),
            None => return Ok(()),
        }
    }
}
