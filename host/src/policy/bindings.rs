//! The one `bindgen!` of the host, for `wit/storage.wit`.

wasmtime::component::bindgen!({
    world: "policy-component",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "coffer:storage/store.content": crate::policy::host::ContentHandle,
    },
});
