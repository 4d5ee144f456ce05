//! Puts and deletes interleaved in a chosen order (the store or catalog
//! paused at one step while another operation runs), on SQLite, on
//! PostgreSQL (catalog and database fallback) and on S3:
//! afterwards every record reads back verified, and nothing is left
//! pending or half-deleted.

use std::sync::Arc;
use std::time::Duration;

use coffer::backend::s3::S3Store;
use coffer::backend::{Backends, BlobStore};
use coffer::catalog::Catalog;
use coffer::config::DatabaseUrl;
use coffer::db::postgres::PgDb;
use coffer::db::sqlite::SqliteDb;
use coffer::gc::{GcOptions, NoProgress};
use coffer::{Coffer, Content, Digest, Error, ObjectInfo};
use tokio::task::JoinHandle;

use crate::gates::{Gates, PausingCatalog, PausingStore};
use crate::support::{data, sqlite_config, unique_bucket};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Database,
    Postgres,
    S3,
}

struct Gated {
    coffer: Coffer,
    gates: Arc<Gates>,
    /// The preferred store, unwrapped, to look at what is really there.
    raw: Arc<dyn BlobStore>,
    catalog: Arc<dyn Catalog>,
    _dir: tempfile::TempDir,
}

impl Gated {
    async fn holds(&self, container: &str, key: &str) -> bool {
        self.raw.head(container, key).await.unwrap().is_some()
    }

    /// Every record of `orgs` reads back verified; nothing pending or
    /// tombstoned is left.
    async fn assert_consistent(&self, orgs: &[&str]) {
        for org in orgs {
            for info in self.coffer.list(org, None, 1000).await.unwrap() {
                let bytes = self.coffer.get_bytes(org, &info.sha256).await;
                assert!(bytes.is_ok(), "{org}/{}: recorded but unreadable: {bytes:?}", info.sha256);
            }
        }
        let pending = self.catalog.pending_untouched_since(u64::MAX).await.unwrap();
        let tombstones = self.catalog.tombstones().await.unwrap();
        assert!(pending.is_empty() && tombstones.is_empty(), "left: {pending:?} {tombstones:?}");
    }
}

/// Coffer on `kind`, with its store and catalog wrapped in gates; with the
/// hostile test policy when `pooled` (organisations `pool-*` share a
/// container).
async fn gated(kind: Kind, pooled: bool) -> Gated {
    let dir = tempfile::tempdir().unwrap();
    let mut config = match kind {
        Kind::Database | Kind::Postgres => sqlite_config(dir.path(), &[]),
        Kind::S3 => crate::support::s3_config(dir.path(), Some(&unique_bucket("gated")), None),
    };
    if pooled {
        config.policy = Some(crate::sandbox::guest("hostile"));
        let pool = match kind {
            Kind::Database | Kind::Postgres => "pool".to_string(),
            Kind::S3 => unique_bucket("pool"),
        };
        config.settings.insert("pool".into(), pool);
    }
    let (catalog, database): (Arc<dyn Catalog>, Arc<dyn BlobStore>) = match kind {
        Kind::Postgres => {
            let url = crate::pg_server::fresh_database("gated").await;
            config.database_url = Some(url.clone());
            let Ok(DatabaseUrl::Postgres(url)) = DatabaseUrl::parse(&url) else { unreachable!() };
            let db = Arc::new(PgDb::open(&url).await.unwrap());
            (db.clone(), db)
        }
        _ => {
            let db = Arc::new(SqliteDb::open(dir.path().join("coffer.db")).await.unwrap());
            (db.clone(), db)
        }
    };
    let gates = Arc::new(Gates::default());
    let s3: Option<Arc<dyn BlobStore>> = match kind {
        Kind::Database | Kind::Postgres => None,
        Kind::S3 => Some(Arc::new(S3Store::new(&config.s3).unwrap())),
    };
    let wrap =
        |inner: Arc<dyn BlobStore>| -> Arc<dyn BlobStore> { Arc::new(PausingStore { inner, gates: gates.clone() }) };
    let backends = Backends { database: wrap(database.clone()), s3: s3.clone().map(wrap) };
    let paused = Arc::new(PausingCatalog { inner: catalog.clone(), gates: gates.clone() });
    let coffer = Coffer::from_parts(config, paused, backends).await.unwrap();
    Gated { coffer, gates, raw: s3.unwrap_or(database), catalog, _dir: dir }
}

