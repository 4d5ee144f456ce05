//! Limits on each policy call (`COFFER_POLICY_*`), and where compiled
//! policy components are cached.

use std::path::PathBuf;

use serde::Deserialize;

/// Limits for each policy call.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyLimits {
    /// Wasm instructions (fuel) a single call may use.
    pub fuel: u64,
    /// Linear memory a single call may grow to, all its memories
    /// together, in bytes.
    pub memory: usize,
    /// Storage and log imports a single call may make; every transition
    /// to the host (WASI imports, the runtime's own calls) counts against
    /// sixteen times as many.
    pub host_calls: u32,
    /// Milliseconds of the guest's own time (instantiation included, host
    /// I/O inside imports not) a single call may take.
    pub timeout_ms: u64,
    /// Policy calls that run at once (instances alive); more wait.
    pub instances: u32,
    /// Calls that may wait for an instance; beyond that a call fails as
    /// busy at once.
    pub queue: u32,
    /// Of `instances`, how many one organisation's calls may hold at once
    /// (0: a quarter of `instances`, at least 1); its further calls wait
    /// in the queue.
    pub instances_per_org: u32,
    /// Policy CPU one organisation may use, in percent of one core, on
    /// average (bursts of 100 ms pass); past it, its guests are paused at
    /// their next epoch tick and its new calls wait, so one tenant's policy
    /// cannot take the CPU other tenants' calls need.
    pub cpu_share_percent: u32,
    /// Milliseconds one call's storage imports other than `write` (head,
    /// ensure-container, lookup, peek) may wait on I/O in all; past it
    /// they answer `unavailable` at once.
    pub host_io_ms: u64,
}

impl PolicyLimits {
    /// [`PolicyLimits::instances_per_org`], with its default applied.
    pub fn per_org_instances(&self) -> u32 {
        match self.instances_per_org {
            0 => self.instances.div_ceil(4).max(1),
            n => n.min(self.instances),
        }
    }
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            fuel: 500_000_000,
            memory: 64 << 20,
            host_calls: 256,
            timeout_ms: 250,
            instances: 128,
            queue: 1024,
            instances_per_org: 0,
            cpu_share_percent: 50,
            host_io_ms: 30_000,
        }
    }
}

/// The default cache directory for compiled policy components:
/// `$XDG_CACHE_HOME/coffer`, or `~/.cache/coffer`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("coffer"))
}
