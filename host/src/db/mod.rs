//! The databases: each holds the catalog (every [`crate::catalog`] trait)
//! and, when no S3 is configured, the blobs ([`crate::backend::BlobStore`]),
//! in files named alike so the two read side by side.
//!
//! - [`sqlite`]: one embedded file, the default (one host).
//! - [`postgres`]: a server shared by several hosts.
//! - `chunks.rs`: reading a blob's chunk rows one short statement at a time
//!   (both databases).

pub(crate) mod chunks;
pub mod postgres;
pub mod sqlite;
