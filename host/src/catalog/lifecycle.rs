//! The location lifecycle, written once for every database on top of the
//! [`Catalog`]'s transactions (README "Guarantees").
//!
//! - **Put**: [`Lifecycle::reserve`] records a pending reference to the
//!   location *before* anything is written or looked for there (waiting
//!   while the location's bytes are being deleted); the bytes are written
//!   or found; [`Lifecycle::commit`] turns the reservation into the record,
//!   or reports that it was lost and the put must start again.
//! - **Delete**: [`Lifecycle::remove`] removes the record and, in the same
//!   transaction, tombstones the location if nothing else refers to it;
//!   the tombstone's holder deletes the bytes and then clears it.
//! - **Crashes**: a reservation whose holder died is reaped by `coffer gc`
//!   after the grace period; a tombstone whose holder died is taken over
//!   after its lease (by the next put that needs the location, or by gc).
//!
//! Nothing here holds a lock in memory: every rule is a transaction, so it
//! holds across processes and hosts sharing one database.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Catalog, Committed, Lease, Pending, Record, Released, Relocated, Reserved, Token, Tombstone};
use crate::backend::{Backends, Location};
use crate::content::Digest;
use crate::error::{Error, Result};

/// How often a put in progress marks its reservation alive.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// Seconds a tombstone's lease lasts beyond twice the delete timeout: room
/// for one statement still waiting on a busy database (its busy timeout)
/// after the deletion's future was given up, and for clocks that count in
/// whole seconds.
const LEASE_SLACK_SECS: u64 = 3;

/// What a reservation's holder may have put at its location, which
/// decides what releasing it does with the bytes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Nothing: the bytes there (if any) are left alone.
    Nothing,
    /// Perhaps the put's bytes: deleted if nothing else refers to them,
    /// but only once a HEAD (made while the reservation still protects the
    /// location) confirms they are this content.
    Maybe,
    /// Committed bytes, pinned ([`Lifecycle::pin_named`]): deleted if
    /// nothing else refers to them, without a look.
    Committed,
}

/// What refers to a location that is moved: a record, or an
/// organisation's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refs {
    Record,
    Names,
}

/// The lifecycle of locations: reservations, commits, removals,
/// tombstones.
#[derive(Debug)]
pub struct Lifecycle {
    catalog: Arc<dyn Catalog>,
    backends: Backends,
    /// The longest one deletion of bytes may take; a tombstone's lease is
    /// twice this, so a holder that is still working never loses it.
    delete_timeout: Duration,
}

impl Lifecycle {
    pub fn new(catalog: Arc<dyn Catalog>, backends: Backends, delete_timeout: Duration) -> Arc<Lifecycle> {
        Arc::new(Lifecycle { catalog, backends, delete_timeout })
    }

    /// Terms for a new tombstone: held for twice the delete timeout, plus
    /// slack. Its holder gives up deleting after one delete timeout, so it
    /// never acts after its lease has run out.
    pub fn lease(&self) -> Lease {
        let secs = (self.delete_timeout.as_secs_f64() * 2.0).ceil() as u64 + LEASE_SLACK_SECS;
        Lease { token: Token::new(), secs }
    }

