//! Conversions between the contract's generated types and the host's own,
//! in one place; the error mapping in particular lives only here.

use super::bindings::coffer::storage::types;
use crate::backend::{BackendKind, Location};
use crate::catalog::Record;
use crate::catalog::namespace::Namespace;
use crate::error::{Error, scrub};

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

pub fn namespace_from_wit(n: types::Namespace) -> Namespace {
    Namespace { backend: backend_from_wit(n.backend), container: n.container, prefix: n.prefix }
}

/// What the guest sees of a host error: the kind, and a message that
/// carries no endpoint, address, account or server detail. Failures of
/// the storage itself say only that, in words; the host keeps the full
/// error for its own caller (see `CallState::withhold`). Messages the host
/// writes about the organisation's own locations and names are kept, with
/// anything that looks like a URL cut out.
pub fn error_to_wit(e: &Error) -> types::Error {
    match e {
        Error::InvalidName(m) | Error::InvalidInput(m) => types::Error::InvalidName(scrub(m)),
        Error::Config(m) => types::Error::InvalidConfig(scrub(m)),
        Error::Denied(m) => types::Error::Denied(scrub(m)),
        Error::NotFound(m) => types::Error::NotFound(scrub(m)),
        Error::Conflict(m) => types::Error::Conflict(scrub(m)),
        Error::Integrity(m) => types::Error::Integrity(scrub(m)),
        Error::Backend { retryable, .. } => types::Error::Unavailable(format!(
            "the storage backend failed{} (details are withheld from policies)",
            if *retryable { "; retrying later may help" } else { "" }
        )),
        Error::Io { .. } => types::Error::Unavailable("a local I/O operation of the host failed".into()),
        Error::Exhausted(_) => {
            types::Error::Unavailable("the host's spool for uploads is full; try again later".into())
        }
        Error::Unsupported(_) => types::Error::Unavailable("the storage backend does not support this".into()),
        Error::Policy(m) | Error::Plugin(m) => types::Error::Internal(scrub(m)),
        Error::Internal(_) => types::Error::Internal("an internal error in the host".into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_reach_a_policy_without_endpoints_or_server_detail() {
        let backend = Error::Backend {
            message:
                "PUT http://10.1.2.3:9000/cyn-victim/k answered 403 AccessDenied for arn:aws:iam::123456789012:user/x"
                    .into(),
            retryable: false,
            source: None,
        };
        let types::Error::Unavailable(m) = error_to_wit(&backend) else { panic!("kind") };
        assert!(!m.contains("10.1.2.3") && !m.contains("123456789012") && !m.contains("http"), "{m}");
        let internal = Error::Internal("cannot reach https://s3.internal.example/ with key AKIA...".into());
        let types::Error::Internal(m) = error_to_wit(&internal) else { panic!("kind") };
        assert!(!m.contains("example") && !m.contains("AKIA"), "{m}");
        let denied = Error::Denied("s3:b/acme/x lies outside; see https://evil.example/x?y now".into());
        let types::Error::Denied(m) = error_to_wit(&denied) else { panic!("kind") };
        assert_eq!(m, "s3:b/acme/x lies outside; see <url> now");
        let denied = Error::Denied("AccessDenied: User: arn:aws:iam::123456789012:user/x is not authorized".into());
        let types::Error::Denied(m) = error_to_wit(&denied) else { panic!("kind") };
        assert_eq!(m, "AccessDenied: User: <arn> is not authorized");
    }
}
