//! One conformance suite for the `BlobStore` trait, run against every
//! backend: the embedded SQLite database, PostgreSQL and S3 (on the real
//! test servers); and one for the `Catalog` trait, on SQLite and
//! PostgreSQL, alone and with two catalogs ("hosts") racing on one
//! database.

use std::sync::Arc;

use coffer::backend::postgres::PgDb;
use coffer::backend::s3::S3Store;
use coffer::backend::sqlite::SqliteDb;
use coffer::backend::{BackendKind, BlobStore, Location};
use coffer::catalog::named::{Copied, Named, NamedCommitted, Names, Version};
use coffer::catalog::namespace::{Claimed, Namespace};
use coffer::catalog::{Catalog, Committed, Lease, Pending, Record, Released, Relocated, Reserved, Token};
use coffer::config::DatabaseUrl;
use coffer::{Content, Digest, Error};
use futures_util::StreamExt;

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

/// A PostgreSQL database opened the way Coffer opens it (a pool of its own:
/// each call is another "host").
pub async fn open_pg(url: &str) -> std::sync::Arc<PgDb> {
    let Ok(DatabaseUrl::Postgres(url)) = DatabaseUrl::parse(url) else { panic!("not a PostgreSQL URL") };
    std::sync::Arc::new(PgDb::open(&url).await.unwrap())
}

fn location(container: &str, name: &str) -> Location {
    Location { backend: BackendKind::Database, container: container.into(), name: name.into() }
}

fn pending(org: &str, sha: Digest, at: &Location) -> Pending {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    Pending {
        token: Token::new(),
        org: org.into(),
        sha256: sha,
        size: 1,
        location: at.clone(),
        created_at: now,
        touched_at: now,
    }
}

fn record(org: &str, sha: Digest, at: &Location) -> Record {
    Record {
        org: org.into(),
        sha256: sha,
        size: 1,
        content_type: "x".into(),
        location: at.clone(),
        created_at: 1,
        parked: false,
    }
}

