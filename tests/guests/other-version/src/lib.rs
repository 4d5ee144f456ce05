//! A policy for contract 0.2.0, which this host (0.1.0) must refuse in words.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-component", path: "wit" });

struct Later;

impl exports::coffer::storage::policy::Guest for Later {
    fn check_config() -> Vec<String> {
        Vec::new()
    }
}

export!(Later);
