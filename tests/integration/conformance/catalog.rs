//! The catalog suite (records, the lifecycle of locations, claims), on
//! SQLite and PostgreSQL, alone and with two catalogs racing.

use std::sync::Arc;

use coffer::Digest;
use coffer::backend::{BackendKind, Location};
use coffer::catalog::{Catalog, Claimed, Committed, Lease, Namespace, Released, Reserved, Token};
use coffer::db::sqlite::SqliteDb;

use super::{location, open_pg, pending, record};

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
