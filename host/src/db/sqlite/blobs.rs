//! Blobs in SQLite. A put stages its bytes under a fresh blob id, one chunk
//! row per short transaction (the input is read and checked between them,
//! never while the write lock is held), then publishes the blob in one
//! short transaction. A crash leaves only staged rows, which `coffer gc`
//! aborts. A read fetches one chunk row per statement, as the reader asks
//! for it (see [`crate::db::chunks`]): no transaction stays open while a
//! slow reader waits, so the WAL can always be checkpointed.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{SqliteDb, now};
use crate::backend::{BackendKind, BlobEntry, BlobMeta, BlobStore, IncompleteUpload};
use crate::content::{ByteStream, CHUNK, Content, Digest};
use crate::db::chunks::{self, Fetched, Start};
use crate::error::{Error, Result};

/// Bytes per stored chunk row (and per staging transaction).
const ROW_CHUNK: usize = CHUNK * 4;

fn meta_from(size: i64, sha: String) -> Result<BlobMeta> {
    let sha256: Digest =
        sha.parse().map_err(|_| Error::Internal(format!("malformed digest {sha:?} in the blobs table")))?;
    Ok(BlobMeta { size: size as u64, sha256: Some(sha256), checked_by_store: true })
}

fn head_on(conn: &Connection, c: &str, n: &str) -> Result<Option<BlobMeta>> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT size, sha256 FROM blobs WHERE container = ?1 AND name = ?2")?
        .query_row(params![c, n], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(size, sha)| meta_from(size, sha)).transpose()
}

/// Publish staged blob `blob_id` as `c`/`n`, inside `tx`: its row in
/// `blobs`, and it is no longer staged.
fn publish(tx: &Transaction<'_>, c: &str, n: &str, content: &Content, blob_id: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO blobs (container, name, size, sha256, blob_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![c, n, content.size() as i64, content.sha256().to_string(), blob_id, now()])?;
    tx.prepare_cached("DELETE FROM blob_staging WHERE blob_id = ?1")?.execute(params![blob_id])?;
    Ok(())
}

