//! The `coffer` process killed (SIGKILL) in the middle of a single put, a
//! multipart put and a delete, at each step where a crash leaves something
//! behind; then `coffer gc`: no record without its bytes, no incomplete
//! multipart upload, no unreferenced bytes, and the content can be stored
//! again. Also a clean cancellation: SIGTERM, and a dropped future, abort
//! the upload and release the reservation without any gc.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::{Coffer, Content, Digest};

use crate::fault_proxy::{FaultProxy, HoldAt, Op};
use crate::support::{data, objects_on_server, s3_config, sha256_file, unique_bucket};

/// One crash scenario: a bucket, a catalog, a proxy, and a file.
struct Scene {
    proxy: FaultProxy,
    bucket: String,
    /// With a bucket per organisation: the prefix (the bucket is
    /// prefix + "acme"), which the catalog learns only from the put.
    prefix: Option<String>,
    dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Scene {
    fn new(stem: &str, len: usize) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.bin");
        std::fs::write(&file, data(len, len as u8)).unwrap();
        Scene { proxy: FaultProxy::start(), bucket: unique_bucket(stem), prefix: None, dir, file }
    }

    /// The same with one bucket per organisation.
    fn per_org(stem: &str, len: usize) -> Scene {
        let mut scene = Scene::new(stem, len);
        let prefix = format!("{}-", unique_bucket(stem));
        scene.bucket = format!("{prefix}acme");
        scene.prefix = Some(prefix);
        scene
    }

