//! The library on the embedded SQLite default: round trips, de-duplication,
//! tenant boundaries, integrity, policy rules.

use coffer::{Content, Digest, Error};

use crate::support::{data, sqlite_coffer};

#[tokio::test]
async fn round_trips_are_byte_identical_for_empty_tiny_and_multi_mib_files() {
    let t = sqlite_coffer(&[]).await;
    for len in [0usize, 1, 3 * 1024 * 1024 + 7] {
        let bytes = data(len, 1);
        let info = t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(info.sha256, Digest::of(&bytes));
        assert_eq!(info.key, info.sha256.to_string(), "the key is the lowercase hex SHA-256");
        let back = t.coffer.get_bytes("acme", &info.sha256).await.unwrap();
        assert_eq!(back.len(), len);
        assert!(back == bytes, "bytes differ for length {len}");
    }
}

#[tokio::test]
async fn a_file_on_disk_round_trips_through_get_to_path() {
    let t = sqlite_coffer(&[]).await;
    let src = t.dir.path().join("in.bin");
    let bytes = data(700_000, 2);
    std::fs::write(&src, &bytes).unwrap();
    let info = t.coffer.put_path("acme", &src, Some("application/pdf")).await.unwrap();
    assert_eq!(info.content_type, "application/pdf");
    let out = t.dir.path().join("out.bin");
    t.coffer.get_to_path("acme", &info.sha256.to_string(), &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);
}

#[tokio::test]
async fn storing_the_same_file_twice_stores_it_once() {
    let t = sqlite_coffer(&[]).await;
    let bytes = data(600_000, 3);
    let first = t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let second = t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    assert_eq!(first.deduplicated, Some(false));
    assert_eq!(second.deduplicated, Some(true));
    assert_eq!(first.sha256, second.sha256);
    assert_eq!(first.created_at, second.created_at, "the first record stands");
    let db = t.raw_db();
    let blobs: i64 = db.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap();
    let chunk_bytes: i64 = db.query_row("SELECT sum(length(data)) FROM blob_data", [], |r| r.get(0)).unwrap();
    let records: i64 = db.query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!((blobs, chunk_bytes, records), (1, 600_000, 1));
}

#[tokio::test]
async fn concurrent_puts_of_the_same_content_all_get_the_same_key() {
    let t = sqlite_coffer(&[]).await;
    let bytes = data(300_000, 4);
    let puts = (0..8).map(|_| {
        let coffer = t.coffer.clone();
        let content = Content::from_bytes(bytes.clone(), None).unwrap();
        tokio::spawn(async move { coffer.put("acme", content).await })
    });
    let mut keys = Vec::new();
    for p in puts {
        keys.push(p.await.unwrap().unwrap().key);
    }
    keys.dedup();
    assert_eq!(keys.len(), 1);
    let blobs: i64 = t.raw_db().query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap();
    assert_eq!(blobs, 1);
}

#[tokio::test]
async fn a_missing_object_is_not_found_never_empty() {
    let t = sqlite_coffer(&[]).await;
    let absent = Digest::of(b"never stored").to_string();
    assert!(matches!(t.coffer.get("acme", &absent).await, Err(Error::NotFound(_))));
    assert!(matches!(t.coffer.stat("acme", &absent).await, Err(Error::NotFound(_))));
    assert!(matches!(t.coffer.delete("acme", &absent).await, Err(Error::NotFound(_))));
    assert!(matches!(t.coffer.get("acme", "not-a-digest").await, Err(Error::InvalidName(_))));
    assert!(matches!(t.coffer.get("acme", &absent.to_uppercase()).await, Err(Error::InvalidName(_))));
}

#[tokio::test]
async fn one_organisation_cannot_see_anothers_objects() {
    let t = sqlite_coffer(&[]).await;
    let info = t.coffer.put("acme", Content::from_bytes("acme's secret", None).unwrap()).await.unwrap();
    let key = info.sha256.to_string();
    assert!(matches!(t.coffer.get("globex", &key).await, Err(Error::NotFound(_))));
    assert!(matches!(t.coffer.stat("globex", &key).await, Err(Error::NotFound(_))));
    assert!(matches!(t.coffer.delete("globex", &key).await, Err(Error::NotFound(_))));
    assert!(t.coffer.list("globex", None, 100).await.unwrap().is_empty());
    // Still there for its owner.
    assert_eq!(t.coffer.get_bytes("acme", &info.sha256).await.unwrap(), "acme's secret");
}

