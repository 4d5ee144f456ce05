//! Administration (`/v1/admin/…`, admin token only): policy swaps.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::content::Digest;
use crate::server::app::App;
use crate::server::auth::Caller;
use crate::server::error::{ApiError, ApiResult, ErrorBody};

/// Largest policy component an admin may upload.
pub const MAX_COMPONENT: usize = 128 << 20;

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
