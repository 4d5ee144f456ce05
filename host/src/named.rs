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
use crate::coffer::{Coffer, PUT_ATTEMPTS, kept_being_reclaimed};
use crate::content::{ByteStream, Content};
use crate::error::{Error, Result};
use crate::org::validate_org;
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

    /// How many bytes `start..=end` (inclusive) holds: `end` past the
    /// last byte means "to the end"; a start after the end, or past the
    /// last byte (of a non-empty object), is an error.
    pub fn range_len(&self, start: u64, end: u64) -> Result<u64> {
        let n = &self.named;
        if start > end {
            return Err(Error::InvalidInput(format!("range {start}..={end} of {:?}: start is after end", n.name)));
        }
        match n.size {
            0 if start == 0 => Ok(0),
            size if start >= size => Err(Error::InvalidInput(format!(
                "range {start}..={end} starts past the end of {}/{}, which is {size} bytes long",
                n.container, n.name
            ))),
            size => Ok(end.min(size - 1) - start + 1),
        }
    }

    /// Bytes `start..=end` (as [`OpenNamed::range_len`] takes them) of the
    /// object. Only the range is read; the whole object is verified
    /// against its SHA-256 as it streams (wrong bytes end the stream with
    /// an [`Error::Integrity`] instead of completing it), and a part of it
    /// is checked in number only: see [`crate::backend::read`] for what a
    /// range can be checked for.
    pub async fn stream(&self, start: u64, end: u64) -> Result<ByteStream> {
        let len = self.range_len(start, end)?;
        let n = &self.named;
        let store = self.coffer.services.backends.get(n.location.backend)?;
        let range = (len > 0).then(|| (start, start + len - 1));
        // Said to the plugin: its names, not where the bytes are.
        let what = format!("{}/{}", n.container, n.name);
        crate::backend::read(store.as_ref(), &n.location, n.sha256, n.size, range, what).await.map_err(|e| match e {
            // Pinned, so never deleted (unless gc reaped the pin): the backend lost them.
            Error::NotFound(m) => {
                tracing::error!(location = %n.location, error = %m, "a named object's bytes are missing");
                Error::Integrity(format!(
                    "{}/{} is recorded but its bytes are missing (lost by the backend, or deleted after coffer \
                     gc reaped this open value's pin)",
                    n.container, n.name
                ))
            }
            other => other,
        })
    }
}

/// Times a write asks again about a name others keep writing meanwhile.
const NAME_RACES: u32 = 16;

