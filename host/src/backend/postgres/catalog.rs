//! The catalog on PostgreSQL: each [`Catalog`] method that checks and
//! changes is one SERIALIZABLE transaction (see `mod.rs`), the same checks
//! as the SQLite catalog's, in the same order; single-statement changes
//! (a touch, a takeover, a clear) are atomic on their row as they stand.
//! Times are the server's (`NOW`).
//!
//! Each transaction is safe to run again after a lost connection, also
//! when its COMMIT went through and only the answer was lost: a repeat
//! finds its own work (the reservation under its token, the tombstone
//! under its lease's token) and answers as the first attempt would have.
//! The ones that cannot (a record's removal: the record is gone; a name
//! committed, copied, moved or dropped: what it replaced or dropped is
//! gone) report the doubt instead of guessing.

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

use super::PgDb;
use crate::backend::{BackendKind, Location};
use crate::catalog::named::{Copied, Named, NamedCommitted, Names, Version};
use crate::catalog::namespace::{Claimed, Holding, Namespace};
use crate::catalog::{Catalog, Committed, Lease, Pending, Record, Released, Relocated, Reserved, Token, Tombstone};
use crate::content::Digest;
use crate::error::{Error, PgTransient, Result, pg_transient};

const RECORD_COLUMNS: &str = "org, sha256, size, content_type, backend, container, name, created_at, parked";
const PENDING_COLUMNS: &str = "token, org, sha256, size, backend, container, name, created_at, touched_at";
const TOMBSTONE_COLUMNS: &str = "backend, container, name, token, created_at, lease_until";
const NAMED_COLUMNS: &str =
    "org, space, object, sha256, size, content_type, backend, container, name, created_at, parked";

/// The server's clock, in whole seconds since the Unix epoch (the start
/// of the transaction).
pub(super) const NOW: &str = "floor(extract(epoch from now()))::bigint";

fn digest(s: String) -> Result<Digest> {
    s.parse().map_err(|_| Error::Internal(format!("malformed digest {s:?} in the catalog")))
}

fn location(r: &Row, at: usize) -> Result<Location> {
    Ok(Location { backend: BackendKind::parse(r.get(at))?, container: r.get(at + 1), name: r.get(at + 2) })
}

fn record_from(r: &Row) -> Result<Record> {
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

fn pending_from(r: &Row) -> Result<Pending> {
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

fn tombstone_from(r: &Row) -> Result<Tombstone> {
    Ok(Tombstone {
        location: location(r, 0)?,
        token: Token::from_stored(r.get(3)),
        created_at: r.get::<_, i64>(4) as u64,
        lease_until: r.get::<_, i64>(5) as u64,
    })
}

fn named_from(r: &Row) -> Result<Named> {
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

fn all<T>(rows: Vec<Row>, map: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(map).collect()
}

async fn serializable<'c>(client: &'c mut deadpool_postgres::Object) -> Result<Transaction<'c>> {
    Ok(client.build_transaction().isolation_level(IsolationLevel::Serializable).start().await?)
}

/// The tombstone held under `token` (a lease's: fresh for every call, so
/// one found is this call's own, from an attempt whose answer was lost).
async fn tombstone_held(tx: &Transaction<'_>, token: &Token) -> Result<Option<Tombstone>> {
    let stmt = tx.prepare_cached(&format!("SELECT {TOMBSTONE_COLUMNS} FROM tombstones WHERE token = $1")).await?;
    all(tx.query(&stmt, &[&token.as_str()]).await?, tombstone_from).map(|mut v| v.pop())
}

/// Commit `tx`, whose repeat could not tell that it had been made: a
/// connection lost during the COMMIT leaves it in doubt, and that is said
/// (and not retried), never guessed.
async fn commit_in_doubt(tx: Transaction<'_>, what: &str) -> Result<()> {
    tx.commit().await.map_err(|e| match pg_transient(&e) {
        Some(PgTransient::Connection) => Error::Backend {
            message: format!(
                "the connection was lost while {what} was committed, so it may or may not have been made ({e})"
            ),
            retryable: true,
            source: None,
        },
        _ => Error::from(e),
    })
}

async fn lookup_in(tx: &Transaction<'_>, org: &str, sha: &str) -> Result<Option<Record>> {
    let stmt =
        tx.prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = $1 AND sha256 = $2")).await?;
    all(tx.query(&stmt, &[&org, &sha]).await?, record_from).map(|mut v| v.pop())
}

async fn pending_in(tx: &Transaction<'_>, token: &Token) -> Result<Option<Pending>> {
    let stmt = tx.prepare_cached(&format!("SELECT {PENDING_COLUMNS} FROM pending WHERE token = $1")).await?;
    all(tx.query(&stmt, &[&token.as_str()]).await?, pending_from).map(|mut v| v.pop())
}

/// Record the reservation `p`, made and touched now (the server's clock;
/// `p`'s own times are not used): as stored.
async fn insert_pending(tx: &Transaction<'_>, p: &Pending) -> Result<Pending> {
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

/// The server's clock in `tx` (the start of the transaction).
async fn now_in(tx: &Transaction<'_>) -> Result<u64> {
    let stmt = tx.prepare_cached(&format!("SELECT {NOW}")).await?;
    Ok(tx.query_one(&stmt, &[]).await?.get::<_, i64>(0) as u64)
}

async fn named_in(tx: &Transaction<'_>, org: &str, space: &str, object: &str) -> Result<Option<Named>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = $1 AND space = $2 AND object = $3"
        ))
        .await?;
    all(tx.query(&stmt, &[&org, &space, &object]).await?, named_from).map(|mut v| v.pop())
}

