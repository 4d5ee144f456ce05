//! The service's errors: every failure answers JSON `{"error": kind,
//! "message": …, "request_id": …}` with the status that fits, and
//! [`crate::Error`] is mapped to a status in one place ([`ApiError::from`]).
//!
//! What a client reads carries no host internals. A failure of the server's
//! side (storage, database, the policy component, configuration, a bug) is
//! told in general words; its full error goes to the server's log under the
//! request's id, which the client gets in the body and in `X-Request-Id`.
//! Messages about the client's own request keep their words, with URLs,
//! ARNs and file paths cut out ([`crate::error::scrub`]).

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::scrub;
use crate::{Error, ErrorKind};

/// What a handler answers: its response, or an error answer.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable word (`not-found`, `too-large`, …).
    pub kind: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a stable word: `invalid-input`, `unauthorized`,
    /// `forbidden`, `denied`, `not-found`, `conflict`, `too-large`,
    /// `digest-mismatch`, `range-not-satisfiable`, `unavailable`,
    /// `overloaded`, `timeout`, `insufficient-storage`, `integrity`,
    /// `policy`, `config`, `internal`.
    pub error: String,
    /// For a person.
    pub message: String,
    /// The request's id, as in `X-Request-Id`: the server's log has the
    /// details of a failure under it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

tokio::task_local! {
    /// The id of the request being handled (set by the outermost
    /// middleware around the whole request).
    pub(super) static REQUEST_ID: Arc<str>;
}

/// The id of the request this task handles, if any.
pub(super) fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// A fresh request id: 16 hex digits.
pub(super) fn new_request_id() -> Arc<str> {
    format!("{:016x}", fastrand::u64(..)).into()
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    pub fn too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body is larger than this organisation may store ({limit} bytes)"),
        )
    }

    pub fn unavailable(kind: &'static str, message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, kind, message) }
    }

    /// No answer within the request timeout `after`.
    pub fn timed_out(after: std::time::Duration) -> ApiError {
        ApiError::unavailable("timeout", format!("no answer within {} s; try again", after.as_secs()), 1)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        if let Error::Exhausted(_) = &e {
            // The host's spool is full: nothing was stored; later, it may be.
            tracing::warn!(request_id = request_id().as_deref().unwrap_or("-"), error = %e, "request refused");
            return ApiError {
                retry_after: Some(10),
                ..ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient-storage",
                    "the server's spool for uploads is full; nothing was stored; try again shortly",
                )
            };
        }
        let kind = e.kind();
        // The server's own failures: general words for the client, the
        // error itself for the log, under the request's id.
        let withheld = |what: &str| -> String {
            let id = request_id();
            let id = id.as_deref().unwrap_or("-");
            match kind {
                ErrorKind::Unavailable => tracing::warn!(request_id = id, error = %e, "request failed"),
                _ => tracing::error!(request_id = id, error = %e, "request failed"),
            }
            format!("{what} (the server's log has the details under request id {id})")
        };
        match kind {
            ErrorKind::InvalidInput => ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", scrub(&e.to_string())),
            ErrorKind::Denied => ApiError::new(StatusCode::FORBIDDEN, "denied", scrub(&e.to_string())),
            ErrorKind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not-found", scrub(&e.to_string())),
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", scrub(&e.to_string())),
            // Stored bytes that do not match their digest: the store's fault.
            ErrorKind::Integrity => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "integrity",
                withheld("the stored bytes are missing or do not match their digest"),
            ),
            ErrorKind::Unavailable => ApiError::unavailable(
                "unavailable",
                withheld("the storage or the database did not answer, or failed; try again shortly"),
                5,
            ),
            ErrorKind::Policy => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "policy",
                withheld(
                    "the organisation's policy component failed (it trapped, ran out of fuel, time, memory or \
                     host calls, or broke the contract)",
                ),
            ),
            ErrorKind::Config => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "config",
                withheld("the server's configuration does not allow this"),
            ),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", withheld("an internal error")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id().map(|id| id.to_string());
        let body = ErrorBody { error: self.kind.to_string(), message: self.message, request_id };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"coffer\""));
        }
        response
    }
}

/// The kind word for a status that reached the client without an
/// [`ApiError`] (axum's own rejections, an unknown route).
pub fn kind_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-input",
        s if s.is_client_error() => "invalid-input",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status() {
        let cases = [
            (Error::InvalidName("x".into()), 400),
            (Error::InvalidInput("x".into()), 400),
            (Error::Denied("x".into()), 403),
            (Error::NotFound("x".into()), 404),
            (Error::Conflict("x".into()), 409),
            (Error::Integrity("x".into()), 500),
            (Error::Backend { message: "x".into(), retryable: true, source: None }, 503),
            (Error::Policy("x".into()), 500),
            (Error::Internal("x".into()), 500),
        ];
        for (e, status) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status, "{api:?}");
            assert_eq!(api.retry_after.is_some(), status == 503);
        }
    }

    #[tokio::test]
    async fn the_servers_failures_reach_the_client_without_host_internals() {
        let secret = [
            Error::Policy("/srv/tenants/acme/policy.wasm made more than 256 host calls".into()),
            Error::Backend {
                message: "PostgreSQL at db.internal:5432/coffer: connection refused".into(),
                retryable: true,
                source: None,
            },
            Error::io("spooling to /var/tmp/coffer/.spool-1234", std::io::Error::other("disk full")),
            Error::Integrity("s3:cyn-acme/abc (http://10.0.0.5:9000/cyn-acme/abc) does not match".into()),
            Error::Config("S3 at http://10.0.0.5:9000 is not configured".into()),
            Error::Internal("the pool at /run/coffer.sock".into()),
        ];
        for e in secret {
            let said = format!("{e}");
            let api = REQUEST_ID.scope("0123456789abcdef".into(), async { ApiError::from(e) }).await;
            for leak in ["/srv", "db.internal", "5432", "/var/tmp", "10.0.0.5", "/run", "policy.wasm"] {
                assert!(!api.message.contains(leak), "{said} -> {}", api.message);
            }
            assert!(api.message.contains("0123456789abcdef"), "the request id: {}", api.message);
        }
        let client = ApiError::from(Error::InvalidInput("the file /home/u/x/y is not at https://a.b/c".into()));
        assert_eq!(client.message, "invalid input: the file <path> is not at <url>");
    }
}
