//! [`Coffer`]: the operations platform code calls. Each one checks its
//! input, asks the policy, and does the I/O; the catalog is written only
//! after the bytes are safely stored, so a failed upload leaves no record.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;

use crate::backend::s3::S3Store;
use crate::backend::{BackendKind, Backends, BlobStore, Location};
use crate::catalog::Namespace;
use crate::catalog::boundaries::Boundaries;
use crate::catalog::lifecycle::{Lifecycle, Reservation};
use crate::catalog::{Catalog, Committed, Record};
use crate::config::{Config, DatabaseUrl};
use crate::content::{ByteStream, Content, Digest, Spool};
use crate::db::postgres::PgDb;
use crate::db::sqlite::SqliteDb;
use crate::error::{Error, Result};
use crate::org::validate_org;
use crate::policy::host::HostServices;
use crate::policy::set::{PolicySet, Slot};
use crate::policy::share::TenantShares;
use crate::policy::{Operation, Policy};

/// Times a put starts again when the reservation or record it relied on
/// was taken away under it (reaped by `coffer gc`, deleted concurrently).
pub(crate) const PUT_ATTEMPTS: u32 = 3;

/// Times a read follows its object to where it is now when its bytes are
/// not where its record said (moved, or deleted and stored again).
const FOLLOWS: u32 = 3;

/// A stored object, as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ObjectInfo {
    pub org: String,
    /// Lowercase hex SHA-256 of the content: its key.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub sha256: Digest,
    pub size: u64,
    pub content_type: String,
    /// `s3` or `database`.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub backend: BackendKind,
    /// The S3 bucket, when the object is on S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The container: the bucket on S3, the namespace in the database.
    pub container: String,
    /// The object key within the container.
    pub key: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// On a put: true when the content was already stored and nothing was
    /// uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
    /// Stored in the database because S3 was unavailable at the put
    /// (policy setting `park-when-unavailable`); `coffer migrate` (or
    /// `coffer drain`) moves it to S3.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

impl ObjectInfo {
    pub(crate) fn from_record(r: Record, deduplicated: Option<bool>) -> ObjectInfo {
        ObjectInfo {
            bucket: (r.location.backend == BackendKind::S3).then(|| r.location.container.clone()),
            org: r.org,
            sha256: r.sha256,
            size: r.size,
            content_type: r.content_type,
            backend: r.location.backend,
            container: r.location.container,
            key: r.location.name,
            created_at: r.created_at,
            deduplicated,
            parked: r.parked,
        }
    }
}

/// Coffer: put, get, stat, list and delete an organisation's files.
/// Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Coffer {
    pub(crate) services: Arc<HostServices>,
    policies: Arc<PolicySet>,
    /// Namespaces the deployment's policy declared, by (policy, org).
    namespaces: Arc<Mutex<DeclaredNamespaces>>,
    /// Where uploads that cannot be read twice are spooled, within one
    /// budget for the whole host.
    spool: Spool,
}

/// Namespaces by (deployment policy digest, organisation).
type DeclaredNamespaces = HashMap<(Digest, String), Vec<Namespace>>;

/// Organisations whose namespaces are remembered at once.
const REMEMBERED_NAMESPACES: usize = 10_000;

impl Coffer {
    /// Open Coffer with `config`: validate it, open the database, load the
    /// policy component and let it check the settings. Every configuration
    /// error surfaces here, not at the first write.
    pub async fn open(config: Config) -> Result<Coffer> {
        config.validate()?;
        let s3: Option<Arc<dyn BlobStore>> =
            if config.s3.any() { Some(Arc::new(S3Store::new(&config.s3)?)) } else { None };
        // One database holds both the catalog and the fallback's blobs.
        let (catalog, database): (Arc<dyn Catalog>, Arc<dyn BlobStore>) = match config.database()? {
            DatabaseUrl::Sqlite(path) => {
                let db = Arc::new(SqliteDb::open(&path).await?);
                (db.clone(), db)
            }
            DatabaseUrl::Postgres(url) => {
                let db = Arc::new(PgDb::open(&url).await?);
                (db.clone(), db)
            }
        };
        Coffer::from_parts(config, catalog, Backends { database, s3 }).await
    }

