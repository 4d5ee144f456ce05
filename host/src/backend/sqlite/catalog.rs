//! The catalog in SQLite: each [`Catalog`] method is one transaction.
//! Writes use `BEGIN IMMEDIATE`, which takes the database's write lock at
//! the start, so the checks and the change in one method see no other
//! writer in between, in this process or any other.

use std::collections::HashSet;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{SqliteDb, now};
use crate::backend::{BackendKind, Location};
use crate::catalog::named::{Copied, Named, NamedCommitted, Names, Version};
use crate::catalog::namespace::{Claimed, Holding, Namespace};
use crate::catalog::{Catalog, Committed, Lease, Pending, Record, Released, Relocated, Reserved, Token, Tombstone};
use crate::content::Digest;
use crate::error::{Error, Result};

const RECORD_COLUMNS: &str = "org, sha256, size, content_type, backend, container, name, created_at, parked";
const PENDING_COLUMNS: &str = "token, org, sha256, size, backend, container, name, created_at, touched_at";
const TOMBSTONE_COLUMNS: &str = "backend, container, name, token, created_at, lease_until";
const NAMED_COLUMNS: &str =
    "org, space, object, sha256, size, content_type, backend, container, name, created_at, parked";

fn digest(s: String) -> Result<Digest> {
    s.parse().map_err(|_| Error::Internal(format!("malformed digest {s:?} in the catalog")))
}

fn location(backend: String, container: String, name: String) -> Result<Location> {
    Ok(Location { backend: BackendKind::parse(&backend)?, container, name })
}

fn record_from(r: &rusqlite::Row<'_>) -> Result<Record> {
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

fn pending_from(r: &rusqlite::Row<'_>) -> Result<Pending> {
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

fn tombstone_from(r: &rusqlite::Row<'_>) -> Result<Tombstone> {
    Ok(Tombstone {
        location: location(r.get(0)?, r.get(1)?, r.get(2)?)?,
        token: Token::from_stored(r.get(3)?),
        created_at: r.get::<_, i64>(4)? as u64,
        lease_until: r.get::<_, i64>(5)? as u64,
    })
}

/// Collect rows through a fallible mapper.
fn collect<T>(
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

fn lookup_on(conn: &Connection, org: &str, sha: &str) -> Result<Option<Record>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 = ?2"))?;
    Ok(collect(&mut stmt, params![org, sha], record_from)?.pop())
}

fn tombstone_at(tx: &Transaction<'_>, at: &Location) -> Result<Option<Tombstone>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {TOMBSTONE_COLUMNS} FROM tombstones WHERE backend = ?1 AND container = ?2 AND name = ?3"
    ))?;
    Ok(collect(&mut stmt, params![at.backend.as_str(), at.container, at.name], tombstone_from)?.pop())
}

/// Whether anything (a record, a name, a pending reference, a tombstone)
/// refers to `at`.
fn referenced(conn: &Connection, backend: BackendKind, container: &str, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM objects WHERE backend = ?1 AND container = ?2 AND name = ?3)
                 OR EXISTS (SELECT 1 FROM named_objects WHERE backend = ?1 AND container = ?2 AND name = ?3)
                 OR EXISTS (SELECT 1 FROM pending WHERE backend = ?1 AND container = ?2 AND name = ?3)
                 OR EXISTS (SELECT 1 FROM tombstones WHERE backend = ?1 AND container = ?2 AND name = ?3)",
        )?
        .query_row(params![backend.as_str(), container, name], |r| r.get(0))?)
}

fn named_from(r: &rusqlite::Row<'_>) -> Result<Named> {
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

fn named_on(conn: &Connection, org: &str, space: &str, object: &str) -> Result<Option<Named>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = ?1 AND space = ?2 AND object = ?3"
    ))?;
    Ok(collect(&mut stmt, params![org, space, object], named_from)?.pop())
}

fn container_exists(conn: &Connection, org: &str, space: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM named_containers WHERE org = ?1 AND space = ?2)")?
        .query_row(params![org, space], |r| r.get(0))?)
}

