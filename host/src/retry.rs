//! Bounded retries with jittered exponential backoff, for errors that
//! [`Error::is_retryable`] says may clear up (5xx, 429, timeouts, resets).
//! Content-addressed writes are idempotent, so retrying a put is safe.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt (doubling after each failure) …
    pub base_delay: Duration,
    /// … up to this.
    pub max_delay: Duration,
    /// No new attempt starts after this much time since the first.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter": a random delay up to the exponential bound, so many
    /// clients that failed together do not retry together.
    fn delay(&self, failures: u32) -> Duration {
        let bound = self.base_delay.saturating_mul(1u32 << failures.min(16)).min(self.max_delay);
        bound.mul_f64(fastrand::f64())
    }

    /// Run `attempt` until it succeeds, fails for good, or the attempts or
    /// the deadline run out; the last error says how many attempts it took.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut failures = 0u32;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    let delay = self.delay(failures);
                    if failures >= self.max_attempts || start.elapsed() + delay > self.deadline {
                        return Err(match e {
                            Error::Backend { message, retryable, source } => Error::Backend {
                                message: format!("{message} (gave up after {failures} attempts)"),
                                retryable,
                                source,
                            },
                            other => other,
                        });
                    }
                    tracing::warn!(what, attempt = failures, ?delay, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy { base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(4), ..Default::default() }
    }

    fn flaky() -> Error {
        Error::Backend { message: "503".into(), retryable: true, source: None }
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let r = fast()
            .run("t", || async { if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(flaky()) } else { Ok(7) } })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_error_says_so() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(flaky())
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(r.unwrap_err().to_string().contains("gave up after 4 attempts"));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Denied("no".into()))
            })
            .await;
        assert!(matches!(r, Err(Error::Denied(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delays_stay_within_the_bound() {
        let p = RetryPolicy::default();
        for failures in 0..40 {
            assert!(p.delay(failures) <= p.max_delay);
        }
    }
}
