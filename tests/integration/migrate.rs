//! `coffer migrate`, `coffer drain` and `coffer verify` against the S3 test
//! server and the databases: database → S3, between bucket layouts, S3 →
//! database; readers throughout; a delete racing a move; the process
//! killed (SIGKILL) at each step of a move and run again; objects parked
//! while S3 is down and drained once it is back; verify finding a deleted,
//! a tampered and an unreferenced object.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use coffer::backend::s3::S3Store;
use coffer::backend::{BackendKind, Backends, BlobStore};
use coffer::catalog::Locations;
use coffer::db::sqlite::SqliteDb;
use coffer::gc::NoProgress;
use coffer::migrate::MigrateOptions;
use coffer::verify::{Finding, Problem, VerifyOptions};
use coffer::{Coffer, Config, Content, Digest};
use futures_util::StreamExt;

use crate::fault_proxy::{Fault, FaultProxy, HoldAt, Op};
use crate::gates::{Gates, PausingCatalog};
use crate::support::{data, objects_on_server, s3_config, sha256_file, sqlite_config, unique_bucket};

/// Objects of a few sizes (one spooled through a file, above 4 MiB) for
/// two organisations.
fn objects() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("acme", data(10, 1)),
        ("acme", data(70_000, 2)),
        ("acme", data((5 << 20) + 7, 3)),
        ("beta", data(20_000, 4)),
        // The same content for both: one copy each in per-org layouts.
        ("beta", data(70_000, 2)),
        ("acme", Vec::new()),
    ]
}

async fn put_all(coffer: &Coffer) -> Vec<(&'static str, Digest, Vec<u8>)> {
    let mut out = Vec::new();
    for (org, bytes) in objects() {
        let info = coffer.put(org, Content::from_bytes(bytes.clone(), Some("text/plain")).unwrap()).await.unwrap();
        out.push((org, info.sha256, bytes));
    }
    out
}

/// Every object reads back whole, from `backend`; its content type kept.
async fn assert_all_on(coffer: &Coffer, stored: &[(&str, Digest, Vec<u8>)], backend: BackendKind) {
    for (org, sha, bytes) in stored {
        let info = coffer.stat(org, &sha.to_string()).await.unwrap();
        assert_eq!(info.backend, backend, "{org}/{sha}");
        assert_eq!(info.content_type, "text/plain");
        assert!(!info.parked);
        assert_eq!(&coffer.get_bytes(org, sha).await.unwrap()[..], &bytes[..], "{org}/{sha}");
    }
}

fn blob_rows(dir: &std::path::Path) -> i64 {
    let db = rusqlite::Connection::open(dir.join("coffer.db")).unwrap();
    db.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap()
}

async fn migrate(coffer: &Coffer, options: MigrateOptions) -> coffer::migrate::MigrateReport {
    let report = coffer.migrate(&options, &NoProgress).await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    report
}

async fn verify_clean(coffer: &Coffer) {
    let options = VerifyOptions { deep: true, ..VerifyOptions::default() };
    let report = coffer.verify(&options, &NoProgress, &|f| panic!("verify found {f:?}")).await.unwrap();
    assert!(report.all_well() && report.unreferenced == 0, "{report:?}");
}

