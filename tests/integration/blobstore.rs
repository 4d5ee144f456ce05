//! The `wasi:blobstore` host: the example plugin (a real `wasm32-wasip2`
//! component, `examples/blobstore-plugin`) run against SQLite and the S3
//! test server; organisations kept apart; open values keeping their
//! bytes; a 64 MiB value streamed through in bounded memory; the error
//! strings a plugin sees; names written and deleted concurrently.

use std::process::Command;

use coffer::blobstore::{BlobstoreCtx, BlobstoreLimits, PluginRun, run_plugin};
use coffer::{Coffer, Content};

use crate::support::{
    TestCoffer, data, objects_on_server, s3_coffer, s3_config, sqlite_coffer, sqlite_config, unique_bucket,
};

/// The example embedding program (`cargo run --example blobstore_host`),
/// whose platform-side code these tests run.
#[path = "../../examples/blobstore_host.rs"]
mod example_host;

fn plugin_path() -> std::path::PathBuf {
    std::path::Path::new(coffer::policy::TEST_GUESTS_DIR).join("coffer_example_blobstore_plugin.wasm")
}

async fn run_limited(coffer: &Coffer, org: &str, limits: BlobstoreLimits, args: &[&str]) -> PluginRun {
    let wasm = std::fs::read(plugin_path()).unwrap();
    let ctx = BlobstoreCtx::new(coffer.clone(), org).unwrap().with_limits(limits);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_plugin(ctx, &wasm, &args, true).await.unwrap()
}

async fn run(coffer: &Coffer, org: &str, args: &[&str]) -> PluginRun {
    run_limited(coffer, org, BlobstoreLimits::default(), args).await
}

/// Standard output of a run that must succeed.
async fn ok(coffer: &Coffer, org: &str, args: &[&str]) -> String {
    let r = run(coffer, org, args).await;
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status, 0, "{args:?} failed: {err}");
    String::from_utf8(r.stdout).unwrap()
}

/// Standard error of a run that must fail.
async fn fails(coffer: &Coffer, org: &str, args: &[&str]) -> String {
    fails_limited(coffer, org, BlobstoreLimits::default(), args).await
}

async fn fails_limited(coffer: &Coffer, org: &str, limits: BlobstoreLimits, args: &[&str]) -> String {
    let r = run_limited(coffer, org, limits, args).await;
    assert_ne!(r.status, 0, "{args:?} succeeded: {}", String::from_utf8_lossy(&r.stdout));
    String::from_utf8(r.stderr).unwrap()
}

const DEMO: &str = "\
stored hello.txt and copy-of-hello.txt (the same content, kept once)
listing: copy-of-hello.txt, hello.txt
hello.txt: Hello from a plugin!
bytes 0..=4: Hello
moved copy-of-hello.txt to moved.txt
deleted; has hello.txt: false
reading it again: not-found: container \"notes\" has no object \"hello.txt\"
container deleted
";

