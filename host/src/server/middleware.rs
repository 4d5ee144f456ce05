//! What every request passes through, outermost last: metrics and the
//! access log, JSON errors, then (for `/v1`) admission against the
//! in-flight limits, authentication, and the request timeout.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::app::{App, OrgSlot};
use super::auth::Caller;
use super::body;
use super::error::{self, ApiError};

/// The organisation a `/v1/orgs/{org}/…` path names, percent-decoded (so
/// every spelling of one organisation counts as one).
fn org_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/orgs/")?;
    let raw = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

/// A method as a metrics label: the known ones, or `OTHER` (a client may
/// send any token as a method; labels must stay few).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// At most `max_in_flight` requests at once, and `max_in_flight_per_org`
/// for one organisation; more get 503 with Retry-After. A place is held
/// until the response body is done, so a download counts until it ends.
pub(super) async fn admit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let refuse = |message: String| {
        crate::metrics::global().inc(
            "coffer_http_rejected_total",
            "Requests refused because too many were in flight.",
            &[],
            1.0,
        );
        ApiError::unavailable("overloaded", message, 1).into_response()
    };
    let Ok(permit) = app.in_flight.clone().try_acquire_owned() else {
        return refuse(format!("more than {} requests in flight; try again shortly", app.limits.max_in_flight));
    };
    let slot = match org_of(req.uri().path()) {
        Some(org) => match OrgSlot::take(&app, &org) {
            Some(slot) => Some(slot),
            None => {
                return refuse(format!(
                    "this organisation has {} requests in flight already; try again shortly",
                    app.limits.max_in_flight_per_org
                ));
            }
        },
        None => None,
    };
    let response = next.run(req).await;
    response.map(|b| body::counted(b, (permit, slot), |_| {}))
}

/// Whether a `Host` header names this machine's loopback (any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolve the bearer token into a [`Caller`] for the handlers. Without
/// tokens (loopback only), a request from a web page is refused: it names
/// an `Origin`, or (DNS rebinding) a host that is not loopback.
pub(super) async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    if !app.tokens.any() {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        if req.headers().contains_key(header::ORIGIN) || !loopback_host(host) {
            return ApiError::forbidden(
                "without tokens configured, only local programs may call (no Origin header, a loopback Host)",
            )
            .into_response();
        }
    }
    match app.tokens.caller(req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller.clone());
            let mut response = next.run(req).await;
            response.extensions_mut().insert(caller);
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Answer within the request timeout. Uploads are not: a large body
/// takes as long as it takes to arrive (bounded by the idle timeout
/// between chunks) and to be stored (bounded by each S3 request's and
/// policy call's own limits).
pub(super) async fn timeout(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let uploads = matches!(*req.method(), axum::http::Method::PUT | axum::http::Method::POST)
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| p.as_str().ends_with("/objects") || p.as_str().starts_with("/v1/admin/"));
    if uploads {
        return next.run(req).await;
    }
    let limit = app.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::timed_out(limit).into_response(),
    }
}

/// Errors that did not come from a handler (axum's rejections, a wrong
/// method) are JSON too.
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || status == StatusCode::RANGE_NOT_SATISFIABLE
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_string();
    }
    let mut fixed = ApiError::new(status, error::kind_for_status(status), message).into_response();
    *fixed.extensions_mut() = parts.extensions;
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            fixed.headers_mut().insert(name, v.clone());
        }
    }
    fixed
}

/// Metrics, the request's id and the access log for every request. Tokens
/// are never logged: only the name the configuration gives them.
pub(super) async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let path = req.uri().path().to_string();
    let registry = crate::metrics::global();
    /// Counts a request in `coffer_http_in_flight` until dropped (also
    /// when its client goes away, and the handler with it).
    struct InFlight;
    impl Drop for InFlight {
        fn drop(&mut self) {
            crate::metrics::global().add("coffer_http_in_flight", "Requests being handled.", &[], -1.0);
        }
    }
    registry.add("coffer_http_in_flight", "Requests being handled.", &[], 1.0);
    let in_flight = InFlight;
    let req = req.map(|b| {
        body::counted(b, (), |n| {
            crate::metrics::global().inc(
                "coffer_http_received_bytes_total",
                "Request body bytes received.",
                &[],
                n as f64,
            )
        })
    });
    // Every request gets an id: in the response's `X-Request-Id`, in error
    // bodies, and in the log lines of its failures and of its access.
    let request_id = error::new_request_id();
    let mut response = error::REQUEST_ID.scope(request_id.clone(), next.run(req)).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    // Every answer has the type it says (JSON, a tar, an object's own).
    response.headers_mut().insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
    drop(in_flight);
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    registry.inc(
        "coffer_http_requests_total",
        "Requests answered, by route, method and status.",
        &[("route", &route), ("method", method), ("status", &status)],
        1.0,
    );
    registry.observe(
        "coffer_http_request_duration_seconds",
        "Time to the response head, by route and method (a streamed body continues after).",
        &[("route", &route), ("method", method)],
        elapsed.as_secs_f64(),
    );
    let caller = response.extensions().get::<Caller>().map_or("-", Caller::name).to_string();
    tracing::info!(
        target: "coffer::access",
        method,
        path,
        route,
        status = response.status().as_u16(),
        ms = elapsed.as_secs_f64() * 1000.0,
        token = caller,
        request_id = &*request_id,
        "request"
    );
    response.map(|b| {
        body::counted(b, (), |n| {
            crate::metrics::global().inc("coffer_http_sent_bytes_total", "Response body bytes sent.", &[], n as f64)
        })
    })
}
