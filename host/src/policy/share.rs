//! Each organisation's fair share of the policy sandbox, so one tenant's
//! policy (hostile, or only busy) cannot slow every other tenant's calls:
//!
//! - **Instances**: at most `instances_per_org` of the engine's instance
//!   slots at once for one organisation; its further calls wait (in the
//!   same bounded queue as the engine's), while other organisations' calls
//!   go on.
//! - **CPU**: each organisation has an account of guest time that fills at
//!   `cpu_share_percent` of one core, holding at most a 100 ms burst.
//!   Every call's own time is charged to it — at each epoch tick while a
//!   guest runs, and at the end of the call. An organisation in debt has
//!   its running guests paused at their next tick, and its new calls wait
//!   before they start, until the debt is paid. The pauses are host time:
//!   they never count against a call's own time limit.
//!
//! The deployment's calls for no organisation (`check-config(none)`) have
//! an account of their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PolicyLimits;
use crate::error::{Error, Result};

/// The most guest time an idle organisation can use at once before its
/// share applies.
const BURST: Duration = Duration::from_millis(100);

/// Organisations tracked at once; the idle are forgotten beyond this.
const TRACKED: usize = 10_000;

/// The organisations' shares of one host's policy sandbox.
#[derive(Debug)]
pub struct TenantShares {
    per_org: u32,
    queue: u32,
    /// Seconds of guest time per second of wall time, per organisation.
    rate: f64,
    tenants: Mutex<HashMap<String, Tenant>>,
}

#[derive(Debug)]
struct Tenant {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicU32>,
    /// Guest time the organisation may still use now, in seconds; negative
    /// while it is in debt.
    balance: f64,
    updated: Instant,
}

impl Tenant {
    fn new(per_org: u32) -> Tenant {
        Tenant {
            slots: Arc::new(Semaphore::new(per_org as usize)),
            waiting: Arc::new(AtomicU32::new(0)),
            balance: BURST.as_secs_f64(),
            updated: Instant::now(),
        }
    }

    /// Fill the account for the time passed; the debt left, if any.
    fn refill(&mut self, rate: f64) -> Duration {
        let now = Instant::now();
        self.balance = (self.balance + rate * now.duration_since(self.updated).as_secs_f64()).min(BURST.as_secs_f64());
        self.updated = now;
        if self.balance >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.balance / rate) }
    }
}

/// One call's share: its organisation's instance permit, and the guest
/// time already charged.
#[derive(Debug)]
pub struct Share {
    shares: Arc<TenantShares>,
    org: String,
    charged: Duration,
    _permit: OwnedSemaphorePermit,
}

impl TenantShares {
    pub fn new(limits: &PolicyLimits) -> Arc<TenantShares> {
        Arc::new(TenantShares {
            per_org: limits.per_org_instances(),
            queue: limits.queue,
            rate: f64::from(limits.cpu_share_percent) / 100.0,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    fn with<T>(&self, org: &str, f: impl FnOnce(&mut Tenant) -> T) -> T {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if tenants.len() >= TRACKED && !tenants.contains_key(org) {
            // Forget the idle: no call in flight, no debt.
            let (per_org, rate) = (self.per_org as usize, self.rate);
            tenants.retain(|_, t| t.slots.available_permits() < per_org || t.refill(rate) > Duration::ZERO);
        }
        f(tenants.entry(org.to_string()).or_insert_with(|| Tenant::new(self.per_org)))
    }

    /// Wait for `org`'s turn: until it owes no guest time, and one of its
    /// instance permits is free (waiting behind at most the queue's length
    /// of its own calls; beyond that, a busy error at once).
    pub async fn enter(self: &Arc<Self>, org: &str) -> Result<Share> {
        loop {
            let debt = self.with(org, |t| t.refill(self.rate));
            if debt.is_zero() {
                break;
            }
            tokio::time::sleep(debt).await;
        }
        let (slots, waiting) = self.with(org, |t| (t.slots.clone(), t.waiting.clone()));
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                struct Waiting(Arc<AtomicU32>);
                impl Drop for Waiting {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let ahead = waiting.fetch_add(1, Ordering::SeqCst);
                let _waiting = Waiting(waiting);
                if ahead >= self.queue {
                    return Err(Error::Backend {
                        message: format!(
                            "busy: this organisation's calls hold all {} of its policy instances and {ahead} more \
                             are waiting (COFFER_POLICY_INSTANCES_PER_ORG, COFFER_POLICY_QUEUE); try again shortly",
                            self.per_org
                        ),
                        retryable: true,
                        source: None,
                    });
                }
                slots.acquire_owned().await.map_err(|_| Error::Internal("instance permits closed".into()))?
            }
        };
        Ok(Share { shares: self.clone(), org: org.to_string(), charged: Duration::ZERO, _permit: permit })
    }
}

impl Share {
    /// Charge the call's own time so far (`used`, all of it, not only
    /// since the last charge); answers how long the call should pause now
    /// so its organisation stays within its share.
    pub fn charge(&mut self, used: Duration) -> Duration {
        let new = used.saturating_sub(self.charged);
        self.charged = self.charged.max(used);
        let rate = self.shares.rate;
        self.shares.with(&self.org, |t| {
            t.refill(rate);
            t.balance -= new.as_secs_f64();
            t.refill(rate)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(percent: u32, per_org: u32) -> Arc<TenantShares> {
        let limits = PolicyLimits { cpu_share_percent: percent, instances_per_org: per_org, ..PolicyLimits::default() };
        TenantShares::new(&limits)
    }

    #[tokio::test]
    async fn an_organisation_past_its_cpu_share_pauses_and_others_do_not() {
        let s = shares(50, 4);
        let mut busy = s.enter("busy").await.unwrap();
        assert_eq!(busy.charge(Duration::from_millis(50)), Duration::ZERO, "within the burst");
        // 200 ms more: 150 ms of debt at half a core is about 300 ms.
        let pause = busy.charge(Duration::from_millis(250));
        assert!(pause > Duration::from_millis(250) && pause <= Duration::from_millis(300), "{pause:?}");
        assert!(busy.charge(Duration::from_millis(250)) <= pause, "the same time is charged once");
        // Another organisation is not held back.
        let started = Instant::now();
        let mut other = s.enter("other").await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(other.charge(Duration::from_millis(1)), Duration::ZERO);
        // The busy one's next call waits for its debt.
        drop(busy);
        let started = Instant::now();
        let _again = s.enter("busy").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn an_organisation_holds_at_most_its_instances() {
        let s = shares(100, 2);
        let a = s.enter("acme").await.unwrap();
        let _b = s.enter("acme").await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(100), s.enter("acme")).await;
        assert!(third.is_err(), "a third call of acme waits");
        let _other = s.enter("beta").await.unwrap();
        drop(a);
        let third = tokio::time::timeout(Duration::from_millis(500), s.enter("acme")).await;
        assert!(third.is_ok_and(|r| r.is_ok()), "and goes on once a permit is free");
    }
}
