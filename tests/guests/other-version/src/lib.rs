//! A policy for contract 0.1.0 (the previous release), which this host
//! must refuse, saying what a 0.1.0 policy has to change.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-component", path: "wit" });

use coffer::storage::store::Content;
use coffer::storage::types::{Error, ObjectInfo, Operation, PutOutcome};

struct Old;

impl exports::coffer::storage::policy::Guest for Old {
    fn check_config() -> Result<(), Error> {
        Ok(())
    }

    fn container_name(org: String) -> Result<String, Error> {
        Ok(org)
    }

    fn put(_org: String, _body: &Content) -> Result<PutOutcome, Error> {
        Err(Error::Internal("a 0.1.0 policy never runs on this host".into()))
    }

    fn authorize(_org: String, _op: Operation, _object: ObjectInfo) -> Result<(), Error> {
        Ok(())
    }
}

export!(Old);
