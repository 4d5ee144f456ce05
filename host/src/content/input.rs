//! [`Content`] going in: its bytes (in memory, the caller's file, or a
//! spool of input that cannot be read twice), hashed natively before the
//! policy sees it, with its size and content type.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::Digest as _;

use super::digest::{Digest, Sha256};
use super::parts::{Hasher, PART_SIZE, PartDigest, check_crc, record_parts};
use super::spool::{Charge, Spool};
use super::stream::{ByteStream, CHUNK};
use crate::error::{Error, Result};

/// Most bytes a policy may peek at.
pub const MAX_PEEK: usize = 4096;

/// Content type recorded when the caller gives none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Where the bytes of a [`Content`] are.
#[derive(Debug)]
enum Source {
    /// Small content handed over in memory.
    Memory(Bytes),
    /// The caller's file, read again for the upload.
    File(PathBuf),
    /// A temporary copy of input that could not be read twice; removed
    /// when the content is dropped, and its bytes given back to the
    /// spool's budget after that.
    Spooled { path: tempfile::TempPath, _charge: Charge },
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
    /// Digests of every [`PART_SIZE`] part, recorded in the same pass
    /// that computed `sha256` (large content read from a file only).
    parts: Option<Vec<PartDigest>>,
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
            parts: None,
        })))
    }

    /// Content from a file the caller keeps: hashed now, read again when
    /// stored. If the file changes in between, the store refuses it (the
    /// digest no longer matches) rather than storing wrong bytes.
    pub async fn from_path(path: impl AsRef<Path>, content_type: Option<&str>) -> Result<Content> {
        let path = path.as_ref().to_path_buf();
        let content_type = normalize_content_type(content_type)?;
        let p = path.clone();
        let (sha256, size, parts) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&p).map_err(|e| open_error(&p, e))?;
            let meta = file.metadata().map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            if meta.is_dir() {
                return Err(Error::InvalidInput(format!("{} is a directory, not a file", p.display())));
            }
            // Not a regular file (a FIFO, a device): its size says nothing.
            hash_reader(file, std::io::sink(), record_parts(meta.is_file().then_some(meta.len())))
                .map_err(|e| Error::io(format!("reading {}", p.display()), e))
        })
        .await??;
        Ok(Content(Arc::new(ContentInner { source: Source::File(path), sha256, size, content_type, parts })))
    }

    /// Content from a reader that can be read only once (standard input, a
    /// network body): copied to a file in `spool` while it is hashed, so
    /// memory stays bounded whatever the size; past the spool's budget,
    /// an [`Error::Exhausted`] and nothing kept.
    pub async fn from_reader<R: Read + Send + 'static>(
        reader: R,
        content_type: Option<&str>,
        spool: &Spool,
    ) -> Result<Content> {
        let content_type = normalize_content_type(content_type)?;
        let spool = spool.clone();
        let (path, charge, sha256, size, parts) = tokio::task::spawn_blocking(move || {
            let file = new_spool_file(&spool)?;
            let mut charge = spool.charge();
            let mut writer =
                std::io::BufWriter::with_capacity(CHUNK, Charged { file, charge: &mut charge, written: 0 });
            let (sha256, size, parts) = hash_reader(reader, &mut writer, record_parts(None)).map_err(spool_error)?;
            let spooled = writer.into_inner().map_err(|e| spool_error(e.into_error()))?;
            let file = spooled.file;
            Ok::<_, Error>((file.into_temp_path(), charge, sha256, size, parts))
        })
        .await??;
        let source = Source::Spooled { path, _charge: charge };
        Ok(Content(Arc::new(ContentInner { source, sha256, size, content_type, parts })))
    }

    /// Content from a stream (an HTTP body, a plugin's value, another
    /// store's object): hashed as it arrives, and held in memory when
    /// `size_hint` says it is at most 4 MiB (and it is), otherwise spooled
    /// to a file in `spool`, so memory stays bounded whatever the size.
    /// An announced `size_hint` that does not fit the spool's budget now is
    /// refused before anything is read; the budget is then charged as the
    /// bytes arrive; past it, an [`Error::Exhausted`] and nothing kept.
    pub async fn from_stream(
        mut stream: ByteStream,
        content_type: Option<&str>,
        size_hint: u64,
        spool: &Spool,
    ) -> Result<Content> {
        /// In memory up to this (and never more than this much is collected).
        const IN_MEMORY_MAX: u64 = 4 << 20;
        let content_type = normalize_content_type(content_type)?;
        if size_hint <= IN_MEMORY_MAX {
            let mut buf = Vec::with_capacity(size_hint as usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > IN_MEMORY_MAX {
                    // Longer than announced: spool the rest after all.
                    let head: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(buf))]));
                    let rest = Box::pin(head.chain(stream));
                    return Box::pin(Content::from_stream(rest, Some(&content_type), u64::MAX, spool)).await;
                }
            }
            return Content::from_bytes(buf, Some(&content_type));
        }
        let mut charge = spool.charge();
        if size_hint != u64::MAX {
            charge.would_fit(size_hint)?;
        }
        let (file, path) = new_spool_file(spool)?.into_parts();
        let mut file = tokio::io::BufWriter::with_capacity(CHUNK, tokio::fs::File::from_std(file));
        let mut hasher = Hasher::new(record_parts((size_hint != u64::MAX).then_some(size_hint)));
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            charge.cover(written)?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(spool_error)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(spool_error)?;
        let (sha256, size, parts) = hasher.finish();
        let source = Source::Spooled { path, _charge: charge };
        Ok(Content(Arc::new(ContentInner { source, sha256, size, content_type, parts })))
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
            Source::Spooled { path, .. } => Some(path),
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

    /// The digests recorded for parts of `part_size` bytes while the
    /// content was hashed, if it was hashed with that part size.
    pub fn parts(&self, part_size: u64) -> Option<&[PartDigest]> {
        self.0.parts.as_deref().filter(|_| part_size == PART_SIZE)
    }

    /// Digest the `len` bytes from `offset` (fewer at the end), feeding
    /// them to `whole` as well: for multipart uploads in parts other than
    /// the recorded ones ([`Content::parts`]). The caller compares `whole`
    /// with the content's digest at the end, which proves these are the
    /// bytes that were hashed. Blocking: call it off the async runtime.
    pub fn part_digest(&self, offset: u64, len: u64, whole: &mut Sha256) -> Result<PartDigest> {
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
        let (mut sha, mut crc, mut read) = (Sha256::new(), 0u32, 0u64);
        let mut buf = vec![0u8; CHUNK];
        let mut reader = reader.take(len);
        loop {
            let n = read_full(&mut reader, &mut buf).map_err(|e| Error::io("reading content", e))?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            whole.update(&buf[..n]);
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            read += n as u64;
        }
        Ok(PartDigest { sha256: Digest::from_hasher(sha), crc32c: crc, len: read })
    }

    /// The bytes of `part` (which starts at `offset`) as a stream, for one
    /// part of an upload, checked against the part's CRC32C and length as
    /// they go: the chunk that completes the part is held back until the
    /// check passes, so a part whose bytes changed since they were digested
    /// never reaches the server whole.
    pub async fn stream_part(&self, offset: u64, part: PartDigest) -> Result<ByteStream> {
        let raw: ByteStream = match (&self.0.source, self.path()) {
            (Source::Memory(b), _) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(usize::try_from(part.len).unwrap_or(usize::MAX)).min(b.len());
                Box::pin(futures_util::stream::iter([Ok(b.slice(start..end))]))
            }
            (_, Some(p)) => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::open(p).await.map_err(|e| open_error(p, e))?;
                file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| Error::io("reading content", e))?;
                let chunks = tokio_util::io::ReaderStream::with_capacity(file.take(part.len), CHUNK);
                Box::pin(chunks.map(|r| r.map_err(|e| Error::io("reading content", e))))
            }
            (_, None) => unreachable!("only memory content has no path"),
        };
        Ok(check_crc(raw, part))
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

