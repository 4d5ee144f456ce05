//! PostgreSQL: the catalog and the database fallback shared by several
//! Coffer hosts. The same concepts as the SQLite file (records, the
//! location lifecycle, namespace claims, blobs in chunk rows), so the CLI
//! and library behave the same on both.
//!
//! - this file: connecting (a pool per host, TLS through rustls),
//!   versioned migrations, and retrying what may clear up;
//! - the `postgres://` URL and Coffer's own options in it are
//!   configuration: [`crate::config::PgUrl`];
//! - the [`Catalog`](crate::catalog::Catalog), one file per concern as in
//!   `catalog/` and SQLite's: `records.rs`, `locations.rs`, `claims.rs`,
//!   `named.rs`, the statements they share in `rules.rs` and `rows.rs`;
//!   every method that checks and changes is one SERIALIZABLE transaction
//!   (`tx.rs`), with the same checks as SQLite's, in the same order;
//! - `blobs.rs`: the [`BlobStore`](crate::backend::BlobStore), blobs staged in
//!   chunk rows and published in one transaction, read in one snapshot.
//!
//! **Isolation.** The SQLite catalog takes the database's one write lock
//! for each transaction, so its rules (README "Guarantees") hold because
//! no two transactions interleave. On PostgreSQL every catalog write runs
//! at SERIALIZABLE: PostgreSQL then guarantees the same outcome as some
//! one-at-a-time order, whatever the hosts, and aborts a transaction that
//! would break that with a serialization failure, which is retried here
//! (with jittered backoff, until [`PgOptions::conflict_deadline`]). The
//! rules are therefore written once, as plain SQL, and hold across hosts
//! for the same reason they hold in one process. Blob rows use READ
//! COMMITTED with row locks (a staged blob's row is locked by each write
//! of its data and by its abort).
//!
//! **Failures.** A lost connection, or a server that is starting or
//! shutting down, is retried [`PgOptions::connection_attempts`] times;
//! then the error names the server (never the password) and is
//! `unavailable` (exit code 6). Nothing waits without bound: connecting
//! (`connect_timeout`, default 5 s), a free pooled connection
//! ([`PgOptions::pool_wait`]), one attempt at a transaction
//! ([`PgOptions::attempt_timeout`]), and a server gone from the network
//! (TCP keepalives and a user timeout: about a minute) are all limited.
//! Each transaction is safe to run again after a lost connection, also
//! when its COMMIT went through and only the answer was lost: a repeat
//! finds its own work (the reservation under its token, the tombstone
//! under its lease's token, a record already there answering a commit)
//! and answers as the first attempt would have. The ones that cannot (a
//! record's removal: the record is gone; a name committed, copied, moved
//! or dropped: what it replaced or dropped is gone) report the doubt
//! instead of guessing.
//!
//! **Clock.** Times the catalog keeps (reservations touched, tombstone
//! leases) are the database server's, so hosts with skewed clocks agree
//! on when a lease ran out.

mod blobs;
mod claims;
mod locations;
mod named;
mod records;
mod rows;
mod rules;
mod tx;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub use crate::config::{PgUrl, TlsMode};
use crate::error::{Error, PgTransient, Result, pg_transient};

/// The schema, one numbered step at a time, recorded in `coffer_schema`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_schema.sql")),
    (2, include_str!("migrations/0002_moves.sql")),
    (3, include_str!("migrations/0003_named.sql")),
];

/// The advisory lock that makes one host at a time migrate (any constant
/// of Coffer's own: "coffer" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6666_6572;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgOptions {
    /// How long a transaction is run again while it keeps losing to
    /// concurrent ones.
    pub conflict_deadline: Duration,
    /// Attempts when the connection fails or is lost.
    pub connection_attempts: u32,
    /// How long an operation waits for a free connection of the pool.
    pub pool_wait: Duration,
    /// How long one attempt at a transaction may take, waits for locks
    /// included, before it is given up (with the error naming the server).
    pub attempt_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            conflict_deadline: Duration::from_secs(30),
            connection_attempts: 3,
            pool_wait: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

/// PostgreSQL: catalog and blobs, shared by every host that opens it.
#[derive(Clone)]
pub struct PgDb {
    pool: Pool,
    label: Arc<str>,
    options: PgOptions,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb").field("at", &self.label).finish_non_exhaustive()
    }
}

impl PgDb {
    /// Connect to `url` and bring its schema up to date.
    pub async fn open(url: &PgUrl) -> Result<PgDb> {
        PgDb::open_with(url, PgOptions::default()).await
    }

