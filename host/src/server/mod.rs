//! `coffer serve`: Coffer as an HTTP service, for platforms written in
//! Python, Perl or anything else.
//!
//! - [`routes`]: the handlers (`/v1/orgs/{org}/objects…`, batch reads,
//!   policy swaps, health, readiness, metrics), annotated for the OpenAPI
//!   document served at `/openapi.json`.
//! - [`auth`]: bearer tokens per organisation, with scopes.
//! - [`body`]: upload bodies (bounded while streaming, idle timeout),
//!   ranges of verified reads, the tar stream of batch reads.
//! - [`error`]: every error as JSON, mapped from [`crate::Error`] in one place.
//!
//! [`Server::bind`] then [`Server::run`] with a shutdown future: the
//! binary passes SIGTERM/SIGINT, tests a channel. On shutdown the server
//! stops accepting, lets requests in flight finish (within the grace
//! period), and waits for clean-up of anything cancelled.

pub mod auth;
pub mod body;
pub mod error;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::{Caller, Tokens};
use self::error::ApiError;
use crate::config::DEFAULT_LISTEN;
use crate::{Coffer, Error, Result};

/// Limits the server applies, from [`crate::config::ServerSettings`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body: u64,
    pub max_in_flight: usize,
    pub max_in_flight_per_org: usize,
    /// The minimum rate of bodies in and out.
    pub pace: body::Pace,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub spool_dir: Option<std::path::PathBuf>,
}

impl Limits {
    fn from_settings(s: &crate::config::ServerSettings) -> Limits {
        let max_in_flight = s.max_in_flight.unwrap_or(256);
        let idle_timeout = Duration::from_secs(s.idle_timeout.unwrap_or(30));
        Limits {
            max_body: s.max_body.unwrap_or(5 << 40),
            max_in_flight_per_org: s.max_in_flight_per_org.unwrap_or(max_in_flight.div_ceil(4)).max(1),
            pace: body::Pace { min_rate: s.min_rate.unwrap_or(1024), grace: idle_timeout },
            max_in_flight,
            request_timeout: Duration::from_secs(s.request_timeout.unwrap_or(60)),
            idle_timeout,
            shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(30)),
            spool_dir: s.spool_dir.clone(),
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    pub coffer: Coffer,
    pub tokens: Tokens,
    pub limits: Limits,
    in_flight: Arc<Semaphore>,
    /// Requests in flight by organisation (entries leave at zero).
    per_org: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The last readiness answer, and when it was found.
    pub(crate) readiness: tokio::sync::Mutex<Option<(Instant, routes::Readiness)>>,
    draining: AtomicBool,
}

/// One request's place in its organisation's share of the in-flight
/// limit; given back when dropped (with the response body).
struct OrgSlot {
    app: Arc<App>,
    org: String,
}

impl OrgSlot {
    fn take(app: &Arc<App>, org: &str) -> Option<OrgSlot> {
        let mut counts = app.per_org.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(org.to_string()).or_insert(0);
        if *n >= app.limits.max_in_flight_per_org {
            return None;
        }
        *n += 1;
        Some(OrgSlot { app: app.clone(), org: org.to_string() })
    }
}

impl Drop for OrgSlot {
    fn drop(&mut self) {
        let mut counts = self.app.per_org.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.org);
            }
        }
    }
}

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

impl App {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

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
        .routes(routes!(routes::put_object, routes::post_object, routes::list_objects))
        .routes(routes!(routes::get_object, routes::delete_object))
        .routes(routes!(routes::meta))
        .routes(routes!(routes::link))
        .routes(routes!(routes::batch_read))
        .routes(routes!(routes::put_policy))
        .split_for_parts();
    let (ops, ops_api) = OpenApiRouter::new()
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::metrics))
        .routes(routes!(routes::openapi_json))
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

/// At most `max_in_flight` requests at once, and `max_in_flight_per_org`
/// for one organisation; more get 503 with Retry-After. A place is held
/// until the response body is done, so a download counts until it ends.
async fn admit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
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
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
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
async fn timeout(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
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
        Err(_) => routes::timed_out(limit).into_response(),
    }
}

