//! Where input that cannot be read twice is spooled while it is hashed
//! (an HTTP body, a plugin's value, standard input), and how much of it
//! may be there at once, host-wide: a [`Spool`] is shared by every upload
//! of one [`crate::Coffer`], and each spooled upload holds a [`Charge`]
//! for the bytes it occupies until its content is dropped (and its file
//! removed). An upload that would go past the budget stops at once with
//! [`Error::Exhausted`], before anything is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The budget when none is set and the free space cannot be read.
const FALLBACK_LIMIT: u64 = 16 << 30;

/// A spool directory and its host-wide budget. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
}

impl Spool {
    /// Spool to `dir` (the system's temporary directory when `None`), at
    /// most `limit` bytes at once; by default half the space free in that
    /// directory now, so uploads never fill the disk the host needs.
    pub fn new(dir: Option<PathBuf>, limit: Option<u64>) -> Spool {
        let dir = dir.unwrap_or_else(std::env::temp_dir);
        let limit = limit.unwrap_or_else(|| match free_space(&dir) {
            Some(free) => free / 2,
            None => {
                tracing::warn!(dir = %dir.display(), "cannot read the spool directory's free space; spool budget {FALLBACK_LIMIT} bytes");
                FALLBACK_LIMIT
            }
        });
        Spool(Arc::new(Inner { dir, limit, used: AtomicU64::new(0) }))
    }

    /// No budget: for one-off runs (tests, a single command's input).
    pub fn unbounded(dir: Option<PathBuf>) -> Spool {
        Spool::new(dir, Some(u64::MAX))
    }

    /// Where spool files go.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// The budget, bytes.
    pub fn limit(&self) -> u64 {
        self.0.limit
    }

    /// Bytes spooled now.
    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::Relaxed)
    }

    /// An empty charge against this spool, grown as an upload is written.
    pub(super) fn charge(&self) -> Charge {
        Charge { spool: self.clone(), bytes: 0 }
    }
}

/// Bytes of a [`Spool`] one upload holds, given back when dropped.
#[derive(Debug)]
pub(super) struct Charge {
    spool: Spool,
    bytes: u64,
}

impl Charge {
    /// Whether `total` bytes would fit in the budget now, without holding
    /// them: an upload that announces its length is refused at once if it
    /// cannot fit, but holds only what has arrived (a slow client that
    /// announces much cannot hold the budget with bytes it never sends).
    pub(super) fn would_fit(&self, total: u64) -> Result<()> {
        let inner = &self.spool.0;
        let used = inner.used.load(Ordering::Acquire);
        if used.saturating_sub(self.bytes).saturating_add(total) <= inner.limit {
            return Ok(());
        }
        Err(Error::Exhausted(format!(
            "the spool for uploads is full: this upload needs {total} bytes, and {} of the budget's {} are held by \
             other uploads; try again when some have finished",
            used - self.bytes,
            inner.limit
        )))
    }

    /// Hold at least `total` bytes in all, or fail without holding more.
    pub(super) fn cover(&mut self, total: u64) -> Result<()> {
        let Some(more) = total.checked_sub(self.bytes).filter(|&n| n > 0) else { return Ok(()) };
        let inner = &self.spool.0;
        let taken = inner.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(more).filter(|&after| after <= inner.limit)
        });
        match taken {
            Ok(_) => {
                self.bytes = total;
                Ok(())
            }
            Err(used) => Err(Error::Exhausted(format!(
                "the spool for uploads is full: this upload needs {total} bytes, and {} of the budget's {} \
                 are held by other uploads; try again when some have finished",
                used - self.bytes,
                inner.limit
            ))),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.spool.0.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Bytes free for an unprivileged user in the file system holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stay_within_the_budget_and_are_given_back() {
        let spool = Spool::new(None, Some(100));
        let mut a = spool.charge();
        a.cover(60).unwrap();
        let mut b = spool.charge();
        assert!(matches!(b.cover(41), Err(Error::Exhausted(_))));
        assert_eq!(spool.used(), 60, "a refused charge holds nothing");
        b.cover(40).unwrap();
        a.cover(50).unwrap(); // already covered
        assert_eq!(spool.used(), 100);
        drop(a);
        assert_eq!(spool.used(), 40);
        b.cover(100).unwrap();
        drop(b);
        assert_eq!(spool.used(), 0);
        assert!(Spool::new(None, None).limit() > 0, "a default from the free space");
    }
}
