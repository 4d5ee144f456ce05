//! Content coming back: the [`ByteStream`] backends answer with, checked
//! against its digest as it passes ([`verify_stream`]), and ranges of it.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;

use super::digest::{Digest, Sha256};
use crate::error::{Error, Result};

/// Bytes read or written per step while hashing, spooling and storing.
pub const CHUNK: usize = 256 * 1024;

/// A stream of bytes coming back from a backend.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Bytes `start..=end` of a stream, cut as it passes. The stream is read
/// to its end (so a verified stream's digest is checked), and the last
/// piece of the range is held back until it has been: a corrupt object
/// never completes a range either. This costs a read of everything before
/// the range's end; stores read ranges themselves
/// ([`crate::backend::BlobStore::get_range`]).
pub fn range(stream: ByteStream, start: u64, end: u64) -> ByteStream {
    struct State {
        inner: ByteStream,
        offset: u64,
        held: Option<Bytes>,
        done: bool,
    }
    let state = State { inner: stream, offset: 0, held: None, done: false };
    Box::pin(futures_util::stream::unfold(state, move |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            match s.inner.next().await {
                None => {
                    s.done = true;
                    if let Some(last) = s.held.take() {
                        return Some((Ok(last), s));
                    }
                }
                Some(Err(e)) => {
                    s.done = true;
                    s.held = None;
                    return Some((Err(e), s));
                }
                Some(Ok(chunk)) => {
                    let (from, to) = (s.offset, s.offset + chunk.len() as u64);
                    s.offset = to;
                    let lo = start.max(from);
                    let hi = (end + 1).min(to);
                    if lo < hi {
                        let piece = chunk.slice((lo - from) as usize..(hi - from) as usize);
                        if let Some(previous) = s.held.replace(piece) {
                            return Some((Ok(previous), s));
                        }
                    }
                }
            }
        }
    }))
}

/// Pass `stream` through, checking that it holds exactly `len` bytes: a
/// stream that runs over ends with an [`Error::Integrity`] in place of the
/// chunk that would go past `len`, and one that ends short with one after
/// its last chunk. For ranges, which cannot be checked against a digest.
pub fn exact_len(stream: ByteStream, len: u64, what: String) -> ByteStream {
    let state = (stream, 0u64, false);
    Box::pin(futures_util::stream::unfold(state, move |(mut inner, seen, done)| {
        let what = what.clone();
        async move {
            if done {
                return None;
            }
            let integrity = |detail: String| Error::Integrity(format!("{what}: {detail}"));
            match inner.next().await {
                Some(Ok(chunk)) if seen + chunk.len() as u64 > len => {
                    Some((Err(integrity(format!("more than the {len} bytes asked for"))), (inner, seen, true)))
                }
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    Some((Ok(chunk), (inner, seen, false)))
                }
                Some(Err(e)) => Some((Err(e), (inner, seen, true))),
                None if seen < len => {
                    Some((Err(integrity(format!("only {seen} of the {len} bytes asked for"))), (inner, seen, true)))
                }
                None => None,
            }
        }
    }))
}

/// Pass `stream` through, hashing it. The chunk that completes the
/// expected `size` is held back until the digest is checked: on a mismatch
/// (or more or fewer bytes than `size`) an integrity error takes its place,
/// so the full wrong content is never handed on. A caller that must never
/// expose even partial content writes to a temporary place and commits
/// only after the stream ended cleanly (as `Coffer::get_to_path` does).
pub fn verify_stream(stream: ByteStream, expected: Digest, size: u64, what: String) -> ByteStream {
    let state = (stream, Sha256::new(), 0u64, false);
    Box::pin(futures_util::stream::unfold(state, move |(mut inner, mut hasher, mut seen, done)| {
        let what = what.clone();
        async move {
            if done {
                return None;
            }
            let integrity = |detail: String| Error::Integrity(format!("{what}: {detail}"));
            match inner.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    seen += chunk.len() as u64;
                    if seen > size {
                        let e = integrity(format!("more than the expected {size} bytes"));
                        return Some((Err(e), (inner, hasher, seen, true)));
                    }
                    if seen == size {
                        let got = Digest::from_hasher(std::mem::take(&mut hasher));
                        if got != expected {
                            let e = integrity(format!(
                                "the bytes do not match their digest (SHA-256 {got}, expected {expected})"
                            ));
                            return Some((Err(e), (inner, hasher, seen, true)));
                        }
                    }
                    Some((Ok(chunk), (inner, hasher, seen, false)))
                }
                Some(Err(e)) => Some((Err(e), (inner, hasher, seen, true))),
                None if seen < size => {
                    let e = integrity(format!("only {seen} of the expected {size} bytes"));
                    Some((Err(e), (inner, hasher, seen, true)))
                }
                None if size == 0 && Digest::from_hasher(std::mem::take(&mut hasher)) != expected => {
                    let e = integrity(format!("empty, but expected SHA-256 {expected}"));
                    Some((Err(e), (inner, hasher, seen, true)))
                }
                None => None,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verify_stream_flags_wrong_bytes_at_the_end() {
        let good = Bytes::from_static(b"hello");
        let d = Digest::of(&good);
        let ok: ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(good.clone())]));
        let items: Vec<_> = verify_stream(ok, d, 5, "x".into()).collect().await;
        assert!(items.iter().all(|i| i.is_ok()));
        let bad: ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(b"hellO"))]));
        let items: Vec<_> = verify_stream(bad, d, 5, "x".into()).collect().await;
        assert!(matches!(items.last(), Some(Err(Error::Integrity(_)))));
        let long: ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(b"hello!"))]));
        let items: Vec<_> = verify_stream(long, d, 5, "x".into()).collect().await;
        assert!(matches!(items.last(), Some(Err(Error::Integrity(_)))));
    }
}
