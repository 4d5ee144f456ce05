//! [`NamedObjects`] on PostgreSQL: containers and names, each change one
//! SERIALIZABLE transaction that keeps names counted as references
//! (rule 1).

use std::collections::HashSet;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::PgDb;
use super::records::lookup_in;
use super::rows::{NAMED_COLUMNS, all, named_from, record_from};
use super::rules::{insert_pending, pending_in, tombstone_if_free};
use super::tx::{NOW, commit_in_doubt, now_in, serializable};
use crate::backend::Location;
use crate::catalog::named::{Copied, Named, NamedCommitted, Names, Version};
use crate::catalog::{Lease, NamedObjects, Pending, Record, Relocated, Token, Tombstone};
use crate::error::{Error, Result};

pub(super) async fn named_in(tx: &Transaction<'_>, org: &str, space: &str, object: &str) -> Result<Option<Named>> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = $1 AND space = $2 AND object = $3"
        ))
        .await?;
    all(tx.query(&stmt, &[&org, &space, &object]).await?, named_from).map(|mut v| v.pop())
}

pub(super) async fn container_exists(tx: &Transaction<'_>, org: &str, space: &str) -> Result<bool> {
    let stmt =
        tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM named_containers WHERE org = $1 AND space = $2)").await?;
    Ok(tx.query_one(&stmt, &[&org, &space]).await?.get(0))
}

/// Write the name `n`, replacing `old` (what it names now, as the caller
/// read it in `tx`); the location that left unreferenced is tombstoned on
/// `lease`'s terms.
pub(super) async fn put_name(
    tx: &Transaction<'_>,
    n: &Named,
    old: Option<Named>,
    lease: &Lease,
) -> Result<Option<Tombstone>> {
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
pub(super) async fn move_names(
    tx: &Transaction<'_>,
    org: &str,
    sha: &str,
    from: &Location,
    to: &Location,
) -> Result<u64> {
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
pub(super) async fn drop_name(tx: &Transaction<'_>, n: &Named, lease: &Lease) -> Result<Option<Tombstone>> {
    let stmt = tx.prepare_cached("DELETE FROM named_objects WHERE org = $1 AND space = $2 AND object = $3").await?;
    tx.execute(&stmt, &[&n.org, &n.container, &n.name]).await?;
    tombstone_if_free(tx, &n.location, lease).await
}

#[async_trait]
impl NamedObjects for PgDb {
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
