//! Named objects: an organisation's containers of names, each name pointing
//! at content stored by digest (see [`crate::catalog::named`]). This is
//! what the `wasi:blobstore` host ([`crate::blobstore`]) stands on, and a
//! Rust caller can use it directly.
//!
//! Writing a name stores the content through the same put as
//! [`Coffer::put`] (the policy decides where, identical content is not
//! uploaded again, the policy's limits apply), then points the name at it
//! in one transaction. Copies and moves change names only. Replacing or
//! deleting a name drops its reference: the bytes go when nothing else
//! refers to them.

use crate::catalog::Record;
use crate::catalog::lifecycle::{Pin, Reservation};
use crate::catalog::named::{Copied, Named, NamedCommitted, Names, validate_name};
use crate::coffer::{Coffer, PUT_ATTEMPTS, kept_being_reclaimed, validate_org};
use crate::content::{ByteStream, Content, range, verify_stream};
use crate::error::{Error, Result};
use crate::policy::Operation;

/// An open named object ([`Coffer::open_named`]): its bytes stay readable
/// for as long as this lives, even if the name is deleted or replaced.
#[derive(Debug)]
pub struct OpenNamed {
    coffer: Coffer,
    named: Named,
    _pin: Pin,
}

impl OpenNamed {
    /// What the name pointed at when it was opened.
    pub fn named(&self) -> &Named {
        &self.named
    }

    /// Bytes `start..=end` (inclusive) of the object, verified: the whole
    /// object is read and its SHA-256 checked, and the range's last piece
    /// is held back until it has been, so wrong bytes end the stream with
    /// an [`Error::Integrity`] instead of completing it. A range therefore
    /// costs a read of the object up to its end. `end` past the last byte
    /// means "to the end"; `start` past it is an error.
    pub async fn stream(&self, start: u64, end: u64) -> Result<ByteStream> {
        let n = &self.named;
        if n.size == 0 && start == 0 || start < n.size {
            let store = self.coffer.services.backends.get(n.location.backend)?;
            let raw = store.get(&n.location.container, &n.location.name).await.map_err(|e| match e {
                // Pinned, so never deleted: the backend lost them.
                Error::NotFound(m) => Error::Integrity(format!(
                    "{}/{} is recorded but its bytes are missing from {}: {m}",
                    n.container, n.name, n.location
                )),
                other => other,
            })?;
            let what = format!("{}/{} ({})", n.container, n.name, n.location);
            let verified = verify_stream(raw, n.sha256, n.size, what);
            if start == 0 && end >= n.size.saturating_sub(1) {
                return Ok(verified);
            }
            return Ok(range(verified, start, end.min(n.size - 1)));
        }
        Err(Error::InvalidInput(format!(
            "range {start}..={end} starts past the end of {}/{}, which is {} bytes long",
            n.container, n.name, n.size
        )))
    }
}

fn no_container(org: &str, container: &str) -> Error {
    Error::NotFound(format!("organisation {org:?} has no container {container:?}"))
}

fn no_object(container: &str, name: &str) -> Error {
    Error::NotFound(format!("container {container:?} has no object {name:?}"))
}

/// The record a name stands for, for the policy's questions and the
/// tenant-boundary check.
fn as_record(n: &Named) -> Record {
    Record {
        org: n.org.clone(),
        sha256: n.sha256,
        size: n.size,
        content_type: n.content_type.clone(),
        location: n.location.clone(),
        created_at: n.created_at,
        parked: n.parked,
    }
}

impl Coffer {
    /// Create `org`'s container `container`; a conflict if it exists.
    pub async fn create_container(&self, org: &str, container: &str) -> Result<u64> {
        validate_org(org)?;
        validate_name("container", container)?;
        if !self.services.catalog.create_container(org, container).await? {
            return Err(Error::Conflict(format!("container {container:?} already exists")));
        }
        self.container_created(org, container).await
    }

    /// When `org`'s container `container` was created (seconds since the
    /// Unix epoch); not found if it does not exist.
    pub async fn container_created(&self, org: &str, container: &str) -> Result<u64> {
        validate_org(org)?;
        validate_name("container", container)?;
        self.services.catalog.container(org, container).await?.ok_or_else(|| no_container(org, container))
    }

