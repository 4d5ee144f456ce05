//! Content going in and coming out: the SHA-256 [`Digest`] that names it,
//! [`Content`] hashed natively before the policy sees it (spooled to a
//! temporary file when the input cannot be read twice), and
//! [`verify_stream`], which checks bytes coming back against their digest.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;
pub use sha2::Sha256;

use crate::error::{Error, Result};

/// Bytes read or written per step while hashing, spooling and storing.
pub const CHUNK: usize = 256 * 1024;

/// Most bytes a policy may peek at.
pub const MAX_PEEK: usize = 4096;

/// Content type recorded when the caller gives none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A stream of bytes coming back from a backend.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A SHA-256 digest; shown and parsed as 64 lowercase hex digits, the key
/// of every stored object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest with these raw 32 bytes.
    pub fn from_raw(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_hasher(h: Sha256) -> Digest {
        Digest(h.finalize().into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;

    /// Only the canonical form: exactly 64 lowercase hex digits. Anything
    /// else (uppercase, short, a path) is refused, so one object never has
    /// two names.
    fn from_str(s: &str) -> Result<Digest> {
        let canonical = s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !canonical {
            return Err(Error::InvalidName(format!("{s:?} is not a SHA-256 digest: expected 64 lowercase hex digits")));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| Error::Internal(format!("hex: {e}")))?;
        Ok(Digest(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where the bytes of a [`Content`] are.
#[derive(Debug)]
enum Source {
    /// Small content handed over in memory.
    Memory(Bytes),
    /// The caller's file, read again for the upload.
    File(PathBuf),
    /// A temporary copy of input that could not be read twice; removed
    /// when the content is dropped.
    Spooled(tempfile::TempPath),
}

/// Content to store: its bytes, with the digest and size computed natively
/// while they streamed in. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Content(Arc<ContentInner>);

#[derive(Debug)]
struct ContentInner {
    source: Source,
    sha256: Digest,
    size: u64,
    content_type: String,
}

/// Check a content type: `type/subtype` with optional parameters, ASCII
/// without control characters, at most 255 bytes. An empty one means the
/// default.
pub fn normalize_content_type(content_type: Option<&str>) -> Result<String> {
    let ct = content_type.map(str::trim).unwrap_or("");
    if ct.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    }
    let essence = ct.split(';').next().unwrap_or("").trim();
    let mut parts = essence.split('/');
    let valid_token = |t: Option<&str>| {
        t.is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b)))
    };
    let shape = valid_token(parts.next()) && valid_token(parts.next()) && parts.next().is_none();
    if !shape || ct.len() > 255 || !ct.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::InvalidInput(format!(
            "content type {ct:?} is not a MIME type like \"text/plain\" (ASCII, at most 255 bytes)"
        )));
    }
    Ok(ct.to_string())
}

