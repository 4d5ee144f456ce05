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
    /// Host imports (of every kind) a single call may make.
    pub host_calls: u32,
    /// Milliseconds of the guest's own time (instantiation included, host
    /// I/O inside imports not) a single call may take.
    pub timeout_ms: u64,
    /// Policy calls that run at once (instances alive); more wait.
    pub instances: u32,
    /// Calls that may wait for an instance; beyond that a call fails as
    /// busy at once.
    pub queue: u32,
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