/// Write the name `n`, replacing `old` (what it names now, as the caller
/// read it in `tx`); the location that left unreferenced is tombstoned on
/// `lease`'s terms.
fn put_name(tx: &Transaction<'_>, n: &Named, old: Option<Named>, lease: &Lease) -> Result<Option<Tombstone>> {
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO named_objects ({NAMED_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?
    .execute(params![
        n.org,
        n.container,
        n.name,
        n.sha256.to_string(),
        n.size as i64,
        n.content_type,
        n.location.backend.as_str(),
        n.location.container,
        n.location.name,
        n.created_at as i64,
        n.parked
    ])?;
    match old {
        Some(old) if old.location != n.location => tombstone_if_free(tx, &old.location, lease),
        _ => Ok(None),
    }
}

/// Point `org`'s names of `sha` at `from` to `to` (no longer parked); how
/// many there were.
fn move_names(tx: &Transaction<'_>, org: &str, sha: &str, from: &Location, to: &Location) -> Result<usize> {
    Ok(tx
        .prepare_cached(
            "UPDATE named_objects SET backend = ?6, container = ?7, name = ?8, parked = 0
             WHERE org = ?1 AND sha256 = ?2 AND backend = ?3 AND container = ?4 AND name = ?5",
        )?
        .execute(params![
            org,
            sha,
            from.backend.as_str(),
            from.container,
            from.name,
            to.backend.as_str(),
            to.container,
            to.name
        ])?)
}

/// Delete the name `n`; its location is tombstoned on `lease`'s terms if
/// that left it unreferenced.
fn drop_name(tx: &Transaction<'_>, n: &Named, lease: &Lease) -> Result<Option<Tombstone>> {
    tx.prepare_cached("DELETE FROM named_objects WHERE org = ?1 AND space = ?2 AND object = ?3")?.execute(params![
        n.org,
        n.container,
        n.name
    ])?;
    tombstone_if_free(tx, &n.location, lease)
}

/// Rule 1: tombstone `at` on `lease`'s terms if nothing refers to it (and
/// it is not adopted in place). The lease starts now, inside the
/// transaction.
fn tombstone_if_free(tx: &Transaction<'_>, at: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
    if referenced(tx, at.backend, &at.container, &at.name)? || adopted_at(tx, at)? {
        return Ok(None);
    }
    let t = lease.tombstone(at, now() as u64);
    insert_tombstone(tx, &t)?;
    Ok(Some(t))
}

/// Whether `at` lies in a namespace adopted in place: another system's
/// bytes, never tombstoned (so never deleted) by Coffer.
fn adopted_at(tx: &Transaction<'_>, at: &Location) -> Result<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM adopted WHERE backend = ?1 AND container = ?2
             AND substr(?3, 1, length(prefix)) = prefix)",
        )?
        .query_row(params![at.backend.as_str(), at.container, at.name], |r| r.get(0))?)
}

/// The reservation `token`, if it exists.
fn pending_on(conn: &Connection, token: &Token) -> Result<Option<Pending>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {PENDING_COLUMNS} FROM pending WHERE token = ?1"))?;
    Ok(collect(&mut stmt, params![token.as_str()], pending_from)?.pop())
}