    /// Reserve `at` for a put of `sha256` by `org`. While the location's
    /// bytes are being deleted the put waits (the delete finishes in
    /// moments); a tombstone whose lease ran out is taken over and its
    /// deletion finished first.
    pub async fn reserve(self: &Arc<Self>, org: &str, sha256: Digest, size: u64, at: &Location) -> Result<Reservation> {
        let start = Instant::now();
        // Long enough for a live holder to finish, or for its lease to run
        // out and the deletion to be taken over.
        let patience = Duration::from_secs(self.lease().secs + 1) + self.delete_timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            let now = crate::clock::now_secs();
            let pending = Pending {
                token: Token::new(),
                org: org.to_string(),
                sha256,
                size,
                location: at.clone(),
                created_at: now,
                touched_at: now,
            };
            match self.catalog.reserve(&pending).await? {
                Reserved::Granted => {
                    return Ok(Reservation {
                        lifecycle: self.clone(),
                        pending,
                        written: Written::Nothing,
                        settled: false,
                    });
                }
                // The host, not the policy, keeps tenants apart.
                Reserved::OwnedByOthers => {
                    return Err(Error::Denied(format!("{at} belongs to another organisation")));
                }
                Reserved::Tombstoned(t) => {
                    // Its holder gave up or died (its lease ran out, in the
                    // catalog's clock): finish its deletion, then reserve.
                    if t.lease_until < self.catalog.now().await? && self.take_over_and_finish(&t).await? {
                        tracing::info!(location = %at, "took over an abandoned deletion");
                        continue;
                    }
                    if start.elapsed() > patience {
                        return Err(Error::Backend {
                            message: format!(
                                "{at} is being deleted by another operation, which has not finished for {:.0} s; \
                                 try again later",
                                start.elapsed().as_secs_f64()
                            ),
                            retryable: true,
                            source: None,
                        });
                    }
                    tracing::debug!(location = %at, lease_until = t.lease_until, "waiting for a deletion to finish");
                    tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64())).await;
                    delay = (delay * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// `org`'s name `name` in container `container`, with a pin on its
    /// bytes: a pending reference taken in the same transaction as the
    /// name was read, marked alive while the pin lives, so the bytes stay
    /// readable even if the name is deleted or replaced meanwhile. Dropping
    /// the pin releases it, and deletes the bytes if nothing else refers
    /// to them by then.
    pub async fn pin_named(
        self: &Arc<Self>,
        org: &str,
        container: &str,
        name: &str,
    ) -> Result<Option<(super::named::Named, Pin)>> {
        let Some((named, pending)) = self.catalog.pin_named(org, container, name, &Token::new()).await? else {
            return Ok(None);
        };
        let (catalog, token) = (self.catalog.clone(), pending.token.clone());
        let heartbeat = tokio::spawn(async move { heartbeat(&*catalog, &token, "the pin of an open value").await });
        let reservation = Reservation { lifecycle: self.clone(), pending, written: Written::Committed, settled: false };
        Ok(Some((named, Pin { _reservation: reservation, heartbeat })))
    }

    /// Drop names (see [`NamedObjects::drop_names`](super::NamedObjects::drop_names)) and delete the bytes that
    /// left unreferenced; false if the container does not exist.
    pub async fn drop_names(&self, org: &str, container: &str, which: super::named::Names<'_>) -> Result<bool> {
        let (lease, asked) = (self.lease(), Instant::now());
        let Some(tombstones) = self.catalog.drop_names(org, container, which, &lease).await? else {
            return Ok(false);
        };
        self.finish_all(&tombstones, asked).await;
        Ok(true)
    }

    /// Finish each of `tombstones` (all granted by one transaction sent at
    /// `asked`) after the change that made them is committed: a failure is
    /// logged, not returned (the change stands; the tombstone stays for
    /// `coffer gc`, or the next put of the location, to finish).
    pub async fn finish_all(&self, tombstones: &[Tombstone], asked: Instant) {
        for t in tombstones {
            if let Err(e) = self.finish(t, asked).await {
                tracing::warn!(location = %t.location, error = %e, "could not delete unreferenced bytes yet; coffer gc will");
            }
        }
    }

    /// Turn `reservation` into `record`; with no reservation (the policy
    /// de-duplicated against the organisation's own record), only that
    /// record, if it still exists, can answer.
    pub async fn commit(&self, record: &Record, reservation: Option<&Reservation>) -> Result<Committed> {
        self.catalog.commit(reservation.map(|r| &r.pending.token), record).await
    }

    /// Move `record` to the location `reservation` holds, where a copy of
    /// its content has been confirmed (`coffer migrate`): the record is
    /// switched in one transaction, and the old bytes deleted if nothing
    /// else refers to them. If the record changed meanwhile (deleted, or
    /// moved by someone else) or the reservation was reaped, nothing is
    /// switched and the reservation is released (its copy deleted if
    /// nothing refers to it). The second value is the error that kept the
    /// old bytes from being deleted (`coffer gc` deletes them later).
    ///
    /// With `Refs::Names`, `record` stands for the organisation's names at
    /// its location (see [`NamedObjects::scan_named`](super::NamedObjects::scan_named)), and they are switched.
    pub async fn relocate(
        &self,
        record: &Record,
        refs: Refs,
        reservation: Reservation,
    ) -> Result<(Relocated, Option<Error>)> {
        let (lease, asked) = (self.lease(), Instant::now());
        let to = reservation.location().clone();
        let (org, sha, from, token) = (&record.org, &record.sha256, &record.location, &reservation.pending.token);
        let relocated = match refs {
            Refs::Record => self.catalog.relocate(org, sha, from, &to, token, &lease).await,
            Refs::Names => self.catalog.relocate_named(record, &to, token, &lease).await,
        };
        match relocated {
            Ok(Relocated::Moved(moved, tombstone)) => {
                reservation.settle();
                let left = match tombstone {
                    Some(t) => self.finish(&t, asked).await.err(),
                    None => None,
                };
                Ok((Relocated::Moved(moved, None), left))
            }
            Ok(other) => {
                Reservation::release_all([reservation]).await;
                Ok((other, None))
            }
            Err(e) => {
                Reservation::release_all([reservation]).await;
                Err(e)
            }
        }
    }

    /// Remove `org`'s record of `sha256`; if nothing else refers to its
    /// location, delete the bytes. `None` if there was no record.
    pub async fn remove(&self, org: &str, sha256: &Digest) -> Result<Option<Record>> {
        let (lease, asked) = (self.lease(), Instant::now());
        let Some((record, tombstone)) = self.catalog.remove(org, sha256, &lease).await? else {
            return Ok(None);
        };
        if let Some(t) = tombstone {
            self.finish(&t, asked).await.map_err(|e| Error::Backend {
                message: format!(
                    "the record is removed, but its bytes at {} could not be deleted yet ({e}); `coffer gc` deletes them",
                    t.location
                ),
                retryable: false,
                source: Some(Box::new(e)),
            })?;
        }
        Ok(Some(record))
    }

    /// Delete the bytes under tombstone `t`, which the caller holds, then
    /// clear it. On failure the tombstone stays, for `coffer gc` (or the
    /// next put of the location) to take over once its lease runs out.
    ///
    /// `asked` is when the transaction that granted `t` was sent: the
    /// lease began no earlier, so its length counted from then bounds
    /// what is left of it, with no clock compared to another (the lease
    /// is kept in the catalog's clock, the database server's on
    /// PostgreSQL, which this host's clock may not agree with).
    pub async fn finish(&self, t: &Tombstone, asked: Instant) -> Result<()> {
        let store = self.backends.get(t.location.backend)?;
        // Never act past the lease: after it, someone else may take over
        // and the location be written again.
        let length = Duration::from_secs(t.lease_until.saturating_sub(t.created_at));
        let left = length.saturating_sub(asked.elapsed()).saturating_sub(Duration::from_secs(LEASE_SLACK_SECS));
        let budget = self.delete_timeout.min(left);
        if budget.is_zero() {
            return Err(Error::Backend {
                message: format!(
                    "the lease to delete {} ran out before the deletion began; coffer gc finishes it",
                    t.location
                ),
                retryable: true,
                source: None,
            });
        }
        match tokio::time::timeout(budget, store.delete(&t.location.container, &t.location.name)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Backend {
                    message: format!(
                        "deleting {} took longer than the delete timeout ({} s, COFFER_DELETE_TIMEOUT)",
                        t.location,
                        self.delete_timeout.as_secs_f64()
                    ),
                    retryable: true,
                    source: None,
                });
            }
        }
        if !self.catalog.clear_tombstone(&t.location, &t.token).await? {
            tracing::warn!(location = %t.location, "a tombstone was taken over while its bytes were being deleted");
        }
        Ok(())
    }