#[tokio::test]
async fn the_same_content_from_two_organisations_is_kept_apart() {
    let t = sqlite_coffer(&[]).await;
    let a = t.coffer.put("acme", Content::from_bytes("shared", None).unwrap()).await.unwrap();
    let g = t.coffer.put("globex", Content::from_bytes("shared", None).unwrap()).await.unwrap();
    assert_eq!(a.sha256, g.sha256);
    assert_ne!(a.container, g.container);
    t.coffer.delete("acme", &a.sha256.to_string()).await.unwrap();
    assert_eq!(t.coffer.get_bytes("globex", &g.sha256).await.unwrap(), "shared");
    assert!(matches!(t.coffer.get("acme", &a.sha256.to_string()).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn corrupted_stored_bytes_are_an_integrity_error_not_wrong_bytes() {
    let t = sqlite_coffer(&[]).await;
    let bytes = data(5000, 5);
    let info = t.coffer.put("acme", Content::from_bytes(bytes, None).unwrap()).await.unwrap();
    let db = t.raw_db();
    // Flip one byte of the stored blob.
    let mut stored: Vec<u8> = db.query_row("SELECT data FROM blob_data", [], |r| r.get(0)).unwrap();
    stored[1234] ^= 0xff;
    db.execute("UPDATE blob_data SET data = ?1", [stored]).unwrap();
    let err = t.coffer.get_bytes("acme", &info.sha256).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    // get_to_path leaves nothing behind at the destination.
    let out = t.dir.path().join("out.bin");
    let err = t.coffer.get_to_path("acme", &info.sha256.to_string(), &out).await.unwrap_err();
    assert!(matches!(err, Error::Integrity(_)), "{err}");
    assert!(!out.exists());
    // Truncation is caught too.
    db.execute("UPDATE blob_data SET data = substr(data, 1, 10)", []).unwrap();
    assert!(matches!(t.coffer.get_bytes("acme", &info.sha256).await, Err(Error::Integrity(_))));
    // And a blob that vanished from under its record.
    db.execute("DELETE FROM blobs", []).unwrap();
    assert!(matches!(t.coffer.get_bytes("acme", &info.sha256).await, Err(Error::Integrity(_))));
}

#[tokio::test]
async fn listing_pages_through_an_organisations_objects_in_digest_order() {
    let t = sqlite_coffer(&[]).await;
    let mut want = Vec::new();
    for i in 0..25u8 {
        want.push(t.coffer.put("acme", Content::from_bytes(vec![i; 10], None).unwrap()).await.unwrap().sha256);
    }
    t.coffer.put("globex", Content::from_bytes("other", None).unwrap()).await.unwrap();
    want.sort();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = t.coffer.list("acme", after.as_deref(), 10).await.unwrap();
        got.extend(page.iter().map(|i| i.sha256));
        match page.last() {
            Some(last) if page.len() == 10 => after = Some(last.sha256.to_string()),
            _ => break,
        }
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn delete_removes_the_record_and_the_bytes() {
    let t = sqlite_coffer(&[]).await;
    let info = t.coffer.put("acme", Content::from_bytes("bye", None).unwrap()).await.unwrap();
    t.coffer.delete("acme", &info.sha256.to_string()).await.unwrap();
    let db = t.raw_db();
    let (blobs, chunks): (i64, i64) = db
        .query_row("SELECT (SELECT count(*) FROM blobs), (SELECT count(*) FROM blob_data)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((blobs, chunks), (0, 0));
    assert!(matches!(t.coffer.stat("acme", &info.sha256.to_string()).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn policy_rules_refuse_with_a_reason_and_store_nothing() {
    let t = sqlite_coffer(&[("max-size", "100"), ("allowed-content-types", "text/*"), ("allow-delete", "false")]).await;
    let too_big = t.coffer.put("acme", Content::from_bytes(vec![0u8; 101], Some("text/plain")).unwrap()).await;
    assert!(matches!(&too_big, Err(Error::Denied(m)) if m.contains("100")), "{too_big:?}");
    let wrong_type = t.coffer.put("acme", Content::from_bytes("x", Some("image/png")).unwrap()).await;
    assert!(matches!(&wrong_type, Err(Error::Denied(m)) if m.contains("image/png")), "{wrong_type:?}");
    let records: i64 = t.raw_db().query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    let blobs: i64 = t.raw_db().query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap();
    assert_eq!((records, blobs), (0, 0));
    let ok = t.coffer.put("acme", Content::from_bytes("x", Some("text/plain")).unwrap()).await.unwrap();
    let no_delete = t.coffer.delete("acme", &ok.sha256.to_string()).await;
    assert!(matches!(&no_delete, Err(Error::Denied(m)) if m.contains("allow-delete")), "{no_delete:?}");
    assert_eq!(t.coffer.get_bytes("acme", &ok.sha256).await.unwrap(), "x");
}

#[tokio::test]
async fn tenant_overrides_apply_to_their_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::sqlite_config(dir.path(), &[]);
    config.tenants.insert("small".into(), [("max-size".to_string(), "3".to_string())].into());
    let coffer = coffer::Coffer::open(config).await.unwrap();
    assert!(matches!(coffer.put("small", Content::from_bytes("four", None).unwrap()).await, Err(Error::Denied(_))));
    coffer.put("big", Content::from_bytes("four", None).unwrap()).await.unwrap();
}

#[tokio::test]
async fn invalid_organisation_names_are_refused_before_anything_is_stored() {
    let t = sqlite_coffer(&[]).await;
    for org in ["", "a/b", "..", &"x".repeat(200)] {
        let r = t.coffer.put(org, Content::from_bytes("x", None).unwrap()).await;
        assert!(matches!(r, Err(Error::InvalidName(_))), "{org:?}: {r:?}");
    }
    let records: i64 = t.raw_db().query_row("SELECT count(*) FROM objects", [], |r| r.get(0)).unwrap();
    assert_eq!(records, 0);
}

/// A database put reads its input outside any write transaction: while it
/// waits for more input (here: a FIFO the test feeds in two halves),
/// another writer gets the database at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_lock_is_held_while_the_input_is_read() {
    use std::io::Write;
    let t = sqlite_coffer(&[]).await;
    let fifo = t.dir.path().join("input.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let bytes = data(5 << 20, 8);
    let half = bytes.len() / 2;
    let (halfway_tx, halfway_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (hashed_tx, hashed_rx) = std::sync::mpsc::channel::<()>();
    let feeder = std::thread::spawn({
        let (fifo, bytes) = (fifo.clone(), bytes.clone());
        move || {
            // Once for hashing, then again for storing, stopping half-way.
            std::fs::write(&fifo, &bytes).unwrap();
            // (Reopening before the reader saw the end would splice both passes.)
            hashed_rx.recv().unwrap();
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            f.write_all(&bytes[..half]).unwrap();
            halfway_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            f.write_all(&bytes[half..]).unwrap();
        }
    });
    let content = Content::from_path(&fifo, None).await.unwrap();
    hashed_tx.send(()).unwrap();
    let put = tokio::spawn({
        let coffer = t.coffer.clone();
        async move { coffer.put("acme", content).await }
    });
    tokio::task::spawn_blocking(move || halfway_rx.recv().unwrap()).await.unwrap();
    // The put is now waiting for input. Another writer that will not wait
    // at all must get the write lock (allowing a moment for the put's
    // current row to commit).
    let other = t.raw_db();
    other.busy_timeout(std::time::Duration::ZERO).unwrap();
    let mut got_it = 0;
    for _ in 0..20 {
        if other.execute_batch("BEGIN IMMEDIATE; COMMIT;").is_ok() {
            got_it += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(got_it > 0, "the put held the write lock while it waited for its input");
    go_tx.send(()).unwrap();
    feeder.join().unwrap();
    let info = put.await.unwrap().unwrap();
    assert!(t.coffer.get_bytes("acme", &info.sha256).await.unwrap() == bytes);
}

/// A reader that stops reading holds no transaction: other puts go on and
/// SQLite checkpoints its WAL as they do, so the WAL stays the size of a
/// few transactions instead of growing with everything written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_holds_no_transaction_and_the_wal_stays_bounded() {
    use futures_util::StreamExt;
    let t = sqlite_coffer(&[]).await;
    let bytes = data(6 << 20, 30);
    let info = t.coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let (_, mut slow) = t.coffer.get("acme", &info.sha256.to_string()).await.unwrap();
    let mut read = slow.next().await.unwrap().unwrap().to_vec();
    assert!(read.len() < bytes.len(), "the reader has more to read");
    // 48 MiB of other puts while the reader waits.
    for i in 0..24u8 {
        t.coffer.put("acme", Content::from_bytes(data(2 << 20, 100 + i), None).unwrap()).await.unwrap();
    }
    let wal = std::fs::metadata(t.db_path().with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    assert!(wal < 24 << 20, "the WAL grew to {wal} bytes behind a paused reader");
    // The reader goes on and gets every byte, verified.
    while let Some(chunk) = slow.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == bytes);
}
