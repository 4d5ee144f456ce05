//! S3 against a real server that verifies SigV4 signatures.

use std::time::Duration;

use coffer::backend::{BlobStore, Disposition};
use coffer::{Coffer, Content, Digest, Error};

use crate::support::{data, drain, objects_on_server, s3_coffer, s3_config, unique_bucket};

#[tokio::test]
async fn single_bucket_round_trip_with_keys_under_the_organisation() {
    let bucket = unique_bucket("single");
    let t = s3_coffer(&bucket).await;
    let bytes = data(1_000_000, 11);
    let info = t.coffer.put("acme", Content::from_bytes(bytes.clone(), Some("text/csv")).unwrap()).await.unwrap();
    assert_eq!(info.backend, coffer::backend::BackendKind::S3);
    assert_eq!(info.bucket.as_deref(), Some(bucket.as_str()));
    assert_eq!(info.key, format!("acme/{}", info.sha256));
    assert!(t.coffer.get_bytes("acme", &info.sha256).await.unwrap() == bytes);
    assert_eq!(objects_on_server(&bucket), vec![info.key.clone()]);
}

#[tokio::test]
async fn bucket_per_org_creates_prefix_plus_org() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("{}-", unique_bucket("cyn"));
    let coffer = Coffer::open(s3_config(dir.path(), None, Some(&prefix))).await.unwrap();
    let a = coffer.put("org", Content::from_bytes("one", None).unwrap()).await.unwrap();
    let b = coffer.put("org2", Content::from_bytes("two", None).unwrap()).await.unwrap();
    assert_eq!(a.bucket, Some(format!("{prefix}org")));
    assert_eq!(b.bucket, Some(format!("{prefix}org2")));
    assert_eq!(objects_on_server(&format!("{prefix}org")), vec![a.sha256.to_string()]);
    assert_eq!(coffer.get_bytes("org2", &b.sha256).await.unwrap(), "two");
    // An organisation that makes no valid bucket is refused before any I/O.
    let err = coffer.put("Org_Upper", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidName(m) if m.contains("Org_Upper")), "{err}");
}

#[tokio::test]
async fn repeated_puts_leave_one_object_on_the_server() {
    let bucket = unique_bucket("dedup");
    let t = s3_coffer(&bucket).await;
    let bytes = data(200_000, 12);
    let mut infos = Vec::new();
    for _ in 0..3 {
        infos.push(t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap());
    }
    assert_eq!(infos.iter().map(|i| i.deduplicated).collect::<Vec<_>>(), [Some(false), Some(true), Some(true)]);
    assert_eq!(objects_on_server(&bucket).len(), 1);
    // A second Coffer with an empty catalog finds the object by HEAD and uploads nothing.
    let other = tempfile::tempdir().unwrap();
    let fresh = Coffer::open(s3_config(other.path(), Some(&bucket), None)).await.unwrap();
    let again = fresh.put("acme", Content::from_bytes(bytes, None).unwrap()).await.unwrap();
    assert_eq!(again.deduplicated, Some(true));
    assert_eq!(objects_on_server(&bucket).len(), 1);
}

#[tokio::test]
async fn keys_that_need_percent_encoding_are_signed_and_sent_once() {
    let bucket = unique_bucket("encoding");
    let t = s3_coffer(&bucket).await;
    for org in ["Acme Corp", "ünï+cødé=&?", "a%20b", "tilde~star*"] {
        let info = t.coffer.put(org, Content::from_bytes(org.as_bytes().to_vec(), None).unwrap()).await.unwrap();
        assert_eq!(info.key, format!("{org}/{}", info.sha256));
        assert_eq!(t.coffer.get_bytes(org, &info.sha256).await.unwrap(), org.as_bytes());
        assert_eq!(t.coffer.list(org, None, 10).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), Some(&unique_bucket("wrong-secret")), None);
    config.s3.secret_access_key = Some("not-the-secret".into());
    let coffer = Coffer::open(config).await.unwrap();
    let err = coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(coffer.list("acme", None, 10).await.unwrap().is_empty(), "no record for a failed upload");
}

/// Coffer on `bucket` with multipart above 6 MiB, in parts of `part_size`.
async fn multipart_coffer(dir: &std::path::Path, bucket: &str, part_size: u64) -> Coffer {
    let mut config = s3_config(dir, Some(bucket), None);
    config.s3.multipart_threshold = Some(6 << 20);
    config.s3.part_size = Some(part_size);
    Coffer::open(config).await.unwrap()
}

