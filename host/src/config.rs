//! Configuration: a plain struct, read from the environment (the variables
//! OpenKAT's Bytes uses) and optionally a TOML file; the environment wins.
//! Checked once, at start-up ([`Config::validate`], then the policy's own
//! `check-config`), so a bad setting never waits for the first upload.
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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Default SQLite file, in the current directory.
pub const DEFAULT_DATABASE: &str = "coffer.db";

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (its `Debug` never shows the password).
    Postgres(Box<crate::backend::postgres::PgUrl>),
}

impl DatabaseUrl {
    /// Parse `sqlite:PATH`, `sqlite://PATH`, a plain path, or a
    /// `postgres://` / `postgresql://` URL.
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::Config("COFFER_DATABASE_URL is empty".into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(Box::new(crate::backend::postgres::PgUrl::parse(url)?)));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(Error::Config(format!(
                "COFFER_DATABASE_URL: unknown scheme {scheme:?}; use sqlite:PATH or postgres://USER:PASSWORD@HOST/DB"
            )));
        }
        if crate::backend::sqlite::is_in_memory(path) {
            return Err(Error::Config(format!(
                "COFFER_DATABASE_URL {url:?} is an in-memory database (:memory:), which every connection sees as a \
                 different, empty database and which loses everything on exit: give a file, e.g. sqlite:coffer.db"
            )));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }
}

/// S3 settings. Credentials stay in the host; they never reach a guest.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub bucket_per_org: Option<bool>,
    pub bucket_prefix: Option<String>,
    /// Virtual-hosted-style URLs (`bucket.endpoint`) instead of path style.
    pub virtual_hosted: Option<bool>,
    /// Whether Coffer may create missing buckets (default true).
    pub create_buckets: Option<bool>,
    /// Objects larger than this go up in parts (default 64 MiB).
    pub multipart_threshold: Option<u64>,
    /// Size of each part (default 8 MiB, at least 5 MiB; grown so that no
    /// object needs more than 10,000 parts).
    pub part_size: Option<u64>,
    /// Seconds an S3 request may stay silent (no bytes arriving) before it
    /// fails and is retried (default 60).
    pub timeout: Option<u64>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("bucket_per_org", &self.bucket_per_org)
            .field("bucket_prefix", &self.bucket_prefix)
            .field("virtual_hosted", &self.virtual_hosted)
            .field("create_buckets", &self.create_buckets)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl S3Settings {
    /// Whether any S3 setting is present (the operator meant to use S3).
    pub fn any(&self) -> bool {
        self.access_key_id.is_some()
            || self.secret_access_key.is_some()
            || self.endpoint_url.is_some()
            || self.bucket.is_some()
            || self.bucket_per_org == Some(true)
            || self.bucket_prefix.is_some()
    }
}

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

/// What a bearer token may do within its organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// get, head, stat, list, batch read.
    Read,
    /// put.
    Write,
    /// delete.
    Delete,
    /// presigned links and redirects to them.
    Link,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Delete, Scope::Link];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Delete => "delete",
            Scope::Link => "link",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| Error::InvalidInput(format!("scope {s:?} is not one of read, write, delete, link")))
    }
}

/// One organisation's bearer token: only its SHA-256 is configured, so the
/// file holds nothing a reader could present (`coffer token new` makes a
/// token and prints its entry).
#[derive(Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// A name for logs and metrics (never the token).
    pub name: String,
    /// The organisation the token acts for.
    pub org: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettings")
            .field("name", &self.name)
            .field("org", &self.org)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// `coffer serve`'s settings (`[server]` in the file).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// `HOST:PORT`; default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// SHA-256 (hex) of the token allowed to swap policies.
    pub admin_token_sha256: Option<String>,
    /// Organisations' tokens. With none (and no admin token) the server
    /// serves without authentication, and only on a loopback address.
    pub tokens: Vec<TokenSettings>,
    /// Largest request body, bytes.
    pub max_body: Option<u64>,
    /// Requests handled at once.
    pub max_in_flight: Option<usize>,
    /// Requests handled at once for one organisation (default a quarter
    /// of `max_in_flight`), so one tenant cannot take every slot.
    pub max_in_flight_per_org: Option<usize>,
    /// Bytes per second a client must send or take, on average, once the
    /// idle timeout has passed (default 1024).
    pub min_rate: Option<u64>,
    /// Seconds to produce an answer.
    pub request_timeout: Option<u64>,
    /// Seconds a connection may stay silent.
    pub idle_timeout: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    pub shutdown_grace: Option<u64>,
    /// Where uploads over 4 MiB are spooled while they are hashed
    /// (default: the system's temporary directory).
    pub spool_dir: Option<PathBuf>,
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token_sha256.as_ref().map(|_| "(set)"))
            .field("tokens", &self.tokens)
            .field("max_body", &self.max_body)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_org", &self.max_in_flight_per_org)
            .field("min_rate", &self.min_rate)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