#[tokio::test]
async fn database_to_bucket_per_org_to_one_bucket_and_back_to_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db_only = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let stored = put_all(&db_only).await;
    drop(db_only);

    // S3 configured, a bucket per organisation: a dry run changes nothing.
    let prefix = format!("{}-", unique_bucket("mig"));
    let per_org = Coffer::open(s3_config(dir.path(), None, Some(&prefix))).await.unwrap();
    let totals = Totals::default();
    let dry = per_org.migrate(&MigrateOptions { dry_run: true, ..Default::default() }, &totals).await.unwrap();
    assert_eq!((dry.records, dry.candidates, dry.moved), (6, 6, 6), "{dry:?}");
    assert_eq!(*totals.0.lock().unwrap(), Some(6), "a progress bar that shows totals is told the count");
    let limited = MigrateOptions { dry_run: true, limit: Some(2), ..Default::default() };
    per_org.migrate(&limited, &totals).await.unwrap();
    assert_eq!(*totals.0.lock().unwrap(), Some(2), "up to the limit");
    assert_all_on(&per_org, &stored, BackendKind::Database).await;

    // --limit moves only so many; the rest follows in the next run.
    let first = migrate(&per_org, MigrateOptions { limit: Some(2), jobs: 1, ..Default::default() }).await;
    assert_eq!(first.moved, 2, "{first:?}");
    let rest = migrate(&per_org, MigrateOptions { jobs: 3, ..Default::default() }).await;
    assert_eq!((rest.candidates, rest.moved, rest.failed), (4, 4, 0), "{rest:?}");
    assert_all_on(&per_org, &stored, BackendKind::S3).await;
    assert_eq!(blob_rows(dir.path()), 0, "the database's copies are deleted");
    assert_eq!(objects_on_server(&format!("{prefix}acme")).len(), 4);
    assert_eq!(objects_on_server(&format!("{prefix}beta")).len(), 2);
    verify_clean(&per_org).await;
    let again = migrate(&per_org, MigrateOptions::default()).await;
    assert_eq!((again.candidates, again.moved), (0, 0), "a second run has nothing to do: {again:?}");
    drop(per_org);

    // One bucket for all: keys prefixed by organisation.
    let bucket = unique_bucket("mig-one");
    let single = Coffer::open(s3_config(dir.path(), Some(&bucket), None)).await.unwrap();
    let moved = migrate(&single, MigrateOptions { org: Some("acme".into()), ..Default::default() }).await;
    assert_eq!(moved.moved, 4, "{moved:?}");
    assert!(objects_on_server(&format!("{prefix}acme")).is_empty());
    assert_eq!(objects_on_server(&format!("{prefix}beta")).len(), 2, "--org leaves the others");
    migrate(&single, MigrateOptions::default()).await;
    assert_all_on(&single, &stored, BackendKind::S3).await;
    assert!(objects_on_server(&format!("{prefix}beta")).is_empty());
    assert_eq!(objects_on_server(&bucket).len(), 6);
    assert!(objects_on_server(&bucket).iter().all(|k| k.starts_with("acme/") || k.starts_with("beta/")));
    drop(single);

    // Off S3: S3 stays configured to read, `store-in = database` places new
    // objects (and moved ones) in the database.
    let mut off = s3_config(dir.path(), Some(&bucket), None);
    off.settings.insert("store-in".into(), "database".into());
    let off = Coffer::open(off).await.unwrap();
    let back = migrate(&off, MigrateOptions::default()).await;
    assert_eq!(back.moved, 6, "{back:?}");
    assert!(objects_on_server(&bucket).is_empty());
    drop(off);
    // And S3 can go: everything is readable from the database alone.
    let db_only = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    assert_all_on(&db_only, &stored, BackendKind::Database).await;
    verify_clean(&db_only).await;
}

/// A progress display that shows totals, remembering the last one.
#[derive(Default)]
struct Totals(std::sync::Mutex<Option<u64>>);

impl coffer::gc::Progress for Totals {
    fn stage(&self, _name: &str, items: Option<u64>) {
        *self.0.lock().unwrap() = items;
    }
    fn wants_totals(&self) -> bool {
        true
    }
}

/// Readers never see an object missing or wrong while it is moved.
#[tokio::test]
async fn objects_stay_readable_while_they_are_moved() {
    let dir = tempfile::tempdir().unwrap();
    let db_only = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let mut stored = Vec::new();
    for i in 0..40u8 {
        let bytes = data(3000 + usize::from(i) * 500, i);
        let info = db_only.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
        stored.push((info.sha256, bytes));
    }
    drop(db_only);
    let coffer = Coffer::open(s3_config(dir.path(), Some(&unique_bucket("mig-live")), None)).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3usize {
        let (coffer, stored, done) = (coffer.clone(), stored.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            // Bounded: at most 2000 reads each.
            for i in 0..2000usize {
                let (sha, bytes) = &stored[(i * 7 + r * 13) % stored.len()];
                let got = coffer.get_bytes("acme", sha).await;
                assert_eq!(got.as_deref().ok(), Some(&bytes[..]), "read {i} of {sha}: {got:?}");
                reads += 1;
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
            reads
        }));
    }
    let report = migrate(&coffer, MigrateOptions { jobs: 4, ..Default::default() }).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(report.moved, 40, "{report:?}");
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_eq!(blob_rows(dir.path()), 0);
}

