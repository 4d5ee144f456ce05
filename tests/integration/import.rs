//! `coffer import` of stores laid out exactly as Request Tracker and
//! OpenKAT lay theirs out, built in the test with boto3 (the client those
//! deployments use): adopted in place (RT) or copied with a mapping file
//! (OpenKAT on S3, in both bucket layouts, and on files); every object
//! readable at once; the source never modified; a run again skipping what
//! is done.

use std::collections::BTreeMap;

use coffer::backend::BackendKind;
use coffer::catalog::{Claimed, Claims, Namespace};
use coffer::gc::NoProgress;
use coffer::import::{ImportOptions, ImportReport, ImportSource, MappingLine};
use coffer::{Coffer, Digest};

use crate::support::{data, objects_on_server, s3_config, unique_bucket};

/// Put objects into buckets with boto3, as RT's and OpenKAT's S3 clients
/// do: plain PutObject, no SHA-256 checksum, no Coffer metadata.
const BOTO3_PUT: &str = r#"
import json, sys
import boto3
from botocore.config import Config
endpoint, key_id, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
made = set()
for bucket, key, path, metadata in json.load(sys.stdin):
    if bucket not in made:
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        made.add(bucket)
    if metadata.get("multipart") == "unfinished":
        # An upload the other system has in progress.
        s3.create_multipart_upload(Bucket=bucket, Key=key)
        continue
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read(), ContentType="application/octet-stream", Metadata=metadata)
"#;

/// Write `objects` (bucket, key, bytes) with boto3.
fn boto3_put(dir: &std::path::Path, objects: &[(String, String, Vec<u8>)]) {
    let plain: Vec<_> = objects.iter().map(|(b, k, v)| (b.clone(), k.clone(), v.clone(), Vec::new())).collect();
    boto3_put_with(dir, &plain);
}

/// An object to write: bucket, key, bytes, and user metadata.
type Object<'a> = (String, String, Vec<u8>, Vec<(&'a str, String)>);

/// Write `objects` with boto3.
fn boto3_put_with(dir: &std::path::Path, objects: &[Object<'_>]) {
    let mut list = Vec::new();
    for (i, (bucket, key, bytes, metadata)) in objects.iter().enumerate() {
        let path = dir.join(format!("boto3-{bucket}-{i}"));
        std::fs::write(&path, bytes).unwrap();
        let metadata: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
        list.push(serde_json::json!([bucket, key, path, metadata]));
    }
    let server = crate::s3_server::server();
    let mut child = std::process::Command::new("python3")
        .args(["-c", BOTO3_PUT, &server.endpoint(), crate::s3_server::ACCESS_KEY, crate::s3_server::SECRET_KEY])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&list).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "boto3 (pip install boto3; .ci/run does): {}", String::from_utf8_lossy(&out.stderr));
}

/// What the server holds in `bucket`: every file and its bytes.
fn snapshot(bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let root = crate::s3_server::server().root.join(bucket);
    objects_on_server(bucket).into_iter().map(|k| (k.clone(), std::fs::read(root.join(&k)).unwrap())).collect()
}

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// A raw-file id as OpenKAT makes them.
fn uuid(i: u32) -> String {
    format!("{i:08x}-3c4d-4e5f-8a9b-0c1d2e3f4a5b")
}

async fn import(coffer: &Coffer, source: ImportSource, mapping: Option<&std::path::Path>) -> ImportReport {
    let options = ImportOptions { source, mapping: mapping.map(|p| p.to_path_buf()), deep: false, jobs: 3 };
    coffer.import(&options, &NoProgress).await.unwrap()
}