/// Default for [`ServerSettings::listen`].
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl ServerSettings {
    /// Check the tokens: well-formed hashes, valid organisations, scopes,
    /// and no hash given twice.
    pub fn validate(&self) -> Result<()> {
        let is_hash = |h: &str| h.parse::<crate::Digest>().is_ok();
        let mut seen = std::collections::HashSet::new();
        if let Some(admin) = &self.admin_token_sha256 {
            if !is_hash(admin) {
                return Err(Error::Config(
                    "the admin token's sha256 must be 64 lowercase hex digits (the SHA-256 of the token, not the token)"
                        .into(),
                ));
            }
            seen.insert(admin.as_str());
        }
        for t in &self.tokens {
            let which = format!("server token {:?}", t.name);
            if t.name.is_empty() || t.name.len() > 64 || t.name.chars().any(char::is_control) {
                return Err(Error::Config(format!("{which}: a name is 1 to 64 printable characters")));
            }
            crate::coffer::validate_org(&t.org).map_err(|e| Error::Config(format!("{which}: {e}")))?;
            if !is_hash(&t.sha256) {
                return Err(Error::Config(format!(
                    "{which}: sha256 must be 64 lowercase hex digits (the SHA-256 of the token, not the token)"
                )));
            }
            if t.scopes.is_empty() {
                return Err(Error::Config(format!("{which}: give at least one scope (read, write, delete, link)")));
            }
            if !seen.insert(t.sha256.as_str()) {
                return Err(Error::Config(format!("{which}: the same token hash is configured twice")));
            }
        }
        for (name, value) in [
            ("COFFER_MAX_IN_FLIGHT", self.max_in_flight.map(|n| n as u64)),
            ("COFFER_MAX_IN_FLIGHT_PER_ORG", self.max_in_flight_per_org.map(|n| n as u64)),
            ("COFFER_SHUTDOWN_GRACE", self.shutdown_grace),
            ("COFFER_REQUEST_TIMEOUT", self.request_timeout),
            ("COFFER_IDLE_TIMEOUT", self.idle_timeout),
            ("COFFER_MAX_BODY", self.max_body),
        ] {
            if value == Some(0) {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database_url = self.database_url.as_deref().map(crate::backend::postgres::url::redact);
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

/// Environment variables that map onto policy settings.
const SETTING_VARS: &[(&str, &str)] = &[
    ("COFFER_NAME_MAPPING", "name-mapping"),
    ("COFFER_MAX_SIZE", "max-size"),
    ("COFFER_ALLOWED_CONTENT_TYPES", "allowed-content-types"),
    ("COFFER_ALLOW_DELETE", "allow-delete"),
    ("COFFER_STORE_IN", "store-in"),
    ("COFFER_PARK_WHEN_UNAVAILABLE", "park-when-unavailable"),
];

fn parse_bool(var: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(Error::Config(format!("{var} must be true or false, not {other:?}"))),
    }
}

fn parse_num<T: std::str::FromStr>(var: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Config(format!("{var} must be a whole number, not {value:?}")))
}

impl Config {
    /// Read a TOML configuration file.
    ///
    /// An error names the file, line and column and says what is wrong,
    /// but never quotes the file: toml's `Display` prints the offending
    /// line, which may be `secret_access_key = "…"`, and serde's messages
    /// quote the offending value (`invalid type: string "…"`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        /// serde's message without the value it quotes ("invalid type:
        /// string \"…\", expected a boolean" keeps "string"; "unknown
        /// variant `…`" keeps only what was expected). Field names (unknown,
        /// missing or duplicate field) are keys, not values, and stay.
        fn without_value(message: &str) -> String {
            for prefix in ["invalid type: ", "invalid value: "] {
                if let Some((unexpected, expected)) =
                    message.strip_prefix(prefix).and_then(|rest| rest.rsplit_once(", expected "))
                {
                    let kind = unexpected.split(['"', '`']).next().unwrap_or_default().trim_end();
                    return format!("{prefix}{kind}, expected {expected}");
                }
            }
            match message.rsplit_once(", expected ") {
                Some((_, expected)) if message.starts_with("unknown variant ") => {
                    format!("unknown variant, expected {expected}")
                }
                _ => message.to_string(),
            }
        }

        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().and_then(|span| text.get(..span.start)).map_or(String::new(), |before| {
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
                format!(":{line}:{column}")
            });
            let message = without_value(e.message().trim());
            Error::Config(format!("config file {}{at}: {}", path.display(), message.replace('\n', "; ")))
        })
    }

    /// The configuration from the process environment (and the file named
    /// by `COFFER_CONFIG`, if any).
    pub fn from_env() -> Result<Config> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration from a variable lookup: the file named by
    /// `COFFER_CONFIG` first, then the variables on top. Empty variables
    /// count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut config = match var("COFFER_CONFIG") {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let set = |slot: &mut Option<String>, name: &str| {
            if let Some(v) = var(name) {
                *slot = Some(v);
            }
        };
        set(&mut config.database_url, "COFFER_DATABASE_URL");
        if let Some(p) = var("COFFER_POLICY") {
            config.policy = Some(PathBuf::from(p));
        }
        if let Some(p) = var("COFFER_CACHE_DIR") {
            config.cache_dir = Some(PathBuf::from(p));
        }
        let s3 = &mut config.s3;
        set(&mut s3.access_key_id, "AWS_ACCESS_KEY_ID");
        set(&mut s3.secret_access_key, "AWS_SECRET_ACCESS_KEY");
        set(&mut s3.session_token, "AWS_SESSION_TOKEN");
        set(&mut s3.endpoint_url, "AWS_ENDPOINT_URL");
        set(&mut s3.region, "AWS_REGION");
        set(&mut s3.bucket, "S3_BUCKET");
        set(&mut s3.bucket_prefix, "S3_BUCKET_PREFIX");
        if let Some(v) = var("BUCKET_PER_ORG") {
            s3.bucket_per_org = Some(parse_bool("BUCKET_PER_ORG", &v)?);
        }
        if let Some(v) = var("COFFER_S3_ADDRESSING") {
            s3.virtual_hosted = Some(match v.trim() {
                "path" => false,
                "virtual" => true,
                other => {
                    return Err(Error::Config(format!("COFFER_S3_ADDRESSING must be path or virtual, not {other:?}")));
                }
            });
        }
        if let Some(v) = var("COFFER_CREATE_BUCKETS") {
            s3.create_buckets = Some(parse_bool("COFFER_CREATE_BUCKETS", &v)?);
        }
        if let Some(v) = var("COFFER_MULTIPART_THRESHOLD") {
            s3.multipart_threshold = Some(parse_num("COFFER_MULTIPART_THRESHOLD", &v)?);
        }
        if let Some(v) = var("COFFER_MULTIPART_PART_SIZE") {
            s3.part_size = Some(parse_num("COFFER_MULTIPART_PART_SIZE", &v)?);
        }
        if let Some(v) = var("COFFER_S3_TIMEOUT") {
            s3.timeout = Some(parse_num("COFFER_S3_TIMEOUT", &v)?);
        }
        if let Some(v) = var("COFFER_DELETE_TIMEOUT") {
            config.delete_timeout = Some(parse_num("COFFER_DELETE_TIMEOUT", &v)?);
        }
        let server = &mut config.server;
        set(&mut server.listen, "COFFER_LISTEN");
        set(&mut server.admin_token_sha256, "COFFER_ADMIN_TOKEN_SHA256");
        if let Some(v) = var("COFFER_MAX_BODY") {
            server.max_body = Some(parse_num("COFFER_MAX_BODY", &v)?);
        }
        if let Some(v) = var("COFFER_MAX_IN_FLIGHT") {
            server.max_in_flight = Some(parse_num("COFFER_MAX_IN_FLIGHT", &v)?);
        }
        if let Some(v) = var("COFFER_REQUEST_TIMEOUT") {
            server.request_timeout = Some(parse_num("COFFER_REQUEST_TIMEOUT", &v)?);
        }
        if let Some(v) = var("COFFER_MAX_IN_FLIGHT_PER_ORG") {
            server.max_in_flight_per_org = Some(parse_num("COFFER_MAX_IN_FLIGHT_PER_ORG", &v)?);
        }
        if let Some(v) = var("COFFER_MIN_RATE") {
            server.min_rate = Some(parse_num("COFFER_MIN_RATE", &v)?);
        }
        if let Some(v) = var("COFFER_SHUTDOWN_GRACE") {
            server.shutdown_grace = Some(parse_num("COFFER_SHUTDOWN_GRACE", &v)?);
        }
        if let Some(v) = var("COFFER_SPOOL_DIR") {
            server.spool_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("COFFER_IDLE_TIMEOUT") {
            server.idle_timeout = Some(parse_num("COFFER_IDLE_TIMEOUT", &v)?);
        }
        for (name, key) in SETTING_VARS {
            if let Some(v) = var(name) {
                config.settings.insert(key.to_string(), v);
            }
        }
        if let Some(v) = var("COFFER_POLICY_FUEL") {
            config.limits.fuel = parse_num("COFFER_POLICY_FUEL", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_MEMORY") {
            config.limits.memory = parse_num("COFFER_POLICY_MEMORY", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_TIMEOUT") {
            config.limits.timeout_ms = parse_num("COFFER_POLICY_TIMEOUT", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_INSTANCES") {
            config.limits.instances = parse_num("COFFER_POLICY_INSTANCES", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_QUEUE") {
            config.limits.queue = parse_num("COFFER_POLICY_QUEUE", &v)?;
        }
        Ok(config)
    }

    /// The directory for compiled policy components, if caching is on.
    pub fn compiled_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p.clone()),
            None => crate::policy::engine::default_cache_dir(),
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
        if self.delete_timeout == Some(0) {
            return Err(Error::Config("COFFER_DELETE_TIMEOUT must be at least 1 second".into()));
        }
        self.server.validate()?;
        if self.s3.any() {
            self.validate_s3()?;
        }
        Ok(())
    }

    /// S3 is meant: every part of its configuration must be there. Bucket
    /// and prefix *names* are checked by the policy's `check-config`.
    fn validate_s3(&self) -> Result<()> {
        let s3 = &self.s3;
        let mut missing = Vec::new();
        if s3.access_key_id.is_none() {
            missing.push("AWS_ACCESS_KEY_ID");
        }
        if s3.secret_access_key.is_none() {
            missing.push("AWS_SECRET_ACCESS_KEY");
        }
        let per_org = s3.bucket_per_org == Some(true);
        if !per_org && s3.bucket.is_none() {
            missing.push(if s3.bucket_prefix.is_some() {
                "BUCKET_PER_ORG=true (S3_BUCKET_PREFIX is set, but only applies with BUCKET_PER_ORG=true)"
            } else {
                "S3_BUCKET (or BUCKET_PER_ORG=true with S3_BUCKET_PREFIX)"
            });
        }
        if per_org && s3.bucket_prefix.is_none() {
            missing.push("S3_BUCKET_PREFIX (BUCKET_PER_ORG=true names buckets prefix + organisation)");
        }
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "S3 is half configured; missing: {}. Set them, or unset every S3 variable to use the database",
                missing.join(", ")
            )));
        }
        if s3
            .region
            .as_deref()
            .is_some_and(|r| r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(Error::Config(format!("AWS_REGION {:?} is not a region name like eu-west-1", s3.region)));
        }
        if let Some(part) = s3.part_size
            && part < crate::backend::s3::MIN_PART_SIZE
        {
            return Err(Error::Config(format!(
                "COFFER_MULTIPART_PART_SIZE is {part}; S3 needs parts of at least {} bytes",
                crate::backend::s3::MIN_PART_SIZE
            )));
        }
        if s3.timeout == Some(0) {
            return Err(Error::Config("COFFER_S3_TIMEOUT must be at least 1 second".into()));
        }
        if let Some(t) = s3.multipart_threshold
            && t > crate::backend::s3::MAX_SINGLE_PUT
        {
            return Err(Error::Config(format!(
                "COFFER_MULTIPART_THRESHOLD is {t}; S3 refuses single uploads over {} bytes",
                crate::backend::s3::MAX_SINGLE_PUT
            )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_sqlite_in_the_current_directory() {
        let c = from(&[]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.database().unwrap(), DatabaseUrl::Sqlite(PathBuf::from("coffer.db")));
        assert!(!c.s3.any());
    }

    #[test]
    fn database_urls() {
        assert_eq!(DatabaseUrl::parse("sqlite:/x/y.db").unwrap(), DatabaseUrl::Sqlite("/x/y.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:///x/y.db").unwrap(), DatabaseUrl::Sqlite("/x/y.db".into()));
        assert_eq!(DatabaseUrl::parse("rel.db").unwrap(), DatabaseUrl::Sqlite("rel.db".into()));
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(matches!(DatabaseUrl::parse("postgresql://u@h/db"), Ok(DatabaseUrl::Postgres(_))));
        assert!(matches!(DatabaseUrl::parse("postgres://h/db"), Err(Error::Config(m)) if m.contains("no user")));
        for memory in ["sqlite::memory:", ":memory:", "sqlite:file::memory:?mode=memory"] {
            assert!(matches!(DatabaseUrl::parse(memory), Err(Error::Config(m)) if m.contains(":memory:")), "{memory}");
        }
    }

    #[test]
    fn server_settings_come_from_the_environment_and_are_checked() {
        let c = from(&[
            ("COFFER_LISTEN", "0.0.0.0:9000"),
            ("COFFER_MAX_BODY", "1000"),
            ("COFFER_MAX_IN_FLIGHT", "8"),
            ("COFFER_MAX_IN_FLIGHT_PER_ORG", "2"),
            ("COFFER_MIN_RATE", "0"),
            ("COFFER_REQUEST_TIMEOUT", "5"),
            ("COFFER_IDLE_TIMEOUT", "3"),
            ("COFFER_SHUTDOWN_GRACE", "7"),
            ("COFFER_SPOOL_DIR", "/spool"),
            ("COFFER_ADMIN_TOKEN_SHA256", &"a".repeat(64)),
        ])
        .unwrap();
        c.validate().unwrap();
        let s = &c.server;
        assert_eq!(s.listen.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!((s.max_body, s.max_in_flight, s.max_in_flight_per_org), (Some(1000), Some(8), Some(2)));
        assert_eq!(
            (s.min_rate, s.request_timeout, s.idle_timeout, s.shutdown_grace),
            (Some(0), Some(5), Some(3), Some(7))
        );
        assert_eq!(s.spool_dir.as_deref(), Some(Path::new("/spool")));
        assert!(!format!("{c:?}").contains(&"a".repeat(64)), "the admin hash stays out of Debug");
        for (var, value) in
            [("COFFER_MAX_IN_FLIGHT", "0"), ("COFFER_IDLE_TIMEOUT", "0"), ("COFFER_ADMIN_TOKEN_SHA256", "secret")]
        {
            let err = from(&[(var, value)]).and_then(|c| c.validate()).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{var}={value}: {err}");
        }
        assert!(from(&[("COFFER_MAX_BODY", "lots")]).is_err());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("coffer.toml");
        std::fs::write(
            &file,
            "database_url = \"sqlite:file.db\"\n[settings]\nmax-size = \"10\"\n[tenants.acme]\nmax-size = \"5\"\n",
        )
        .unwrap();
        let c = from(&[("COFFER_CONFIG", file.to_str().unwrap()), ("COFFER_DATABASE_URL", "sqlite:env.db")]).unwrap();
        assert_eq!(c.database_url.as_deref(), Some("sqlite:env.db"));
        assert_eq!(c.setting(None, "max-size").as_deref(), Some("10"));
        assert_eq!(c.setting(Some("acme"), "max-size").as_deref(), Some("5"));
        assert_eq!(c.setting(Some("other"), "max-size").as_deref(), Some("10"));
        let c = from(&[("COFFER_CONFIG", file.to_str().unwrap()), ("COFFER_MAX_SIZE", "99")]).unwrap();
        assert_eq!(c.setting(None, "max-size").as_deref(), Some("99"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert!(matches!(from(&[("BUCKET_PER_ORG", "maybe")]), Err(Error::Config(m)) if m.contains("BUCKET_PER_ORG")));
        assert!(
            matches!(from(&[("COFFER_POLICY_FUEL", "lots")]), Err(Error::Config(m)) if m.contains("COFFER_POLICY_FUEL"))
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        assert!(
            matches!(from(&[("COFFER_CONFIG", file.to_str().unwrap())]), Err(Error::Config(m)) if m.contains("no_such_key"))
        );
    }

    /// toml's `Display` prints the offending line, and serde's messages
    /// the offending value: a secret on that line must not reach the error.
    #[test]
    fn config_file_errors_name_the_place_but_never_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.toml");
        let path = file.to_str().unwrap();
        for (toml, line) in [
            // Unterminated string.
            ("[s3]\naccess_key_id = \"AK\"\nsecret_access_key = \"TOPSECRET\n", 3),
            // The secret pasted where a boolean belongs; serde would quote it.
            ("[s3]\nbucket_per_org = \"TOPSECRET\"\n", 2),
            ("[s3]\nbucket_per_org = \"TOP\\u0053ECRET\"\n", 2),
            ("[s3]\n\nsecret_access_key = 12345678\n", 3),
            ("[s3]\nsecret_access_key = \"TOPSECRET\" trailing\n", 2),
        ] {
            std::fs::write(&file, toml).unwrap();
            let e = Config::from_file(&file).unwrap_err().to_string();
            assert!(e.contains(&format!("{path}:{line}:")), "{toml:?}: {e}");
            assert!(!e.contains("TOPSECRET") && !e.contains("12345678"), "{toml:?}: {e}");
            assert!(!e.contains("secret_access_key ="), "the source line: {e}");
        }
        // What is wrong is still said.
        std::fs::write(&file, "[s3]\nbucket_per_org = \"TOPSECRET\"\n").unwrap();
        let e = Config::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("invalid type: string, expected a boolean"), "{e}");
    }

    #[test]
    fn half_an_s3_configuration_names_what_is_missing() {
        let c = from(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")]).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("AWS_SECRET_ACCESS_KEY") && e.contains("S3_BUCKET"),
            "{e}"
        );
        let c = from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("S3_BUCKET"));
        let c =
            from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b"), ("BUCKET_PER_ORG", "true")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("S3_BUCKET_PREFIX"));
        let c =
            from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b"), ("S3_BUCKET_PREFIX", "cyn-")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("BUCKET_PER_ORG=true"));
        let ok = from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b"), ("S3_BUCKET", "files")]).unwrap();
        ok.validate().unwrap();
        let small_parts = from(&[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("S3_BUCKET", "files"),
            ("COFFER_MULTIPART_PART_SIZE", "1000"),
        ])
        .unwrap();
        assert!(small_parts.validate().unwrap_err().to_string().contains("COFFER_MULTIPART_PART_SIZE"));
        assert!(from(&[("COFFER_S3_ADDRESSING", "sideways")]).is_err());
    }

    #[test]
    fn no_setting_name_reaches_the_credentials() {
        let c =
            from(&[("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "hunter2"), ("S3_BUCKET", "b")]).unwrap();
        for name in ["AWS_SECRET_ACCESS_KEY", "aws-secret-access-key", "secret_access_key", "s3", "access_key_id"] {
            assert_eq!(c.setting(Some("acme"), name), None, "{name}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = from(&[("AWS_SECRET_ACCESS_KEY", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
