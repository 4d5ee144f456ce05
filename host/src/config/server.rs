//! `coffer serve`'s settings (`[server]` in the file, `COFFER_LISTEN`,
//! `COFFER_MAX_*`, timeouts): bearer tokens with their scopes, and the
//! service's limits.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::content::Digest;
use crate::error::{Error, Result};
use crate::org::validate_org;

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
    /// Connections open at once; more are answered 503 and closed at once
    /// (default: half the process's open-file limit, 64 to 4096).
    pub max_connections: Option<usize>,
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
    /// Bytes spooled at once, host-wide (default: half the space free in
    /// the spool directory when Coffer opens).
    pub spool_limit: Option<u64>,
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token_sha256.as_ref().map(|_| "(set)"))
            .field("tokens", &self.tokens)
            .field("max_body", &self.max_body)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_connections", &self.max_connections)
            .field("max_in_flight_per_org", &self.max_in_flight_per_org)
            .field("min_rate", &self.min_rate)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("spool_dir", &self.spool_dir)
            .field("spool_limit", &self.spool_limit)
            .finish()
    }
}

/// Default for [`ServerSettings::listen`].
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl ServerSettings {
    /// Check the tokens: well-formed hashes, valid organisations, scopes,
    /// and no hash given twice.
    pub fn validate(&self) -> Result<()> {
        let is_hash = |h: &str| h.parse::<Digest>().is_ok();
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
            validate_org(&t.org).map_err(|e| Error::Config(format!("{which}: {e}")))?;
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
            ("COFFER_MAX_CONNECTIONS", self.max_connections.map(|n| n as u64)),
            ("COFFER_MAX_IN_FLIGHT_PER_ORG", self.max_in_flight_per_org.map(|n| n as u64)),
            ("COFFER_SHUTDOWN_GRACE", self.shutdown_grace),
            ("COFFER_REQUEST_TIMEOUT", self.request_timeout),
            ("COFFER_IDLE_TIMEOUT", self.idle_timeout),
            ("COFFER_MAX_BODY", self.max_body),
            ("COFFER_SPOOL_LIMIT", self.spool_limit),
        ] {
            if value == Some(0) {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}