/// Rows left in the embedded database's tables.
fn rows(t: &TestCoffer, table: &str) -> i64 {
    t.raw_db().query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn the_example_plugin_stores_lists_reads_and_deletes_in_the_database() {
    let t = sqlite_coffer(&[]).await;
    assert_eq!(ok(&t.coffer, "acme", &["demo"]).await, DEMO);
    // Everything it stored went when it deleted it.
    t.coffer.quiesce(std::time::Duration::from_secs(10)).await;
    for table in ["named_objects", "named_containers", "blobs", "pending", "tombstones", "objects"] {
        assert_eq!(rows(&t, table), 0, "{table}");
    }
}

#[tokio::test]
async fn the_example_plugin_stores_lists_reads_and_deletes_on_s3() {
    let bucket = unique_bucket("plugin");
    let t = s3_coffer(&bucket).await;
    assert_eq!(ok(&t.coffer, "acme", &["demo"]).await, DEMO);
    t.coffer.quiesce(std::time::Duration::from_secs(10)).await;
    assert_eq!(objects_on_server(&bucket), Vec::<String>::new(), "what the plugin deleted is gone from S3");

    // The same content under two names is one object on S3; a copy adds
    // none; the last name deleted takes it away.
    ok(&t.coffer, "acme", &["mkdir", "docs"]).await;
    ok(&t.coffer, "acme", &["put", "docs", "a.txt", "same bytes"]).await;
    ok(&t.coffer, "acme", &["put", "docs", "b.txt", "same bytes"]).await;
    ok(&t.coffer, "acme", &["cp", "docs", "a.txt", "docs", "c.txt"]).await;
    assert_eq!(objects_on_server(&bucket).len(), 1);
    assert_eq!(ok(&t.coffer, "acme", &["cat", "docs", "c.txt"]).await, "same bytes\n");
    assert_eq!(ok(&t.coffer, "acme", &["cat", "docs", "c.txt", "5", "100"]).await, "bytes\n");
    ok(&t.coffer, "acme", &["rm", "docs", "a.txt", "b.txt"]).await;
    assert_eq!(objects_on_server(&bucket).len(), 1, "c.txt still names it");
    ok(&t.coffer, "acme", &["clear", "docs"]).await;
    assert_eq!(objects_on_server(&bucket), Vec::<String>::new());
    assert_eq!(ok(&t.coffer, "acme", &["ls", "docs"]).await, "");
}

/// The example embedding program's own code runs the plugin, against the
/// embedded default and against S3.
#[tokio::test]
async fn the_example_embedding_runs_the_plugin_on_sqlite_and_s3() {
    let bucket = unique_bucket("embedding");
    for t in [sqlite_coffer(&[]).await, s3_coffer(&bucket).await] {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 16);
        let mut wasi = wasmtime_wasi::WasiCtx::builder();
        wasi.arg("plugin").arg("demo").stdout(stdout.clone());
        let wasm = std::fs::read(plugin_path()).unwrap();
        let status = example_host::run_plugin_for(&t.coffer, "acme", &wasm, wasi.build()).await.unwrap();
        assert_eq!((status, String::from_utf8_lossy(&stdout.contents())), (0, DEMO.into()));
    }
}

#[tokio::test]
async fn listing_pages_through_every_name() {
    let t = sqlite_coffer(&[]).await;
    t.coffer.create_container("acme", "many").await.unwrap();
    // More than one page of the host's (1000), read 7 at a time.
    for i in 0..1203 {
        let content = Content::from_bytes(format!("{}", i % 3), None).unwrap();
        t.coffer.put_named("acme", "many", &format!("n{i:05}"), content).await.unwrap();
    }
    let listed = ok(&t.coffer, "acme", &["ls", "many", "7"]).await;
    let expected: String = (0..1203).map(|i| format!("n{i:05}\n")).collect();
    assert_eq!(listed, expected);
    assert_eq!(rows(&t, "blobs"), 3, "three contents, stored once each");
}

#[tokio::test]
async fn plugins_for_two_organisations_cannot_see_each_others_containers() {
    let t = sqlite_coffer(&[]).await;
    let c = &t.coffer;
    ok(c, "acme", &["mkdir", "shared"]).await;
    ok(c, "acme", &["put", "shared", "secret", "acme's secret"]).await;

    // Umbrella's plugin cannot list, read, probe, copy, move, clear or
    // delete acme's container: to it, there is none.
    let none = "not-found: organisation \"umbrella\" has no container \"shared\"";
    for args in [
        &["ls", "shared"][..],
        &["cat", "shared", "secret"],
        &["info", "shared", "secret"],
        &["rm", "shared", "secret"],
        &["clear", "shared"],
        &["rmdir", "shared"],
    ] {
        let err = fails(c, "umbrella", args).await;
        assert!(err.contains(none), "{args:?}: {err}");
    }
    ok(c, "umbrella", &["mkdir", "mine"]).await;
    for verb in ["cp", "mv"] {
        let err = fails(c, "umbrella", &[verb, "shared", "secret", "mine", "stolen"]).await;
        assert!(err.contains(none), "{verb}: {err}");
    }
    assert_eq!(ok(c, "umbrella", &["ls", "mine"]).await, "");

    // Its own container of the same name is its own.
    ok(c, "umbrella", &["mkdir", "shared"]).await;
    assert_eq!(ok(c, "umbrella", &["ls", "shared"]).await, "");
    ok(c, "umbrella", &["put", "shared", "secret", "umbrella's"]).await;
    ok(c, "umbrella", &["rmdir", "shared"]).await;
    assert_eq!(ok(c, "acme", &["cat", "shared", "secret"]).await, "acme's secret\n");
    assert_eq!(ok(c, "acme", &["ls", "shared"]).await, "secret\n");
}

