//! `postgres://` URLs: what Coffer reads from them itself (TLS mode, root
//! certificates, pool size) and what it hands to tokio-postgres (the
//! rest: host, port, user, password, database, `application_name`,
//! `connect_timeout`, keepalives …). The password is never shown: not in
//! `Debug`, not in errors, not in logs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// Connections each host keeps to PostgreSQL, unless `pool_size` says.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long a connection attempt may take, unless `connect_timeout` says:
/// a database that is down is an error in seconds, never a hang.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's limits on one statement, on one wait for a lock, and on a
/// transaction left idle, unless the URL's `options` sets its own.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How the connection is encrypted (`sslmode`, as libpq names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without checking its certificate
    /// (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is not checked (it protects
    /// against eavesdropping, not against an impostor).
    Require,
    /// TLS with the certificate checked against the roots
    /// (`sslrootcert`, else the system's) and the host name.
    VerifyFull,
}

/// A parsed `postgres://` or `postgresql://` URL.
#[derive(Clone)]
pub struct PgUrl {
    /// For tokio-postgres: everything but Coffer's own options.
    pub(crate) config: tokio_postgres::Config,
    pub tls: TlsMode,
    /// PEM file of the roots a `verify-full` connection trusts.
    pub root_cert: Option<PathBuf>,
    pub pool_size: usize,
    /// `HOST:PORT/DATABASE`, for messages (no user, no password).
    label: String,
}

impl PartialEq for PgUrl {
    fn eq(&self, other: &PgUrl) -> bool {
        // tokio_postgres::Config is not comparable; what matters is (its
        // Debug hides the password, so that is compared on its own).
        format!("{:?}", self.config) == format!("{:?}", other.config)
            && self.config.get_password() == other.config.get_password()
            && (self.tls, &self.root_cert, self.pool_size) == (other.tls, &other.root_cert, other.pool_size)
    }
}

