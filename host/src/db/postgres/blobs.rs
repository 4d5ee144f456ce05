//! Blobs on PostgreSQL, as on SQLite: a put stages its bytes under a fresh
//! blob id (a sequence never hands one out twice), one chunk row per short
//! transaction, the input read and verified between them; then publishes
//! the blob in one transaction. Each chunk write and an abort by
//! `coffer gc` lock the staged blob's row, so an aborted blob never gets
//! rows after its abort. A read streams one blob id's rows from one
//! snapshot, a few rows at a time through a portal, so memory stays
//! bounded whatever the blob's size and a concurrent delete cannot cut it
//! short.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

use tokio_postgres::IsolationLevel;

use super::tx::NOW;
use super::{PgDb, Raced};
use crate::backend::{BackendKind, BlobEntry, BlobMeta, BlobStore, IncompleteUpload};
use crate::content::{ByteStream, CHUNK, Content, Digest, verify_stream};
use crate::error::{Error, PgTransient, Result};

/// Bytes per stored chunk row (and per staging transaction).
const ROW_CHUNK: usize = CHUNK * 4;

/// A blob's size and digest.
const HEAD: &str = "SELECT size, sha256 FROM blobs WHERE container = $1 AND name = $2";

/// Rows a read fetches at a time.
const ROWS_PER_FETCH: i32 = 2;

fn meta_from(size: i64, sha: String) -> Result<BlobMeta> {
    let sha256: Digest =
        sha.parse().map_err(|_| Error::Internal(format!("malformed digest {sha:?} in the blobs table")))?;
    Ok(BlobMeta { size: size as u64, sha256: Some(sha256), checked_by_store: true })
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

impl PgDb {
    /// A small blob (at most one row), already read and verified, staged,
    /// written and published in one transaction. `Some(meta)` when a blob
    /// was there first.
    async fn put_small(&self, c: &str, n: &str, content: &Content, row: &[u8]) -> Result<Option<BlobMeta>> {
        let sha = &content.sha256().to_string();
        let size = content.size() as i64;
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO blob_staging (container, name, started_at, touched_at) VALUES ($1, $2, {NOW}, {NOW})
                     RETURNING blob_id"
                ))
                .await?;
            let blob_id: i64 = tx.query_one(&stmt, &[&c, &n]).await?.get(0);
            if !row.is_empty() {
                let stmt = tx.prepare_cached("INSERT INTO blob_data (blob_id, seq, data) VALUES ($1, 0, $2)").await?;
                tx.execute(&stmt, &[&blob_id, &row]).await?;
            }
            if !publish(&tx, c, n, sha, size, blob_id).await? {
                drop(tx); // rolled back: nothing of this attempt stays
                return self.winner(&client, c, n).await;
            }
            tx.commit().await?;
            Ok(None)
        })
        .await
    }

    /// The blob that was published under `c`/`n` first, after this put's
    /// publish found it there (and rolled back). Deleted again since? Then
    /// this put's attempt is run again (as a lost race), so "written" is
    /// never answered for a blob that is not there.
    async fn winner(&self, client: &deadpool_postgres::Object, c: &str, n: &str) -> Result<Option<BlobMeta>> {
        match self.head_on(client, c, n).await? {
            Some(meta) => Ok(Some(meta)),
            None => Err(Error::Backend {
                message: format!("database blob {c}/{n} was published and deleted while this put published it"),
                retryable: true,
                source: Some(Box::new(Raced)),
            }),
        }
    }

    /// A blob of any size: staged row by row, then published.
    async fn put_staged(&self, c: &str, n: &str, content: &Content) -> Result<Option<BlobMeta>> {
        let blob_id: i64 = self
            .retry(move || async move {
                let client = self.client().await?;
                let stmt = client
                    .prepare_cached(&format!(
                        "INSERT INTO blob_staging (container, name, started_at, touched_at)
                         VALUES ($1, $2, {NOW}, {NOW}) RETURNING blob_id"
                    ))
                    .await?;
                Ok(client.query_one(&stmt, &[&c, &n]).await?.get(0))
            })
            .await?;
        let published = self.copy_and_publish(blob_id, c, n, content).await;
        if !matches!(published, Ok(None)) {
            // Lost the race, or failed: the staged rows go (if this fails
            // too, `coffer gc` finds them as an incomplete upload).
            if let Err(e) = self.discard_staged(blob_id, None).await {
                tracing::warn!(container = c, name = n, blob_id, error = %e, "could not discard a staged blob");
            }
        }
        published
    }

    async fn copy_and_publish(&self, blob_id: i64, c: &str, n: &str, content: &Content) -> Result<Option<BlobMeta>> {
        let what = format!("the input for database blob {c}/{n}");
        let mut input = verify_stream(content.stream().await?, content.sha256(), content.size(), what);
        let mut row = Vec::with_capacity(ROW_CHUNK);
        let mut seq = 0i32;
        loop {
            let chunk = input.next().await.transpose()?;
            let end = chunk.is_none();
            // Rows of exactly ROW_CHUNK bytes, however the input is cut
            // (content in memory comes as one chunk).
            let mut rest = chunk.as_deref().unwrap_or_default();
            while !rest.is_empty() {
                let take = rest.len().min(ROW_CHUNK - row.len());
                row.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if row.len() == ROW_CHUNK {
                    self.write_row(blob_id, seq, &row, c, n).await?;
                    seq += 1;
                    row.clear();
                }
            }
            if end {
                if !row.is_empty() {
                    self.write_row(blob_id, seq, &row, c, n).await?;
                }
                break;
            }
        }
        let sha = &content.sha256().to_string();
        let size = content.size() as i64;
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // A repeat of a publish whose answer was lost finds it done.
            if tx.query_opt("SELECT 1 FROM blobs WHERE blob_id = $1", &[&blob_id]).await?.is_some() {
                return Ok(None);
            }
            if tx.query_opt("SELECT 1 FROM blob_staging WHERE blob_id = $1 FOR UPDATE", &[&blob_id]).await?.is_none() {
                return Err(aborted(c, n));
            }
            if !publish(&tx, c, n, sha, size, blob_id).await? {
                drop(tx);
                return self.winner(&client, c, n).await;
            }
            tx.commit().await?;
            Ok(None)
        })
        .await
    }

    /// One chunk row of staged blob `blob_id`, only while it is staged.
    async fn write_row(&self, blob_id: i64, seq: i32, row: &[u8], c: &str, n: &str) -> Result<()> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let stmt =
                tx.prepare_cached(&format!("UPDATE blob_staging SET touched_at = {NOW} WHERE blob_id = $1")).await?;
            if tx.execute(&stmt, &[&blob_id]).await? != 1 {
                return Err(aborted(c, n));
            }
            let stmt = tx
                .prepare_cached("INSERT INTO blob_data (blob_id, seq, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .await?;
            tx.execute(&stmt, &[&blob_id, &seq, &row]).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Remove staged blob `blob_id` and its rows if it is still staged (in
    /// `container`, when given). True if it was.
    async fn discard_staged(&self, blob_id: i64, container: Option<&str>) -> Result<bool> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let gone = tx
                .query_opt(
                    "DELETE FROM blob_staging WHERE blob_id = $1 AND ($2::text IS NULL OR container = $2)
                     RETURNING blob_id",
                    &[&blob_id, &container],
                )
                .await?
                .is_some();
            if gone {
                tx.execute("DELETE FROM blob_data WHERE blob_id = $1", &[&blob_id]).await?;
            }
            tx.commit().await?;
            Ok(gone)
        })
        .await
    }

    async fn head_on(&self, client: &deadpool_postgres::Object, c: &str, n: &str) -> Result<Option<BlobMeta>> {
        let stmt = client.prepare_cached(HEAD).await?;
        client.query_opt(&stmt, &[&c, &n]).await?.map(|r| meta_from(r.get(0), r.get(1))).transpose()
    }
}

