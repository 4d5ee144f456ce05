//! Group commit: the commits that acknowledge operations share syncs of
//! the WAL instead of each waiting for a sync of its own.
//!
//! A durable operation commits with `synchronous = NORMAL` (the commit is
//! in the WAL, in the page cache; the write lock is released at once, so
//! the next writer goes on), then waits here until a sync of the WAL that
//! *began after its commit* has finished. Only then is it acknowledged.
//! One waiter at a time syncs (`fdatasync` of the WAL file), for every
//! commit made before the sync began: while it syncs, the next commits
//! pile up and the next sync covers them all. The WAL is one file written
//! in order, so a sync makes every earlier commit durable too, and after a
//! power loss SQLite's frame checksums keep a prefix of the commits: never
//! one without the commits before it. A process crash loses nothing either
//! way (the commit is in the kernel's page cache).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The tickets of commits waiting to be durable, and how far syncs got.
#[derive(Debug, Default)]
pub(super) struct GroupSync {
    /// Tickets handed out, one per commit, each taken after its commit.
    tickets: AtomicU64,
    /// The highest ticket a finished sync covers; held while syncing.
    synced: tokio::sync::Mutex<u64>,
    /// Syncs run so far.
    syncs: AtomicU64,
    /// A sync failed: on Linux a later sync of the same file may then
    /// report success for pages that never reached the disk, so no later
    /// commit is acknowledged until the process starts again.
    failed: std::sync::atomic::AtomicBool,
}

impl GroupSync {
    /// Wait until the commit the caller just made is durable: return when a
    /// sync begun after it has finished, running `sync` if none has.
    pub(super) async fn durable<F, Fut>(&self, sync: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mine = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= mine {
            return Ok(());
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                message: "the change is committed but not confirmed on disk: an earlier sync of the SQLite \
                          database failed, and no later one can be trusted; check the disk and restart Coffer"
                    .into(),
                retryable: false,
                source: None,
            });
        }
        // Every ticket up to here belongs to a commit already made: the
        // sync that starts now covers them all.
        let upto = self.tickets.load(Ordering::SeqCst);
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = sync().await {
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        *synced = upto;
        Ok(())
    }

    /// How many syncs ran (started) so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// 64 writers commit and wait at once, against a sync that takes a
    /// while: each is released only once a sync that began after its
    /// commit finished (the acknowledgement means what it did), and the
    /// syncs are shared (fewer than the writers).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn commits_share_syncs_and_none_is_released_before_its_own() {
        let group = Arc::new(GroupSync::default());
        let committed = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for writer in 0..64u64 {
            let (group, committed, durable, syncs) = (group.clone(), committed.clone(), durable.clone(), syncs.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
                let mine = committed.fetch_add(1, Ordering::SeqCst) + 1;
                let result = group
                    .durable(|| async {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        let covers = committed.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        durable.fetch_max(covers, Ordering::SeqCst);
                        Ok(())
                    })
                    .await;
                (writer, mine, result.is_ok(), durable.load(Ordering::SeqCst))
            }));
        }
        for t in tasks {
            let (writer, mine, ok, durable_at_release) = t.await.unwrap();
            assert!(ok, "writer {writer}");
            assert!(durable_at_release >= mine, "writer {writer}: released at {durable_at_release} < {mine}");
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < 64, "{syncs} syncs for 64 commits: none shared");
    }

    /// After a failed sync, no later commit is acknowledged: a later sync
    /// of the same file could report success for pages that were lost.
    #[tokio::test]
    async fn after_a_failed_sync_nothing_later_is_acknowledged() {
        let group = GroupSync::default();
        let failing = group.durable(|| async { Err(Error::Internal("disk error".into())) }).await;
        assert!(failing.is_err());
        let ran = AtomicUsize::new(0);
        let later = group
            .durable(|| async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        let e = later.unwrap_err();
        assert!(e.to_string().contains("not confirmed on disk"), "{e}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a later sync is not trusted");
    }
}
