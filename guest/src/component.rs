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

/// Where `sha256` of `org` goes on S3: when the host has S3 and a bucket
/// mode is configured.
fn s3_location_for(rules: &Rules, org: &str, sha256: &str) -> Result<Option<Location>, Error> {
    if store::backends().first() != Some(&Backend::S3) {
        return Ok(None);
    }
    Ok(rules.bucket_for(org)?.map(|bucket| Location {
        backend: Backend::S3,
        container: bucket,
        object_name: rules.key_for(org, sha256),
    }))
}

/// Where `sha256` of `org` goes in the database: each organisation is its
/// own namespace.
fn database_location_for(org: &str, sha256: &str) -> Location {
    Location { backend: Backend::Database, container: org.to_string(), object_name: sha256.to_string() }
}

/// Where `sha256` of `org` goes: S3 when the host has it (and a bucket
/// mode is configured, and `store-in` does not say database), the
/// database otherwise.
fn location_for(rules: &Rules, org: &str, sha256: &str) -> Result<Location, Error> {
    match s3_location_for(rules, org, sha256)? {
        Some(at) if !rules.store_in_database => Ok(at),
        _ => Ok(database_location_for(org, sha256)),
    }
}

/// Store `body` at `location`: look first when it is large (so a copy
/// already there is not uploaded again), then write without overwriting.
/// True when the content was already there.
fn store_at(rules: &Rules, location: &Location, body: &Content, size: u64) -> Result<bool, Error> {
    // Large content: look before uploading, so a copy already on the
    // backend (stored by another host, or before the catalog) is not
    // uploaded again. Small content goes straight to a conditional
    // write, which never overwrites and says whether it wrote.
    if size >= rules.dedup_probe_min_size {
        match dedup::existing(store::head(location)?, size) {
            Existing::Same => return Ok(true),
            Existing::Different { stored_size } => {
                return Err(Error::Conflict(format!(
                    "{}/{} already holds {stored_size} bytes, not this content's {size}; stored objects are never overwritten",
                    location.container, location.object_name
                )));
            }
            Existing::Absent => {}
        }
    }
    store::ensure_container(location.backend, &location.container)?;
    Ok(!store::write(location, body)?)
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
    /// prefix there) and its database namespace, where its objects live
    /// when S3 is not configured (or `store-in` says database, or S3 was
    /// down and the object was parked) and where they stay readable after
    /// a switch. The one new objects go to first.
    fn namespaces(org: String) -> Result<Vec<Namespace>, Error> {
        let rules = rules()?;
        let database = Namespace { backend: Backend::Database, container: org.clone(), prefix: String::new() };
        let Some(s3) = s3_location_for(&rules, &org, "")? else { return Ok(vec![database]) };
        let s3 = Namespace { backend: Backend::S3, container: s3.container, prefix: s3.object_name };
        Ok(if rules.store_in_database { vec![database, s3] } else { vec![s3, database] })
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
        match store_at(&rules, &location, body, info.size) {
            Ok(deduplicated) => {
                host::log(Level::Debug, &format!("stored {} for {org} (deduplicated: {deduplicated})", info.sha256));
                Ok(PutOutcome { location, deduplicated })
            }
            // S3 is down: park the object in the database, if allowed; the
            // host records it as parked, and `coffer migrate` moves it.
            Err(Error::Unavailable(why)) if location.backend == Backend::S3 && rules.park_when_unavailable => {
                host::log(Level::Warn, &format!("S3 is unavailable ({why}); parking {} in the database", info.sha256));
                let parked = database_location_for(&org, &info.sha256);
                let deduplicated = store_at(&rules, &parked, body, info.size)?;
                Ok(PutOutcome { location: parked, deduplicated })
            }
            Err(e) => Err(e),
        }
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
