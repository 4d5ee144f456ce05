//! Clean-up that must outlive a cancelled operation: when a put's future
//! is dropped (a caller's timeout, Ctrl-C), its reservation must still be
//! released and its multipart upload aborted. Guards spawn that work here,
//! and a process that is shutting down waits for it
//! ([`Coffer::quiesce`](crate::Coffer::quiesce)).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Clean-up tasks still running in this process.
#[derive(Debug, Default)]
pub struct Cleanups {
    running: AtomicUsize,
    idle: Notify,
}

static CLEANUPS: Cleanups = Cleanups { running: AtomicUsize::new(0), idle: Notify::const_new() };

/// The process's clean-up tracker.
pub fn cleanups() -> &'static Cleanups {
    &CLEANUPS
}

impl Cleanups {
    /// Run `work` in the background on the current runtime; `what` is
    /// logged if there is no runtime to run it on (then `coffer gc` does
    /// the work later).
    pub fn spawn(&'static self, what: &str, work: impl Future<Output = ()> + Send + 'static) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(what, "no runtime to clean up on; left for coffer gc");
            return;
        };
        /// Counts the task out however it ends (done, or dropped with its
        /// runtime).
        struct Running(&'static Cleanups);
        impl Drop for Running {
            fn drop(&mut self) {
                if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.0.idle.notify_waiters();
                }
            }
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(self);
        handle.spawn(async move {
            let _running = running;
            work.await;
        });
    }

    /// Wait, at most `within`, until no clean-up is running; true if none is.
    pub async fn wait(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.running.load(Ordering::SeqCst) == 0;
            }
        }
    }
}
