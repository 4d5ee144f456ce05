//! Two OS processes on one catalog (an SQLite file, or PostgreSQL: two
//! hosts), one putting and one deleting the same
//! content over and over (what OpenKAT's re-uploads and clean-up jobs do),
//! while a reader in a third process checks every read: a read is the
//! verified bytes or "not found", never a record without bytes. Afterwards
//! every record reads back, and `coffer gc` leaves no unreferenced bytes.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use coffer::{Coffer, Digest, Error};

use crate::support::{data, objects_on_server, s3_config, sqlite_config, unique_bucket};

/// Rounds per process: 2 × 120 = 240 interleaved puts and deletes.
const ROUNDS: usize = 120;

/// Where the catalog is: the SQLite file in the test's directory, or a
/// PostgreSQL database (its URL).
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

async fn count(db: &Db, sql: &str) -> i64 {
    match db {
        Db::Sqlite(dir) => {
            let db = rusqlite::Connection::open(dir.join("coffer.db")).unwrap();
            db.query_row(sql, [], |r| r.get(0)).unwrap()
        }
        Db::Postgres(url) => {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.query_one(sql, &[]).await.unwrap().get(0)
        }
    }
}

async fn two_processes(s3_bucket: Option<&str>, postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = match postgres {
        true => Db::Postgres(crate::pg_server::fresh_database("stress").await),
        false => Db::Sqlite(dir.path().to_path_buf()),
    };
    let bytes = data(64 * 1024, 99);
    std::fs::write(dir.path().join("x.bin"), &bytes).unwrap();
    let sha = Digest::of(&bytes).to_string();
    let coffer_cmd = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.current_dir(dir.path()).env_clear().env("COFFER_CACHE_DIR", dir.path().join("cache")).args(args);
        if let Db::Postgres(url) = &db {
            cmd.env("COFFER_DATABASE_URL", url);
        }
        if let Some(bucket) = s3_bucket {
            cmd.env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY)
                .env("AWS_ENDPOINT_URL", crate::s3_server::server().endpoint())
                .env("S3_BUCKET", bucket);
        }
        cmd
    };
    // Warm the compiled-policy cache and create the database.
    assert!(coffer_cmd(&["ls", "--org", "acme"]).output().unwrap().status.success());

    let mut config = match s3_bucket {
        Some(b) => s3_config(dir.path(), Some(b), None),
        None => sqlite_config(dir.path(), &[]),
    };
    if let Db::Postgres(url) = &db {
        config.database_url = Some(url.clone());
    }
    let reader = Coffer::open(config).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (reader, stop, bytes, sha) = (reader.clone(), stop.clone(), bytes.clone(), sha.clone());
        async move {
            let (mut found, mut absent) = (0u32, 0u32);
            while !stop.load(Ordering::SeqCst) {
                match reader.get_bytes("acme", &sha.parse().unwrap()).await {
                    Ok(got) => {
                        assert!(got == bytes, "wrong bytes");
                        found += 1;
                    }
                    Err(Error::NotFound(_)) => absent += 1,
                    Err(e) => panic!("a read during the race failed: {e}"),
                }
            }
            (found, absent)
        }
    });

    let started = Instant::now();
    let run = |args: Vec<String>, ok_codes: &'static [i32]| {
        let cmd_args = args.clone();
        let mut cmd = coffer_cmd(&cmd_args.iter().map(String::as_str).collect::<Vec<_>>());
        std::thread::spawn(move || {
            let mut codes = std::collections::BTreeMap::<i32, u32>::new();
            for _ in 0..ROUNDS {
                let out = cmd.output().unwrap();
                let code = out.status.code().unwrap_or(-1);
                assert!(ok_codes.contains(&code), "{args:?} exited {code}: {}", String::from_utf8_lossy(&out.stderr));
                *codes.entry(code).or_default() += 1;
            }
            codes
        })
    };
    let putter = run(vec!["put".into(), "--org".into(), "acme".into(), "x.bin".into()], &[0]);
    // `rm` of content that is not there (yet, or any more) is "not found".
    let remover = run(vec!["rm".into(), "--org".into(), "acme".into(), sha.clone()], &[0, 3]);
    let puts = putter.join().unwrap();
    let rms = remover.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let (found, absent) = watcher.await.unwrap();
    eprintln!(
        "{} puts {puts:?}, {} rms {rms:?} in {:.1} s; reads: {found} found, {absent} not found",
        ROUNDS,
        ROUNDS,
        started.elapsed().as_secs_f64()
    );
    assert!(rms.get(&0).copied().unwrap_or(0) > 0, "the deletes never overlapped the puts: {rms:?}");

    assert!(found > 0 && absent > 0, "the reader never saw both states: {found} found, {absent} not found");

    // Every record reads back verified.
    for info in reader.list("acme", None, 100).await.unwrap() {
        assert!(reader.get_bytes("acme", &info.sha256).await.unwrap() == bytes);
    }
    // Without any crash, nothing is left for gc: no reservation, no
    // tombstone, no byte that no record refers to.
    assert_clean(&db, &reader, s3_bucket).await;
    let gc = coffer_cmd(&["gc", "--older-than", "0s"]).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["orphans_deleted"], 0, "{report}");
    assert_clean(&db, &reader, s3_bucket).await;
}

async fn assert_clean(db: &Db, reader: &Coffer, s3_bucket: Option<&str>) {
    assert_eq!(count(db, "SELECT count(*) FROM pending").await, 0);
    assert_eq!(count(db, "SELECT count(*) FROM tombstones").await, 0);
    let records = reader.list("acme", None, 100).await.unwrap();
    match s3_bucket {
        Some(bucket) => {
            let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
            assert_eq!(objects_on_server(bucket), keys, "bytes on the server are exactly the recorded ones");
        }
        None => {
            let unreferenced = count(
                db,
                "SELECT count(*) FROM blobs b WHERE NOT EXISTS
                 (SELECT 1 FROM objects o WHERE o.backend = 'database' AND o.container = b.container AND o.name = b.name)",
            )
            .await;
            assert_eq!(unreferenced, 0, "unreferenced blobs");
            assert_eq!(count(db, "SELECT count(*) FROM blobs").await, records.len() as i64);
            assert_eq!(count(db, "SELECT count(*) FROM blob_staging").await, 0);
            let stray = count(
                db,
                "SELECT count(*) FROM blob_data WHERE blob_id NOT IN (SELECT blob_id FROM blobs)
                 AND blob_id NOT IN (SELECT blob_id FROM blob_staging)",
            )
            .await;
            assert_eq!(stray, 0, "chunk rows that belong to no blob");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_putting_and_deleting_on_one_sqlite_database_lose_nothing() {
    two_processes(None, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_putting_and_deleting_on_one_postgres_database_lose_nothing() {
    two_processes(None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_putting_and_deleting_on_postgres_and_one_bucket_lose_nothing() {
    two_processes(Some(&unique_bucket("stress-pg")), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_putting_and_deleting_on_one_bucket_lose_nothing() {
    two_processes(Some(&unique_bucket("stress")), false).await;
}