async fn container_exists(tx: &Transaction<'_>, org: &str, space: &str) -> Result<bool> {
    let stmt =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM named_containers WHERE org = $1 AND space = $2)").await?;
    Ok(tx.query_one(&stmt, &[&org, &space]).await?.get(0))
}

/// Write the name `n`, replacing `old` (what it names now, as the caller
/// read it in `tx`); the location that left unreferenced is tombstoned on
/// `lease`'s terms.
async fn put_name(tx: &Transaction<'_>, n: &Named, old: Option<Named>, lease: &Lease) -> Result<Option<Tombstone>> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO named_objects ({NAMED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (org, space, object) DO UPDATE SET
                 sha256 = EXCLUDED.sha256, size = EXCLUDED.size, content_type = EXCLUDED.content_type,
                 backend = EXCLUDED.backend, container = EXCLUDED.container, name = EXCLUDED.name,
                 created_at = EXCLUDED.created_at, parked = EXCLUDED.parked"
        ))
        .await?;
    let (sha, size, created, at) = (n.sha256.to_string(), n.size as i64, n.created_at as i64, &n.location);
    let params: [&(dyn ToSql + Sync); 11] = [
        &n.org,
        &n.container,
        &n.name,
        &sha,
        &size,
        &n.content_type,
        &at.backend.as_str(),
        &at.container,
        &at.name,
        &created,
        &n.parked,
    ];
    tx.execute(&stmt, &params).await?;
    match old {
        Some(old) if old.location != n.location => tombstone_if_free(tx, &old.location, lease).await,
        _ => Ok(None),
    }
}

/// Point `org`'s names of `sha` at `from` to `to` (no longer parked); how
/// many there were.
async fn move_names(tx: &Transaction<'_>, org: &str, sha: &str, from: &Location, to: &Location) -> Result<u64> {
    let stmt = tx
        .prepare_cached(
            "UPDATE named_objects SET backend = $6, container = $7, name = $8, parked = false
             WHERE org = $1 AND sha256 = $2 AND backend = $3 AND container = $4 AND name = $5",
        )
        .await?;
    let params: [&(dyn ToSql + Sync); 8] = [
        &org,
        &sha,
        &from.backend.as_str(),
        &from.container,
        &from.name,
        &to.backend.as_str(),
        &to.container,
        &to.name,
    ];
    Ok(tx.execute(&stmt, &params).await?)
}

/// Delete the name `n`; its location is tombstoned on `lease`'s terms if
/// that left it unreferenced.
async fn drop_name(tx: &Transaction<'_>, n: &Named, lease: &Lease) -> Result<Option<Tombstone>> {
    let stmt = tx.prepare_cached("DELETE FROM named_objects WHERE org = $1 AND space = $2 AND object = $3").await?;
    tx.execute(&stmt, &[&n.org, &n.container, &n.name]).await?;
    tombstone_if_free(tx, &n.location, lease).await
}

