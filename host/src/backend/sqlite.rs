//! The embedded database: SQLite holding both blobs (in chunks, so a
//! blob of any size moves with bounded memory) and the catalog.
//!
//! rusqlite is blocking, so every operation runs on tokio's blocking pool
//! with a connection from a small pool. WAL mode lets reads go on while a
//! large write is in progress.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{BackendKind, BlobEntry, BlobStore, Location};
use crate::catalog::{Catalog, Record};
use crate::content::{ByteStream, CHUNK, Content, Digest};
use crate::error::{Error, Result};

/// Bytes per stored chunk row.
const ROW_CHUNK: usize = CHUNK * 4;

/// Idle connections kept for reuse.
const POOL_MAX: usize = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS coffer_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    container  TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    PRIMARY KEY (container, name)
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    container  TEXT NOT NULL,
    name       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (container, name, seq)
);
CREATE TABLE IF NOT EXISTS objects (
    org          TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    backend      TEXT NOT NULL,
    container    TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (org, sha256)
);
CREATE INDEX IF NOT EXISTS objects_by_location ON objects (backend, container, name);
";

/// The SQLite database: blobs and catalog.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteDb {
    /// Open (creating if needed) the database file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteDb> {
        let path = path.as_ref().to_path_buf();
        let db = SqliteDb { path, pool: Arc::new(Mutex::new(Vec::new())) };
        db.with_conn(|conn| {
            conn.execute_batch(SCHEMA)?;
            Ok(())
        })
        .await?;
        Ok(db)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(|e| Error::Backend {
            message: format!("cannot open the SQLite database {}: {e}", self.path.display()),
            retryable: false,
            source: Some(Box::new(e)),
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    }

    /// A connection from the pool, or a new one.
    fn checkout(&self) -> Result<Connection> {
        let pooled = self.pool.lock().map_err(|_| Error::Internal("database pool poisoned".into()))?.pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    /// Give a connection back to the pool (or close it if the pool is full).
    fn checkin(&self, conn: Connection) {
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(conn);
        }
    }

    /// Run `f` with a pooled connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.checkout()?;
            let out = f(&mut conn);
            db.checkin(conn);
            out
        })
        .await?
    }
}

/// A catalog row as SQLite returns it, before it is checked.
type RawRecord = (String, String, i64, String, String, String, String, i64);

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?))
}

fn to_record(raw: RawRecord) -> Result<Record> {
    let (org, sha, size, content_type, backend, container, name, created_at) = raw;
    Ok(Record {
        org,
        sha256: sha.parse().map_err(|_| Error::Internal(format!("malformed digest {sha:?} in the catalog")))?,
        size: size as u64,
        content_type,
        location: Location { backend: BackendKind::parse(&backend)?, container, name },
        created_at: created_at as u64,
    })
}

const RECORD_COLUMNS: &str = "org, sha256, size, content_type, backend, container, name, created_at";

#[async_trait]
impl BlobStore for SqliteDb {
    fn kind(&self) -> BackendKind {
        BackendKind::Database
    }

    async fn head(&self, container: &str, name: &str) -> Result<Option<u64>> {
        let (c, n) = (container.to_string(), name.to_string());
        self.with_conn(move |conn| {
            let size: Option<i64> = conn
                .prepare_cached("SELECT size FROM blobs WHERE container = ?1 AND name = ?2")?
                .query_row(params![c, n], |r| r.get(0))
                .optional()?;
            Ok(size.map(|s| s as u64))
        })
        .await
    }

    async fn ensure_container(&self, _container: &str) -> Result<()> {
        // Containers are namespaces in the blobs table: nothing to create.
        Ok(())
    }

