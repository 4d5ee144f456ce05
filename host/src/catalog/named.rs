//! Named objects on top of content addressing (the `wasi:blobstore`
//! host, [`crate::blobstore`]): an organisation's *containers* hold
//! *names*, and each name points at a location holding content by digest.
//!
//! A name is a reference to its location, like a record: the lifecycle's
//! rules (see [`super`]) count it, so bytes are never deleted while a name
//! points at them, and replacing or deleting the last name of a location
//! tombstones it in the same transaction. Names are committed from a
//! put's reservation (or from the organisation's own record of the
//! content), never pointed at a location the organisation does not
//! already hold; copies and moves only add and drop names.

use serde::Serialize;

use super::Tombstone;
use crate::backend::Location;
use crate::content::Digest;

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

/// What [`super::Catalog::drop_names`] drops: what the caller checked
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

/// What [`super::Catalog::commit_named`] did.
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

/// What [`super::Catalog::copy_named`] did.
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
pub fn validate_name(what: &str, name: &str) -> crate::Result<()> {
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
