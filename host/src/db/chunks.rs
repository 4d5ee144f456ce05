//! Reading a database blob: its chunk rows fetched one short statement at
//! a time, so a reader that takes its time (a slow client, a paused
//! plugin) holds no transaction and no connection between rows. SQLite's
//! WAL can then be checkpointed whatever readers are doing, and a
//! PostgreSQL snapshot never outlives a fetch.
//!
//! The rows of a published blob are never changed (its blob id is never
//! reused), so rows fetched by separate statements are rows of the same
//! bytes. A blob deleted while it is read ends the read with a not-found
//! error, never with wrong bytes.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::content::ByteStream;
use crate::error::{Error, Result};

/// The first chunk row holding byte `start` of a blob and how far into it
/// that byte is, as one statement (`?1` the blob id, `?2` the byte
/// offset; PostgreSQL's `$n` are substituted): row lengths are summed in
/// the database, which reads no chunk's bytes to do it.
pub(crate) const LOCATE: &str = "SELECT seq, ?2 - first FROM (
        SELECT seq, sum(len) OVER (ORDER BY seq) - len AS first, len FROM (
            SELECT seq, length(data) AS len FROM blob_data WHERE blob_id = ?1
        ) AS lengths
    ) AS rows WHERE first + len > ?2 ORDER BY seq LIMIT 1";

/// The next chunk row at or after `?2` of blob `?1`, if the blob is still
/// published: no row when it is gone, a row of NULLs when it has no more
/// chunks.
pub(crate) const NEXT_ROW: &str = "SELECT d.seq, d.data FROM blobs b
    LEFT JOIN blob_data d ON d.blob_id = b.blob_id AND d.seq >= ?2
    WHERE b.blob_id = ?1 ORDER BY d.seq LIMIT 1";

/// The first byte and the length of a read of a blob of `size` bytes:
/// all of it, or `range` (first, last, and the size the caller recorded).
/// A blob of another size than recorded is other content than the
/// recorded one, and a range of it is refused as such.
pub(crate) fn span(range: Option<(u64, u64, u64)>, size: u64, what: &str) -> Result<(u64, u64)> {
    match range {
        None => Ok((0, size)),
        Some((_, _, recorded)) if recorded != size => {
            Err(Error::Integrity(format!("{what} holds {size} bytes, where {recorded} were recorded")))
        }
        Some((first, last, _)) => Ok((first, last.saturating_sub(first) + 1)),
    }
}

/// What one fetch found.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// A chunk row: its sequence number and bytes.
    Row(i64, Bytes),
    /// The blob is published and has no row at or after the one asked for.
    End,
    /// The blob is no longer published (deleted while it was read).
    Gone,
}

impl Fetched {
    /// What [`NEXT_ROW`] answered, as `(seq, data)` of its one row.
    pub(crate) fn from_row(row: Option<(Option<i64>, Option<Vec<u8>>)>) -> Fetched {
        match row {
            None => Fetched::Gone,
            Some((Some(seq), Some(data))) => Fetched::Row(seq, Bytes::from(data)),
            Some(_) => Fetched::End,
        }
    }
}

/// Where a read starts: the row, how many of its bytes to skip, and how
/// many bytes the read delivers in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub seq: i64,
    pub skip: u64,
    pub len: u64,
}

/// `start.len` bytes of blob `what`, from `start.skip` bytes into row
/// `start.seq`, each row fetched by `fetch(seq)` (the first row at or
/// after `seq`) only when the reader asks for more.
pub(crate) fn rows<F, Fut>(what: String, start: Start, fetch: F) -> ByteStream
where
    F: Fn(i64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Fetched>> + Send + 'static,
{
    let fetch = Arc::new(fetch);
    let state = Some((start.seq, start.skip, start.len));
    Box::pin(futures_util::stream::unfold(state, move |state| {
        let (fetch, what) = (fetch.clone(), what.clone());
        async move {
            let (seq, skip, left) = state?;
            if left == 0 {
                return None;
            }
            let failed = |e: Error| Some((Err(e), None));
            match fetch(seq).await {
                Err(e) => failed(e),
                Ok(Fetched::Row(seq, data)) => {
                    let from = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - from);
                    let piece = data.slice(from..from + take);
                    Some((Ok(piece), Some((seq + 1, 0, left - take as u64))))
                }
                Ok(Fetched::End) => failed(Error::Integrity(format!(
                    "{what}: the stored chunks end {left} bytes short of the blob's recorded size"
                ))),
                // Deleted meanwhile (the object was deleted, or moved by a
                // migration): not found, as a read that began a moment later.
                Ok(Fetched::Gone) => failed(Error::NotFound(format!("{what} was deleted while it was being read"))),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn store(rows: Vec<&'static [u8]>) -> impl Fn(i64) -> std::future::Ready<Result<Fetched>> + Send + Sync {
        move |seq| {
            let i = usize::try_from(seq).unwrap_or(0);
            std::future::ready(Ok(match rows.get(i) {
                Some(r) => Fetched::Row(seq, Bytes::from_static(r)),
                None => Fetched::End,
            }))
        }
    }

    async fn read(start: Start, rows: Vec<&'static [u8]>) -> (Vec<u8>, Option<Error>) {
        let mut s = super::rows("blob".into(), start, store(rows));
        let (mut got, mut err) = (Vec::new(), None);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => err = Some(e),
            }
        }
        (got, err)
    }

    #[tokio::test]
    async fn a_read_takes_exactly_its_bytes_across_rows() {
        let rows: Vec<&'static [u8]> = vec![b"abc", b"defg", b"hi"];
        assert_eq!(read(Start { seq: 0, skip: 0, len: 9 }, rows.clone()).await.0, b"abcdefghi");
        assert_eq!(read(Start { seq: 1, skip: 2, len: 3 }, rows.clone()).await.0, b"fgh");
        assert_eq!(read(Start { seq: 2, skip: 1, len: 1 }, rows.clone()).await.0, b"i");
        let (got, err) = read(Start { seq: 1, skip: 0, len: 10 }, rows).await;
        assert_eq!(got, b"defghi");
        assert!(matches!(err, Some(Error::Integrity(_))), "{err:?}");
    }
}
