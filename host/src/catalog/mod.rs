//! The catalog: which organisation owns which content, where its bytes
//! live, and the lifecycle of every location (README "Guarantees").
//!
//! - this file: the [`Catalog`] trait each database implements, as
//!   transactions, and the rows it keeps;
//! - `lifecycle.rs`: the protocol built on those transactions, written
//!   once for every database: reserve → write → commit for a put; remove →
//!   tombstone → delete bytes → clear for a delete.
//!
//! The rules every implementation keeps, each inside one transaction:
//! 1. A tombstone is created only for a location with no record, no name
//!    (see `named.rs`) and no pending reference, outside every namespace adopted in place (another
//!    system's bytes), and while it exists no reservation is granted.
//! 2. A record is created only by committing a pending reference that still
//!    exists (or is already there).
//! 3. Bytes are deleted only by the holder of the location's tombstone.
//!
//! Together: a record's bytes cannot be deleted while the record exists,
//! and bytes that lose their last reference are either deleted under a
//! tombstone or found later by `coffer gc`.

use std::collections::HashSet;

use async_trait::async_trait;
use serde::Serialize;

use crate::backend::{BackendKind, Location};
use crate::content::Digest;
use crate::error::Result;

pub mod lifecycle;
pub mod named;
pub mod namespace;