#[tokio::test]
async fn an_open_value_keeps_its_bytes_when_its_object_is_deleted() {
    let t = sqlite_coffer(&[]).await;
    ok(&t.coffer, "acme", &["mkdir", "c"]).await;
    ok(&t.coffer, "acme", &["put", "c", "n", "kept while open"]).await;
    assert_eq!(
        ok(&t.coffer, "acme", &["hold", "c", "n"]).await,
        "deleted; has n: false\nstill read: kept while open\n"
    );
    // Closed: nothing refers to the bytes any more, and they are gone.
    assert!(t.coffer.quiesce(std::time::Duration::from_secs(10)).await);
    assert_eq!(rows(&t, "blobs"), 0);
    assert_eq!(rows(&t, "pending"), 0);
}

#[tokio::test]
async fn error_strings_tell_the_plugin_what_went_wrong() {
    let t = sqlite_coffer(&[("max-size", "100")]).await;
    let c = &t.coffer;
    ok(c, "acme", &["mkdir", "docs"]).await;
    ok(c, "acme", &["put", "docs", "a", "hello"]).await;
    let cases: &[(&[&str], &str)] = &[
        (&["cat", "nope", "x"], "error: not-found: organisation \"acme\" has no container \"nope\""),
        (&["cat", "docs", "x"], "error: not-found: container \"docs\" has no object \"x\""),
        (&["mkdir", "docs"], "error: conflict: container \"docs\" already exists"),
        (&["put", "docs", "", "x"], "error: invalid-input: object name \"\" is empty"),
        (&["mkdir", "tab\there"], "error: invalid-input: container name \"tab\\there\" contains a control character"),
        (&["cat", "docs", "a", "10", "20"], "starts past the end of docs/a, which is 5 bytes long"),
        (&["cat", "docs", "a", "3", "1"], "error: invalid-input: range 3..=1 of \"a\": start is after end"),
        (
            &["cp", "docs", "a", "elsewhere", "a"],
            "error: not-found: organisation \"acme\" has no container \"elsewhere\"",
        ),
    ];
    for (args, expected) in cases {
        let err = fails(c, "acme", args).await;
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // An empty value is a value: read whole or from 0, never from past 0.
    ok(c, "acme", &["put", "docs", "empty", ""]).await;
    assert_eq!(ok(c, "acme", &["cat", "docs", "empty"]).await, "\n");
    assert_eq!(ok(c, "acme", &["cat", "docs", "empty", "0", "9"]).await, "\n");
    let err = fails(c, "acme", &["cat", "docs", "empty", "1", "9"]).await;
    assert!(err.contains("starts past the end of docs/empty, which is 0 bytes long"), "{err}");
    // The organisation's size limit stops the write as it streams.
    let err = fails(c, "acme", &["put", "docs", "big", &"x".repeat(200)]).await;
    assert!(err.contains("error: invalid-input: the value is over the organisation's max-size: 100 bytes"), "{err}");

    // The host's limits say what to do instead.
    let small = BlobstoreLimits { max_sync_read: 3, ..Default::default() };
    let err = fails_limited(c, "acme", small, &["cat", "docs", "a"]).await;
    assert!(
        err.contains("invalid-input: the value is 5 bytes, over the 3 bytes incoming-value-consume-sync returns")
            && err.contains("incoming-value-consume-async"),
        "{err}"
    );
    let small = BlobstoreLimits { max_value_size: Some(3), ..Default::default() };
    let err = fails_limited(c, "acme", small, &["put", "docs", "b", "hello"]).await;
    assert!(err.contains("over the limit a plugin may write (max_value_size): 3 bytes"), "{err}");
    assert!(fails(c, "acme", &["cat", "docs", "b"]).await.contains("has no object \"b\""), "nothing was stored");

    // Corrupt bytes are an integrity error, never wrong bytes.
    let db = t.raw_db();
    let mut stored: Vec<u8> = db.query_row("SELECT data FROM blob_data", [], |r| r.get(0)).unwrap();
    stored[1] ^= 0xff;
    db.execute("UPDATE blob_data SET data = ?1", [stored]).unwrap();
    let err = fails(c, "acme", &["cat", "docs", "a"]).await;
    assert!(err.contains("error: integrity: ") && err.contains("docs/a"), "{err}");
}

#[tokio::test]
async fn a_policy_that_keeps_objects_keeps_them_whatever_the_plugin_calls() {
    let t = sqlite_coffer(&[("allow-delete", "false")]).await;
    let c = &t.coffer;
    ok(c, "acme", &["mkdir", "docs"]).await;
    ok(c, "acme", &["mkdir", "other"]).await;
    ok(c, "acme", &["put", "docs", "a", "kept"]).await;
    // Every way of letting the content go is refused, in the policy's words.
    for args in [
        &["rm", "docs", "a"][..],
        &["clear", "docs"],
        &["rmdir", "docs"],
        &["put", "docs", "a", "replaced"],
        &["mv", "docs", "a", "other", "a"],
    ] {
        let err = fails(c, "acme", args).await;
        assert!(err.contains("error: denied: "), "{args:?}: {err}");
    }
    ok(c, "acme", &["cp", "docs", "a", "other", "a"]).await;
    // Naming the same content again lets nothing go.
    ok(c, "acme", &["cp", "docs", "a", "other", "a"]).await;
    ok(c, "acme", &["put", "docs", "a", "kept"]).await;
    ok(c, "acme", &["put", "other", "b", "other content"]).await;
    let err = fails(c, "acme", &["cp", "docs", "a", "other", "b"]).await;
    assert!(err.contains("error: denied: "), "replacing other content: {err}");
    assert_eq!(ok(c, "acme", &["cat", "other", "b"]).await, "other content\n");
    assert_eq!(ok(c, "acme", &["cat", "docs", "a"]).await, "kept\n");
    assert_eq!(ok(c, "acme", &["cat", "other", "a"]).await, "kept\n");
}

#[tokio::test]
async fn a_plugin_cannot_hold_more_values_open_than_its_limits() {
    let t = sqlite_coffer(&[]).await;
    let c = &t.coffer;
    ok(c, "acme", &["mkdir", "docs"]).await;
    ok(c, "acme", &["put", "docs", "a", "x"]).await;
    let limits = BlobstoreLimits { max_open_reads: 2, max_open_writes: 1, ..Default::default() };
    let err = fails_limited(c, "acme", limits.clone(), &["open-many", "docs", "a", "3"]).await;
    assert!(err.contains("after 2 open: invalid-input: too many incoming values"), "{err}");
    let streams = BlobstoreLimits { max_open_streams: 2, ..Default::default() };
    let err = fails_limited(c, "acme", streams, &["stream-many", "docs", "a", "3"]).await;
    assert!(err.contains("after 2 streams: invalid-input: too many value streams open at once (at most 2)"), "{err}");
    let err = fails_limited(c, "acme", limits.clone(), &["write-many", "docs", "2"]).await;
    assert!(err.contains("value 1: invalid-input: too many outgoing values open at once (at most 1)"), "{err}");
    // Closed values give their slots back: the demo reads, lists and
    // writes one value after another with room for one of each.
    let one = BlobstoreLimits { max_open_reads: 1, max_open_writes: 1, ..Default::default() };
    let r = run_limited(c, "acme", one, &["demo"]).await;
    assert_eq!(
        (r.status, String::from_utf8_lossy(&r.stdout)),
        (0, DEMO.into()),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // Nothing was pinned past the run.
    assert!(c.quiesce(std::time::Duration::from_secs(10)).await);
    assert_eq!(rows(&t, "pending"), 0);
}

/// A plugin that breaks the contract traps with a clear error; nothing it
/// was writing is stored, and the host serves the next plugin.
#[tokio::test]
async fn a_plugin_that_traps_stores_nothing_and_the_host_goes_on() {
    let t = sqlite_coffer(&[]).await;
    let c = &t.coffer;
    ok(c, "acme", &["mkdir", "docs"]).await;
    let wasm = std::fs::read(plugin_path()).unwrap();
    let ctx = BlobstoreCtx::new(c.clone(), "acme").unwrap();
    let args = ["finish-early", "docs", "n"].map(String::from);
    let err = run_plugin(ctx, &wasm, &args, true).await.unwrap_err();
    assert!(matches!(&err, coffer::Error::Plugin(m) if m.contains("trapped")), "{err}");
    let said = err.to_string();
    assert!(said.starts_with("plugin: ") && !said.contains("policy"), "a plugin is not a policy: {said}");
    assert!(c.quiesce(std::time::Duration::from_secs(10)).await);
    assert_eq!(ok(c, "acme", &["ls", "docs"]).await, "");
    assert_eq!((rows(&t, "blobs"), rows(&t, "pending")), (0, 0));
    ok(c, "acme", &["put", "docs", "n", "after the trap"]).await;
    assert_eq!(ok(c, "acme", &["cat", "docs", "n"]).await, "after the trap\n");
}

/// S3 down while a plugin writes: `finish` says so, nothing is named, and
/// the catalog holds nothing for it.
#[tokio::test]
async fn s3_down_is_an_unavailable_error_for_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), Some(&unique_bucket("down")), None);
    // Nothing listens there: every connection is refused at once.
    config.s3.endpoint_url = Some("http://127.0.0.1:9".into());
    let down = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let c = &down.coffer;
    ok(c, "acme", &["mkdir", "docs"]).await;
    let err = fails(c, "acme", &["put", "docs", "a", "hello"]).await;
    assert!(err.contains("error: unavailable: "), "{err}");
    assert!(fails(c, "acme", &["cat", "docs", "a"]).await.contains("has no object \"a\""), "nothing named");
    assert!(c.quiesce(std::time::Duration::from_secs(10)).await);
    assert_eq!((rows(&down, "named_objects"), rows(&down, "pending")), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_written_and_deleted_concurrently_stay_readable_and_leave_nothing_behind() {
    let t = sqlite_coffer(&[]).await;
    let c = t.coffer.clone();
    c.create_container("acme", "race").await.unwrap();
    // Writers put (often the same) contents under a few shared names while
    // deleters drop them; bounded: 4 × 12 writes, 2 × 12 deletes.
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..12u8 {
                let content = Content::from_bytes(data(2000 + usize::from(i % 3), i % 3), None).unwrap();
                c.put_named("acme", "race", &format!("n{}", (w + i) % 3), content).await.unwrap();
            }
        }));
    }
    for d in 0..2u8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..12u8 {
                c.delete_named("acme", "race", &[format!("n{}", (d + i) % 3)]).await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every name left reads back whole and verified; every blob left is
    // named; nothing is pending or half-deleted.
    let names = c.list_named("acme", "race", "", 100).await.unwrap();
    for n in &names {
        let open = c.open_named("acme", "race", &n.name).await.unwrap();
        let mut stream = open.stream(0, u64::MAX).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(coffer::Digest::of(&bytes), n.sha256, "{}", n.name);
    }
    assert!(c.quiesce(std::time::Duration::from_secs(10)).await);
    let distinct: std::collections::HashSet<_> = names.iter().map(|n| n.sha256).collect();
    assert_eq!(rows(&t, "blobs"), distinct.len() as i64);
    assert_eq!((rows(&t, "pending"), rows(&t, "tombstones")), (0, 0));
}

