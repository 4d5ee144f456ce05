//! Blobs on PostgreSQL, as on SQLite: a put stages its bytes under a fresh
//! blob id (a sequence never hands one out twice), one chunk row per short
//! transaction, the input read and verified between them; then publishes
//! the blob in one transaction. Each chunk write and an abort by
//! `coffer gc` lock the staged blob's row, so an aborted blob never gets
//! rows after its abort. A read fetches one chunk row per statement, as
//! the reader asks for it (see [`crate::db::chunks`]): memory stays
//! bounded whatever the blob's size, and no snapshot or connection is held
//! while a slow reader waits.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::tx::NOW;
use super::{PgDb, Raced};
use crate::backend::{BackendKind, BlobEntry, BlobMeta, BlobStore, IncompleteUpload};
use crate::content::{ByteStream, CHUNK, Content, Digest, verify_stream};
use crate::db::chunks::{self, Fetched, Start};
use crate::error::{Error, Result};

/// Bytes per stored chunk row (and per staging transaction).
const ROW_CHUNK: usize = CHUNK * 4;

/// A blob's size and digest.
const HEAD: &str = "SELECT size, sha256 FROM blobs WHERE container = $1 AND name = $2";

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

impl PgDb {
    /// Stream the blob, or bytes `start..=end` of it: one short statement
    /// finds it (and the row its range starts in), then each chunk row is
    /// one statement of its own when the reader asks for it (see
    /// [`chunks`]), so no snapshot is held while the reader waits.
    async fn read(&self, container: &str, name: &str, range: Option<(u64, u64, u64)>) -> Result<ByteStream> {
        let find = "SELECT blob_id, size FROM blobs WHERE container = $1 AND name = $2";
        let Some(row) = self.query(find, &[&container, &name]).await?.into_iter().next() else {
            return Err(Error::NotFound(format!("no blob {name} in database container {container}")));
        };
        let (blob_id, size): (i64, i64) = (row.get(0), row.get(1));
        let (first, len) = chunks::span(range, size as u64, &format!("database blob {container}/{name}"))?;
        let start = if first == 0 {
            Start { seq: 0, skip: 0, len }
        } else {
            let rows = self.query(&pg(chunks::LOCATE), &[&blob_id, &(first as i64)]).await?;
            match rows.first() {
                Some(r) => Start { seq: i64::from(r.get::<_, i32>(0)), skip: r.get::<_, i64>(1) as u64, len },
                None => Start { seq: i64::MAX, skip: 0, len },
            }
        };
        let db = self.clone();
        let next = pg(chunks::NEXT_ROW);
        let what = format!("database blob {container}/{name}");
        Ok(chunks::rows(what, start, move |seq| {
            let (db, next) = (db.clone(), next.clone());
            async move {
                let seq = i32::try_from(seq).unwrap_or(i32::MAX);
                let rows = db.query(&next, &[&blob_id, &seq]).await?;
                let row =
                    rows.first().map(|r| (r.get::<_, Option<i32>>(0).map(i64::from), r.get::<_, Option<Vec<u8>>>(1)));
                Ok(Fetched::from_row(row))
            }
        }))
    }
}

/// A statement written with SQLite's `?n` placeholders, with PostgreSQL's.
fn pg(sql: &str) -> String {
    sql.replace('?', "$")
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
        self.read(container, name, None).await
    }

    async fn get_range(&self, container: &str, name: &str, start: u64, end: u64, size: u64) -> Result<ByteStream> {
        self.read(container, name, Some((start, end, size))).await
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