/// A read of a database object several rows long, begun before a move and
/// finished after it (the move deleted the rows it was reading): the rest
/// is read from S3 and the whole is verified as one object; a range read
/// likewise goes on with a range from S3. A read of an
/// object deleted meanwhile ends not-found, never short.
#[tokio::test]
async fn a_read_begun_before_a_move_finishes_from_the_new_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db_only = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let bytes = data((3 << 20) + 5, 21);
    let info = db_only.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let other = db_only.put("acme", Content::from_bytes(data((3 << 20) + 9, 22), None).unwrap()).await.unwrap();
    drop(db_only);
    let coffer = Coffer::open(s3_config(dir.path(), Some(&unique_bucket("mig-mid")), None)).await.unwrap();
    let (_, mut moving) = coffer.get("acme", &info.sha256.to_string()).await.unwrap();
    let (_, mut deleted) = coffer.get("acme", &other.sha256.to_string()).await.unwrap();
    let (first, last) = (100_000u64, (2u64 << 20) + 7);
    let (_, _, mut ranged) =
        coffer.get_range("acme", &info.sha256.to_string(), |_| Ok(Some((first, last)))).await.unwrap();
    let mut got = moving.next().await.unwrap().unwrap().to_vec();
    assert!(got.len() < bytes.len(), "the first item is one row, not the whole object");
    let mut got_range = ranged.next().await.unwrap().unwrap().to_vec();
    assert!(got_range.len() < (last - first + 1) as usize, "the range's first item is part of it");
    let first_of_deleted = deleted.next().await.unwrap().unwrap();
    assert!(!first_of_deleted.is_empty());

    coffer.delete("acme", &other.sha256.to_string()).await.unwrap();
    let report = migrate(&coffer, MigrateOptions::default()).await;
    assert_eq!(report.moved, 1, "{report:?}");
    assert_eq!(blob_rows(dir.path()), 0, "the database copy is gone");

    while let Some(item) = moving.next().await {
        got.extend_from_slice(&item.expect("the rest comes from the new copy"));
    }
    assert!(got == bytes, "{} bytes read of {}", got.len(), bytes.len());
    while let Some(item) = ranged.next().await {
        got_range.extend_from_slice(&item.expect("the rest of the range comes from the new copy"));
    }
    assert!(got_range == bytes[first as usize..=last as usize], "{} bytes of the range", got_range.len());
    let mut end = None;
    while let Some(item) = deleted.next().await {
        if let Err(e) = item {
            end = Some(e);
        }
    }
    assert!(matches!(end, Some(coffer::Error::NotFound(_))), "{end:?}");
}

/// A read whose GET reaches S3 after a move deleted the key it asked for
/// gets 403 from a server where the keys may not list the bucket (AWS
/// answers so for a missing key); the read follows the object to its new
/// bucket instead of failing as a configuration error.
#[tokio::test]
async fn a_read_refused_for_a_key_moved_away_follows_the_object() {
    let proxy = FaultProxy::start();
    let dir = tempfile::tempdir().unwrap();
    let single = Coffer::open(proxy.s3_config(dir.path(), Some(&unique_bucket("mig-403")), None)).await.unwrap();
    let bytes = data(5000, 31);
    let info = single.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();

    proxy.once(Op::GetObject, 0, Fault::Late(Duration::from_millis(1500), 403, "AccessDenied"));
    let reader = {
        let single = single.clone();
        tokio::spawn(async move { single.get_bytes("acme", &info.sha256).await })
    };
    for _ in 0..100 {
        if proxy.seen(Op::GetObject) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.seen(Op::GetObject), 1, "the read's GET is at the server");
    let prefix = format!("{}-", unique_bucket("m403"));
    let per_org = Coffer::open(proxy.s3_config(dir.path(), None, Some(&prefix))).await.unwrap();
    assert_eq!(migrate(&per_org, MigrateOptions::default()).await.moved, 1);

    let got = reader.await.unwrap().expect("the read follows the object to its new bucket");
    assert!(got == bytes);
    // An object that has not moved keeps its 403 as a configuration error.
    proxy.once(Op::GetObject, 0, Fault::Refuse(403, "AccessDenied"));
    let err = per_org.get_bytes("acme", &info.sha256).await.unwrap_err();
    assert!(matches!(err, coffer::Error::Config(_)), "{err}");
}

