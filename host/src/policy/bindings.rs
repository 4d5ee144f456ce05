//! The one `bindgen!` of the host, for `wit/storage.wit`, and the host type
//! behind the contract's one resource.

use crate::content::Content;

/// The content resource as the guest holds it.
#[derive(Debug)]
pub struct ContentHandle(pub Content);

wasmtime::component::bindgen!({
    world: "policy-component",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "coffer:storage/store.content": ContentHandle,
    },
});