/// Errors that did not come from a handler (axum's rejections, a wrong
/// method) are JSON too.
async fn json_errors(req: Request, next: Next) -> Response {
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

/// Metrics and the access log for every request. Tokens are never logged:
/// only the name the configuration gives them.
async fn observe(req: Request, next: Next) -> Response {
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
    let response = next.run(req).await;
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
        "request"
    );
    response.map(|b| {
        body::counted(b, (), |n| {
            crate::metrics::global().inc("coffer_http_sent_bytes_total", "Response body bytes sent.", &[], n as f64)
        })
    })
}

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
}

impl Server {
    /// Check the settings and bind: to `listen`, or the configured
    /// address, or `127.0.0.1:8080`. Without any token configured, only
    /// a loopback address is accepted.
    pub async fn bind(coffer: Coffer, listen: Option<&str>) -> Result<Server> {
        let settings = coffer.config().server.clone();
        settings.validate()?;
        let listen = listen.or(settings.listen.as_deref()).unwrap_or(DEFAULT_LISTEN).to_string();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&listen)
            .await
            .map_err(|e| Error::Config(format!("cannot use listen address {listen:?}: {e}")))?
            .collect();
        let tokens = Tokens::new(&settings);
        if !tokens.any() && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(Error::Config(format!(
                "no tokens are configured, so the server would let anyone read and write: it listens only on a \
                 loopback address (127.0.0.1, ::1) until tokens are set ([[server.tokens]] in the config file), \
                 not on {listen}"
            )));
        }
        let listener = TcpListener::bind(&addrs[..])
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))?;
        let limits = Limits::from_settings(&settings);
        let app = Arc::new(App {
            coffer,
            tokens,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            per_org: Default::default(),
            readiness: Default::default(),
            limits,
            draining: AtomicBool::new(false),
        });
        Ok(Server { listener, app })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::io("the listening socket", e))
    }

    /// Serve until `shutdown` completes; then stop accepting, let requests
    /// in flight finish (for up to the grace period), and wait for
    /// clean-up. Policy files are watched and swapped in as they change.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Server { listener, app } = self;
        let watcher = app.coffer.watch_policies(Duration::from_secs(2));
        let router = router(app.clone());
        // HTTP/1.1 only: h2c would bring streams that flow control can
        // stall without a write ever blocking, out of the timeouts' reach
        // (put a proxy in front for HTTP/2).
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        builder.http1().timer(TokioTimer::new()).header_read_timeout(app.limits.idle_timeout);
        let builder = Arc::new(builder);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut connections = tokio::task::JoinSet::new();
        tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), tokens = app.tokens.any(), "serving");
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: wait a moment rather than spin.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Finished connections leave the set as new ones come.
            while connections.try_join_next().is_some() {}
            let _ = stream.set_nodelay(true);
            // Clients that stop reading a response are dropped after the
            // idle timeout (a write that cannot proceed).
            let mut io = tokio_io_timeout::TimeoutStream::new(stream);
            io.set_write_timeout(Some(app.limits.idle_timeout));
            let io = TokioIo::new(Box::pin(io));
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let builder = builder.clone();
            let watch = graceful.watcher();
            connections.spawn(async move {
                let connection = builder.serve_connection_with_upgrades(io, service);
                if let Err(e) = watch.watch(connection.into_owned()).await {
                    tracing::debug!(%peer, "connection: {e}");
                }
            });
        }
        app.draining.store(true, Ordering::Relaxed);
        drop(listener);
        tracing::info!("shutting down: finishing requests in flight");
        let grace = app.limits.shutdown_grace;
        let finished = tokio::time::timeout(grace, graceful.shutdown()).await.is_ok();
        if !finished {
            // Cancel what is left: dropped handlers queue their clean-up
            // (reservations released, uploads aborted), awaited below.
            tracing::warn!("requests still in flight after {} s are cancelled", grace.as_secs());
            connections.abort_all();
        }
        while connections.join_next().await.is_some() {}
        watcher.abort();
        let cleaned = app.coffer.quiesce(Duration::from_secs(30)).await;
        if !cleaned {
            tracing::warn!("clean-up of cancelled requests did not finish; run coffer gc");
        }
        Ok(())
    }
}
