//! [`Records`] on PostgreSQL: reads of the `objects` table (records are
//! written by the lifecycle, `locations.rs`).

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::PgDb;
use super::rows::{RECORD_COLUMNS, all, record_from};
use crate::catalog::{Record, Records};
use crate::content::Digest;
use crate::error::Result;

pub(super) async fn lookup_in(tx: &Transaction<'_>, org: &str, sha: &str) -> Result<Option<Record>> {
    let stmt =
        tx.prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = $1 AND sha256 = $2")).await?;
    all(tx.query(&stmt, &[&org, &sha]).await?, record_from).map(|mut v| v.pop())
}

#[async_trait]
impl Records for PgDb {
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

    async fn scan(&self, after: Option<(&str, &Digest)>, parked_only: bool, limit: usize) -> Result<Vec<Record>> {
        let (org, sha) = after.map(|(o, d)| (o.to_string(), d.to_string())).unwrap_or_default();
        let limit = limit.min(i64::MAX as usize) as i64;
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM objects WHERE (org, sha256) > ($1, $2) AND (parked OR NOT $3)
             ORDER BY org, sha256 LIMIT $4"
        );
        all(self.query(&sql, &[&org, &sha, &parked_only, &limit]).await?, record_from)
    }
}
