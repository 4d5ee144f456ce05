//! What every handler shares ([`App`]: the Coffer, the tokens, the
//! limits), and each organisation's share of the requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::auth::Tokens;
use super::body;
use super::readiness::ReadinessCache;
use crate::coffer::Coffer;

/// Limits the server applies, from [`crate::config::ServerSettings`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body: u64,
    pub max_in_flight: usize,
    pub max_in_flight_per_org: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// The minimum rate of bodies in and out.
    pub pace: body::Pace,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub(super) fn from_settings(s: &crate::config::ServerSettings) -> Limits {
        let max_in_flight = s.max_in_flight.unwrap_or(256);
        let idle_timeout = Duration::from_secs(s.idle_timeout.unwrap_or(30));
        Limits {
            max_body: s.max_body.unwrap_or(5 << 40),
            max_in_flight_per_org: s.max_in_flight_per_org.unwrap_or(max_in_flight.div_ceil(4)).max(1),
            pace: body::Pace { min_rate: s.min_rate.unwrap_or(1024), grace: idle_timeout },
            max_in_flight,
            max_connections: s.max_connections.unwrap_or_else(default_max_connections),
            request_timeout: Duration::from_secs(s.request_timeout.unwrap_or(60)),
            idle_timeout,
            shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(30)),
        }
    }
}

/// Half the process's soft limit on open files, 64 to 4096: the other half
/// is left for the database, spool files and S3 connections.
fn default_max_connections() -> usize {
    // Linux says it in /proc (no unsafe call needed); elsewhere, assume
    // the common 1024.
    let open_files = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
            Some(if soft == "unlimited" { usize::MAX } else { soft.parse().ok()? })
        })
        .unwrap_or(1024);
    (open_files / 2).clamp(64, 4096)
}

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    pub coffer: Coffer,
    pub tokens: Tokens,
    pub limits: Limits,
    pub(super) in_flight: Arc<Semaphore>,
    /// Requests in flight by organisation (entries leave at zero).
    pub(super) per_org: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The last readiness answer, and when it was found.
    pub(super) readiness: ReadinessCache,
    pub(super) draining: AtomicBool,
}

impl App {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// One request's place in its organisation's share of the in-flight
/// limit; given back when dropped (with the response body).
pub(super) struct OrgSlot {
    app: Arc<App>,
    org: String,
}

impl OrgSlot {
    pub(super) fn take(app: &Arc<App>, org: &str) -> Option<OrgSlot> {
        let mut counts = app.per_org.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(org.to_string()).or_insert(0);
        if *n >= app.limits.max_in_flight_per_org {
            return None;
        }
        *n += 1;
        Some(OrgSlot { app: app.clone(), org: org.to_string() })
    }
}

impl Drop for OrgSlot {
    fn drop(&mut self) {
        let mut counts = self.app.per_org.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.org);
            }
        }
    }
}
