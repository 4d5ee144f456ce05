//! The on-disk cache of compiled policy components.
//!
//! Loading a cache entry runs the native code in it, so an entry is loaded
//! only when all of these hold, and otherwise refused (reported, and
//! replaced by a fresh compilation):
//! - the directory is the user's own and not writable by group or others
//!   (it is created `0700`);
//! - the entry is a regular file, the user's own, not writable by group or
//!   others;
//! - its HMAC-SHA256, keyed by a secret that only this cache holds (the
//!   file `key`, `0600`, 32 random bytes), covers the SHA-256 of the
//!   component bytes it was compiled from, the engine's compatibility hash
//!   and the compiled bytes. An artefact compiled from another component,
//!   or written by anyone who cannot read the key, never verifies.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::content::Digest;

/// Header of a cache entry: magic, then the HMAC of what it covers.
const MAGIC: &[u8; 8] = b"COFFERC2";
const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;

/// The effective user id of this process (the owner of `/proc/self`).
fn euid() -> Result<u32, String> {
    fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| format!("cannot tell this process's user: {e}"))
}

/// Why `meta` (of `what`) is not safe to trust: owned by another user, or
/// writable by group or others.
fn untrusted(meta: &fs::Metadata, uid: u32, what: &Path) -> Option<String> {
    if meta.uid() != uid {
        return Some(format!("{} is owned by user {}, not by this process's user {uid}", what.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "{} is writable by group or others (mode {:o}); make it private (chmod go-w)",
            what.display(),
            meta.mode() & 0o7777
        ));
    }
    None
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cache directory that passed its checks, with its key.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
    uid: u32,
}

impl Cache {
    /// Open (creating if needed) the cache in `dir`; why not, if it cannot
    /// be trusted.
    pub fn open(dir: &Path) -> Result<Cache, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let uid = euid()?;
        let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(why) = untrusted(&meta, uid, dir) {
            return Err(why);
        }
        let key = read_or_create_key(&dir.join(KEY_FILE), uid)?;
        Ok(Cache { dir: dir.to_path_buf(), key, uid })
    }

    /// The entry for the component with SHA-256 `component` on an engine
    /// with compatibility hash `compat`.
    pub fn entry(&self, component: &Digest, compat: u64) -> Entry<'_> {
        Entry {
            cache: self,
            component: *component,
            compat,
            file: self.dir.join(format!("{component}-{compat:016x}.cwasm")),
        }
    }
}

fn read_or_create_key(path: &Path, uid: u32) -> Result<[u8; KEY_LEN], String> {
    let mut key = [0u8; KEY_LEN];
    if !path.exists() {
        // Written whole to a private temporary file, then linked into
        // place, which fails if another process got there first: nobody
        // ever reads half a key.
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut create = || -> std::io::Result<()> {
            File::open("/dev/urandom")?.read_exact(&mut key)?;
            let mut tmp = tempfile::Builder::new().permissions(fs::Permissions::from_mode(0o600)).tempfile_in(dir)?;
            tmp.write_all(&key)?;
            tmp.as_file().sync_all()?;
            match fs::hard_link(tmp.path(), path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        };
        create().map_err(|e| format!("cannot create the cache key {}: {e}", path.display()))?;
    }
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the cache key {} must be the user's own with mode 600 (it is user {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.len() != KEY_LEN {
        return Err(format!(
            "the cache key {} is damaged ({} bytes); delete it to start afresh",
            path.display(),
            data.len()
        ));
    }
    key.copy_from_slice(&data);
    Ok(key)
}

/// One component's place in the cache.
#[derive(Debug)]
pub struct Entry<'a> {
    cache: &'a Cache,
    component: Digest,
    compat: u64,
    pub file: PathBuf,
}

impl Entry<'_> {
    fn tag(&self, payload: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.cache.key, &[self.component.as_bytes(), &self.compat.to_le_bytes(), payload])
    }

    /// The compiled component, if the entry exists and passes every check;
    /// a refused entry is reported.
    pub fn load(&self, engine: &Engine) -> Option<Component> {
        let file = &self.file;
        let meta = fs::symlink_metadata(file).ok()?;
        let refuse = |why: String| {
            tracing::warn!(file = %file.display(), "refusing a compiled-policy cache entry: {why}");
            None
        };
        if !meta.is_file() {
            return refuse("not a regular file".into());
        }
        if let Some(why) = untrusted(&meta, self.cache.uid, file) {
            return refuse(why);
        }
        let data = fs::read(file).ok()?;
        if data.len() <= 40 || data[..8] != *MAGIC || !same(&data[8..40], &self.tag(&data[40..])) {
            return refuse("its HMAC does not match this component and this cache's key (forged, damaged, or compiled from other bytes)".into());
        }
        // SAFETY: deserialising runs machine code from the file. The HMAC
        // above proves that this cache wrote these bytes for exactly this
        // component and engine (only the cache's owner can read the key),
        // and wasmtime refuses artefacts of another version or
        // configuration.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &data[40..]) };
        match loaded {
            Ok(c) => {
                tracing::debug!(file = %file.display(), "loaded a compiled policy component from the cache");
                Some(c)
            }
            Err(e) => refuse(format!("wasmtime does not accept it: {e}")),
        }
    }

    /// Write the entry atomically (temporary file, then rename, which also
    /// replaces a refused entry). Failures only cost a recompilation
    /// later, so they are logged, not returned.
    pub fn store(&self, component: &Component) {
        let write = || -> std::io::Result<()> {
            let payload = component.serialize().map_err(std::io::Error::other)?;
            let mut tmp =
                tempfile::Builder::new().permissions(fs::Permissions::from_mode(0o600)).tempfile_in(&self.cache.dir)?;
            tmp.write_all(MAGIC)?;
            tmp.write_all(&self.tag(&payload))?;
            tmp.write_all(&payload)?;
            tmp.persist(&self.file).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot write the compiled-policy cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        let tag = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block is hashed first.
        let tag = hmac_sha256(&[0xaa; 131], &[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(hex::encode(tag), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn the_directory_is_private_and_a_shared_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let cache = Cache::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(dir.join(KEY_FILE)).unwrap().mode() & 0o777, 0o600);
        // The same key on the next open.
        assert_eq!(Cache::open(&dir).unwrap().key, cache.key);

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let why = Cache::open(&dir).unwrap_err();
        assert!(why.contains("writable by group or others"), "{why}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let why = Cache::open(&dir).unwrap_err();
        assert!(why.contains("mode 600"), "{why}");
    }
}
