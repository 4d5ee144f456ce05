//! A component that imports an interface the host does not provide.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "extra-import", path: "wit" });

struct Extra;

impl Guest for Extra {
    fn run() -> String {
        test::extra_import::secrets::get("AWS_SECRET_ACCESS_KEY")
    }
}

export!(Extra);