/// What a name of acme's reads back, whole and verified.
async fn read_named(c: &Coffer, container: &str, name: &str) -> Vec<u8> {
    let open = c.open_named("acme", container, name).await.unwrap();
    let mut stream = open.stream(0, u64::MAX).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

/// Switching between the database and S3 keeps named objects readable:
/// `coffer migrate` moves the content only names refer to, and the names
/// of a moved record follow it; `coffer verify` checks names' bytes too.
#[tokio::test]
async fn named_objects_move_with_migrate_both_ways_and_are_verified() {
    use coffer::gc::NoProgress;
    use coffer::migrate::MigrateOptions;
    use coffer::verify::VerifyOptions;
    let dir = tempfile::tempdir().unwrap();
    let db = |t: &str| -> i64 {
        let conn = rusqlite::Connection::open(dir.path().join("coffer.db")).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap()
    };
    let verify_clean = |c: Coffer| async move {
        let options = VerifyOptions { deep: true, ..VerifyOptions::default() };
        let report = c.verify(&options, &NoProgress, &|f| panic!("verify found {f:?}")).await.unwrap();
        assert!(report.all_well() && report.unreferenced == 0, "{report:?}");
        assert_eq!(report.checked, 2, "the record, and the content only a name refers to");
    };
    let (only_named, shared) = (data(3000, 1), data(3000, 2));
    let on_db = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    on_db.create_container("acme", "docs").await.unwrap();
    on_db.put_named("acme", "docs", "a", Content::from_bytes(only_named.clone(), None).unwrap()).await.unwrap();
    let record = on_db.put("acme", Content::from_bytes(shared.clone(), None).unwrap()).await.unwrap();
    let b = on_db.put_named("acme", "docs", "b", Content::from_bytes(shared.clone(), None).unwrap()).await.unwrap();
    assert_eq!(b.location.name, record.key, "the name shares the record's location");
    verify_clean(on_db.clone()).await;
    drop(on_db);

    // Database → S3.
    let bucket = unique_bucket("named-migrate");
    let on_s3 = Coffer::open(s3_config(dir.path(), Some(&bucket), None)).await.unwrap();
    let report = on_s3.migrate(&MigrateOptions::default(), &NoProgress).await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.moved, 2, "{report:?}");
    assert_eq!((objects_on_server(&bucket).len(), db("blobs")), (2, 0));
    for (name, bytes) in [("a", &only_named), ("b", &shared)] {
        let n = on_s3.named("acme", "docs", name).await.unwrap();
        assert_eq!(n.location.backend, coffer::backend::BackendKind::S3, "{name}");
        assert!(read_named(&on_s3, "docs", name).await == *bytes, "{name}");
    }
    verify_clean(on_s3.clone()).await;
    assert_eq!(on_s3.migrate(&MigrateOptions::default(), &NoProgress).await.unwrap().moved, 0, "nothing left");

    // S3 → database (S3 still configured to read; new objects go to the
    // database), then S3 is switched off: the names still read.
    let mut off = s3_config(dir.path(), Some(&bucket), None);
    off.settings.insert("store-in".into(), "database".into());
    let leaving = Coffer::open(off).await.unwrap();
    let report = leaving.migrate(&MigrateOptions::default(), &NoProgress).await.unwrap();
    assert!(report.errors.is_empty() && report.moved == 2, "{report:?}");
    assert_eq!(objects_on_server(&bucket), Vec::<String>::new());
    drop(leaving);
    let back = Coffer::open(sqlite_config(dir.path(), &[])).await.unwrap();
    assert!(read_named(&back, "docs", "a").await == only_named);
    assert!(read_named(&back, "docs", "b").await == shared);
    verify_clean(back.clone()).await;

    // A named object's bytes gone missing is found.
    let conn = rusqlite::Connection::open(dir.path().join("coffer.db")).unwrap();
    let a = back.named("acme", "docs", "a").await.unwrap();
    conn.execute("DELETE FROM blobs WHERE name = ?1", [&a.location.name]).unwrap();
    let found = std::sync::Mutex::new(Vec::new());
    let report = back
        .verify(&VerifyOptions::default(), &NoProgress, &|f| found.lock().unwrap().push(f.location.clone()))
        .await
        .unwrap();
    assert_eq!(report.missing, 1, "{report:?}");
    assert_eq!(*found.lock().unwrap(), [a.location.to_string()]);
}

