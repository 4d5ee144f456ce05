//! The handlers, each annotated for the OpenAPI document: the router and
//! the document are built from the same list ([`super::router`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::App;
use super::auth::Caller;
use super::body::{self, Fault};
use super::error::{ApiError, ErrorBody};
use crate::backend::{BackendKind, Disposition};
use crate::config::Scope;
use crate::policy::Operation;
use crate::{Content, Digest, ObjectInfo};

/// Digests a batch read may ask for at once.
pub const MAX_BATCH: usize = 1000;
/// Largest policy component an admin may upload.
pub const MAX_COMPONENT: usize = 128 << 20;
/// Largest JSON request body.
const MAX_JSON: usize = 1 << 20;
/// How long the link behind `?redirect=true` lives.
const REDIRECT_EXPIRY: Duration = Duration::from_secs(300);

type ApiResult<T> = Result<T, ApiError>;

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
    crate::coffer::validate_org(&org)?;
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
    let content = match Content::from_stream(
        stream,
        content_type.as_deref(),
        length.unwrap_or(u64::MAX),
        app.limits.spool_dir.clone(),
    )
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

pub fn timed_out(after: Duration) -> ApiError {
    ApiError::unavailable("timeout", format!("no answer within {} s; try again", after.as_secs()), 1)
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
/// bytes completed. `Range` (one range), `If-None-Match`, `If-Range`.
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
    let (info, stream) = app.coffer.get(&org, &sha256).await?;
    // An empty body is never polled, so never verified: a record of no
    // bytes must name the digest of no bytes.
    if info.size == 0 && info.sha256 != Digest::of(b"") {
        return Err(
            crate::Error::Integrity(format!("{org}/{sha256} is recorded as empty, which is not its digest")).into()
        );
    }
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == tag.as_bytes()));
    let range = match wanted.map(|r| body::parse_range(r, info.size)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(())) => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the object has {} bytes", info.size),
            )
            .into_response();
            e.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", info.size))
                    .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
            );
            return Ok(e);
        }
    };
    let (status, length, stream) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1, body::range(stream, start, end)),
        None => (StatusCode::OK, info.size, stream),
    };
    let mut r = Response::new(body::streamed(logged(paced(&app, stream), format!("{org}/{sha256}"))));
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

/// A response stream at the server's minimum rate (if it has one).
fn paced(app: &App, stream: crate::content::ByteStream) -> crate::content::ByteStream {
    if app.limits.pace.min_rate == 0 { stream } else { body::paced(stream, app.limits.pace) }
}

/// A response stream whose failure (a corrupt object, a backend gone, a
/// client too slow) is logged: the client only sees its response cut off.
fn logged(stream: crate::content::ByteStream, what: String) -> crate::content::ByteStream {
    Box::pin(stream.inspect(move |item| {
        if let Err(e) = item {
            tracing::error!(object = %what, "a read broke off: {e}");
        }
    }))
}

