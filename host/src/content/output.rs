//! Where a read's bytes go on disk ([`write_to_path`]): a regular file (or
//! a new path) is replaced atomically, only once every byte is verified; a
//! device, FIFO or socket is written through, never replaced; a symbolic
//! link is refused.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::stream::{ByteStream, CHUNK};
use crate::error::{Error, Result};

/// What `path` is (never a symbolic link).
enum Target {
    /// A regular file or nothing yet: written beside it and renamed over it.
    File(PathBuf),
    /// A device, FIFO or socket: opened and written to.
    Special(PathBuf),
}

fn target(path: &Path) -> Result<Target> {
    // A link is refused, never followed: in a shared directory (/tmp)
    // anyone may plant one, and following it would let them choose which
    // file a privileged `coffer get` replaces.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::InvalidInput(format!(
            "{} is a symbolic link: links are not followed (anyone who can write to its folder could choose \
             what gets replaced); name the file it points to",
            path.display()
        )));
    }
    let followed = path.to_path_buf();
    match std::fs::metadata(&followed) {
        Ok(m) if m.is_dir() => Err(Error::InvalidInput(format!(
            "{} is a directory: name a file to write the object to",
            followed.display()
        ))),
        Ok(m) if !m.is_file() => Ok(Target::Special(followed)),
        _ => Ok(Target::File(followed)),
    }
}

/// Write `stream` (a verified read) to `path`.
///
/// - A regular file, or a path where nothing is yet: the bytes go to a
///   temporary file beside it, synced and renamed into place only once the
///   stream ended cleanly, so the file never holds wrong or partial
///   content. It gets the mode a newly created file would (the umask
///   applies).
/// - A device, FIFO or socket (`/dev/null`, `/dev/stdout`, a pipe): opened
///   and written to, never replaced by a regular file. What it is given
///   cannot be taken back, so a read that fails (a corrupt object) has
///   written part of the bytes, never all of them (the last piece is held
///   back until the digest is checked).
/// - A symbolic link is an error, never followed (someone else may have
///   planted it) and never replaced.
/// - A directory is an error.
pub async fn write_to_path(stream: ByteStream, path: &Path) -> Result<()> {
    match target(path)? {
        Target::Special(device) => {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&device)
                .await
                .map_err(|e| Error::io(format!("opening {} for writing", device.display()), e))?;
            copy(stream, tokio::io::BufWriter::with_capacity(CHUNK * 4, file), &device).await.map(|_| ())
        }
        Target::File(path) => write_atomically(stream, &path).await,
    }
}

/// Copy `stream` into `out` and flush it.
async fn copy<W: tokio::io::AsyncWrite + Unpin>(mut stream: ByteStream, mut out: W, to: &Path) -> Result<W> {
    let writing = |e| Error::io(format!("writing {}", to.display()), e);
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?).await.map_err(writing)?;
    }
    out.flush().await.map_err(writing)?;
    Ok(out)
}

async fn write_atomically(stream: ByteStream, path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".coffer-get-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
    let (file, tmp_path) = tmp.into_parts();
    // Network chunks are small; batching them keeps the blocking-pool
    // round trips of tokio's file writes few.
    let out = tokio::io::BufWriter::with_capacity(CHUNK * 4, tokio::fs::File::from_std(file));
    let file = copy(stream, out, path).await?.into_inner();
    // On disk before it takes the name: a crash never leaves `path`
    // naming an empty or partial file.
    file.sync_all().await.map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    tmp_path.persist(path).map_err(|e| Error::io(format!("renaming into {}", path.display()), e.error))?;
    // And the rename itself survives a crash.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