fn content(bytes: &[u8]) -> Content {
    Content::from_bytes(bytes.to_vec(), None).unwrap()
}

/// Put `bytes` for `org` on a task of its own.
fn spawn_put(g: &Gated, org: &'static str, bytes: &[u8]) -> JoinHandle<coffer::Result<ObjectInfo>> {
    let (coffer, bytes) = (g.coffer.clone(), bytes.to_vec());
    tokio::spawn(async move { coffer.put(org, content(&bytes)).await })
}

/// Delete `org`'s `sha` on a task of its own.
fn spawn_delete(g: &Gated, org: &'static str, sha: &Digest) -> JoinHandle<coffer::Result<ObjectInfo>> {
    let (coffer, sha) = (g.coffer.clone(), sha.to_string());
    tokio::spawn(async move { coffer.delete(org, &sha).await })
}

/// Run a scenario on both backends.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Kind::Database).await;
            }
        )*}
        mod on_postgres {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Kind::Postgres).await;
            }
        )*}
        mod on_s3 {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Kind::S3).await;
            }
        )*}
    };
}

on_both!(
    a_put_relying_on_a_record_deleted_meanwhile_stores_the_bytes_again,
    a_delete_leaves_the_bytes_a_pending_put_has_written,
    a_put_waits_while_the_bytes_it_needs_are_being_deleted,
    a_put_waits_until_a_finished_deletion_clears_its_tombstone,
    organisations_given_one_container_cannot_share_it,
    gc_reaping_a_running_puts_reservation_makes_it_write_again,
    a_read_racing_a_delete_is_not_found_never_an_integrity_error,
);

/// A get that found the record, then lost the race to a delete of it: the
/// object is simply gone ("not found"), not corrupt (an integrity error).
async fn a_read_racing_a_delete_is_not_found_never_an_integrity_error(kind: Kind) {
    let g = gated(kind, false).await;
    let info = g.coffer.put("acme", content(b"read me")).await.unwrap();
    let pause = g.gates.before_get.arm();
    let read = tokio::spawn({
        let (c, sha) = (g.coffer.clone(), info.sha256);
        async move { c.get_bytes("acme", &sha).await }
    });
    pause.reached().await;
    g.coffer.delete("acme", &info.sha256.to_string()).await.unwrap();
    pause.release();
    let err = read.await.unwrap().unwrap_err();
    assert!(matches!(&err, coffer::Error::NotFound(m) if m.contains("just deleted")), "{err}");
    g.assert_consistent(&["acme"]).await;
}

/// The reported bug: a put de-duplicated against the organisation's own
/// record, the record and its bytes were deleted, and the put then
/// recorded a reference to nothing.
async fn a_put_relying_on_a_record_deleted_meanwhile_stores_the_bytes_again(kind: Kind) {
    let g = gated(kind, false).await;
    let bytes = data(20_000, 1);
    let first = g.coffer.put("acme", content(&bytes)).await.unwrap();
    let pause = g.gates.before_commit.arm();
    let put = spawn_put(&g, "acme", &bytes);
    pause.reached().await;
    g.coffer.delete("acme", &first.sha256.to_string()).await.unwrap();
    assert!(!g.holds(&first.container, &first.key).await, "the delete removed the bytes");
    pause.release();
    let again = put.await.unwrap().unwrap();
    assert_eq!(again.deduplicated, Some(false), "written again, not 'deduplicated' against deleted bytes");
    assert!(g.coffer.get_bytes("acme", &again.sha256).await.unwrap() == bytes);
    g.assert_consistent(&["acme"]).await;
}

/// Two puts of the same content: the first is paused after writing, the
/// second commits, and its record is deleted. The first put's pending
/// reference keeps the bytes.
async fn a_delete_leaves_the_bytes_a_pending_put_has_written(kind: Kind) {
    let g = gated(kind, false).await;
    let bytes = data(30_000, 2);
    let pause = g.gates.after_put.arm();
    let first = spawn_put(&g, "acme", &bytes);
    pause.reached().await;
    let second = g.coffer.put("acme", content(&bytes)).await.unwrap();
    g.coffer.delete("acme", &second.sha256.to_string()).await.unwrap();
    assert!(g.holds(&second.container, &second.key).await, "bytes a pending put needs were deleted");
    pause.release();
    let first = first.await.unwrap().unwrap();
    assert!(g.coffer.get_bytes("acme", &first.sha256).await.unwrap() == bytes);
    g.assert_consistent(&["acme"]).await;
}

