//! A policy written to misbehave, chosen by organisation name, so the
//! tests can prove that the host contains it. For any other organisation
//! it behaves like a plain policy (database, key = digest).

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-component", path: "../../../wit" });

use coffer::storage::host;
use coffer::storage::store::{self, Content};
use coffer::storage::types::{Backend, Error, Location, ObjectInfo, Operation, PutOutcome};

struct Hostile;

fn own(org: &str, sha: &str) -> Location {
    Location { backend: Backend::Database, container: org.to_string(), object_name: sha.to_string() }
}

/// Try to reach outside the sandbox; report what worked.
fn escape() -> String {
    let fs = match std::fs::read_dir("/") {
        Ok(_) => "fs:OPEN".to_string(),
        Err(_) => "fs:denied".to_string(),
    };
    let file = match std::fs::read("/etc/passwd") {
        Ok(_) => "file:READ",
        Err(_) => "file:denied",
    };
    let env = if std::env::vars().next().is_some() { "env:VISIBLE" } else { "env:empty" };
    let net = match std::net::TcpStream::connect("127.0.0.1:9") {
        Ok(_) => "net:CONNECTED",
        Err(_) => "net:denied",
    };
    format!("{fs} {file} {env} {net}")
}

impl exports::coffer::storage::policy::Guest for Hostile {
    fn check_config() -> Result<(), Error> {
        Ok(())
    }

    fn container_name(org: String) -> Result<String, Error> {
        if org == "trap" {
            panic!("deliberate trap in container-name");
        }
        Ok(org)
    }

    fn put(org: String, body: &Content) -> Result<PutOutcome, Error> {
        let info = body.describe();
        match org.as_str() {
            "trap" => unreachable!("deliberate trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "huge-string" => Err(Error::Denied("x".repeat(32 << 20))),
            "escape" => Err(Error::Denied(escape())),
            "peek-all" => {
                // Ask for far more than the host's bound; report what came.
                let got = body.peek(u32::MAX);
                Err(Error::Denied(format!("peeked {} bytes", got.len())))
            }
            "spin-store" => {
                // Keep the host busy with store calls.
                loop {
                    store::head(&own("spin-store", &info.sha256))?;
                }
            }
            "no-such-backend" => {
                let at = Location { backend: Backend::S3, container: "bucket".into(), object_name: info.sha256 };
                store::write(&at, body)?;
                Ok(PutOutcome { location: at, deduplicated: false })
            }
            "bad-names" => {
                let at = Location { backend: Backend::S3, container: "Bad/Bucket".into(), object_name: "../x".into() };
                store::ensure_container(Backend::S3, &at.container)?;
                store::write(&at, body)?;
                Ok(PutOutcome { location: at, deduplicated: false })
            }
            "mallory-write" => {
                let at = own("victim", &info.sha256);
                store::write(&at, body)?;
                Ok(PutOutcome { location: at, deduplicated: false })
            }
            "mallory-head" => {
                let at = own("victim", &info.sha256);
                store::head(&at)?;
                Ok(PutOutcome { location: at, deduplicated: true })
            }
            "write-then-trap" => {
                // Writes its own copy, then dies before it can report it.
                store::write(&own(&org, &info.sha256), body)?;
                panic!("deliberate trap after writing");
            }
            "mallory-claim" => {
                // Claim the victim's copy without writing or finding anything.
                Ok(PutOutcome { location: own("victim", &info.sha256), deduplicated: true })
            }
            // Organisations whose names start with "pool-" share one
            // container (setting `pool`, default "pool"): a location that
            // several organisations reference at once.
            o if o.starts_with("pool-") => {
                let backend = store::backends().first().copied().unwrap_or(Backend::Database);
                let container = host::setting("pool").unwrap_or_else(|| "pool".to_string());
                let at = Location { backend, container, object_name: info.sha256 };
                store::ensure_container(at.backend, &at.container)?;
                let written = store::write(&at, body)?;
                Ok(PutOutcome { location: at, deduplicated: !written })
            }
            _ => {
                let at = own(&org, &info.sha256);
                if store::head(&at)? != Some(info.size) {
                    store::write(&at, body)?;
                }
                Ok(PutOutcome { location: at, deduplicated: false })
            }
        }
    }

    fn authorize(org: String, _op: Operation, _object: ObjectInfo) -> Result<(), Error> {
        if org == "trap-on-read" {
            panic!("deliberate trap in authorize");
        }
        Ok(())
    }
}

export!(Hostile);
