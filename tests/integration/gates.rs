//! Wrappers around a real store and catalog that stop an operation at a
//! chosen step until the test lets it go, so interleavings happen in a
//! chosen order instead of by luck.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coffer::backend::{BackendKind, BlobEntry, BlobMeta, BlobStore, IncompleteUpload, Location};
use coffer::catalog::{
    Catalog, Claimed, Claims, Committed, Lease, Locations, NamedObjects, Namespace, Pending, Record, Records, Released,
    Relocated, Reserved, Token, Tombstone,
};
use coffer::content::ByteStream;
use coffer::{Content, Digest, Result};
use tokio::sync::Notify;

/// One stop: the operation announces it has arrived, then waits.
#[derive(Debug, Default)]
pub struct Pause {
    reached: Notify,
    released: Notify,
}

impl Pause {
    /// Wait until the operation arrives (panics after a minute).
    pub async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.reached.notified())
            .await
            .expect("the paused operation never arrived");
    }

    pub fn release(&self) {
        self.released.notify_one();
    }
}

/// A step that pauses the first operation to pass it once armed.
#[derive(Debug, Default)]
pub struct Gate(Mutex<Option<Arc<Pause>>>);

impl Gate {
    pub fn arm(&self) -> Arc<Pause> {
        let p = Arc::new(Pause::default());
        *self.0.lock().unwrap() = Some(p.clone());
        p
    }

    async fn pass(&self) {
        let armed = self.0.lock().unwrap().take();
        if let Some(p) = armed {
            p.reached.notify_one();
            p.released.notified().await;
        }
    }
}

/// The steps a test can stop at.
#[derive(Debug, Default)]
pub struct Gates {
    /// A store's put, after the bytes are written.
    pub after_put: Gate,
    /// A store's get, before it reads.
    pub before_get: Gate,
    /// A store's delete, before the bytes are deleted.
    pub before_delete: Gate,
    /// A store's delete, after the bytes are deleted.
    pub after_delete: Gate,
    /// The catalog's commit of a put, before it runs.
    pub before_commit: Gate,
    /// The catalog's move of a record to its new location (coffer
    /// migrate), before it runs.
    pub before_relocate: Gate,
    /// Reservations refused because the location was being deleted.
    pub tombstoned: AtomicUsize,
}