/// A delete that lands while a move is about to switch the record: the
/// move changes nothing, and its copy is deleted (nothing refers to it).
#[tokio::test]
async fn a_delete_racing_a_move_wins_and_leaves_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db_only = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let info = db_only.put("acme", Content::from_bytes(data(9000, 9), None).unwrap()).await.unwrap();
    drop(db_only);
    let bucket = unique_bucket("mig-race");
    let config = s3_config(dir.path(), Some(&bucket), None);
    let db = Arc::new(SqliteDb::open(dir.path().join("coffer.db")).await.unwrap());
    let gates = Arc::new(Gates::default());
    let catalog = Arc::new(PausingCatalog { inner: db.clone(), gates: gates.clone() });
    let s3: Arc<dyn BlobStore> = Arc::new(S3Store::new(&config.s3).unwrap());
    let backends = Backends { database: db.clone(), s3: Some(s3) };
    let coffer = Coffer::from_parts(config, catalog, backends).await.unwrap();

    let paused = gates.before_relocate.arm();
    let mover = {
        let coffer = coffer.clone();
        tokio::spawn(async move { coffer.migrate(&MigrateOptions::default(), &NoProgress).await })
    };
    paused.reached().await;
    assert_eq!(objects_on_server(&bucket).len(), 1, "the copy is written before the switch");
    coffer.delete("acme", &info.sha256.to_string()).await.unwrap();
    paused.release();
    let report = mover.await.unwrap().unwrap();
    assert_eq!((report.moved, report.changed), (0, 1), "{report:?}");
    assert!(objects_on_server(&bucket).is_empty(), "the copy nothing refers to is gone");
    assert_eq!(blob_rows(dir.path()), 0);
    assert!(db.pending_untouched_since(u64::MAX).await.unwrap().is_empty());
    assert!(db.tombstones().await.unwrap().is_empty());
}

/// S3 for the command line: an endpoint, and the variables that choose
/// buckets.
pub type S3Env<'a> = Option<(&'a str, &'a [(&'a str, &'a str)])>;

/// `coffer` with the catalog in `dir` and S3 as `s3` says (if at all).
pub fn cli(dir: &std::path::Path, s3: S3Env<'_>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.current_dir(dir)
        .env_clear()
        .env("COFFER_CACHE_DIR", dir.join("cache"))
        .env("COFFER_DELETE_TIMEOUT", "1")
        .env("COFFER_MULTIPART_THRESHOLD", (6u64 << 20).to_string())
        .env("COFFER_MULTIPART_PART_SIZE", (5u64 << 20).to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((endpoint, vars)) = s3 {
        cmd.env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY)
            .env("AWS_ENDPOINT_URL", endpoint)
            .envs(vars.iter().copied());
    }
    cmd
}

pub fn ok(out: std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap()
}

