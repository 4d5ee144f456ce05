//! The embedded database: SQLite holding both blobs (in chunk rows, so a
//! blob of any size moves with bounded memory) and the catalog.
//!
//! - this file: opening, numbered migrations (`migrations/NNNN_*.sql`,
//!   applied in one transaction each, so two processes opening the same
//!   file at once cannot both migrate), the connection pool, and retrying
//!   a busy database;
//! - `blobs.rs`: the [`BlobStore`](crate::backend::BlobStore) (staged in short
//!   transactions, published in one);
//! - the [`Catalog`](crate::catalog::Catalog), one file per concern as in
//!   `catalog/` (each method one transaction; writes use `BEGIN
//!   IMMEDIATE`, which takes the database's write lock at the start, so the
//!   checks and the change in one method see no other writer in between,
//!   in this process or any other): `records.rs`,
//!   `locations.rs`, `claims.rs`, `named.rs`; the statements they share
//!   in `rules.rs` (the catalog's rules) and `rows.rs` (rows as types);
//! - `turns.rs`: writers take the write lock in the order they came;
//! - `group.rs`: acknowledging commits share syncs of the WAL.
//!
//! rusqlite is blocking, so every operation runs on tokio's blocking pool.
//! WAL mode lets reads go on while another process writes. The commits
//! that acknowledge an operation (a put's record, a delete) are synced to
//! disk before they return, so they survive a power loss; concurrent ones
//! share their syncs (group commit, `group.rs`). The others
//! (reservations, staged blob rows, tombstone bookkeeping) run with
//! `NORMAL`. That is safe because the WAL is one file written in order:
//! syncing it for an acknowledging commit makes every earlier commit
//! durable too, and what a power loss may drop before that (a reservation,
//! a staged row, a cleared tombstone) is exactly what `coffer gc` or a
//! lease takeover redoes.

mod blobs;
mod claims;
mod group;
mod locations;
mod named;
mod records;
mod rows;
mod rules;
mod turns;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::config::is_in_memory;
use crate::error::{Error, Result};

/// Idle connections kept for reuse.
const POOL_MAX: usize = 8;

/// Bytes a checkpointed WAL is cut back to (`journal_size_limit`).
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// The schema, one numbered step at a time. A database records the steps
/// it has taken in `coffer_schema`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_lifecycle.sql")),
    (3, include_str!("migrations/0003_claims.sql")),
    (4, include_str!("migrations/0004_moves.sql")),
    (5, include_str!("migrations/0005_named.sql")),
];

/// How SQLite syncs commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Commits that acknowledge an operation are on disk before they
    /// return (Coffer's setting: an acknowledged put or delete survives a
    /// power loss), and with them everything committed before.
    Full,
    /// Every commit may be lost on power loss (never on a process crash).
    /// Only for measuring what `Full` costs (BENCHMARKS.md).
    Normal,
}

/// How the database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// How long one statement waits for another writer's lock (short, so
    /// that an operation whose caller gave up stops soon: see
    /// `SqliteDb::retry_busy`).
    pub busy_timeout: Duration,
    /// How long an operation keeps retrying while the database stays busy.
    pub busy_deadline: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(1),
            busy_deadline: Duration::from_secs(30),
        }
    }
}

/// The SQLite database: blobs and catalog.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    path: PathBuf,
    options: SqliteOptions,
    pool: Arc<Mutex<Vec<Connection>>>,
    /// Acknowledging commits wait here for a shared sync.
    group: Arc<group::GroupSync>,
}