fn object_headers(h: &mut HeaderMap, info: &ObjectInfo, tag: &HeaderValue) {
    h.insert(header::ETAG, tag.clone());
    // The uploader chose the content type: browsers must not guess another.
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
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

async fn json_body<T: serde::de::DeserializeOwned + Default>(body: Body) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("a JSON body is at most {MAX_JSON} bytes"))
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the JSON body: {e}")))
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
    Ok(Json(LinkAnswer { url, expires_at: crate::now_secs() + expires }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Hex SHA-256 digests, at most 1000.
    sha256: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchManifest {
    /// The objects that follow, in this order, each as an entry named by its digest.
    pub objects: Vec<ObjectInfo>,
    /// What could not be read, and why (`not-found`, `denied`, `invalid-input`, …).
    pub errors: Vec<BatchError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchError {
    pub sha256: String,
    pub error: String,
    pub message: String,
}

/// Many objects in one answer: a tar stream (`application/x-tar`) whose
/// first entry, `manifest.json`, lists the objects that follow (each an
/// entry named by its digest, verified as it streams) and the digests
/// that could not be read. An object that turns out unreadable while
/// streaming cuts the response short: the archive is then incomplete,
/// never wrong.
#[utoipa::path(post, path = "/v1/orgs/{org}/batch-read", tag = "objects",
    params(("org" = String, Path, description = "organisation")),
    request_body = BatchRequest,
    responses((status = 200, description = "tar stream: manifest.json, then one entry per object", content_type = "application/x-tar")),
    security(("bearer" = [])))]
pub async fn batch_read(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.allow(&org, Scope::Read)?;
    crate::coffer::validate_org(&org)?;
    let req: BatchRequest = json_body(body).await?;
    if req.sha256.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!("a batch asks for at most {MAX_BATCH} digests")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut manifest = BatchManifest { objects: Vec::new(), errors: Vec::new() };
    for sha in req.sha256 {
        if !seen.insert(sha.clone()) {
            continue;
        }
        match app.coffer.authorized(&org, &sha, Operation::Get).await {
            Ok(info) => manifest.objects.push(info),
            Err(e) if e.kind() == crate::ErrorKind::Unavailable => return Err(e.into()),
            Err(e) => {
                let api = ApiError::from(e);
                manifest.errors.push(BatchError { sha256: sha, error: api.kind.to_string(), message: api.message });
            }
        }
    }
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ApiError::from(crate::Error::Internal(e.to_string())))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<crate::Result<Bytes>>(4);
    let coffer = app.coffer.clone();
    let org_name = org.clone();
    tokio::spawn(async move {
        let now = crate::now_secs();
        let send = |item| tx.send(item);
        let head = async {
            send(body::tar_header("manifest.json", manifest_json.len() as u64, now)).await.ok()?;
            let n = manifest_json.len() as u64;
            send(Ok(Bytes::from(manifest_json))).await.ok()?;
            send(Ok(body::tar_padding(n))).await.ok()
        };
        if head.await.is_none() {
            return;
        }
        for info in manifest.objects {
            let name = info.sha256.to_string();
            if send(body::tar_header(&name, info.size, info.created_at)).await.is_err() {
                return;
            }
            match coffer.get(&org, &name).await {
                Ok((now_info, mut stream)) if now_info.size == info.size => {
                    while let Some(chunk) = stream.next().await {
                        let failed = chunk.is_err();
                        if send(chunk).await.is_err() || failed {
                            return;
                        }
                    }
                }
                Ok(_) => {
                    let _ = send(Err(crate::Error::Conflict(format!("{name} changed while the batch was read")))).await;
                    return;
                }
                Err(e) => {
                    let _ = send(Err(e)).await;
                    return;
                }
            }
            if send(Ok(body::tar_padding(info.size))).await.is_err() {
                return;
            }
        }
        let _ = send(Ok(Bytes::from(vec![0u8; 1024]))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let stream = logged(paced(&app, Box::pin(stream)), format!("{org_name}: a batch read"));
    let mut r = Response::new(body::streamed(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(r)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyAnswer {
    /// `default`, or the organisation.
    pub replaced: String,
    /// SHA-256 of the component now in force.
    pub sha256: String,
}

/// Swap in a policy component for an organisation, or (`default`) for
/// every organisation without its own. Calls in flight finish on the old
/// one; a component that does not load is refused (422) and the old one
/// stays. Admin token only. (An organisation named `default` gets its
/// policy from the configuration file.)
#[utoipa::path(put, path = "/v1/admin/policies/{target}", tag = "admin",
    params(("target" = String, Path, description = "an organisation, or `default`")),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "the component"),
    responses((status = 200, body = PolicyAnswer), (status = 422, description = "refused; the old policy stays", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_policy(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(target): Path<String>,
    body: Body,
) -> ApiResult<Json<PolicyAnswer>> {
    caller.allow_admin(app.tokens.admin_configured())?;
    let bytes = axum::body::to_bytes(body, MAX_COMPONENT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("a component is at most {MAX_COMPONENT} bytes"),
        )
    })?;
    let sha256 = Digest::of(&bytes).to_string();
    let org = (target != "default").then_some(target.as_str());
    let name = format!("uploaded component {}", &sha256[..12]);
    match app.coffer.replace_policy(org, bytes.to_vec(), &name).await {
        Ok(()) => {
            tracing::info!(target = %target, sha256, "policy replaced");
            Ok(Json(PolicyAnswer { replaced: target, sha256 }))
        }
        Err(e)
            if matches!(
                e.kind(),
                crate::ErrorKind::Policy | crate::ErrorKind::Config | crate::ErrorKind::InvalidInput
            ) =>
        {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy", format!("{e}; the old policy stays")))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok` or `unavailable` (the reason is logged, not shown).
    pub database: &'static str,
    /// `ok`, `unavailable`, or absent when S3 is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<&'static str>,
    /// Shutting down: finishing what is in flight, taking nothing new.
    pub draining: bool,
}

/// How long a readiness answer is reused: probes from many checkers cost
/// one database query and one S3 request per period.
const READINESS_TTL: Duration = Duration::from_secs(2);

/// The database and S3 answer (within 5 s), and the server is not
/// shutting down. Found at most every 2 s; why a part is unavailable is
/// logged, not told to whoever asks.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut cached = app.readiness.lock().await;
    let fresh = cached.as_ref().filter(|(at, _)| at.elapsed() < READINESS_TTL).map(|(_, r)| r.clone());
    let mut readiness = match fresh {
        Some(r) => r,
        None => {
            let mut r = Readiness { ready: true, database: "unavailable", s3: None, draining: false };
            match tokio::time::timeout(Duration::from_secs(5), app.coffer.ready()).await {
                Ok(parts) => {
                    for (backend, result) in parts {
                        let state = match result {
                            Ok(()) => "ok",
                            Err(e) => {
                                tracing::warn!(%backend, "not ready: {e}");
                                r.ready = false;
                                "unavailable"
                            }
                        };
                        match backend {
                            BackendKind::S3 => r.s3 = Some(state),
                            BackendKind::Database => r.database = state,
                        }
                    }
                }
                Err(_) => {
                    tracing::warn!("not ready: the readiness checks took longer than 5 s");
                    r.ready = false;
                }
            }
            *cached = Some((std::time::Instant::now(), r.clone()));
            r
        }
    };
    drop(cached);
    readiness.draining = app.draining();
    readiness.ready &= !readiness.draining;
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

/// Prometheus text: requests by route and status, latency, bytes in and
/// out, de-duplication hits, policy call time.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    let text = crate::metrics::global().render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
        .into_response()
}

/// The OpenAPI 3.1 document of this API (generated from the handlers).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")))]
pub async fn openapi_json(Extension(doc): Extension<Arc<serde_json::Value>>) -> Json<serde_json::Value> {
    Json((*doc).clone())
}
