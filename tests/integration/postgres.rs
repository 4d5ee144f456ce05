//! Coffer on PostgreSQL (a real server, see `pg_server.rs`): several hosts
//! on one catalog, migrations, a database that is down or drops its
//! connections, passwords that never show, the CLI as on SQLite.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use coffer::config::DatabaseUrl;
use coffer::db::postgres::{PgDb, PgOptions};
use coffer::{Coffer, Config, Content, Digest, Error, ErrorKind};
use serde_json::Value;

use crate::pg_server::{PASSWORD, fresh_database};
use crate::support::{data, s3_config, unique_bucket};

fn pg_url(url: &str) -> coffer::config::PgUrl {
    match DatabaseUrl::parse(url).unwrap() {
        DatabaseUrl::Postgres(u) => *u,
        other => panic!("not PostgreSQL: {other:?}"),
    }
}

/// A config on PostgreSQL at `url`; on S3 (one bucket) when `bucket`.
fn config(dir: &std::path::Path, url: &str, bucket: Option<&str>) -> Config {
    let mut config = match bucket {
        Some(b) => s3_config(dir, Some(b), None),
        None => Config::default(),
    };
    config.database_url = Some(url.to_string());
    config
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Two hosts (two Coffers, each with its own pool) on one PostgreSQL, and
/// on one S3 bucket or on the database fallback: concurrent puts of the
/// same and of different content for several organisations, duplicates
/// and deletes. A host sees the other's objects at once; afterwards every
/// record's bytes read back verified from either host.
async fn two_hosts(bucket: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("hosts").await;
    let mut config = config(dir.path(), &url, bucket);
    // Dozens of puts at once on two cores shared with both servers: a
    // policy call waits for a core longer than the default time limit
    // allows (scheduling delay counts as the guest's), and this test is
    // about the catalog, not the sandbox.
    config.limits.timeout_ms = 10_000;
    let a = Coffer::open(config.clone()).await.unwrap();
    let b = Coffer::open(config).await.unwrap();

    // At once: what A stores, B reads.
    let first = a.put("acme", Content::from_bytes(data(3000, 1), None).unwrap()).await.unwrap();
    assert_eq!(b.get_bytes("acme", &first.sha256).await.unwrap(), data(3000, 1));
    assert!(b.put("acme", Content::from_bytes(data(3000, 1), None).unwrap()).await.unwrap().deduplicated == Some(true));

    let orgs = ["acme", "globex", "initech"];
    let mut tasks = Vec::new();
    for round in 0..12u8 {
        for (i, org) in orgs.iter().enumerate() {
            let (host, other) =
                if (round as usize + i).is_multiple_of(2) { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
            let org = org.to_string();
            tasks.push(tokio::spawn(async move {
                // The same content on both hosts at once (shared by every
                // organisation), content of its own, and a multi-row blob.
                let shared = data(4096, round % 4);
                let own = data(700 + round as usize, round.wrapping_add(i as u8 * 50));
                let big = data(1_200_000, 200u8.wrapping_add(round));
                let (x, y) = tokio::join!(
                    host.put(&org, Content::from_bytes(shared.clone(), None).unwrap()),
                    other.put(&org, Content::from_bytes(shared.clone(), None).unwrap()),
                );
                assert_eq!(x.unwrap().sha256, y.unwrap().sha256, "one key for one content");
                let own = host.put(&org, Content::from_bytes(own, None).unwrap()).await.unwrap();
                if round % 3 == 0 {
                    host.put(&org, Content::from_bytes(big, None).unwrap()).await.unwrap();
                }
                // Deletes racing puts of the same content on the other host.
                if round % 2 == 0 {
                    let sha = own.sha256.to_string();
                    let again = data(700 + round as usize, round.wrapping_add(i as u8 * 50));
                    let (d, p) = tokio::join!(
                        other.delete(&org, &sha),
                        host.put(&org, Content::from_bytes(again, None).unwrap())
                    );
                    for r in [d.map(|_| ()), p.map(|_| ())] {
                        if let Err(e) = r {
                            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
                        }
                    }
                }
                if round % 4 == 3 {
                    let _ = other.delete(&org, &Digest::of(&shared).to_string()).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut seen = HashMap::new();
    for org in orgs {
        let (la, lb) = (a.list(org, None, 1000).await.unwrap(), b.list(org, None, 1000).await.unwrap());
        assert_eq!(la, lb, "{org}: both hosts see one catalog");
        assert!(!la.is_empty());
        for info in la {
            for host in [&a, &b] {
                let bytes = host.get_bytes(org, &info.sha256).await;
                let bytes = bytes.unwrap_or_else(|e| panic!("{org}/{}: recorded but unreadable: {e}", info.sha256));
                assert_eq!(Digest::of(&bytes), info.sha256);
            }
            seen.insert((org, info.sha256), info.key);
        }
    }
    // Nothing left pending or half-deleted, and gc finds nothing to do.
    let options = coffer::gc::GcOptions { older_than: Duration::ZERO, dry_run: false };
    let report = a.gc(&options, &coffer::gc::NoProgress).await.unwrap();
    assert_eq!(report.orphans_deleted, 0, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let client = raw(&url).await;
    for table in ["pending", "tombstones", "blob_staging"] {
        let n: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_one_catalog_and_one_bucket() {
    two_hosts(Some(&unique_bucket("two-hosts"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_one_catalog_and_the_database_fallback() {
    two_hosts(None).await;
}

/// Hosts starting together on a new database: one migrates, the others
/// wait and find the work done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_together_migrate_once() {
    let url = fresh_database("migrate").await;
    let opens = (0..6).map(|_| {
        let u = pg_url(&url);
        tokio::spawn(async move { PgDb::open(&u).await })
    });
    for opened in futures_util::future::join_all(opens).await {
        opened.unwrap().unwrap();
    }
    let rows = raw(&url).await.query("SELECT version FROM coffer_schema", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn a_schema_newer_than_this_coffer_is_refused() {
    let url = fresh_database("newer").await;
    PgDb::open(&pg_url(&url)).await.unwrap();
    raw(&url).await.execute("UPDATE coffer_schema SET version = 99", &[]).await.unwrap();
    let err = PgDb::open(&pg_url(&url)).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("version 99")), "{err}");
}

/// Every connection of the pool killed by the server (a restart, a
/// failover, an idle timeout): the next operations reconnect and succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("lost").await;
    let coffer = Coffer::open(config(dir.path(), &url, None)).await.unwrap();
    let info = coffer.put("acme", Content::from_bytes(data(5000, 3), None).unwrap()).await.unwrap();
    let db = url.rsplit_once('/').unwrap().1.split('?').next().unwrap().to_string();
    let killer = raw(&url).await;
    for round in 0..3u8 {
        let killed: i64 = killer
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()) k",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed > 0, "round {round}: no connection to kill");
        assert_eq!(coffer.get_bytes("acme", &info.sha256).await.unwrap(), data(5000, 3));
        coffer.put("acme", Content::from_bytes(data(100, round), None).unwrap()).await.unwrap();
    }
}

/// `coffer` with a clean environment, in `dir`.
fn cli(dir: &std::path::Path, url: &str) -> Command {
    let mut cmd = Command::cargo_bin("coffer").unwrap();
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("COFFER_DATABASE_URL", url)
        .env("COFFER_LOG", "debug");
    cmd
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// The CLI on PostgreSQL does what it does on SQLite; two processes share
/// what they store; the password shows nowhere, even in debug logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_on_postgres_behaves_as_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database("cli").await;
    let bytes = data(1_300_000, 8);
    std::fs::write(dir.path().join("scan.bin"), &bytes).unwrap();
    let out = cli(dir.path(), &url).args(["put", "--org", "acme", "scan.bin"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains(PASSWORD), "the password in the logs: {stderr}");
    // Debug logs name what Coffer does, but never carry the statements'
    // parameters (tokio-postgres would log the content's bytes).
    assert!(stderr.contains("DEBUG"), "debug logging is on: {stderr}");
    assert!(!stderr.contains("with parameters"), "statement parameters in the logs");
    let put = json(&out.stdout);
    let sha = put["sha256"].as_str().unwrap().to_string();
    assert_eq!(put["backend"], "database");
    assert!(!dir.path().join("coffer.db").exists(), "no SQLite file when PostgreSQL is configured");

    let again = json(&cli(dir.path(), &url).args(["put", "--org", "acme", "scan.bin"]).output().unwrap().stdout);
    assert_eq!(again["deduplicated"], true);
    let got = cli(dir.path(), &url).args(["get", "--org", "acme", &sha]).output().unwrap();
    assert!(got.status.success() && got.stdout == bytes);
    let ls = cli(dir.path(), &url).args(["ls", "--org", "acme"]).output().unwrap();
    assert_eq!(ls.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 1);
    let other = cli(dir.path(), &url).args(["get", "--org", "globex", &sha]).output().unwrap();
    assert_eq!(other.status.code(), Some(3), "another organisation's object is not found");
    cli(dir.path(), &url).args(["rm", "--org", "acme", &sha]).assert().success();
    let gone = cli(dir.path(), &url).args(["get", "--org", "acme", &sha]).output().unwrap();
    assert_eq!(gone.status.code(), Some(3));
    let blobs: i64 = raw(&url).await.query_one("SELECT count(*) FROM blob_data", &[]).await.unwrap().get(0);
    assert_eq!(blobs, 0, "the bytes went with the record");
}

/// A database that is down, or refuses the password: exit code 6 within
/// the connection timeout's few attempts, a message naming the server,
/// never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_is_exit_6_naming_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("postgres://coffer:{PASSWORD}@127.0.0.1:{port}/files?sslmode=disable&connect_timeout=2");
    let server = tokio::task::spawn_blocking(crate::pg_server::server).await.unwrap();
    let wrong = format!("postgres://coffer:not-{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable", server.port);
    // A server that accepts connections and never answers.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = mute.incoming().take(10).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let silent = format!("postgres://coffer:{PASSWORD}@127.0.0.1:{mute_port}/files?sslmode=disable&connect_timeout=1");
    for (url, says) in [
        (down, format!("127.0.0.1:{port}/files")),
        (wrong, "password authentication failed".into()),
        (silent, format!("127.0.0.1:{mute_port}/files")),
    ] {
        let mut cmd = cli(dir.path(), &url);
        cmd.args(["ls", "--org", "acme"]).timeout(Duration::from_secs(60));
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{stderr}");
        assert!(stderr.contains(&says), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
    // The library says the same, and that it may clear up.
    let err = PgDb::open_with(
        &pg_url(&format!("postgres://coffer:{PASSWORD}@127.0.0.1:{port}/files?sslmode=disable")),
        PgOptions { connection_attempts: 1, ..PgOptions::default() },
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable() && err.kind() == ErrorKind::Unavailable, "{err}");
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[test]
fn the_password_is_never_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), &format!("postgres://coffer:{PASSWORD}@db:5432/files"), None);
    for shown in [format!("{c:?}"), format!("{:?}", c.database().unwrap())] {
        assert!(!shown.contains(PASSWORD) && shown.contains("redacted"), "{shown}");
    }
}

/// A database opened by a host that the schema has moved past, and a pool
/// that is used from many tasks at once, keep working (sanity of the
/// shared-pool path the benchmark measures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_operations_at_once_share_a_small_pool() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}&pool_size=2", fresh_database("pool").await);
    let coffer = Arc::new(Coffer::open(config(dir.path(), &url, None)).await.unwrap());
    let puts = (0..40u8).map(|i| {
        let c = coffer.clone();
        tokio::spawn(async move { c.put("acme", Content::from_bytes(data(4096, i), None).unwrap()).await.unwrap() })
    });
    let infos: Vec<_> = futures_util::future::join_all(puts).await.into_iter().map(|r| r.unwrap()).collect();
    for (i, info) in infos.iter().enumerate() {
        assert_eq!(coffer.get_bytes("acme", &info.sha256).await.unwrap(), data(4096, i as u8));
    }
}

/// Streamed reads hold a connection while their consumer reads; they hold
/// one of the readers' own pool, so readers that stall (slow HTTP clients)
/// leave puts, deletes and lookups their connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_leave_the_catalog_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}&pool_size=2", fresh_database("readers").await);
    let coffer = Coffer::open(config(dir.path(), &url, None)).await.unwrap();
    let mut held = Vec::new();
    for i in 0..2u8 {
        let info = coffer.put("acme", Content::from_bytes(data(5 << 20, i), None).unwrap()).await.unwrap();
        // Opened and never read past what the channel buffers: the reading
        // task waits, holding its connection and snapshot.
        held.push(coffer.get("acme", &info.sha256.to_string()).await.unwrap());
    }
    let work = async {
        let info = coffer.put("acme", Content::from_bytes("while readers stall", None).unwrap()).await.unwrap();
        coffer.stat("acme", &info.sha256.to_string()).await.unwrap();
        coffer.delete("acme", &info.sha256.to_string()).await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("puts and deletes waited for a connection the stalled readers held");
    drop(held);
}

/// the certificate: trusted through `sslrootcert` and naming the host, or
/// the connection is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_encrypt_and_verify_full_checks_the_certificate() {
    let url = fresh_database("tls").await;
    let server = tokio::task::spawn_blocking(crate::pg_server::server).await.unwrap();
    let base = url.strip_suffix("?sslmode=disable").unwrap().to_string();
    let name = base.rsplit_once('/').unwrap().1.to_string();
    let db = PgDb::open(&pg_url(&format!("{base}?sslmode=require&application_name=coffer-tls"))).await.unwrap();
    coffer::catalog::Records::lookup(&db, "acme", &Digest::of(b"x")).await.unwrap();
    let encrypted: i64 = raw(&url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.datname = $1 AND a.application_name = 'coffer-tls'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted > 0, "sslmode=require left the connection unencrypted");

    let cert = server.ca.display().to_string();
    let local = base.replace("127.0.0.1", "localhost");
    PgDb::open(&pg_url(&format!("{local}?sslmode=verify-full&sslrootcert={cert}"))).await.unwrap();
    let once = PgOptions { connection_attempts: 1, ..PgOptions::default() };
    for (url, why) in [
        (format!("{base}?sslmode=verify-full&sslrootcert={cert}"), "the certificate names localhost, not 127.0.0.1"),
        (format!("{local}?sslmode=verify-full"), "no trusted root for a self-signed certificate"),
    ] {
        let err = PgDb::open_with(&pg_url(&url), once).await.unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("TLS") || shown.contains("certificate"), "{why}: {shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

/// Each transaction run again after its COMMIT went through (the answer
/// lost with the connection) answers as the first attempt did: the
/// reservation, the release's tombstone, an unreferenced location's
/// tombstone, a takeover are found, not made twice nor denied.
#[tokio::test]
async fn repeats_of_committed_transactions_answer_as_the_first() {
    use coffer::backend::{BackendKind, Location};
    use coffer::catalog::{Lease, Locations, Pending, Released, Reserved, Token};
    let db = PgDb::open(&pg_url(&fresh_database("repeats").await)).await.unwrap();
    let sha = Digest::of(b"repeat");
    let at = Location { backend: BackendKind::Database, container: "acme".into(), name: sha.to_string() };
    let p = Pending {
        token: Token::new(),
        org: "acme".into(),
        sha256: sha,
        size: 6,
        location: at.clone(),
        created_at: 0,
        touched_at: 0,
    };
    assert_eq!(db.reserve(&p).await.unwrap(), Reserved::Granted);
    assert_eq!(db.reserve(&p).await.unwrap(), Reserved::Granted, "the same reservation again");
    assert_eq!(db.pending_at(&at).await.unwrap().len(), 1);
    let lease = Lease { token: Token::new(), secs: 0 };
    let Released::Released(Some(t)) = db.release(&p.token, None, Some(&lease)).await.unwrap() else { panic!() };
    assert_eq!(db.release(&p.token, None, Some(&lease)).await.unwrap(), Released::Released(Some(t.clone())));
    assert_eq!(db.tombstone_if_unreferenced(&at, &lease).await.unwrap(), Some(t.clone()), "held under this lease");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let next = Lease { token: Token::new(), secs: 60 };
    let taken = db.take_over(&at, &t.token, &next).await.unwrap().expect("lease ran out");
    let again = db.take_over(&at, &t.token, &next).await.unwrap().expect("the same takeover again");
    assert_eq!((taken.token, again.token), (next.token.clone(), next.token.clone()));
    assert_eq!(db.tombstones().await.unwrap().len(), 1);
}

/// Content in memory arrives as one chunk: it is still stored in rows of
/// at most 1 MiB (a read fetches two at a time, so its memory is bounded).
#[tokio::test]
async fn large_content_in_memory_is_stored_in_bounded_rows() {
    let url = fresh_database("rows").await;
    let db = PgDb::open(&pg_url(&url)).await.unwrap();
    let bytes = data(3 * (1 << 20) + 5, 4);
    let content = Content::from_bytes(bytes.clone(), None).unwrap();
    assert!(coffer::backend::BlobStore::put(&db, "acme", "k", &content).await.unwrap());
    let row = raw(&url).await.query_one("SELECT count(*), max(length(data)) FROM blob_data", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (4, 1 << 20));
    let mut stream = coffer::backend::BlobStore::get(&db, "acme", "k").await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == bytes);
}

/// Two hosts migrate one PostgreSQL catalog's database fallback to S3 at
/// the same time, while a third reads: every object is moved exactly
/// once, readable throughout, and nothing is left behind; then back to
/// the database. A relocation repeated after its COMMIT answer was lost
/// answers as the first.
#[tokio::test]
async fn two_hosts_migrate_one_catalog_at_once() {
    use coffer::gc::NoProgress;
    use coffer::migrate::MigrateOptions;
    let url = fresh_database("migrate_hosts").await;
    let dir = tempfile::tempdir().unwrap();
    let db_only = Coffer::open(config(dir.path(), &url, None)).await.unwrap();
    let mut stored = Vec::new();
    for i in 0..30u8 {
        let org = ["acme", "beta", "gamma"][usize::from(i % 3)];
        let bytes = data(2000 + usize::from(i) * 700, i);
        stored.push((
            org,
            db_only.put(org, Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap().sha256,
            bytes,
        ));
    }
    let bucket = unique_bucket("pg-migrate");
    let host_a = Coffer::open(config(dir.path(), &url, Some(&bucket))).await.unwrap();
    let host_b = Coffer::open(config(dir.path(), &url, Some(&bucket))).await.unwrap();
    let reader = {
        let (db_only, stored) = (db_only.clone(), stored.clone());
        tokio::spawn(async move {
            for round in 0..3 {
                for (org, sha, bytes) in &stored {
                    let got = db_only.get_bytes(org, sha).await;
                    // The reader has no S3: once moved, an object says so.
                    match got {
                        Ok(b) => assert_eq!(&b[..], &bytes[..]),
                        Err(Error::Config(m)) => assert!(m.contains("S3 is not configured"), "{m}"),
                        Err(e) => panic!("round {round}, {org}/{sha}: {e}"),
                    }
                }
            }
        })
    };
    let options = MigrateOptions { jobs: 3, ..Default::default() };
    let (a, b) = tokio::join!(host_a.migrate(&options, &NoProgress), host_b.migrate(&options, &NoProgress));
    let (a, b) = (a.unwrap(), b.unwrap());
    reader.await.unwrap();
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{a:?} {b:?}");
    assert_eq!(a.moved + b.moved, 30, "each object moved once: {a:?} {b:?}");
    for (org, sha, bytes) in &stored {
        let info = host_b.stat(org, &sha.to_string()).await.unwrap();
        assert_eq!(info.backend, coffer::backend::BackendKind::S3);
        assert_eq!(&host_a.get_bytes(org, sha).await.unwrap()[..], &bytes[..]);
    }
    let client = raw(&url).await;
    for table in ["blobs", "blob_data", "pending", "tombstones"] {
        let n: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table}");
    }
    assert_eq!(crate::support::objects_on_server(&bucket).len(), 30);
    let verify = coffer::verify::VerifyOptions { deep: true, ..Default::default() };
    let report = host_a.verify(&verify, &NoProgress, &|f| panic!("{f:?}")).await.unwrap();
    assert!(report.all_well() && report.checked == 30 && report.unreferenced == 0, "{report:?}");

    // And back: S3 still configured to read, new objects go to the database.
    let mut back = config(dir.path(), &url, Some(&bucket));
    back.settings.insert("store-in".into(), "database".into());
    let back = Coffer::open(back).await.unwrap();
    let report = back.migrate(&MigrateOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.moved, report.failed), (30, 0), "{report:?}");
    assert!(crate::support::objects_on_server(&bucket).is_empty());
    for (org, sha, bytes) in &stored {
        assert_eq!(&db_only.get_bytes(org, sha).await.unwrap()[..], &bytes[..]);
    }
}

/// `relocate` run again after its COMMIT went through (the answer lost):
/// it finds its own move and the tombstone of its own lease.
#[tokio::test]
async fn a_repeated_relocation_answers_as_the_first() {
    use coffer::backend::{BackendKind, Location};
    use coffer::catalog::{Committed, Lease, Locations, Pending, Record, Records, Relocated, Reserved, Token};
    let db = PgDb::open(&pg_url(&fresh_database("relocate").await)).await.unwrap();
    let sha = Digest::of(b"moved");
    let at = |backend, container: &str| Location { backend, container: container.into(), name: sha.to_string() };
    let (from, to) = (at(BackendKind::Database, "acme"), at(BackendKind::S3, "bucket"));
    let pending = |location: &Location| Pending {
        token: Token::new(),
        org: "acme".into(),
        sha256: sha,
        size: 5,
        location: location.clone(),
        created_at: 0,
        touched_at: 0,
    };
    let first = pending(&from);
    assert_eq!(db.reserve(&first).await.unwrap(), Reserved::Granted);
    let record = Record {
        org: "acme".into(),
        sha256: sha,
        size: 5,
        content_type: "text/plain".into(),
        location: from.clone(),
        created_at: 1,
        parked: true,
    };
    assert!(matches!(db.commit(Some(&first.token), &record).await.unwrap(), Committed::Inserted(_)));
    let second = pending(&to);
    assert_eq!(db.reserve(&second).await.unwrap(), Reserved::Granted);
    let lease = Lease { token: Token::new(), secs: 60 };
    let Relocated::Moved(moved, Some(t)) = db.relocate("acme", &sha, &from, &to, &second.token, &lease).await.unwrap()
    else {
        panic!("moved, with the old location tombstoned")
    };
    assert_eq!((moved.location.clone(), moved.parked), (to.clone(), false));
    let again = db.relocate("acme", &sha, &from, &to, &second.token, &lease).await.unwrap();
    assert_eq!(again, Relocated::Moved(moved.clone(), Some(t)), "the repeat finds its own work");
    assert_eq!(db.lookup("acme", &sha).await.unwrap(), Some(moved));
    // The old location waits for its deletion; another move of the same
    // record, with a reservation of its own, finds the record changed.
    let waiting = pending(&from);
    assert_eq!(db.reserve(&waiting).await.unwrap(), Reserved::Tombstoned(db.tombstones().await.unwrap()[0].clone()));
    let third = pending(&to);
    assert_eq!(db.reserve(&third).await.unwrap(), Reserved::Granted);
    let other_lease = Lease { token: Token::new(), secs: 60 };
    let other = db.relocate("acme", &sha, &from, &to, &third.token, &other_lease).await.unwrap();
    assert!(matches!(other, Relocated::Changed(Some(_))), "{other:?}");
}