    /// Open Coffer on a catalog and stores the caller built (to wrap them,
    /// or to use stores of its own); `config` supplies the policy and its
    /// settings. [`Coffer::open`] builds them from the configuration.
    pub async fn from_parts(config: Config, catalog: Arc<dyn Catalog>, backends: Backends) -> Result<Coffer> {
        config.validate()?;
        let lifecycle = Lifecycle::new(catalog.clone(), backends.clone(), config.delete_timeout());
        let boundaries = Boundaries::new(catalog.clone());
        let spool = Spool::new(config.server.spool_dir.clone(), config.server.spool_limit);
        let shares = TenantShares::new(&config.limits);
        let services = Arc::new(HostServices { config, catalog, backends, lifecycle, boundaries, shares });
        let policies = Arc::new(PolicySet::load(&services).await?);
        Ok(Coffer { services, policies, namespaces: Default::default(), spool })
    }

    /// Where input that cannot be read twice is spooled (an HTTP body, a
    /// plugin's value, standard input), within the host-wide budget
    /// (`COFFER_SPOOL_LIMIT`): every upload of this Coffer shares it.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Wait, at most `within`, for clean-up that cancelled operations left
    /// running in the background (releasing reservations, aborting
    /// multipart uploads). A process that cancels work should call this
    /// before it exits; true when everything finished.
    pub async fn quiesce(&self, within: Duration) -> bool {
        crate::cleanup::cleanups().wait(within).await
    }

    /// The policy for `org` as of now; a call keeps it to the end.
    pub(crate) fn policy(&self, org: &str) -> Policy {
        self.policies.for_org(Some(org))
    }

    /// Swap in the policy component `bytes` for `org` (or, with `None`,
    /// for every organisation without its own). Calls in flight finish on
    /// the old policy; if the new one fails to load or to accept the
    /// configuration, it is refused and the old one stays.
    pub async fn replace_policy(&self, org: Option<&str>, bytes: Vec<u8>, name: &str) -> Result<()> {
        let slot = match org {
            Some(o) => {
                validate_org(o)?;
                Slot::Tenant(o.to_string())
            }
            None => Slot::Default,
        };
        self.policies.replace(&self.services, slot, bytes, name).await
    }

