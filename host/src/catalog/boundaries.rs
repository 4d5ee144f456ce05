//! The host's check of organisations' boundaries: every store call a
//! policy makes, and every read or delete the host makes for an
//! organisation, must lie inside a namespace that organisation holds
//! ([`super::claims`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Catalog;
use super::claims::Claimed;
use super::namespace::Namespace;
use crate::backend::Location;
use crate::error::{Error, Result};

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
