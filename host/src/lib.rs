//! Coffer stores organisations' files in S3-compatible buckets or, when no
//! S3 is configured, in a database, with the rules that decide *where* in
//! a sandboxed WebAssembly policy component.
//!
//! # Layout
//! - [`config`]: settings from the environment and a TOML file, checked at start-up.
//! - [`content`]: SHA-256 digests, content hashed (and spooled) before it is stored,
//!   verification of bytes read back.
//! - [`backend`]: the [`BlobStore`](backend::BlobStore) trait and one store per file
//!   (`sqlite/`, `postgres/`, `s3/`); routing of a location to its store.
//! - [`catalog`]: who owns which content, where its bytes live, and the
//!   lifecycle of locations (reserve, commit, tombstone) that keeps records
//!   and bytes together under any interleaving.
//! - [`gc`]: `coffer gc`, which reclaims what crashes and failures left.
//! - [`migrate`], [`verify`], [`import`]: `coffer migrate` (moving objects to where
//!   new ones go), `coffer verify` (records against their bytes), `coffer import`
//!   (adopting Request Tracker and OpenKAT stores).
//! - [`cleanup`]: clean-up that outlives a cancelled operation.
//! - [`policy`]: the wasmtime host for policy components (`wit/storage.wit`).
//! - [`coffer`]: [`Coffer`], the operations callers use: put, get, stat, list, delete.
//! - [`named`]: named objects in an organisation's containers, on top of content addressing.
//! - [`blobstore`]: the `wasi:blobstore` host an embedding platform adds to its wasmtime linker.
//! - [`server`]: `coffer serve`, the HTTP service (feature `server`, on by default).
//! - [`metrics`]: counters and histograms for the service's `/metrics`.
//! - [`cli`]: the `coffer` command line (the binary only parses and calls [`cli::run`]).
//! - [`retry`]: bounded, jittered retries of what may clear up.
//! - [`error`]: [`Error`], classified in one place.
//!
//! # Examples
//! ```no_run
//! # async fn demo() -> coffer::Result<()> {
//! use coffer::{Coffer, Config, Content};
//!
//! let coffer = Coffer::open(Config::from_env()?).await?;
//! let receipt = coffer.put("acme", Content::from_bytes("hello", Some("text/plain"))?).await?;
//! assert_eq!(coffer.get_bytes("acme", &receipt.sha256).await?, "hello");
//! # Ok(()) }
//! ```

pub mod backend;
pub mod blobstore;
pub mod catalog;
pub mod cleanup;
pub mod cli;
pub mod coffer;
pub mod config;
pub mod content;
pub mod error;
pub mod gc;
pub mod import;
pub mod metrics;
pub mod migrate;
pub mod named;
pub mod policy;
pub mod retry;
#[cfg(feature = "server")]
pub mod server;
pub mod verify;

pub use crate::coffer::{Coffer, ObjectInfo};
pub use crate::config::Config;
pub use crate::content::{Content, Digest};
pub use crate::error::{Error, ErrorKind, Result};

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
