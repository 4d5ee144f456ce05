//! The handlers, one file per resource, each annotated for the OpenAPI
//! document: the router and the document are built from the same list
//! (`router.rs`, beside this folder).
//!
//! - `objects.rs`: objects by digest;
//! - `batch.rs`: many objects in one tar stream;
//! - `admin.rs`: policy swaps;
//! - `health.rs`: health, readiness, metrics, the OpenAPI document.

pub mod admin;
pub mod batch;
pub mod health;
pub mod objects;
