//! Rows of the catalog's tables as the host's types, and back: the
//! columns each table is read with, shared by every concern's statements.

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

pub(super) fn location(backend: String, container: String, name: String) -> Result<Location> {
    Ok(Location { backend: BackendKind::parse(&backend)?, container, name })
}

pub(super) fn record_from(r: &rusqlite::Row<'_>) -> Result<Record> {
    Ok(Record {
        org: r.get(0)?,
        sha256: digest(r.get(1)?)?,
        size: r.get::<_, i64>(2)? as u64,
        content_type: r.get(3)?,
        location: location(r.get(4)?, r.get(5)?, r.get(6)?)?,
        created_at: r.get::<_, i64>(7)? as u64,
        parked: r.get(8)?,
    })
}

pub(super) fn pending_from(r: &rusqlite::Row<'_>) -> Result<Pending> {
    Ok(Pending {
        token: Token::from_stored(r.get(0)?),
        org: r.get(1)?,
        sha256: digest(r.get(2)?)?,
        size: r.get::<_, i64>(3)? as u64,
        location: location(r.get(4)?, r.get(5)?, r.get(6)?)?,
        created_at: r.get::<_, i64>(7)? as u64,
        touched_at: r.get::<_, i64>(8)? as u64,
    })
}

pub(super) fn tombstone_from(r: &rusqlite::Row<'_>) -> Result<Tombstone> {
    Ok(Tombstone {
        location: location(r.get(0)?, r.get(1)?, r.get(2)?)?,
        token: Token::from_stored(r.get(3)?),
        created_at: r.get::<_, i64>(4)? as u64,
        lease_until: r.get::<_, i64>(5)? as u64,
    })
}

pub(super) fn named_from(r: &rusqlite::Row<'_>) -> Result<Named> {
    Ok(Named {
        org: r.get(0)?,
        container: r.get(1)?,
        name: r.get(2)?,
        sha256: digest(r.get(3)?)?,
        size: r.get::<_, i64>(4)? as u64,
        content_type: r.get(5)?,
        location: location(r.get(6)?, r.get(7)?, r.get(8)?)?,
        created_at: r.get::<_, i64>(9)? as u64,
        parked: r.get(10)?,
    })
}

/// Collect rows through a fallible mapper.
pub(super) fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    map: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}