impl SqliteDb {
    /// A blob that fits in one row: read and verified first (at most one
    /// row in memory), then stored and published in one short transaction.
    /// `Ok(None)` when published, `Ok(Some(meta))` when a blob was there.
    fn put_small_blocking(&self, c: &str, n: &str, content: &Content) -> Result<Option<BlobMeta>> {
        let mut row = Vec::with_capacity(usize::try_from(content.size()).unwrap_or(ROW_CHUNK));
        content.read_verified(|chunk| {
            row.extend_from_slice(chunk);
            Ok(())
        })?;
        let mut conn = self.checkout()?;
        let out = self.retry_busy(|| {
            let tx = super::turns::write_tx(&mut conn)?;
            if let Some(existing) = head_on(&tx, c, n)? {
                return Ok(Some(existing));
            }
            // A fresh id from the same never-reused sequence as staged blobs.
            tx.prepare_cached(
                "INSERT INTO blob_staging (container, name, started_at, touched_at) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![c, n, now()])?;
            let blob_id = tx.last_insert_rowid();
            if !row.is_empty() {
                tx.prepare_cached("INSERT INTO blob_data (blob_id, seq, data) VALUES (?1, 0, ?2)")?
                    .execute(params![blob_id, &row[..]])?;
            }
            publish(&tx, c, n, content, blob_id)?;
            tx.commit()?;
            Ok(None)
        });
        self.checkin(conn);
        out
    }

    /// The whole staged put, blocking: stage, copy, publish. `Ok(None)`
    /// when published, `Ok(Some(meta))` when another put published a blob
    /// under the name first (this one's rows are discarded).
    fn put_blocking(&self, c: &str, n: &str, content: &Content) -> Result<Option<BlobMeta>> {
        let mut conn = self.checkout()?;
        let blob_id = self.retry_busy(|| {
            conn.prepare_cached(
                "INSERT INTO blob_staging (container, name, started_at, touched_at) VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![c, n, now()])?;
            Ok(conn.last_insert_rowid())
        });
        let blob_id = match blob_id {
            Ok(id) => id,
            Err(e) => {
                self.checkin(conn);
                return Err(e);
            }
        };
        let published = self.copy_and_publish(&mut conn, blob_id, c, n, content);
        if !matches!(published, Ok(None)) {
            // Lost the race, or failed: the staged rows go (if this fails
            // too, `coffer gc` finds them as an incomplete upload).
            if let Err(e) = self.retry_busy(|| discard_staged(&mut conn, blob_id, None)) {
                tracing::warn!(container = c, name = n, blob_id, error = %e, "could not discard a staged blob");
            }
        }
        self.checkin(conn);
        published
    }

    fn copy_and_publish(
        &self,
        conn: &mut Connection,
        blob_id: i64,
        c: &str,
        n: &str,
        content: &Content,
    ) -> Result<Option<BlobMeta>> {
        let mut row = Vec::with_capacity(ROW_CHUNK);
        let mut seq = 0i64;
        let flush = |conn: &mut Connection, row: &mut Vec<u8>, seq: &mut i64| -> Result<()> {
            self.retry_busy(|| {
                let tx = super::turns::write_tx(conn)?;
                // Only while still staged: rows for a blob that `coffer gc`
                // aborted would belong to nothing.
                let staged = tx
                    .prepare_cached("UPDATE blob_staging SET touched_at = ?2 WHERE blob_id = ?1")?
                    .execute(params![blob_id, now()])?;
                if staged != 1 {
                    return Err(aborted(c, n));
                }
                tx.prepare_cached("INSERT INTO blob_data (blob_id, seq, data) VALUES (?1, ?2, ?3)")?
                    .execute(params![blob_id, *seq, &row[..]])?;
                tx.commit()?;
                Ok(())
            })?;
            *seq += 1;
            row.clear();
            Ok(())
        };
        // Read and verified outside any transaction; each full row is one
        // short transaction of its own.
        content.read_verified(|chunk| {
            row.extend_from_slice(chunk);
            if row.len() >= ROW_CHUNK {
                flush(conn, &mut row, &mut seq)?;
            }
            Ok(())
        })?;
        if !row.is_empty() {
            flush(conn, &mut row, &mut seq)?;
        }
        self.retry_busy(|| {
            let tx = super::turns::write_tx(conn)?;
            if let Some(existing) = head_on(&tx, c, n)? {
                return Ok(Some(existing));
            }
            let staged: i64 =
                tx.query_row("SELECT count(*) FROM blob_staging WHERE blob_id = ?1", params![blob_id], |r| r.get(0))?;
            if staged != 1 {
                return Err(aborted(c, n));
            }
            publish(&tx, c, n, content, blob_id)?;
            tx.commit()?;
            Ok(None)
        })
    }
}

impl SqliteDb {
    /// Stream the blob, or bytes `start..=end` of it: one short statement
    /// finds it (and the row its range starts in), then each chunk row is
    /// one statement of its own when the reader asks for it (see
    /// [`chunks`]), so no transaction stays open while the reader waits.
    async fn read(&self, container: &str, name: &str, range: Option<(u64, u64, u64)>) -> Result<ByteStream> {
        let (c, n) = (container.to_string(), name.to_string());
        let found = self
            .with_conn(move |conn| {
                let blob: Option<(i64, i64)> = conn
                    .prepare_cached("SELECT blob_id, size FROM blobs WHERE container = ?1 AND name = ?2")?
                    .query_row(params![c, n], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((blob_id, size)) = blob else {
                    return Err(Error::NotFound(format!("no blob {n} in database container {c}")));
                };
                let (first, len) = chunks::span(range, size as u64, &format!("database blob {c}/{n}"))?;
                let start = if first == 0 {
                    Start { seq: 0, skip: 0, len }
                } else {
                    let at: Option<(i64, i64)> = conn
                        .prepare_cached(chunks::LOCATE)?
                        .query_row(params![blob_id, first as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    match at {
                        Some((seq, skip)) => Start { seq, skip: skip as u64, len },
                        None => Start { seq: i64::MAX, skip: 0, len },
                    }
                };
                Ok((blob_id, start))
            })
            .await?;
        let (blob_id, start) = found;
        let db = self.clone();
        let what = format!("database blob {container}/{name}");
        Ok(chunks::rows(what, start, move |seq| {
            let db = db.clone();
            async move {
                db.with_conn(move |conn| {
                    let row: Option<(Option<i64>, Option<Vec<u8>>)> = conn
                        .prepare_cached(chunks::NEXT_ROW)?
                        .query_row(params![blob_id, seq], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    Ok(Fetched::from_row(row))
                })
                .await
            }
        }))
    }
}

/// `coffer gc` aborted a staged blob (as abandoned) while it was written.
fn aborted(c: &str, n: &str) -> Error {
    Error::Backend {
        message: format!(
            "database blob {c}/{n}: its staged upload was aborted (by coffer gc) while it was being written; try again"
        ),
        retryable: false,
        source: None,
    }
}

/// Remove a staged blob and its rows, in one transaction, if it is still
/// staged (in `container`, when given): a blob that was published in the
/// meantime is never touched.
fn discard_staged(conn: &mut Connection, blob_id: i64, container: Option<&str>) -> Result<bool> {
    let tx = super::turns::write_tx(conn)?;
    let staged: Option<String> = tx
        .query_row("SELECT container FROM blob_staging WHERE blob_id = ?1", params![blob_id], |r| r.get(0))
        .optional()?;
    let ours = staged.is_some_and(|c| container.is_none_or(|want| want == c));
    if ours {
        tx.execute("DELETE FROM blob_data WHERE blob_id = ?1", params![blob_id])?;
        tx.execute("DELETE FROM blob_staging WHERE blob_id = ?1", params![blob_id])?;
    }
    tx.commit()?;
    Ok(ours)
}

#[async_trait]
impl BlobStore for SqliteDb {
    fn kind(&self) -> BackendKind {
        BackendKind::Database
    }

    async fn head(&self, container: &str, name: &str) -> Result<Option<BlobMeta>> {
        let (c, n) = (container.to_string(), name.to_string());
        self.with_conn(move |conn| head_on(conn, &c, &n)).await
    }

    async fn ensure_container(&self, _container: &str) -> Result<()> {
        // Containers are namespaces in the blobs table: nothing to create.
        Ok(())
    }

    async fn put(&self, container: &str, name: &str, content: &Content) -> Result<bool> {
        let at = format!("database blob {container}/{name}");
        // A small blob's one transaction looks for an existing blob itself;
        // a large one is looked for first, so it is not staged in vain.
        let small = content.size() <= ROW_CHUNK as u64;
        if !small && let Some(existing) = self.head(container, name).await? {
            existing.confirm(&at, content)?;
            return Ok(false);
        }
        let (db, c, n, content2) = (self.clone(), container.to_string(), name.to_string(), content.clone());
        let stored = tokio::task::spawn_blocking(move || {
            if small { db.put_small_blocking(&c, &n, &content2) } else { db.put_blocking(&c, &n, &content2) }
        });
        BlobMeta::settle(stored.await??, &at, content)
    }

    async fn get(&self, container: &str, name: &str) -> Result<ByteStream> {
        self.read(container, name, None).await
    }

    async fn get_range(&self, container: &str, name: &str, start: u64, end: u64, size: u64) -> Result<ByteStream> {
        self.read(container, name, Some((start, end, size))).await
    }

    async fn delete(&self, container: &str, name: &str) -> Result<()> {
        let (c, n) = (container.to_string(), name.to_string());
        self.with_conn(move |conn| {
            let tx = super::turns::write_tx(conn)?;
            let blob_id: Option<i64> = tx
                .query_row("SELECT blob_id FROM blobs WHERE container = ?1 AND name = ?2", params![c, n], |r| r.get(0))
                .optional()?;
            if let Some(id) = blob_id {
                tx.execute("DELETE FROM blobs WHERE blob_id = ?1", params![id])?;
                tx.execute("DELETE FROM blob_data WHERE blob_id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list(&self, container: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<BlobEntry>> {
        let (c, p, a) = (container.to_string(), prefix.to_string(), after.unwrap_or("").to_string());
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, size, created_at FROM blobs
                 WHERE container = ?1 AND substr(name, 1, length(?2)) = ?2 AND name > ?3
                 ORDER BY name LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![c, p, a, limit as i64], |r| {
                Ok(BlobEntry {
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    modified: Some(r.get::<_, i64>(2)? as u64),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn containers(&self) -> Result<Option<Vec<String>>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT container FROM blobs UNION SELECT container FROM blob_staging ORDER BY container",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<String>>>()?))
        })
        .await
    }

    async fn incomplete_uploads(&self, container: &str) -> Result<Vec<IncompleteUpload>> {
        let c = container.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT blob_id, name, touched_at FROM blob_staging WHERE container = ?1 ORDER BY blob_id",
            )?;
            let rows = stmt.query_map(params![c], |r| {
                Ok(IncompleteUpload {
                    id: r.get::<_, i64>(0)?.to_string(),
                    name: r.get(1)?,
                    active_at: r.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn abort_upload(&self, container: &str, upload: &IncompleteUpload) -> Result<()> {
        let blob_id: i64 = upload
            .id
            .parse()
            .map_err(|_| Error::InvalidInput(format!("{:?} is not a staged database blob", upload.id)))?;
        let c = container.to_string();
        self.with_conn(move |conn| discard_staged(conn, blob_id, Some(&c)).map(|_| ())).await
    }
}
