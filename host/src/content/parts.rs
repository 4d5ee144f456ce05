//! Part digests: the SHA-256 and CRC32C of every part of large content,
//! recorded in the same pass that computes its digest, so a multipart
//! upload needs no second pass, and each part checked as it goes out.

use futures_util::StreamExt;
use sha2::Digest as _;

use super::digest::{Digest, Sha256};
use super::stream::ByteStream;
use crate::error::Error;

/// The part size whose digests are recorded while content is hashed (S3's
/// default part size): a multipart upload in parts of this size needs no
/// second SHA-256 pass to learn them.
pub const PART_SIZE: u64 = 8 << 20;

/// Content larger than this (S3's default multipart threshold), or of a
/// size not known in advance, has its part digests recorded while it is
/// hashed; smaller content goes up in one request and needs none.
pub const PARTS_ABOVE: u64 = 64 << 20;

/// Content that would need more parts of [`PART_SIZE`] than S3 allows
/// (10,000) goes up in larger parts: no digests are recorded for it.
const MAX_RECORDED_PARTS: usize = 10_000;

/// One part of content: its SHA-256, which the part is signed with and the
/// S3 server verifies (what keeps a file changed after it was hashed from
/// being stored under the old key), and its CRC32C, which Coffer checks as
/// the part goes out, at a fraction of a SHA-256 pass: an accidental change
/// breaks the upload on the client too, even on a server that ignored the
/// signed digest. CRC32C is no defence against a deliberate change; the
/// server's SHA-256 check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartDigest {
    pub sha256: Digest,
    pub crc32c: u32,
    pub len: u64,
}

/// Whether hashing content of `size` bytes (`None`: not known in advance)
/// records its parts: only where an upload would use them. Content of
/// unknown size that turns out to need more than [`MAX_RECORDED_PARTS`]
/// parts stops being recorded as it passes that ([`Hasher::update`]).
pub(super) fn record_parts(size: Option<u64>) -> bool {
    size.is_none_or(|n| n > PARTS_ABOVE && n <= MAX_RECORDED_PARTS as u64 * PART_SIZE)
}

/// Hashes content as it streams in: the whole, and (when asked) every
/// [`PART_SIZE`] part, in one pass over the bytes.
pub(super) struct Hasher {
    whole: Sha256,
    size: u64,
    parts: Option<(Vec<PartDigest>, Sha256, u32, u64)>,
}

impl Hasher {
    pub(super) fn new(record_parts: bool) -> Hasher {
        Hasher { whole: Sha256::new(), size: 0, parts: record_parts.then(|| (Vec::new(), Sha256::new(), 0, 0)) }
    }

    pub(super) fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.size += bytes.len() as u64;
        let Some((done, sha, crc, len)) = &mut self.parts else { return };
        while !bytes.is_empty() {
            let take = (PART_SIZE - *len).min(bytes.len() as u64) as usize;
            let (head, rest) = bytes.split_at(take);
            sha.update(head);
            *crc = crc32c::crc32c_append(*crc, head);
            *len += take as u64;
            bytes = rest;
            if *len == PART_SIZE {
                let sha256 = Digest::from_hasher(std::mem::take(sha));
                done.push(PartDigest { sha256, crc32c: std::mem::take(crc), len: std::mem::take(len) });
                if done.len() >= MAX_RECORDED_PARTS {
                    // Too large for S3 parts of this size: the upload will
                    // use larger ones, so stop paying for these.
                    self.parts = None;
                    return;
                }
            }
        }
    }

    /// (digest, size, part digests).
    pub(super) fn finish(self) -> (Digest, u64, Option<Vec<PartDigest>>) {
        let parts = self.parts.map(|(mut done, sha, crc, len)| {
            if len > 0 {
                done.push(PartDigest { sha256: Digest::from_hasher(sha), crc32c: crc, len });
            }
            done
        });
        (Digest::from_hasher(self.whole), self.size, parts)
    }
}

