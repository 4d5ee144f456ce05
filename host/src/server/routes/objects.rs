//! Objects by digest (`/v1/orgs/{org}/objects…`): upload (de-duplicated
//! by a digest header before the body is read), list, read (verified,
//! ranged, conditional, or redirected to a presigned link), describe,
//! delete and link.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::backend::{BackendKind, Disposition};
use crate::coffer::ObjectInfo;
use crate::config::Scope;
use crate::content::{Content, Digest};
use crate::policy::Operation;
use crate::server::app::App;
use crate::server::auth::Caller;
use crate::server::body::{self, Fault, json_body, logged};
use crate::server::error::{ApiError, ApiResult, ErrorBody};

/// How long the link behind `?redirect=true` lives.
const REDIRECT_EXPIRY: Duration = Duration::from_secs(300);

fn digest(s: &str) -> ApiResult<Digest> {
    s.parse::<Digest>().map_err(ApiError::from)
}

fn etag(d: &Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{d}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// `sha-256=:…:` (RFC 9530) for a digest.
fn repr_digest(d: &Digest) -> HeaderValue {
    let b64 = base64::engine::general_purpose::STANDARD.encode(d.as_bytes());
    HeaderValue::from_str(&format!("sha-256=:{b64}:")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The digest a client says its body has: `Repr-Digest: sha-256=:…:`
/// (RFC 9530; other algorithms in the list are ignored) or
/// `x-coffer-sha256: <hex>`. Both, disagreeing, is an error.
pub fn claimed_digest(headers: &HeaderMap) -> ApiResult<Option<Digest>> {
    let mut found: Option<Digest> = None;
    let mut add = |d: Digest| -> ApiResult<()> {
        match found {
            Some(f) if f != d => Err(ApiError::bad_request("Repr-Digest and x-coffer-sha256 name different digests")),
            _ => {
                found = Some(d);
                Ok(())
            }
        }
    };
    for value in headers.get_all("repr-digest") {
        let text = value.to_str().map_err(|_| ApiError::bad_request("Repr-Digest is not text"))?;
        for member in text.split(',') {
            let Some((alg, rest)) = member.trim().split_once('=') else { continue };
            if !alg.trim().eq_ignore_ascii_case("sha-256") {
                continue;
            }
            let b64 = rest.trim().strip_prefix(':').and_then(|r| r.strip_suffix(':')).ok_or_else(|| {
                ApiError::bad_request("Repr-Digest's sha-256 must be a byte sequence, sha-256=:BASE64:")
            })?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| ApiError::bad_request("Repr-Digest's sha-256 is not 32 bytes of base64"))?;
            add(Digest::from_raw(raw))?;
        }
    }
    if let Some(value) = headers.get("x-coffer-sha256") {
        let text = value.to_str().map_err(|_| ApiError::bad_request("x-coffer-sha256 is not text"))?;
        add(text.trim().parse::<Digest>().map_err(ApiError::from)?)?;
    }
    Ok(found)
}

fn record_dedup(how: &str) {
    crate::metrics::global().inc(
        "coffer_dedup_hits_total",
        "Puts answered with content the organisation already had (`digest-header`: without reading the body).",
        &[("how", how)],
        1.0,
    );
}

/// The largest body `org` may send: the server's limit, lowered by the
/// organisation's `max-size` setting when it has one.
fn body_limit(app: &App, org: &str) -> u64 {
    let policy = app.coffer.config().setting(Some(org), "max-size").and_then(|v| v.trim().parse::<u64>().ok());
    policy.map_or(app.limits.max_body, |p| p.min(app.limits.max_body))
}

/// Store the body as an object of `org`. With `Repr-Digest` or
/// `x-coffer-sha256`, content the organisation already has is answered at
/// once (the body is not read); otherwise the body must match it.
#[utoipa::path(put, path = "/v1/orgs/{org}/objects", tag = "objects",
    params(("org" = String, Path, description = "organisation"),
        ("Repr-Digest" = Option<String>, Header, description = "sha-256=:BASE64: of the body (RFC 9530)"),
        ("x-coffer-sha256" = Option<String>, Header, description = "hex SHA-256 of the body")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's bytes; Content-Type is recorded"),
    responses((status = 201, description = "stored", body = ObjectInfo),
        (status = 200, description = "already stored: nothing uploaded", body = ObjectInfo),
        (status = 413, description = "larger than the organisation may store", body = ErrorBody),
        (status = 422, description = "the body does not match the digest given", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_object(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.allow(&org, Scope::Write)?;
    crate::org::validate_org(&org)?;
    let claimed = claimed_digest(&headers)?;
    let limit = body_limit(&app, &org);
    if let Some(d) = claimed {
        match app.coffer.stat(&org, &d.to_string()).await {
            Ok(mut info) => {
                record_dedup("digest-header");
                info.deduplicated = Some(true);
                // A client that asked `Expect: 100-continue` sends nothing
                // until told to: it is answered at once. One that sends
                // the body regardless is let finish (the bytes are
                // discarded, not hashed or stored): answering and closing
                // under it would reset the connection before it reads the
                // answer.
                let waits =
                    headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                if !waits {
                    let (mut rest, _) = body::upload(body, limit, app.limits.idle_timeout, app.limits.pace);
                    while let Some(chunk) = rest.next().await {
                        if chunk.is_err() {
                            break;
                        }
                    }
                }
                // A token that may not read learns only that it is stored.
                if caller.allow(&org, Scope::Read).is_err() {
                    let answer = serde_json::json!({"org": org, "sha256": info.sha256, "deduplicated": true});
                    return Ok((StatusCode::OK, Json(answer)).into_response());
                }
                return Ok((StatusCode::OK, Json(info)).into_response());
            }
            // Not there (or not for this caller to see): the body decides.
            Err(e) if matches!(e.kind(), crate::ErrorKind::NotFound | crate::ErrorKind::Denied) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(v) => Some(v.to_str().map_err(|_| ApiError::bad_request("Content-Type is not text"))?.to_string()),
        None => None,
    };
    let (stream, fault) = body::upload(body, limit, app.limits.idle_timeout, app.limits.pace);
    let content =
        match Content::from_stream(stream, content_type.as_deref(), length.unwrap_or(u64::MAX), app.coffer.spool())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let fault = *fault.lock().unwrap_or_else(|e| e.into_inner());
                return Err(match fault {
                    Some(Fault::TooLarge(limit)) => ApiError::too_large(limit),
                    Some(Fault::Idle(t)) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        format!("the client sent nothing for {} s; nothing was stored", t.as_secs()),
                    ),
                    Some(Fault::TooSlow(rate)) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "timeout",
                        format!("the client sent slower than {rate} bytes/s on average; nothing was stored"),
                    ),
                    Some(Fault::Broken) => ApiError::bad_request("the request body broke off; nothing was stored"),
                    None => e.into(),
                });
            }
        };
    if let Some(d) = claimed
        && d != content.sha256()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest-mismatch",
            format!("the body's SHA-256 is {}, not {d} as the request said; nothing was stored", content.sha256()),
        ));
    }
    // Not under the request timeout: storing a large body takes as long
    // as its upload does, and each S3 request and policy call has its own
    // bound (COFFER_S3_TIMEOUT, COFFER_POLICY_TIMEOUT).
    let info = app.coffer.put(&org, content).await?;
    let status = if info.deduplicated == Some(true) {
        record_dedup("content");
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

/// The same as `PUT`, for clients that post.
#[utoipa::path(post, path = "/v1/orgs/{org}/objects", tag = "objects",
    params(("org" = String, Path, description = "organisation")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ObjectInfo), (status = 200, body = ObjectInfo)),
    security(("bearer" = [])))]
