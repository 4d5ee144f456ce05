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
    use proptest::prelude::*;

    use super::*;

    /// Cases per property: `COFFER_FUZZ_CASES` when set (a long run), else
    /// `default` (as in `tests/integration/fuzz.rs`).
    fn cases(default: u32) -> u32 {
        std::env::var("COFFER_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
    }

    /// `cases` cases, and no failure files written into the repository.
    fn bounded(cases: u32) -> ProptestConfig {
        ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
    }

    /// Any text, control characters and all, up to `max` characters.
    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..=max).prop_map(|chars| chars.into_iter().collect::<String>())
    }

    /// The guest's error of kind `which` (0 to 7, in the contract's order).
    fn guest_error(which: u8, message: String) -> types::Error {
        match which % 8 {
            0 => types::Error::InvalidName(message),
            1 => types::Error::InvalidConfig(message),
            2 => types::Error::Denied(message),
            3 => types::Error::NotFound(message),
            4 => types::Error::Conflict(message),
            5 => types::Error::Integrity(message),
            6 => types::Error::Unavailable(message),
            _ => types::Error::Internal(message),
        }
    }

    fn wit_backend(s3: bool) -> types::Backend {
        if s3 { types::Backend::S3 } else { types::Backend::Database }
    }

    proptest! {
        #![proptest_config(bounded(cases(256)))]

        /// Any error a guest returns, whatever its message: no panic, the
        /// message kept as at most its first 2000 characters, and its kind
        /// kept both ways (as the host's error, and back as a guest would
        /// be told it).
        #[test]
        fn fuzz_guest_errors_are_bounded_and_keep_their_kind(
            which in 0u8..8,
            said in prop_oneof![text(40), text(4000), (1995usize..2005).prop_map(|n| "é".repeat(n))],
        ) {
            let sent = guest_error(which, said.clone());
            let host = error_from_wit(sent.clone());
            let kept = match &host {
                Error::InvalidName(m)
                | Error::Config(m)
                | Error::Denied(m)
                | Error::NotFound(m)
                | Error::Conflict(m)
                | Error::Integrity(m)
                | Error::Policy(m) => m,
                Error::Backend { message, retryable: true, .. } => message,
                other => return Err(TestCaseError::fail(format!("{sent:?} became {other:?}"))),
            };
            prop_assert_eq!(kept.chars().count(), said.chars().count().min(2000));
            prop_assert!(said.starts_with(kept.as_str()), "{:?} is not where {:?} starts", kept, said);
            let back = error_to_wit(&host);
            prop_assert!(
                std::mem::discriminant(&back) == std::mem::discriminant(&sent),
                "{:?} came back as {:?}",
                sent,
                back
            );
        }

        /// Any namespace a guest declares: no panic, its parts unchanged,
        /// and accepted exactly when its container is 1 to 1024 bytes and
        /// its prefix at most 1024, neither with a control character; a
        /// refusal is the policy's error.
        #[test]
        fn fuzz_declared_namespaces_are_checked(
            s3 in any::<bool>(),
            container in prop_oneof![text(20), text(1100), "[a-z0-9.-]{1,30}", "[a-z]{1023,1025}"],
            prefix in prop_oneof![Just(String::new()), text(20), text(1100), "[a-z]{1023,1025}"],
        ) {
            let ns = namespace_from_wit(types::Namespace {
                backend: wit_backend(s3),
                container: container.clone(),
                prefix: prefix.clone(),
            });
            prop_assert_eq!(ns.backend, if s3 { BackendKind::S3 } else { BackendKind::Database });
            prop_assert!(ns.container == container && ns.prefix == prefix);
            let clean = |part: &str| part.len() <= 1024 && !part.chars().any(char::is_control);
            let usable = !container.is_empty() && clean(&container) && clean(&prefix);
            match ns.validate() {
                Ok(()) => prop_assert!(usable, "{:?} was accepted", ns),
                Err(e) => prop_assert!(!usable && matches!(e, Error::Policy(_)), "{:?}: {}", ns, e),
            }
        }

        /// Any location a guest names crosses the boundary unchanged, both
        /// ways, and can be shown.
        #[test]
        fn fuzz_locations_cross_the_boundary_unchanged(s3 in any::<bool>(), container in text(64), name in text(300)) {
            let at = location_from_wit(types::Location {
                backend: wit_backend(s3),
                container: container.clone(),
                object_name: name.clone(),
            });
            prop_assert_eq!(at.backend, if s3 { BackendKind::S3 } else { BackendKind::Database });
            prop_assert!(at.container == container && at.name == name);
            let back = location_to_wit(&at);
            prop_assert!(back.backend == wit_backend(s3) && back.container == container && back.object_name == name);
            prop_assert!(at.to_string().ends_with(&name));
        }
    }

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
