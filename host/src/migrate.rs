//! `coffer migrate` (and `coffer drain`): move objects to where the
//! current configuration and policy put new objects — database → S3,
//! S3 → database, one bucket ↔ a bucket per organisation, another prefix
//! or policy — and parked objects to S3 once it is back.
//!
//! Each object goes through the location lifecycle (README "Guarantees"):
//! 1. its bytes are read from where the record says, verified against the
//!    digest on the way;
//! 2. the policy places them as it would place new content (its `lookup`
//!    answers none, so it does not point back at the record being moved):
//!    the new location is reserved before anything is written there, and
//!    the copy is confirmed by digest at the destination;
//! 3. the record is switched to the new location in one transaction, which
//!    also tombstones the old location if nothing else refers to it;
//! 4. the tombstone's holder deletes the old bytes.
//!
//! Killed at any point, a run leaves either the old record with its bytes
//! (and perhaps a reservation and a copy, which a run again reuses and gc
//! reclaims), or the new record with its bytes (and perhaps a tombstone on
//! the old bytes, which the next run, or gc, finishes once its lease runs
//! out). Readers find the object throughout: a get that looked up the old
//! location and finds its bytes gone looks the record up again.

use std::sync::Mutex;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use crate::backend::Location;
use crate::catalog::lifecycle::{Refs, Reservation};
use crate::catalog::{Record, Relocated};
use crate::coffer::Coffer;
use crate::content::{Content, verify_stream};
use crate::error::{Error, ErrorKind, Result};
use crate::gc::Progress;

/// What `coffer migrate` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Only this organisation's objects.
    pub org: Option<String>,
    /// Only parked objects (`coffer drain`).
    pub parked_only: bool,
    /// Objects moved at once.
    pub jobs: usize,
    /// Consider at most this many objects that are not where new ones go.
    pub limit: Option<u64>,
    /// Count what would be moved; change nothing.
    pub dry_run: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { org: None, parked_only: false, jobs: 4, limit: None, dry_run: false }
    }
}

/// Records read from the catalog at a time.
const PAGE: usize = 500;

/// What `coffer migrate` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MigrateReport {
    pub dry_run: bool,
    /// Records looked at (and locations only names point at, as one each).
    pub records: u64,
    /// Records not in the namespace new objects go to (or parked): the
    /// ones a migration reads and places again.
    pub candidates: u64,
    /// Moved to a new location, and their bytes.
    pub moved: u64,
    pub moved_bytes: u64,
    /// Placed again by the policy exactly where they are: nothing moved.
    pub in_place: u64,
    /// Deleted or moved by someone else while being moved: left as they are.
    pub changed: u64,
    /// Could not be moved (see `errors`); they stay where they were,
    /// readable.
    pub failed: u64,
    /// Moved, but the old bytes could not be deleted yet (`coffer gc`
    /// deletes them).
    pub old_bytes_left: u64,
    /// Deletions a killed run left unfinished, finished first.
    pub deletions_finished: u64,
    pub elapsed_secs: f64,
    /// Why the run stopped before it looked at every object, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub errors: Vec<String>,
    #[serde(skip)]
    unavailable_in_a_row: u32,
}

/// Objects in a row that fail as unavailable before a run stops.
const UNAVAILABLE_IN_A_ROW: u32 = 3;

impl MigrateReport {
    fn error(&mut self, what: String) {
        tracing::warn!(error = %what, "migrate");
        crate::gc::keep_line(&mut self.errors, what);
    }

    /// Count what became of `record`. A backend that stays down (a drain
    /// during an outage) stops the run instead of reading every object to
    /// find out again.
    fn tally(&mut self, record: &Record, outcome: Result<Outcome>, progress: &dyn Progress) {
        self.candidates += 1;
        match &outcome {
            Err(e) if e.kind() == ErrorKind::Unavailable => self.unavailable_in_a_row += 1,
            _ => self.unavailable_in_a_row = 0,
        }
        if self.unavailable_in_a_row >= UNAVAILABLE_IN_A_ROW && self.stopped.is_none() {
            self.stopped = Some(format!(
                "stopped after {UNAVAILABLE_IN_A_ROW} objects in a row failed as unavailable; \
                 the rest stay where they are. Run it again once the backend is back"
            ));
        }
        match outcome {
            Ok(Outcome::Moved { left }) => {
                self.moved += 1;
                self.moved_bytes += record.size;
                progress.bytes(record.size);
                if let Some(e) = left {
                    self.old_bytes_left += 1;
                    self.error(format!(
                        "{} of {:?} moved, but its old bytes at {} were not deleted yet ({e}); coffer gc deletes them",
                        record.sha256, record.org, record.location
                    ));
                }
            }
            Ok(Outcome::InPlace) => self.in_place += 1,
            Ok(Outcome::Changed) => self.changed += 1,
            Err(e) => {
                self.failed += 1;
                self.error(format!("{} of {:?} at {}: {e}", record.sha256, record.org, record.location));
            }
        }
    }
}