impl SqliteDb {
    /// Open (creating and migrating if needed) the database file at `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteDb> {
        SqliteDb::open_with(path, SqliteOptions::default()).await
    }

    /// Open with explicit options.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteDb> {
        let path = path.as_ref().to_path_buf();
        if is_in_memory(&path.to_string_lossy()) {
            return Err(Error::Config(
                "an in-memory SQLite database (:memory:) would be a different, empty database for every \
                 connection and lose everything on exit: give COFFER_DATABASE_URL a file, e.g. sqlite:coffer.db"
                    .into(),
            ));
        }
        let db = SqliteDb { path, options, pool: Arc::new(Mutex::new(Vec::new())), group: Arc::default() };
        db.with_conn(migrate).await?;
        Ok(db)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(|e| Error::Backend {
            message: format!("cannot open the SQLite database {}: {e}", self.path.display()),
            retryable: false,
            source: Some(Box::new(e)),
        })?;
        conn.busy_timeout(self.options.busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Once checkpointed, a WAL that a burst of writes grew is cut back
        // to this size, instead of keeping its largest size for good.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        Ok(conn)
    }

    /// A connection from the pool, or a new one.
    fn checkout(&self) -> Result<Connection> {
        let pooled = self.pool.lock().map_err(|_| Error::Internal("database pool poisoned".into()))?.pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.retry_busy(|| self.connect()),
        }
    }

    /// Give a connection back to the pool (or close it if the pool is full).
    fn checkin(&self, conn: Connection) {
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(conn);
        }
    }

    /// Run `f` again while the database is busy (another writer holds the
    /// lock past `busy_timeout`, or a snapshot went stale), with jittered
    /// backoff, until `busy_deadline`. Blocking.
    fn retry_busy<T>(&self, f: impl FnMut() -> Result<T>) -> Result<T> {
        self.retry_busy_unless(f, &AtomicBool::new(false))
    }

    /// [`SqliteDb::retry_busy`], giving up as soon as `cancelled` is set
    /// (the caller's future was dropped: a deletion that ran out of time
    /// must not happen later behind its back).
    fn retry_busy_unless<T>(&self, mut f: impl FnMut() -> Result<T>, cancelled: &AtomicBool) -> Result<T> {
        let start = Instant::now();
        let mut failures = 0u32;
        loop {
            if cancelled.load(Ordering::SeqCst) {
                return Err(Error::Backend {
                    message: format!("an operation on {} was cancelled while it waited", self.path.display()),
                    retryable: true,
                    source: None,
                });
            }
            match f() {
                Err(e) if is_busy(&e) => {
                    failures += 1;
                    let bound = Duration::from_millis(5).saturating_mul(1 << failures.min(6));
                    let delay = bound.mul_f64(fastrand::f64());
                    if start.elapsed() + delay > self.options.busy_deadline {
                        return Err(Error::Backend {
                            message: format!(
                                "the SQLite database {} stayed busy (another writer held it) for {:.1} s; gave up \
                                 after {failures} attempts: {e}",
                                self.path.display(),
                                start.elapsed().as_secs_f64()
                            ),
                            retryable: true,
                            source: Some(Box::new(e)),
                        });
                    }
                    tracing::debug!(path = %self.path.display(), attempt = failures, error = %e, "database busy, retrying");
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }

    /// Run `f` with a pooled connection on the blocking pool, again while
    /// the database is busy: `f` must be safe to repeat (one transaction
    /// that either committed or rolled back).
    async fn with_conn<T, F>(&self, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T> + Send + 'static,
    {
        /// Tells the blocking task its caller went away.
        struct CancelOnDrop(Arc<AtomicBool>);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel = CancelOnDrop(cancelled.clone());
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.checkout()?;
            let out = db.retry_busy_unless(|| f(&mut conn), &cancelled);
            db.checkin(conn);
            out
        })
        .await?
    }

    /// [`SqliteDb::with_conn`] for a transaction that acknowledges an
    /// operation: durable before it returns (with `Full`). It commits
    /// without a sync, releasing the write lock at once, then waits for a
    /// sync of the WAL begun after its commit, shared with every other
    /// commit waiting (group commit: `group.rs`).
    async fn with_durable_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T> + Send + 'static,
    {
        let mut f = f;
        // The WAL's name as SQLite resolved it (symbolic links followed,
        // URIs decoded): the file that holds the commit.
        let (out, wal) = self
            .with_conn(move |conn| {
                let out = f(conn)?;
                Ok((out, conn.path().map(|p| PathBuf::from(format!("{p}-wal")))))
            })
            .await?;
        if self.options.synchronous == Synchronous::Full {
            let Some(wal) = wal else {
                return Err(Error::Internal("SQLite names no file for this database: cannot sync it".into()));
            };
            self.group.durable(|| async move { tokio::task::spawn_blocking(move || sync_wal(&wal)).await? }).await?;
        }
        Ok(out)
    }
}

/// Sync the WAL file `wal` (every commit in it so far) to disk. It exists
/// while any connection is open, and this process holds one, so a
/// missing file is an error, never a reason to acknowledge.
fn sync_wal(wal: &Path) -> Result<()> {
    std::fs::File::open(wal).and_then(|f| f.sync_data()).map_err(|e| Error::Backend {
        message: format!(
            "the change is committed but not confirmed on disk: cannot sync the SQLite WAL {}: {e}",
            wal.display()
        ),
        retryable: false,
        source: Some(Box::new(e)),
    })
}

/// Whether `e` is SQLite saying another connection holds the lock.
fn is_busy(e: &Error) -> bool {
    let Error::Backend { source: Some(source), .. } = e else { return false };
    source.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    })
}