    /// Reload the configured policy files that changed on disk; returns
    /// how many were swapped in, or the first error (the other files are
    /// still reloaded, and each failed one keeps its old policy).
    pub async fn reload_policies(&self) -> Result<usize> {
        let (replaced, errors) = self.policies.reload_changed(&self.services).await;
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(replaced.len()),
        }
    }

    /// Watch the configured policy files, swapping in changed ones, every
    /// `every`, until the returned task is aborted (for long-running hosts).
    pub fn watch_policies(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.policies.watch(self.services.clone(), every)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.services.config
    }

    /// Store `content` for `org`. The policy decides where; identical
    /// content already stored for `org` is not uploaded again.
    ///
    /// The policy's call reserves every location before it looks or
    /// writes there; the record is then committed from the reservation in
    /// one transaction. If the reservation (or, for content de-duplicated
    /// against the organisation's own record, that record) was taken away
    /// meanwhile, nothing is recorded and the put starts again.
    pub async fn put(&self, org: &str, content: Content) -> Result<ObjectInfo> {
        validate_org(org)?;
        let namespaces = self.namespaces(org).await?;
        for attempt in 1..=PUT_ATTEMPTS {
            let (record, chosen, deduplicated) = self.place(org, &content, &namespaces).await?;
            let committed = match self.services.lifecycle.commit(&record, chosen.as_ref()).await {
                Ok(c) => c,
                Err(e) => {
                    Reservation::release_all(chosen).await;
                    return Err(e);
                }
            };
            match committed {
                Committed::Inserted(stored) => {
                    if let Some(r) = chosen {
                        r.settle();
                    }
                    return Ok(ObjectInfo::from_record(stored, Some(deduplicated)));
                }
                // A concurrent put of the same content by the same
                // organisation recorded it first: that record stands.
                Committed::Existing(stored) => {
                    Reservation::release_all(chosen).await;
                    return Ok(ObjectInfo::from_record(stored, Some(true)));
                }
                Committed::Lost => {
                    if let Some(r) = chosen {
                        r.settle();
                    }
                    tracing::info!(org, sha256 = %record.sha256, attempt, "what the put relied on was deleted meanwhile; starting again");
                }
            }
        }
        Err(kept_being_reclaimed(org, &content))
    }

    /// Let the policy place `content` for `org` (writing it, or finding it
    /// stored): the record a put would commit, the reservation of its
    /// location (none when the policy de-duplicated against the
    /// organisation's own record), and whether nothing was uploaded.
    pub(crate) async fn place(
        &self,
        org: &str,
        content: &Content,
        namespaces: &[Namespace],
    ) -> Result<(Record, Option<Reservation>, bool)> {
        let (outcome, mut reservations) =
            self.policy(org).put(&self.services, org, content, namespaces.to_vec(), false).await?;
        let record = Record {
            org: org.to_string(),
            sha256: content.sha256(),
            size: content.size(),
            content_type: content.content_type().to_string(),
            location: outcome.location.clone(),
            created_at: crate::clock::now_secs(),
            parked: outcome.parked,
        };
        let chosen =
            reservations.iter().position(|r| r.location() == &outcome.location).map(|i| reservations.swap_remove(i));
        // Whatever else the call reserved (places it looked) is not needed.
        Reservation::release_all(reservations).await;
        Ok((record, chosen, outcome.deduplicated))
    }

    /// Store the file at `path` for `org`.
    pub async fn put_path(&self, org: &str, path: impl AsRef<Path>, content_type: Option<&str>) -> Result<ObjectInfo> {
        validate_org(org)?;
        self.put(org, Content::from_path(path, content_type).await?).await
    }

    /// The record of `org`'s object with digest `sha256`.
    async fn record(&self, org: &str, sha256: &str, op: Operation) -> Result<Record> {
        validate_org(org)?;
        let digest: Digest = sha256.parse()?;
        // The record and whether its organisation holds where it lies: one
        // catalog statement.
        let (record, held) = self
            .services
            .catalog
            .lookup_held(org, &digest)
            .await?
            .ok_or_else(|| Error::NotFound(format!("organisation {org:?} has no object {digest}")))?;
        self.policy(org).authorize(&self.services, org, op, &record).await?;
        if op != Operation::Stat && !held {
            self.check_boundary(&record).await?;
        }
        Ok(record)
    }

    /// Refuse to touch a record's bytes unless they lie in a namespace its
    /// organisation holds (see [`crate::catalog::namespace`]): no byte of
    /// another organisation's object is ever read for this one.
    pub(crate) async fn check_boundary(&self, record: &Record) -> Result<()> {
        let boundaries = &self.services.boundaries;
        if boundaries.holds(&record.org, &record.location).await? {
            return Ok(());
        }
        // Only records from before claims get here: asking the policy is
        // off the common path.
        let declared = self.namespaces(&record.org).await?;
        boundaries.check_record(&record.org, &record.location, &declared).await
    }

    /// `org`'s namespaces, as the deployment's policy declares them.
    pub async fn namespaces(&self, org: &str) -> Result<Vec<Namespace>> {
        validate_org(org)?;
        let policy = self.policies.deployment();
        let key = (policy.digest(), org.to_string());
        if let Some(ns) = self.namespaces.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(ns.clone());
        }
        let declared = policy.namespaces(&self.services, org).await?;
        let mut cache = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REMEMBERED_NAMESPACES {
            cache.clear();
        }
        cache.insert(key, declared.clone());
        Ok(declared)
    }

    /// `org`'s object `sha256`, as [`Coffer::stat`] describes it, once the
    /// policy allowed `op` on it (and its bytes lie inside the
    /// organisation's namespaces): to answer for a read (`Get`) or a link
    /// without starting it.
    pub async fn authorized(&self, org: &str, sha256: &str, op: Operation) -> Result<ObjectInfo> {
        Ok(ObjectInfo::from_record(self.record(org, sha256, op).await?, None))
    }

    /// Describe `org`'s object `sha256`.
    pub async fn stat(&self, org: &str, sha256: &str) -> Result<ObjectInfo> {
        self.authorized(org, sha256, Operation::Stat).await
    }

    /// Stream `org`'s object `sha256`. The stream is verified against the
    /// digest: if the stored bytes are wrong, its last item is an
    /// [`Error::Integrity`].
    pub async fn get(&self, org: &str, sha256: &str) -> Result<(ObjectInfo, ByteStream)> {
        let (info, _, stream) = self.get_range(org, sha256, |_| Ok(None)).await?;
        Ok((info, stream))
    }

    /// Stream `org`'s object `sha256`, or the range of it that `pick`
    /// chooses once the object is found: `pick(&info)` answers `None` for
    /// the whole object, `Some((start, end))` for bytes `start..=end`
    /// (`start <= end < size`), or an error that ends the read before it
    /// starts. Only the range is read from the store, and its bytes are
    /// checked in number only (see [`crate::backend::read`] for what a
    /// range can be checked for); the whole object is verified against its
    /// digest. Answers the range that is read.
    pub async fn get_range(
        &self,
        org: &str,
        sha256: &str,
        pick: impl FnOnce(&ObjectInfo) -> Result<Option<(u64, u64)>>,
    ) -> Result<(ObjectInfo, Option<(u64, u64)>, ByteStream)> {
        let mut record = self.record(org, sha256, Operation::Get).await?;
        let range = pick(&ObjectInfo::from_record(record.clone(), None))?;
        crate::backend::check_range(range, record.size, &record.sha256.to_string())?;
        let (first, last) = range.unwrap_or((0, record.size.saturating_sub(1)));
        let stream = self.open_following(org, &mut record, first, last).await?;
        let (sha, size) = (record.sha256, record.size);
        let what = format!("{} ({})", record.sha256, record.location);
        let info = ObjectInfo::from_record(record.clone(), None);
        let stream = self.following(org, record, first, last, stream);
        Ok((info, range, crate::backend::checked(stream, sha, size, range, what)))
    }

    /// Bytes `from..=last` of `record`'s object (unchecked), from where the
    /// object is now. When they are not where the record says (the object
    /// was moved by `coffer migrate`, or deleted and stored again, since
    /// the record was read), the record is read again and followed (once
    /// the policy allows the read there and the place is inside the
    /// organisation's bounds), at most [`FOLLOWS`] times; an object that
    /// is gone is not-found, and one still recorded there but missing
    /// twice is an integrity error. S3 answering 403 (as it does for a
    /// missing key when the keys may not list the bucket) is followed
    /// the same way, and stays a configuration error for an object that
    /// has not moved.
    async fn open_following(&self, org: &str, record: &mut Record, from: u64, last: u64) -> Result<ByteStream> {
        let mut missing_once = false;
        for _ in 0..FOLLOWS {
            let store = self.services.backends.get(record.location.backend)?;
            let range = crate::backend::is_part(from, last, record.size).then_some((from, last));
            let what = format!("{} ({})", record.sha256, record.location);
            let failed = match crate::backend::open(store.as_ref(), &record.location, record.size, range, &what).await {
                Ok(stream) => return Ok(stream),
                // S3 answers 403 for a key that is gone when the keys may
                // not list the bucket: that may be a move too.
                Err(e @ (Error::NotFound(_) | Error::Config(_))) => e,
                Err(other) => return Err(other),
            };
            match self.services.catalog.lookup(org, &record.sha256).await? {
                None => {
                    return Err(Error::NotFound(format!(
                        "organisation {org:?} has no object {} (it was just deleted)",
                        record.sha256
                    )));
                }
                Some(now) if now == *record => match failed {
                    Error::NotFound(missing) if missing_once => {
                        return Err(Error::Integrity(format!(
                            "{} is recorded but missing from its backend: {missing}",
                            record.location
                        )));
                    }
                    Error::NotFound(_) => missing_once = true,
                    other => return Err(other),
                },
                Some(now) => {
                    // Where it is now is asked about as the first place
                    // was: the policy's consent, and the tenant boundary.
                    self.policy(org).authorize(&self.services, org, Operation::Get, &now).await?;
                    self.check_boundary(&now).await?;
                    *record = now;
                    missing_once = false;
                }
            }
        }
        Err(Error::NotFound(format!(
            "organisation {org:?}'s object {} keeps being moved, or deleted and stored again",
            record.sha256
        )))
    }

    /// `stream`, bytes `first..=last` of `record`'s object, continued where
    /// it broke off when the object's bytes go away under it (a database
    /// blob is read a row at a time, so a move by `coffer migrate` can
    /// delete the old copy mid-read): the rest is read from where the
    /// object is now ([`Coffer::open_following`]), at most [`FOLLOWS`]
    /// times. The result is checked as a whole by the caller, so bytes
    /// from two copies are verified as one object.
    fn following(&self, org: &str, record: Record, first: u64, last: u64, stream: ByteStream) -> ByteStream {
        struct Reading {
            coffer: Coffer,
            org: String,
            record: Record,
            stream: ByteStream,
            at: u64,
            last: u64,
            follows: u32,
            over: bool,
        }
        let reading = Reading {
            coffer: self.clone(),
            org: org.to_string(),
            record,
            stream,
            at: first,
            last,
            follows: 0,
            over: false,
        };
        futures_util::stream::unfold(reading, |mut r| async move {
            if r.over {
                return None;
            }
            loop {
                match r.stream.next().await {
                    Some(Ok(bytes)) => {
                        r.at += bytes.len() as u64;
                        return Some((Ok(bytes), r));
                    }
                    Some(Err(Error::NotFound(_))) if r.follows < FOLLOWS && r.at <= r.last => {
                        r.follows += 1;
                        tracing::info!(org = %r.org, sha256 = %r.record.sha256, at = r.at, "the object's bytes went away while it was read; reading on from where it is now");
                        let (coffer, org) = (r.coffer.clone(), r.org.clone());
                        match coffer.open_following(&org, &mut r.record, r.at, r.last).await {
                            Ok(rest) => r.stream = rest,
                            Err(e) => {
                                r.over = true;
                                return Some((Err(e), r));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        r.over = true;
                        return Some((Err(e), r));
                    }
                    None => return None,
                }
            }
        })
        .boxed()
    }

    /// `org`'s object `sha256`, in memory, verified before it is returned.
    pub async fn get_bytes(&self, org: &str, sha256: &Digest) -> Result<Bytes> {
        let (info, mut stream) = self.get(org, &sha256.to_string()).await?;
        let mut buf = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(64 << 20));
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(buf))
    }

    /// Write `org`'s object `sha256` to `path`, verified: a regular file
    /// (or a new path) is replaced atomically once every byte is verified,
    /// so it never holds wrong or partial content; a device or FIFO is
    /// written through, never replaced; a symbolic link is refused. See
    /// [`crate::content::write_to_path`].
    pub async fn get_to_path(&self, org: &str, sha256: &str, path: impl AsRef<Path>) -> Result<ObjectInfo> {
        let (info, stream) = self.get(org, sha256).await?;
        crate::content::write_to_path(stream, path.as_ref()).await?;
        Ok(info)
    }

    /// `org`'s objects in digest order, starting after `after`, at most
    /// `limit` of them.
    pub async fn list(&self, org: &str, after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>> {
        validate_org(org)?;
        let after = after.map(str::parse::<Digest>).transpose()?;
        let records = self.services.catalog.list(org, after.as_ref(), limit).await?;
        Ok(records.into_iter().map(|r| ObjectInfo::from_record(r, None)).collect())
    }

    /// Delete `org`'s reference to `sha256`, where policy allows; the bytes
    /// go when no other reference (committed, or a put in progress) needs
    /// them. If the bytes cannot be deleted now, the record is still gone
    /// and the error says so; `coffer gc` deletes them later.
    pub async fn delete(&self, org: &str, sha256: &str) -> Result<ObjectInfo> {
        let record = self.record(org, sha256, Operation::Delete).await?;
        let removed = self
            .services
            .lifecycle
            .remove(org, &record.sha256)
            .await?
            .ok_or_else(|| Error::NotFound(format!("organisation {org:?} has no object {}", record.sha256)))?;
        Ok(ObjectInfo::from_record(removed, None))
    }

    /// A direct download link for `org`'s object `sha256`, built from the
    /// configured endpoint: presigned and expiring after `expires` (the
    /// bucket stays private), `filename` naming the download and
    /// `disposition` saying whether the browser saves it (the default) or
    /// shows it; or, with `expires` `None`, the plain URL for a bucket the
    /// operator made public, which carries neither. Objects in the
    /// database have none.
    pub async fn link(
        &self,
        org: &str,
        sha256: &str,
        expires: Option<Duration>,
        filename: Option<&str>,
        disposition: crate::backend::Disposition,
    ) -> Result<String> {
        let record = self.record(org, sha256, Operation::Link).await?;
        let Location { backend, container, name } = &record.location;
        self.services.backends.get(*backend)?.link(container, name, expires, filename, disposition)
    }

    /// Time `n` policy decisions for `org`'s object `sha256` (`put`: the
    /// placement decision; otherwise `authorize` for a get), on fresh
    /// instances or one reused instance. For the benchmarks; not a stable
    /// API.
    #[doc(hidden)]
    pub async fn time_policy_decisions(
        &self,
        org: &str,
        sha256: &str,
        n: usize,
        reuse: bool,
        put: bool,
    ) -> Result<Vec<Duration>> {
        let record = self.record(org, sha256, Operation::Stat).await?;
        self.policy(org).time_decisions(&self.services, &record, n, reuse, put).await
    }

    /// Whether the database and S3 (when configured) answer now, each with
    /// its error if not; for readiness probes.
    pub async fn ready(&self) -> Vec<(BackendKind, Result<()>)> {
        // A real query on either database (no organisation is named "").
        let database = self.services.catalog.lookup("", &Digest::of(b"")).await.map(|_| ());
        let mut out = vec![(BackendKind::Database, database)];
        if let Some(s3) = &self.services.backends.s3 {
            out.push((BackendKind::S3, s3.ping().await));
        }
        out
    }

    /// The container (S3 bucket) the policy gives `org`, without contacting
    /// any backend; an error says why the organisation cannot have one.
    pub async fn container_name(&self, org: &str) -> Result<(BackendKind, String)> {
        let first = self.namespaces(org).await?.swap_remove(0);
        Ok((first.backend, first.container))
    }
}

/// A put that gave up: what it relied on kept being taken away under it.
pub(crate) fn kept_being_reclaimed(org: &str, content: &Content) -> Error {
    Error::Backend {
        message: format!(
            "storing {} for {org:?}: the location kept being deleted or reclaimed while it was stored \
             ({PUT_ATTEMPTS} attempts); nothing was recorded, try again",
            content.sha256()
        ),
        retryable: true,
        source: None,
    }
}
