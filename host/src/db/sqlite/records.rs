//! [`Records`] in SQLite: reads of the `objects` table (records are
//! written by the lifecycle, `locations.rs`).

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteDb;
use super::rows::{RECORD_COLUMNS, collect, record_from};
use crate::catalog::{Record, Records};
use crate::content::Digest;
use crate::error::Result;

pub(super) fn lookup_on(conn: &Connection, org: &str, sha: &str) -> Result<Option<Record>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 = ?2"))?;
    Ok(collect(&mut stmt, params![org, sha], record_from)?.pop())
}

#[async_trait]
impl Records for SqliteDb {
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
}