/// Rule 1: tombstone `at` on `lease`'s terms if nothing refers to it (and
/// it is not adopted in place: another system's bytes, never deleted).
async fn tombstone_if_free(tx: &Transaction<'_>, at: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
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

/// Claim `ns` for `org` unless another organisation holds a namespace
/// that overlaps it (the same container, one prefix a prefix of the other).
async fn claim_in(tx: &Transaction<'_>, org: &str, ns: &Namespace) -> Result<Claimed> {
    hold_in(tx, Holding::Claim, org, ns).await
}

/// Record `org` holding `ns` as `holding` says, unless an overlapping
/// claim or adoption stands in the way ([`Holding::except`]).
async fn hold_in(tx: &Transaction<'_>, holding: Holding, org: &str, ns: &Namespace) -> Result<Claimed> {
    let (claims_of, adopted_by) = holding.except(org);
    let taken = match overlapping_claim(tx, ns, claims_of).await? {
        Some(t) => Some(t),
        None => overlapping_adopted(tx, ns, adopted_by).await?,
    };
    if let Some(taken) = taken {
        return Ok(Claimed::Taken(taken));
    }
    let (table, at) = holding.table();
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} (backend, container, prefix, org, {at})
             VALUES ($1, $2, $3, $4, {NOW}) ON CONFLICT DO NOTHING"
        ))
        .await?;
    tx.execute(&stmt, &[&ns.backend.as_str(), &ns.container, &ns.prefix, &org]).await?;
    Ok(Claimed::Held)
}

/// A claimed namespace that overlaps `ns` (the same container, one prefix a
/// prefix of the other), held by an organisation other than `other_than`
/// (by anyone, with `None`).
async fn overlapping_claim(
    tx: &Transaction<'_>,
    ns: &Namespace,
    other_than: Option<&str>,
) -> Result<Option<Namespace>> {
    let stmt = tx
        .prepare_cached(
            "SELECT prefix FROM claims WHERE backend = $1 AND container = $2 AND ($3::text IS NULL OR org <> $3)
             AND (starts_with($4, prefix) OR starts_with(prefix, $4)) LIMIT 1",
        )
        .await?;
    let row = tx.query_opt(&stmt, &[&ns.backend.as_str(), &ns.container, &other_than, &ns.prefix]).await?;
    Ok(row.map(|r| Namespace { prefix: r.get(0), ..ns.clone() }))
}

/// An adopted namespace that overlaps `ns`, other than `org`'s own
/// adoption of exactly `ns` (with `Some(org)`).
async fn overlapping_adopted(tx: &Transaction<'_>, ns: &Namespace, same: Option<&str>) -> Result<Option<Namespace>> {
    let stmt = tx
        .prepare_cached(
            "SELECT prefix FROM adopted WHERE backend = $1 AND container = $2
             AND NOT ($3::text IS NOT NULL AND org = $3 AND prefix = $4)
             AND (starts_with($4, prefix) OR starts_with(prefix, $4)) LIMIT 1",
        )
        .await?;
    let row = tx.query_opt(&stmt, &[&ns.backend.as_str(), &ns.container, &same, &ns.prefix]).await?;
    Ok(row.map(|r| Namespace { prefix: r.get(0), ..ns.clone() }))
}

/// Namespaces from rows of (backend, container, prefix).
fn namespaces(rows: Vec<Row>) -> Result<Vec<Namespace>> {
    rows.iter()
        .map(|r| Ok(Namespace { backend: BackendKind::parse(r.get(0))?, container: r.get(1), prefix: r.get(2) }))
        .collect()
}

