//! S3 faults between Coffer and the server, injected by the proxy
//! (`fault_proxy.rs`): 5xx and SlowDown, connections reset mid-body or
//! dropped right before or after the answer's headers, stalls past the
//! timeout, completions answered 200 with an error, servers that report no
//! digests. Nothing acknowledged is lost, no record points at nothing, and
//! every failure is a clear error with the right exit code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::gc::{GcOptions, NoProgress};
use coffer::{Coffer, Config, Content, Digest, Error, ErrorKind};

use crate::fault_proxy::{Fault, FaultProxy, Op};
use crate::support::{data, drain, objects_on_server, s3_config, unique_bucket};

/// Coffer on `bucket` through `proxy`: requests time out after 1 s of
/// silence, deletions after 1 s; multipart above 6 MiB in 5 MiB parts.
fn config_via(proxy: &FaultProxy, dir: &std::path::Path, bucket: &str) -> Config {
    let mut config = proxy.s3_config(dir, Some(bucket), None);
    config.s3.timeout = Some(1);
    config.s3.multipart_threshold = Some(6 << 20);
    config.s3.part_size = Some(5 << 20);
    config.delete_timeout = Some(1);
    config
}

/// A proxy, a bucket and a catalog of their own, and Coffer on them.
async fn faulty(stem: &str) -> (FaultProxy, String, tempfile::TempDir, Coffer) {
    let proxy = FaultProxy::start();
    let bucket = unique_bucket(stem);
    let dir = tempfile::tempdir().unwrap();
    let coffer = Coffer::open(config_via(&proxy, dir.path(), &bucket)).await.unwrap();
    (proxy, bucket, dir, coffer)
}

/// The test server, directly (no proxy): to look at what is really there.
fn direct() -> S3Store {
    let dir = tempfile::tempdir().unwrap();
    S3Store::new(&s3_config(dir.path(), Some("unused"), None).s3).unwrap()
}

