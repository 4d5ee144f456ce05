//! Configuration: a plain struct, read from the environment (the variables
//! OpenKAT's Bytes uses) and optionally a TOML file; the environment wins.
//! Checked once, at start-up ([`Config::validate`], then the policy's own
//! `check-config`), so a bad setting never waits for the first upload.
//!
//! - this file: [`Config`], its validation and the settings a policy reads;
//! - `env.rs`: the variables below, on top of the file;
//! - `file.rs`: the TOML file, its errors never quoting a secret;
//! - `database.rs`, `pg_url.rs`: where the database is;
//! - `s3.rs`: S3 settings, and the limits of S3 they are checked against;
//! - `policy.rs`: limits on each policy call, the compiled-component cache;
//! - `server.rs`: `coffer serve`'s tokens, scopes and limits.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `COFFER_CONFIG` | TOML file with the same settings plus per-tenant policy | none |
//! | `COFFER_DATABASE_URL` | `sqlite:PATH` (or a plain path), or `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=…&pool_size=N` | `sqlite:coffer.db` |
//! | `COFFER_POLICY` | policy component (`.wasm`) replacing the built-in one | built-in |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | S3 credentials (host only) | none |
//! | `AWS_ENDPOINT_URL` | S3-compatible endpoint | none |
//! | `AWS_REGION` | signing region | `us-east-1` |
//! | `S3_BUCKET` | one bucket for all organisations | none |
//! | `BUCKET_PER_ORG`, `S3_BUCKET_PREFIX` | one bucket per organisation: prefix + org | `false`, none |
//! | `COFFER_NAME_MAPPING` | map organisation names that are not valid bucket names | `false` |
//! | `COFFER_MAX_SIZE` | largest object in bytes | unlimited |
//! | `COFFER_ALLOWED_CONTENT_TYPES` | comma-separated MIME types (`text/*` allowed) | all |
//! | `COFFER_ALLOW_DELETE` | whether `rm` is allowed | `true` |
//! | `COFFER_POLICY_FUEL` | guest instructions per policy call | 500000000 |
//! | `COFFER_POLICY_MEMORY` | guest memory per policy call (all its memories together), bytes | 67108864 |
//! | `COFFER_POLICY_TIMEOUT` | milliseconds of its own time a policy call may run (host I/O not counted) | 250 |
//! | `COFFER_POLICY_INSTANCES` | policy calls running at once; more wait for a slot | 128 |
//! | `COFFER_POLICY_QUEUE` | calls that may wait for a slot; beyond that a call fails as busy | 1024 |
//! | `COFFER_POLICY_INSTANCES_PER_ORG` | of those slots, how many one organisation may hold | a quarter of `COFFER_POLICY_INSTANCES` |
//! | `COFFER_POLICY_CPU_SHARE` | policy CPU per organisation, percent of one core on average | 50 |
//! | `COFFER_POLICY_HOST_IO` | ms one call's storage lookups may wait on I/O in all | 30000 |
//! | `COFFER_CACHE_DIR` | compiled policy components (`none`: no cache) | `~/.cache/coffer` |
//! | `COFFER_S3_TIMEOUT` | seconds an S3 request may stay silent before it is retried | 60 |
//! | `COFFER_DELETE_TIMEOUT` | seconds one deletion of bytes may take; twice this, an unfinished one is taken over | 60 |
//! | `COFFER_LISTEN` | address `coffer serve` listens on | `127.0.0.1:8080` |
//! | `COFFER_ADMIN_TOKEN_SHA256` | SHA-256 (hex) of the admin token (`coffer serve` policy swaps) | none |
//! | `COFFER_MAX_BODY` | largest request body `coffer serve` accepts, bytes (a tenant's `max-size` may lower it) | 5497558138880 (5 TiB) |
//! | `COFFER_MAX_IN_FLIGHT` | requests `coffer serve` handles at once; more get 503 with Retry-After | 256 |
//! | `COFFER_MAX_IN_FLIGHT_PER_ORG` | of those, at most this many for one organisation | a quarter of `COFFER_MAX_IN_FLIGHT` |
//! | `COFFER_MIN_RATE` | bytes/s a client must send or take on average once the idle timeout has passed (0: no minimum) | 1024 |
//! | `COFFER_SHUTDOWN_GRACE` | seconds requests in flight get to finish after SIGTERM/SIGINT before they are cancelled | 30 |
//! | `COFFER_REQUEST_TIMEOUT` | seconds `coffer serve` gives a request to produce its answer (uploads excepted: bounded by the idle timeout and the S3 and policy limits) | 60 |
//! | `COFFER_SPOOL_DIR` | where `coffer serve` spools uploads over 4 MiB while hashing them | the system's temporary directory |
//! | `COFFER_IDLE_TIMEOUT` | seconds a connection may send or take nothing before `coffer serve` drops it | 30 |
//!
//! Bearer tokens for `coffer serve` are configured only in the file
//! (`[[server.tokens]]`, as SHA-256 hashes; see [`ServerSettings`]).

