//! [`NamedObjects`] in SQLite: containers and names, each change one
//! transaction that keeps names counted as references (rule 1).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::records::lookup_on;
use super::rows::{NAMED_COLUMNS, collect, named_from, record_from};
use super::rules::{insert_pending, pending_on, tombstone_if_free};
use super::turns::write_tx;
use super::{SqliteDb, now};
use crate::backend::Location;
use crate::catalog::named::{Copied, Named, NamedCommitted, Names, Version};
use crate::catalog::{Lease, NamedObjects, Pending, Record, Relocated, Token, Tombstone};
use crate::error::{Error, Result};

pub(super) fn named_on(conn: &Connection, org: &str, space: &str, object: &str) -> Result<Option<Named>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NAMED_COLUMNS} FROM named_objects WHERE org = ?1 AND space = ?2 AND object = ?3"
    ))?;
    Ok(collect(&mut stmt, params![org, space, object], named_from)?.pop())
}

pub(super) fn container_exists(conn: &Connection, org: &str, space: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM named_containers WHERE org = ?1 AND space = ?2)")?
        .query_row(params![org, space], |r| r.get(0))?)
}

/// Write the name `n`, replacing `old` (what it names now, as the caller
/// read it in `tx`); the location that left unreferenced is tombstoned on
/// `lease`'s terms.
pub(super) fn put_name(
    tx: &Transaction<'_>,
    n: &Named,
    old: Option<Named>,
    lease: &Lease,
) -> Result<Option<Tombstone>> {
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
pub(super) fn move_names(tx: &Transaction<'_>, org: &str, sha: &str, from: &Location, to: &Location) -> Result<usize> {
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
pub(super) fn drop_name(tx: &Transaction<'_>, n: &Named, lease: &Lease) -> Result<Option<Tombstone>> {
    tx.prepare_cached("DELETE FROM named_objects WHERE org = ?1 AND space = ?2 AND object = ?3")?.execute(params![
        n.org,
        n.container,
        n.name
    ])?;
    tombstone_if_free(tx, &n.location, lease)
}

#[async_trait]
impl NamedObjects for SqliteDb {
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
