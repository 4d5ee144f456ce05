//! The `BlobStore` suite, on SQLite, PostgreSQL and S3 (single and
//! multipart uploads, buckets in other regions).

use coffer::backend::s3::S3Store;
use coffer::backend::{BackendKind, BlobStore};
use coffer::db::sqlite::SqliteDb;
use coffer::{Content, Digest, Error};
use futures_util::StreamExt;

use super::open_pg;
use crate::support::{data, unique_bucket};

async fn read_all(store: &dyn BlobStore, container: &str, name: &str) -> coffer::Result<Vec<u8>> {
    let mut stream = store.get(container, name).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// What every backend must do, whatever it is.
async fn conformance(store: &dyn BlobStore, container: &str) {
    store.ensure_container(container).await.unwrap();
    store.ensure_container(container).await.unwrap(); // idempotent

    // Absent things.
    assert_eq!(store.head(container, "p/a").await.unwrap(), None);
    assert!(matches!(store.get(container, "p/a").await, Err(Error::NotFound(_))));
    store.delete(container, "p/a").await.unwrap(); // deleting nothing is fine

    // Put, head, get; empty and multi-chunk blobs.
    let big = data(1_500_000, 21);
    let cases = [("p/a", Vec::new()), ("p/b", b"x".to_vec()), ("p/c", big.clone()), ("q/d", b"other prefix".to_vec())];
    for (name, bytes) in &cases {
        let content = Content::from_bytes(bytes.clone(), None).unwrap();
        assert!(store.put(container, name, &content).await.unwrap(), "{name}: written");
        let meta = store.head(container, name).await.unwrap().expect("there");
        assert_eq!((meta.size, meta.sha256), (bytes.len() as u64, Some(Digest::of(bytes))), "{name}: size and digest");
        // The database keeps the digest it checked; S3 checks a single
        // upload's SHA-256 (a multipart one carries Coffer's metadata only).
        assert!(store.kind() == BackendKind::S3 || meta.checked_by_store, "{name}: a digest the store checked");
        assert!(read_all(store, container, name).await.unwrap() == *bytes, "{name}");
    }

    // Ranges: only the range, across chunk rows (the database keeps 1 MiB
    // rows) and at either end.
    let len = big.len() as u64;
    for (start, end) in
        [(0, 0), (1, 10), (1_048_570, 1_048_600), (1_048_576, len - 1), (len - 1, len - 1), (0, len - 1)]
    {
        let mut stream = store.get_range(container, "p/c", start, end, len).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert!(got == big[start as usize..=end as usize], "range {start}..={end}: {} bytes", got.len());
    }
    assert!(matches!(store.get_range(container, "p/none", 0, 1, 2).await, Err(Error::NotFound(_))));

    // Never overwritten: a second put of the same blob writes nothing and
    // says so; other bytes under the same name are a conflict.
    let content = Content::from_bytes(big.clone(), None).unwrap();
    assert!(!store.put(container, "p/c", &content).await.unwrap());
    assert!(read_all(store, container, "p/c").await.unwrap() == big);
    let other = Content::from_bytes(b"other bytes".to_vec(), None).unwrap();
    assert!(matches!(store.put(container, "p/c", &other).await, Err(Error::Conflict(_))));
    assert!(read_all(store, container, "p/c").await.unwrap() == big);
    // "Already stored" is decided by digest, never by size: other bytes of
    // the same size under the name are a conflict too, and stay.
    let mut same_size = big.clone();
    same_size[0] ^= 1;
    let impostor = Content::from_bytes(same_size, None).unwrap();
    let err = store.put(container, "p/c", &impostor).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("same size")), "{err}");
    assert!(read_all(store, container, "p/c").await.unwrap() == big);

    // Listing: by prefix, in name order, after a name, limited.
    let names = |v: Vec<coffer::backend::BlobEntry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(store.list(container, "p/", None, 100).await.unwrap()), ["p/a", "p/b", "p/c"]);
    assert_eq!(names(store.list(container, "p/", Some("p/a"), 100).await.unwrap()), ["p/b", "p/c"]);
    assert_eq!(names(store.list(container, "", None, 2).await.unwrap()), ["p/a", "p/b"]);
    let listed = store.list(container, "p/", None, 100).await.unwrap();
    let sizes: Vec<u64> = listed.iter().map(|e| e.size).collect();
    assert_eq!(sizes, [0, 1, big.len() as u64]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for e in &listed {
        let modified = e.modified.unwrap_or_else(|| panic!("{}: no time", e.name));
        assert!(modified.abs_diff(now) < 600, "{}: written at {modified}, now {now}", e.name);
    }

    // Content that changed after it was hashed is refused and leaves nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"hashed bytes").unwrap();
    let changed = Content::from_path(&path, None).await.unwrap();
    std::fs::write(&path, b"other  bytes").unwrap();
    let err = store.put(container, "p/changed", &changed).await.unwrap_err();
    assert_eq!(err.kind(), coffer::ErrorKind::Integrity, "{err}");
    assert_eq!(store.head(container, "p/changed").await.unwrap(), None);

    // Nothing left half-uploaded by any of the above.
    assert!(store.incomplete_uploads(container).await.unwrap().is_empty());

    // Delete.
    store.delete(container, "p/b").await.unwrap();
    assert_eq!(store.head(container, "p/b").await.unwrap(), None);
    assert!(matches!(store.get(container, "p/b").await, Err(Error::NotFound(_))));
    assert_eq!(names(store.list(container, "p/", None, 100).await.unwrap()), ["p/a", "p/c"]);
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteDb::open(dir.path().join("c.db")).await.unwrap();
    conformance(&db, "acme").await;
}

#[tokio::test]
async fn s3_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::s3_config(dir.path(), Some("unused"), None);
    let store = S3Store::new(&config.s3).unwrap();
    conformance(&store, &unique_bucket("conformance")).await;
}

#[tokio::test]
async fn s3_conforms_with_multipart_for_everything_above_5_mib() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some("unused"), None);
    config.s3.multipart_threshold = Some(1_000_000);
    config.s3.part_size = Some(5 << 20);
    let store = S3Store::new(&config.s3).unwrap();
    conformance(&store, &unique_bucket("conformance-mp")).await;
}

#[tokio::test]
async fn buckets_outside_us_east_1_are_created_with_their_region() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some("unused"), None);
    config.s3.region = Some("eu-west-1".into());
    let store = S3Store::new(&config.s3).unwrap();
    let bucket = unique_bucket("eu");
    store.ensure_container(&bucket).await.unwrap();
    store.put(&bucket, "k", &Content::from_bytes("x", None).unwrap()).await.unwrap();
    assert_eq!(store.head(&bucket, "k").await.unwrap().map(|m| m.size), Some(1));
}

#[tokio::test]
async fn postgres_conforms() {
    let url = crate::pg_server::fresh_database("blobs").await;
    conformance(&*open_pg(&url).await, "acme").await;
}
