//! `coffer serve`: Coffer as an HTTP service, for platforms written in
//! Python, Perl or anything else.
//!
//! - [`routes`]: the handlers, one file per resource (objects by digest,
//!   batch reads, policy swaps, health), annotated for the OpenAPI
//!   document served at `/openapi.json`; `router.rs` builds the router
//!   and the document from one list.
//! - `middleware.rs`: admission (in-flight limits), authentication, the
//!   request timeout, JSON errors, metrics and the access log.
//! - `app.rs`: what every handler shares; `readiness.rs`: `/readyz`'s
//!   cached probe; `serve.rs`: [`Server`], binding and graceful shutdown.
//! - [`auth`]: bearer tokens per organisation, with scopes.
//! - [`body`]: upload bodies (bounded while streaming, idle timeout), JSON
//!   request bodies, ranges of verified reads, the minimum rate of
//!   responses, failed reads logged, the tar stream of batch reads.
//! - [`error`]: every error as JSON, mapped from [`crate::Error`] in one place.
//!
//! [`Server::bind`] then [`Server::run`] with a shutdown future: the
//! binary passes SIGTERM/SIGINT, tests a channel. On shutdown the server
//! stops accepting, lets requests in flight finish (within the grace
//! period), and waits for clean-up of anything cancelled.

mod app;
pub mod auth;
pub mod body;
pub mod error;
mod middleware;
mod readiness;
mod router;
pub mod routes;
mod serve;

pub use self::app::{App, Limits};
pub use self::readiness::Readiness;
pub use self::router::router;
pub use self::serve::Server;