/// The catalog's rules, whatever the database (see host/src/catalog/mod.rs).
async fn catalog_conformance(cat: &dyn Catalog) {
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(cat.now().await.unwrap().abs_diff(host_now) < 60, "the catalog's clock is far off");
    let sha = Digest::of(b"catalog");
    let at = location("acme", &sha.to_string());
    let lease = Lease { token: Token::new(), secs: 60 };
    assert_eq!(cat.lookup("acme", &sha).await.unwrap(), None);

    // Reserve → commit; again with the same token → the existing record.
    let p = pending("acme", sha, &at);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    assert_eq!(
        cat.referenced(BackendKind::Database, "acme", &[at.name.clone(), "other".into()]).await.unwrap().len(),
        1
    );
    assert!(cat.containers(BackendKind::Database).await.unwrap().contains(&"acme".to_string()));
    assert!(cat.touch(&p.token, host_now).await.unwrap());
    let Committed::Inserted(r) = cat.commit(Some(&p.token), &record("acme", sha, &at)).await.unwrap() else {
        panic!("not inserted")
    };
    assert_eq!(r.location, at);
    assert!(matches!(cat.commit(Some(&p.token), &record("acme", sha, &at)).await.unwrap(), Committed::Existing(_)));
    assert!(matches!(cat.commit(None, &record("acme", sha, &at)).await.unwrap(), Committed::Existing(_)));
    assert_eq!(cat.list("acme", None, 10).await.unwrap(), vec![r.clone()]);
    assert!(cat.list("acme", Some(&sha), 10).await.unwrap().is_empty());
    assert!(cat.pending_untouched_since(u64::MAX).await.unwrap().is_empty(), "committed: nothing pending");

    // Another organisation's record: not this one's to use.
    assert_eq!(cat.reserve(&pending("evil", sha, &at)).await.unwrap(), Reserved::OwnedByOthers);

    // Remove → tombstone; while it lasts no reservation, no takeover; only
    // its holder clears it.
    let (gone, t) = cat.remove("acme", &sha, &lease).await.unwrap().unwrap();
    assert_eq!(gone, r);
    let t = t.expect("unreferenced: tombstoned");
    assert_eq!(t.lease_until - t.created_at, 60);
    assert!(matches!(cat.reserve(&pending("acme", sha, &at)).await.unwrap(), Reserved::Tombstoned(_)));
    assert_eq!(cat.take_over(&at, &t.token, &Lease { token: Token::new(), secs: 60 }).await.unwrap(), None);
    let other = Lease { token: Token::new(), secs: 60 };
    assert_eq!(cat.tombstone_if_unreferenced(&at, &other).await.unwrap(), None, "one tombstone per location");
    assert!(!cat.clear_tombstone(&at, &Token::new()).await.unwrap());
    assert!(cat.clear_tombstone(&at, &t.token).await.unwrap());
    assert!(cat.tombstones().await.unwrap().is_empty());
    assert_eq!(cat.remove("acme", &sha, &lease).await.unwrap(), None);

    // A lease that ran out is taken over.
    let expired = cat.tombstone_if_unreferenced(&at, &Lease { token: Token::new(), secs: 0 }).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let taken = cat.take_over(&at, &expired.token, &lease).await.unwrap().expect("lease ran out");
    assert_eq!(taken.token, lease.token);
    assert!(cat.clear_tombstone(&at, &lease.token).await.unwrap());

    // Release: with a lease, the unreferenced location is tombstoned; gc's
    // cutoff never reaps a reservation touched after it.
    let p = pending("acme", sha, &at);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    assert_eq!(cat.release(&p.token, Some(0), None).await.unwrap(), Released::NotHeld, "touched after the cutoff");
    assert_eq!(cat.pending_at(&at).await.unwrap().len(), 1);
    let Released::Released(Some(t)) = cat.release(&p.token, None, Some(&lease)).await.unwrap() else {
        panic!("released without a tombstone")
    };
    let other = Lease { token: Token::new(), secs: 60 };
    assert_eq!(cat.release(&p.token, None, Some(&other)).await.unwrap(), Released::NotHeld);
    assert!(cat.clear_tombstone(&at, &t.token).await.unwrap());
    assert!(cat.commit(Some(&p.token), &record("acme", sha, &at)).await.unwrap() == Committed::Lost);

    // Claims: none overlapping another organisation's.
    let ns = |container: &str, prefix: &str| Namespace {
        backend: BackendKind::S3,
        container: container.into(),
        prefix: prefix.into(),
    };
    assert_eq!(cat.claim("acme", &ns("b", "acme/")).await.unwrap(), Claimed::Held);
    assert_eq!(cat.claim("acme", &ns("b", "acme/")).await.unwrap(), Claimed::Held, "again: still held");
    for overlapping in [ns("b", ""), ns("b", "acme/x/"), ns("b", "acme/")] {
        assert_eq!(cat.claim("evil", &overlapping).await.unwrap(), Claimed::Taken(ns("b", "acme/")));
    }
    for apart in [ns("b", "acmex/"), ns("c", "")] {
        assert_eq!(cat.claim("evil", &apart).await.unwrap(), Claimed::Held, "{apart}");
    }
    assert_eq!(cat.claims("acme").await.unwrap(), vec![ns("b", "acme/")]);
    assert_eq!(cat.claims("evil").await.unwrap().len(), 2);

    // A read's tenant-boundary check, folded into the lookup: a record is
    // held only where its own organisation claims (a prefix by bytes, not
    // a name that merely starts alike; never another organisation's claim).
    for (backend, org, container, name, held) in [
        (BackendKind::S3, "acme", "b", "acme/in", true),
        // The same container and prefix on the other backend: not the claim.
        (BackendKind::Database, "acme", "b", "acme/db", false),
        (BackendKind::S3, "acme", "b", "acmex/out", false),
        (BackendKind::S3, "acme", "c", "out", false),
        (BackendKind::S3, "acme", "d", "nobody", false),
        (BackendKind::S3, "evil", "c", "in", true),
        (BackendKind::S3, "evil", "b", "acme/other", false),
    ] {
        let sha = Digest::of(format!("{org} {container} {name}").as_bytes());
        let at = Location { backend, container: container.into(), name: name.into() };
        let p = pending(org, sha, &at);
        cat.reserve(&p).await.unwrap();
        cat.commit(Some(&p.token), &record(org, sha, &at)).await.unwrap();
        let found = cat.lookup_held(org, &sha).await.unwrap().map(|(r, h)| (r.location, h));
        assert_eq!(found, Some((at, held)), "{org} {container}/{name}");
    }
    assert_eq!(cat.lookup_held("acme", &Digest::of(b"none")).await.unwrap(), None);

    // Adopted in place: refused where anyone holds a claim (its own
    // organisation's too); again for the same is fine; afterwards no claim
    // may overlap it, and its records' bytes are never tombstoned.
    assert!(matches!(cat.adopt("acme", &ns("b", "acme/old/")).await.unwrap(), Claimed::Taken(_)));
    assert_eq!(cat.adopt("acme", &ns("rt", "")).await.unwrap(), Claimed::Held);
    assert_eq!(cat.adopt("acme", &ns("rt", "")).await.unwrap(), Claimed::Held, "again");
    assert!(matches!(cat.adopt("evil", &ns("rt", "x")).await.unwrap(), Claimed::Taken(_)));
    for org in ["acme", "evil"] {
        assert!(matches!(cat.claim(org, &ns("rt", "ab")).await.unwrap(), Claimed::Taken(_)), "{org}");
    }
    assert_eq!(cat.adopted().await.unwrap(), vec![("acme".to_string(), ns("rt", ""))]);
    let sha = Digest::of(b"adopted");
    let at = Location { backend: BackendKind::S3, container: "rt".into(), name: sha.to_string() };
    let p = pending("acme", sha, &at);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    cat.commit(Some(&p.token), &record("acme", sha, &at)).await.unwrap();
    assert!(cat.lookup_held("acme", &sha).await.unwrap().unwrap().1, "adopted: held for reading");
    // Another organisation's record inside acme's adopted namespace is not held.
    let planted = Digest::of(b"planted");
    let inside = Location { backend: BackendKind::S3, container: "rt".into(), name: planted.to_string() };
    let p = pending("evil", planted, &inside);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    cat.commit(Some(&p.token), &record("evil", planted, &inside)).await.unwrap();
    assert!(!cat.lookup_held("evil", &planted).await.unwrap().unwrap().1, "another organisation's adoption");
    let lease = Lease { token: Token::new(), secs: 60 };
    let (_, tombstone) = cat.remove("acme", &sha, &lease).await.unwrap().expect("removed");
    assert_eq!(tombstone, None, "another system's bytes are never deleted");
    assert_eq!(cat.tombstone_if_unreferenced(&at, &lease).await.unwrap(), None);
}

