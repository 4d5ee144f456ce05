//! Coffer stores organisations' files in S3-compatible buckets or, when no
//! S3 is configured, in a database, with the rules that decide *where* in
//! a sandboxed WebAssembly policy component.
//!
//! # Layout
//! Layers from the bottom up; a module uses only its own layer and those
//! below (`host/layers.toml`, checked by the test suite), and no two files
//! import each other.
//! - Foundation: [`error`] ([`Error`], classified in one place), `clock`,
//!   [`org`] (organisation identifiers), [`retry`] (bounded, jittered
//!   retries), [`cleanup`] (clean-up that outlives a cancelled operation),
//!   [`metrics`] (counters and histograms for `/metrics`).
//! - [`content`]: SHA-256 digests, content hashed (and spooled) before it is
//!   stored, verification of bytes read back.
//! - [`config`]: settings from the environment and a TOML file, checked at
//!   start-up.
//! - [`backend`]: the [`BlobStore`](backend::BlobStore) trait, routing of a
//!   location to its store, and S3 (`s3/`).
//! - [`catalog`]: who owns which content, where its bytes live, and the
//!   lifecycle of locations (reserve, commit, tombstone) that keeps records
//!   and bytes together under any interleaving; one trait per concern.
//! - [`db`]: SQLite and PostgreSQL, each the catalog and a blob store, file
//!   for file.
//! - [`policy`]: the wasmtime host for policy components (`wit/storage.wit`).
//! - [`coffer`]: [`Coffer`], the operations callers use: put, get, stat, list,
//!   delete, link.
//! - Operations on the API, each an `impl Coffer` of its own: [`gc`] (`coffer
//!   gc`, which reclaims what crashes and failures left), [`migrate`] (moving
//!   objects to where new ones go), [`verify`] (records against their bytes),
//!   [`import`] (adopting Request Tracker and OpenKAT stores), [`named`]
//!   (named objects in an organisation's containers), [`policy_check`]
//!   (`coffer policy check`).
//! - Interfaces: [`blobstore`] (the `wasi:blobstore` host an embedding
//!   platform adds to its wasmtime linker), [`server`] (`coffer serve`,
//!   feature `server`, on by default), [`cli`] (the `coffer` command line;
//!   the binary only parses and calls [`cli::run`]).
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
pub(crate) mod clock;
pub mod coffer;
pub mod config;
pub mod content;
pub mod db;
pub mod error;
pub mod gc;
pub mod import;
pub mod metrics;
pub mod migrate;
pub mod named;
pub mod org;
pub mod policy;
pub mod policy_check;
pub mod retry;
#[cfg(feature = "server")]
pub mod server;
pub mod verify;

pub use crate::coffer::{Coffer, ObjectInfo};
pub use crate::config::Config;
pub use crate::content::{Content, Digest};
pub use crate::error::{Error, ErrorKind, Result};
