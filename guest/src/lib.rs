//! Coffer's default policy component.
//!
//! The host does the I/O; this component decides. It implements the
//! `coffer:storage/policy` interface of `wit/storage.wit`:
//!
//! - **Naming** ([`naming`]): AWS rules for general-purpose bucket names;
//!   `S3_BUCKET` (one bucket, keys under the organisation) or
//!   `BUCKET_PER_ORG` + `S3_BUCKET_PREFIX` (bucket = prefix + organisation),
//!   with optional deterministic mapping of organisation names that are not
//!   valid bucket names.
//! - **De-duplication** ([`dedup`]): the key is the lowercase hex SHA-256;
//!   content already recorded or already present is not written again.
//! - **Tenant rules** ([`policy`]): size limit, allowed content types,
//!   whether deletion is allowed.
//!
//! The modules are plain Rust and unit-test natively; [`component`] (built
//! for `wasm32` only: native linkers refuse the component's export names)
//! wires them to the generated bindings.

#[cfg(target_arch = "wasm32")]
mod component;
pub mod dedup;
pub mod naming;
pub mod policy;
