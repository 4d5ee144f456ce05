//! The component: generated bindings, and one `impl Guest` that composes
//! the plain modules.

wit_bindgen::generate!({
    world: "policy-component",
    path: "../wit",
});

use crate::dedup::{self, Existing};
use crate::policy::{Refusal, Rules};
use coffer::storage::host::{self, Level};
use coffer::storage::store::{self, Content};
use coffer::storage::types::{Backend, Error, Location, Namespace, ObjectInfo, Operation, PutOutcome};

struct DefaultPolicy;

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::InvalidName(m) => Error::InvalidName(m),
            Refusal::InvalidConfig(m) => Error::InvalidConfig(m),
            Refusal::Denied(m) => Error::Denied(m),
        }
    }
}

fn rules() -> Result<Rules, Error> {
    Rules::load(host::setting).map_err(Error::from)
}

/// Where `sha256` of `org` goes: S3 when the host has it (and a bucket
/// mode is configured), the database otherwise.
fn location_for(rules: &Rules, org: &str, sha256: &str) -> Result<Location, Error> {
    let s3 = store::backends().first() == Some(&Backend::S3);
    match rules.bucket_for(org)? {
        Some(bucket) if s3 => {
            Ok(Location { backend: Backend::S3, container: bucket, object_name: rules.key_for(org, sha256) })
        }
        // In the database, each organisation is its own namespace.
        _ => Ok(Location { backend: Backend::Database, container: org.to_string(), object_name: sha256.to_string() }),
    }
}

impl exports::coffer::storage::policy::Guest for DefaultPolicy {
    fn check_config(org: Option<String>) -> Result<(), Error> {
        let rules = rules()?;
        if store::backends().first() == Some(&Backend::S3) && rules.bucket_mode.is_none() {
            return Err(Error::InvalidConfig(
                "S3 is configured but no bucket is: set S3_BUCKET, or BUCKET_PER_ORG=true with S3_BUCKET_PREFIX".into(),
            ));
        }
        // A configured tenant must be able to have its bucket.
        if let Some(org) = org {
            location_for(&rules, &org, "")?;
        }
        Ok(())
    }

    /// The organisation's bucket (or, with one bucket for all, its key
    /// prefix there) first, then its database namespace, where its objects
    /// live when S3 is not configured and where they stay readable after a
    /// switch.
    fn namespaces(org: String) -> Result<Vec<Namespace>, Error> {
        let rules = rules()?;
        let database = Namespace { backend: Backend::Database, container: org.clone(), prefix: String::new() };
        let first = location_for(&rules, &org, "")?;
        if first.backend == Backend::Database {
            return Ok(vec![database]);
        }
        let prefix = first.object_name;
        Ok(vec![Namespace { backend: Backend::S3, container: first.container, prefix }, database])
    }

    fn put(org: String, body: &Content) -> Result<PutOutcome, Error> {
        let rules = rules()?;
        let info = body.describe();
        rules.check_content(info.size, &info.content_type)?;
        if !dedup::is_sha256_hex(&info.sha256) {
            return Err(Error::Internal(format!("host gave a malformed digest {:?}", info.sha256)));
        }
        // Already recorded for this organisation, wherever it lives: store nothing.
        if let Some(existing) = store::lookup(&info.sha256)? {
            return Ok(PutOutcome { location: existing.location, deduplicated: true });
        }
        let location = location_for(&rules, &org, &info.sha256)?;
        // Large content: look before uploading, so a copy already on the
        // backend (stored by another host, or before the catalog) is not
        // uploaded again. Small content goes straight to a conditional
        // write, which never overwrites and says whether it wrote.
        if info.size >= rules.dedup_probe_min_size {
            match dedup::existing(store::head(&location)?, info.size) {
                Existing::Same => return Ok(PutOutcome { location, deduplicated: true }),
                Existing::Different { stored_size } => {
                    return Err(Error::Conflict(format!(
                        "{}/{} already holds {stored_size} bytes, not this content's {}; stored objects are never overwritten",
                        location.container, location.object_name, info.size
                    )));
                }
                Existing::Absent => {}
            }
        }
        store::ensure_container(location.backend, &location.container)?;
        let written = store::write(&location, body)?;
        host::log(Level::Debug, &format!("stored {} for {org} (written: {written})", info.sha256));
        Ok(PutOutcome { location, deduplicated: !written })
    }

    fn authorize(_org: String, op: Operation, _object: ObjectInfo) -> Result<(), Error> {
        match op {
            Operation::Get | Operation::Stat | Operation::Link => Ok(()),
            Operation::Delete if rules()?.allow_delete => Ok(()),
            Operation::Delete => Err(Error::Denied(
                "this organisation's policy keeps stored files: deletion is switched off (allow-delete)".into(),
            )),
        }
    }
}

export!(DefaultPolicy);