#[async_trait]
impl Catalog for PgDb {
    async fn now(&self) -> Result<u64> {
        let rows = self.query(&format!("SELECT {NOW}"), &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    async fn lookup(&self, org: &str, sha256: &Digest) -> Result<Option<Record>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = $1 AND sha256 = $2");
        all(self.query(&sql, &[&org, &sha256.to_string()]).await?, record_from).map(|mut v| v.pop())
    }

    async fn lookup_held(&self, org: &str, sha256: &Digest) -> Result<Option<(Record, bool)>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS},
                    EXISTS (SELECT 1 FROM claims c WHERE c.org = objects.org AND c.backend = objects.backend
                            AND c.container = objects.container AND starts_with(objects.name, c.prefix))
                 OR EXISTS (SELECT 1 FROM adopted a WHERE a.org = objects.org AND a.backend = objects.backend
                            AND a.container = objects.container AND starts_with(objects.name, a.prefix))
             FROM objects WHERE org = $1 AND sha256 = $2"
        );
        all(self.query(&sql, &[&org, &sha256.to_string()]).await?, |r| Ok((record_from(r)?, r.get::<_, bool>(9))))
            .map(|mut v| v.pop())
    }

    async fn list(&self, org: &str, after: Option<&Digest>, limit: usize) -> Result<Vec<Record>> {
        let after = after.map(|d| d.to_string()).unwrap_or_default();
        let limit = limit.min(i64::MAX as usize) as i64;
        let sql =
            format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = $1 AND sha256 > $2 ORDER BY sha256 LIMIT $3");
        all(self.query(&sql, &[&org, &after, &limit]).await?, record_from)
    }

    async fn claim(&self, org: &str, namespace: &Namespace) -> Result<Claimed> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let claimed = claim_in(&tx, org, namespace).await?;
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    async fn adopt(&self, org: &str, namespace: &Namespace) -> Result<Claimed> {
        let ns = namespace;
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            // Only a place nobody holds, not even this organisation (its
            // own namespaces hold Coffer's bytes, which must stay
            // deletable), and no other adoption overlaps.
            let held = hold_in(&tx, Holding::Adoption, org, ns).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    async fn adopted(&self) -> Result<Vec<(String, Namespace)>> {
        let rows = self.query("SELECT backend, container, prefix, org FROM adopted", &[]).await?;
        rows.iter()
            .map(|r| {
                let ns = Namespace { backend: BackendKind::parse(r.get(0))?, container: r.get(1), prefix: r.get(2) };
                Ok((r.get(3), ns))
            })
            .collect()
    }

    async fn scan(&self, after: Option<(&str, &Digest)>, parked_only: bool, limit: usize) -> Result<Vec<Record>> {
        let (org, sha) = after.map(|(o, d)| (o.to_string(), d.to_string())).unwrap_or_default();
        let limit = limit.min(i64::MAX as usize) as i64;
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM objects WHERE (org, sha256) > ($1, $2) AND (parked OR NOT $3)
             ORDER BY org, sha256 LIMIT $4"
        );
        all(self.query(&sql, &[&org, &sha, &parked_only, &limit]).await?, record_from)
    }

    async fn relocate(
        &self,
        org: &str,
        sha256: &Digest,
        from: &Location,
        to: &Location,
        token: &Token,
        lease: &Lease,
    ) -> Result<Relocated> {
        let sha = &sha256.to_string();
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let record = match lookup_in(&tx, org, sha).await? {
                Some(r) if r.location == *from => r,
                // A repeat of a move that was made: the record names `to`
                // and the reservation is gone.
                Some(r) if r.location == *to && pending_in(&tx, token).await?.is_none() => {
                    return Ok(Relocated::Moved(r, tombstone_held(&tx, &lease.token).await?));
                }
                other => return Ok(Relocated::Changed(other)),
            };
            let Some(p) = pending_in(&tx, token).await? else { return Ok(Relocated::Lost) };
            p.check_move(&record, to)?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE objects SET backend = $3, container = $4, name = $5, parked = false
                     WHERE org = $1 AND sha256 = $2",
                )
                .await?;
            tx.execute(&stmt, &[&org, sha, &to.backend.as_str(), &to.container, &to.name]).await?;
            move_names(&tx, org, sha, from, to).await?;
            tx.execute("DELETE FROM pending WHERE token = $1", &[&token.as_str()]).await?;
            let tombstone = tombstone_if_free(&tx, from, lease).await?;
            tx.commit().await?;
            Ok(Relocated::Moved(Record { location: to.clone(), parked: false, ..record }, tombstone))
        })
        .await
    }

    async fn claims(&self, org: &str) -> Result<Vec<Namespace>> {
        let sql = "SELECT backend, container, prefix FROM claims WHERE org = $1 ORDER BY claimed_at, prefix";
        namespaces(self.query(sql, &[&org]).await?)
    }

    async fn reserve(&self, pending: &Pending) -> Result<Reserved> {
        let p = pending;
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            // A repeat of a reservation that was made.
            if pending_in(&tx, &p.token).await?.is_some() {
                return Ok(Reserved::Granted);
            }
            let at = &p.location;
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT {TOMBSTONE_COLUMNS} FROM tombstones WHERE backend = $1 AND container = $2 AND name = $3"
                ))
                .await?;
            let found = all(tx.query(&stmt, &[&at.backend.as_str(), &at.container, &at.name]).await?, tombstone_from)?;
            if let Some(t) = found.into_iter().next() {
                return Ok(Reserved::Tombstoned(t));
            }
            // A record or a name of another organisation's.
            let stmt = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM objects
                                    WHERE backend = $1 AND container = $2 AND name = $3 AND org <> $4)
                         OR EXISTS (SELECT 1 FROM named_objects
                                    WHERE backend = $1 AND container = $2 AND name = $3 AND org <> $4)",
                )
                .await?;
            let others: bool =
                tx.query_one(&stmt, &[&at.backend.as_str(), &at.container, &at.name, &p.org]).await?.get(0);
            if others {
                return Ok(Reserved::OwnedByOthers);
            }
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO containers (backend, container, first_seen) VALUES ($1, $2, {NOW})
                     ON CONFLICT DO NOTHING"
                ))
                .await?;
            tx.execute(&stmt, &[&at.backend.as_str(), &at.container]).await?;
            insert_pending(&tx, p).await?;
            tx.commit().await?;
            Ok(Reserved::Granted)
        })
        .await
    }

    async fn touch(&self, token: &Token, _now: u64) -> Result<bool> {
        let sql = format!("UPDATE pending SET touched_at = {NOW} WHERE token = $1");
        Ok(self.execute(&sql, &[&token.as_str()]).await? == 1)
    }

    async fn commit(&self, token: Option<&Token>, record: &Record) -> Result<Committed> {
        let r = record;
        let sha = &r.sha256.to_string();
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            if let Some(existing) = lookup_in(&tx, &r.org, sha).await? {
                return Ok(Committed::Existing(existing));
            }
            let Some(t) = token else { return Ok(Committed::Lost) };
            let Some(p) = pending_in(&tx, t).await? else { return Ok(Committed::Lost) };
            p.check_for(r)?;
            let record = Record { location: p.location, ..r.clone() };
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO objects ({RECORD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .await?;
            let (size, created) = (record.size as i64, record.created_at as i64);
            let at = &record.location;
            tx.execute(
                &stmt,
                &[
                    &record.org,
                    sha,
                    &size,
                    &record.content_type,
                    &at.backend.as_str(),
                    &at.container,
                    &at.name,
                    &created,
                    &record.parked,
                ],
            )
            .await?;
            tx.execute("DELETE FROM pending WHERE token = $1", &[&t.as_str()]).await?;
            tx.commit().await?;
            Ok(Committed::Inserted(record))
        })
        .await
    }

    async fn release(&self, token: &Token, untouched_since: Option<u64>, lease: Option<&Lease>) -> Result<Released> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let Some(p) = pending_in(&tx, token).await? else {
                // A repeat of a release that was made, with its tombstone?
                return Ok(match lease {
                    Some(lease) => match tombstone_held(&tx, &lease.token).await? {
                        Some(t) => Released::Released(Some(t)),
                        None => Released::NotHeld,
                    },
                    None => Released::NotHeld,
                });
            };
            if untouched_since.is_some_and(|cutoff| p.touched_at > cutoff) {
                return Ok(Released::NotHeld);
            }
            tx.execute("DELETE FROM pending WHERE token = $1", &[&token.as_str()]).await?;
            let tombstone = match lease {
                Some(lease) => tombstone_if_free(&tx, &p.location, lease).await?,
                None => None,
            };
            tx.commit().await?;
            Ok(Released::Released(tombstone))
        })
        .await
    }

    async fn remove(&self, org: &str, sha256: &Digest, lease: &Lease) -> Result<Option<(Record, Option<Tombstone>)>> {
        let sha = &sha256.to_string();
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let Some(record) = lookup_in(&tx, org, sha).await? else { return Ok(None) };
            tx.execute("DELETE FROM objects WHERE org = $1 AND sha256 = $2", &[&org, sha]).await?;
            let tombstone = tombstone_if_free(&tx, &record.location, lease).await?;
            commit_in_doubt(tx, "the removal of the record").await?;
            Ok(Some((record, tombstone)))
        })
        .await
    }

    async fn tombstone_if_unreferenced(&self, location: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            if let Some(t) = tombstone_held(&tx, &lease.token).await? {
                return Ok(Some(t)); // a repeat of one that was made
            }
            let t = tombstone_if_free(&tx, location, lease).await?;
            tx.commit().await?;
            Ok(t)
        })
        .await
    }

    async fn take_over(&self, location: &Location, holder: &Token, lease: &Lease) -> Result<Option<Tombstone>> {
        // Strictly after the lease: a holder is never overtaken while its
        // lease lasts. Already ours: a repeat of a takeover that was made
        // (its lease restarts, later; still one holder).
        let sql = format!(
            "UPDATE tombstones SET token = $5, created_at = {NOW}, lease_until = {NOW} + $6
             WHERE backend = $1 AND container = $2 AND name = $3
               AND ((token = $4 AND lease_until < {NOW}) OR token = $5)
             RETURNING {TOMBSTONE_COLUMNS}"
        );
        let l = location;
        let secs = lease.secs as i64;
        let params: [&(dyn ToSql + Sync); 6] =
            [&l.backend.as_str(), &l.container, &l.name, &holder.as_str(), &lease.token.as_str(), &secs];
        all(self.query(&sql, &params).await?, tombstone_from).map(|mut v| v.pop())
    }

    async fn clear_tombstone(&self, location: &Location, token: &Token) -> Result<bool> {
        let sql = "DELETE FROM tombstones WHERE backend = $1 AND container = $2 AND name = $3 AND token = $4";
        let l = location;
        Ok(self.execute(sql, &[&l.backend.as_str(), &l.container, &l.name, &token.as_str()]).await? == 1)
    }

    async fn tombstones(&self) -> Result<Vec<Tombstone>> {
        let sql = format!("SELECT {TOMBSTONE_COLUMNS} FROM tombstones ORDER BY backend, container, name");
        all(self.query(&sql, &[]).await?, tombstone_from)
    }

    async fn pending_untouched_since(&self, cutoff: u64) -> Result<Vec<Pending>> {
        let cutoff = cutoff.min(i64::MAX as u64) as i64;
        let sql = format!("SELECT {PENDING_COLUMNS} FROM pending WHERE touched_at <= $1 ORDER BY touched_at");
        all(self.query(&sql, &[&cutoff]).await?, pending_from)
    }

    async fn pending_at(&self, location: &Location) -> Result<Vec<Pending>> {
        let sql = format!("SELECT {PENDING_COLUMNS} FROM pending WHERE backend = $1 AND container = $2 AND name = $3");
        let l = location;
        all(self.query(&sql, &[&l.backend.as_str(), &l.container, &l.name]).await?, pending_from)
    }

    async fn referenced(&self, backend: BackendKind, container: &str, names: &[String]) -> Result<HashSet<String>> {
        // One statement, one snapshot, for the whole page.
        let sql = "SELECT n FROM unnest($3::text[]) AS page(n) WHERE
                EXISTS (SELECT 1 FROM objects WHERE backend = $1 AND container = $2 AND name = n)
             OR EXISTS (SELECT 1 FROM named_objects WHERE backend = $1 AND container = $2 AND name = n)
             OR EXISTS (SELECT 1 FROM pending WHERE backend = $1 AND container = $2 AND name = n)
             OR EXISTS (SELECT 1 FROM tombstones WHERE backend = $1 AND container = $2 AND name = n)";
        Ok(self.query(sql, &[&backend.as_str(), &container, &names]).await?.iter().map(|r| r.get(0)).collect())
    }

    async fn containers(&self, backend: BackendKind) -> Result<Vec<String>> {
        let sql = "SELECT container FROM objects WHERE backend = $1
             UNION SELECT container FROM containers WHERE backend = $1
             UNION SELECT container FROM pending WHERE backend = $1
             UNION SELECT container FROM tombstones WHERE backend = $1
             ORDER BY container";
        Ok(self.query(sql, &[&backend.as_str()]).await?.iter().map(|r| r.get(0)).collect())
    }

    async fn create_container(&self, org: &str, container: &str) -> Result<bool> {
        // One statement: a repeat after a lost answer finds the container
        // there and says false, as for a container created by someone else.
        let sql = format!(
            "INSERT INTO named_containers (org, space, created_at) VALUES ($1, $2, {NOW}) ON CONFLICT DO NOTHING"
        );
        Ok(self.execute(&sql, &[&org, &container]).await? == 1)
    }

    async fn container(&self, org: &str, container: &str) -> Result<Option<u64>> {
        let sql = "SELECT created_at FROM named_containers WHERE org = $1 AND space = $2";
        Ok(self.query(sql, &[&org, &container]).await?.first().map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn named(&self, org: &str, container: &str, name: &str) -> Result<Option<Named>> {
        let sql = format!("SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = $1 AND space = $2 AND object = $3");
        all(self.query(&sql, &[&org, &container, &name]).await?, named_from).map(|mut v| v.pop())
    }

    async fn list_named(&self, org: &str, container: &str, after: &str, limit: usize) -> Result<Option<Vec<Named>>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.retry(move || async move {
            let mut client = self.client().await?;
            // One snapshot: the container and its names.
            let tx = serializable(&mut client).await?;
            if !container_exists(&tx, org, container).await? {
                return Ok(None);
            }
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = $1 AND space = $2 AND object > $3
                     ORDER BY object LIMIT $4"
                ))
                .await?;
            let names = all(tx.query(&stmt, &[&org, &container, &after, &limit]).await?, named_from)?;
            tx.commit().await?;
            Ok(Some(names))
        })
        .await
    }

    async fn commit_named(
        &self,
        token: Option<&Token>,
        named: &Named,
        replaces: Option<&Version>,
        lease: &Lease,
    ) -> Result<NamedCommitted> {
        let n = named;
        let sha = &n.sha256.to_string();
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            if !container_exists(&tx, &n.org, &n.container).await? {
                return Ok(NamedCommitted::NoContainer);
            }
            let old = named_in(&tx, &n.org, &n.container, &n.name).await?;
            if old.as_ref().map(Named::version).as_ref() != replaces {
                return Ok(NamedCommitted::Changed);
            }
            let location = match token {
                Some(t) => {
                    let Some(p) = pending_in(&tx, t).await? else { return Ok(NamedCommitted::Lost) };
                    p.check_content(&n.org, &n.sha256)?;
                    tx.execute("DELETE FROM pending WHERE token = $1", &[&t.as_str()]).await?;
                    p.location
                }
                None => match lookup_in(&tx, &n.org, sha).await? {
                    Some(record) => record.location,
                    None => return Ok(NamedCommitted::Lost),
                },
            };
            let n = Named { location, ..n.clone() };
            let tombstone = put_name(&tx, &n, old, lease).await?;
            // A repeat would find the reservation gone (or the name already
            // there) and could not tell what the name replaced.
            commit_in_doubt(tx, "the name").await?;
            Ok(NamedCommitted::Done(Box::new(n), tombstone))
        })
        .await
    }

    async fn drop_names(
        &self,
        org: &str,
        container: &str,
        which: Names<'_>,
        lease: &Lease,
    ) -> Result<Option<Vec<Tombstone>>> {
        let these: Option<(Vec<&str>, Vec<String>, Vec<i64>)> = match which {
            Names::These(names) => {
                let mut columns = (Vec::new(), Vec::new(), Vec::new());
                for (name, (sha, created)) in names {
                    columns.0.push(name.as_str());
                    columns.1.push(sha.to_string());
                    columns.2.push(*created as i64);
                }
                Some(columns)
            }
            Names::Container => None,
        };
        let these = &these;
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            if !container_exists(&tx, org, container).await? {
                return Ok(None);
            }
            let mut tombstones = Vec::new();
            match these {
                Some((names, digests, times)) => {
                    // The names still as they were checked, in one
                    // statement; then each location they named tombstoned
                    // if that left it unreferenced.
                    let stmt = tx
                        .prepare_cached(&format!(
                            "DELETE FROM named_objects
                             WHERE org = $1 AND space = $2
                               AND (object, sha256, created_at)
                                   IN (SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[]))
                             RETURNING {NAMED_COLUMNS}"
                        ))
                        .await?;
                    let params: [&(dyn ToSql + Sync); 5] = [&org, &container, names, digests, times];
                    let dropped = all(tx.query(&stmt, &params).await?, named_from)?;
                    let mut seen = HashSet::new();
                    for n in &dropped {
                        if seen.insert(&n.location) {
                            tombstones.extend(tombstone_if_free(&tx, &n.location, lease).await?);
                        }
                    }
                }
                None => {
                    let stmt = tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM named_objects WHERE org = $1 AND space = $2)")
                        .await?;
                    if tx.query_one(&stmt, &[&org, &container]).await?.get::<_, bool>(0) {
                        return Err(Error::Conflict(format!(
                            "container {container:?} is not empty: names were written while it was being deleted"
                        )));
                    }
                    let stmt = tx.prepare_cached("DELETE FROM named_containers WHERE org = $1 AND space = $2").await?;
                    tx.execute(&stmt, &[&org, &container]).await?;
                }
            }
            commit_in_doubt(tx, "the removal of the names").await?;
            Ok(Some(tombstones))
        })
        .await
    }

    async fn copy_named(
        &self,
        org: &str,
        from: (&str, &str),
        to: (&str, &str),
        remove_source: bool,
        expect: (&Version, Option<&Version>),
        lease: &Lease,
    ) -> Result<Copied> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let Some(source) = named_in(&tx, org, from.0, from.1).await? else { return Ok(Copied::NoSource) };
            if !container_exists(&tx, org, to.0).await? {
                return Ok(Copied::NoContainer);
            }
            let dest = named_in(&tx, org, to.0, to.1).await?;
            if source.version() != *expect.0 || (from != to && dest.as_ref().map(Named::version).as_ref() != expect.1) {
                return Ok(Copied::Changed);
            }
            if from == to {
                return Ok(Copied::Done(Box::new(source), Vec::new()));
            }
            let copy = Named {
                container: to.0.to_string(),
                name: to.1.to_string(),
                created_at: now_in(&tx).await?,
                ..source.clone()
            };
            let mut tombstones: Vec<Tombstone> = put_name(&tx, &copy, dest, lease).await?.into_iter().collect();
            if remove_source {
                tombstones.extend(drop_name(&tx, &source, lease).await?);
            }
            commit_in_doubt(tx, if remove_source { "the move of the name" } else { "the copy of the name" }).await?;
            Ok(Copied::Done(Box::new(copy), tombstones))
        })
        .await
    }

    async fn pin_named(
        &self,
        org: &str,
        container: &str,
        name: &str,
        token: &Token,
    ) -> Result<Option<(Named, Pending)>> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let named = named_in(&tx, org, container, name).await?;
            // A repeat of a pin that was made (the token is this call's
            // own): the reservation stands while the name still names what
            // it holds; if not, it is made again from the name as it is.
            if let Some(p) = pending_in(&tx, token).await? {
                if let Some(n) = named.as_ref().filter(|n| n.location == p.location && n.sha256 == p.sha256) {
                    return Ok(Some((n.clone(), p)));
                }
                tx.execute("DELETE FROM pending WHERE token = $1", &[&token.as_str()]).await?;
            }
            let Some(named) = named else {
                tx.commit().await?;
                return Ok(None);
            };
            let pending = Pending {
                token: token.clone(),
                org: org.to_string(),
                sha256: named.sha256,
                size: named.size,
                location: named.location.clone(),
                // Made and touched now, in the server's clock, as stored.
                created_at: 0,
                touched_at: 0,
            };
            let pending = insert_pending(&tx, &pending).await?;
            tx.commit().await?;
            Ok(Some((named, pending)))
        })
        .await
    }

    async fn scan_named(
        &self,
        org: Option<&str>,
        after: Option<(&str, &Location)>,
        parked_only: bool,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let (ao, ab, ac, an) = match after {
            Some((org, at)) => (org, at.backend.as_str(), at.container.as_str(), at.name.as_str()),
            None => ("", "", "", ""),
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        let sql = "SELECT org, min(sha256), min(size), min(content_type), backend, container, name,
                          min(created_at), bool_or(parked)
                   FROM named_objects n
                   WHERE ($1::text IS NULL OR org = $1) AND (org, backend, container, name) > ($2, $3, $4, $5)
                     AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.org = n.org AND o.backend = n.backend
                                     AND o.container = n.container AND o.name = n.name)
                   GROUP BY org, backend, container, name
                   HAVING bool_or(parked) OR NOT $6
                   ORDER BY org, backend, container, name LIMIT $7";
        all(self.query(sql, &[&org, &ao, &ab, &ac, &an, &parked_only, &limit]).await?, record_from)
    }

    async fn named_at(&self, org: &str, at: &Location) -> Result<bool> {
        let sql = "SELECT EXISTS (SELECT 1 FROM named_objects
                   WHERE org = $1 AND backend = $2 AND container = $3 AND name = $4)";
        Ok(self.query(sql, &[&org, &at.backend.as_str(), &at.container, &at.name]).await?[0].get(0))
    }

    async fn relocate_named(&self, record: &Record, to: &Location, token: &Token, lease: &Lease) -> Result<Relocated> {
        let (from, sha) = (&record.location, &record.sha256.to_string());
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = serializable(&mut client).await?;
            let Some(p) = pending_in(&tx, token).await? else { return Ok(Relocated::Lost) };
            p.check_move(record, to)?;
            if move_names(&tx, &record.org, sha, from, to).await? == 0 {
                return Ok(Relocated::Changed(None));
            }
            tx.execute("DELETE FROM pending WHERE token = $1", &[&token.as_str()]).await?;
            let tombstone = if from == to { None } else { tombstone_if_free(&tx, from, lease).await? };
            // A repeat finds the reservation gone and cannot tell the move
            // was made.
            commit_in_doubt(tx, "the move of the names").await?;
            Ok(Relocated::Moved(Record { location: to.clone(), parked: false, ..record.clone() }, tombstone))
        })
        .await
    }
}