/// The mission's memory bound.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

#[test]
fn a_64_mib_value_round_trips_through_a_plugin_in_bounded_memory() {
    let server = crate::s3_server::server();
    let bucket = unique_bucket("plugin-big");
    let plugin = plugin_path();
    for s3 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let coffer = |args: &[&str]| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
            cmd.current_dir(dir.path()).env_clear().env("COFFER_CACHE_DIR", dir.path().join("cache"));
            if s3 {
                cmd.env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY)
                    .env("AWS_ENDPOINT_URL", server.endpoint())
                    .env("S3_BUCKET", &bucket)
                    // Up in parts, as a large value would go.
                    .env("COFFER_MULTIPART_THRESHOLD", (16u64 << 20).to_string());
            }
            cmd.arg("run-plugin").arg(&plugin).args(["--org", "acme"]).args(args);
            cmd
        };
        let (done, write_peak, err) = crate::memory::run_watching_memory(&mut coffer(&["write", "big", "v", "64"]));
        assert!(done, "{err}");
        let (done, read_peak, err) = crate::memory::run_watching_memory(&mut coffer(&["check", "big", "v", "64"]));
        assert!(done, "{err}");
        eprintln!("peak RSS (s3: {s3}): write {write_peak} KiB, read {read_peak} KiB for a 64 MiB value");
        assert!(write_peak < PEAK_LIMIT_KIB, "writing peaked at {write_peak} KiB");
        assert!(read_peak < PEAK_LIMIT_KIB, "reading peaked at {read_peak} KiB");
    }
}

