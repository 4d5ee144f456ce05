//! Coffer's errors: one enum, classified in one place ([`Error::kind`],
//! [`Error::is_retryable`]) so the CLI's exit codes, the HTTP status codes
//! and the contract's error variant all agree.

use std::fmt;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with Coffer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each case carrying what a caller needs to
/// act on it. Messages are written for an operator: they say what is wrong
/// and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An organisation, bucket, key or digest breaks a naming rule.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// Other bad input from the caller (a file that cannot be read, a bad
    /// content type, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The configuration is invalid; found at start-up.
    #[error("configuration error: {0}")]
    Config(String),
    /// Policy refuses the operation.
    #[error("denied: {0}")]
    Denied(String),
    /// No such object (for this organisation).
    #[error("not found: {0}")]
    NotFound(String),
    /// The name is taken by something else.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored bytes do not match their SHA-256.
    #[error("integrity error: {0}")]
    Integrity(String),
    /// A backend failed or could not be reached; `retryable` says whether
    /// trying again may help.
    #[error("backend error: {message}")]
    Backend {
        message: String,
        retryable: bool,
        #[source]
        source: Option<BoxError>,
    },
    /// The server does not implement what was asked (for example an S3
    /// server without ListMultipartUploads); retrying will not help.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The policy component is invalid, trapped, ran out of fuel or
    /// memory, or broke the contract.
    #[error("policy component: {0}")]
    Policy(String),
    /// A `wasi:blobstore` plugin (a guest that is not a policy) trapped,
    /// ran out of fuel or memory, or cannot run. Classed with policy
    /// failures (a sandboxed guest failed), but named for what it is.
    #[error("plugin: {0}")]
    Plugin(String),
    /// A host-wide budget is used up (the spool for uploads): nothing was
    /// stored, and trying again once other work has finished may succeed.
    #[error("insufficient storage: {0}")]
    Exhausted(String),
    /// Local I/O failed (reading the input, spooling, writing output).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A bug: not the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The classes of [`Error`] that callers branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    InvalidInput,
    Config,
    Denied,
    NotFound,
    Conflict,
    Integrity,
    Unavailable,
    Policy,
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Config => "config",
            ErrorKind::Denied => "denied",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Policy => "policy",
            ErrorKind::Internal => "internal",
        })
    }
}

/// `m` with every URL (anything from `scheme://` to the next white space)
/// replaced by `<url>`, every AWS resource name (`arn:…`, which names the
/// account) by `<arn>`, and every absolute file path (a word starting with
/// `/` that names a file in a folder) by `<path>`: what a message keeps
/// when it leaves the host for a policy or an HTTP client.
pub fn scrub(m: &str) -> String {
    m.split_inclusive(char::is_whitespace)
        .map(|word| {
            let trimmed = word.trim_end();
            let rest = &word[trimmed.len()..];
            let bare = trimmed.trim_start_matches(|c: char| !c.is_alphanumeric() && c != '/');
            if trimmed.contains("://") {
                format!("<url>{rest}")
            } else if bare.starts_with("arn:") {
                format!("<arn>{rest}")
            } else if bare.starts_with('/') && bare.matches('/').count() >= 2 {
                format!("<path>{rest}")
            } else {
                word.to_string()
            }
        })
        .collect()
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName(_) | Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Config(_) => ErrorKind::Config,
            Error::Denied(_) => ErrorKind::Denied,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Integrity(_) => ErrorKind::Integrity,
            Error::Backend { .. } | Error::Io { .. } | Error::Unsupported(_) | Error::Exhausted(_) => {
                ErrorKind::Unavailable
            }
            Error::Policy(_) | Error::Plugin(_) => ErrorKind::Policy,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message without its class (what follows "not found: " and
    /// the like), for callers that state the class on their own.
    pub fn detail(&self) -> String {
        match self {
            Error::InvalidName(m)
            | Error::InvalidInput(m)
            | Error::Config(m)
            | Error::Denied(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::Integrity(m)
            | Error::Unsupported(m)
            | Error::Exhausted(m)
            | Error::Policy(m)
            | Error::Plugin(m)
            | Error::Internal(m) => m.clone(),
            Error::Backend { message, .. } => message.clone(),
            Error::Io { .. } => self.to_string(),
        }
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Backend { retryable: true, .. })
    }

    /// A local I/O failure, with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        // A busy or locked database clears up; anything else will not.
        let retryable = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        Error::Backend { message: format!("database: {e}"), retryable, source: Some(Box::new(e)) }
    }
}

/// How a PostgreSQL error may clear up, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTransient {
    /// The transaction lost to a concurrent one (serialization failure,
    /// deadlock): running it again will do.
    Conflict,
    /// The connection failed or was lost, or the server is starting,
    /// shutting down or full: it may be back in a moment.
    Connection,
}

/// Classify a PostgreSQL error: `None` when trying again will not help.
pub fn pg_transient(e: &tokio_postgres::Error) -> Option<PgTransient> {
    use tokio_postgres::error::SqlState;
    if let Some(code) = e.code() {
        let c = code.code();
        // Losing a lock wait (lock_timeout) is losing to a concurrent
        // transaction too.
        return if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            Some(PgTransient::Conflict)
        } else if c.starts_with("08") || c.starts_with("57P") || *code == SqlState::TOO_MANY_CONNECTIONS {
            Some(PgTransient::Connection)
        } else {
            None
        };
    }
    // A connection that failed or broke; not a certificate or protocol
    // error, which the next attempt would meet again.
    let io = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() != std::io::ErrorKind::InvalidData);
    (e.is_closed() || io || e.to_string().starts_with("timeout")).then_some(PgTransient::Connection)
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        let retryable = pg_transient(&e).is_some();
        // The server's own message (with its detail) says more than the
        // client's summary of it.
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        };
        Error::Backend { message, retryable, source: Some(Box::new(e)) }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Error {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => Error::from(e),
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => Error::Backend {
                message: "no pooled database connection became free in time (all busy: raise pool_size?)".into(),
                retryable: true,
                source: Some(Box::new(e)),
            },
            PoolError::Timeout(_) => Error::Backend {
                message: "could not connect within the connect timeout (the server does not answer)".into(),
                retryable: true,
                source: Some(Box::new(e)),
            },
            other => Error::Internal(format!("database pool: {other}")),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Error {
        Error::Internal(format!("a worker task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_database_is_retryable_and_constraint_is_not() {
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        assert!(Error::from(busy).is_retryable());
        let constraint = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(19), None);
        assert!(!Error::from(constraint).is_retryable());
    }

    #[test]
    fn kinds_group_what_callers_branch_on() {
        assert_eq!(Error::InvalidName("x".into()).kind(), ErrorKind::InvalidInput);
        assert_eq!(Error::io("reading", std::io::ErrorKind::Other.into()).kind(), ErrorKind::Unavailable);
        assert_eq!(Error::NotFound("x".into()).kind().to_string(), "not-found");
    }
}
