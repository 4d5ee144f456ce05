//! Batch reads (`/v1/orgs/{org}/batch-read`): many objects in one tar
//! stream, with a manifest first.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::coffer::ObjectInfo;
use crate::config::Scope;
use crate::policy::Operation;
use crate::server::app::App;
use crate::server::auth::Caller;
use crate::server::body::{self, json_body, logged};
use crate::server::error::{ApiError, ApiResult};

/// Digests a batch read may ask for at once.
pub const MAX_BATCH: usize = 1000;

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
    crate::org::validate_org(&org)?;
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
        let now = crate::clock::now_secs();
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
    let stream = logged(body::paced(Box::pin(stream), app.limits.pace), format!("{org_name}: a batch read"));
    let mut r = Response::new(body::streamed(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(r)
}