/// A plugin's values are spooled within the host's one budget: a value
/// that would go past it fails with a clear error and stores nothing, and
/// the budget is whole again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_past_the_hosts_spool_budget_fails_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::sqlite_config(dir.path(), &[]);
    config.server.spool_dir = Some(dir.path().to_path_buf());
    config.server.spool_limit = Some(8 << 20);
    let c = &Coffer::open(config).await.unwrap();
    ok(c, "acme", &["mkdir", "big"]).await;
    let err = fails(c, "acme", &["write", "big", "v", "16"]).await;
    assert!(err.contains("unavailable") && err.contains("spool for uploads is full"), "{err}");
    assert_eq!(ok(c, "acme", &["ls", "big"]).await, "", "nothing stored");
    assert_eq!(c.spool().used(), 0, "the budget is whole again");
    ok(c, "acme", &["write", "big", "v", "6"]).await;
    assert_eq!(ok(c, "acme", &["check", "big", "v", "6"]).await, format!("verified {} bytes\n", 6 << 20));
}

/// A plugin's range is a `Range` GET on S3 (as the fault proxy in front of
/// the server sees), and a whole read is one plain GET, verified.
#[tokio::test]
async fn a_plugins_range_reads_only_its_bytes_from_s3() {
    use crate::fault_proxy::FaultProxy;
    let proxy = FaultProxy::start();
    let dir = tempfile::tempdir().unwrap();
    let c = Coffer::open(proxy.s3_config(dir.path(), Some(&unique_bucket("plugrange")), None)).await.unwrap();
    ok(&c, "acme", &["mkdir", "docs"]).await;
    ok(&c, "acme", &["put", "docs", "a.txt", "0123456789abcdef"]).await;
    assert_eq!(ok(&c, "acme", &["cat", "docs", "a.txt", "3", "6"]).await, "3456\n");
    assert_eq!(proxy.ranges(), vec![Some("bytes=3-6".to_string())], "only the range was asked for");
    assert_eq!(ok(&c, "acme", &["cat", "docs", "a.txt"]).await, "0123456789abcdef\n");
    assert_eq!(proxy.ranges().last().unwrap(), &None, "a whole read is a plain GET");
}