/// Two catalogs on one database ("two hosts") racing: organisations
/// claiming overlapping namespaces (exactly one wins), and deletes racing
/// puts of the same location (a record's location is never tombstoned).
async fn catalog_races(a: Arc<dyn Catalog>, b: Arc<dyn Catalog>) {
    let ns = Namespace { backend: BackendKind::S3, container: "contested".into(), prefix: String::new() };
    let claims = (0..8).map(|i| {
        let cat = if i % 2 == 0 { a.clone() } else { b.clone() };
        let ns = Namespace { prefix: if i % 3 == 0 { String::new() } else { format!("org{i}/") }, ..ns.clone() };
        tokio::spawn(async move { (cat.claim(&format!("org{i}"), &ns).await.unwrap(), ns) })
    });
    let held: Vec<Namespace> = futures_util::future::join_all(claims)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .filter_map(|(claimed, ns)| (claimed == Claimed::Held).then_some(ns))
        .collect();
    // The whole container ("") overlaps every prefix: held by one
    // organisation alone, or by none, never beside another.
    assert!(!held.is_empty());
    assert!(held.len() == 1 || held.iter().all(|n| !n.prefix.is_empty()), "overlapping claims held: {held:?}");

    let lease = Lease { token: Token::new(), secs: 60 };
    for round in 0..15u8 {
        let sha = Digest::of(&[round]);
        let at = location("race", &sha.to_string());
        let p = pending("acme", sha, &at);
        assert_eq!(a.reserve(&p).await.unwrap(), Reserved::Granted);
        a.commit(Some(&p.token), &record("acme", sha, &at)).await.unwrap();
        // Host A deletes while host B puts the same content again.
        let (a2, b2, l2) = (a.clone(), b.clone(), lease.clone());
        let delete = tokio::spawn(async move { a2.remove("acme", &sha, &l2).await.unwrap() });
        let at2 = at.clone();
        let put = tokio::spawn(async move {
            let p = pending("acme", sha, &at2);
            match b2.reserve(&p).await.unwrap() {
                Reserved::Granted => {
                    let c = b2.commit(Some(&p.token), &record("acme", sha, &at2)).await.unwrap();
                    if !matches!(c, Committed::Inserted(_)) {
                        b2.release(&p.token, None, None).await.unwrap();
                    }
                }
                other => assert!(matches!(other, Reserved::Tombstoned(_)), "{other:?}"),
            }
        });
        let (deleted, _) = (delete.await.unwrap(), put.await.unwrap());
        let recorded = a.lookup("acme", &sha).await.unwrap().is_some();
        let tombstoned = a.tombstones().await.unwrap().into_iter().any(|t| t.location == at);
        assert!(!(recorded && tombstoned), "round {round}: a record whose location is being deleted");
        if let Some((_, Some(t))) = deleted {
            assert!(!recorded || t.location != at, "round {round}");
            a.clear_tombstone(&at, &t.token).await.unwrap();
        }
        assert!(a.pending_untouched_since(u64::MAX).await.unwrap().is_empty(), "round {round}: left pending");
    }
}