    /// Whether `org`'s container `container` exists.
    pub async fn container_exists(&self, org: &str, container: &str) -> Result<bool> {
        validate_org(org)?;
        validate_name("container", container)?;
        Ok(self.services.catalog.container(org, container).await?.is_some())
    }

    /// Delete `org`'s container `container` and every name in it, where
    /// the policy allows deleting what each names.
    pub async fn delete_container(&self, org: &str, container: &str) -> Result<()> {
        self.authorize_all(org, container).await?;
        self.drop_names(org, container, Names::AllAndContainer).await
    }

    /// Delete every name in `org`'s container `container`, where the
    /// policy allows deleting what each names; the container stays.
    pub async fn clear_container(&self, org: &str, container: &str) -> Result<()> {
        self.authorize_all(org, container).await?;
        self.drop_names(org, container, Names::All).await
    }

    /// Ask the policy whether each name of the container may be deleted
    /// (one call per name: a policy may keep objects, e.g. for retention).
    async fn authorize_all(&self, org: &str, container: &str) -> Result<()> {
        let mut after = String::new();
        loop {
            let page = self.list_named(org, container, &after, 1000).await?;
            for n in &page {
                self.authorize_drop(n).await?;
            }
            match page.last() {
                Some(last) if page.len() == 1000 => after = last.name.clone(),
                _ => return Ok(()),
            }
        }
    }

    /// Whether the policy lets `n`'s reference go (deleting or replacing
    /// the name).
    async fn authorize_drop(&self, n: &Named) -> Result<()> {
        self.policy(&n.org).authorize(&self.services, &n.org, Operation::Delete, &as_record(n)).await
    }

    /// Delete the names `names` of `org`'s container `container` (a name
    /// that does not exist is not an error), where the policy allows
    /// deleting what each names.
    pub async fn delete_named(&self, org: &str, container: &str, names: &[String]) -> Result<()> {
        validate_org(org)?;
        validate_name("container", container)?;
        for name in names {
            validate_name("object", name)?;
            if let Some(n) = self.services.catalog.named(org, container, name).await? {
                self.authorize_drop(&n).await?;
            }
        }
        self.drop_names(org, container, Names::These(names)).await
    }

    async fn drop_names(&self, org: &str, container: &str, which: Names<'_>) -> Result<()> {
        validate_org(org)?;
        validate_name("container", container)?;
        match self.services.lifecycle.drop_names(org, container, which).await? {
            Some(_) => Ok(()),
            None => Err(no_container(org, container)),
        }
    }

    /// The name `name` in `org`'s container `container`.
    pub async fn named(&self, org: &str, container: &str, name: &str) -> Result<Named> {
        self.find_named(org, container, name).await?.ok_or_else(|| no_object(container, name))
    }