impl Eq for PgUrl {}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("at", &self.label)
            .field("user", &self.config.get_user())
            .field("password", &self.config.get_password().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgUrl {
    /// Parse `url`; every problem is a configuration error, found at
    /// start-up, that never repeats the password.
    pub fn parse(url: &str) -> Result<PgUrl> {
        // The URL itself is never repeated: a password can hide in it in
        // more ways than a redaction would catch.
        let bad = |what: String| Error::Config(format!("COFFER_DATABASE_URL (PostgreSQL): {what}"));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut passed = Vec::new();
        let (mut tls, mut root_cert, mut pool_size) = (TlsMode::Prefer, None, DEFAULT_POOL_SIZE);
        let mut given = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| bad(format!("the value of {key} is not UTF-8")))?;
            match key {
                "sslmode" => {
                    tls = match &*value {
                        "disable" => TlsMode::Disable,
                        "prefer" | "allow" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-full" => TlsMode::VerifyFull,
                        "verify-ca" => {
                            return Err(bad("sslmode=verify-ca is not supported: use verify-full, which also \
                                            checks that the certificate names the host"
                                .into()));
                        }
                        other => {
                            return Err(bad(format!(
                                "unknown sslmode {other:?}; use disable, prefer, require or verify-full"
                            )));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
                "pool_size" | "pool_max_size" => {
                    pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad(format!("{key} must be 1 to 1000, not {value:?}")))?;
                }
                _ => {
                    given.push(key);
                    passed.push(pair);
                }
            }
        }
        let rebuilt = if passed.is_empty() { base.to_string() } else { format!("{base}?{}", passed.join("&")) };
        // tokio-postgres's parse errors name an option, a position or one
        // character, never a value.
        let mut config =
            tokio_postgres::Config::from_str(&rebuilt).map_err(|e| match std::error::Error::source(&e) {
                Some(detail) => bad(format!("{e}: {detail}")),
                None => bad(e.to_string()),
            })?;
        if config.get_hosts().is_empty() {
            return Err(bad("no host".into()));
        }
        if config.get_dbname().is_none() {
            return Err(bad("no database name (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".into()));
        }
        if config.get_user().is_none() {
            return Err(bad("no user (postgres://USER:PASSWORD@HOST:PORT/DATABASE)".into()));
        }
        let unset = |key: &str| !given.contains(&key);
        if unset("connect_timeout") {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if unset("application_name") {
            config.application_name("coffer");
        }
        // A server that vanished from the network (a failover, a cut
        // link) is noticed in about a minute, not after the system's two
        // hours of TCP keepalive idleness.
        if unset("keepalives_idle") {
            config.keepalives_idle(Duration::from_secs(30));
        }
        if unset("keepalives_interval") {
            config.keepalives_interval(Duration::from_secs(10));
        }
        if unset("keepalives_retries") {
            config.keepalives_retries(3);
        }
        if unset("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_secs(60));
        }
        // The server ends what a host left waiting (a statement, a lock
        // wait, a transaction whose host vanished), so one host's trouble
        // never holds another's rows for long.
        if unset("options") {
            config.options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
                STATEMENT_TIMEOUT.as_millis(),
                LOCK_TIMEOUT.as_millis(),
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ));
        }
        if tls == TlsMode::Disable {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        } else if matches!(tls, TlsMode::Require | TlsMode::VerifyFull) {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if root_cert.is_some() && tls != TlsMode::VerifyFull {
            return Err(bad("sslrootcert is only used with sslmode=verify-full".into()));
        }
        let label = label(&config);
        Ok(PgUrl { config, tls, root_cert, pool_size, label })
    }

    /// `HOST:PORT/DATABASE`, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A warning for a connection that may go over the network in plain
    /// text: `sslmode=prefer` (libpq's default, so also no `sslmode` at
    /// all) falls back to plain TCP, and checks no certificate, when the
    /// server is not on this machine. `None` for a Unix socket or a
    /// loopback address, and for any other `sslmode`.
    pub fn plaintext_warning(&self) -> Option<String> {
        let local = |h: &tokio_postgres::config::Host| match h {
            tokio_postgres::config::Host::Unix(_) => true,
            tokio_postgres::config::Host::Tcp(h) => {
                h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        };
        if self.tls != TlsMode::Prefer || self.config.get_hosts().iter().all(local) {
            return None;
        }
        Some(format!(
            "PostgreSQL at {} is reached with sslmode=prefer (the default): the connection falls back to plain \
             text if the server offers no TLS, and the server's certificate is not checked. Add \
             sslmode=verify-full to the URL (with sslrootcert=FILE for a private CA), or sslmode=require at least",
            self.label
        ))
    }
}

fn label(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    format!("{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
}

/// A database URL as it may be shown: SQLite paths as they are; a
/// PostgreSQL URL as its user, server and database only (a password can
/// be in the user information, with or without `/` or `?` in it, or in a
/// `password=` option, so the URL's text is never shown).
pub fn redact(url: &str) -> String {
    let url = url.trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return url.to_string();
    }
    match PgUrl::parse(url) {
        Ok(u) => format!("postgres://{}@{} (password redacted)", u.config.get_user().unwrap_or(""), u.label()),
        Err(_) => "postgres://<unparsable, redacted>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_coffer_reads_are_taken_out_and_the_rest_passed_on() {
        let u = PgUrl::parse(
            "postgresql://coffer:s3cr%40t@db.example:6543/files?sslmode=require&pool_size=4&application_name=ingest",
        )
        .unwrap();
        assert_eq!((u.tls, u.pool_size), (TlsMode::Require, 4));
        assert_eq!(u.config.get_password(), Some(&b"s3cr@t"[..]));
        assert_eq!(u.config.get_application_name(), Some("ingest"));
        assert_eq!(u.config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(u.label(), "db.example:6543/files");
        let d = PgUrl::parse("postgres://u@h/d").unwrap();
        assert_eq!((d.tls, d.pool_size), (TlsMode::Prefer, DEFAULT_POOL_SIZE));
        assert_eq!(d.config.get_application_name(), Some("coffer"));
        assert_eq!(d.label(), "h:5432/d");
    }

    #[test]
    fn bad_urls_are_clear_errors_that_never_repeat_the_password() {
        for (url, says) in [
            ("postgres://u:hunter2@h/d?sslmode=verify-ca", "verify-ca"),
            ("postgres://u:hunter2@h/d?sslmode=sometimes", "unknown sslmode"),
            ("postgres://u:hunter2@h/d?pool_size=0", "pool_size"),
            ("postgres://u:hunter2@h", "no database"),
            ("postgres://u:hunter2@h/d?sslrootcert=/x.pem", "sslrootcert"),
            ("postgres://u:hunter2@h/d?nonsense=1", "nonsense"),
            ("postgres://u:hunter2@h/d?password=hunter2&pool_size=x", "pool_size"),
        ] {
            let e = PgUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }

    #[test]
    fn the_password_is_never_in_debug_output() {
        let u = PgUrl::parse("postgres://u:hunter2@h:1/d?sslmode=disable").unwrap();
        let shown = format!("{u:?}");
        assert!(!shown.contains("hunter2") && shown.contains("redacted") && shown.contains("h:1/d"), "{shown}");
        for url in [
            "postgres://u:hunter2@h:1/d",
            "postgres://u:hun/ter2@h:1/d?sslmode=verfy-full",
            "postgres://u@h:1/d?password=hunter2",
            "postgresql://u:hunter2?@h:1/d",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("hunter2") && !shown.contains("ter2"), "{url}: {shown}");
            if let Err(e) = PgUrl::parse(url) {
                assert!(!e.to_string().contains("ter2"), "{url}: {e}");
            }
        }
        assert_eq!(redact("postgres://u:hunter2@h:1/d"), "postgres://u@h:1/d (password redacted)");
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }

    #[test]
    fn prefer_to_a_remote_server_is_warned_about() {
        let warned = |url: &str| PgUrl::parse(url).unwrap().plaintext_warning();
        let w = warned("postgres://u@db.example/files").expect("no sslmode to a remote host");
        assert!(w.contains("db.example") && w.contains("verify-full"), "{w}");
        assert!(warned("postgres://u@db.example/files?sslmode=prefer").is_some());
        assert!(warned("postgres://u@10.0.0.5,127.0.0.1/files").is_some(), "one remote host is enough");
        for quiet in [
            "postgres://u@db.example/files?sslmode=verify-full",
            "postgres://u@db.example/files?sslmode=require",
            "postgres://u@db.example/files?sslmode=disable",
            "postgres://u@localhost/files",
            "postgres://u@127.0.0.1:5433/files",
            "postgres://u@[::1]/files",
        ] {
            assert_eq!(warned(quiet), None, "{quiet}");
        }
    }
}
