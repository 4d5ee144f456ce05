//! The `wasi:blobstore@0.2.0-draft` host: an embedding platform adds it
//! to its own wasmtime [`Linker`](wasmtime::component::Linker) with [`add_to_linker`], and its plugins
//! get Coffer's storage (S3 or a database, content de-duplication,
//! streaming, the organisation's policy) through the standard interface.
//!
//! Shaped like wasmtime's own `wasi-keyvalue` crate: one `bindgen!` (the
//! vendored WIT in `wit/wasi-blobstore/`), a context the platform builds
//! per store ([`BlobstoreCtx`]: which Coffer, which organisation, which
//! limits), and a borrowed view of that context and the store's
//! [`ResourceTable`](wasmtime::component::ResourceTable) ([`Blobstore`]), which the platform's accessor returns.
//! The `wasi:io` streams are wasmtime-wasi's: add
//! `wasmtime_wasi::p2::add_to_linker_async` (or its `wasi:io` part) to the
//! same linker, and give both the same table.
//!
//! - `ctx.rs`: [`BlobstoreCtx`], its limits, and the [`Blobstore`] view;
//! - `bindings.rs`: the one `bindgen!`; `resources.rs`: the resources a
//!   plugin holds (containers, listings, values);
//! - `host.rs`: the imports, thin calls into [`crate::named`], and
//!   [`add_to_linker`];
//! - `streams.rs`: the `wasi:io` streams of values;
//! - `run.rs`: [`run_plugin`] (`coffer run-plugin`).
//!
//! # Tenancy
//! The organisation is fixed when the platform builds the
//! [`BlobstoreCtx`]; no function of the interface names one, so a plugin
//! can only ever reach its own organisation's containers. A container is a
//! namespace of that organisation ([`crate::named`]); two organisations'
//! containers of the same name are unrelated.
//!
//! # Semantics
//! - `outgoing-value`: the body written to its `output-stream` is hashed
//!   and spooled as it arrives (memory stays bounded whatever the size),
//!   and stopped past the organisation's `max-size` or the host's limit;
//!   `write-data` binds the value to a name, and `finish` stores it there
//!   through Coffer's put (the policy decides where; identical content is
//!   not uploaded again) and points the name at it. Errors of storing are
//!   `finish`'s. A value dropped without `finish` stores nothing.
//! - Whatever lets content go (deleting, replacing or moving a name,
//!   clearing or deleting a container) asks the policy, as a delete does.
//! - `get-data(name, start, end)`: `start..=end`, inclusive; an `end` past
//!   the object's last byte reads to the end. The value pins the bytes it
//!   was opened on: deleting or replacing the name meanwhile does not take
//!   them away. Only the range is read from the store. A read of the whole
//!   object is verified against its SHA-256 (corrupt content ends the
//!   stream with an error instead of completing it); a part of it is
//!   checked in number only, as [`crate::backend::read`] explains.
//! - `incoming-value-consume-sync` refuses values over
//!   [`BlobstoreLimits::max_sync_read`] (use `consume-async`, a stream).
//! - `list-objects` pages through the catalog in name order; `copy-object`
//!   and `move-object` change names only, no byte is copied.
//! - Errors are strings: Coffer's error message, prefixed by its class
//!   (`not-found: container "x" has no object "y"`).

mod bindings;
mod ctx;
mod host;
mod resources;
mod run;
mod streams;

pub use self::ctx::{Blobstore, BlobstoreCtx, BlobstoreLimits};
pub use self::host::add_to_linker;
pub use self::resources::{ContainerHandle, IncomingValue, NameStream, OutgoingValue};
pub use self::run::{PluginRun, command_status, run_plugin};