#[tokio::test]
async fn large_files_go_up_in_parts_and_come_back_whole() {
    let bucket = unique_bucket("multipart");
    let dir = tempfile::tempdir().unwrap();
    let coffer = multipart_coffer(dir.path(), &bucket, 5 << 20).await;
    let path = dir.path().join("big.bin");
    let bytes = data(13 * 1024 * 1024 + 5, 13);
    std::fs::write(&path, &bytes).unwrap();
    let info = coffer.put_path("acme", &path, None).await.unwrap();
    stored_once_and_read_back(&coffer, &bucket, &info, &bytes, dir.path()).await;
}

/// `info` is the one object in `bucket`, and reading it back to a file
/// gives `bytes`.
async fn stored_once_and_read_back(
    coffer: &Coffer,
    bucket: &str,
    info: &coffer::ObjectInfo,
    bytes: &[u8],
    dir: &std::path::Path,
) {
    assert_eq!(objects_on_server(bucket), vec![info.key.clone()]);
    let out = dir.join("back.bin");
    coffer.get_to_path("acme", &info.sha256.to_string(), &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);
}

#[tokio::test]
async fn a_file_changed_during_a_multipart_upload_is_aborted_and_not_recorded() {
    let bucket = unique_bucket("abort");
    let dir = tempfile::tempdir().unwrap();
    let coffer = multipart_coffer(dir.path(), &bucket, 5 << 20).await;
    let path = dir.path().join("big.bin");
    std::fs::write(&path, data(11 << 20, 14)).unwrap();
    let content = Content::from_path(&path, None).await.unwrap();
    std::fs::write(&path, data(11 << 20, 15)).unwrap();
    let err = coffer.put("acme", content).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(objects_on_server(&bucket).is_empty());
    assert!(coffer.list("acme", None, 10).await.unwrap().is_empty());
}

/// A large file's part digests are recorded while it is hashed (one
/// SHA-256 pass for the key and the parts), and the upload uses them.
#[tokio::test]
async fn a_large_file_goes_up_in_the_parts_recorded_while_hashing() {
    let bucket = unique_bucket("recorded");
    let dir = tempfile::tempdir().unwrap();
    let coffer = multipart_coffer(dir.path(), &bucket, coffer::content::PART_SIZE).await;
    let path = dir.path().join("big.bin");
    let bytes = data((coffer::content::PARTS_ABOVE + (3 << 20) + 7) as usize, 21);
    std::fs::write(&path, &bytes).unwrap();
    let content = Content::from_path(&path, None).await.unwrap();
    let parts = content.parts(coffer::content::PART_SIZE).expect("parts recorded while hashing").to_vec();
    assert_eq!(parts.len(), 9);
    for (i, part) in parts.iter().enumerate() {
        let at = i * coffer::content::PART_SIZE as usize;
        let slice = &bytes[at..(at + part.len as usize)];
        assert_eq!(part.sha256, coffer::Digest::of(slice), "part {i}");
        assert_eq!(part.crc32c, crc32c::crc32c(slice), "part {i}");
    }
    assert!(content.parts(5 << 20).is_none(), "recorded for one part size only");
    let info = coffer.put("acme", content).await.unwrap();
    stored_once_and_read_back(&coffer, &bucket, &info, &bytes, dir.path()).await;
}

