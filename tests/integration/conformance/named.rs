//! Named objects held to the catalog's rules, on SQLite and PostgreSQL.

use coffer::backend::BackendKind;
use coffer::catalog::named::{Copied, Named, NamedCommitted, Names, Version};
use coffer::catalog::{Catalog, Committed, Lease, Record, Released, Relocated, Reserved, Token};
use coffer::db::sqlite::SqliteDb;
use coffer::{Digest, Error};

use super::{location, open_pg, pending, record};

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