fn mapping_lines(path: &std::path::Path) -> Vec<MappingLine> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn a_request_tracker_bucket_is_adopted_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let rt = unique_bucket("rt-attachments");
    let files: Vec<Vec<u8>> = (0..5u8).map(|i| data(1000 + usize::from(i) * 3000, 80 + i)).collect();
    let mut objects: Vec<(String, String, Vec<u8>)> = files.iter().map(|b| (rt.clone(), sha(b), b.clone())).collect();
    // Not RT's: a key that is not a digest, and a digest key whose bytes
    // are something else.
    objects.push((rt.clone(), "README".into(), b"not an attachment".to_vec()));
    let impostor = sha(b"what the key promises");
    objects.push((rt.clone(), impostor.clone(), b"something else entirely".to_vec()));
    boto3_put(dir.path(), &objects);
    // And one that claims, in metadata any writer can set, to be the
    // content its key names: the bytes are read, not the claim believed.
    let forged = sha(b"the forged promise");
    let lie = vec![("coffer-sha256", forged.clone())];
    boto3_put_with(dir.path(), &[(rt.clone(), forged.clone(), b"forged bytes".to_vec(), lie)]);
    let before = snapshot(&rt);

    // Coffer stores new objects elsewhere (a bucket of its own).
    let own = unique_bucket("coffer");
    let coffer = Coffer::open(s3_config(dir.path(), Some(&own), None)).await.unwrap();
    let source = ImportSource::RequestTracker { bucket: rt.clone(), prefix: String::new(), org: "acme".into() };
    let report = import(&coffer, source.clone(), None).await;
    assert_eq!((report.objects, report.imported, report.skipped, report.failed), (8, 5, 1, 2), "{report:?}");
    assert_eq!(report.corrupt, 2, "bytes that are not what their key promises are a permanent finding");
    let outcome = report.outcome().unwrap_err();
    assert_eq!(outcome.kind(), coffer::ErrorKind::Integrity, "exit 5, not 6 (run again): {outcome}");
    assert!(report.errors.iter().any(|e| e.contains(&impostor)), "{report:?}");
    assert!(report.errors.iter().any(|e| e.contains(&forged)), "{report:?}");
    assert!(coffer.stat("acme", &forged).await.is_err(), "the forged object is not recorded");
    for bytes in &files {
        let info = coffer.stat("acme", &sha(bytes)).await.unwrap();
        assert_eq!((info.bucket.as_deref(), info.key.as_str()), (Some(rt.as_str()), sha(bytes).as_str()), "in place");
        assert_eq!(&coffer.get_bytes("acme", &info.sha256).await.unwrap()[..], &bytes[..]);
    }
    assert!(coffer.stat("acme", &impostor).await.is_err(), "the impostor is not recorded");
    assert_eq!(snapshot(&rt), before, "nothing in the source changed");

    // Another organisation cannot adopt the same bucket, nor part of it.
    for prefix in ["", "00"] {
        let other = ImportSource::RequestTracker { bucket: rt.clone(), prefix: prefix.into(), org: "beta".into() };
        let options = ImportOptions { source: other, mapping: None, deep: false, jobs: 1 };
        let err = coffer.import(&options, &NoProgress).await.unwrap_err();
        assert_eq!(err.kind(), coffer::ErrorKind::Denied, "{err}");
    }
    // Coffer's own bucket is never adopted (its bytes must stay deletable),
    // and a bucket that does not exist is not recorded as adopted.
    coffer.put("acme", coffer::Content::from_bytes("own", None).unwrap()).await.unwrap();
    for bucket in [own.clone(), unique_bucket("no-such")] {
        let source = ImportSource::RequestTracker { bucket: bucket.clone(), prefix: String::new(), org: "acme".into() };
        let options = ImportOptions { source, mapping: None, deep: false, jobs: 1 };
        assert!(coffer.import(&options, &NoProgress).await.is_err(), "{bucket}");
    }
    let adopted = rusqlite::Connection::open(dir.path().join("coffer.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM adopted", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(adopted, 1, "only the RT bucket is adopted");

    // No put can ever write there: a claim overlapping the adoption is
    // refused, for the adopting organisation too.
    let catalog = coffer::db::sqlite::SqliteDb::open(dir.path().join("coffer.db")).await.unwrap();
    for (org, prefix) in [("acme", ""), ("acme", "ab"), ("beta", "")] {
        let ns = Namespace { backend: BackendKind::S3, container: rt.clone(), prefix: prefix.into() };
        assert!(matches!(catalog.claim(org, &ns).await.unwrap(), Claimed::Taken(_)), "{org} {prefix:?}");
    }

    // Deleting a record, and gc, never delete RT's bytes, nor abort an
    // upload RT has in progress.
    let unfinished = vec![("multipart", "unfinished".to_string())];
    boto3_put_with(dir.path(), &[(rt.clone(), "in-progress".into(), Vec::new(), unfinished)]);
    let uploads =
        || crate::s3_server::open_uploads(&crate::s3_server::server().root).into_iter().filter(|u| u.0 == rt).count();
    assert_eq!(uploads(), 1);
    coffer.delete("acme", &sha(&files[0])).await.unwrap();
    let gc = coffer.gc(&coffer::gc::GcOptions { older_than: std::time::Duration::ZERO, dry_run: false }, &NoProgress);
    let gc = gc.await.unwrap();
    assert_eq!((gc.orphans_deleted, gc.uploads_aborted, gc.error_count), (0, 0, 0), "{gc:?}");
    assert_eq!(snapshot(&rt), before, "adopted bytes are never deleted");
    assert_eq!(uploads(), 1, "RT's upload in progress is left alone");

    // Again: what is recorded is skipped; the deleted one comes back;
    // --deep reads every object.
    let options = ImportOptions { source, mapping: None, deep: true, jobs: 2 };
    let again = coffer.import(&options, &NoProgress).await.unwrap();
    assert_eq!((again.imported, again.already, again.failed), (1, 4, 2), "{again:?}");
    assert_eq!(snapshot(&rt), before);

    // RT (not Coffer) replaces an adopted object with other bytes of the
    // same size, tagged with the digest as Coffer's metadata: verify does
    // not take the tag for a check (unconfirmed), and --deep finds it.
    let replaced = &files[1];
    let mut other = replaced.clone();
    other[0] ^= 0xff;
    let tag = vec![("coffer-sha256", sha(replaced))];
    boto3_put_with(dir.path(), &[(rt.clone(), sha(replaced), other, tag)]);
    let only = coffer::verify::VerifyOptions { org: Some("acme".into()), ..Default::default() };
    let shallow = coffer.verify(&only, &NoProgress, &|_| {}).await.unwrap();
    // Five adopted objects, and the one Coffer stored itself (confirmed).
    assert_eq!((shallow.checked, shallow.ok, shallow.unconfirmed, shallow.corrupt), (6, 1, 5, 0), "{shallow:?}");
    let deep = coffer::verify::VerifyOptions { deep: true, ..only };
    let deep = coffer.verify(&deep, &NoProgress, &|_| {}).await.unwrap();
    assert_eq!((deep.ok, deep.corrupt), (5, 1), "{deep:?}");
}

#[tokio::test]
async fn an_openkat_store_with_a_bucket_per_organisation_is_copied_with_a_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("{}-", unique_bucket("okat"));
    let shared = data(4000, 90);
    let mut objects = Vec::new();
    for (i, org) in ["acme", "acme", "acme", "beta", "beta"].into_iter().enumerate() {
        let bytes = if i == 2 || i == 4 { shared.clone() } else { data(2000 + i * 1000, 91 + i as u8) };
        objects.push((format!("{prefix}{org}"), uuid(i as u32), bytes));
    }
    // A large raw file, spooled through a file on its way.
    objects.push((format!("{prefix}beta"), uuid(9), data((5 << 20) + 1, 99)));
    boto3_put(dir.path(), &objects);
    let before: Vec<_> = ["acme", "beta"].iter().map(|o| snapshot(&format!("{prefix}{o}"))).collect();

    let target = format!("{}-", unique_bucket("cof"));
    let coffer = Coffer::open(s3_config(dir.path(), None, Some(&target))).await.unwrap();
    let mapping = dir.path().join("mapping.jsonl");
    let source = ImportSource::OpenKatBuckets { prefix: prefix.clone(), orgs: vec!["acme".into(), "beta".into()] };
    let report = import(&coffer, source.clone(), Some(&mapping)).await;
    assert_eq!((report.objects, report.failed), (6, 0), "{report:?}");
    let lines = mapping_lines(&mapping);
    assert_eq!(lines.len(), 6);
    for (bucket, id, bytes) in &objects {
        let org = bucket.strip_prefix(&prefix).unwrap();
        let line = lines.iter().find(|l| l.org == org && &l.raw_id == id).expect("a mapping line for each object");
        assert_eq!((line.sha256.as_str(), line.size), (sha(bytes).as_str(), bytes.len() as u64));
        let info = coffer.stat(org, &line.sha256).await.unwrap();
        assert_eq!(info.bucket, Some(format!("{target}{org}")), "in Coffer's layout");
        assert_eq!(&coffer.get_bytes(org, &info.sha256).await.unwrap()[..], &bytes[..]);
    }
    let after: Vec<_> = ["acme", "beta"].iter().map(|o| snapshot(&format!("{prefix}{o}"))).collect();
    assert_eq!(after, before, "nothing in the source changed");

    // A run again skips everything and adds no line.
    let again = import(&coffer, source, Some(&mapping)).await;
    assert_eq!((again.imported, again.already, again.failed), (0, 6, 0), "{again:?}");
    assert_eq!(mapping_lines(&mapping).len(), 6);
}