/// Publish staged blob `blob_id` as `c`/`n` inside `tx`; false (and
/// nothing changed) when a blob is there already.
async fn publish(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &str,
    n: &str,
    sha: &str,
    size: i64,
    blob_id: i64,
) -> Result<bool> {
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO blobs (container, name, size, sha256, blob_id, created_at) VALUES ($1, $2, $3, $4, $5, {NOW})
             ON CONFLICT (container, name) DO NOTHING"
        ))
        .await?;
    if tx.execute(&stmt, &[&c, &n, &size, &sha, &blob_id]).await? == 0 {
        return Ok(false);
    }
    tx.execute("DELETE FROM blob_staging WHERE blob_id = $1", &[&blob_id]).await?;
    Ok(true)
}

#[async_trait]
impl BlobStore for PgDb {
    fn kind(&self) -> BackendKind {
        BackendKind::Database
    }

    async fn head(&self, container: &str, name: &str) -> Result<Option<BlobMeta>> {
        let rows = self.query(HEAD, &[&container, &name]).await?;
        rows.first().map(|r| meta_from(r.get(0), r.get(1))).transpose()
    }

    async fn ensure_container(&self, _container: &str) -> Result<()> {
        // Containers are namespaces in the blobs table: nothing to create.
        Ok(())
    }

    async fn put(&self, container: &str, name: &str, content: &Content) -> Result<bool> {
        let at = format!("database blob {container}/{name}");
        // A small blob's one transaction finds an existing blob itself; a
        // large one is looked for first, so it is not staged in vain.
        let small = content.size() <= ROW_CHUNK as u64;
        if !small && let Some(existing) = self.head(container, name).await? {
            existing.confirm(&at, content)?;
            return Ok(false);
        }
        let stored = if small {
            let what = format!("the input for {at}");
            let mut input = verify_stream(content.stream().await?, content.sha256(), content.size(), what);
            let mut chunks = Vec::new();
            while let Some(chunk) = input.next().await {
                chunks.push(chunk?);
            }
            // Content in memory (or a file of one chunk) is sent as it is,
            // not copied into a row first.
            let row = match chunks.len() {
                1 => chunks.pop().unwrap_or_default(),
                _ => Bytes::from(chunks.concat()),
            };
            self.put_small(container, name, content, &row).await?
        } else {
            self.put_staged(container, name, content).await?
        };
        BlobMeta::settle(stored, &at, content)
    }

