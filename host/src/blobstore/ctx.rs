//! What the blobstore host acts for in one store ([`BlobstoreCtx`]: which
//! Coffer, which organisation, which limits), the borrowed view the
//! platform's accessor returns ([`Blobstore`]), the counts that bound what
//! a plugin holds open, and its errors as the plugin sees them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::component::ResourceTable;

use crate::coffer::Coffer;
use crate::error::{Error, Result};
use crate::org::validate_org;

/// Limits of one plugin's use of the blobstore (per [`BlobstoreCtx`]).
#[derive(Debug, Clone)]
pub struct BlobstoreLimits {
    /// Largest value `incoming-value-consume-sync` returns in one list
    /// (bytes); a larger one is refused with an error that says to stream
    /// it. Default 16 MiB.
    pub max_sync_read: u64,
    /// Largest value a plugin may write (bytes); writing stops with an
    /// error at the first byte past it, or past the organisation's
    /// `max-size` setting, so the spool never holds more. Default: the
    /// service's largest body (`COFFER_MAX_BODY`, 5 TiB when unset).
    pub max_value_size: Option<u64>,
    /// Outgoing values open at once (each holds up to 6 MiB in memory
    /// while it is written: values up to 4 MiB are kept whole). Default 4.
    pub max_open_writes: usize,
    /// Incoming values, their streams and name listings open at once
    /// (each pins its bytes in the catalog, or buffers up to 1000 names).
    /// Default 64.
    pub max_open_reads: usize,
    /// Value streams (`incoming-value-consume-async`) open at once: each
    /// holds a read on its backend until it is read to the end or
    /// dropped. Default 4.
    pub max_open_streams: usize,
}

impl Default for BlobstoreLimits {
    fn default() -> BlobstoreLimits {
        BlobstoreLimits {
            max_sync_read: 16 << 20,
            max_value_size: None,
            max_open_writes: 4,
            max_open_reads: 64,
            max_open_streams: 4,
        }
    }
}

/// What the blobstore host acts for, in one wasmtime store: the platform
/// builds it for the organisation the plugin runs for. A clone counts its
/// own open values (a template cloned per store gives each store its own
/// limits).
#[derive(Debug)]
pub struct BlobstoreCtx {
    pub(super) coffer: Coffer,
    pub(super) org: String,
    pub(super) limits: BlobstoreLimits,
    writes: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
}

impl Clone for BlobstoreCtx {
    fn clone(&self) -> BlobstoreCtx {
        BlobstoreCtx {
            coffer: self.coffer.clone(),
            org: self.org.clone(),
            limits: self.limits.clone(),
            writes: Arc::default(),
            reads: Arc::default(),
            streams: Arc::default(),
        }
    }
}

/// What a [`Slot`] is counted against.
#[derive(Debug, Clone, Copy)]
pub(super) enum Open {
    Write,
    Read,
    Stream,
}

impl BlobstoreCtx {
    /// Act for `org` (checked now) with `coffer`, with default limits.
    pub fn new(coffer: Coffer, org: &str) -> Result<BlobstoreCtx> {
        validate_org(org)?;
        Ok(BlobstoreCtx {
            coffer,
            org: org.to_string(),
            limits: BlobstoreLimits::default(),
            writes: Arc::default(),
            reads: Arc::default(),
            streams: Arc::default(),
        })
    }

    /// The same, with `limits`.
    pub fn with_limits(mut self, limits: BlobstoreLimits) -> BlobstoreCtx {
        self.limits = limits;
        self
    }

    /// The organisation the plugin acts for.
    pub fn org(&self) -> &str {
        &self.org
    }

    /// The most a value may hold, and what says so.
    pub(super) fn value_limit(&self) -> (u64, &'static str) {
        let config = self.coffer.config();
        let host = self.limits.max_value_size.or(config.server.max_body).unwrap_or(5 << 40);
        let org = config.setting(Some(&self.org), "max-size").and_then(|v| v.trim().parse::<u64>().ok());
        match org {
            Some(m) if m < host => (m, "the organisation's max-size"),
            _ => (host, "the limit a plugin may write (max_value_size)"),
        }
    }

    /// A slot among the open writes, reads or streams; an error when all
    /// are taken.
    pub(super) fn slot(&self, kind: Open) -> Result<Slot> {
        let (count, max, what) = match kind {
            Open::Write => (&self.writes, self.limits.max_open_writes, "outgoing values"),
            Open::Read => (&self.reads, self.limits.max_open_reads, "incoming values, value streams and listings"),
            Open::Stream => (&self.streams, self.limits.max_open_streams, "value streams"),
        };
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::InvalidInput(format!(
                "too many {what} open at once (at most {max}); finish or drop one first"
            )));
        }
        Ok(Slot(count.clone()))
    }
}

/// One open resource counted against a limit; freed when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A borrowed view of a store's blobstore context and resource table (the
/// table wasmtime-wasi's streams live in), which the platform's accessor
/// returns.
pub struct Blobstore<'a> {
    pub ctx: &'a BlobstoreCtx,
    pub table: &'a mut ResourceTable,
}

impl std::fmt::Debug for Blobstore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobstore").field("org", &self.ctx.org).finish_non_exhaustive()
    }
}

/// The string a plugin sees for `e`: its class, then Coffer's message.
pub(super) fn error_string(e: &Error) -> String {
    format!("{}: {}", e.kind(), e.detail())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_their_class_then_the_message() {
        let e = Error::NotFound("container \"a\" has no object \"b\"".into());
        assert_eq!(error_string(&e), "not-found: container \"a\" has no object \"b\"");
        let e = Error::Integrity("x is corrupt".into());
        assert_eq!(error_string(&e), "integrity: x is corrupt");
        let e = Error::io("spooling input", std::io::Error::other("disk full"));
        assert_eq!(error_string(&e), "unavailable: spooling input: disk full");
    }
}
