//! Claims: which organisation holds which namespace, so that no two
//! organisations' objects ever share one; and adoptions, namespaces of
//! another system's objects read in place (`coffer import rt`).

use async_trait::async_trait;

use super::namespace::Namespace;
use crate::error::Result;

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

/// Claims and adoptions of namespaces. Each method is one transaction.
#[async_trait]
pub trait Claims: Send + Sync {
    /// Record that `org` holds `namespace`, unless another organisation
    /// holds one that overlaps it (the same container, one prefix a prefix
    /// of the other), or it overlaps an adopted namespace (anyone's).
    /// Claims are never given up.
    async fn claim(&self, org: &str, namespace: &Namespace) -> Result<Claimed>;

    /// The namespaces `org` holds.
    async fn claims(&self, org: &str) -> Result<Vec<Namespace>>;

    /// Adopt `namespace` for `org`: another system's objects, recorded in
    /// place. Refused (`Taken`) when it overlaps any claim (the
    /// organisation's own too: Coffer's bytes must stay deletable) or
    /// another adoption; adopting the same again is `Held`. An adopted
    /// namespace is not a claim: no put may write there (a claim that
    /// overlaps one is refused), its records are readable by `org`, and
    /// Coffer never deletes bytes there.
    async fn adopt(&self, org: &str, namespace: &Namespace) -> Result<Claimed>;

    /// Every adopted namespace, with the organisation that adopted it.
    async fn adopted(&self) -> Result<Vec<(String, Namespace)>>;
}