/// A byte changed after hashing (same size, so only the bytes tell) is
/// caught while its part goes out, whether in the middle or in the last
/// part; a file cut short is caught too. Nothing is stored or recorded,
/// and no upload is left open.
#[tokio::test]
async fn a_file_changed_after_hashing_is_caught_while_its_recorded_parts_go_out() {
    let bucket = unique_bucket("recorded-changed");
    let dir = tempfile::tempdir().unwrap();
    let coffer = multipart_coffer(dir.path(), &bucket, coffer::content::PART_SIZE).await;
    let size = (coffer::content::PARTS_ABOVE + (1 << 20)) as usize;
    let path = dir.path().join("big.bin");
    for (what, at) in [("middle", size / 2), ("last part", size - 1), ("cut short", 0)] {
        let bytes = data(size, 22);
        std::fs::write(&path, &bytes).unwrap();
        let content = Content::from_path(&path, None).await.unwrap();
        assert!(content.parts(coffer::content::PART_SIZE).is_some());
        if what == "cut short" {
            std::fs::write(&path, &bytes[..size - 100]).unwrap();
        } else {
            let mut changed = bytes.clone();
            changed[at] ^= 0x20;
            std::fs::write(&path, &changed).unwrap();
        }
        let err = coffer.put("acme", content).await.unwrap_err();
        assert!(matches!(&err, Error::Integrity(m) if m.contains("changed")), "{what}: {err}");
        assert!(objects_on_server(&bucket).is_empty(), "{what}");
        assert!(coffer.list("acme", None, 10).await.unwrap().is_empty(), "{what}");
    }
    let s3 = coffer::backend::s3::S3Store::new(&s3_config(dir.path(), Some(&bucket), None).s3).unwrap();
    assert!(s3.incomplete_uploads(&bucket).await.unwrap().is_empty(), "every upload was aborted");

    // A file that grew after hashing: the recorded parts are sent as they
    // were hashed (every part is read to its recorded length), so the
    // object is the hashed bytes. (Digesting parts again, as with other
    // part sizes, would read the grown last part and refuse the put.)
    let bytes = data(size, 23);
    std::fs::write(&path, &bytes).unwrap();
    let content = Content::from_path(&path, None).await.unwrap();
    std::fs::write(&path, [bytes.as_slice(), b"appended later"].concat()).unwrap();
    let info = coffer.put("acme", content).await.unwrap();
    assert_eq!(info.sha256, Digest::of(&bytes));
    assert!(coffer.get_bytes("acme", &info.sha256).await.unwrap() == bytes);
}

