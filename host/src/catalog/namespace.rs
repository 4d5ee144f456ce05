//! Namespaces: the parts of storage an organisation's objects may live in.
//!
//! A namespace is a container on a backend and a prefix of object names in
//! it. The deployment's policy declares each organisation's namespaces
//! (`namespaces` in `wit/`); the first time an organisation uses one, the
//! catalog records its claim ([`super::claims`]), in a transaction that
//! refuses any claim overlapping another organisation's. Every store call
//! a policy makes, and every read or delete the host makes for an
//! organisation, must lie inside a namespace that organisation holds: see
//! [`super::boundaries`].

use std::fmt;

use serde::Serialize;

use crate::backend::{BackendKind, Location};
use crate::error::{Error, Result};

/// Longest container or prefix the host accepts in a namespace.
const MAX_PART: usize = 1024;

/// A container on a backend and the object names in it that start with
/// `prefix` (`""`: the whole container).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Namespace {
    pub backend: BackendKind,
    pub container: String,
    pub prefix: String,
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}*", self.backend, self.container, self.prefix)
    }
}

impl Namespace {
    /// Whether `at` lies inside this namespace.
    pub fn contains(&self, at: &Location) -> bool {
        at.backend == self.backend && at.container == self.container && at.name.starts_with(&self.prefix)
    }

    /// Whether `self` and `other` share any location: the same container,
    /// one prefix a prefix of the other.
    pub fn overlaps(&self, other: &Namespace) -> bool {
        self.backend == other.backend
            && self.container == other.container
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }

    /// Refuse a namespace no policy should declare: an empty container, or
    /// parts that are too long or hold control characters.
    pub fn validate(&self) -> Result<()> {
        let bad = |part: &str| part.len() > MAX_PART || part.chars().any(char::is_control);
        if self.container.is_empty() || bad(&self.container) || bad(&self.prefix) {
            return Err(Error::Policy(format!(
                "declared an unusable namespace {:?} (a container is 1 to {MAX_PART} bytes, without control characters)",
                self.to_string()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(container: &str, prefix: &str) -> Namespace {
        Namespace { backend: BackendKind::S3, container: container.into(), prefix: prefix.into() }
    }

    fn at(container: &str, name: &str) -> Location {
        Location { backend: BackendKind::S3, container: container.into(), name: name.into() }
    }

    #[test]
    fn containment() {
        assert!(ns("b", "").contains(&at("b", "x")));
        assert!(ns("b", "acme/").contains(&at("b", "acme/ab")));
        assert!(!ns("b", "acme/").contains(&at("b", "acme-evil/ab")));
        assert!(!ns("b", "acme/").contains(&at("c", "acme/ab")));
        let db = Namespace { backend: BackendKind::Database, ..ns("b", "") };
        assert!(!db.contains(&at("b", "x")));
    }

    #[test]
    fn unusable_namespaces_are_refused() {
        assert!(ns("b", "").validate().is_ok());
        assert!(ns("", "").validate().is_err());
        assert!(ns("b", "a\nb").validate().is_err());
        assert!(ns(&"b".repeat(2000), "").validate().is_err());
    }
}
