//! The one `bindgen!` of `wasi:blobstore` (the vendored WIT in
//! `wit/wasi-blobstore/`), its `wasi:io` types wasmtime-wasi's and its
//! resources Coffer's own ([`super::resources`]).

wasmtime::component::bindgen!({
    path: "../wit/wasi-blobstore",
    world: "wasi:blobstore/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:io/poll": wasmtime_wasi::p2::bindings::io::poll,
        "wasi:io/streams": wasmtime_wasi::p2::bindings::io::streams,
        "wasi:io/error": wasmtime_wasi::p2::bindings::io::error,
        "wasi:blobstore/container.container": super::resources::ContainerHandle,
        "wasi:blobstore/container.stream-object-names": super::resources::NameStream,
        "wasi:blobstore/types.outgoing-value": super::resources::OutgoingValue,
        "wasi:blobstore/types.incoming-value": super::resources::IncomingValue,
    },
});
