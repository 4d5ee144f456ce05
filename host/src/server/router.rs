//! The router and the OpenAPI document that describes it, built from one
//! list of handlers, with the middleware around them.

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::app::App;
use super::error::{self, ApiError};
use super::middleware::{admit, authenticate, json_errors, observe, timeout};
use super::routes::{admin, batch, health, objects};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coffer",
        description = "Organisations' files in S3 or a database, placed by a sandboxed policy. \
                       Bytes are raw request and response bodies; metadata is JSON; every error is \
                       JSON {error, message}.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerScheme),
    components(schemas(error::ErrorBody)),
    tags((name = "objects", description = "An organisation's objects"),
        (name = "admin", description = "Policy swaps (admin token)"),
        (name = "operations", description = "Health, readiness, metrics"))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an organisation's token, or the admin token"))
                    .build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document that describes them, from one list.
pub fn router(app: Arc<App>) -> Router {
    let (v1, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(objects::put_object, objects::post_object, objects::list_objects))
        .routes(routes!(objects::get_object, objects::delete_object))
        .routes(routes!(objects::meta))
        .routes(routes!(objects::link))
        .routes(routes!(batch::batch_read))
        .routes(routes!(admin::put_policy))
        .split_for_parts();
    let (ops, ops_api) = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_json))
        .split_for_parts();
    let mut api = api;
    api.merge(ops_api);
    let doc = Arc::new(serde_json::to_value(&api).unwrap_or_default());
    let v1 = v1
        .route_layer(middleware::from_fn_with_state(app.clone(), timeout))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(app.clone(), admit));
    v1.merge(ops)
        .layer(axum::Extension(doc))
        .fallback(|| async { ApiError::not_found("no such route (the API is under /v1; see /openapi.json)") })
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe))
        .with_state(app)
}
