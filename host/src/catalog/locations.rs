//! The lifecycle of locations, as transactions: reservations of puts in
//! progress (pending references), records committed from them, and
//! tombstones of bytes being deleted. The rules these keep are in
//! [`super`]; the protocol built on them is [`super::lifecycle`].

use std::collections::HashSet;

use async_trait::async_trait;
use serde::Serialize;

use super::records::Record;
use crate::backend::{BackendKind, Location};
use crate::content::Digest;
use crate::error::{Error, Result};

/// A random name for one reservation or tombstone, so that only its holder
/// can commit, release or clear it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Token(String);

impl Token {
    /// A fresh token (128 random bits).
    pub fn new() -> Token {
        Token(format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)))
    }

    /// A token as a database stored it.
    pub fn from_stored(s: String) -> Token {
        Token(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Token {
    fn default() -> Token {
        Token::new()
    }
}

/// A put in progress: a reference to `location` that is not committed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub token: Token,
    pub org: String,
    pub sha256: Digest,
    pub size: u64,
    pub location: Location,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Last sign of life from the put (seconds since the Unix epoch); a
    /// reservation untouched for longer than `coffer gc --older-than` is
    /// abandoned.
    pub touched_at: u64,
}

impl Pending {
    /// Check that this reservation is the one for `record` (the same
    /// organisation and content) before the record is committed from it.
    pub fn check_for(&self, record: &Record) -> Result<()> {
        self.check_content(&record.org, &record.sha256)
    }

    /// Check that this reservation is the one for moving `record` to `to`.
    pub fn check_move(&self, record: &Record, to: &Location) -> Result<()> {
        self.check_for(record)?;
        if self.location != *to {
            return Err(Error::Internal(format!(
                "reservation {} is for {}, not {to}",
                self.token.as_str(),
                self.location
            )));
        }
        Ok(())
    }

    /// Check that this reservation is `org`'s, for `sha256`.
    pub fn check_content(&self, org: &str, sha256: &Digest) -> Result<()> {
        if self.org != org || self.sha256 != *sha256 {
            return Err(Error::Internal(format!(
                "reservation {} is for {}/{}, not {org}/{sha256}",
                self.token.as_str(),
                self.org,
                self.sha256,
            )));
        }
        Ok(())
    }
}

/// A location whose bytes are being deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub location: Location,
    pub token: Token,
    pub created_at: u64,
    /// Until then only the holder acts on it; after it, anyone may take it
    /// over (its holder has given up or died).
    pub lease_until: u64,
}

/// The terms of a tombstone a transaction may create: who holds it, and
/// for how long. The transaction reads the clock itself, so time spent
/// waiting for the database never eats into the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: Token,
    pub secs: u64,
}

impl Lease {
    /// The tombstone these terms give `location` at `now`.
    pub fn tombstone(&self, location: &Location, now: u64) -> Tombstone {
        Tombstone {
            location: location.clone(),
            token: self.token.clone(),
            created_at: now,
            lease_until: now + self.secs,
        }
    }
}

/// What [`Locations::reserve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// The pending reference is recorded.
    Granted,
    /// The location's bytes are being deleted; nothing was recorded.
    Tombstoned(Tombstone),
    /// Another organisation has a record at the location: it is not this
    /// organisation's to use. Nothing was recorded.
    OwnedByOthers,
}

/// What [`Locations::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The pending reference became this record.
    Inserted(Record),
    /// The organisation already had a record for the digest; it stands
    /// (the reservation, if any, is left for the caller to release).
    Existing(Record),
    /// Neither a record nor the reservation exists any more (it was
    /// reaped, or the record a de-duplication relied on was deleted):
    /// nothing is recorded, the put must start again.
    Lost,
}

/// What [`Locations::release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// There was no such reservation (or it was touched after the cutoff):
    /// nothing changed.
    NotHeld,
    /// The reservation is gone; with a tombstone when its location was left
    /// unreferenced and a lease was given.
    Released(Option<Tombstone>),
}