#[tokio::test]
async fn a_presigned_link_downloads_without_credentials() {
    let bucket = unique_bucket("link");
    let t = s3_coffer(&bucket).await;
    let bytes = data(50_000, 16);
    let info = t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let sha = info.sha256.to_string();
    let url = t
        .coffer
        .link("acme", &sha, Some(Duration::from_secs(300)), Some("scan report.bin"), Disposition::Attachment)
        .await
        .unwrap();
    assert!(url.starts_with(&crate::s3_server::server().endpoint()), "built from the configured endpoint: {url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers().get("content-disposition").map(|v| v.to_str().unwrap().to_string());
    assert!(
        disposition.as_deref().is_some_and(|d| d.starts_with("attachment;") && d.contains("scan report.bin")),
        "{disposition:?}"
    );
    assert!(resp.bytes().await.unwrap() == bytes);
    // Tampering with the signed URL is refused by the server.
    let tampered = url.replace("X-Amz-Expires=300", "X-Amz-Expires=301");
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
    // Another organisation gets no link.
    assert!(matches!(
        t.coffer.link("globex", &sha, Some(Duration::from_secs(60)), None, Disposition::Attachment).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_tampered_object_is_detected_on_read() {
    let bucket = unique_bucket("tamper");
    let t = s3_coffer(&bucket).await;
    let info = t.coffer.put("acme", Content::from_bytes(data(10_000, 17), None).unwrap()).await.unwrap();
    let file = crate::s3_server::server().root.join(&bucket).join(&info.key);
    let mut stored = std::fs::read(&file).unwrap();
    stored[5000] ^= 1;
    std::fs::write(&file, stored).unwrap();
    let err = t.coffer.get_bytes("acme", &info.sha256).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
}

#[tokio::test]
async fn a_range_is_a_range_get_that_reads_only_its_bytes() {
    let bucket = unique_bucket("ranges");
    let t = s3_coffer(&bucket).await;
    let bytes = data(3_000_000, 18);
    let info = t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let sha = info.sha256.to_string();
    let range = |start: u64, end: u64| move |_: &coffer::ObjectInfo| Ok(Some((start, end)));
    let (_, got, stream) = t.coffer.get_range("acme", &sha, range(2_999_000, 2_999_999)).await.unwrap();
    assert_eq!(got, Some((2_999_000, 2_999_999)));
    assert!(drain(stream).await.unwrap() == bytes[2_999_000..]);
    // Damage after the range: a range before it never reads it, so it is
    // answered in full, while the whole object and a range over the
    // damage through to the end (the whole object, verified) fail.
    let file = crate::s3_server::server().root.join(&bucket).join(&info.key);
    let mut stored = std::fs::read(&file).unwrap();
    stored[2_500_000] ^= 1;
    std::fs::write(&file, stored).unwrap();
    let (_, _, stream) = t.coffer.get_range("acme", &sha, range(10, 1_000_009)).await.unwrap();
    assert!(drain(stream).await.unwrap() == bytes[10..1_000_010], "only the range's bytes were read");
    let (_, _, stream) = t.coffer.get_range("acme", &sha, range(0, 2_999_999)).await.unwrap();
    assert!(matches!(drain(stream).await, Err(Error::Integrity(_))), "the whole object is verified");
    let err = t.coffer.get_bytes("acme", &info.sha256).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    // A range the caller did not resolve against the size is refused.
    let err = t.coffer.get_range("acme", &sha, range(5, 3_000_000)).await.err().unwrap();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[tokio::test]
async fn a_missing_object_is_not_found_not_empty_and_not_a_500() {
    let bucket = unique_bucket("missing");
    let t = s3_coffer(&bucket).await;
    let info = t.coffer.put("acme", Content::from_bytes("soon gone", None).unwrap()).await.unwrap();
    std::fs::remove_file(crate::s3_server::server().root.join(&bucket).join(&info.key)).unwrap();
    let err = t.coffer.get_bytes("acme", &info.sha256).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "recorded but missing: {err}");
    let absent = Digest::of(b"never stored").to_string();
    assert!(matches!(t.coffer.get("acme", &absent).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn a_server_that_is_down_is_a_clear_retryable_error_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = s3_config(dir.path(), Some("down"), None);
    config.s3.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    let coffer = Coffer::open(config).await.unwrap();
    let err = coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), coffer::ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
    assert!(coffer.list("acme", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn creating_buckets_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("nocreate");
    let mut config = s3_config(dir.path(), Some(&bucket), None);
    config.s3.create_buckets = Some(false);
    let coffer = Coffer::open(config).await.unwrap();
    let err = coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("COFFER_CREATE_BUCKETS")), "{err}");
    assert!(!crate::s3_server::server().root.join(&bucket).exists());
}

#[tokio::test]
async fn links_are_refused_for_objects_in_the_database() {
    let t = crate::support::sqlite_coffer(&[]).await;
    let info = t.coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap();
    let err = t
        .coffer
        .link("acme", &info.sha256.to_string(), Some(Duration::from_secs(60)), None, Disposition::Attachment)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("direct links need S3"), "{err}");
}

#[tokio::test]
async fn objects_stay_readable_after_switching_from_the_database_to_s3_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("switch");
    let db_only = Coffer::open(crate::support::sqlite_config(dir.path(), &[])).await.unwrap();
    let old = db_only.put("acme", Content::from_bytes("from the database days", None).unwrap()).await.unwrap();
    drop(db_only);
    let s3 = Coffer::open(s3_config(dir.path(), Some(&bucket), None)).await.unwrap();
    assert_eq!(s3.get_bytes("acme", &old.sha256).await.unwrap(), "from the database days");
    let new = s3.put("acme", Content::from_bytes("from the S3 days", None).unwrap()).await.unwrap();
    assert_eq!(new.backend, coffer::backend::BackendKind::S3);
    // Content already in the database is not uploaded again.
    let again = s3.put("acme", Content::from_bytes("from the database days", None).unwrap()).await.unwrap();
    assert_eq!(again.backend, coffer::backend::BackendKind::Database);
    drop(s3);
    let back = Coffer::open(crate::support::sqlite_config(dir.path(), &[])).await.unwrap();
    assert_eq!(back.get_bytes("acme", &old.sha256).await.unwrap(), "from the database days");
    let err = back.get_bytes("acme", &new.sha256).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("S3 is not configured")), "{err}");
}

/// What boto3 (the client OpenKAT uses) reads back of an object Coffer
/// wrote: printed as JSON by a small script.
const BOTO3_READ: &str = r#"
import base64, hashlib, json, sys
import boto3
from botocore.config import Config
endpoint, key_id, secret, bucket, key = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
obj = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
body = obj["Body"].read()
print(json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "size": len(body),
                  "content_type": obj["ContentType"], "checksum": obj.get("ChecksumSHA256")}))
"#;

#[tokio::test]
async fn boto3_reads_what_coffer_wrote() {
    let bucket = unique_bucket("boto3");
    let t = s3_coffer(&bucket).await;
    let bytes = data(300_000, 18);
    let info = t.coffer.put("acme", Content::from_bytes(bytes.clone(), Some("text/csv")).unwrap()).await.unwrap();
    let server = crate::s3_server::server();
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", BOTO3_READ, &server.endpoint(), crate::s3_server::ACCESS_KEY, crate::s3_server::SECRET_KEY])
        .args([&bucket, &info.key]);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("python3 runs");
    assert!(
        out.status.success(),
        "boto3 failed (install it with `pip install boto3`; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sha256"], info.sha256.to_string());
    assert_eq!(v["size"], bytes.len());
    assert_eq!(v["content_type"], "text/csv");
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD.encode(info.sha256.as_bytes());
    assert_eq!(v["checksum"], want.as_str(), "the SHA-256 checksum travels with the object");
}

