//! [`Claims`] on PostgreSQL: claims and adoptions of namespaces, each
//! refused where it overlaps another organisation's, in one transaction.

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::PgDb;
use super::tx::{NOW, serializable};
use crate::backend::BackendKind;
use crate::catalog::{Claimed, Claims, Holding, Namespace};
use crate::error::Result;

/// Claim `ns` for `org` unless another organisation holds a namespace
/// that overlaps it (the same container, one prefix a prefix of the other).
pub(super) async fn claim_in(tx: &Transaction<'_>, org: &str, ns: &Namespace) -> Result<Claimed> {
    hold_in(tx, Holding::Claim, org, ns).await
}

/// Record `org` holding `ns` as `holding` says, unless an overlapping
/// claim or adoption stands in the way ([`Holding::except`]).
pub(super) async fn hold_in(tx: &Transaction<'_>, holding: Holding, org: &str, ns: &Namespace) -> Result<Claimed> {
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
pub(super) async fn overlapping_claim(
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
pub(super) async fn overlapping_adopted(
    tx: &Transaction<'_>,
    ns: &Namespace,
    same: Option<&str>,
) -> Result<Option<Namespace>> {
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
pub(super) fn namespaces(rows: Vec<Row>) -> Result<Vec<Namespace>> {
    rows.iter()
        .map(|r| Ok(Namespace { backend: BackendKind::parse(r.get(0))?, container: r.get(1), prefix: r.get(2) }))
        .collect()
}

#[async_trait]
impl Claims for PgDb {
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

    async fn claims(&self, org: &str) -> Result<Vec<Namespace>> {
        let sql = "SELECT backend, container, prefix FROM claims WHERE org = $1 ORDER BY claimed_at, prefix";
        namespaces(self.query(sql, &[&org]).await?)
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
}