pub async fn post_object(
    state: State<Arc<App>>,
    caller: Extension<Caller>,
    org: Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    put_object(state, caller, org, headers, body).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Start after this digest (the `next` of the previous page).
    after: Option<String>,
    /// At most this many (1 to 1000; default 100).
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The organisation's objects in digest order, a page at a time.
#[utoipa::path(get, path = "/v1/orgs/{org}/objects", tag = "objects",
    params(("org" = String, Path, description = "organisation"), ListQuery),
    responses((status = 200, body = ListPage)), security(("bearer" = [])))]
pub async fn list_objects(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ListPage>> {
    caller.allow(&org, Scope::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let objects = app.coffer.list(&org, q.after.as_deref().filter(|a| !a.is_empty()), limit).await?;
    let next = (objects.len() == limit).then(|| objects.last().map(|o| o.sha256.to_string())).flatten();
    Ok(Json(ListPage { objects, next }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct GetQuery {
    /// Answer 307 to a presigned link (objects on S3; needs the `link` scope).
    redirect: Option<bool>,
}

/// The object's bytes, verified as they stream: a corrupt object ends the
/// response with an error (the connection is cut short), never with wrong
/// bytes completed. `Range` (one range) reads only the range, checked in
/// number only (a SHA-256 covers the whole object: verify a download made
/// of ranges against the ETag); `If-None-Match`, `If-Range`.
#[utoipa::path(method(get, head), path = "/v1/orgs/{org}/objects/{sha256}", tag = "objects",
    params(("org" = String, Path, description = "organisation"), ("sha256" = String, Path, description = "hex SHA-256"), GetQuery,
        ("Range" = Option<String>, Header, description = "bytes=START-END, bytes=START-, bytes=-N")),
    responses((status = 200, description = "the bytes", content_type = "application/octet-stream"),
        (status = 206, description = "the range"), (status = 304, description = "not modified"),
        (status = 307, description = "redirect to a presigned link"),
        (status = 404, body = ErrorBody), (status = 416, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_object(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((org, sha256)): Path<(String, String)>,
    Query(q): Query<GetQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.allow(&org, Scope::Read)?;
    let d = digest(&sha256)?;
    let tag = etag(&d);
    let not_modified = headers.get(header::IF_NONE_MATCH).is_some_and(|h| {
        h.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag))
    });
    if method == Method::HEAD || not_modified || q.redirect == Some(true) {
        // Authorised as the read it stands for, without starting it.
        let info = app.coffer.authorized(&org, &sha256, Operation::Get).await?;
        if not_modified {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
        }
        if q.redirect == Some(true) && info.backend == BackendKind::S3 {
            caller.allow(&org, Scope::Link)?;
            let url = app.coffer.link(&org, &sha256, Some(REDIRECT_EXPIRY), None, Disposition::Attachment).await?;
            let location = HeaderValue::from_str(&url)
                .map_err(|_| ApiError::from(crate::Error::Internal("link is not a header".into())))?;
            return Ok((
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            )
                .into_response());
        }
        if method == Method::HEAD {
            let mut r = Response::new(Body::empty());
            object_headers(r.headers_mut(), &info, &tag);
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
            return Ok(r);
        }
    }
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == tag.as_bytes()));
    // Only the range is read from the store; `pick` learns the size first.
    let mut unsatisfiable = None;
    let pick = |info: &ObjectInfo| match wanted.map(|r| body::parse_range(r, info.size)) {
        None | Some(Ok(None)) => Ok(None),
        Some(Ok(Some(r))) => Ok(Some(r)),
        Some(Err(())) => {
            unsatisfiable = Some(info.size);
            Err(crate::Error::InvalidInput("range not satisfiable".into()))
        }
    };
    let (info, range, stream) = match app.coffer.get_range(&org, &sha256, pick).await {
        Ok(read) => read,
        Err(e) => {
            let Some(size) = unsatisfiable else { return Err(e.into()) };
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the object has {size} bytes"),
            )
            .into_response();
            let value = HeaderValue::from_str(&format!("bytes */{size}"));
            e.headers_mut()
                .insert(header::CONTENT_RANGE, value.unwrap_or_else(|_| HeaderValue::from_static("bytes */0")));
            return Ok(e);
        }
    };
    // An empty body is never polled, so never verified: a record of no
    // bytes must name the digest of no bytes.
    if info.size == 0 && info.sha256 != Digest::of(b"") {
        return Err(
            crate::Error::Integrity(format!("{org}/{sha256} is recorded as empty, which is not its digest")).into()
        );
    }
    let (status, length) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
        None => (StatusCode::OK, info.size),
    };
    let mut r = Response::new(body::streamed(logged(body::paced(stream, app.limits.pace), format!("{org}/{sha256}"))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    object_headers(h, &info, &tag);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some((start, end)) = range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", info.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(r)
}

/// Content types a browser runs script in, or renders as a document that
/// can: HTML, XML (SVG, XHTML, XSLT, any `+xml`), JavaScript, and PDF
/// (whose viewers run script too).
fn is_active(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "text/html"
                | "text/xml"
                | "application/xml"
                | "text/xsl"
                | "text/javascript"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "text/ecmascript"
                | "application/pdf"
        )
}

/// An object's headers. Stored content is the uploader's, served on the
/// API's own origin, so it must never run there: browsers may not guess
/// another type (`nosniff`), a sandbox without scripts applies whatever
/// the type (`Content-Security-Policy: sandbox`, which also gives the
/// document an opaque origin, so it could not read the API even if it ran),
/// and active types are downloads, not pages (`Content-Disposition:
/// attachment`).
fn object_headers(h: &mut HeaderMap, info: &ObjectInfo, tag: &HeaderValue) {
    h.insert(header::ETAG, tag.clone());
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    if is_active(&info.content_type) {
        h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("repr-digest", repr_digest(&info.sha256));
    if let Ok(ct) = HeaderValue::from_str(&info.content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
}

/// The object's record.
#[utoipa::path(get, path = "/v1/orgs/{org}/objects/{sha256}/meta", tag = "objects",
    params(("org" = String, Path, description = "organisation"), ("sha256" = String, Path, description = "hex SHA-256")),
    responses((status = 200, body = ObjectInfo), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn meta(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((org, sha256)): Path<(String, String)>,
) -> ApiResult<Json<ObjectInfo>> {
    caller.allow(&org, Scope::Read)?;
    Ok(Json(app.coffer.stat(&org, &sha256).await?))
}

/// Delete the organisation's object (where policy allows); answers the
/// record it had.
#[utoipa::path(delete, path = "/v1/orgs/{org}/objects/{sha256}", tag = "objects",
    params(("org" = String, Path, description = "organisation"), ("sha256" = String, Path, description = "hex SHA-256")),
    responses((status = 200, body = ObjectInfo), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete_object(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((org, sha256)): Path<(String, String)>,
) -> ApiResult<Json<ObjectInfo>> {
    caller.allow(&org, Scope::Delete)?;
    Ok(Json(app.coffer.delete(&org, &sha256).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// Seconds the link stays valid, 1 to 604800 (default 3600).
    expires_in: Option<u64>,
    /// The name the browser saves the download as.
    filename: Option<String>,
    /// Let the browser show the file instead of saving it.
    #[serde(default)]
    inline: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkAnswer {
    pub url: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A presigned, expiring download link built from the configured S3
/// endpoint (objects on S3 only).
#[utoipa::path(post, path = "/v1/orgs/{org}/objects/{sha256}/link", tag = "objects",
    params(("org" = String, Path, description = "organisation"), ("sha256" = String, Path, description = "hex SHA-256")),
    request_body(content = LinkRequest, description = "optional"),
    responses((status = 200, body = LinkAnswer), (status = 400, description = "the object is in the database", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn link(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path((org, sha256)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<LinkAnswer>> {
    caller.allow(&org, Scope::Link)?;
    let req: LinkRequest = json_body(body).await?;
    let expires = req.expires_in.unwrap_or(3600);
    if !(1..=604_800).contains(&expires) {
        return Err(ApiError::bad_request("expires_in must be 1 to 604800 seconds"));
    }
    let disposition = if req.inline { Disposition::Inline } else { Disposition::Attachment };
    let url = app
        .coffer
        .link(&org, &sha256, Some(Duration::from_secs(expires)), req.filename.as_deref(), disposition)
        .await?;
    Ok(Json(LinkAnswer { url, expires_at: crate::clock::now_secs() + expires }))
}

#[cfg(test)]
mod tests {
    use super::is_active;

    #[test]
    fn script_bearing_types_are_active_whatever_their_spelling() {
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            " text/html ",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/xml",
            "text/xml",
            "application/javascript",
            "text/javascript;charset=x",
            "application/pdf",
            "application/rss+xml",
        ] {
            assert!(is_active(t), "{t}");
        }
        for t in ["text/plain", "image/png", "application/octet-stream", "application/json", "text/csv"] {
            assert!(!is_active(t), "{t}");
        }
    }
}