    async fn put(&self, container: &str, name: &str, content: &Content) -> Result<bool> {
        let (c, n, content) = (container.to_string(), name.to_string(), content.clone());
        self.with_conn(move |conn| {
            // IMMEDIATE: take the write lock now, so two writers of the same
            // blob serialise and the second sees the first's row.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<i64> = tx
                .query_row("SELECT size FROM blobs WHERE container = ?1 AND name = ?2", params![c, n], |r| r.get(0))
                .optional()?;
            match existing {
                Some(size) if size as u64 == content.size() => return Ok(false),
                Some(size) => {
                    return Err(Error::Conflict(format!(
                        "database blob {c}/{n} holds {size} bytes, not this content's {}; it is never overwritten",
                        content.size()
                    )));
                }
                None => {}
            }
            {
                let mut insert =
                    tx.prepare("INSERT INTO blob_chunks (container, name, seq, data) VALUES (?1, ?2, ?3, ?4)")?;
                let mut row = Vec::with_capacity(ROW_CHUNK);
                let mut seq = 0i64;
                content.read_verified(|chunk| {
                    row.extend_from_slice(chunk);
                    if row.len() >= ROW_CHUNK {
                        insert.execute(params![c, n, seq, row])?;
                        seq += 1;
                        row.clear();
                    }
                    Ok(())
                })?;
                if !row.is_empty() {
                    insert.execute(params![c, n, seq, row])?;
                }
            }
            tx.execute(
                "INSERT INTO blobs (container, name, size, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![c, n, content.size() as i64, content.sha256().to_string()],
            )?;
            // Dropping the transaction on any error above rolls it back:
            // no partial blob is ever visible.
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn get(&self, container: &str, name: &str) -> Result<ByteStream> {
        let (c, n) = (container.to_string(), name.to_string());
        if self.head(&c, &n).await?.is_none() {
            return Err(Error::NotFound(format!("no blob {n} in database container {c}")));
        }
        // A blocking task reads chunk by chunk into a small channel: memory
        // stays bounded by the channel's depth, whatever the blob's size.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let read = db.checkout().and_then(|conn| {
                let streamed = (|| -> Result<()> {
                    let mut stmt = conn.prepare_cached(
                        "SELECT data FROM blob_chunks WHERE container = ?1 AND name = ?2 ORDER BY seq",
                    )?;
                    let mut rows = stmt.query(params![c, n])?;
                    while let Some(row) = rows.next()? {
                        let data: Vec<u8> = row.get(0)?;
                        if tx.blocking_send(Ok(Bytes::from(data))).is_err() {
                            return Ok(()); // the reader went away
                        }
                    }
                    Ok(())
                })();
                db.checkin(conn);
                streamed
            });
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
    }

    async fn delete(&self, container: &str, name: &str) -> Result<()> {
        let (c, n) = (container.to_string(), name.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM blob_chunks WHERE container = ?1 AND name = ?2", params![c, n])?;
            tx.execute("DELETE FROM blobs WHERE container = ?1 AND name = ?2", params![c, n])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list(&self, container: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<BlobEntry>> {
        let (c, p, a) = (container.to_string(), prefix.to_string(), after.unwrap_or("").to_string());
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT name, size FROM blobs WHERE container = ?1 AND substr(name, 1, length(?2)) = ?2 AND name > ?3
                 ORDER BY name LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![c, p, a, limit as i64], |r| {
                Ok(BlobEntry { name: r.get(0)?, size: r.get::<_, i64>(1)? as u64 })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[async_trait]
impl Catalog for SqliteDb {
    async fn lookup(&self, org: &str, sha256: &Digest) -> Result<Option<Record>> {
        let (o, s) = (org.to_string(), sha256.to_string());
        self.with_conn(move |conn| {
            let raw = conn
                .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 = ?2"))?
                .query_row(params![o, s], record_from_row)
                .optional()?;
            raw.map(to_record).transpose()
        })
        .await
    }

    async fn insert(&self, record: &Record) -> Result<Record> {
        let r = record.clone();
        self.with_conn(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO objects ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (org, sha256) DO NOTHING"
            ))?
            .execute(params![
                r.org,
                r.sha256.to_string(),
                r.size as i64,
                r.content_type,
                r.location.backend.as_str(),
                r.location.container,
                r.location.name,
                r.created_at as i64
            ])?;
            let raw = conn
                .prepare_cached(&format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 = ?2"))?
                .query_row(params![r.org, r.sha256.to_string()], record_from_row)?;
            to_record(raw)
        })
        .await
    }

    async fn remove(&self, org: &str, sha256: &Digest) -> Result<Option<(Record, u64)>> {
        let (o, s) = (org.to_string(), sha256.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let raw = tx
                .query_row(
                    &format!("SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 = ?2"),
                    params![o, s],
                    record_from_row,
                )
                .optional()?;
            let Some(raw) = raw else { return Ok(None) };
            let record = to_record(raw)?;
            tx.execute("DELETE FROM objects WHERE org = ?1 AND sha256 = ?2", params![o, s])?;
            let remaining: i64 = tx.query_row(
                "SELECT count(*) FROM objects WHERE backend = ?1 AND container = ?2 AND name = ?3",
                params![record.location.backend.as_str(), record.location.container, record.location.name],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(Some((record, remaining as u64)))
        })
        .await
    }

    async fn list(&self, org: &str, after: Option<&Digest>, limit: usize) -> Result<Vec<Record>> {
        let (o, a) = (org.to_string(), after.map(|d| d.to_string()).unwrap_or_default());
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM objects WHERE org = ?1 AND sha256 > ?2 ORDER BY sha256 LIMIT ?3"
            ))?;
            let raws = stmt.query_map(params![o, a, limit as i64], record_from_row)?;
            raws.map(|r| to_record(r?)).collect()
        })
        .await
    }

    async fn owners(&self, location: &Location) -> Result<Vec<String>> {
        let l = location.clone();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT org FROM objects WHERE backend = ?1 AND container = ?2 AND name = ?3 ORDER BY org",
            )?;
            let orgs = stmt.query_map(params![l.backend.as_str(), l.container, l.name], |r| r.get(0))?;
            Ok(orgs.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }
}