/// What happened to one object.
#[derive(Debug)]
enum Outcome {
    Moved { left: Option<Error> },
    InPlace,
    Changed,
}

impl Coffer {
    /// Move every object (or `options.org`'s, or only parked ones) that is
    /// not where the current configuration and policy put new objects:
    /// see [`crate::migrate`]. Safe to run again after it was killed, and
    /// alongside puts, gets and deletes, on one host or several.
    pub async fn migrate(&self, options: &MigrateOptions, progress: &dyn Progress) -> Result<MigrateReport> {
        let started = Instant::now();
        if let Some(org) = &options.org {
            crate::org::validate_org(org)?;
        }
        let mut report = MigrateReport { dry_run: options.dry_run, ..MigrateReport::default() };
        if !options.dry_run {
            report.deletions_finished = self.finish_abandoned_deletions(&mut report).await?;
        }
        // First the count, for a progress bar that shows it (up to the limit).
        let total = if progress.wants_totals() { Some(self.count_candidates(options).await?) } else { None };
        progress.stage(if options.dry_run { "would migrate" } else { "migrating" }, total);

        let report = Mutex::new(report);
        let mut left = options.limit.unwrap_or(u64::MAX);
        // Records, then the content only names refer to.
        for refs in [Refs::Record, Refs::Names] {
            let mut after: Option<Record> = None;
            while left > 0 && report.lock().unwrap_or_else(|e| e.into_inner()).stopped.is_none() {
                let page = self.page(options.org.as_deref(), options.parked_only, refs, after.as_ref()).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.clone());
                let mut batch = Vec::new();
                for record in page {
                    report.lock().unwrap_or_else(|e| e.into_inner()).records += 1;
                    if left > 0 && self.needs_placing(&record).await? {
                        left -= 1;
                        batch.push(record);
                    }
                }
                let jobs = options.jobs.max(1);
                futures_util::stream::iter(batch)
                    .for_each_concurrent(jobs, |record| {
                        let report = &report;
                        async move {
                            if report.lock().unwrap_or_else(|e| e.into_inner()).stopped.is_some() {
                                return;
                            }
                            let outcome = if options.dry_run {
                                Ok(Outcome::Moved { left: None })
                            } else {
                                self.move_one(&record, refs).await
                            };
                            report.lock().unwrap_or_else(|e| e.into_inner()).tally(&record, outcome, progress);
                            progress.advance(1);
                        }
                    })
                    .await;
            }
        }
        let mut report = report.into_inner().unwrap_or_else(|e| e.into_inner());
        report.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// The next page of what `coffer migrate` and `coffer verify` look
    /// at, after `after`: `org`'s (or everyone's) records, or the
    /// locations only names point at (`refs`); only parked ones with
    /// `parked_only`.
    pub(crate) async fn page(
        &self,
        org: Option<&str>,
        parked_only: bool,
        refs: Refs,
        after: Option<&Record>,
    ) -> Result<Vec<Record>> {
        let catalog = &self.services.catalog;
        match (refs, org) {
            (Refs::Names, org) => {
                catalog.scan_named(org, after.map(|r| (r.org.as_str(), &r.location)), parked_only, PAGE).await
            }
            (Refs::Record, None) => catalog.scan(after.map(|r| (r.org.as_str(), &r.sha256)), parked_only, PAGE).await,
            (Refs::Record, Some(org)) => {
                let mut after = after.map(|r| r.sha256);
                loop {
                    let mut page = catalog.list(org, after.as_ref(), PAGE).await?;
                    let Some(last) = page.last().map(|r| r.sha256) else { return Ok(page) };
                    if parked_only {
                        page.retain(|r| r.parked);
                    }
                    if !page.is_empty() {
                        return Ok(page);
                    }
                    // Nothing parked on this page: on to the next.
                    after = Some(last);
                }
            }
        }
    }