/// Most names deleted (or listed for a clear) in one call.
pub const MAX_NAMES_PER_CALL: usize = 1000;

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
    /// the policy allows deleting what each names. A name written into it
    /// meanwhile makes it a conflict (nothing the policy did not see is
    /// dropped).
    pub async fn delete_container(&self, org: &str, container: &str) -> Result<()> {
        self.clear_container(org, container).await?;
        self.drop_names(org, container, Names::Container).await
    }

    /// Delete every name in `org`'s container `container`, where the
    /// policy allows deleting what each names (asked once per name: a
    /// policy may keep objects, e.g. for retention); the container stays.
    /// Page by page: each page's names are dropped in one transaction,
    /// only while they still name what the policy was asked about.
    pub async fn clear_container(&self, org: &str, container: &str) -> Result<()> {
        let mut after = String::new();
        loop {
            let page = self.list_named(org, container, &after, MAX_NAMES_PER_CALL).await?;
            let mut checked = Vec::with_capacity(page.len());
            for n in &page {
                self.authorize_drop(n).await?;
                checked.push((n.name.clone(), n.version()));
            }
            self.drop_names(org, container, Names::These(&checked)).await?;
            match page.last() {
                Some(last) if page.len() == MAX_NAMES_PER_CALL => after = last.name.clone(),
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
    /// deleting what each names; at most 1000 names at a time.
    pub async fn delete_named(&self, org: &str, container: &str, names: &[String]) -> Result<()> {
        validate_org(org)?;
        validate_name("container", container)?;
        if names.len() > MAX_NAMES_PER_CALL {
            return Err(Error::InvalidInput(format!(
                "{} names to delete at once; at most {MAX_NAMES_PER_CALL} per call",
                names.len()
            )));
        }
        let mut checked = Vec::with_capacity(names.len());
        for name in names {
            validate_name("object", name)?;
            if let Some(n) = self.services.catalog.named(org, container, name).await? {
                self.authorize_drop(&n).await?;
                checked.push((n.name.clone(), n.version()));
            }
        }
        self.drop_names(org, container, Names::These(&checked)).await
    }

    async fn drop_names(&self, org: &str, container: &str, which: Names<'_>) -> Result<()> {
        validate_org(org)?;
        validate_name("container", container)?;
        match self.services.lifecycle.drop_names(org, container, which).await? {
            true => Ok(()),
            false => Err(no_container(org, container)),
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
            match self.commit_name(&named, chosen.as_ref()).await {
                Ok(NamedCommitted::Done(stored, _)) => {
                    if let Some(r) = chosen {
                        r.settle();
                    }
                    return Ok(*stored);
                }
                Ok(NamedCommitted::Lost) => {
                    if let Some(r) = chosen {
                        r.settle();
                    }
                    tracing::info!(org, container, name, attempt, "what the put relied on was deleted; starting again");
                }
                Ok(NamedCommitted::NoContainer) => {
                    Reservation::release_all(chosen).await;
                    return Err(no_container(org, container));
                }
                Ok(NamedCommitted::Changed) => {
                    Reservation::release_all(chosen).await;
                    return Err(Error::Conflict(format!(
                        "{container}/{name} kept being written by others while this value was written under it; \
                         try again"
                    )));
                }
                Err(e) => {
                    Reservation::release_all(chosen).await;
                    return Err(e);
                }
            }
        }
        Err(kept_being_reclaimed(org, &content))
    }

    /// Point `named` at the content `reservation` holds (or, with none,
    /// the organisation's record of it), replacing what the name names
    /// only once the policy let that go; a name written by others
    /// meanwhile is asked about again (a bounded number of times, then
    /// `Changed`). Bytes the replaced name left unreferenced are deleted.
    async fn commit_name(&self, named: &Named, reservation: Option<&Reservation>) -> Result<NamedCommitted> {
        let (catalog, lifecycle) = (&self.services.catalog, &self.services.lifecycle);
        for race in 0..NAME_RACES {
            if race > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1 + fastrand::u64(..10))).await;
            }
            let replaces = catalog.named(&named.org, &named.container, &named.name).await?;
            if let Some(old) = replaces.as_ref().filter(|old| old.sha256 != named.sha256) {
                self.authorize_drop(old).await?;
            }
            let replaces = replaces.map(|old| old.version());
            let (lease, asked) = (lifecycle.lease(), std::time::Instant::now());
            let token = reservation.map(Reservation::token);
            match catalog.commit_named(token, named, replaces.as_ref(), &lease).await? {
                NamedCommitted::Done(stored, replaced) => {
                    if let Some(t) = &replaced {
                        lifecycle.finish_all(std::slice::from_ref(t), asked).await;
                    }
                    return Ok(NamedCommitted::Done(stored, replaced));
                }
                NamedCommitted::Changed => {}
                other => return Ok(other),
            }
        }
        Ok(NamedCommitted::Changed)
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
        let lifecycle = &self.services.lifecycle;
        for _ in 0..PUT_ATTEMPTS {
            let source = self.named(org, from.0, from.1).await?;
            self.policy(org).authorize(&self.services, org, Operation::Get, &as_record(&source)).await?;
            let dest = if from == to { None } else { self.services.catalog.named(org, to.0, to.1).await? };
            // What lets content go (the source of a move, a replaced
            // destination) is the policy's to allow; a move onto itself,
            // or a destination already naming the same content, drops
            // nothing.
            if remove_source && from != to {
                self.authorize_drop(&source).await?;
            }
            if let Some(replaced) = dest.as_ref().filter(|d| d.sha256 != source.sha256) {
                self.authorize_drop(replaced).await?;
            }
            let (source_version, dest_version) = (source.version(), dest.as_ref().map(Named::version));
            let expect = (&source_version, dest_version.as_ref());
            let (lease, asked) = (lifecycle.lease(), std::time::Instant::now());
            match self.services.catalog.copy_named(org, from, to, remove_source, expect, &lease).await? {
                Copied::Done(copy, tombstones) => {
                    lifecycle.finish_all(&tombstones, asked).await;
                    return Ok(*copy);
                }
                Copied::NoSource => return Err(no_object(from.0, from.1)),
                Copied::NoContainer => return Err(no_container(org, to.0)),
                Copied::Changed => tracing::info!(org, "a name changed while it was copied; asking again"),
            }
        }
        Err(Error::Conflict(format!(
            "{}/{} or {}/{} kept changing while it was copied; try again",
            from.0, from.1, to.0, to.1
        )))
    }

    /// Open `org`'s object `name` in container `container` for reading,
    /// where the policy allows reading it: its bytes stay readable while
    /// the [`OpenNamed`] lives, whatever happens to the name.
    pub async fn open_named(&self, org: &str, container: &str, name: &str) -> Result<OpenNamed> {
        validate_org(org)?;
        validate_name("container", container)?;
        validate_name("object", name)?;
        // The policy is asked before anything is pinned; what is pinned is
        // exactly what it was asked about, or it is asked again.
        for _ in 0..PUT_ATTEMPTS {
            let checked = self.named(org, container, name).await?;
            let record = as_record(&checked);
            self.policy(org).authorize(&self.services, org, Operation::Get, &record).await?;
            self.check_boundary(&record).await?;
            let Some((named, pin)) = self.services.lifecycle.pin_named(org, container, name).await? else {
                return Err(no_object(container, name));
            };
            if named == checked {
                return Ok(OpenNamed { coffer: self.clone(), named, _pin: pin });
            }
        }
        Err(Error::Conflict(format!("{container}/{name} kept changing while it was opened; try again")))
    }
}