    /// The name `name` in `org`'s container `container`, if it exists; not
    /// found if the container does not.
    pub async fn find_named(&self, org: &str, container: &str, name: &str) -> Result<Option<Named>> {
        validate_org(org)?;
        validate_name("container", container)?;
        validate_name("object", name)?;
        match self.services.catalog.named(org, container, name).await? {
            Some(n) => {
                self.policy(org).authorize(&self.services, org, Operation::Stat, &as_record(&n)).await?;
                Ok(Some(n))
            }
            None if self.services.catalog.container(org, container).await?.is_none() => {
                Err(no_container(org, container))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` names of `org`'s container `container` in name order,
    /// after `after` (`""` for the first page).
    pub async fn list_named(&self, org: &str, container: &str, after: &str, limit: usize) -> Result<Vec<Named>> {
        validate_org(org)?;
        validate_name("container", container)?;
        self.services
            .catalog
            .list_named(org, container, after, limit)
            .await?
            .ok_or_else(|| no_container(org, container))
    }

    /// Store `content` under `name` in `org`'s container `container`,
    /// replacing what the name pointed at.
    pub async fn put_named(&self, org: &str, container: &str, name: &str, content: Content) -> Result<Named> {
        validate_org(org)?;
        validate_name("container", container)?;
        validate_name("object", name)?;
        // Refused before anything is stored, and checked again when the
        // name is written.
        self.container_created(org, container).await?;
        // Replacing a name lets its content go: the policy may keep it.
        if let Some(old) = self.services.catalog.named(org, container, name).await? {
            self.authorize_drop(&old).await?;
        }
        let namespaces = self.namespaces(org).await?;
        for attempt in 1..=PUT_ATTEMPTS {
            let (record, chosen, _) = self.place(org, &content, &namespaces).await?;
            let named = Named {
                org: org.to_string(),
                container: container.to_string(),
                name: name.to_string(),
                sha256: record.sha256,
                size: record.size,
                content_type: record.content_type,
                location: record.location,
                created_at: record.created_at,
                parked: record.parked,
            };
            let lease = self.services.lifecycle.lease();
            let asked = std::time::Instant::now();
            let token = chosen.as_ref().map(Reservation::token);
            let committed = match self.services.catalog.commit_named(token, &named, &lease).await {
                Ok(c) => c,
                Err(e) => {
                    Reservation::release_all(chosen).await;
                    return Err(e);
                }
            };
            match committed {
                NamedCommitted::Done(stored, replaced) => {
                    if let Some(r) = chosen {
                        r.settle();
                    }
                    if let Some(t) = replaced {
                        self.services.lifecycle.finish_all(&[t], asked).await?;
                    }
                    return Ok(*stored);
                }
                NamedCommitted::NoContainer => {
                    Reservation::release_all(chosen).await;
                    return Err(no_container(org, container));
                }
                NamedCommitted::Lost => {
                    if let Some(r) = chosen {
                        r.settle();
                    }
                    tracing::info!(
                        org,
                        container,
                        name,
                        attempt,
                        "what the put relied on was deleted meanwhile; starting again"
                    );
                }
            }
        }
        Err(kept_being_reclaimed(org, &content))
    }

    /// Point `to` (container, name) at what `from` names, without copying
    /// a byte; with `remove_source`, `from` is dropped in the same
    /// transaction (a move). The destination container must exist.
    pub async fn copy_named(
        &self,
        org: &str,
        from: (&str, &str),
        to: (&str, &str),
        remove_source: bool,
    ) -> Result<Named> {
        validate_org(org)?;
        for (container, name) in [from, to] {
            validate_name("container", container)?;
            validate_name("object", name)?;
        }
        let source = self.named(org, from.0, from.1).await?;
        let record = as_record(&source);
        self.policy(org).authorize(&self.services, org, Operation::Get, &record).await?;
        if remove_source {
            self.authorize_drop(&source).await?;
        }
        if let Some(replaced) = self.services.catalog.named(org, to.0, to.1).await? {
            self.authorize_drop(&replaced).await?;
        }
        let lifecycle = &self.services.lifecycle;
        let (lease, asked) = (lifecycle.lease(), std::time::Instant::now());
        match self.services.catalog.copy_named(org, from, to, remove_source, &lease).await? {
            Copied::Done(copy, tombstones) => {
                lifecycle.finish_all(&tombstones, asked).await?;
                Ok(*copy)
            }
            Copied::NoSource => Err(no_object(from.0, from.1)),
            Copied::NoContainer => Err(no_container(org, to.0)),
        }
    }

    /// Open `org`'s object `name` in container `container` for reading,
    /// where the policy allows reading it: its bytes stay readable while
    /// the [`OpenNamed`] lives, whatever happens to the name.
    pub async fn open_named(&self, org: &str, container: &str, name: &str) -> Result<OpenNamed> {
        validate_org(org)?;
        validate_name("container", container)?;
        validate_name("object", name)?;
        let Some((named, pin)) = self.services.lifecycle.pin_named(org, container, name).await? else {
            return Err(match self.services.catalog.container(org, container).await? {
                Some(_) => no_object(container, name),
                None => no_container(org, container),
            });
        };
        let record = as_record(&named);
        self.policy(org).authorize(&self.services, org, Operation::Get, &record).await?;
        self.check_boundary(&record).await?;
        Ok(OpenNamed { coffer: self.clone(), named, _pin: pin })
    }
}