/// The version of acme's name `name` in `container`, which must exist.
async fn version(cat: &dyn Catalog, container: &str, name: &str) -> Version {
    cat.named("acme", container, name).await.unwrap().expect("the name exists").version()
}

fn named(org: &str, container: &str, name: &str, sha: Digest) -> Named {
    Named {
        org: org.into(),
        container: container.into(),
        name: name.into(),
        sha256: sha,
        size: 1,
        content_type: "x".into(),
        // Taken from the reservation or record when committed.
        location: location("nowhere", "nothing"),
        created_at: 1,
        parked: false,
    }
}

/// The rules for named objects (host/src/catalog/named.rs), whatever the
/// database: a name is a reference like a record.
async fn named_conformance(cat: &dyn Catalog) {
    let lease = || Lease { token: Token::new(), secs: 60 };
    let (one, two) = (Digest::of(b"named one"), Digest::of(b"named two"));
    let (at1, at2) = (location("acme", &one.to_string()), location("acme", &two.to_string()));

    // Containers: created once, per organisation.
    assert_eq!(cat.container("acme", "docs").await.unwrap(), None);
    assert!(cat.create_container("acme", "docs").await.unwrap());
    assert!(!cat.create_container("acme", "docs").await.unwrap());
    assert!(cat.container("acme", "docs").await.unwrap().is_some());
    assert_eq!(cat.container("umbrella", "docs").await.unwrap(), None, "containers are the organisation's own");
    assert_eq!(cat.list_named("umbrella", "docs", "", 10).await.unwrap(), None);

    // A name is committed from a reservation, which is then gone; no
    // container, or a reservation gone, changes nothing.
    let p1 = pending("acme", one, &at1);
    assert_eq!(cat.reserve(&p1).await.unwrap(), Reserved::Granted);
    let n = named("acme", "nope", "a", one);
    assert_eq!(cat.commit_named(Some(&p1.token), &n, None, &lease()).await.unwrap(), NamedCommitted::NoContainer);
    let n = named("acme", "docs", "a", one);
    let NamedCommitted::Done(stored, None) = cat.commit_named(Some(&p1.token), &n, None, &lease()).await.unwrap()
    else {
        panic!("not committed")
    };
    assert_eq!(stored.location, at1, "the name points where the reservation was");
    assert!(cat.pending_at(&at1).await.unwrap().is_empty(), "the reservation became the name");
    assert_eq!(
        cat.commit_named(Some(&p1.token), &n, Some(&version(cat, "docs", "a").await), &lease()).await.unwrap(),
        NamedCommitted::Lost
    );
    assert_eq!(cat.named("acme", "docs", "a").await.unwrap().unwrap().location, at1);
    assert_eq!(cat.named("umbrella", "docs", "a").await.unwrap(), None);

    // A named location is referenced: never tombstoned, and another
    // organisation cannot reserve it.
    assert_eq!(cat.tombstone_if_unreferenced(&at1, &lease()).await.unwrap(), None);
    assert_eq!(cat.referenced(BackendKind::Database, "acme", std::slice::from_ref(&at1.name)).await.unwrap().len(), 1);
    assert_eq!(cat.reserve(&pending("umbrella", one, &at1)).await.unwrap(), Reserved::OwnedByOthers);

    // With no reservation, only the organisation's own record answers.
    let n_b = named("acme", "docs", "b", two);
    assert_eq!(cat.commit_named(None, &n_b, None, &lease()).await.unwrap(), NamedCommitted::Lost);
    let p2 = pending("acme", two, &at2);
    assert_eq!(cat.reserve(&p2).await.unwrap(), Reserved::Granted);
    assert!(matches!(cat.commit(Some(&p2.token), &record("acme", two, &at2)).await.unwrap(), Committed::Inserted(_)));
    let NamedCommitted::Done(b, None) = cat.commit_named(None, &n_b, None, &lease()).await.unwrap() else { panic!() };
    assert_eq!(b.location, at2);

    // Replacing a name: the old content stays while anything else refers
    // to it (here the record), and is tombstoned when nothing does.
    let p = pending("acme", one, &at1);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let NamedCommitted::Done(_, None) = cat
        .commit_named(
            Some(&p.token),
            &named("acme", "docs", "b", one),
            Some(&version(cat, "docs", "b").await),
            &lease(),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let p = pending("acme", two, &at2);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let NamedCommitted::Done(_, None) =
        cat.commit_named(Some(&p.token), &named("acme", "docs", "c", two), None, &lease()).await.unwrap()
    else {
        panic!()
    };
    assert!(cat.remove("acme", &two, &lease()).await.unwrap().unwrap().1.is_none(), "the name c still refers to two");
    let p = pending("acme", one, &at1);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let NamedCommitted::Done(_, Some(t)) = cat
        .commit_named(
            Some(&p.token),
            &named("acme", "docs", "c", one),
            Some(&version(cat, "docs", "c").await),
            &lease(),
        )
        .await
        .unwrap()
    else {
        panic!("replacing the last reference to two tombstones it")
    };
    assert_eq!(t.location, at2);
    assert!(cat.clear_tombstone(&at2, &t.token).await.unwrap());

    // Listing pages in name order.
    let page = |after: &'static str| async move {
        cat.list_named("acme", "docs", after, 2).await.unwrap().unwrap().into_iter().map(|n| n.name).collect::<Vec<_>>()
    };
    assert_eq!(page("").await, ["a", "b"]);
    assert_eq!(page("b").await, ["c"]);
    assert!(page("c").await.is_empty());

    // Copy and move change names only; the destination container must
    // exist, the source must.
    assert!(cat.create_container("acme", "archive").await.unwrap());
    let copy = |from: (&'static str, &'static str), to: (&'static str, &'static str), mv: bool| async move {
        let dest = cat.named("acme", to.0, to.1).await.unwrap().map(|n| n.version());
        let source = cat.named("acme", from.0, from.1).await.unwrap().map_or((one, 0), |n| n.version());
        cat.copy_named("acme", from, to, mv, (&source, dest.as_ref()), &Lease { token: Token::new(), secs: 60 })
            .await
            .unwrap()
    };
    assert_eq!(copy(("docs", "zzz"), ("archive", "a"), false).await, Copied::NoSource);
    assert_eq!(copy(("docs", "a"), ("missing", "a"), false).await, Copied::NoContainer);
    let Copied::Done(c, t) = copy(("docs", "a"), ("archive", "a"), false).await else { panic!() };
    assert_eq!((c.location.clone(), t.len()), (at1.clone(), 0));
    let Copied::Done(_, t) = copy(("archive", "a"), ("archive", "moved"), true).await else { panic!() };
    assert!(t.is_empty());
    assert_eq!(cat.named("acme", "archive", "a").await.unwrap(), None, "a move drops its source");
    assert_eq!(cat.named("acme", "archive", "moved").await.unwrap().unwrap().location, at1);
    assert!(matches!(copy(("docs", "a"), ("docs", "a"), true).await, Copied::Done(..)), "onto itself: nothing");
    // Only what the caller checked: a source or destination that changed
    // since is left alone.
    let changed =
        cat.copy_named("acme", ("docs", "a"), ("archive", "z"), false, (&(two, 0), None), &lease()).await.unwrap();
    assert_eq!(changed, Copied::Changed, "the source names other content");
    let changed = cat
        .copy_named(
            "acme",
            ("docs", "a"),
            ("archive", "moved"),
            false,
            (&version(cat, "docs", "a").await, None),
            &lease(),
        )
        .await
        .unwrap();
    assert_eq!(changed, Copied::Changed, "the destination exists");
    let p = pending("acme", one, &at1);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let n = named("acme", "docs", "a", one);
    assert_eq!(cat.commit_named(Some(&p.token), &n, Some(&(two, 0)), &lease()).await.unwrap(), NamedCommitted::Changed);
    assert_eq!(cat.commit_named(Some(&p.token), &n, None, &lease()).await.unwrap(), NamedCommitted::Changed);
    assert!(cat.release(&p.token, None, None).await.unwrap() != Released::NotHeld);
    assert!(cat.named("acme", "docs", "a").await.unwrap().is_some());

    // A pin keeps the bytes whatever happens to the names.
    let token = Token::new();
    let (pinned, pin) = cat.pin_named("acme", "docs", "a", &token).await.unwrap().unwrap();
    assert_eq!(
        (pinned.location.clone(), pin.location.clone(), pin.token.clone()),
        (at1.clone(), at1.clone(), token.clone())
    );
    assert_eq!(cat.pin_named("acme", "docs", "nope", &Token::new()).await.unwrap(), None);
    let all: Vec<(String, Version)> = cat
        .list_named("acme", "docs", "", 100)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|n| (n.name.clone(), n.version()))
        .collect();
    assert_eq!(all.len(), 3);
    let not_as_checked = [("a".to_string(), (two, 0)), ("b".to_string(), (one, 12345))];
    let dropped = cat.drop_names("acme", "docs", Names::These(&not_as_checked), &lease()).await.unwrap().unwrap();
    assert!(dropped.is_empty(), "a names other content, b was written at another time");
    assert!(
        cat.named("acme", "docs", "a").await.unwrap().is_some()
            && cat.named("acme", "docs", "b").await.unwrap().is_some()
    );
    let dropped = cat.drop_names("acme", "docs", Names::These(&all), &lease()).await.unwrap().unwrap();
    assert!(dropped.is_empty(), "archive/moved still names one");
    assert_eq!(cat.drop_names("acme", "nope", Names::These(&all), &lease()).await.unwrap(), None);
    let dropped = cat
        .drop_names(
            "acme",
            "archive",
            Names::These(&[("moved".into(), version(cat, "archive", "moved").await), ("none".into(), (one, 0))]),
            &lease(),
        )
        .await
        .unwrap();
    assert_eq!(dropped, Some(vec![]), "the pin still refers to one");
    let Released::Released(Some(t)) = cat.release(&token, None, Some(&lease())).await.unwrap() else {
        panic!("releasing the last reference tombstones it")
    };
    assert_eq!(t.location, at1);
    assert!(cat.clear_tombstone(&at1, &t.token).await.unwrap());

    // A container is deleted with its names; the other organisation's
    // container of the same name is untouched.
    assert!(cat.create_container("umbrella", "docs").await.unwrap());
    assert_eq!(cat.drop_names("acme", "docs", Names::Container, &lease()).await.unwrap(), Some(vec![]));
    assert_eq!(cat.container("acme", "docs").await.unwrap(), None);
    assert!(cat.container("umbrella", "docs").await.unwrap().is_some());

    // Moving content only names refer to (`coffer migrate`): the scan
    // finds its location once, the names move in one transaction, and the
    // old location is tombstoned.
    assert!(cat.create_container("acme", "m").await.unwrap());
    for name in ["x", "y"] {
        let p = pending("acme", one, &at1);
        assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
        let committed = cat.commit_named(Some(&p.token), &named("acme", "m", name, one), None, &lease()).await.unwrap();
        assert!(matches!(committed, NamedCommitted::Done(..)));
    }
    let found = cat.scan_named(None, None, false, 10).await.unwrap();
    assert_eq!(found.iter().map(|r| (r.org.as_str(), &r.location)).collect::<Vec<_>>(), [("acme", &at1)]);
    assert!(cat.scan_named(Some("umbrella"), None, false, 10).await.unwrap().is_empty());
    assert!(cat.scan_named(None, Some(("acme", &at1)), false, 10).await.unwrap().is_empty(), "paged past");
    assert!(cat.scan_named(None, None, true, 10).await.unwrap().is_empty(), "none parked");
    assert!(cat.named_at("acme", &at1).await.unwrap() && !cat.named_at("umbrella", &at1).await.unwrap());
    let at3 = location("elsewhere", &one.to_string());
    let p = pending("acme", one, &at3);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let Relocated::Moved(moved, Some(t)) = cat.relocate_named(&found[0], &at3, &p.token, &lease()).await.unwrap()
    else {
        panic!("the names move and the old place is tombstoned")
    };
    assert_eq!((moved.location, t.location.clone()), (at3.clone(), at1.clone()));
    assert!(cat.clear_tombstone(&at1, &t.token).await.unwrap());
    assert_eq!(cat.named("acme", "m", "y").await.unwrap().unwrap().location, at3);
    assert!(cat.pending_at(&at3).await.unwrap().is_empty());
    let p = pending("acme", one, &at1);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let at_three = Record { location: at3.clone(), ..found[0].clone() };
    let again = cat.relocate_named(&at_three, &at1, &Token::new(), &lease()).await.unwrap();
    assert_eq!(again, Relocated::Lost, "no such reservation");
    let p2 = pending("acme", one, &at1);
    assert_eq!(cat.reserve(&p2).await.unwrap(), Reserved::Granted);
    let other_content = Record { sha256: two, ..at_three.clone() };
    let moved_off = cat.relocate_named(&other_content, &at1, &p2.token, &lease()).await;
    assert!(moved_off.is_err(), "a reservation for other content is a bug, not a move");
    let elsewhere = Record { location: location("nowhere", "else"), ..at_three.clone() };
    let none_there = cat.relocate_named(&elsewhere, &at1, &p.token, &lease()).await.unwrap();
    assert_eq!(none_there, Relocated::Changed(None), "no name there: nothing moved");
    assert!(cat.release(&p.token, None, None).await.unwrap() != Released::NotHeld);
    assert!(cat.release(&p2.token, None, None).await.unwrap() != Released::NotHeld);

    // A container still holding names is not deleted.
    assert!(cat.create_container("acme", "full").await.unwrap());
    let p = pending("acme", two, &at2);
    assert_eq!(cat.reserve(&p).await.unwrap(), Reserved::Granted);
    let n = named("acme", "full", "f", two);
    assert!(matches!(cat.commit_named(Some(&p.token), &n, None, &lease()).await.unwrap(), NamedCommitted::Done(..)));
    let full = cat.drop_names("acme", "full", Names::Container, &lease()).await;
    assert!(matches!(full, Err(Error::Conflict(_))), "a container with names is not deleted: {full:?}");
    assert!(cat.container("acme", "full").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_named_objects_conform() {
    let dir = tempfile::tempdir().unwrap();
    named_conformance(&SqliteDb::open(dir.path().join("n.db")).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_named_objects_conform() {
    let url = crate::pg_server::fresh_database("named").await;
    named_conformance(&*open_pg(&url).await).await;
}

#[tokio::test]
async fn sqlite_catalog_conforms() {
    let dir = tempfile::tempdir().unwrap();
    catalog_conformance(&SqliteDb::open(dir.path().join("c.db")).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalogs_racing_keep_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let a = Arc::new(SqliteDb::open(&path).await.unwrap());
    let b = Arc::new(SqliteDb::open(&path).await.unwrap());
    catalog_races(a, b).await;
}

#[tokio::test]
async fn postgres_catalog_conforms() {
    let url = crate::pg_server::fresh_database("catalog").await;
    catalog_conformance(&*open_pg(&url).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalogs_on_two_hosts_racing_keep_the_rules() {
    let url = crate::pg_server::fresh_database("races").await;
    catalog_races(open_pg(&url).await, open_pg(&url).await).await;
}