/// Hash everything `reader` yields (and its [`PART_SIZE`] parts, if
/// `record_parts`), copying it to `copy`.
fn hash_reader(
    mut reader: impl Read,
    mut copy: impl Write,
    record_parts: bool,
) -> std::io::Result<(Digest, u64, Option<Vec<PartDigest>>)> {
    let mut hasher = Hasher::new(record_parts);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        copy.write_all(&buf[..n])?;
    }
    copy.flush()?;
    Ok(hasher.finish())
}

/// A new spool file in `spool`'s directory.
fn new_spool_file(spool: &Spool) -> Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(spool.dir())
        .map_err(|e| Error::io(format!("creating a spool file in {}", spool.dir().display()), e))
}

/// A failed spool write: the budget's own error when that is what stopped
/// it, else an I/O error.
fn spool_error(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::Exhausted(m)) => Error::Exhausted(m.clone()),
        _ => Error::io("spooling input", e),
    }
}

/// A spool file whose writes are charged to the spool's budget first.
struct Charged<'a> {
    file: tempfile::NamedTempFile,
    charge: &'a mut Charge,
    written: u64,
}

impl Write for Charged<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.charge.cover(self.written + buf.len() as u64).map_err(std::io::Error::other)?;
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let spooled =
            Content::from_reader(std::io::Cursor::new(data.clone()), None, &super::super::Spool::unbounded(None))
                .await
                .unwrap();
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
}
