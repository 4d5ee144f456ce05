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
            Error::Backend { .. } | Error::Io { .. } | Error::Unsupported(_) => ErrorKind::Unavailable,
            Error::Policy(_) => ErrorKind::Policy,
            Error::Internal(_) => ErrorKind::Internal,
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