fn rows(dir: &std::path::Path, table: &str) -> i64 {
    let db = rusqlite::Connection::open(dir.join("coffer.db")).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

/// Which way a killed migration goes.
#[derive(Clone, Copy, Debug)]
enum Way {
    DatabaseToS3,
    S3ToDatabase,
}

/// Put three files (one multipart on S3), start `coffer migrate --jobs 1`,
/// kill it (SIGKILL) when request `op` (after `skip` others) is held at
/// `at`, run it again, and check: every object where new ones go, readable
/// and verified; nothing pending, tombstoned or unreferenced after gc; the
/// old place empty.
async fn killed_migration(way: Way, op: Op, skip: usize, at: HoldAt) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start();
    let endpoint = proxy.endpoint();
    let bucket = unique_bucket("mig-kill");
    let on_s3 = [("S3_BUCKET", bucket.as_str())];
    let to_database = [("S3_BUCKET", bucket.as_str()), ("COFFER_STORE_IN", "database")];
    let (before, after): (S3Env<'_>, S3Env<'_>) = match way {
        Way::DatabaseToS3 => (None, Some((&endpoint, &on_s3))),
        Way::S3ToDatabase => (Some((&endpoint, &on_s3)), Some((&endpoint, &to_database))),
    };
    let mut shas = Vec::new();
    for (i, len) in [40_000usize, (7 << 20) + 3, 1000].into_iter().enumerate() {
        let file = dir.path().join(format!("in{i}.bin"));
        std::fs::write(&file, data(len, i as u8 + 30)).unwrap();
        ok(cli(dir.path(), before, &["put", "--org", "acme", file.to_str().unwrap()]).output().unwrap());
        shas.push(sha256_file(&file));
    }

    let held = proxy.hold(op, skip, at);
    let mut child = cli(dir.path(), after, &["migrate", "--jobs", "1"]).spawn().unwrap();
    assert!(held.reached(Duration::from_secs(60)).await, "{op:?} never arrived");
    child.kill().unwrap();
    child.wait().unwrap();
    held.release();

    // Run again: the job finishes. A deletion the kill left is taken over
    // once its lease (twice COFFER_DELETE_TIMEOUT, plus 3 s) has run out.
    if rows(dir.path(), "tombstones") > 0 {
        tokio::time::sleep(Duration::from_millis(6200)).await;
    }
    let report = ok(cli(dir.path(), after, &["migrate"]).output().unwrap());
    assert_eq!(report["failed"], 0, "{report}");
    let gc = ok(cli(dir.path(), after, &["gc", "--older-than", "0s"]).output().unwrap());
    assert_eq!(gc["error_count"], 0, "{gc}");
    assert_eq!((rows(dir.path(), "pending"), rows(dir.path(), "tombstones")), (0, 0), "{gc}");
    let want = match way {
        Way::DatabaseToS3 => "s3",
        Way::S3ToDatabase => "database",
    };
    for (i, sha) in shas.iter().enumerate() {
        let stat = ok(cli(dir.path(), after, &["stat", "--org", "acme", sha]).output().unwrap());
        assert_eq!(stat["backend"], want, "{stat}");
        let out = format!("out{i}.bin");
        ok(cli(dir.path(), after, &["get", "--org", "acme", sha, "-o", &out]).output().unwrap());
        assert_eq!(&sha256_file(&dir.path().join(&out)), sha);
    }
    match way {
        Way::DatabaseToS3 => {
            assert_eq!(rows(dir.path(), "blobs"), 0, "no copy left in the database");
            assert_eq!(objects_on_server(&bucket).len(), 3, "one copy each on S3");
        }
        Way::S3ToDatabase => {
            assert_eq!(rows(dir.path(), "blobs"), 3, "one copy each in the database");
            assert!(objects_on_server(&bucket).is_empty(), "no copy left on S3");
        }
    }
    let verify = cli(dir.path(), after, &["verify", "--deep"]).output().unwrap();
    let summary = ok(verify);
    assert_eq!((summary["checked"].as_u64(), summary["unreferenced"].as_u64()), (Some(3), Some(0)), "{summary}");
}

