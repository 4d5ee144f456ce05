//! [`Locations`] in SQLite: reservations, commits, relocations, removals
//! and tombstones, each one transaction under the database's write lock.

use std::collections::HashSet;

use async_trait::async_trait;
use rusqlite::params;

use super::named::move_names;
use super::records::lookup_on;
use super::rows::{PENDING_COLUMNS, RECORD_COLUMNS, TOMBSTONE_COLUMNS, collect, pending_from, tombstone_from};
use super::rules::{insert_pending, pending_on, referenced, tombstone_at, tombstone_if_free};
use super::turns::write_tx;
use super::{SqliteDb, now};
use crate::backend::{BackendKind, Location};
use crate::catalog::{Committed, Lease, Locations, Pending, Record, Released, Relocated, Reserved, Token, Tombstone};
use crate::content::Digest;
use crate::error::Result;

#[async_trait]
impl Locations for SqliteDb {
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
}