    /// Take over tombstone `t` if its lease ran out, and finish it. False
    /// when someone else holds it (now).
    pub async fn take_over_and_finish(&self, t: &Tombstone) -> Result<bool> {
        let asked = Instant::now();
        let Some(ours) = self.catalog.take_over(&t.location, &t.token, &self.lease()).await? else {
            return Ok(false);
        };
        self.finish(&ours, asked).await?;
        Ok(true)
    }

    /// Drop reservation `pending`; what happens to the bytes at its
    /// location is as `written` says (see [`Written`]): whatever else is
    /// there (another system's object in a shared bucket) is never
    /// touched.
    pub async fn release(&self, pending: &Pending, written: Written) -> Result<()> {
        self.release_if(pending, None, written).await.map(|_| ())
    }

    /// Release `pending` for `coffer gc`, as abandoned, unless it was
    /// touched after `cutoff` (its put came alive again). True if released.
    pub async fn reap(&self, pending: &Pending, cutoff: u64) -> Result<bool> {
        self.release_if(pending, Some(cutoff), Written::Maybe).await
    }

    async fn release_if(&self, pending: &Pending, untouched_since: Option<u64>, written: Written) -> Result<bool> {
        let ours = match written {
            Written::Nothing => false,
            Written::Committed => true,
            Written::Maybe => {
                let at = &pending.location;
                match self.backends.get(at.backend)?.head(&at.container, &at.name).await {
                    Ok(Some(meta)) => meta.sha256 == Some(pending.sha256) && meta.size == pending.size,
                    Ok(None) => false,
                    Err(e) => {
                        // Left for `coffer gc`, which applies the same rule.
                        tracing::warn!(location = %at, error = %e, "could not look at what a failed put left");
                        false
                    }
                }
            }
        };
        let (lease, asked) = (ours.then(|| self.lease()), Instant::now());
        match self.catalog.release(&pending.token, untouched_since, lease.as_ref()).await? {
            Released::NotHeld => Ok(false),
            Released::Released(None) => Ok(true),
            Released::Released(Some(t)) => {
                self.finish(&t, asked).await?;
                Ok(true)
            }
        }
    }
}