/// What [`Locations::relocate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relocated {
    /// The record now names the reserved location; with a tombstone when
    /// its old location was left unreferenced (the caller deletes those
    /// bytes and clears it).
    Moved(Record, Option<Tombstone>),
    /// The record is gone, or no longer at the old location (deleted, or
    /// moved by someone else meanwhile): nothing changed.
    Changed(Option<Record>),
    /// The reservation no longer exists (reaped): nothing changed.
    Lost,
}

/// The lifecycle of locations: each method is one transaction keeping
/// the rules of [`super`].
#[async_trait]
pub trait Locations: Send + Sync {
    /// The catalog's clock (seconds since the Unix epoch): the times it
    /// keeps (reservations touched, tombstone leases) are in it. The
    /// host's clock by default; the database server's on PostgreSQL, so
    /// hosts with skewed clocks agree.
    async fn now(&self) -> Result<u64> {
        Ok(crate::clock::now_secs())
    }

    /// Record `pending` unless the location has a tombstone or another
    /// organisation's record.
    async fn reserve(&self, pending: &Pending) -> Result<Reserved>;

    /// Mark the reservation alive at `now`; false if it no longer exists.
    async fn touch(&self, token: &Token, now: u64) -> Result<bool>;

    /// Turn the reservation `token` into `record` (whose location is taken
    /// from the reservation), unless the organisation already has a record
    /// for the digest. With no token, only an existing record can answer.
    async fn commit(&self, token: Option<&Token>, record: &Record) -> Result<Committed>;

    /// Drop the reservation `token` (with `untouched_since`, only if it was
    /// last touched at or before then: gc never reaps a reservation that
    /// came alive again). With `lease`, and if that leaves its location
    /// with no record, no pending reference and no tombstone, a tombstone on
    /// those terms is created and returned, in the same transaction: the
    /// caller then deletes the bytes and clears it.
    async fn release(&self, token: &Token, untouched_since: Option<u64>, lease: Option<&Lease>) -> Result<Released>;

    /// Remove the organisation's record; if that leaves its location with
    /// no record and no pending reference, create a tombstone on `lease`'s
    /// terms in the same transaction.
    async fn remove(&self, org: &str, sha256: &Digest, lease: &Lease) -> Result<Option<(Record, Option<Tombstone>)>>;

    /// Move `org`'s record of `sha256` from `from` to `to`, which the
    /// reservation `token` holds for the same content, in one transaction:
    /// the record names `to` (and is no longer parked), so do the
    /// organisation's names that pointed at `from`, the reservation is
    /// gone, and if that leaves `from` with no record and no pending
    /// reference, it is tombstoned on `lease`'s terms.
    async fn relocate(
        &self,
        org: &str,
        sha256: &Digest,
        from: &Location,
        to: &Location,
        token: &Token,
        lease: &Lease,
    ) -> Result<Relocated>;

    /// Tombstone `location` on `lease`'s terms if it has no record, no
    /// pending reference and no tombstone (for bytes found unreferenced).
    async fn tombstone_if_unreferenced(&self, location: &Location, lease: &Lease) -> Result<Option<Tombstone>>;

    /// Take over the tombstone at `location` held by `holder`, if its lease
    /// has run out: it is then held on `lease`'s terms.
    async fn take_over(&self, location: &Location, holder: &Token, lease: &Lease) -> Result<Option<Tombstone>>;

    /// Remove the tombstone at `location` if `token` holds it.
    async fn clear_tombstone(&self, location: &Location, token: &Token) -> Result<bool>;

    /// Every tombstone.
    async fn tombstones(&self) -> Result<Vec<Tombstone>>;

    /// Reservations last touched at or before `cutoff` (seconds since the
    /// epoch).
    async fn pending_untouched_since(&self, cutoff: u64) -> Result<Vec<Pending>>;

    /// The reservations of `location`.
    async fn pending_at(&self, location: &Location) -> Result<Vec<Pending>>;

    /// Which of `names` in `container` of `backend` have a record, a
    /// pending reference or a tombstone.
    async fn referenced(&self, backend: BackendKind, container: &str, names: &[String]) -> Result<HashSet<String>>;

    /// Every container of `backend` a reservation has ever named (kept, so
    /// gc still scans a bucket whose only put crashed), and those records
    /// and tombstones name.
    async fn containers(&self, backend: BackendKind) -> Result<Vec<String>>;
}