mod database;
mod env;
mod file;
pub mod pg_url;
mod policy;
mod s3;
mod server;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use self::database::{DEFAULT_DATABASE, DatabaseUrl, is_in_memory};
pub use self::pg_url::{PgUrl, TlsMode};
pub use self::policy::{PolicyLimits, default_cache_dir};
pub use self::s3::{MAX_SINGLE_PUT, MIN_PART_SIZE, S3Settings};
pub use self::server::{DEFAULT_LISTEN, Scope, ServerSettings, TokenSettings};
use crate::error::{Error, Result};

/// Everything Coffer is configured with. Its `Debug` hides the secrets
/// (the S3 secret key, the database password).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite:PATH` or `postgres://…`; default `sqlite:coffer.db`.
    pub database_url: Option<String>,
    /// A policy component to use instead of the built-in one.
    pub policy: Option<PathBuf>,
    pub s3: S3Settings,
    /// Policy settings for every organisation (`name-mapping`, `max-size`,
    /// `allowed-content-types`, `allow-delete`, …).
    pub settings: BTreeMap<String, String>,
    /// Per-organisation overrides of `settings`.
    pub tenants: BTreeMap<String, BTreeMap<String, String>>,
    pub limits: PolicyLimits,
    /// Where compiled policy components are cached; `none` turns the cache
    /// off. Default `$XDG_CACHE_HOME/coffer` or `~/.cache/coffer`.
    pub cache_dir: Option<PathBuf>,
    /// Seconds one deletion of bytes may take (default 60). A deletion
    /// left unfinished (its process died) is taken over after twice this.
    pub delete_timeout: Option<u64>,
    /// `coffer serve`: address, tokens, limits.
    pub server: ServerSettings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database_url = self.database_url.as_deref().map(pg_url::redact);
        f.debug_struct("Config")
            .field("database_url", &database_url)
            .field("policy", &self.policy)
            .field("s3", &self.s3)
            .field("settings", &self.settings)
            .field("tenants", &self.tenants)
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .field("delete_timeout", &self.delete_timeout)
            .field("server", &self.server)
            .finish()
    }
}

/// Default for [`Config::delete_timeout`], seconds.
pub const DEFAULT_DELETE_TIMEOUT: u64 = 60;

impl Config {
    /// The directory for compiled policy components, if caching is on.
    pub fn compiled_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p.clone()),
            None => default_cache_dir(),
        }
    }

    /// How long one deletion of bytes may take.
    pub fn delete_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.delete_timeout.unwrap_or(DEFAULT_DELETE_TIMEOUT))
    }

    /// The database location.
    pub fn database(&self) -> Result<DatabaseUrl> {
        DatabaseUrl::parse(self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE))
    }

    /// Check what the host itself can check; naming rules are the policy's
    /// and are checked by its `check-config` when Coffer opens.
    pub fn validate(&self) -> Result<()> {
        self.database()?;
        if self.limits.fuel == 0 || self.limits.memory < (1 << 20) || self.limits.host_calls == 0 {
            return Err(Error::Config(
                "policy limits too small: COFFER_POLICY_FUEL must be above 0 and COFFER_POLICY_MEMORY at least 1048576"
                    .into(),
            ));
        }
        if self.limits.timeout_ms == 0 || self.limits.timeout_ms > 60_000 {
            return Err(Error::Config("COFFER_POLICY_TIMEOUT must be 1 to 60000 milliseconds".into()));
        }
        if self.limits.instances == 0 || self.limits.instances > 10_000 {
            return Err(Error::Config("COFFER_POLICY_INSTANCES must be 1 to 10000".into()));
        }
        if self.limits.cpu_share_percent == 0 || self.limits.cpu_share_percent > 10_000 {
            return Err(Error::Config(
                "COFFER_POLICY_CPU_SHARE must be 1 to 10000 (percent of one core per organisation)".into(),
            ));
        }
        if self.limits.host_io_ms == 0 {
            return Err(Error::Config("COFFER_POLICY_HOST_IO must be at least 1 millisecond".into()));
        }
        if self.delete_timeout == Some(0) {
            return Err(Error::Config("COFFER_DELETE_TIMEOUT must be at least 1 second".into()));
        }
        self.server.validate()?;
        if self.s3.any() {
            self.s3.validate()?;
        }
        Ok(())
    }

    /// Policy settings for `org`: the tenant's overrides on top of the
    /// deployment's, plus the bucket settings.
    pub fn setting(&self, org: Option<&str>, name: &str) -> Option<String> {
        if let Some(v) = org.and_then(|o| self.tenants.get(o)).and_then(|t| t.get(name)) {
            return Some(v.clone());
        }
        match name {
            "s3-bucket" => self.s3.bucket.clone(),
            "bucket-per-org" => self.s3.bucket_per_org.map(|b| b.to_string()),
            "s3-bucket-prefix" => self.s3.bucket_prefix.clone(),
            _ => self.settings.get(name).cloned(),
        }
    }
}
