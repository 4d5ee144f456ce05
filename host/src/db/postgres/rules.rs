//! The statements every concern's transactions share to keep the
//! catalog's rules ([`crate::catalog`]): rule 1 (tombstone only what
//! nothing refers to), reservations, and a call's own tombstone found
//! again on a repeat.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::rows::{PENDING_COLUMNS, TOMBSTONE_COLUMNS, all, pending_from, tombstone_from};
use super::tx::NOW;
use crate::backend::Location;
use crate::catalog::{Lease, Pending, Token, Tombstone};
use crate::error::Result;

/// The tombstone held under `token` (a lease's: fresh for every call, so
/// one found is this call's own, from an attempt whose answer was lost).
pub(super) async fn tombstone_held(tx: &Transaction<'_>, token: &Token) -> Result<Option<Tombstone>> {
    let stmt = tx.prepare_cached(&format!("SELECT {TOMBSTONE_COLUMNS} FROM tombstones WHERE token = $1")).await?;
    all(tx.query(&stmt, &[&token.as_str()]).await?, tombstone_from).map(|mut v| v.pop())
}

pub(super) async fn pending_in(tx: &Transaction<'_>, token: &Token) -> Result<Option<Pending>> {
    let stmt = tx.prepare_cached(&format!("SELECT {PENDING_COLUMNS} FROM pending WHERE token = $1")).await?;
    all(tx.query(&stmt, &[&token.as_str()]).await?, pending_from).map(|mut v| v.pop())
}

/// Record the reservation `p`, made and touched now (the server's clock;
/// `p`'s own times are not used): as stored.
pub(super) async fn insert_pending(tx: &Transaction<'_>, p: &Pending) -> Result<Pending> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO pending ({PENDING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, {NOW}, {NOW})
             RETURNING {PENDING_COLUMNS}"
        ))
        .await?;
    let (sha, size, at) = (p.sha256.to_string(), p.size as i64, &p.location);
    let params: [&(dyn ToSql + Sync); 7] =
        [&p.token.as_str(), &p.org, &sha, &size, &at.backend.as_str(), &at.container, &at.name];
    pending_from(&tx.query_one(&stmt, &params).await?)
}

/// Rule 1: tombstone `at` on `lease`'s terms if nothing refers to it (and
/// it is not adopted in place: another system's bytes, never deleted).
pub(super) async fn tombstone_if_free(tx: &Transaction<'_>, at: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO tombstones ({TOMBSTONE_COLUMNS})
             SELECT $1, $2, $3, $4, {NOW}, {NOW} + $5
             WHERE NOT EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND container = $2 AND name = $3)
               AND NOT EXISTS (SELECT 1 FROM named_objects WHERE backend = $1 AND container = $2 AND name = $3)
               AND NOT EXISTS (SELECT 1 FROM pending WHERE backend = $1 AND container = $2 AND name = $3)
               AND NOT EXISTS (SELECT 1 FROM tombstones WHERE backend = $1 AND container = $2 AND name = $3)
               AND NOT EXISTS (SELECT 1 FROM adopted WHERE backend = $1 AND container = $2
                               AND starts_with($3, prefix))
             RETURNING {TOMBSTONE_COLUMNS}"
        ))
        .await?;
    let secs = lease.secs as i64;
    let rows = tx.query(&stmt, &[&at.backend.as_str(), &at.container, &at.name, &lease.token.as_str(), &secs]).await?;
    all(rows, tombstone_from).map(|mut v| v.pop())
}
