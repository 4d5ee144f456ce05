//! Named objects on top of content addressing (the `wasi:blobstore`
//! host, [`crate::blobstore`]): an organisation's *containers* hold
//! *names*, and each name points at a location holding content by digest;
//! [`NamedObjects`] is how a database keeps them.
//!
//! A name is a reference to its location, like a record: the lifecycle's
//! rules (see [`super`]) count it, so bytes are never deleted while a name
//! points at them, and replacing or deleting the last name of a location
//! tombstones it in the same transaction. Names are committed from a
//! put's reservation (or from the organisation's own record of the
//! content), never pointed at a location the organisation does not
//! already hold; copies and moves only add and drop names.

use async_trait::async_trait;
use serde::Serialize;

use super::locations::{Lease, Pending, Relocated, Token, Tombstone};
use super::records::Record;
use crate::backend::Location;
use crate::content::Digest;
use crate::error::{Error, Result};

/// Longest container or object name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// One name in an organisation's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Named {
    pub org: String,
    pub container: String,
    pub name: String,
    pub sha256: Digest,
    pub size: u64,
    pub content_type: String,
    /// Where the content's bytes are.
    pub location: Location,
    /// Seconds since the Unix epoch (when the name was last written).
    pub created_at: u64,
    /// Stored in the database because S3 was unavailable (as a record
    /// can be); `coffer drain` moves it.
    pub parked: bool,
}

/// What a name named when a caller checked it: its content and when it
/// was written (seconds). Anything written under the name since changes
/// it, even the same content again (which makes it younger, for a
/// retention policy).
pub type Version = (Digest, u64);

impl Named {
    /// This name's [`Version`].
    pub fn version(&self) -> Version {
        (self.sha256, self.created_at)
    }
}

/// What [`NamedObjects::drop_names`] drops: what the caller checked
/// (the policy's consent is for the content it saw), nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names<'a> {
    /// These names, each only while it is still this version: one that
    /// does not exist, or was written again since, is left alone.
    These(&'a [(String, Version)]),
    /// The container itself, if no name is left in it (otherwise a
    /// conflict).
    Container,
}

/// What [`NamedObjects::commit_named`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedCommitted {
    /// The name points at the content; with a tombstone when the content
    /// it pointed at before was left unreferenced (the caller deletes
    /// those bytes and clears it).
    Done(Box<Named>, Option<Tombstone>),
    /// The container does not exist (any more): nothing changed.
    NoContainer,
    /// The name no longer names what the caller checked: nothing changed.
    Changed,
    /// Neither the reservation nor the organisation's record of the
    /// content exists any more: nothing changed, the put must start again.
    Lost,
}

/// What [`NamedObjects::copy_named`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// The destination names the source's content; with the tombstones of
    /// what that left unreferenced (a replaced destination's content).
    Done(Box<Named>, Vec<Tombstone>),
    /// The source name does not exist.
    NoSource,
    /// The destination container does not exist.
    NoContainer,
    /// The source or the destination no longer names what the caller
    /// checked: nothing changed.
    Changed,
}

/// Check a container or object name: 1 to 1024 bytes of UTF-8, no control
/// characters (the blobstore contract allows any string; these would only
/// make listings and logs ambiguous).
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("is {} bytes long, over the limit of {MAX_NAME_LEN}", name.len()))
    } else if name.chars().any(char::is_control) {
        Some("contains a control character".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => Err(crate::Error::InvalidName(format!("{what} name {name:?} {p}"))),
        None => Ok(()),
    }
}

/// Named objects: containers of names, each pointing at content by
/// location. Each method is one transaction; a name is a reference in the
/// lifecycle's rules ([`super`]). A catalog that does not keep named
/// objects keeps the defaults, which say so.
#[async_trait]
pub trait NamedObjects: Send + Sync {
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

    /// [`super::Locations::relocate`] for names: every name of `record`'s
    /// organisation at its location (holding its content; `record` as
    /// [`NamedObjects::scan_named`] gave it) now names `to`, which the
    /// reservation `token` holds (and is no longer parked), in one
    /// transaction; the reservation is gone, and the old location is
    /// tombstoned on `lease`'s terms if that left it unreferenced.
    /// `Changed(None)` when no name is there any more.
    async fn relocate_named(&self, record: &Record, to: &Location, token: &Token, lease: &Lease) -> Result<Relocated> {
        let _ = (record, to, token, lease);
        Err(no_names())
    }
}

/// What a catalog without named objects answers.
fn no_names() -> Error {
    Error::Unsupported("this catalog does not keep named objects (wasi:blobstore)".into())
}
