//! What bounds one policy call: memory and table elements counted over
//! all the guest's memories and tables together (not per memory), counts
//! of instances, tables and memories (enforced with either allocator), and
//! a clock of the guest's own time that leaves out host I/O, and the
//! budget of I/O time the call's storage lookups share.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

use super::engine::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use crate::error::{Error, Result};

/// The store's limiter for one call.
#[derive(Debug)]
pub struct CallLimiter {
    memory_limit: usize,
    memory_used: usize,
    elements_used: usize,
}

impl CallLimiter {
    pub fn new(memory_limit: usize) -> CallLimiter {
        CallLimiter { memory_limit, memory_used: 0, elements_used: 0 }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit {
            return Err(Error::Policy(format!(
                "tried to use more than its memory limit ({} bytes across all its memories, COFFER_POLICY_MEMORY)",
                self.memory_limit
            ))
            .into());
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.elements_used.saturating_sub(current).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Err(Error::Policy(format!(
                "tried to hold more than {MAX_TABLE_ELEMENTS} table elements across all its tables"
            ))
            .into());
        }
        self.elements_used = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The guest's own time in one call: wall time since the call began,
/// minus the time spent inside the host's storage imports (which wait on
/// I/O the guest does not control). Time the guest spends blocked in
/// anything else (a WASI clock's `poll`, say) is its own.
#[derive(Debug)]
pub struct GuestClock {
    state: Mutex<ClockState>,
}

#[derive(Debug)]
struct ClockState {
    started: Instant,
    in_host: Duration,
    host_since: Option<Instant>,
    /// CPU time of the threads that polled the call, while they polled it
    /// ([`GuestClock::counting`]).
    polled_cpu: Duration,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The time one call's storage lookups may still wait on I/O
/// (`COFFER_POLICY_HOST_IO`), shared by all of them.
#[derive(Debug)]
pub struct IoBudget {
    left: Duration,
    total: Duration,
}

impl IoBudget {
    pub fn new(total: Duration) -> IoBudget {
        IoBudget { left: total, total }
    }

    /// Run a storage lookup within what is left; past it, the lookup
    /// answers `unavailable` at once.
    pub async fn within<T>(&mut self, io: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let exhausted = || Error::Backend {
            message: format!(
                "this policy call's storage lookups have waited {} ms on I/O in all, their budget \
                 (COFFER_POLICY_HOST_IO)",
                self.total.as_millis()
            ),
            retryable: true,
            source: None,
        };
        if self.left.is_zero() {
            return Err(exhausted());
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(self.left, io).await;
        self.left = self.left.saturating_sub(started.elapsed());
        answer.unwrap_or_else(|_| Err(exhausted()))
    }
}

/// Marks the time until it is dropped as host time.
#[derive(Debug)]
pub struct InHost(Arc<GuestClock>);

impl Drop for InHost {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = s.host_since.take() {
            s.in_host += since.elapsed();
        }
    }
}

impl GuestClock {
    pub fn start() -> Arc<GuestClock> {
        Arc::new(GuestClock {
            state: Mutex::new(ClockState {
                started: Instant::now(),
                in_host: Duration::ZERO,
                host_since: None,
                polled_cpu: Duration::ZERO,
            }),
        })
    }

    /// Count the time from now until the guard is dropped as the host's.
    /// The guard holds its own reference, so a call's state stays free to
    /// borrow meanwhile.
    pub fn in_host(self: &Arc<Self>) -> InHost {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.host_since.get_or_insert_with(Instant::now);
        InHost(self.clone())
    }

    /// Wall time since the call began.
    pub fn wall(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).started.elapsed()
    }

    /// The guest's time so far, and whether the host is working now.
    fn guest_time(&self) -> (Duration, bool) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let host = s.in_host + s.host_since.map(|t| t.elapsed()).unwrap_or_default();
        (s.started.elapsed().saturating_sub(host), s.host_since.is_some())
    }

    /// What the call has cost in CPU so far, as charged to its
    /// organisation's share: its own time, but no more than the CPU its
    /// threads spent polling it. Both bound the guest's CPU from above:
    /// own time leaves out the host's I/O waits but not the time the call
    /// waited for a worker thread (on a busy machine, most of it), polled
    /// CPU leaves out every wait but includes the host's own work inside
    /// a poll. A tenant is never charged for the machine being busy.
    pub fn charged(&self) -> Duration {
        let own = self.guest_time().0;
        own.min(self.state.lock().unwrap_or_else(|e| e.into_inner()).polled_cpu)
    }

    /// `call`, with the CPU time of each of its polls counted (its thread's
    /// CPU clock before and after: a call moves between threads only
    /// between polls).
    pub async fn counting<F: Future>(&self, call: F) -> F::Output {
        let mut call = std::pin::pin!(call);
        std::future::poll_fn(|cx| {
            let before = thread_cpu();
            let polled = call.as_mut().poll(cx);
            let spent = thread_cpu().saturating_sub(before);
            self.state.lock().unwrap_or_else(|e| e.into_inner()).polled_cpu += spent;
            polled
        })
        .await
    }

    /// Completes once the guest has used `limit` of its own time. Raced
    /// against the call, it stops a guest that runs (the engine yields
    /// every few instructions) or blocks too long.
    pub async fn expired(&self, limit: Duration) {
        loop {
            let (used, in_host) = self.guest_time();
            if used >= limit && !in_host {
                return;
            }
            let left = limit.saturating_sub(used).max(Duration::from_millis(5));
            tokio::time::sleep(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's share is charged the CPU it used, not the time it waited
    /// (for a thread, or for anything else that is not host I/O).
    #[tokio::test]
    async fn a_share_is_charged_cpu_not_waiting() {
        let clock = GuestClock::start();
        clock.counting(tokio::time::sleep(Duration::from_millis(150))).await;
        assert!(clock.guest_time().0 >= Duration::from_millis(150));
        assert!(clock.charged() < Duration::from_millis(50), "waiting charged: {:?}", clock.charged());
        let before = clock.charged();
        clock
            .counting(async {
                let start = thread_cpu();
                while thread_cpu().saturating_sub(start) < Duration::from_millis(60) {
                    std::hint::black_box(start);
                }
            })
            .await;
        assert!(clock.charged() >= before + Duration::from_millis(60), "running: {:?}", clock.charged());
    }

    #[test]
    fn memory_and_elements_count_across_memories_and_tables() {
        let mut l = CallLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        // A second memory may not take the total past the limit.
        assert!(l.memory_growing(0, 50, None).is_err());
        assert!(l.memory_growing(0, 40, None).unwrap());
        // Growing the first from 60 to 61 makes 101.
        assert!(l.memory_growing(60, 61, None).is_err());
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS - 1, None).unwrap());
        assert!(l.table_growing(0, 2, None).is_err());
    }

    #[tokio::test]
    async fn host_time_is_not_the_guest_s() {
        let clock = GuestClock::start();
        {
            let _host = clock.in_host();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // 300 ms in the host, next to none of its own: a 200 ms limit is
        // far away still.
        let early = tokio::time::timeout(Duration::from_millis(100), clock.expired(Duration::from_millis(200))).await;
        assert!(early.is_err(), "host time was counted as the guest's");
        // Its own time does count.
        let late = tokio::time::timeout(Duration::from_secs(5), clock.expired(Duration::from_millis(200))).await;
        assert!(late.is_ok());
    }
}