use self::named::{Copied, Named, NamedCommitted, Names, Version};
use self::namespace::{Claimed, Namespace};

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
            return Err(crate::Error::Internal(format!(
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
            return Err(crate::Error::Internal(format!(
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

/// What [`Catalog::reserve`] found.
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

/// What [`Catalog::commit`] did.
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

/// What [`Catalog::release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// There was no such reservation (or it was touched after the cutoff):
    /// nothing changed.
    NotHeld,
    /// The reservation is gone; with a tombstone when its location was left
    /// unreferenced and a lease was given.
    Released(Option<Tombstone>),
}

/// What [`Catalog::relocate`] did.
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

/// Storage for [`Record`]s and the lifecycle of locations. Each method is
/// one transaction.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The catalog's clock (seconds since the Unix epoch): the times it
    /// keeps (reservations touched, tombstone leases) are in it. The
    /// host's clock by default; the database server's on PostgreSQL, so
    /// hosts with skewed clocks agree.
    async fn now(&self) -> Result<u64> {
        Ok(crate::now_secs())
    }

    /// This organisation's record for `sha256`.
    async fn lookup(&self, org: &str, sha256: &Digest) -> Result<Option<Record>>;

    /// [`Catalog::lookup`], and whether the record's location lies in a
    /// namespace its organisation claims or adopted, in one statement: the
    /// tenant-boundary check of a read costs no round trip of its own.
    /// `false` means "not shown here", and the caller takes the slow path
    /// ([`crate::catalog::namespace::Boundaries`]); the default says so for
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

    /// Adopt `namespace` for `org`: another system's objects, recorded in
    /// place. Refused (`Taken`) when it overlaps any claim (the
    /// organisation's own too: Coffer's bytes must stay deletable) or
    /// another adoption; adopting the same again is `Held`. An adopted
    /// namespace is not a claim: no put may write there (a claim that
    /// overlaps one is refused), its records are readable by `org`, and
    /// Coffer never deletes bytes there.
    async fn adopt(&self, org: &str, namespace: &Namespace) -> Result<Claimed>;

    /// Every adopted namespace, with the organisation that adopted it.
    async fn adopted(&self) -> Result<Vec<(String, Namespace)>>;

    /// Record that `org` holds `namespace`, unless another organisation
    /// holds one that overlaps it (the same container, one prefix a prefix
    /// of the other), or it overlaps an adopted namespace (anyone's).
    /// Claims are never given up.
    async fn claim(&self, org: &str, namespace: &Namespace) -> Result<Claimed>;

    /// The namespaces `org` holds.
    async fn claims(&self, org: &str) -> Result<Vec<Namespace>>;

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

    // Named objects (`named.rs`, the `wasi:blobstore` host). A catalog
    // that does not keep them says so.

    /// Create `org`'s container `container`; false if it already existed.
    async fn create_container(&self, org: &str, container: &str) -> Result<bool> {
        let _ = (org, container);
        Err(no_names())
    }

    /// When `org`'s container `container` was created, if it exists.
    async fn container(&self, org: &str, container: &str) -> Result<Option<u64>> {
        let _ = (org, container);
        Err(no_names())
    }

    /// The name `name` in `org`'s container `container`.
    async fn named(&self, org: &str, container: &str, name: &str) -> Result<Option<Named>> {
        let _ = (org, container, name);
        Err(no_names())
    }

    /// The names in `org`'s container `container` in name order, after
    /// `after`; `None` if the container does not exist.
    async fn list_named(&self, org: &str, container: &str, after: &str, limit: usize) -> Result<Option<Vec<Named>>> {
        let _ = (org, container, after, limit);
        Err(no_names())
    }

    /// Point `named` (its organisation, container and name) at the content
    /// the reservation `token` holds, or with no token at the location of
    /// the organisation's own record of the content, in one transaction:
    /// the reservation is gone, and a name it replaces is dropped, its
    /// location tombstoned on `lease`'s terms if that left it unreferenced.
    /// Only if the name is still the version `replaces` (`None`: no
    /// name), what the caller checked; otherwise `Changed`.
    async fn commit_named(
        &self,
        token: Option<&Token>,
        named: &Named,
        replaces: Option<&Version>,
        lease: &Lease,
    ) -> Result<NamedCommitted> {
        let _ = (token, named, replaces, lease);
        Err(no_names())
    }

    /// Drop `which` names (or the empty container) of `org`'s container
    /// `container` in one transaction, tombstoning on `lease`'s terms every
    /// location that left unreferenced; `None` if the container does not
    /// exist.
    async fn drop_names(
        &self,
        org: &str,
        container: &str,
        which: Names<'_>,
        lease: &Lease,
    ) -> Result<Option<Vec<Tombstone>>> {
        let _ = (org, container, which, lease);
        Err(no_names())
    }

    /// Point `to` (container, name) at what `from` names, in one
    /// transaction, and with `remove_source` drop `from` (a move): no byte
    /// is copied. A destination it replaces is dropped, its location
    /// tombstoned on `lease`'s terms if that left it unreferenced. Only if
    /// `from` is still the version `expect.0` and `to` the version
    /// `expect.1` (`None`: no name), what the caller checked; otherwise
    /// `Changed`.
    async fn copy_named(
        &self,
        org: &str,
        from: (&str, &str),
        to: (&str, &str),
        remove_source: bool,
        expect: (&Version, Option<&Version>),
        lease: &Lease,
    ) -> Result<Copied> {
        let _ = (org, from, to, remove_source, expect, lease);
        Err(no_names())
    }

    /// The name `name` in `org`'s container `container`, and, in the same
    /// transaction, a pending reference `pending` (whose location and
    /// content are taken from the name) that keeps its bytes until it is
    /// released, whatever happens to the name meanwhile.
    async fn pin_named(
        &self,
        org: &str,
        container: &str,
        name: &str,
        token: &Token,
    ) -> Result<Option<(Named, Pending)>> {
        let _ = (org, container, name, token);
        Err(no_names())
    }

    /// The locations names point at, as records for `coffer migrate` and
    /// `coffer verify`: one per organisation (`org`'s only, if given) and
    /// location (its digest, size and content type, the earliest time,
    /// parked if any name there is), leaving out locations a record of the
    /// same organisation has (moving the record moves its names), in
    /// (organisation, location) order after `after`. A catalog without
    /// named objects has none.
    async fn scan_named(
        &self,
        org: Option<&str>,
        after: Option<(&str, &Location)>,
        parked_only: bool,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let _ = (org, after, parked_only, limit);
        Ok(Vec::new())
    }

    /// Whether any of `org`'s names points at `at`.
    async fn named_at(&self, org: &str, at: &Location) -> Result<bool> {
        let _ = (org, at);
        Ok(false)
    }

    /// [`Catalog::relocate`] for names: every name of `record`'s
    /// organisation at its location (holding its content; `record` as
    /// [`Catalog::scan_named`] gave it) now names `to`, which the
    /// reservation `token` holds (and is no longer parked), in one
    /// transaction; the reservation is gone, and the old location is
    /// tombstoned on `lease`'s terms if that left it unreferenced.
    /// `Changed(None)` when no name is there any more.
    async fn relocate_named(&self, record: &Record, to: &Location, token: &Token, lease: &Lease) -> Result<Relocated> {
        let _ = (record, to, token, lease);
        Err(no_names())
    }

    /// Every container of `backend` a reservation has ever named (kept, so
    /// gc still scans a bucket whose only put crashed), and those records
    /// and tombstones name.
    async fn containers(&self, backend: BackendKind) -> Result<Vec<String>>;
}

/// What a catalog without named objects answers.
fn no_names() -> crate::Error {
    crate::Error::Unsupported("this catalog does not keep named objects (wasi:blobstore)".into())
}