#[tokio::test]
async fn an_openkat_store_in_one_bucket_and_on_files_is_copied_by_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("okat-one");
    let objects: Vec<(String, String, Vec<u8>)> = (0..4u32)
        .map(|i| {
            (bucket.clone(), format!("{}/{}", ["acme", "beta"][i as usize % 2], uuid(i)), data(3000, 100 + i as u8))
        })
        .chain([(bucket.clone(), "stray-at-the-root".to_string(), b"x".to_vec())])
        .collect();
    boto3_put(dir.path(), &objects);
    let before = snapshot(&bucket);
    // OpenKAT's file layout: ORG/ID[:3]/ID; and a directory of anything.
    let files = dir.path().join("bytes-data");
    for i in 10..13u32 {
        let id = uuid(i);
        let shard = files.join("gamma").join(&id[..3]);
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(&id), data(1500, i as u8)).unwrap();
    }
    std::fs::write(files.join("gamma").join("notes.txt"), b"not a raw file").unwrap();
    // Neither a link to a file outside (a secret) nor a FIFO is imported.
    let secret = dir.path().join("secret.key");
    std::fs::write(&secret, b"do not import me").unwrap();
    let link_id = uuid(20);
    std::fs::create_dir_all(files.join("gamma").join(&link_id[..3])).unwrap();
    std::os::unix::fs::symlink(&secret, files.join("gamma").join(&link_id[..3]).join(&link_id)).unwrap();
    let fifo_id = uuid(21);
    std::fs::create_dir_all(files.join("gamma").join(&fifo_id[..3])).unwrap();
    let made =
        std::process::Command::new("mkfifo").arg(files.join("gamma").join(&fifo_id[..3]).join(&fifo_id)).status();
    assert!(made.unwrap().success(), "mkfifo");
    let any = dir.path().join("any");
    std::fs::create_dir_all(any.join("a/b")).unwrap();
    std::fs::write(any.join("a/b/report.pdf"), data(2500, 20)).unwrap();
    std::fs::write(any.join("top.txt"), b"top").unwrap();

    let target = unique_bucket("cof-one");
    let env = [("S3_BUCKET", target.as_str())];
    let endpoint = crate::s3_server::server().endpoint();
    let run = |args: &[&str]| crate::migrate::cli(dir.path(), Some((&endpoint, &env)), args).output().unwrap();
    let summary = |out: std::process::Output| crate::migrate::ok(out);
    let map = dir.path().join("map.jsonl");
    let map = map.to_str().unwrap();

    let s3 = summary(run(&["import", "openkat-s3", "--bucket", &bucket, "--mapping", map]));
    assert_eq!((s3["imported"].as_u64(), s3["skipped"].as_u64()), (Some(4), Some(1)), "{s3}");
    let inside = files.join("map.jsonl");
    let refused = run(&["import", "dir", files.to_str().unwrap(), "--mapping", inside.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "a mapping file inside the source is refused");
    assert!(!inside.exists());
    let tree = summary(run(&["import", "dir", files.to_str().unwrap(), "--mapping", map]));
    assert_eq!((tree["imported"].as_u64(), tree["skipped"].as_u64()), (Some(3), Some(3)), "{tree}");
    let secret_sha = sha(b"do not import me");
    assert!(!run(&["stat", "--org", "gamma", &secret_sha]).status.success(), "the link's target is not imported");
    let anything = summary(run(&["import", "dir", any.to_str().unwrap(), "--org", "delta", "--mapping", map]));
    assert_eq!(anything["imported"], 2, "{anything}");
    assert_eq!(snapshot(&bucket), before, "nothing in the source changed");

    // Bad input: a directory that is not there, per-org buckets without
    // organisations; exit 2, nothing written.
    let missing = run(&["import", "dir", "/nonexistent/bytes", "--mapping", map]);
    assert_eq!(missing.status.code(), Some(2), "{}", String::from_utf8_lossy(&missing.stderr));
    let no_orgs = run(&["import", "openkat-s3", "--bucket-prefix", "okat-", "--mapping", map]);
    assert_eq!(no_orgs.status.code(), Some(2), "{}", String::from_utf8_lossy(&no_orgs.stderr));

    let lines = mapping_lines(std::path::Path::new(map));
    assert_eq!(lines.len(), 9);
    assert!(lines.iter().any(|l| l.org == "delta" && l.raw_id == "a/b/report.pdf"));
    assert!(lines.iter().any(|l| l.org == "gamma" && l.raw_id == uuid(11)));
    for line in &lines {
        let out = run(&["get", "--org", &line.org, &line.sha256, "-o", "back.bin"]);
        assert!(out.status.success(), "{line:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(crate::support::sha256_file(&dir.path().join("back.bin")), line.sha256);
    }
    // Again: all skipped.
    let again = summary(run(&["import", "dir", files.to_str().unwrap(), "--mapping", map]));
    assert_eq!((again["imported"].as_u64(), again["already"].as_u64()), (Some(0), Some(3)), "{again}");
    assert_eq!(mapping_lines(std::path::Path::new(map)).len(), 9);
}
