//! Rows of the catalog's tables as the host's types: the columns each
//! table is read with, shared by every concern's statements.

use tokio_postgres::Row;

use crate::backend::{BackendKind, Location};
use crate::catalog::named::Named;
use crate::catalog::{Pending, Record, Token, Tombstone};
use crate::content::Digest;
use crate::error::{Error, Result};

pub(super) const RECORD_COLUMNS: &str = "org, sha256, size, content_type, backend, container, name, created_at, parked";

pub(super) const PENDING_COLUMNS: &str = "token, org, sha256, size, backend, container, name, created_at, touched_at";

pub(super) const TOMBSTONE_COLUMNS: &str = "backend, container, name, token, created_at, lease_until";

pub(super) const NAMED_COLUMNS: &str =
    "org, space, object, sha256, size, content_type, backend, container, name, created_at, parked";

pub(super) fn digest(s: String) -> Result<Digest> {
    s.parse().map_err(|_| Error::Internal(format!("malformed digest {s:?} in the catalog")))
}

pub(super) fn location(r: &Row, at: usize) -> Result<Location> {
    Ok(Location { backend: BackendKind::parse(r.get(at))?, container: r.get(at + 1), name: r.get(at + 2) })
}

pub(super) fn record_from(r: &Row) -> Result<Record> {
    Ok(Record {
        org: r.get(0),
        sha256: digest(r.get(1))?,
        size: r.get::<_, i64>(2) as u64,
        content_type: r.get(3),
        location: location(r, 4)?,
        created_at: r.get::<_, i64>(7) as u64,
        parked: r.get(8),
    })
}

pub(super) fn pending_from(r: &Row) -> Result<Pending> {
    Ok(Pending {
        token: Token::from_stored(r.get(0)),
        org: r.get(1),
        sha256: digest(r.get(2))?,
        size: r.get::<_, i64>(3) as u64,
        location: location(r, 4)?,
        created_at: r.get::<_, i64>(7) as u64,
        touched_at: r.get::<_, i64>(8) as u64,
    })
}

pub(super) fn tombstone_from(r: &Row) -> Result<Tombstone> {
    Ok(Tombstone {
        location: location(r, 0)?,
        token: Token::from_stored(r.get(3)),
        created_at: r.get::<_, i64>(4) as u64,
        lease_until: r.get::<_, i64>(5) as u64,
    })
}

pub(super) fn named_from(r: &Row) -> Result<Named> {
    Ok(Named {
        org: r.get(0),
        container: r.get(1),
        name: r.get(2),
        sha256: digest(r.get(3))?,
        size: r.get::<_, i64>(4) as u64,
        content_type: r.get(5),
        location: location(r, 6)?,
        created_at: r.get::<_, i64>(9) as u64,
        parked: r.get(10),
    })
}

pub(super) fn all<T>(rows: Vec<Row>, map: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(map).collect()
}