fn rows(dir: &std::path::Path, table: &str) -> i64 {
    let db = rusqlite::Connection::open(dir.join("coffer.db")).unwrap();
    db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

/// After everything: records and bytes agree exactly, nothing pending,
/// tombstoned or half-uploaded.
async fn assert_clean(coffer: &Coffer, dir: &std::path::Path, bucket: &str, orgs: &[&str]) {
    let mut keys = Vec::new();
    for org in orgs {
        for info in coffer.list(org, None, 10_000).await.unwrap() {
            let got = coffer.get_bytes(org, &info.sha256).await;
            assert!(got.is_ok(), "{org}/{}: a record without its bytes: {got:?}", info.sha256);
            keys.push(info.key);
        }
    }
    keys.sort();
    assert_eq!(objects_on_server(bucket), keys, "bytes on the server are exactly those recorded");
    assert_eq!((rows(dir, "pending"), rows(dir, "tombstones")), (0, 0));
    assert!(direct().incomplete_uploads(bucket).await.unwrap().is_empty(), "incomplete multipart uploads left");
}

/// What the test knows of one (organisation, content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Present,
    Absent,
    /// A delete failed: the record may or may not be gone.
    Unsure,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_random_operations_through_a_faulty_network_lose_nothing() {
    let (proxy, bucket, dir, coffer) = faulty("faulty").await;
    // Contents: mostly small, two that go up in parts.
    let mut contents: Vec<Arc<Vec<u8>>> = (0..10u8).map(|i| Arc::new(data(1000 + 7000 * usize::from(i), i))).collect();
    contents.push(Arc::new(data((6 << 20) + 1234, 200)));
    contents.push(Arc::new(data((11 << 20) + 99, 201)));
    let orgs = ["acme", "globex"];
    let seed = std::env::var("COFFER_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261123u64);
    eprintln!("fault seed {seed} (COFFER_FAULT_SEED to replay)");
    proxy.random(
        seed,
        0.4,
        &[
            Fault::Refuse(500, "InternalError"),
            Fault::Refuse(503, "SlowDown"),
            Fault::Refuse(503, "ServiceUnavailable"),
            Fault::RefuseAfter(500, "InternalError"),
            Fault::ResetMidBody,
            Fault::DropBeforeHeaders,
            Fault::DropAfterHeaders,
            Fault::Stall(Duration::from_millis(1500)),
        ],
    );

    // Each worker owns its (organisation, content) pairs, so what it knows
    // of them is exact; the workers run at once.
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let known: Arc<Mutex<HashMap<(usize, usize), Known>>> = Arc::default();
    let workers = 4;
    let ops_per_worker = 75;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (coffer, contents, errors, known) = (coffer.clone(), contents.clone(), errors.clone(), known.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ (w as u64 * 7919));
            let pairs: Vec<(usize, usize)> = (0..orgs.len())
                .flat_map(|o| (0..contents.len()).map(move |c| (o, c)))
                .filter(|(o, c)| (o * 31 + c) % workers == w)
                .collect();
            for _ in 0..ops_per_worker {
                let (o, c) = pairs[rng.usize(..pairs.len())];
                let (org, bytes) = (orgs[o], &contents[c]);
                let sha = Digest::of(bytes);
                let state = known.lock().unwrap().get(&(o, c)).copied().unwrap_or(Known::Absent);
                let roll = rng.u8(..100);
                let outcome: Result<Known, Error> = if roll < 50 {
                    match coffer.put(org, Content::from_bytes(bytes.to_vec(), None).unwrap()).await {
                        Ok(info) => {
                            assert_eq!(info.sha256, sha);
                            Ok(Known::Present)
                        }
                        // A failed put records nothing new.
                        Err(e) => Err(e),
                    }
                } else if roll < 80 {
                    match coffer.get_bytes(org, &sha).await {
                        Ok(got) => {
                            assert!(got == bytes.as_slice(), "{org}: wrong bytes for {sha}");
                            assert_ne!(state, Known::Absent, "{org}/{sha}: readable after it was deleted");
                            Ok(Known::Present)
                        }
                        Err(Error::NotFound(m)) => {
                            assert_ne!(state, Known::Present, "{org}/{sha}: an acknowledged object was lost: {m}");
                            Ok(Known::Absent)
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    match coffer.delete(org, &sha.to_string()).await {
                        Ok(_) => {
                            assert_ne!(state, Known::Absent, "{org}/{sha}: deleted twice");
                            Ok(Known::Absent)
                        }
                        Err(Error::NotFound(_)) => {
                            assert_ne!(state, Known::Present, "{org}/{sha}: an acknowledged object was lost");
                            Ok(Known::Absent)
                        }
                        Err(e) => {
                            known.lock().unwrap().insert((o, c), Known::Unsure);
                            Err(e)
                        }
                    }
                };
                match outcome {
                    Ok(k) => {
                        known.lock().unwrap().insert((o, c), k);
                    }
                    Err(e) => {
                        // Faults that outlast the retries: a clear error, exit code 6.
                        let line = format!("{org}: {e}");
                        assert_eq!(e.kind(), ErrorKind::Unavailable, "{line}");
                        assert_eq!(coffer::cli::exit_code(e.kind()), 6);
                        assert!(!matches!(e, Error::Integrity(_)), "{line}");
                        errors.lock().unwrap().push(line);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    proxy.calm();
    let injected = proxy.injected();
    eprintln!("{} faults injected; {} operations failed after retries", injected.len(), errors.lock().unwrap().len());
    assert!(injected.len() >= 100, "the network was not faulty enough to prove anything: {}", injected.len());

    // Every acknowledged object is there, verified; nothing deleted is.
    let known = known.lock().unwrap().clone();
    for ((o, c), k) in known {
        let got = coffer.get_bytes(orgs[o], &Digest::of(&contents[c])).await;
        match k {
            Known::Present => assert!(got.is_ok_and(|b| b == contents[c].as_slice()), "{}/{c}: lost", orgs[o]),
            Known::Absent => assert!(matches!(got, Err(Error::NotFound(_))), "{}/{c}: {got:?}", orgs[o]),
            Known::Unsure => assert!(got.is_ok() || matches!(got, Err(Error::NotFound(_))), "{got:?}"),
        }
    }
    // What failed deletions and abandoned uploads left is reclaimed.
    if rows(dir.path(), "tombstones") > 0 {
        tokio::time::sleep(Duration::from_millis(6200)).await; // their leases (2 × 1 s + 3 s) run out
    }
    let report = coffer.gc(&GcOptions { older_than: Duration::ZERO, dry_run: false }, &NoProgress).await.unwrap();
    assert_eq!(report.error_count, 0, "{report:?}");
    assert_eq!(report.kept_unrecognised, 0, "{report:?}");
    assert_clean(&coffer, dir.path(), &bucket, &orgs).await;
}

/// A multipart put through `proxy` with `fault` on the first completion.
async fn multipart_with(fault: Fault) {
    let (proxy, bucket, dir, coffer) = faulty("complete").await;
    let bytes = data((7 << 20) + 5, 31);
    proxy.once(Op::Complete, 0, fault);
    let info = coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    assert_eq!(proxy.injected(), vec![(Op::Complete, fault)]);
    assert!(coffer.get_bytes("acme", &info.sha256).await.unwrap() == bytes);
    assert_clean(&coffer, dir.path(), &bucket, &["acme"]).await;
}

#[tokio::test]
async fn a_completion_whose_answer_breaks_off_after_the_headers_is_confirmed_by_a_head() {
    multipart_with(Fault::DropAfterHeaders).await;
}

#[tokio::test]
async fn a_completion_dropped_before_its_answer_is_confirmed_by_a_head() {
    multipart_with(Fault::DropBeforeHeaders).await;
}

#[tokio::test]
async fn a_completion_answered_500_after_the_server_completed_it_is_confirmed() {
    multipart_with(Fault::RefuseAfter(500, "InternalError")).await;
}

#[tokio::test]
async fn a_completion_answered_200_with_an_error_document_is_retried() {
    multipart_with(Fault::OkWithError).await;
}

/// A large file in the parts recorded while it was hashed, through a
/// network that breaks two of them: a part reset mid-body and a part
/// answered 500 are sent again, each retry reading the part from the file
/// once more and checking it against its recorded CRC32C, and the object
/// comes back whole with nothing left over.
#[tokio::test]
async fn recorded_parts_broken_on_the_way_are_sent_again() {
    let proxy = FaultProxy::start();
    let bucket = unique_bucket("recorded-faults");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_via(&proxy, dir.path(), &bucket);
    config.s3.part_size = Some(coffer::content::PART_SIZE);
    let coffer = Coffer::open(config).await.unwrap();
    let path = dir.path().join("big.bin");
    let bytes = data((coffer::content::PARTS_ABOVE + (2 << 20) + 3) as usize, 33);
    std::fs::write(&path, &bytes).unwrap();
    let content = Content::from_path(&path, None).await.unwrap();
    assert!(content.parts(coffer::content::PART_SIZE).is_some(), "the recorded parts are used");
    proxy.once(Op::UploadPart, 1, Fault::ResetMidBody);
    proxy.once(Op::UploadPart, 4, Fault::Refuse(500, "InternalError"));
    let info = coffer.put("acme", content).await.unwrap();
    assert_eq!(proxy.injected().len(), 2, "{:?}", proxy.injected());
    assert_eq!(proxy.seen(Op::UploadPart), 9 + 2, "nine parts, two of them twice");
    assert!(coffer.get_bytes("acme", &info.sha256).await.unwrap() == bytes);
    assert_clean(&coffer, dir.path(), &bucket, &["acme"]).await;
}

/// S3 refuses every DELETE: `rm` removes the record (nothing can read it
/// any more), says the bytes stay until gc, exits 6; once S3 is back and
/// the lease has run out, gc deletes them.
#[tokio::test]
async fn a_delete_whose_bytes_cannot_be_deleted_removes_the_record_and_gc_finishes_it() {
    let (proxy, bucket, dir, coffer) = faulty("undeletable").await;
    let info = coffer.put("acme", Content::from_bytes("stuck", None).unwrap()).await.unwrap();
    proxy.always(Op::DeleteObject, Fault::Refuse(503, "ServiceUnavailable"));
    let err = coffer.delete("acme", &info.sha256.to_string()).await.unwrap_err();
    assert!(err.to_string().contains("record is removed") && err.to_string().contains("coffer gc"), "{err}");
    assert_eq!(coffer::cli::exit_code(err.kind()), 6);
    assert!(matches!(coffer.stat("acme", &info.sha256.to_string()).await, Err(Error::NotFound(_))));
    assert_eq!(objects_on_server(&bucket), vec![info.key.clone()], "the bytes are still there");
    assert_eq!(rows(dir.path(), "tombstones"), 1);
    proxy.calm();
    tokio::time::sleep(Duration::from_millis(6200)).await; // the lease (2 × 1 s + 3 s) runs out
    let report = coffer.gc(&GcOptions { older_than: Duration::ZERO, dry_run: false }, &NoProgress).await.unwrap();
    assert_eq!(report.deletions_finished, 1, "{report:?}");
    assert_clean(&coffer, dir.path(), &bucket, &["acme"]).await;
}

#[tokio::test]
async fn a_stalled_request_times_out_and_is_retried() {
    let (proxy, _bucket, _dir, coffer) = faulty("stall").await;
    proxy.once(Op::PutObject, 0, Fault::Stall(Duration::from_secs(3)));
    let info = coffer.put("acme", Content::from_bytes("patience", None).unwrap()).await.unwrap();
    assert_eq!(proxy.seen(Op::PutObject), 2, "timed out after 1 s, then retried");
    assert_eq!(coffer.get_bytes("acme", &info.sha256).await.unwrap(), "patience");
}

#[tokio::test]
async fn a_server_failing_every_attempt_is_a_clear_error_and_records_nothing() {
    let (proxy, _bucket, dir, coffer) = faulty("failing").await;
    proxy.always(Op::PutObject, Fault::Refuse(503, "SlowDown"));
    let err = coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("SlowDown") && err.to_string().contains("gave up after 4 attempts"), "{err}");
    assert_eq!(coffer::cli::exit_code(err.kind()), 6);
    proxy.calm();
    assert!(coffer.list("acme", None, 10).await.unwrap().is_empty());
    assert_eq!(rows(dir.path(), "pending"), 0, "the reservation was released");
}

/// Content already on the server, put by a host with another catalog
/// (so this one must ask the server): with digests reported it is
/// de-duplicated; through a server that reports none, it is a conflict
/// (exit code 8), never adopted on its size.
#[tokio::test]
async fn content_whose_digest_the_server_cannot_confirm_is_a_conflict_never_adopted() {
    let proxy = FaultProxy::start();
    let bucket = unique_bucket("nodigest");
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Coffer::open(config_via(&proxy, one.path(), &bucket)).await.unwrap();
    let small = data(10_000, 41);
    let large = data((9 << 20) + 3, 42); // above dedup-probe-min-size: looked for with a HEAD first
    for bytes in [&small, &large] {
        first.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    }
    let second = Coffer::open(config_via(&proxy, two.path(), &bucket)).await.unwrap();
    proxy.always(Op::HeadObject, Fault::StripDigests);
    for bytes in [&small, &large] {
        let err = second.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap_err();
        assert!(matches!(&err, Error::Conflict(m) if m.contains("cannot be confirmed")), "{err}");
        assert_eq!(coffer::cli::exit_code(err.kind()), 8);
    }
    assert!(second.list("acme", None, 10).await.unwrap().is_empty(), "nothing adopted");
    proxy.calm();
    // With the digests reported, the same puts are de-duplicated.
    for bytes in [&small, &large] {
        let info = second.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
        assert_eq!(info.deduplicated, Some(true));
    }
    assert_eq!(objects_on_server(&bucket).len(), 2);
}

/// An object at the content's key that Coffer did not write (no checksum,
/// no Coffer digest), of the same size: a conflict, left untouched.
#[tokio::test]
async fn an_unconfirmable_object_of_the_right_size_is_never_taken_for_the_content() {
    let bucket = unique_bucket("impostor");
    let t = crate::support::s3_coffer(&bucket).await;
    let bytes = data(5000, 43);
    let sha = Digest::of(&bytes);
    let key = format!("acme/{sha}");
    // Make the bucket, then plant other bytes of the same size beside Coffer.
    t.coffer.put("setup", Content::from_bytes("x", None).unwrap()).await.unwrap();
    let path = crate::s3_server::server().root.join(&bucket).join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
    let err = t.coffer.put("acme", Content::from_bytes(bytes, None).unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("cannot be confirmed")), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 5000], "left untouched");
    assert!(t.coffer.list("acme", None, 10).await.unwrap().is_empty());
}

/// A range is asked of S3 as a `Range` GET, and only an answer for exactly
/// those bytes of exactly the recorded object is taken: a server that
/// ignores `Range` (200 and the whole object) or reports another object
/// size is refused, never cut to fit.
#[tokio::test]
async fn a_range_is_asked_as_a_range_and_only_its_exact_answer_is_taken() {
    let (proxy, _bucket, _dir, coffer) = faulty("rangeget").await;
    let bytes = data(2_000_000, 31);
    let info = coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let sha = info.sha256.to_string();
    let range = |start: u64, end: u64| move |_: &coffer::ObjectInfo| Ok(Some((start, end)));

    let (_, _, stream) = coffer.get_range("acme", &sha, range(1_500_000, 1_500_099)).await.unwrap();
    assert!(drain(stream).await.unwrap() == bytes[1_500_000..1_500_100]);
    assert_eq!(proxy.ranges(), vec![Some("bytes=1500000-1500099".to_string())], "one Range GET, nothing else read");

    proxy.once(Op::GetObject, 0, Fault::IgnoreRange);
    let err = coffer.get_range("acme", &sha, range(10, 19)).await.err().expect("a whole object for a range");
    assert!(err.to_string().contains("Content-Range"), "{err}");
    assert_eq!(proxy.ranges().last().unwrap().as_deref(), Some("bytes=10-19"));

    proxy.once(Op::GetObject, 0, Fault::RangeOf(2_000_001));
    let err = coffer.get_range("acme", &sha, range(10, 19)).await.err().expect("another object's range");
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(err.to_string().contains("2000001") && err.to_string().contains("2000000"), "{err}");

    // A range of the whole object is read whole and verified.
    let (_, _, stream) = coffer.get_range("acme", &sha, range(0, 1_999_999)).await.unwrap();
    assert!(drain(stream).await.unwrap() == bytes);
    assert_eq!(proxy.ranges().last().unwrap(), &None);
}