    /// `coffer` on S3 through the proxy, multipart above 6 MiB in 5 MiB parts.
    fn coffer(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY)
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .envs(match &self.prefix {
                Some(p) => vec![("BUCKET_PER_ORG", "true".to_string()), ("S3_BUCKET_PREFIX", p.clone())],
                None => vec![("S3_BUCKET", self.bucket.clone())],
            })
            .env("COFFER_MULTIPART_THRESHOLD", (6u64 << 20).to_string())
            .env("COFFER_MULTIPART_PART_SIZE", (5u64 << 20).to_string())
            .env("COFFER_DELETE_TIMEOUT", "1")
            .env("COFFER_CACHE_DIR", self.dir.path().join("cache"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.coffer(args).output().unwrap()
    }

    fn sha(&self) -> String {
        sha256_file(&self.file)
    }

    fn rows(&self, table: &str) -> i64 {
        let db = rusqlite::Connection::open(self.dir.path().join("coffer.db")).unwrap();
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    /// Start `args`, wait for the request `op` (after `skip` others) to be
    /// held at `at`, and kill the process there.
    async fn kill_at(&self, args: &[&str], op: Op, skip: usize, at: HoldAt) {
        let held = self.proxy.hold(op, skip, at);
        let mut child: Child = self.coffer(args).spawn().unwrap();
        assert!(held.reached(Duration::from_secs(60)).await, "{op:?} never arrived");
        child.kill().unwrap();
        child.wait().unwrap();
        held.release();
    }

    /// gc, then check what the crash left is gone and the content can be
    /// stored and read again.
    async fn assert_recovers(&self) {
        // Tombstones of a killed delete are taken over once their lease
        // (twice COFFER_DELETE_TIMEOUT, plus 3 s) has run out.
        if self.rows("tombstones") > 0 {
            tokio::time::sleep(Duration::from_millis(6200)).await;
        }
        let gc = self.run(&["gc", "--older-than", "0s"]);
        assert!(gc.status.success(), "gc: {}", String::from_utf8_lossy(&gc.stderr));
        let report: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
        assert_eq!(report["error_count"], 0, "{report}");
        assert_eq!((self.rows("pending"), self.rows("tombstones")), (0, 0), "{report}");
        let direct = direct_store();
        assert!(direct.incomplete_uploads(&self.bucket).await.unwrap().is_empty(), "{report}");
        // Bytes on the server are exactly those recorded, each readable.
        let ls = self.run(&["ls", "--org", "acme"]);
        let mut recorded: Vec<String> = String::from_utf8_lossy(&ls.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].as_str().unwrap().to_string())
            .collect();
        recorded.sort();
        assert_eq!(objects_on_server(&self.bucket), recorded, "{report}");
        for key in &recorded {
            let sha = key.rsplit('/').next().unwrap();
            assert!(self.run(&["get", "--org", "acme", sha, "-o", "check.bin"]).status.success());
        }
        // And the content goes in again, whole.
        let put = self.run(&["put", "--org", "acme", "in.bin"]);
        assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
        let got = self.run(&["get", "--org", "acme", &self.sha(), "-o", "back.bin"]);
        assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
        assert_eq!(sha256_file(&self.dir.path().join("back.bin")), self.sha());
    }
}

fn direct_store() -> S3Store {
    let dir = tempfile::tempdir().unwrap();
    S3Store::new(&s3_config(dir.path(), Some("unused"), None).s3).unwrap()
}

async fn killed_put(len: usize, op: Op, skip: usize, at: HoldAt) {
    let scene = Scene::new("killed-put", len);
    scene.kill_at(&["put", "--org", "acme", "in.bin"], op, skip, at).await;
    assert_eq!(scene.rows("objects"), 0, "a killed put recorded nothing");
    scene.assert_recovers().await;
}

async fn killed_delete(len: usize, at: HoldAt) {
    let scene = Scene::new("killed-rm", len);
    assert!(scene.run(&["put", "--org", "acme", "in.bin"]).status.success());
    scene.kill_at(&["rm", "--org", "acme", &scene.sha()], Op::DeleteObject, 0, at).await;
    assert_eq!(scene.rows("objects"), 0, "the record went before the bytes");
    scene.assert_recovers().await;
}

#[tokio::test]
async fn killed_before_a_single_upload_reaches_the_server() {
    killed_put(100_000, Op::PutObject, 0, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_after_the_server_stored_a_single_upload() {
    killed_put(100_000, Op::PutObject, 0, HoldAt::After).await;
}

#[tokio::test]
async fn killed_between_the_parts_of_a_multipart_upload() {
    killed_put((12 << 20) + 3, Op::UploadPart, 1, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_before_a_multipart_upload_is_completed() {
    killed_put((7 << 20) + 3, Op::Complete, 0, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_after_the_server_completed_a_multipart_upload() {
    killed_put((7 << 20) + 3, Op::Complete, 0, HoldAt::After).await;
}

#[tokio::test]
async fn killed_before_a_delete_reaches_the_server() {
    killed_delete(50_000, HoldAt::Before).await;
}

#[tokio::test]
async fn killed_after_the_server_deleted_the_bytes() {
    killed_delete(50_000, HoldAt::After).await;
}

/// With a bucket per organisation, the catalog knows the new bucket only
/// from the crashed put's reservation; gc still finds the upload it left.
#[tokio::test]
async fn killed_between_the_parts_of_the_first_upload_to_a_new_organisations_bucket() {
    let scene = Scene::per_org("killed-new", (12 << 20) + 3);
    scene.kill_at(&["put", "--org", "acme", "in.bin"], Op::UploadPart, 1, HoldAt::Before).await;
    assert_eq!(direct_store().incomplete_uploads(&scene.bucket).await.unwrap().len(), 1);
    // A gc that finds the reservation old enough to release but the upload
    // too young to abort: afterwards nothing but the catalog's memory of
    // containers names the bucket, and the next gc must still scan it.
    let db = rusqlite::Connection::open(scene.dir.path().join("coffer.db")).unwrap();
    db.execute("UPDATE pending SET touched_at = touched_at - 7200, created_at = created_at - 7200", []).unwrap();
    let first = scene.run(&["gc", "--older-than", "1h"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(scene.rows("pending"), 0);
    assert_eq!(direct_store().incomplete_uploads(&scene.bucket).await.unwrap().len(), 1, "too young to abort");
    scene.assert_recovers().await;
}

/// SIGTERM during a multipart upload: the command stops with 143, having
/// aborted the upload and released its reservation itself.
#[tokio::test]
async fn sigterm_during_a_multipart_upload_aborts_it_and_releases_the_reservation() {
    sigterm_during((12 << 20) + 3, Op::UploadPart, 1).await;
}

/// SIGTERM while a single upload is on its way: 143, reservation released,
/// nothing recorded, nothing left on the server.
#[tokio::test]
async fn sigterm_during_a_single_upload_releases_the_reservation() {
    sigterm_during(100_000, Op::PutObject, 0).await;
}

async fn sigterm_during(len: usize, op: Op, skip: usize) {
    let scene = Scene::new("sigterm", len);
    let held = scene.proxy.hold(op, skip, HoldAt::Before);
    let child = scene.coffer(&["put", "--org", "acme", "in.bin"]).spawn().unwrap();
    assert!(held.reached(Duration::from_secs(60)).await);
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    held.release();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM") && stderr.contains("cleaned up"), "{stderr}");
    assert!(direct_store().incomplete_uploads(&scene.bucket).await.unwrap().is_empty(), "the upload was aborted");
    assert_eq!((scene.rows("pending"), scene.rows("objects")), (0, 0));
    assert!(objects_on_server(&scene.bucket).is_empty());
}

/// The library: a put whose future is dropped mid-upload (a caller's
/// timeout) aborts its upload and releases its reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_put_mid_upload_aborts_it_and_releases_the_reservation() {
    let scene = Scene::new("dropped", 0);
    let mut config = s3_config(scene.dir.path(), Some(&scene.bucket), None);
    config.s3.endpoint_url = Some(scene.proxy.endpoint());
    config.s3.multipart_threshold = Some(6 << 20);
    config.s3.part_size = Some(5 << 20);
    let coffer = Coffer::open(config).await.unwrap();
    let held = scene.proxy.hold(Op::UploadPart, 1, HoldAt::Before);
    let bytes = Arc::new(data((12 << 20) + 3, 77));
    let put = tokio::spawn({
        let (c, b) = (coffer.clone(), bytes.clone());
        async move { c.put("acme", Content::from_bytes(b.to_vec(), None).unwrap()).await }
    });
    assert!(held.reached(Duration::from_secs(60)).await);
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    held.release();
    assert!(coffer.quiesce(Duration::from_secs(30)).await, "clean-up finished");
    assert!(direct_store().incomplete_uploads(&scene.bucket).await.unwrap().is_empty(), "the upload was aborted");
    assert_eq!(scene.rows("pending"), 0, "the reservation was released");
    assert!(coffer.stat("acme", &Digest::of(&bytes).to_string()).await.is_err());
}

/// SQLite: a database put killed while its blob is being staged leaves
/// only staged rows, which gc aborts.
#[tokio::test]
async fn killed_while_staging_a_database_blob() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..24u8 {
            f.write_all(&data(4 << 20, i)).unwrap();
        }
    }
    let coffer = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.current_dir(dir.path()).env_clear().env("COFFER_CACHE_DIR", dir.path().join("cache")).args(args);
        cmd
    };
    // Create the database first, so the watcher can read it.
    assert!(coffer(&["ls", "--org", "acme"]).output().unwrap().status.success());
    let db = rusqlite::Connection::open(dir.path().join("coffer.db")).unwrap();
    let staged_rows = || -> i64 {
        db.query_row("SELECT count(*) FROM blob_data WHERE blob_id IN (SELECT blob_id FROM blob_staging)", [], |r| {
            r.get(0)
        })
        .unwrap_or(0)
    };
    let mut child = coffer(&["put", "--org", "acme", "big.bin"]).stdout(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while staged_rows() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the put finished before it could be killed mid-way");
        assert!(std::time::Instant::now() < deadline, "staging never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let count = |t: &str| -> i64 { db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap() };
    assert_eq!((count("objects"), count("blobs")), (0, 0), "nothing published");
    assert!(count("blob_staging") == 1 && count("pending") == 1);
    let gc = coffer(&["gc", "--older-than", "0s"]).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert_eq!((count("blob_staging"), count("blob_data"), count("pending")), (0, 0, 0));
    let put = coffer(&["put", "--org", "acme", "big.bin"]).output().unwrap();
    assert!(put.status.success());
    let got = coffer(&["get", "--org", "acme", &sha256_file(&file), "-o", "back.bin"]).output().unwrap();
    assert!(got.status.success());
    assert_eq!(sha256_file(&dir.path().join("back.bin")), sha256_file(&file));
}

/// A delete killed while its bytes were being deleted leaves a tombstone;
/// once its lease runs out, the next put of the content takes it over,
/// finishes the deletion, and stores the content again (no gc needed).
#[tokio::test]
async fn a_put_takes_over_a_deletion_whose_process_died() {
    let scene = Scene::new("takeover", 60_000);
    assert!(scene.run(&["put", "--org", "acme", "in.bin"]).status.success());
    scene.kill_at(&["rm", "--org", "acme", &scene.sha()], Op::DeleteObject, 0, HoldAt::Before).await;
    assert_eq!(scene.rows("tombstones"), 1);
    tokio::time::sleep(Duration::from_millis(6200)).await; // the lease (2 × 1 s + 3 s) runs out
    let put = scene.run(&["put", "--org", "acme", "in.bin"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let put: serde_json::Value = serde_json::from_slice(&put.stdout).unwrap();
    assert_eq!(put["deduplicated"], false, "the old bytes were deleted, these written anew");
    assert_eq!((scene.rows("tombstones"), scene.rows("pending")), (0, 0));
    let got = scene.run(&["get", "--org", "acme", &scene.sha(), "-o", "back.bin"]);
    assert!(got.status.success());
    assert_eq!(sha256_file(&scene.dir.path().join("back.bin")), scene.sha());
}