impl Content {
    /// Content from bytes in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>, content_type: Option<&str>) -> Result<Content> {
        let bytes = bytes.into();
        Ok(Content(Arc::new(ContentInner {
            sha256: Digest::of(&bytes),
            size: bytes.len() as u64,
            content_type: normalize_content_type(content_type)?,
            source: Source::Memory(bytes),
        })))
    }

    /// Content from a file the caller keeps: hashed now, read again when
    /// stored. If the file changes in between, the store refuses it (the
    /// digest no longer matches) rather than storing wrong bytes.
    pub async fn from_path(path: impl AsRef<Path>, content_type: Option<&str>) -> Result<Content> {
        let path = path.as_ref().to_path_buf();
        let content_type = normalize_content_type(content_type)?;
        let p = path.clone();
        let (sha256, size) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&p).map_err(|e| open_error(&p, e))?;
            if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Err(Error::InvalidInput(format!("{} is a directory, not a file", p.display())));
            }
            hash_reader(file, std::io::sink()).map_err(|e| Error::io(format!("reading {}", p.display()), e))
        })
        .await??;
        Ok(Content(Arc::new(ContentInner { source: Source::File(path), sha256, size, content_type })))
    }

    /// Content from a reader that can be read only once (standard input, a
    /// network body): copied to a temporary file in `spool_dir` (the system
    /// temporary directory when `None`) while it is hashed, so memory stays
    /// bounded whatever the size.
    pub async fn from_reader<R: Read + Send + 'static>(
        reader: R,
        content_type: Option<&str>,
        spool_dir: Option<PathBuf>,
    ) -> Result<Content> {
        let content_type = normalize_content_type(content_type)?;
        let (path, sha256, size) = tokio::task::spawn_blocking(move || {
            let dir = spool_dir.unwrap_or_else(std::env::temp_dir);
            let spool = tempfile::NamedTempFile::new_in(&dir)
                .map_err(|e| Error::io(format!("creating a spool file in {}", dir.display()), e))?;
            let mut writer = std::io::BufWriter::with_capacity(CHUNK, spool);
            let (sha256, size) = hash_reader(reader, &mut writer).map_err(|e| Error::io("spooling input", e))?;
            let spool = writer.into_inner().map_err(|e| Error::io("spooling input", e.into_error()))?;
            Ok::<_, Error>((spool.into_temp_path(), sha256, size))
        })
        .await??;
        Ok(Content(Arc::new(ContentInner { source: Source::Spooled(path), sha256, size, content_type })))
    }

    /// Content from a stream (another store's object, for `coffer migrate`
    /// and `coffer import`): hashed as it arrives, and held in memory when
    /// `size_hint` says it is at most 4 MiB (and it is), otherwise spooled
    /// to a temporary file in `spool_dir` (the system temporary directory
    /// when `None`), so memory stays bounded whatever the size.
    pub async fn from_stream(
        mut stream: ByteStream,
        content_type: Option<&str>,
        size_hint: u64,
        spool_dir: Option<PathBuf>,
    ) -> Result<Content> {
        /// In memory up to this (and never more than this much is collected).
        const IN_MEMORY_MAX: u64 = 4 << 20;
        let content_type = normalize_content_type(content_type)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        if size_hint <= IN_MEMORY_MAX {
            let mut buf = Vec::with_capacity(size_hint as usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > IN_MEMORY_MAX {
                    // Longer than announced: spool the rest after all.
                    let head: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(buf))]));
                    let rest = Box::pin(head.chain(stream));
                    return Box::pin(Content::from_stream(rest, Some(&content_type), u64::MAX, spool_dir)).await;
                }
            }
            return Content::from_bytes(buf, Some(&content_type));
        }
        let dir = spool_dir.unwrap_or_else(std::env::temp_dir);
        let spool = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| Error::io(format!("creating a spool file in {}", dir.display()), e))?;
        let (file, path) = spool.into_parts();
        let mut file = tokio::io::BufWriter::with_capacity(CHUNK, tokio::fs::File::from_std(file));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(|e| Error::io("spooling input", e))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| Error::io("spooling input", e))?;
        Ok(Content(Arc::new(ContentInner {
            source: Source::Spooled(path),
            sha256: Digest::from_hasher(hasher),
            size,
            content_type,
        })))
    }

    /// Whether the bytes are held in memory (and so cannot change).
    pub fn in_memory(&self) -> bool {
        matches!(self.0.source, Source::Memory(_))
    }

    /// The SHA-256 of the bytes.
    pub fn sha256(&self) -> Digest {
        self.0.sha256
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.0.size
    }

    /// The MIME type.
    pub fn content_type(&self) -> &str {
        &self.0.content_type
    }

    /// Up to `max` (at most [`MAX_PEEK`]) bytes from the start.
    pub fn peek(&self, max: usize) -> Result<Vec<u8>> {
        let max = max.min(MAX_PEEK);
        let mut buf = Vec::with_capacity(max);
        self.open()?.take(max as u64).read_to_end(&mut buf).map_err(|e| Error::io("peeking at content", e))?;
        Ok(buf)
    }

    fn path(&self) -> Option<&Path> {
        match &self.0.source {
            Source::Memory(_) => None,
            Source::File(p) => Some(p),
            Source::Spooled(p) => Some(p),
        }
    }

    /// A blocking reader over the bytes, from the start.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        match (&self.0.source, self.path()) {
            (Source::Memory(b), _) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            (_, Some(p)) => Ok(Box::new(std::fs::File::open(p).map_err(|e| open_error(p, e))?)),
            (_, None) => unreachable!("only memory content has no path"),
        }
    }

    /// The bytes as a stream of [`CHUNK`]s, for an upload. Not verified
    /// here: the receiving server checks them against the signed digest.
    pub async fn stream(&self) -> Result<ByteStream> {
        match (&self.0.source, self.path()) {
            (Source::Memory(b), _) => Ok(Box::pin(futures_util::stream::iter([Ok(b.clone())]))),
            (_, Some(p)) => {
                let file = tokio::fs::File::open(p).await.map_err(|e| open_error(p, e))?;
                let chunks = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
                Ok(Box::pin(chunks.map(|r| r.map_err(|e| Error::io("reading content", e)))))
            }
            (_, None) => unreachable!("only memory content has no path"),
        }
    }

    /// Hash the `len` bytes from `offset` (fewer at the end), feeding them
    /// to `whole` as well; return the part's hex SHA-256 and its length.
    /// For multipart uploads: the part is hashed here and streamed by
    /// [`Content::stream_range`], so no part is ever held in memory.
    /// Blocking: call it off the async runtime.
    pub fn hash_range(&self, offset: u64, len: u64, whole: &mut Sha256) -> Result<(String, u64)> {
        let reader: Box<dyn Read + Send> = match (&self.0.source, self.path()) {
            (Source::Memory(b), _) => {
                let mut cursor = std::io::Cursor::new(b.clone());
                cursor.set_position(offset);
                Box::new(cursor)
            }
            (_, Some(path)) => {
                let mut file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
                    .map_err(|e| Error::io("reading content", e))?;
                Box::new(file)
            }
            (_, None) => unreachable!("only memory content has no path"),
        };
        let mut part = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut reader = reader.take(len);
        let mut read = 0u64;
        loop {
            let n = read_full(&mut reader, &mut buf).map_err(|e| Error::io("reading content", e))?;
            if n == 0 {
                break;
            }
            part.update(&buf[..n]);
            whole.update(&buf[..n]);
            read += n as u64;
        }
        Ok((hex::encode(part.finalize()), read))
    }

    /// The `len` bytes from `offset` as a stream, for one part of an upload.
    pub async fn stream_range(&self, offset: u64, len: u64) -> Result<ByteStream> {
        match (&self.0.source, self.path()) {
            (Source::Memory(b), _) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(b.len());
                Ok(Box::pin(futures_util::stream::iter([Ok(b.slice(start..end))])))
            }
            (_, Some(p)) => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::open(p).await.map_err(|e| open_error(p, e))?;
                file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| Error::io("reading content", e))?;
                let chunks = tokio_util::io::ReaderStream::with_capacity(file.take(len), CHUNK);
                Ok(Box::pin(chunks.map(|r| r.map_err(|e| Error::io("reading content", e)))))
            }
            (_, None) => unreachable!("only memory content has no path"),
        }
    }

    /// Read the bytes in [`CHUNK`]s, handing each to `sink`, and fail with
    /// an integrity error if they are not the bytes that were hashed (a
    /// file changed after it was hashed). Blocking: call it off the async
    /// runtime.
    pub fn read_verified(&self, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut reader = self.open()?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut reader, &mut buf).map_err(|e| Error::io("reading content", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            sink(&buf[..n])?;
        }
        let got = Digest::from_hasher(hasher);
        if got != self.0.sha256 || size != self.0.size {
            return Err(Error::Integrity(format!(
                "the input changed while it was being stored: hashed as {} ({} bytes), read back as {got} ({size} bytes)",
                self.0.sha256, self.0.size
            )));
        }
        Ok(())
    }
}

