//! `coffer gc` on S3: it deletes only what is demonstrably Coffer's.

use std::time::Duration;

use coffer::backend::BlobStore;
use coffer::backend::s3::S3Store;
use coffer::gc::{GcOptions, NoProgress};
use coffer::{Content, Digest};

use crate::support::{data, objects_on_server, s3_coffer, s3_config, unique_bucket};

#[tokio::test]
async fn gc_deletes_unreferenced_coffer_objects_and_keeps_what_it_did_not_write() {
    let bucket = unique_bucket("gc");
    let t = s3_coffer(&bucket).await;
    let kept = t.coffer.put("acme", Content::from_bytes("recorded", None).unwrap()).await.unwrap();
    // Written by Coffer (digest metadata, named by its digest), never recorded.
    let store = S3Store::new(&s3_config(t.dir.path(), Some(&bucket), None).s3).unwrap();
    let orphan = data(3000, 51);
    let orphan_key = format!("acme/{}", Digest::of(&orphan));
    store.put(&bucket, &orphan_key, &Content::from_bytes(orphan, None).unwrap()).await.unwrap();
    // Put there by someone else: no Coffer digest, not named by one.
    let foreign = crate::s3_server::server().root.join(&bucket).join("reports/2026.csv");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(&foreign, b"someone else's").unwrap();

    let options = GcOptions { older_than: Duration::ZERO, dry_run: false };
    let report = t.coffer.gc(&options, &NoProgress).await.unwrap();
    assert_eq!((report.orphans_deleted, report.kept_unrecognised, report.error_count), (1, 1, 0), "{report:?}");
    assert_eq!(objects_on_server(&bucket), vec![kept.key.clone(), "reports/2026.csv".to_string()]);
    assert_eq!(t.coffer.get_bytes("acme", &kept.sha256).await.unwrap(), "recorded");
}
