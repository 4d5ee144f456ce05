//! The statements every concern's transactions share to keep the
//! catalog's rules ([`crate::catalog`]): what refers to a location, rule 1
//! (tombstone only what nothing refers to), and reservations.

use rusqlite::{Connection, Transaction, params};

use super::now;
use super::rows::{PENDING_COLUMNS, TOMBSTONE_COLUMNS, collect, pending_from, tombstone_from};
use crate::backend::{BackendKind, Location};
use crate::catalog::{Lease, Pending, Token, Tombstone};
use crate::error::Result;

pub(super) fn tombstone_at(tx: &Transaction<'_>, at: &Location) -> Result<Option<Tombstone>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {TOMBSTONE_COLUMNS} FROM tombstones WHERE backend = ?1 AND container = ?2 AND name = ?3"
    ))?;
    Ok(collect(&mut stmt, params![at.backend.as_str(), at.container, at.name], tombstone_from)?.pop())
}

/// Whether anything (a record, a name, a pending reference, a tombstone)
/// refers to `at`.
pub(super) fn referenced(conn: &Connection, backend: BackendKind, container: &str, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM objects WHERE backend = ?1 AND container = ?2 AND name = ?3)
                 OR EXISTS (SELECT 1 FROM named_objects WHERE backend = ?1 AND container = ?2 AND name = ?3)
                 OR EXISTS (SELECT 1 FROM pending WHERE backend = ?1 AND container = ?2 AND name = ?3)
                 OR EXISTS (SELECT 1 FROM tombstones WHERE backend = ?1 AND container = ?2 AND name = ?3)",
        )?
        .query_row(params![backend.as_str(), container, name], |r| r.get(0))?)
}

/// Rule 1: tombstone `at` on `lease`'s terms if nothing refers to it (and
/// it is not adopted in place). The lease starts now, inside the
/// transaction.
pub(super) fn tombstone_if_free(tx: &Transaction<'_>, at: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
    if referenced(tx, at.backend, &at.container, &at.name)? || adopted_at(tx, at)? {
        return Ok(None);
    }
    let t = lease.tombstone(at, now() as u64);
    insert_tombstone(tx, &t)?;
    Ok(Some(t))
}

/// Whether `at` lies in a namespace adopted in place: another system's
/// bytes, never tombstoned (so never deleted) by Coffer.
pub(super) fn adopted_at(tx: &Transaction<'_>, at: &Location) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM adopted WHERE backend = ?1 AND container = ?2
             AND substr(?3, 1, length(prefix)) = prefix)",
        )?
        .query_row(params![at.backend.as_str(), at.container, at.name], |r| r.get(0))?)
}

/// The reservation `token`, if it exists.
pub(super) fn pending_on(conn: &Connection, token: &Token) -> Result<Option<Pending>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {PENDING_COLUMNS} FROM pending WHERE token = ?1"))?;
    Ok(collect(&mut stmt, params![token.as_str()], pending_from)?.pop())
}

pub(super) fn insert_pending(tx: &Transaction<'_>, p: &Pending) -> Result<()> {
    tx.prepare_cached(&format!("INSERT INTO pending ({PENDING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"))?
        .execute(params![
            p.token.as_str(),
            p.org,
            p.sha256.to_string(),
            p.size as i64,
            p.location.backend.as_str(),
            p.location.container,
            p.location.name,
            p.created_at as i64,
            p.touched_at as i64
        ])?;
    Ok(())
}

pub(super) fn insert_tombstone(tx: &Transaction<'_>, t: &Tombstone) -> Result<()> {
    tx.prepare_cached(&format!("INSERT INTO tombstones ({TOMBSTONE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"))?
        .execute(params![
            t.location.backend.as_str(),
            t.location.container,
            t.location.name,
            t.token.as_str(),
            t.created_at as i64,
            t.lease_until as i64
        ])?;
    Ok(())
}