fn insert_pending(tx: &Transaction<'_>, p: &Pending) -> Result<()> {
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

fn insert_tombstone(tx: &Transaction<'_>, t: &Tombstone) -> Result<()> {
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

/// Claim `ns` for `org` unless another organisation holds a namespace
/// that overlaps it (the same container, one prefix a prefix of the other).
fn claim_in(tx: &Transaction<'_>, org: &str, ns: &Namespace) -> Result<Claimed> {
    hold_in(tx, Holding::Claim, org, ns)
}

/// Record `org` holding `ns` as `holding` says, unless an overlapping
/// claim or adoption stands in the way ([`Holding::except`]).
fn hold_in(tx: &Transaction<'_>, holding: Holding, org: &str, ns: &Namespace) -> Result<Claimed> {
    let (claims_of, adopted_by) = holding.except(org);
    let taken = match overlapping_claim(tx, ns, claims_of)? {
        Some(t) => Some(t),
        None => overlapping_adopted(tx, ns, adopted_by)?,
    };
    if let Some(taken) = taken {
        return Ok(Claimed::Taken(taken));
    }
    let (table, at) = holding.table();
    tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {table} (backend, container, prefix, org, {at}) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?
    .execute(params![ns.backend.as_str(), ns.container, ns.prefix, org, now()])?;
    Ok(Claimed::Held)
}

/// A claimed namespace that overlaps `ns` (the same container, one prefix a
/// prefix of the other), held by an organisation other than `other_than`
/// (by anyone, with `None`).
fn overlapping_claim(tx: &Transaction<'_>, ns: &Namespace, other_than: Option<&str>) -> Result<Option<Namespace>> {
    let prefix = tx
        .prepare_cached(
            "SELECT prefix FROM claims WHERE backend = ?1 AND container = ?2 AND (?3 IS NULL OR org <> ?3)
             AND (substr(?4, 1, length(prefix)) = prefix OR substr(prefix, 1, length(?4)) = ?4) LIMIT 1",
        )?
        .query_row(params![ns.backend.as_str(), ns.container, other_than, ns.prefix], |r| r.get::<_, String>(0))
        .optional()?;
    Ok(prefix.map(|prefix| Namespace { prefix, ..ns.clone() }))
}

/// An adopted namespace that overlaps `ns`, other than `org`'s own
/// adoption of exactly `ns` (with `Some(org)`).
fn overlapping_adopted(tx: &Transaction<'_>, ns: &Namespace, same: Option<&str>) -> Result<Option<Namespace>> {
    let prefix = tx
        .prepare_cached(
            "SELECT prefix FROM adopted WHERE backend = ?1 AND container = ?2
             AND NOT (?3 IS NOT NULL AND org = ?3 AND prefix = ?4)
             AND (substr(?4, 1, length(prefix)) = prefix OR substr(prefix, 1, length(?4)) = ?4) LIMIT 1",
        )?
        .query_row(params![ns.backend.as_str(), ns.container, same, ns.prefix], |r| r.get::<_, String>(0))
        .optional()?;
    Ok(prefix.map(|prefix| Namespace { prefix, ..ns.clone() }))
}

/// Namespaces from rows of (backend, container, prefix).
fn namespaces(stmt: &mut rusqlite::Statement<'_>, params: impl rusqlite::Params) -> Result<Vec<Namespace>> {
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (backend, container, prefix) = row?;
        out.push(Namespace { backend: BackendKind::parse(&backend)?, container, prefix });
    }
    Ok(out)
}

use super::turns::write_tx;

#[async_trait]
impl Catalog for SqliteDb {
    async fn lookup(&self, org: &str, sha256: &Digest) -> Result<Option<Record>> {
        let (o, s) = (org.to_string(), sha256.to_string());
        self.with_conn(move |conn| lookup_on(conn, &o, &s)).await
    }

    async fn lookup_held(&self, org: &str, sha256: &Digest) -> Result<Option<(Record, bool)>> {
        let (o, s) = (org.to_string(), sha256.to_string());
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS},
                        EXISTS (SELECT 1 FROM claims c WHERE c.org = objects.org AND c.backend = objects.backend
                                AND c.container = objects.container
                                AND substr(objects.name, 1, length(c.prefix)) = c.prefix)
                     OR EXISTS (SELECT 1 FROM adopted a WHERE a.org = objects.org AND a.backend = objects.backend
                                AND a.container = objects.container
                                AND substr(objects.name, 1, length(a.prefix)) = a.prefix)
                 FROM objects WHERE org = ?1 AND sha256 = ?2"
            ))?;
            Ok(collect(&mut stmt, params![o, s], |r| Ok((record_from(r)?, r.get::<_, bool>(9)?)))?.pop())
        })
        .await
    }

    async fn list(&self, org: &str, after: Option<&Digest>, limit: usize) -> Result<Vec<Record>> {
        let (o, a) = (org.to_string(), after.map(|d| d.to_string()).unwrap_or_default());
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 > ?2 ORDER BY sha256 LIMIT ?3"
            ))?;
            collect(&mut stmt, params![o, a, limit as i64], record_from)
        })
        .await
    }

    async fn claim(&self, org: &str, namespace: &Namespace) -> Result<Claimed> {
        let (o, ns) = (org.to_string(), namespace.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            let claimed = claim_in(&tx, &o, &ns)?;
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }

    async fn adopt(&self, org: &str, namespace: &Namespace) -> Result<Claimed> {
        let (o, ns) = (org.to_string(), namespace.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            // Only a place nobody holds, not even this organisation (its
            // own namespaces hold Coffer's bytes, which must stay
            // deletable), and no other adoption overlaps.
            let held = hold_in(&tx, Holding::Adoption, &o, &ns)?;
            tx.commit()?;
            Ok(held)
        })
        .await
    }

    async fn adopted(&self) -> Result<Vec<(String, Namespace)>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached("SELECT backend, container, prefix, org FROM adopted")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (backend, container, prefix, org) = row?;
                out.push((org, Namespace { backend: BackendKind::parse(&backend)?, container, prefix }));
            }
            Ok(out)
        })
        .await
    }

    async fn scan(&self, after: Option<(&str, &Digest)>, parked_only: bool, limit: usize) -> Result<Vec<Record>> {
        let (o, a) = after.map(|(o, d)| (o.to_string(), d.to_string())).unwrap_or_default();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM objects WHERE (org, sha256) > (?1, ?2) AND (parked = 1 OR NOT ?3)
                 ORDER BY org, sha256 LIMIT ?4"
            ))?;
            collect(&mut stmt, params![o, a, parked_only, limit as i64], record_from)
        })
        .await
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
        let (o, s, from, to, t, lease) =
            (org.to_string(), sha256.to_string(), from.clone(), to.clone(), token.clone(), lease.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            let record = match lookup_on(&tx, &o, &s)? {
                Some(r) if r.location == from => r,
                other => return Ok(Relocated::Changed(other)),
            };
            let pending = pending_on(&tx, &t)?;
            let Some(p) = pending else { return Ok(Relocated::Lost) };
            p.check_move(&record, &to)?;
            tx.prepare_cached(
                "UPDATE objects SET backend = ?3, container = ?4, name = ?5, parked = 0 WHERE org = ?1 AND sha256 = ?2",
            )?
            .execute(params![o, s, to.backend.as_str(), to.container, to.name])?;
            move_names(&tx, &o, &s, &from, &to)?;
            tx.execute("DELETE FROM pending WHERE token = ?1", params![t.as_str()])?;
            let tombstone = tombstone_if_free(&tx, &from, &lease)?;
            tx.commit()?;
            Ok(Relocated::Moved(Record { location: to.clone(), parked: false, ..record }, tombstone))
        })
        .await
    }

    async fn claims(&self, org: &str) -> Result<Vec<Namespace>> {
        let o = org.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT backend, container, prefix FROM claims WHERE org = ?1 ORDER BY claimed_at")?;
            namespaces(&mut stmt, params![o])
        })
        .await
    }

    async fn reserve(&self, pending: &Pending) -> Result<Reserved> {
        let p = pending.clone();
        self.with_conn(move |conn| {
            let tx = write_tx(conn)?;
            if let Some(t) = tombstone_at(&tx, &p.location)? {
                return Ok(Reserved::Tombstoned(t));
            }
            // A record or a name of another organisation's.
            let others: i64 = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM objects
                             WHERE backend = ?1 AND container = ?2 AND name = ?3 AND org <> ?4)
                          + (SELECT count(*) FROM named_objects
                             WHERE backend = ?1 AND container = ?2 AND name = ?3 AND org <> ?4)",
                )?
                .query_row(params![p.location.backend.as_str(), p.location.container, p.location.name, p.org], |r| {
                    r.get(0)
                })?;
            if others > 0 {
                return Ok(Reserved::OwnedByOthers);
            }
            // Remembered for good: gc scans every container a put has named.
            tx.prepare_cached("INSERT OR IGNORE INTO containers (backend, container, first_seen) VALUES (?1, ?2, ?3)")?
                .execute(params![p.location.backend.as_str(), p.location.container, p.created_at as i64])?;
            insert_pending(&tx, &p)?;
            tx.commit()?;
            Ok(Reserved::Granted)
        })
        .await
    }

    async fn touch(&self, token: &Token, now: u64) -> Result<bool> {
        let t = token.clone();
        self.with_conn(move |conn| {
            let n = conn
                .prepare_cached("UPDATE pending SET touched_at = ?2 WHERE token = ?1")?
                .execute(params![t.as_str(), now as i64])?;
            Ok(n == 1)
        })
        .await
    }

    async fn commit(&self, token: Option<&Token>, record: &Record) -> Result<Committed> {
        let (t, r) = (token.cloned(), record.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            let sha = r.sha256.to_string();
            if let Some(existing) = lookup_on(&tx, &r.org, &sha)? {
                return Ok(Committed::Existing(existing));
            }
            let Some(t) = &t else { return Ok(Committed::Lost) };
            let pending = pending_on(&tx, t)?;
            let Some(p) = pending else { return Ok(Committed::Lost) };
            p.check_for(&r)?;
            let record = Record { location: p.location, ..r.clone() };
            tx.prepare_cached(&format!(
                "INSERT INTO objects ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                record.org,
                sha,
                record.size as i64,
                record.content_type,
                record.location.backend.as_str(),
                record.location.container,
                record.location.name,
                record.created_at as i64,
                record.parked
            ])?;
            tx.execute("DELETE FROM pending WHERE token = ?1", params![t.as_str()])?;
            tx.commit()?;
            Ok(Committed::Inserted(record))
        })
        .await
    }

    async fn release(&self, token: &Token, untouched_since: Option<u64>, lease: Option<&Lease>) -> Result<Released> {
        let (t, lease) = (token.clone(), lease.cloned());
        self.with_conn(move |conn| {
            let tx = write_tx(conn)?;
            let pending = pending_on(&tx, &t)?;
            let Some(p) = pending else { return Ok(Released::NotHeld) };
            if untouched_since.is_some_and(|cutoff| p.touched_at > cutoff) {
                return Ok(Released::NotHeld);
            }
            tx.execute("DELETE FROM pending WHERE token = ?1", params![t.as_str()])?;
            let tombstone = match &lease {
                Some(lease) => tombstone_if_free(&tx, &p.location, lease)?,
                None => None,
            };
            tx.commit()?;
            Ok(Released::Released(tombstone))
        })
        .await
    }

    async fn remove(&self, org: &str, sha256: &Digest, lease: &Lease) -> Result<Option<(Record, Option<Tombstone>)>> {
        let (o, s, lease) = (org.to_string(), sha256.to_string(), lease.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            let Some(record) = lookup_on(&tx, &o, &s)? else { return Ok(None) };
            tx.execute("DELETE FROM objects WHERE org = ?1 AND sha256 = ?2", params![o, s])?;
            let tombstone = tombstone_if_free(&tx, &record.location, &lease)?;
            tx.commit()?;
            Ok(Some((record, tombstone)))
        })
        .await
    }

    async fn tombstone_if_unreferenced(&self, location: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
        let (l, lease) = (location.clone(), lease.clone());
        self.with_conn(move |conn| {
            let tx = write_tx(conn)?;
            let t = tombstone_if_free(&tx, &l, &lease)?;
            tx.commit()?;
            Ok(t)
        })
        .await
    }

    async fn take_over(&self, location: &Location, holder: &Token, lease: &Lease) -> Result<Option<Tombstone>> {
        let (l, h, lease) = (location.clone(), holder.clone(), lease.clone());
        self.with_conn(move |conn| {
            let now = now() as u64;
            let t = lease.tombstone(&l, now);
            // Strictly after the lease: a holder is never overtaken while
            // its lease lasts.
            let n = conn
                .prepare_cached(
                    "UPDATE tombstones SET token = ?5, created_at = ?6, lease_until = ?7
                     WHERE backend = ?1 AND container = ?2 AND name = ?3 AND token = ?4 AND lease_until < ?6",
                )?
                .execute(params![
                    l.backend.as_str(),
                    l.container,
                    l.name,
                    h.as_str(),
                    t.token.as_str(),
                    now as i64,
                    t.lease_until as i64
                ])?;
            Ok((n == 1).then_some(t))
        })
        .await
    }

    async fn clear_tombstone(&self, location: &Location, token: &Token) -> Result<bool> {
        let (l, t) = (location.clone(), token.clone());
        self.with_conn(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM tombstones WHERE backend = ?1 AND container = ?2 AND name = ?3 AND token = ?4",
                )?
                .execute(params![l.backend.as_str(), l.container, l.name, t.as_str()])?;
            Ok(n == 1)
        })
        .await
    }

    async fn tombstones(&self) -> Result<Vec<Tombstone>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TOMBSTONE_COLUMNS} FROM tombstones ORDER BY backend, container, name"
            ))?;
            collect(&mut stmt, [], tombstone_from)
        })
        .await
    }

    async fn pending_untouched_since(&self, before: u64) -> Result<Vec<Pending>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PENDING_COLUMNS} FROM pending WHERE touched_at <= ?1 ORDER BY touched_at"
            ))?;
            collect(&mut stmt, params![before as i64], pending_from)
        })
        .await
    }

    async fn pending_at(&self, location: &Location) -> Result<Vec<Pending>> {
        let l = location.clone();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PENDING_COLUMNS} FROM pending WHERE backend = ?1 AND container = ?2 AND name = ?3"
            ))?;
            collect(&mut stmt, params![l.backend.as_str(), l.container, l.name], pending_from)
        })
        .await
    }

    async fn referenced(&self, backend: BackendKind, container: &str, names: &[String]) -> Result<HashSet<String>> {
        let (c, names) = (container.to_string(), names.to_vec());
        self.with_conn(move |conn| {
            // One snapshot for the whole page.
            let tx = conn.transaction()?;
            let mut found = HashSet::new();
            for n in &names {
                if referenced(&tx, backend, &c, n)? {
                    found.insert(n.clone());
                }
            }
            Ok(found)
        })
        .await
    }

    async fn containers(&self, backend: BackendKind) -> Result<Vec<String>> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT container FROM objects WHERE backend = ?1
                 UNION SELECT container FROM containers WHERE backend = ?1
                 UNION SELECT container FROM pending WHERE backend = ?1
                 UNION SELECT container FROM tombstones WHERE backend = ?1
                 ORDER BY container",
            )?;
            let rows = stmt.query_map(params![backend.as_str()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn create_container(&self, org: &str, container: &str) -> Result<bool> {
        let (o, c) = (org.to_string(), container.to_string());
        self.with_durable_conn(move |conn| {
            let n = conn
                .prepare_cached("INSERT OR IGNORE INTO named_containers (org, space, created_at) VALUES (?1, ?2, ?3)")?
                .execute(params![o, c, now()])?;
            Ok(n == 1)
        })
        .await
    }

    async fn container(&self, org: &str, container: &str) -> Result<Option<u64>> {
        let (o, c) = (org.to_string(), container.to_string());
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached("SELECT created_at FROM named_containers WHERE org = ?1 AND space = ?2")?
                .query_row(params![o, c], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|t| t as u64))
        })
        .await
    }

    async fn named(&self, org: &str, container: &str, name: &str) -> Result<Option<Named>> {
        let (o, c, n) = (org.to_string(), container.to_string(), name.to_string());
        self.with_conn(move |conn| named_on(conn, &o, &c, &n)).await
    }

    async fn list_named(&self, org: &str, container: &str, after: &str, limit: usize) -> Result<Option<Vec<Named>>> {
        let (o, c, a) = (org.to_string(), container.to_string(), after.to_string());
        self.with_conn(move |conn| {
            // One snapshot: the container and its names.
            let tx = conn.transaction()?;
            if !container_exists(&tx, &o, &c)? {
                return Ok(None);
            }
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = ?1 AND space = ?2 AND object > ?3
                 ORDER BY object LIMIT ?4"
            ))?;
            Ok(Some(collect(&mut stmt, params![o, c, a, limit as i64], named_from)?))
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
        let (t, n, replaces, lease) = (token.cloned(), named.clone(), replaces.copied(), lease.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            if !container_exists(&tx, &n.org, &n.container)? {
                return Ok(NamedCommitted::NoContainer);
            }
            let old = named_on(&tx, &n.org, &n.container, &n.name)?;
            if old.as_ref().map(Named::version) != replaces {
                return Ok(NamedCommitted::Changed);
            }
            let location = match &t {
                Some(t) => {
                    let pending = pending_on(&tx, t)?;
                    let Some(p) = pending else { return Ok(NamedCommitted::Lost) };
                    p.check_content(&n.org, &n.sha256)?;
                    tx.execute("DELETE FROM pending WHERE token = ?1", params![t.as_str()])?;
                    p.location
                }
                None => match lookup_on(&tx, &n.org, &n.sha256.to_string())? {
                    Some(record) => record.location,
                    None => return Ok(NamedCommitted::Lost),
                },
            };
            let n = Named { location, ..n.clone() };
            let tombstone = put_name(&tx, &n, old, &lease)?;
            tx.commit()?;
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
        let (o, c, lease) = (org.to_string(), container.to_string(), lease.clone());
        let these = match which {
            Names::These(names) => Some(names.to_vec()),
            Names::Container => None,
        };
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            if !container_exists(&tx, &o, &c)? {
                return Ok(None);
            }
            let mut tombstones = Vec::new();
            match &these {
                Some(names) => {
                    for (name, version) in names {
                        if let Some(n) = named_on(&tx, &o, &c, name)?.filter(|n| n.version() == *version) {
                            tombstones.extend(drop_name(&tx, &n, &lease)?);
                        }
                    }
                }
                None => {
                    let left: bool = tx
                        .prepare_cached("SELECT EXISTS (SELECT 1 FROM named_objects WHERE org = ?1 AND space = ?2)")?
                        .query_row(params![o, c], |r| r.get(0))?;
                    if left {
                        return Err(Error::Conflict(format!(
                            "container {c:?} is not empty: names were written while it was being deleted"
                        )));
                    }
                    tx.execute("DELETE FROM named_containers WHERE org = ?1 AND space = ?2", params![o, c])?;
                }
            }
            tx.commit()?;
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
        let o = org.to_string();
        let (from, to) = ((from.0.to_string(), from.1.to_string()), (to.0.to_string(), to.1.to_string()));
        let (source_version, dest_version) = (*expect.0, expect.1.copied());
        let lease = lease.clone();
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            let Some(source) = named_on(&tx, &o, &from.0, &from.1)? else { return Ok(Copied::NoSource) };
            if !container_exists(&tx, &o, &to.0)? {
                return Ok(Copied::NoContainer);
            }
            let dest = named_on(&tx, &o, &to.0, &to.1)?;
            if source.version() != source_version || (from != to && dest.as_ref().map(Named::version) != dest_version) {
                return Ok(Copied::Changed);
            }
            if from == to {
                return Ok(Copied::Done(Box::new(source), Vec::new()));
            }
            let copy =
                Named { container: to.0.clone(), name: to.1.clone(), created_at: now() as u64, ..source.clone() };
            let mut tombstones: Vec<Tombstone> = put_name(&tx, &copy, dest, &lease)?.into_iter().collect();
            if remove_source {
                tombstones.extend(drop_name(&tx, &source, &lease)?);
            }
            tx.commit()?;
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
        let (o, c, n, t) = (org.to_string(), container.to_string(), name.to_string(), token.clone());
        self.with_conn(move |conn| {
            let tx = write_tx(conn)?;
            let Some(named) = named_on(&tx, &o, &c, &n)? else { return Ok(None) };
            let at = now() as u64;
            let pending = Pending {
                token: t.clone(),
                org: o.clone(),
                sha256: named.sha256,
                size: named.size,
                location: named.location.clone(),
                created_at: at,
                touched_at: at,
            };
            insert_pending(&tx, &pending)?;
            tx.commit()?;
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
        let o = org.map(str::to_string);
        let (ao, ab, ac, an) = match after {
            Some((org, at)) => {
                (org.to_string(), at.backend.as_str().to_string(), at.container.clone(), at.name.clone())
            }
            None => Default::default(),
        };
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT org, min(sha256), min(size), min(content_type), backend, container, name,
                        min(created_at), max(parked)
                 FROM named_objects n
                 WHERE (?1 IS NULL OR org = ?1) AND (org, backend, container, name) > (?2, ?3, ?4, ?5)
                   AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.org = n.org AND o.backend = n.backend
                                   AND o.container = n.container AND o.name = n.name)
                 GROUP BY org, backend, container, name
                 HAVING max(parked) = 1 OR NOT ?6
                 ORDER BY org, backend, container, name LIMIT ?7",
            )?;
            collect(&mut stmt, params![o, ao, ab, ac, an, parked_only, limit as i64], record_from)
        })
        .await
    }

    async fn named_at(&self, org: &str, at: &Location) -> Result<bool> {
        let (o, at) = (org.to_string(), at.clone());
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM named_objects
                     WHERE org = ?1 AND backend = ?2 AND container = ?3 AND name = ?4)",
                )?
                .query_row(params![o, at.backend.as_str(), at.container, at.name], |r| r.get(0))?)
        })
        .await
    }

    async fn relocate_named(&self, record: &Record, to: &Location, token: &Token, lease: &Lease) -> Result<Relocated> {
        let (r, to, t, lease) = (record.clone(), to.clone(), token.clone(), lease.clone());
        self.with_durable_conn(move |conn| {
            let tx = write_tx(conn)?;
            let Some(p) = pending_on(&tx, &t)? else { return Ok(Relocated::Lost) };
            p.check_move(&r, &to)?;
            if move_names(&tx, &r.org, &r.sha256.to_string(), &r.location, &to)? == 0 {
                return Ok(Relocated::Changed(None));
            }
            tx.execute("DELETE FROM pending WHERE token = ?1", params![t.as_str()])?;
            let tombstone = if r.location == to { None } else { tombstone_if_free(&tx, &r.location, &lease)? };
            tx.commit()?;
            Ok(Relocated::Moved(Record { location: to.clone(), parked: false, ..r.clone() }, tombstone))
        })
        .await
    }
}
