//! Conversions between the contract's generated types and the host's own,
//! in one place; the error mapping in particular lives only here.

use super::bindings::coffer::storage::types;
use crate::backend::{BackendKind, Location};
use crate::catalog::Record;
use crate::error::Error;

pub fn backend_to_wit(kind: BackendKind) -> types::Backend {
    match kind {
        BackendKind::Database => types::Backend::Database,
        BackendKind::S3 => types::Backend::S3,
    }
}

pub fn backend_from_wit(b: types::Backend) -> BackendKind {
    match b {
        types::Backend::Database => BackendKind::Database,
        types::Backend::S3 => BackendKind::S3,
    }
}

pub fn location_from_wit(l: types::Location) -> Location {
    Location { backend: backend_from_wit(l.backend), container: l.container, name: l.object_name }
}

pub fn location_to_wit(l: &Location) -> types::Location {
    types::Location { backend: backend_to_wit(l.backend), container: l.container.clone(), object_name: l.name.clone() }
}

pub fn object_info(r: &Record) -> types::ObjectInfo {
    types::ObjectInfo {
        org: r.org.clone(),
        sha256: r.sha256.to_string(),
        size: r.size,
        content_type: r.content_type.clone(),
        location: location_to_wit(&r.location),
        created_at: r.created_at,
    }
}

/// What the guest sees of a host error. Backend details that might carry
/// credentials or internal addresses are reduced to their message.
pub fn error_to_wit(e: &Error) -> types::Error {
    // The case says the kind; the message need not repeat it.
    let m = match e {
        Error::InvalidName(m)
        | Error::InvalidInput(m)
        | Error::Config(m)
        | Error::Denied(m)
        | Error::NotFound(m)
        | Error::Conflict(m)
        | Error::Integrity(m) => m.clone(),
        Error::Backend { message, .. } => message.clone(),
        other => other.to_string(),
    };
    match e {
        Error::InvalidName(_) | Error::InvalidInput(_) => types::Error::InvalidName(m),
        Error::Config(_) => types::Error::InvalidConfig(m),
        Error::Denied(_) => types::Error::Denied(m),
        Error::NotFound(_) => types::Error::NotFound(m),
        Error::Conflict(_) => types::Error::Conflict(m),
        Error::Integrity(_) => types::Error::Integrity(m),
        Error::Backend { .. } | Error::Io { .. } | Error::Unsupported(_) => types::Error::Unavailable(m),
        Error::Policy(_) | Error::Internal(_) => types::Error::Internal(m),
    }
}

/// A policy's error as the host reports it. The guest's message is kept,
/// bounded in length, and said to come from the policy.
pub fn error_from_wit(e: types::Error) -> Error {
    let bounded = |m: String| -> String { m.chars().take(2000).collect() };
    match e {
        types::Error::InvalidName(m) => Error::InvalidName(bounded(m)),
        types::Error::InvalidConfig(m) => Error::Config(bounded(m)),
        types::Error::Denied(m) => Error::Denied(bounded(m)),
        types::Error::NotFound(m) => Error::NotFound(bounded(m)),
        types::Error::Conflict(m) => Error::Conflict(bounded(m)),
        types::Error::Integrity(m) => Error::Integrity(bounded(m)),
        types::Error::Unavailable(m) => Error::Backend { message: bounded(m), retryable: true, source: None },
        types::Error::Internal(m) => Error::Policy(bounded(m)),
    }
}