/// Mark the reservation `token` alive every [`HEARTBEAT`] until it is
/// found reaped (said once, as `what`); never returns otherwise.
async fn heartbeat(catalog: &dyn Catalog, token: &Token, what: &str) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tick.tick().await;
        match catalog.touch(token, crate::clock::now_secs()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("{what} was reaped (coffer gc --older-than is shorter than it was held)");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not mark {what} alive"),
        }
    }
}

/// A pending reference held by a put in progress. Commit it (then
/// [`Reservation::settle`]), or [`Reservation::release`] it; one dropped
/// unsettled (its put was cancelled) is released in the background.
#[derive(Debug)]
pub struct Reservation {
    lifecycle: Arc<Lifecycle>,
    pending: Pending,
    written: Written,
    settled: bool,
}

/// A pin on a name's bytes ([`Lifecycle::pin_named`]): they stay until it
/// is dropped.
#[derive(Debug)]
pub struct Pin {
    _reservation: Reservation,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Reservation {
    /// The reserved location.
    pub fn location(&self) -> &Location {
        &self.pending.location
    }

    /// The reservation's token.
    pub fn token(&self) -> &Token {
        &self.pending.token
    }

    /// Note that the put may have written bytes at the location.
    pub fn mark_written(&mut self) {
        self.written = Written::Maybe;
    }

    /// Run `work` (the write), marking the reservation alive meanwhile so
    /// that `coffer gc` never takes a long upload for an abandoned one.
    pub async fn keep_alive<T>(&self, work: impl Future<Output = T>) -> T {
        let heartbeat = heartbeat(&*self.lifecycle.catalog, &self.pending.token, "the reservation of a running put");
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => out,
            // Reaped: nothing is left to mark alive; the work goes on
            // (its commit will find the reservation gone).
            () = heartbeat => work.await,
        }
    }

    /// The reservation is done with: committed, or reaped.
    pub fn settle(mut self) {
        self.settled = true;
    }

    /// Give the reservation up (deleting what the put wrote, if nothing
    /// else refers to it).
    pub async fn release(mut self) -> Result<()> {
        self.settled = true;
        self.lifecycle.release(&self.pending, self.written).await
    }

    /// Release each of `reservations`, logging (not returning) failures:
    /// the caller's own outcome matters more, and `coffer gc` reaps what
    /// stays.
    pub async fn release_all(reservations: impl IntoIterator<Item = Reservation>) {
        for r in reservations {
            let at = r.location().clone();
            if let Err(e) = r.release().await {
                tracing::warn!(location = %at, error = %e, "could not release a reservation; coffer gc will");
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // The put was cancelled (its future dropped): release in the
        // background, tracked, so a shutting-down process can wait for it.
        let lifecycle = self.lifecycle.clone();
        let pending = self.pending.clone();
        let written = self.written;
        crate::cleanup::cleanups().spawn("releasing a cancelled put's reservation (or a closed value's pin)", async move {
            if let Err(e) = lifecycle.release(&pending, written).await {
                tracing::warn!(location = %pending.location, error = %e, "could not release a cancelled put's reservation; coffer gc will");
            }
        });
    }
}