/// Pass `stream` through, checking it against `part`'s CRC32C and length;
/// the chunk that completes the part is held back until the check passes
/// (as [`verify_stream`] does with a digest).
pub(super) fn check_crc(stream: ByteStream, part: PartDigest) -> ByteStream {
    let state = (stream, 0u32, 0u64, false);
    Box::pin(futures_util::stream::unfold(state, move |(mut inner, mut crc, mut seen, done)| async move {
        if done {
            return None;
        }
        let changed = |detail: String| Error::Integrity(format!("the input changed after it was hashed: {detail}"));
        match inner.next().await {
            Some(Ok(chunk)) => {
                crc = crc32c::crc32c_append(crc, &chunk);
                seen += chunk.len() as u64;
                if seen > part.len {
                    return Some((
                        Err(changed(format!("a part is longer than its {} bytes", part.len))),
                        (inner, crc, seen, true),
                    ));
                }
                if seen == part.len && crc != part.crc32c {
                    let e = changed(format!("a part's CRC32C is {crc:08x}, recorded as {:08x}", part.crc32c));
                    return Some((Err(e), (inner, crc, seen, true)));
                }
                Some((Ok(chunk), (inner, crc, seen, false)))
            }
            Some(Err(e)) => Some((Err(e), (inner, crc, seen, true))),
            None if seen < part.len => {
                Some((Err(changed(format!("a part has {seen} of its {} bytes", part.len))), (inner, crc, seen, true)))
            }
            None => None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::content::CHUNK;
    use crate::error::Result;

    #[test]
    fn parts_are_recorded_in_the_same_pass_across_chunk_boundaries() {
        let data: Vec<u8> = (0..(2 * PART_SIZE + 12345)).map(|i| (i % 251) as u8).collect();
        // Odd chunk sizes, so parts end inside chunks.
        for chunk in [1000, CHUNK, 3 << 20] {
            let mut h = Hasher::new(true);
            for piece in data.chunks(chunk) {
                h.update(piece);
            }
            let (sha, size, parts) = h.finish();
            assert_eq!((sha, size), (Digest::of(&data), data.len() as u64));
            let parts = parts.unwrap();
            let want: Vec<PartDigest> = data
                .chunks(PART_SIZE as usize)
                .map(|p| PartDigest { sha256: Digest::of(p), crc32c: crc32c::crc32c(p), len: p.len() as u64 })
                .collect();
            assert_eq!(parts, want, "chunks of {chunk}");
        }
        // A whole number of parts leaves no empty part at the end.
        let mut h = Hasher::new(true);
        h.update(&data[..PART_SIZE as usize]);
        assert_eq!(h.finish().2.unwrap().len(), 1);
        let mut h = Hasher::new(false);
        h.update(&data);
        assert_eq!(h.finish().2, None);
    }

    #[test]
    fn parts_are_recorded_only_where_an_upload_would_use_them() {
        let most = MAX_RECORDED_PARTS as u64 * PART_SIZE;
        assert!(record_parts(None), "size unknown in advance");
        assert!(!record_parts(Some(0)));
        assert!(!record_parts(Some(PARTS_ABOVE)), "one PUT up to the threshold");
        assert!(record_parts(Some(PARTS_ABOVE + 1)));
        assert!(record_parts(Some(most)));
        assert!(!record_parts(Some(most + 1)), "would need larger parts");
    }

    #[tokio::test]
    async fn check_crc_holds_back_the_last_chunk_of_a_changed_part() {
        let data = vec![9u8; 5000];
        let part = PartDigest { sha256: Digest::of(&data), crc32c: crc32c::crc32c(&data), len: 5000 };
        let chunks = |d: &[u8]| -> ByteStream {
            let v: Vec<Result<Bytes>> = d.chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            Box::pin(futures_util::stream::iter(v))
        };
        let good: Vec<_> = check_crc(chunks(&data), part).collect().await;
        assert_eq!(good.len(), 5);
        assert!(good.iter().all(|r| r.is_ok()));
        let mut bad = data.clone();
        bad[4500] = 0;
        let got: Vec<_> = check_crc(chunks(&bad), part).collect().await;
        assert_eq!(got.len(), 5, "four chunks, then the error in place of the fifth");
        assert!(got[..4].iter().all(|r| r.is_ok()));
        assert!(matches!(&got[4], Err(Error::Integrity(m)) if m.contains("CRC32C")));
        let short: Vec<_> = check_crc(chunks(&data[..4000]), part).collect().await;
        assert!(matches!(short.last(), Some(Err(Error::Integrity(m))) if m.contains("4000 of its 5000")));
        let long: Vec<_> = check_crc(chunks(&[data.as_slice(), b"x"].concat()), part).collect().await;
        assert!(matches!(long.last(), Some(Err(Error::Integrity(m))) if m.contains("longer")));
    }
}
