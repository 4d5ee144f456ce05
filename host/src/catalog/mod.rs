//! The catalog: which organisation owns which content, where its bytes
//! live, and the lifecycle of every location (README "Guarantees").
//!
//! [`Catalog`] is what each database implements ([`crate::db`]), one trait
//! per concern, each method one transaction:
//! - `records.rs`: [`Records`], the organisations' references to content;
//! - `locations.rs`: [`Locations`], the lifecycle of locations (reservations,
//!   commits, tombstones);
//! - `namespace.rs` and `claims.rs`: [`Claims`] of namespaces, which keep
//!   organisations out of each other's;
//! - `named.rs`: [`NamedObjects`], containers of names over content.
//!
//! Built on them, once for every database:
//! - `lifecycle.rs`: the protocol of a put (reserve → write → commit) and
//!   of a delete (remove → tombstone → delete bytes → clear);
//! - `boundaries.rs`: the host's check that an organisation touches only
//!   the namespaces it holds.
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

pub mod boundaries;
pub mod claims;
pub mod lifecycle;
pub mod locations;
pub mod named;
pub mod namespace;
pub mod records;

pub use self::claims::{Claimed, Claims, Holding};
pub use self::locations::{Committed, Lease, Locations, Pending, Released, Relocated, Reserved, Token, Tombstone};
pub use self::named::NamedObjects;
pub use self::namespace::Namespace;
pub use self::records::{Record, Records};

/// Everything a database keeps for Coffer: records, the lifecycle of
/// locations, claims and named objects. Implemented for every type that
/// implements the four.
pub trait Catalog: Records + Locations + Claims + NamedObjects + std::fmt::Debug {}

impl<T: Records + Locations + Claims + NamedObjects + std::fmt::Debug> Catalog for T {}
