//! Coffer's integration tests: one binary, one module per area. They run
//! the real host with the real, compiled policy component.

mod blobstore;
mod cli;
mod config;
mod conformance;
mod contract;
mod crashes;
mod database;
mod fault_proxy;
mod faults;
mod fuzz;
mod gates;
mod gc;
mod http;
mod import;
mod interleavings;
mod layers;
mod memory;
mod migrate;
mod naming;
mod pg_server;
mod policies;
mod postgres;
mod redirects;
mod s3;
mod s3_server;
pub mod sandbox;
mod stress;
mod support;
mod tenants;
