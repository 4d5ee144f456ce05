//! The databases: each holds the catalog (every [`crate::catalog`] trait)
//! and, when no S3 is configured, the blobs ([`crate::backend::BlobStore`]),
//! in files named alike so the two read side by side.
//!
//! - [`sqlite`]: one embedded file, the default (one host).
//! - [`postgres`]: a server shared by several hosts.

pub mod postgres;
pub mod sqlite;
