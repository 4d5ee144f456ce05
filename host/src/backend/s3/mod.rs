//! S3-compatible object stores (AWS, MinIO, Ceph, Garage, …) over
//! SigV4-signed HTTP: one pooled client, streamed bodies,
//! multipart above a threshold, checksums the server verifies, presigned
//! links built from the configured endpoint.
//!
//! - `client.rs`: the client (signed, retried requests), single uploads,
//!   and "is this content already there?", decided by digest;
//! - `store.rs`: the [`BlobStore`](crate::backend::BlobStore) on top, each
//!   operation's requests (see its `head`);
//! - `multipart.rs`: multipart uploads, aborted when they fail or are
//!   cancelled, with ambiguous completions resolved by a HEAD;
//! - `listing.rs`: ListObjectsV2 and ListMultipartUploads answers;
//! - `transport.rs`: how requests travel (hyper-util's pool, a connector
//!   that acknowledges answers at once, timeouts);
//! - `sign.rs`: signing and URL encoding (pure, tested with AWS's examples);
//! - `error.rs`: every non-success answer mapped to an error, in one place.

mod client;
mod error;
mod listing;
mod multipart;
pub mod sign;
mod store;
mod transport;

pub use self::client::{Addressing, DIGEST_METADATA, S3Store};
pub use self::multipart::{MAX_OBJECT_SIZE, MAX_PARTS, PART_CONCURRENCY, part_size_for};