/// Apply the migrations this database has not had, in one IMMEDIATE
/// transaction (so a second process opening the file at the same time
/// waits, then finds the work done).
fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS coffer_schema (version INTEGER NOT NULL)")?;
    let latest = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let recorded: Option<i64> = tx.query_row("SELECT max(version) FROM coffer_schema", [], |r| r.get(0))?;
    // Databases made before versioning have the first schema but no row.
    let current = match recorded {
        Some(v) => v,
        None => {
            let has_objects: Option<String> = tx
                .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'objects'", [], |r| r.get(0))
                .optional()?;
            i64::from(has_objects.is_some())
        }
    };
    if current > latest {
        return Err(Error::Config(format!(
            "the database's schema is version {current}, newer than this Coffer knows (up to {latest}): \
             upgrade Coffer, or point COFFER_DATABASE_URL at another database"
        )));
    }
    if recorded == Some(latest) {
        return Ok(());
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql)?;
        tracing::info!(version, "applied database migration");
    }
    tx.execute("DELETE FROM coffer_schema", [])?;
    tx.execute("INSERT INTO coffer_schema (version) VALUES (?1)", params![latest])?;
    tx.commit()?;
    Ok(())
}

/// Seconds since the Unix epoch, as SQLite stores it.
fn now() -> i64 {
    crate::clock::now_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A durable commit waits for a sync of the WAL (one per commit when
    /// alone; shared when many commit at once), other commits for none,
    /// and with `Normal` nothing is synced. Every commit is there after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn acknowledging_commits_are_synced_and_share_their_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(dir.path().join("t.db")).await.unwrap();
        db.with_conn(|c| Ok(c.execute_batch("CREATE TABLE t (n INTEGER)")?)).await.unwrap();
        let insert = |n: i64| {
            move |c: &mut Connection| -> Result<()> {
                c.execute("INSERT INTO t (n) VALUES (?1)", params![n])?;
                Ok(())
            }
        };
        let before = db.group.syncs();
        db.with_conn(insert(0)).await.unwrap();
        assert_eq!(db.group.syncs(), before, "a commit that acknowledges nothing is not synced");
        db.with_durable_conn(insert(1)).await.unwrap();
        assert_eq!(db.group.syncs(), before + 1, "an acknowledging commit alone gets a sync of its own");
        let at_once: Vec<_> = (2..66)
            .map(|n| {
                tokio::spawn({
                    let db = db.clone();
                    async move { db.with_durable_conn(insert(n)).await }
                })
            })
            .collect();
        for t in at_once {
            t.await.unwrap().unwrap();
        }
        let shared = db.group.syncs() - before - 1;
        assert!((1..64).contains(&shared), "64 commits at once took {shared} syncs");
        let rows: i64 = db.with_conn(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(rows, 66);
        let mode: String =
            db.with_conn(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?)).await.unwrap();
        assert_eq!(mode, "wal");
        let normal = SqliteDb::open_with(
            dir.path().join("n.db"),
            SqliteOptions { synchronous: Synchronous::Normal, ..SqliteOptions::default() },
        )
        .await
        .unwrap();
        normal.with_conn(|c| Ok(c.execute_batch("CREATE TABLE t (n INTEGER)")?)).await.unwrap();
        normal.with_durable_conn(insert(1)).await.unwrap();
        assert_eq!(normal.group.syncs(), 0);
    }

    /// Opened through a symbolic link, the database's WAL lies beside the
    /// link's target: that is the file synced (a missing WAL is an error,
    /// never an acknowledgement).
    #[tokio::test]
    async fn a_database_opened_through_a_link_syncs_the_real_wal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real/t.db"), dir.path().join("link.db")).unwrap();
        let db = SqliteDb::open(dir.path().join("link.db")).await.unwrap();
        db.with_durable_conn(|c| Ok(c.execute_batch("CREATE TABLE t (n INTEGER)")?)).await.unwrap();
        assert!(dir.path().join("real/t.db-wal").exists());
        assert!(!dir.path().join("link.db-wal").exists());
        assert!(sync_wal(&dir.path().join("link.db-wal")).is_err());
    }

    #[tokio::test]
    async fn in_memory_databases_are_refused() {
        for path in [":memory:", "file::memory:?cache=shared&mode=memory", ""] {
            let err = SqliteDb::open(path).await.unwrap_err();
            assert!(matches!(&err, Error::Config(m) if m.contains(":memory:")), "{path}: {err}");
        }
    }

    /// Records from before claims become their organisations' claims, so
    /// no one is locked out of their own files; the first organisation at
    /// a place keeps it.
    #[tokio::test]
    async fn records_from_before_claims_become_claims() {
        use crate::catalog::{Claims, Namespace};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        let sha = crate::Digest::of(b"x").to_string();
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0].1).unwrap();
            c.execute_batch(MIGRATIONS[1].1).unwrap();
            c.execute_batch(
                "CREATE TABLE coffer_schema (version INTEGER NOT NULL); INSERT INTO coffer_schema VALUES (2)",
            )
            .unwrap();
            let row = |org: &str, backend: &str, container: &str, name: &str, at: i64| {
                c.execute(
                    "INSERT INTO objects (org, sha256, size, content_type, backend, container, name, created_at)
                     VALUES (?1, ?2, 1, 'x', ?3, ?4, ?5, ?6)",
                    params![org, format!("{at:064x}"), backend, container, name, at],
                )
                .unwrap();
            };
            row("acme", "database", "acme", &sha, 1);
            row("acme", "s3", "shared", &format!("acme/{sha}"), 2);
            row("acme", "s3", "old-bucket", "not-a-digest", 3);
            // A later organisation at the same place does not get it.
            row("mallory", "s3", "shared", &format!("acme/{sha}"), 9);
        }
        let db = SqliteDb::open(&path).await.unwrap();
        let ns = |backend, container: &str, prefix: &str| Namespace {
            backend,
            container: container.into(),
            prefix: prefix.into(),
        };
        use crate::backend::BackendKind::{Database, S3};
        assert_eq!(
            db.claims("acme").await.unwrap(),
            vec![ns(Database, "acme", ""), ns(S3, "shared", "acme/"), ns(S3, "old-bucket", "not-a-digest")]
        );
        assert!(db.claims("mallory").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_database_from_before_versioning_is_migrated_and_keeps_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0].1).unwrap();
            c.execute_batch("CREATE TABLE coffer_schema (version INTEGER NOT NULL)").unwrap();
            c.execute("INSERT INTO blobs VALUES ('acme', 'k', 5, ?1)", [crate::Digest::of(b"hello").to_string()])
                .unwrap();
            c.execute("INSERT INTO blob_chunks VALUES ('acme', 'k', 0, ?1)", [b"hello".to_vec()]).unwrap();
        }
        let db = SqliteDb::open(&path).await.unwrap();
        let version: i64 =
            db.with_conn(|c| Ok(c.query_row("SELECT version FROM coffer_schema", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().0);
        let stream = crate::backend::BlobStore::get(&db, "acme", "k").await.unwrap();
        let bytes: Vec<_> = futures_util::StreamExt::collect::<Vec<_>>(stream).await;
        assert_eq!(bytes.into_iter().map(|b| b.unwrap()).collect::<Vec<_>>().concat(), b"hello");
        // A new blob gets an id above the migrated one.
        let content = crate::Content::from_bytes("new", None).unwrap();
        crate::backend::BlobStore::put(&db, "acme", "n", &content).await.unwrap();
        let ids: Vec<i64> = db
            .with_conn(|c| {
                let mut s = c.prepare("SELECT blob_id FROM blobs ORDER BY name")?;
                Ok(s.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .await
            .unwrap();
        assert!(ids[1] > ids[0], "the new blob (n) got an id above the migrated one (k): {ids:?}");
    }

    #[tokio::test]
    async fn a_schema_newer_than_this_coffer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        SqliteDb::open(&path).await.unwrap();
        Connection::open(&path).unwrap().execute("UPDATE coffer_schema SET version = 99", []).unwrap();
        let err = SqliteDb::open(&path).await.unwrap_err();
        assert!(matches!(&err, Error::Config(m) if m.contains("version 99")), "{err}");
    }

    #[tokio::test]
    async fn a_busy_database_is_retried_until_the_lock_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let options = SqliteOptions { busy_timeout: Duration::from_millis(20), ..SqliteOptions::default() };
        let db = SqliteDb::open_with(&path, options).await.unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            holder.execute_batch("COMMIT").unwrap();
        });
        // Far longer than busy_timeout: only the retries get it through.
        let content = crate::Content::from_bytes("waited", None).unwrap();
        assert!(crate::backend::BlobStore::put(&db, "acme", "k", &content).await.unwrap());
        release.join().unwrap();
    }

    #[tokio::test]
    async fn a_database_busy_past_the_deadline_is_a_clear_retryable_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck.db");
        let options = SqliteOptions {
            busy_timeout: Duration::from_millis(20),
            busy_deadline: Duration::from_millis(300),
            ..SqliteOptions::default()
        };
        let db = SqliteDb::open_with(&path, options).await.unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let content = crate::Content::from_bytes("never", None).unwrap();
        let err = crate::backend::BlobStore::put(&db, "acme", "k", &content).await.unwrap_err();
        assert!(err.is_retryable() && err.to_string().contains("stayed busy"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        holder.execute_batch("ROLLBACK").unwrap();
    }
}