fn open_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::InvalidInput(format!("{}: no such file", path.display())),
        std::io::ErrorKind::PermissionDenied => Error::InvalidInput(format!("{}: permission denied", path.display())),
        _ => Error::io(format!("opening {}", path.display()), e),
    }
}

/// Fill `buf` as far as the reader allows; 0 only at the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Hash everything `reader` yields, copying it to `copy`.
fn hash_reader(mut reader: impl Read, mut copy: impl Write) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copy.write_all(&buf[..n])?;
        size += n as u64;
    }
    copy.flush()?;
    Ok((Digest::from_hasher(hasher), size))
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

    #[test]
    fn digest_parses_only_canonical_hex() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
        assert!("abc".parse::<Digest>().is_err());
        assert!("../../../../etc/passwd".parse::<Digest>().is_err());
    }

    #[test]
    fn content_types_are_checked() {
        assert_eq!(normalize_content_type(None).unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(normalize_content_type(Some("  ")).unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(normalize_content_type(Some("text/plain; charset=utf-8")).unwrap(), "text/plain; charset=utf-8");
        for bad in ["text", "text/", "/plain", "a/b/c", "text/pl\nain", "téxt/plain"] {
            assert!(normalize_content_type(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn spooled_content_hashes_like_memory_content() {
        let data: Vec<u8> = (0..(CHUNK * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let mem = Content::from_bytes(data.clone(), None).unwrap();
        let spooled = Content::from_reader(std::io::Cursor::new(data.clone()), None, None).await.unwrap();
        assert_eq!(mem.sha256(), spooled.sha256());
        assert_eq!(spooled.size(), data.len() as u64);
        assert_eq!(spooled.peek(10).unwrap(), &data[..10]);
        assert_eq!(spooled.peek(1 << 20).unwrap().len(), MAX_PEEK);
    }

    #[tokio::test]
    async fn a_file_changed_after_hashing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"before").unwrap();
        let content = Content::from_path(&path, None).await.unwrap();
        std::fs::write(&path, b"after!").unwrap();
        let err = content.read_verified(|_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
    }

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