impl Gates {
    /// Wait until a put has been refused a reservation because its
    /// location is being deleted (it is then waiting for the deletion).
    pub async fn until_a_put_waits(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.tombstoned.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no put ever waited for a deletion");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[derive(Debug)]
pub struct PausingStore {
    pub inner: Arc<dyn BlobStore>,
    pub gates: Arc<Gates>,
}

#[async_trait]
impl BlobStore for PausingStore {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
    async fn head(&self, c: &str, n: &str) -> Result<Option<BlobMeta>> {
        self.inner.head(c, n).await
    }
    async fn ensure_container(&self, c: &str) -> Result<()> {
        self.inner.ensure_container(c).await
    }
    async fn put(&self, c: &str, n: &str, content: &Content) -> Result<bool> {
        let written = self.inner.put(c, n, content).await;
        self.gates.after_put.pass().await;
        written
    }
    async fn get(&self, c: &str, n: &str) -> Result<ByteStream> {
        self.gates.before_get.pass().await;
        self.inner.get(c, n).await
    }
    async fn delete(&self, c: &str, n: &str) -> Result<()> {
        self.gates.before_delete.pass().await;
        let done = self.inner.delete(c, n).await;
        self.gates.after_delete.pass().await;
        done
    }
    async fn list(&self, c: &str, p: &str, a: Option<&str>, l: usize) -> Result<Vec<BlobEntry>> {
        self.inner.list(c, p, a, l).await
    }
    async fn containers(&self) -> Result<Option<Vec<String>>> {
        self.inner.containers().await
    }
    async fn incomplete_uploads(&self, c: &str) -> Result<Vec<IncompleteUpload>> {
        self.inner.incomplete_uploads(c).await
    }
    async fn abort_upload(&self, c: &str, u: &IncompleteUpload) -> Result<()> {
        self.inner.abort_upload(c, u).await
    }
}

#[derive(Debug)]
pub struct PausingCatalog {
    pub inner: Arc<dyn Catalog>,
    pub gates: Arc<Gates>,
}

#[async_trait]
impl Records for PausingCatalog {
    async fn lookup(&self, org: &str, sha: &Digest) -> Result<Option<Record>> {
        self.inner.lookup(org, sha).await
    }
    async fn list(&self, org: &str, after: Option<&Digest>, limit: usize) -> Result<Vec<Record>> {
        self.inner.list(org, after, limit).await
    }
    async fn scan(&self, after: Option<(&str, &Digest)>, parked_only: bool, limit: usize) -> Result<Vec<Record>> {
        self.inner.scan(after, parked_only, limit).await
    }
}

#[async_trait]
impl Locations for PausingCatalog {
    async fn now(&self) -> Result<u64> {
        self.inner.now().await
    }
    async fn relocate(
        &self,
        org: &str,
        sha: &Digest,
        from: &Location,
        to: &Location,
        t: &Token,
        lease: &Lease,
    ) -> Result<Relocated> {
        self.gates.before_relocate.pass().await;
        self.inner.relocate(org, sha, from, to, t, lease).await
    }
    async fn reserve(&self, p: &Pending) -> Result<Reserved> {
        let r = self.inner.reserve(p).await;
        if matches!(r, Ok(Reserved::Tombstoned(_))) {
            self.gates.tombstoned.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    async fn touch(&self, t: &Token, now: u64) -> Result<bool> {
        self.inner.touch(t, now).await
    }
    async fn commit(&self, t: Option<&Token>, r: &Record) -> Result<Committed> {
        self.gates.before_commit.pass().await;
        self.inner.commit(t, r).await
    }
    async fn release(&self, t: &Token, untouched_since: Option<u64>, lease: Option<&Lease>) -> Result<Released> {
        self.inner.release(t, untouched_since, lease).await
    }
    async fn remove(&self, org: &str, sha: &Digest, lease: &Lease) -> Result<Option<(Record, Option<Tombstone>)>> {
        self.inner.remove(org, sha, lease).await
    }
    async fn tombstone_if_unreferenced(&self, at: &Location, lease: &Lease) -> Result<Option<Tombstone>> {
        self.inner.tombstone_if_unreferenced(at, lease).await
    }
    async fn take_over(&self, at: &Location, holder: &Token, lease: &Lease) -> Result<Option<Tombstone>> {
        self.inner.take_over(at, holder, lease).await
    }
    async fn clear_tombstone(&self, at: &Location, t: &Token) -> Result<bool> {
        self.inner.clear_tombstone(at, t).await
    }
    async fn tombstones(&self) -> Result<Vec<Tombstone>> {
        self.inner.tombstones().await
    }
    async fn pending_untouched_since(&self, cutoff: u64) -> Result<Vec<Pending>> {
        self.inner.pending_untouched_since(cutoff).await
    }
    async fn pending_at(&self, at: &Location) -> Result<Vec<Pending>> {
        self.inner.pending_at(at).await
    }
    async fn referenced(&self, b: BackendKind, c: &str, names: &[String]) -> Result<HashSet<String>> {
        self.inner.referenced(b, c, names).await
    }
    async fn containers(&self, b: BackendKind) -> Result<Vec<String>> {
        self.inner.containers(b).await
    }
}

#[async_trait]
impl Claims for PausingCatalog {
    async fn claim(&self, org: &str, ns: &Namespace) -> Result<Claimed> {
        self.inner.claim(org, ns).await
    }
    async fn claims(&self, org: &str) -> Result<Vec<Namespace>> {
        self.inner.claims(org).await
    }
    async fn adopt(&self, org: &str, ns: &Namespace) -> Result<Claimed> {
        self.inner.adopt(org, ns).await
    }
    async fn adopted(&self) -> Result<Vec<(String, Namespace)>> {
        self.inner.adopted().await
    }
}

impl NamedObjects for PausingCatalog {}