#[tokio::test]
async fn killed_before_a_copy_to_s3_reaches_the_server() {
    killed_migration(Way::DatabaseToS3, Op::PutObject, 0, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_after_the_server_stored_a_copy() {
    killed_migration(Way::DatabaseToS3, Op::PutObject, 1, HoldAt::After).await;
}

#[tokio::test]
async fn killed_between_the_parts_of_a_multipart_copy() {
    killed_migration(Way::DatabaseToS3, Op::UploadPart, 1, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_while_confirming_a_copy_at_its_destination() {
    killed_migration(Way::DatabaseToS3, Op::HeadObject, 0, HoldAt::After).await;
}

#[tokio::test]
async fn killed_while_reading_the_bytes_to_move_off_s3() {
    killed_migration(Way::S3ToDatabase, Op::GetObject, 1, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_before_the_old_bytes_on_s3_are_deleted() {
    killed_migration(Way::S3ToDatabase, Op::DeleteObject, 0, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_after_the_old_bytes_on_s3_are_deleted() {
    killed_migration(Way::S3ToDatabase, Op::DeleteObject, 1, HoldAt::After).await;
}

/// S3 down for a put: with `park-when-unavailable` the object is stored in
/// the database, marked parked, and readable; `coffer drain` moves it to
/// S3 once S3 is back. Without the setting the put fails and records
/// nothing.
#[tokio::test]
async fn objects_parked_while_s3_is_down_are_drained_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start();
    let bucket = unique_bucket("park");
    let mut config = s3_config(dir.path(), Some(&bucket), None);
    config.s3.endpoint_url = Some(proxy.endpoint());
    let strict = Coffer::open(config.clone()).await.unwrap();
    config.settings.insert("park-when-unavailable".into(), "true".into());
    let parking = Coffer::open(config).await.unwrap();
    let before = parking.put("acme", Content::from_bytes(data(5000, 50), None).unwrap()).await.unwrap();
    assert!(!before.parked && before.backend == BackendKind::S3);

    proxy.always(Op::PutObject, Fault::Refuse(503, "ServiceUnavailable"));
    let bytes = data(8000, 51);
    let err = strict.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), coffer::ErrorKind::Unavailable, "{err}");
    assert!(strict.list("acme", None, 10).await.unwrap().len() == 1, "the failed put recorded nothing");
    let parked = parking.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    assert!(parked.parked, "{parked:?}");
    assert_eq!(parked.backend, BackendKind::Database);
    assert_eq!(&parking.get_bytes("acme", &parked.sha256).await.unwrap()[..], &bytes[..]);
    for i in 0..3u8 {
        let more = parking.put("gamma", Content::from_bytes(data(100, 53 + i), None).unwrap()).await.unwrap();
        assert!(more.parked);
    }
    // Still down: a drain moves nothing, loses nothing, and stops after
    // three objects in a row could not be moved, instead of reading all.
    let options = MigrateOptions { parked_only: true, jobs: 1, ..Default::default() };
    let report = parking.migrate(&options, &NoProgress).await.unwrap();
    assert_eq!((report.candidates, report.moved, report.failed), (3, 0, 3), "{report:?}");
    assert!(report.stopped.is_some(), "{report:?}");
    assert!(parking.stat("acme", &parked.sha256.to_string()).await.unwrap().parked);

    proxy.calm();
    let report = migrate(&parking, MigrateOptions { parked_only: true, ..Default::default() }).await;
    assert_eq!((report.records, report.moved), (4, 4), "only the parked objects are looked at: {report:?}");
    let drained = parking.stat("acme", &parked.sha256.to_string()).await.unwrap();
    assert!(!drained.parked && drained.backend == BackendKind::S3, "{drained:?}");
    assert_eq!(&parking.get_bytes("acme", &parked.sha256).await.unwrap()[..], &bytes[..]);
    assert_eq!(blob_rows(dir.path()), 0);
    verify_clean(&parking).await;

    // Parked again; then the deployment keeps new objects in the database:
    // a drain leaves it there, no longer parked, and the next one has
    // nothing to do.
    proxy.always(Op::PutObject, Fault::Refuse(503, "ServiceUnavailable"));
    let again = parking.put("beta", Content::from_bytes(data(6000, 52), None).unwrap()).await.unwrap();
    assert!(again.parked);
    proxy.calm();
    let mut keep = s3_config(dir.path(), Some(&bucket), None);
    keep.s3.endpoint_url = Some(proxy.endpoint());
    keep.settings.insert("store-in".into(), "database".into());
    let keep = Coffer::open(keep).await.unwrap();
    let report = migrate(&keep, MigrateOptions { parked_only: true, ..Default::default() }).await;
    assert_eq!((report.in_place, report.moved), (1, 0), "{report:?}");
    let info = keep.stat("beta", &again.sha256.to_string()).await.unwrap();
    assert!(!info.parked && info.backend == BackendKind::Database, "{info:?}");
    let report = migrate(&keep, MigrateOptions { parked_only: true, ..Default::default() }).await;
    assert_eq!(report.records, 0, "{report:?}");
}

/// verify reports a deleted object as missing, a tampered one as corrupt
/// (with --deep, and at once when the store's digest disagrees), and bytes
/// nothing refers to; exit 5 on the command line.
#[tokio::test]
async fn verify_finds_deleted_tampered_and_unreferenced_objects() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("verify");
    let db_only = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    let in_db = db_only.put("acme", Content::from_bytes(data(3000, 60), None).unwrap()).await.unwrap();
    drop(db_only);
    let config: Config = s3_config(dir.path(), Some(&bucket), None);
    let coffer = Coffer::open(config.clone()).await.unwrap();
    let mut on_s3 = Vec::new();
    for i in 0..3u8 {
        on_s3.push(coffer.put("beta", Content::from_bytes(data(4000, 61 + i), None).unwrap()).await.unwrap());
    }
    verify_clean(&coffer).await;

    // Deleted behind Coffer's back, tampered on disk (same size), and an
    // object stored without a record.
    let root = crate::s3_server::server().root.join(&bucket);
    std::fs::remove_file(root.join(&on_s3[0].key)).unwrap();
    let tampered = root.join(&on_s3[1].key);
    let mut bytes = std::fs::read(&tampered).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&tampered, &bytes).unwrap();
    let raw = rusqlite::Connection::open(dir.path().join("coffer.db")).unwrap();
    raw.execute("UPDATE blob_data SET data = zeroblob(length(data))", []).unwrap();
    let stray = Content::from_bytes(data(777, 70), None).unwrap();
    let direct = S3Store::new(&config.s3).unwrap();
    direct.put(&bucket, &format!("beta/{}", stray.sha256()), &stray).await.unwrap();

    let findings = std::sync::Mutex::new(Vec::<Finding>::new());
    let collect = |f: &Finding| findings.lock().unwrap().push(f.clone());
    let shallow = coffer.verify(&VerifyOptions::default(), &NoProgress, &collect).await.unwrap();
    assert_eq!((shallow.missing, shallow.corrupt, shallow.unreferenced), (1, 0, 1), "{shallow:?}");
    assert!(!shallow.all_well());
    findings.lock().unwrap().clear();
    let deep = coffer.verify(&VerifyOptions { deep: true, ..Default::default() }, &NoProgress, &collect).await.unwrap();
    assert_eq!((deep.checked, deep.missing, deep.corrupt, deep.unreferenced), (4, 1, 2, 1), "{deep:?}");
    let found = findings.lock().unwrap().clone();
    let problem = |sha: &Digest| found.iter().find(|f| f.sha256 == Some(*sha)).map(|f| f.problem);
    assert_eq!(problem(&on_s3[0].sha256), Some(Problem::Missing));
    assert_eq!(problem(&on_s3[1].sha256), Some(Problem::Corrupt));
    assert_eq!(problem(&in_db.sha256), Some(Problem::Corrupt));
    assert_eq!(problem(&on_s3[2].sha256), None);
    assert!(
        found.iter().any(|f| f.problem == Problem::Unreferenced && f.location.ends_with(&stray.sha256().to_string()))
    );
    // One organisation only: its records, no listing of unreferenced bytes.
    let only = VerifyOptions { org: Some("acme".into()), deep: true, ..Default::default() };
    let acme = coffer.verify(&only, &NoProgress, &|_| {}).await.unwrap();
    assert_eq!((acme.checked, acme.corrupt, acme.unreferenced), (1, 1, 0), "{acme:?}");

    // S3 answering 503 to every HEAD: each of its objects is unreadable
    // (never "well"), the database's is still checked; exit 6.
    let proxy = FaultProxy::start();
    let mut down = config.clone();
    down.s3.endpoint_url = Some(proxy.endpoint());
    proxy.always(Op::HeadObject, Fault::Refuse(503, "SlowDown"));
    let down = Coffer::open(down).await.unwrap();
    let only = VerifyOptions { org: Some("beta".into()), ..Default::default() };
    let report = down.verify(&only, &NoProgress, &|_| {}).await.unwrap();
    assert_eq!((report.checked, report.unreadable, report.ok), (3, 3, 0), "{report:?}");
    assert!(!report.all_well());

    // The command line: a JSON line per finding, then the summary; exit 5.
    let endpoint = crate::s3_server::server().endpoint();
    let out =
        cli(dir.path(), Some((&endpoint, &[("S3_BUCKET", bucket.as_str())])), &["verify", "--deep"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5, "4 findings and the summary: {lines:?}");
    assert_eq!(lines[4]["corrupt"], 2);
    assert!(lines[..4].iter().any(|l| l["problem"] == "missing"));
}
