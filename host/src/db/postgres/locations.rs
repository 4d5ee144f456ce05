//! [`Locations`] on PostgreSQL: reservations, commits, relocations,
//! removals and tombstones, each one SERIALIZABLE transaction (single-row
//! changes, a touch, a takeover, a clear, atomic as they stand). Times are
//! the server's.

use std::collections::HashSet;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::PgDb;
use super::named::move_names;
use super::records::lookup_in;
use super::rows::{PENDING_COLUMNS, RECORD_COLUMNS, TOMBSTONE_COLUMNS, all, pending_from, tombstone_from};
use super::rules::{insert_pending, pending_in, tombstone_held, tombstone_if_free};
use super::tx::{NOW, commit_in_doubt, serializable};
use crate::backend::{BackendKind, Location};
use crate::catalog::{Committed, Lease, Locations, Pending, Record, Released, Relocated, Reserved, Token, Tombstone};
use crate::content::Digest;
use crate::error::Result;

#[async_trait]
impl Locations for PgDb {
    async fn now(&self) -> Result<u64> {
        let rows = self.query(&format!("SELECT {NOW}"), &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
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
}