/// A server that answers every request with HTTP 500, counting them.
fn failing_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicU32::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        // Bounded: at most 50 connections, then the thread ends.
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            seen.fetch_add(1, Ordering::SeqCst);
            let body = "<Error><Code>InternalError</Code><Message>boom</Message></Error>";
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test]
async fn a_server_answering_500_is_retried_a_bounded_number_of_times_then_reported() {
    let (endpoint, count) = failing_server();
    let dir = tempfile::tempdir().unwrap();
    let mut config = s3_config(dir.path(), Some("flaky"), None);
    config.s3.endpoint_url = Some(endpoint);
    let coffer = Coffer::open(config).await.unwrap();
    let started = std::time::Instant::now();
    let err = coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), coffer::ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("gave up after 4 attempts"), "{err}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 4, "one operation, four attempts, then stop");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(coffer.list("acme", None, 10).await.unwrap().is_empty(), "nothing recorded");
}

#[tokio::test]
async fn a_public_link_is_the_plain_url_on_the_configured_endpoint() {
    let bucket = unique_bucket("public");
    let t = s3_coffer(&bucket).await;
    let info = t.coffer.put("acme org", Content::from_bytes("public", None).unwrap()).await.unwrap();
    let url = t.coffer.link("acme org", &info.sha256.to_string(), None, None, Disposition::Attachment).await.unwrap();
    let server = crate::s3_server::server();
    assert_eq!(url, format!("{}/{bucket}/acme%20org/{}", server.endpoint(), info.sha256));
    // The test bucket is not public: the server wants a signature.
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 403);
}

#[test]
fn coffer_link_prints_a_url_that_downloads_and_refuses_bad_expiry() {
    let server = crate::s3_server::server();
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("cli-link");
    let coffer = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
            .current_dir(dir.path())
            .env_clear()
            .env("AWS_ACCESS_KEY_ID", crate::s3_server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", crate::s3_server::SECRET_KEY)
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("S3_BUCKET", &bucket)
            .args(args)
            .output()
            .unwrap()
    };
    std::fs::write(dir.path().join("f.txt"), "linked").unwrap();
    let put: serde_json::Value = serde_json::from_slice(&coffer(&["put", "--org", "acme", "f.txt"]).stdout).unwrap();
    let sha = put["sha256"].as_str().unwrap().to_string();
    // Follow the link printed for `args`: (Content-Disposition, body).
    let download = |args: &[&str]| {
        let out = coffer(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let url =
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["url"].as_str().unwrap().to_string();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let resp = reqwest::get(&url).await.unwrap();
                let disposition = resp.headers().get("content-disposition").map(|v| v.to_str().unwrap().to_string());
                (disposition, resp.text().await.unwrap())
            })
        })
        .join()
        .unwrap()
    };
    let (disposition, body) = download(&["link", "--org", "acme", &sha, "--expires", "120", "--filename", "f.txt"]);
    assert_eq!(body, "linked");
    assert!(disposition.as_deref().is_some_and(|d| d.starts_with("attachment; filename=\"f.txt\"")), "{disposition:?}");
    // Saved as a file by default, even without a name; shown only on request.
    let (disposition, _) = download(&["link", "--org", "acme", &sha]);
    assert_eq!(disposition.as_deref(), Some("attachment"));
    let (disposition, _) = download(&["link", "--org", "acme", &sha, "--inline"]);
    assert_eq!(disposition.as_deref(), Some("inline"));
    let (disposition, _) = download(&["link", "--org", "acme", &sha, "--inline", "--filename", "f.txt"]);
    assert!(disposition.as_deref().is_some_and(|d| d.starts_with("inline; filename=\"f.txt\"")), "{disposition:?}");
    // A public URL can carry no disposition.
    assert_eq!(coffer(&["link", "--org", "acme", &sha, "--public", "--inline"]).status.code(), Some(2));
    let bad = coffer(&["link", "--org", "acme", &sha, "--expires", "999999999"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("7 days"));
}