/// A delete paused between its tombstone and deleting the bytes: a put of
/// the same content waits, then writes the bytes again.
async fn a_put_waits_while_the_bytes_it_needs_are_being_deleted(kind: Kind) {
    put_waits_for(kind, false).await;
}

/// The same, paused after the bytes are deleted but before the tombstone
/// is cleared.
async fn a_put_waits_until_a_finished_deletion_clears_its_tombstone(kind: Kind) {
    put_waits_for(kind, true).await;
}

async fn put_waits_for(kind: Kind, after_bytes_are_gone: bool) {
    let g = gated(kind, false).await;
    let bytes = data(25_000, 3);
    let info = g.coffer.put("acme", content(&bytes)).await.unwrap();
    let pause = if after_bytes_are_gone { g.gates.after_delete.arm() } else { g.gates.before_delete.arm() };
    let delete = spawn_delete(&g, "acme", &info.sha256);
    pause.reached().await;
    let put = spawn_put(&g, "acme", &bytes);
    g.gates.until_a_put_waits().await;
    assert!(!put.is_finished(), "the put went ahead while the location was being deleted");
    pause.release();
    delete.await.unwrap().unwrap();
    let stored = put.await.unwrap().unwrap();
    assert_eq!(stored.deduplicated, Some(false));
    assert!(g.coffer.get_bytes("acme", &stored.sha256).await.unwrap() == bytes);
    g.assert_consistent(&["acme"]).await;
}

/// A (buggy) deployment policy gives two organisations one container:
/// while the first is still storing there, the second is refused (the
/// first holds the namespace), and the first's object is whole and stays
/// deletable by it alone.
async fn organisations_given_one_container_cannot_share_it(kind: Kind) {
    let g = gated(kind, true).await;
    let bytes = data(40_000, 4);
    let pause = g.gates.after_put.arm();
    let a = spawn_put(&g, "pool-a", &bytes);
    pause.reached().await;
    let err = g.coffer.put("pool-b", content(&bytes)).await.unwrap_err();
    assert!(matches!(&err, Error::Denied(m) if m.contains("another organisation holds")), "{err}");
    pause.release();
    let a = a.await.unwrap().unwrap();
    assert!(g.coffer.get_bytes("pool-a", &a.sha256).await.unwrap() == bytes);
    assert!(g.coffer.list("pool-b", None, 10).await.unwrap().is_empty());
    let err = g.coffer.put("pool-b", content(b"other")).await.unwrap_err();
    assert!(matches!(&err, Error::Denied(_)), "{err}");
    g.coffer.delete("pool-a", &a.sha256.to_string()).await.unwrap();
    assert!(!g.holds(&a.container, &a.key).await, "deleted with its only reference");
    g.assert_consistent(&["pool-a", "pool-b"]).await;
}

/// `coffer gc --older-than 0s` takes a running put's reservation for an
/// abandoned one and deletes its bytes; the put notices at commit and
/// writes again.
async fn gc_reaping_a_running_puts_reservation_makes_it_write_again(kind: Kind) {
    let g = gated(kind, false).await;
    let bytes = data(35_000, 5);
    let pause = g.gates.after_put.arm();
    let put = spawn_put(&g, "acme", &bytes);
    pause.reached().await;
    let report = g.coffer.gc(&GcOptions { older_than: Duration::ZERO, dry_run: false }, &NoProgress).await.unwrap();
    assert_eq!(report.reservations_released, 1, "{report:?}");
    let sha = Digest::of(&bytes);
    let (container, key) = match kind {
        Kind::Database | Kind::Postgres => ("acme".to_string(), sha.to_string()),
        Kind::S3 => (g.coffer.config().s3.bucket.clone().unwrap(), format!("acme/{sha}")),
    };
    assert!(!g.holds(&container, &key).await, "gc deleted the abandoned-looking copy");
    pause.release();
    let stored = put.await.unwrap().unwrap();
    assert_eq!(stored.sha256, sha);
    assert_eq!(stored.deduplicated, Some(false), "written again");
    assert!(g.holds(&stored.container, &stored.key).await, "written again after gc took the first copy");
    assert!(g.coffer.get_bytes("acme", &sha).await.unwrap() == bytes);
    g.assert_consistent(&["acme"]).await;
}