    async fn get(&self, container: &str, name: &str) -> Result<ByteStream> {
        let (c, n) = (container.to_string(), name.to_string());
        let (found_tx, found_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
        let db = self.clone();
        // A task holds one connection (from the readers' pool) and one
        // snapshot while the reader reads; until the blob is found, a lost
        // connection is tried again.
        tokio::spawn(async move {
            let mut found_tx = Some(found_tx);
            let mut attempt = 0;
            let streamed = loop {
                attempt += 1;
                let streamed = async {
                    let mut client = db.reader().await?;
                    let read = client
                        .build_transaction()
                        .isolation_level(IsolationLevel::RepeatableRead)
                        .read_only(true)
                        .start()
                        .await?;
                    let stmt =
                        read.prepare_cached("SELECT blob_id FROM blobs WHERE container = $1 AND name = $2").await?;
                    let Some(row) = read.query_opt(&stmt, &[&c, &n]).await? else {
                        return Err(Error::NotFound(format!("no blob {n} in database container {c}")));
                    };
                    let blob_id: i64 = row.get(0);
                    let stmt =
                        read.prepare_cached("SELECT data FROM blob_data WHERE blob_id = $1 ORDER BY seq").await?;
                    let portal = read.bind(&stmt, &[&blob_id]).await?;
                    if let Some(f) = found_tx.take() {
                        let _ = f.send(Ok(()));
                    }
                    loop {
                        let rows = read.query_portal(&portal, ROWS_PER_FETCH).await?;
                        if rows.is_empty() {
                            return Ok(());
                        }
                        for row in rows {
                            let data: Vec<u8> = row.get(0);
                            if tx.send(Ok(Bytes::from(data))).await.is_err() {
                                return Ok(()); // the reader went away
                            }
                        }
                    }
                }
                .await;
                match streamed {
                    Err(e)
                        if found_tx.is_some()
                            && attempt < db.options.connection_attempts
                            && super::transient(&e) == Some(PgTransient::Connection) =>
                    {
                        tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                    }
                    other => break other.map_err(|e| db.named(e, 0, attempt - 1)),
                }
            };
            if let Err(e) = streamed {
                match found_tx.take() {
                    Some(f) => {
                        let _ = f.send(Err(e));
                    }
                    None => {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            }
        });
        match found_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Internal("the database reader ended without an answer".into())),
        }
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
    }

    async fn delete(&self, container: &str, name: &str) -> Result<()> {
        self.retry(move || async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let gone = tx
                .query_opt(
                    "DELETE FROM blobs WHERE container = $1 AND name = $2 RETURNING blob_id",
                    &[&container, &name],
                )
                .await?;
            if let Some(row) = gone {
                let blob_id: i64 = row.get(0);
                tx.execute("DELETE FROM blob_data WHERE blob_id = $1", &[&blob_id]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn list(&self, container: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<BlobEntry>> {
        let (after, limit) = (after.unwrap_or(""), limit.min(i64::MAX as usize) as i64);
        let sql = "SELECT name, size, created_at FROM blobs
             WHERE container = $1 AND starts_with(name, $2) AND name > $3 ORDER BY name LIMIT $4";
        let rows = self.query(sql, &[&container, &prefix, &after, &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| BlobEntry {
                name: r.get(0),
                size: r.get::<_, i64>(1) as u64,
                modified: Some(r.get::<_, i64>(2) as u64),
            })
            .collect())
    }

    async fn containers(&self) -> Result<Option<Vec<String>>> {
        let sql = "SELECT container FROM blobs UNION SELECT container FROM blob_staging ORDER BY container";
        Ok(Some(self.query(sql, &[]).await?.iter().map(|r| r.get(0)).collect()))
    }

    async fn incomplete_uploads(&self, container: &str) -> Result<Vec<IncompleteUpload>> {
        let sql = "SELECT blob_id, name, touched_at FROM blob_staging WHERE container = $1 ORDER BY blob_id";
        Ok(self
            .query(sql, &[&container])
            .await?
            .iter()
            .map(|r| IncompleteUpload {
                id: r.get::<_, i64>(0).to_string(),
                name: r.get(1),
                active_at: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    async fn abort_upload(&self, container: &str, upload: &IncompleteUpload) -> Result<()> {
        let blob_id: i64 = upload
            .id
            .parse()
            .map_err(|_| Error::InvalidInput(format!("{:?} is not a staged database blob", upload.id)))?;
        self.discard_staged(blob_id, Some(container)).await.map(|_| ())
    }
}