    /// [`PgDb::open`] with explicit options.
    pub async fn open_with(url: &PgUrl, options: PgOptions) -> Result<PgDb> {
        if let Some(warning) = url.plaintext_warning() {
            tracing::warn!("{warning}");
        }
        let connect =
            url.config.get_connect_timeout().copied().unwrap_or(crate::config::pg_url::DEFAULT_CONNECT_TIMEOUT);
        let pool = || -> Result<Pool> {
            let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
            let manager = match url.tls {
                TlsMode::Disable => Manager::from_config(url.config.clone(), tokio_postgres::NoTls, manager_config),
                mode => {
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(mode, url)?);
                    Manager::from_config(url.config.clone(), tls, manager_config)
                }
            };
            Pool::builder(manager)
                .max_size(url.pool_size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(options.pool_wait))
                // Each of the URL's hosts may take the connect timeout.
                .create_timeout(Some(connect * url.config.get_hosts().len().max(1) as u32 + Duration::from_secs(1)))
                .recycle_timeout(Some(connect))
                .build()
                .map_err(|e| Error::Internal(format!("database pool: {e}")))
        };
        // A streamed read takes a connection per chunk row, never while its
        // client reads (see `crate::db::chunks`), so slow clients cannot
        // leave puts and deletes waiting for one.
        let db = PgDb { pool: pool()?, label: url.label().into(), options };
        db.migrate().await?;
        Ok(db)
    }

    /// `HOST:PORT/DATABASE`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// One statement on its own (atomic by itself, outside any explicit
    /// transaction), prepared once per connection, run as [`PgDb::retry`]
    /// runs a transaction.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.retry(move || async move {
            let client = self.client().await?;
            let stmt = client.prepare_cached(sql).await?;
            Ok(client.query(&stmt, params).await?)
        })
        .await
    }

    /// [`PgDb::query`] for a statement that returns no rows: how many it
    /// changed.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.retry(move || async move {
            let client = self.client().await?;
            let stmt = client.prepare_cached(sql).await?;
            Ok(client.execute(&stmt, params).await?)
        })
        .await
    }

    /// Run `f`, one transaction that is safe to repeat, again while it
    /// loses to concurrent transactions (until the conflict deadline) or
    /// its connection fails (a few times); other errors, and the last one,
    /// are returned naming the server.
    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let (mut conflicts, mut losses) = (0u32, 0u32);
        loop {
            let e = match tokio::time::timeout(self.options.attempt_timeout, f()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => {
                    let message =
                        format!("no answer within {} s (a server that hangs)", self.options.attempt_timeout.as_secs());
                    return Err(self.named(
                        Error::Backend { message, retryable: true, source: None },
                        conflicts,
                        losses,
                    ));
                }
            };
            let again = match transient(&e) {
                Some(PgTransient::Conflict) if start.elapsed() < self.options.conflict_deadline => {
                    conflicts += 1;
                    Duration::from_millis(2).saturating_mul(1 << conflicts.min(7))
                }
                Some(PgTransient::Connection) if losses + 1 < self.options.connection_attempts => {
                    losses += 1;
                    Duration::from_millis(100).saturating_mul(1 << losses.min(5))
                }
                _ => return Err(self.named(e, conflicts, losses)),
            };
            tracing::debug!(at = %self.label, error = %e, conflicts, losses, "database transaction retried");
            tokio::time::sleep(again.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
        }
    }

    /// `e` with the server it came from, and how often it was tried.
    fn named(&self, e: Error, conflicts: u32, losses: u32) -> Error {
        match e {
            Error::Backend { message, retryable, source } => {
                let tries = match (conflicts, losses) {
                    (0, 0) => String::new(),
                    (c, l) => format!(" (after {} attempts)", c + l + 1),
                };
                Error::Backend { message: format!("PostgreSQL at {}{tries}: {message}", self.label), retryable, source }
            }
            other => other,
        }
    }

    /// Apply the migrations this database has not had, in one transaction
    /// under an advisory lock, so that hosts starting together migrate one
    /// after the other and the later ones find the work done.
    async fn migrate(&self) -> Result<()> {
        let latest = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
        self.retry(|| async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            // Looked for first: CREATE … IF NOT EXISTS needs the right to
            // create even when the table is there, and a role that only
            // uses an existing schema need not have it.
            let exists: bool = tx.query_one("SELECT to_regclass('coffer_schema') IS NOT NULL", &[]).await?.get(0);
            if !exists {
                tx.batch_execute("CREATE TABLE coffer_schema (version BIGINT NOT NULL)").await?;
            }
            let current: Option<i64> = tx.query_one("SELECT max(version) FROM coffer_schema", &[]).await?.get(0);
            let current = current.unwrap_or(0);
            if current > latest {
                return Err(Error::Config(format!(
                    "the database {}'s schema is version {current}, newer than this Coffer knows (up to {latest}): \
                     upgrade Coffer, or point COFFER_DATABASE_URL at another database",
                    self.label
                )));
            }
            if current == latest {
                return Ok(());
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
                tx.batch_execute(sql).await?;
                tracing::info!(version, at = %self.label, "applied database migration");
            }
            tx.execute("DELETE FROM coffer_schema", &[]).await?;
            tx.execute("INSERT INTO coffer_schema (version) VALUES ($1)", &[&latest]).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

/// A publish raced a publish and a delete of the same name: run again.
#[derive(Debug, thiserror::Error)]
#[error("raced another publish and its deletion")]
struct Raced;

/// How `e` may clear up.
fn transient(e: &Error) -> Option<PgTransient> {
    let Error::Backend { source: Some(source), .. } = e else { return None };
    if let Some(pg) = source.downcast_ref::<tokio_postgres::Error>() {
        return pg_transient(pg);
    }
    if source.is::<Raced>() {
        return Some(PgTransient::Conflict);
    }
    // The pool could not make a connection in time; waiting for a free
    // one again would only add to the wait.
    match source.downcast_ref::<deadpool_postgres::PoolError>() {
        Some(deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => None,
        Some(deadpool_postgres::PoolError::Timeout(_)) => Some(PgTransient::Connection),
        _ => None,
    }
}

/// The rustls configuration for `mode`.
fn tls_config(mode: TlsMode, url: &PgUrl) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS: {e}")))?;
    let config = match mode {
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &url.root_cert {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                        .map_err(|e| {
                            Error::Config(format!("sslrootcert {}: cannot read certificates: {e}", path.display()))
                        })?;
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(Error::Config(format!("sslrootcert {} holds no certificate", path.display())));
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        // `prefer` and `require`: encrypted, the certificate not checked
        // (libpq's meaning of those modes).
        _ => builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))).with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts any server certificate (but still checks that the handshake is
/// signed by it): `sslmode=require`.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