    /// How many records (and locations of names) a migration with
    /// `options` would place again (at most its limit).
    async fn count_candidates(&self, options: &MigrateOptions) -> Result<u64> {
        let limit = options.limit.unwrap_or(u64::MAX);
        let mut total = 0u64;
        for refs in [Refs::Record, Refs::Names] {
            let mut after = None::<Record>;
            while total < limit {
                let page = self.page(options.org.as_deref(), options.parked_only, refs, after.as_ref()).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.clone());
                for record in &page {
                    if total < limit && self.needs_placing(record).await? {
                        total += 1;
                    }
                }
            }
        }
        Ok(total)
    }

    /// Whether `record` may not be where new objects of its organisation
    /// go: it is parked, or outside the first namespace the deployment's
    /// policy declares for it. (Within that namespace it stays: a policy
    /// that changes only its key layout is not a reason to copy.)
    async fn needs_placing(&self, record: &Record) -> Result<bool> {
        if record.parked {
            return Ok(true);
        }
        let namespaces = match self.namespaces(&record.org).await {
            Ok(ns) => ns,
            // Placing it would fail the same way; say so per object.
            Err(_) => return Ok(true),
        };
        Ok(!namespaces.first().is_some_and(|ns| ns.contains(&record.location)))
    }

    /// Finish deletions whose holder died (a killed run's old bytes), as
    /// gc would; returns how many.
    async fn finish_abandoned_deletions(&self, report: &mut MigrateReport) -> Result<u64> {
        let (catalog, lifecycle) = (&self.services.catalog, &self.services.lifecycle);
        let now = catalog.now().await?;
        let mut finished = 0;
        for t in catalog.tombstones().await? {
            if t.lease_until >= now {
                continue;
            }
            match lifecycle.take_over_and_finish(&t).await {
                Ok(true) => finished += 1,
                Ok(false) => {}
                Err(e) => report.error(format!("finishing the deletion of {}: {e}", t.location)),
            }
        }
        Ok(finished)
    }

    /// Read `record`'s bytes (verified), let the policy place them as new,
    /// confirm the copy by digest, and switch the record (or, with
    /// `Refs::Names`, the organisation's names at its location).
    async fn move_one(&self, record: &Record, refs: Refs) -> Result<Outcome> {
        let org = record.org.as_str();
        self.check_boundary(record).await?;
        let content = match self.read_verified(record).await {
            Ok(c) => c,
            Err(Error::NotFound(_)) if !self.still_refers(record, refs).await? => return Ok(Outcome::Changed),
            Err(e) => return Err(e),
        };
        let namespaces = self.namespaces(org).await?;
        let (outcome, mut reservations) = self.policy(org).put(&self.services, org, &content, namespaces, true).await?;
        let chosen =
            reservations.iter().position(|r| r.location() == &outcome.location).map(|i| reservations.swap_remove(i));
        Reservation::release_all(reservations).await;
        if outcome.parked {
            // S3 is down: the policy would park the object in the
            // database; it stays where it is instead.
            Reservation::release_all(chosen).await;
            return Err(Error::Backend {
                message: "S3 is unavailable (the policy would park the object in the database); it stays where it is"
                    .into(),
                retryable: true,
                source: None,
            });
        }
        if outcome.location == record.location {
            match chosen {
                // No longer parked (S3 is back, but the policy keeps it in
                // the database): the record says so, in one transaction.
                Some(chosen) if record.parked => {
                    if let (Relocated::Changed(_) | Relocated::Lost, _) =
                        self.services.lifecycle.relocate(record, refs, chosen).await?
                    {
                        return Ok(Outcome::Changed);
                    }
                }
                chosen => Reservation::release_all(chosen).await,
            }
            return Ok(Outcome::InPlace);
        }
        let Some(chosen) = chosen else {
            return Err(Error::Internal(format!(
                "the policy placed the content at {} without reserving it",
                outcome.location
            )));
        };
        if let Err(e) = self.confirm_copy(&outcome.location, &content).await {
            Reservation::release_all([chosen]).await;
            return Err(e);
        }
        match self.services.lifecycle.relocate(record, refs, chosen).await? {
            (Relocated::Moved(moved, _), left) => {
                tracing::info!(org, sha256 = %moved.sha256, from = %record.location, to = %moved.location, "moved");
                Ok(Outcome::Moved { left })
            }
            (Relocated::Changed(_) | Relocated::Lost, _) => Ok(Outcome::Changed),
        }
    }

    /// Whether `record` (or, with `Refs::Names`, a name of its
    /// organisation at its location) still stands as it was read.
    pub(crate) async fn still_refers(&self, record: &Record, refs: Refs) -> Result<bool> {
        let catalog = &self.services.catalog;
        Ok(match refs {
            Refs::Record => catalog.lookup(&record.org, &record.sha256).await?.as_ref() == Some(record),
            Refs::Names => catalog.named_at(&record.org, &record.location).await?,
        })
    }

    /// `record`'s bytes, read from where it says and verified against its
    /// digest (in memory when small, spooled otherwise).
    async fn read_verified(&self, record: &Record) -> Result<Content> {
        let at = &record.location;
        let stream = self.services.backends.get(at.backend)?.get(&at.container, &at.name).await?;
        let stream = verify_stream(stream, record.sha256, record.size, format!("{} ({at})", record.sha256));
        Content::from_stream(stream, Some(&record.content_type), record.size, self.spool()).await
    }

    /// Confirm that `at` holds `content`, by digest, after it was written
    /// or found there.
    async fn confirm_copy(&self, at: &Location, content: &Content) -> Result<()> {
        match self.services.backends.get(at.backend)?.head(&at.container, &at.name).await? {
            Some(meta) => meta.confirm(at, content),
            None => Err(Error::Integrity(format!("{at}: the copy is not there after it was written"))),
        }
    }
}
