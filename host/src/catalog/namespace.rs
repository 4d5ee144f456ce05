//! Namespaces: the parts of storage an organisation's objects may live in,
//! and the claims that keep organisations out of each other's.
//!
//! A namespace is a container on a backend and a prefix of object names in
//! it. The deployment's policy declares each organisation's namespaces
//! (`namespaces` in `wit/`); the first time an organisation uses one, the
//! catalog records its claim, in a transaction that refuses any claim
//! overlapping another organisation's. Every store call a policy makes,
//! and every read or delete the host makes for an organisation, must lie
//! inside a namespace that organisation holds: see [`Boundaries`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Catalog;
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

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The organisation holds the namespace (now, or already did).
    Held,
    /// Another organisation holds an overlapping namespace.
    Taken(Namespace),
}

/// How an organisation holds a namespace, as both databases record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Its own: the organisation's puts write there.
    Claim,
    /// Another system's objects, read in place (`coffer import rt`).
    Adoption,
}

impl Holding {
    /// The table it is recorded in, and the column of when.
    pub fn table(self) -> (&'static str, &'static str) {
        match self {
            Holding::Claim => ("claims", "claimed_at"),
            Holding::Adoption => ("adopted", "adopted_at"),
        }
    }

    /// For `org` to hold a namespace this way, no overlapping claim and no
    /// overlapping adoption may stand, except (first) claims of `org`'s own
    /// when claiming, and (second) `org`'s own adoption of the same
    /// namespace when adopting again.
    pub fn except(self, org: &str) -> (Option<&str>, Option<&str>) {
        match self {
            Holding::Claim => (Some(org), None),
            Holding::Adoption => (None, Some(org)),
        }
    }
}

/// The host's check of organisations' boundaries, over the catalog's
/// claims. Claims are never given up, so what this process has seen an
/// organisation hold stays true and is remembered here; everything else is
/// asked of the catalog, whose transaction decides.
#[derive(Debug)]
pub struct Boundaries {
    catalog: Arc<dyn Catalog>,
    held: Mutex<HashMap<String, Vec<Namespace>>>,
    /// Namespaces organisations adopted in place (readable, never
    /// written): kept apart from `held`, which lets puts write.
    adopted: Mutex<HashMap<String, Vec<Namespace>>>,
}

/// Organisations whose claims are remembered at once; beyond that the
/// memory starts again (the catalog still answers).
const REMEMBERED_ORGS: usize = 10_000;

impl Boundaries {
    pub fn new(catalog: Arc<dyn Catalog>) -> Boundaries {
        Boundaries { catalog, held: Mutex::new(HashMap::new()), adopted: Mutex::new(HashMap::new()) }
    }

    fn remember(&self, org: &str, ns: &Namespace) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= REMEMBERED_ORGS && !held.contains_key(org) {
            held.clear();
        }
        let list = held.entry(org.to_string()).or_default();
        if !list.contains(ns) {
            list.push(ns.clone());
        }
    }

    /// Make sure `org` holds `ns`, claiming it in the catalog the first
    /// time; `denied` when another organisation holds any part of it.
    pub async fn hold(&self, org: &str, ns: &Namespace) -> Result<()> {
        if self.held.lock().unwrap_or_else(|e| e.into_inner()).get(org).is_some_and(|l| l.contains(ns)) {
            return Ok(());
        }
        match self.catalog.claim(org, ns).await? {
            Claimed::Held => {
                self.remember(org, ns);
                Ok(())
            }
            Claimed::Taken(other) => Err(Error::Denied(format!(
                "{ns} overlaps {other}, which another organisation holds; organisation {org:?} cannot use it"
            ))),
        }
    }

    /// Check that `org` may act on `at`, as a store call of its policy:
    /// `at` must lie in one of `declared` (the organisation's namespaces,
    /// as the deployment's policy declares them), which `org` then holds.
    pub async fn check_call(&self, org: &str, at: &Location, declared: &[Namespace]) -> Result<()> {
        let Some(ns) = declared.iter().find(|n| n.contains(at)) else {
            return Err(Error::Denied(format!(
                "{at} lies outside organisation {org:?}'s namespaces ({})",
                list(declared)
            )));
        };
        self.hold(org, ns).await
    }

    /// Whether `at` lies in a namespace `org` holds: as this process has
    /// seen, or else as the catalog says.
    pub async fn holds(&self, org: &str, at: &Location) -> Result<bool> {
        let known =
            |held: &HashMap<String, Vec<Namespace>>| held.get(org).is_some_and(|l| l.iter().any(|n| n.contains(at)));
        if known(&self.held.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(true);
        }
        let claims = self.catalog.claims(org).await?;
        for ns in &claims {
            self.remember(org, ns);
        }
        if claims.iter().any(|n| n.contains(at)) {
            return Ok(true);
        }
        // Adopted in place (`coffer import rt`): readable, never written.
        let adopted =
            |a: &HashMap<String, Vec<Namespace>>| a.get(org).is_some_and(|l| l.iter().any(|n| n.contains(at)));
        if adopted(&self.adopted.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(true);
        }
        let mut fresh: HashMap<String, Vec<Namespace>> = HashMap::new();
        for (o, ns) in self.catalog.adopted().await? {
            fresh.entry(o).or_default().push(ns);
        }
        let found = adopted(&fresh);
        *self.adopted.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(found)
    }

    /// Check that the host may read or delete `at` for `org`, which does not
    /// hold it yet ([`Boundaries::holds`]): it must lie in one of
    /// `declared`, which `org` then claims (records older than claims).
    /// Anything else is refused before a byte is read.
    pub async fn check_record(&self, org: &str, at: &Location, declared: &[Namespace]) -> Result<()> {
        match declared.iter().find(|n| n.contains(at)) {
            Some(ns) => self.hold(org, ns).await,
            None => Err(Error::Denied(format!(
                "organisation {org:?}'s record points at {at}, outside every namespace it holds; not read"
            ))),
        }
    }
}

fn list(ns: &[Namespace]) -> String {
    if ns.is_empty() {
        return "none".into();
    }
    ns.iter().map(Namespace::to_string).collect::<Vec<_>>().join(", ")
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
