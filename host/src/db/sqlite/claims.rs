//! [`Claims`] in SQLite: claims and adoptions of namespaces, each refused
//! where it overlaps another organisation's, in one transaction.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};

use super::turns::write_tx;
use super::{SqliteDb, now};
use crate::backend::BackendKind;
use crate::catalog::{Claimed, Claims, Holding, Namespace};
use crate::error::Result;

/// Claim `ns` for `org` unless another organisation holds a namespace
/// that overlaps it (the same container, one prefix a prefix of the other).
pub(super) fn claim_in(tx: &Transaction<'_>, org: &str, ns: &Namespace) -> Result<Claimed> {
    hold_in(tx, Holding::Claim, org, ns)
}

/// Record `org` holding `ns` as `holding` says, unless an overlapping
/// claim or adoption stands in the way ([`Holding::except`]).
pub(super) fn hold_in(tx: &Transaction<'_>, holding: Holding, org: &str, ns: &Namespace) -> Result<Claimed> {
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
pub(super) fn overlapping_claim(
    tx: &Transaction<'_>,
    ns: &Namespace,
    other_than: Option<&str>,
) -> Result<Option<Namespace>> {
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
pub(super) fn overlapping_adopted(
    tx: &Transaction<'_>,
    ns: &Namespace,
    same: Option<&str>,
) -> Result<Option<Namespace>> {
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
pub(super) fn namespaces(stmt: &mut rusqlite::Statement<'_>, params: impl rusqlite::Params) -> Result<Vec<Namespace>> {
    let rows = stmt.query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (backend, container, prefix) = row?;
        out.push(Namespace { backend: BackendKind::parse(&backend)?, container, prefix });
    }
    Ok(out)
}

#[async_trait]
impl Claims for SqliteDb {
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

    async fn claims(&self, org: &str) -> Result<Vec<Namespace>> {
        let o = org.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT backend, container, prefix FROM claims WHERE org = ?1 ORDER BY claimed_at")?;
            namespaces(&mut stmt, params![o])
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sqlite::SqliteDb;

    /// A claim is refused when it overlaps another organisation's: the same
    /// container and one prefix a prefix of the other, either way round.
    #[tokio::test]
    async fn overlapping_claims_of_another_organisation_are_refused() {
        use crate::backend::BackendKind::{Database, S3};
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(dir.path().join("c.db")).await.unwrap();
        let ns = |backend, container: &str, prefix: &str| Namespace {
            backend,
            container: container.into(),
            prefix: prefix.into(),
        };
        let acme = ns(S3, "b", "acme/");
        assert_eq!(db.claim("acme", &acme).await.unwrap(), Claimed::Held);
        assert_eq!(db.claim("acme", &acme).await.unwrap(), Claimed::Held, "again: still held");
        for wider_or_narrower in [ns(S3, "b", ""), ns(S3, "b", "acme/x/"), acme.clone()] {
            assert_eq!(db.claim("evil", &wider_or_narrower).await.unwrap(), Claimed::Taken(acme.clone()));
        }
        for apart in [ns(S3, "b", "acmex/"), ns(S3, "c", ""), ns(Database, "b", "")] {
            assert_eq!(db.claim("evil", &apart).await.unwrap(), Claimed::Held, "{apart}");
        }
        assert_eq!(db.claims("acme").await.unwrap(), vec![acme]);
        assert_eq!(db.claims("evil").await.unwrap().len(), 3);
    }
}
