//! A policy written to misbehave, chosen by organisation name, so the
//! tests can prove that the host contains it. For any other organisation
//! it behaves like a plain policy (database, key = digest). The tests run
//! it as the deployment's policy (sandbox limits) and as a tenant's own
//! policy beside the built-in one (namespaces, which the deployment's
//! policy declares).

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "policy-component", path: "../../../wit" });

use coffer::storage::host;
use coffer::storage::store::{self, Content};
use coffer::storage::types::{Backend, Error, Location, Namespace, ObjectInfo, Operation, PutOutcome};

struct Hostile;

fn own(org: &str, sha: &str) -> Location {
    Location { backend: Backend::Database, container: org.to_string(), object_name: sha.to_string() }
}

fn truthy(name: &str) -> bool {
    host::setting(name).is_some_and(|v| v == "true")
}

/// Where the built-in policy would put `sha` for `org` (without name
/// mapping): the place an attack on `org` aims at.
fn place(org: &str, sha: &str) -> Location {
    if store::backends().first() != Some(&Backend::S3) {
        return own(org, sha);
    }
    if truthy("bucket-per-org") {
        let prefix = host::setting("s3-bucket-prefix").unwrap_or_default();
        Location { backend: Backend::S3, container: format!("{prefix}{org}"), object_name: sha.to_string() }
    } else {
        let bucket = host::setting("s3-bucket").unwrap_or_default();
        Location { backend: Backend::S3, container: bucket, object_name: format!("{org}/{sha}") }
    }
}

fn write_at(at: Location, body: &Content) -> Result<PutOutcome, Error> {
    store::write(&at, body)?;
    Ok(PutOutcome { location: at, deduplicated: false })
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
    fn check_config(_org: Option<String>) -> Result<(), Error> {
        Ok(())
    }

    fn namespaces(org: String) -> Result<Vec<Namespace>, Error> {
        match org.as_str() {
            "trap" => panic!("deliberate trap in namespaces"),
            // As the deployment's policy: every "pool-*" organisation is
            // given one shared container, which only the first may claim.
            o if o.starts_with("pool-") => {
                let backend = store::backends().first().copied().unwrap_or(Backend::Database);
                let container = host::setting("pool").unwrap_or_else(|| "pool".to_string());
                Ok(vec![Namespace { backend, container, prefix: String::new() }])
            }
            // Its own part of the S3 bucket, where `place` puts it.
            "slow-heads" => {
                let bucket = host::setting("s3-bucket").unwrap_or_default();
                Ok(vec![Namespace { backend: Backend::S3, container: bucket, prefix: format!("{org}/") }])
            }
            _ => Ok(vec![Namespace { backend: Backend::Database, container: org, prefix: String::new() }]),
        }
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
            "slow-heads" => {
                // Look at its own place again and again: on a slow server,
                // each look waits on I/O.
                loop {
                    store::head(&place(&org, &info.sha256))?;
                }
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
            "mallory-write" => write_at(place("victim", &info.sha256), body),
            // Not even a digest for a name.
            "mallory-no-digest" => write_at(place("victim", &format!("{}1", "0".repeat(63))), body),
            "mallory-own-no-digest" => write_at(place(&org, "00000000000000000000000000000001"), body),
            "mallory-head" => {
                let at = place("victim", &info.sha256);
                store::head(&at)?;
                Ok(PutOutcome { location: at, deduplicated: true })
            }
            "mallory-bucket" => {
                // Create (or probe) buckets that are not its own.
                let target = host::setting("target-bucket").unwrap_or_else(|| "some-other-bucket".into());
                store::ensure_container(Backend::S3, &target)?;
                Err(Error::Internal("ensure-container of a foreign bucket succeeded".into()))
            }
            "mallory-poison" => {
                // Plant this content under the name the victim's future
                // file will have (`poison-target`, its digest), same size.
                let target = host::setting("poison-target").unwrap_or_default();
                write_at(place("victim", &target), body)
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Err(Error::Internal("slept through".into()))
            }
            "poll" => {
                // Spin on the clock: the guest's own time.
                let start = std::time::Instant::now();
                while start.elapsed() < std::time::Duration::from_secs(30) {
                    std::hint::black_box(0);
                }
                Err(Error::Internal("polled through".into()))
            }
            "many-places" => {
                // Three names of its own, each with the digest in it.
                for suffix in ["", "-again", "-once-more"] {
                    store::write(&own(&org, &format!("{}{suffix}", info.sha256)), body)?;
                }
                Err(Error::Internal("wrote to three places".into()))
            }
            "long-name" => write_at(own(&org, &format!("{}{}", info.sha256, "x".repeat(1 << 20))), body),
            "long-container" => {
                store::ensure_container(Backend::Database, &"c".repeat(1 << 20))?;
                Err(Error::Internal("ensured a 1 MiB container name".into()))
            }
            "leak-resources" => {
                // Open WASI pollables and never drop them: each is an
                // entry in the call's resource table.
                for _ in 0..2000 {
                    std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(0));
                }
                Err(Error::Internal("held 2000 pollables".into()))
            }
            "log-flood" => loop {
                host::log(host::Level::Info, "flood");
            },
            "setting-loop" => {
                // Cheap for the guest, work for the host: a huge name, over
                // and over, ignoring the answers.
                let name = "n".repeat(64 << 10);
                loop {
                    std::hint::black_box(host::setting(&name));
                }
            }
            "log-forge" => {
                host::log(host::Level::Error, "ok\n2026-01-01T00:00:00.000000Z ERROR coffer: FORGED host line");
                let at = own(&org, &info.sha256);
                let written = store::write(&at, body)?;
                Ok(PutOutcome { location: at, deduplicated: !written })
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

    fn authorize(org: String, _op: Operation, object: ObjectInfo) -> Result<(), Error> {
        match org.as_str() {
            "trap-on-read" => panic!("deliberate trap in authorize"),
            // Store calls act for a put; here they must be refused.
            "head-outside-put" => store::head(&object.location).map(|_| ()),
            _ => Ok(()),
        }
    }
}

export!(Hostile);
