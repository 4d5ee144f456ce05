//! The service's errors: every failure answers JSON `{"error": kind,
//! "message": …}` with the status that fits, and [`crate::Error`] is
//! mapped to a status in one place ([`ApiError::from`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
    /// `overloaded`, `timeout`, `integrity`, `policy`, `config`, `internal`.
    pub error: String,
    /// For a person.
    pub message: String,
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
        let message = e.to_string();
        match e.kind() {
            ErrorKind::InvalidInput => ApiError::new(StatusCode::BAD_REQUEST, "invalid-input", message),
            ErrorKind::Denied => ApiError::new(StatusCode::FORBIDDEN, "denied", message),
            ErrorKind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not-found", message),
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            // Stored bytes that do not match their digest: the store's fault.
            ErrorKind::Integrity => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "integrity", message),
            ErrorKind::Unavailable => ApiError::unavailable("unavailable", message, 5),
            ErrorKind::Policy => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "policy", message),
            ErrorKind::Config => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "config", message),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.kind.to_string(), message: self.message };
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
}
