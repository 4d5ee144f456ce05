//! Tenant boundaries against a hostile tenant policy: the built-in policy
//! is the deployment's (it declares every organisation's namespaces), and
//! organisations `mallory-*` bring their own component (the hostile test
//! policy). Each attack ends with a clear error, the victim's objects
//! intact and storable, and the host serving the next request; in the
//! database, on S3 with a bucket per organisation, and in one shared
//! bucket.

use coffer::{Coffer, Config, Content, Error};

use crate::sandbox::guest;
use crate::support::{TestCoffer, data, objects_on_server, s3_config, sqlite_config, unique_bucket};

#[derive(Debug, Clone, Copy)]
enum Layout {
    Database,
    BucketPerOrg,
    OneBucket,
}

/// What the victim will store later: the poison attack aims at its name.
fn future_file() -> Vec<u8> {
    data(10_000, 99)
}

/// The attacks, as organisations of the hostile policy, and what each
/// must end with.
const ATTACKS: &[(&str, &str)] = &[
    ("mallory-write", "denied"),
    ("mallory-no-digest", "denied"),
    ("mallory-own-no-digest", "denied"),
    ("mallory-head", "denied"),
    ("mallory-claim", "policy"),
    ("mallory-poison", "denied"),
    ("mallory-bucket", "denied"),
];

fn tenant_config(dir: &std::path::Path, layout: Layout) -> (Config, Option<String>) {
    let (mut config, victim_bucket) = match layout {
        Layout::Database => (sqlite_config(dir, &[]), None),
        Layout::BucketPerOrg => {
            let prefix = format!("{}-", unique_bucket("t"));
            (s3_config(dir, None, Some(&prefix)), Some(format!("{prefix}victim")))
        }
        Layout::OneBucket => {
            let bucket = unique_bucket("shared");
            (s3_config(dir, Some(&bucket), None), Some(bucket))
        }
    };
    let poison = coffer::Digest::of(&future_file()).to_string();
    // A bucket that is not mallory's: the victim's own, or (one bucket for
    // all, which mallory may use) any other.
    let target = match layout {
        Layout::OneBucket => unique_bucket("elsewhere"),
        _ => victim_bucket.clone().unwrap_or_else(|| "victim".into()),
    };
    for (org, _) in ATTACKS {
        let mut t: std::collections::BTreeMap<String, String> =
            [("policy".to_string(), guest("hostile").display().to_string())].into();
        t.insert("poison-target".into(), poison.clone());
        t.insert("target-bucket".into(), target.clone());
        config.tenants.insert(org.to_string(), t);
    }
    (config, victim_bucket)
}

/// What the victim has on its backend: objects in its bucket (or its
/// part of the shared one), or its database blobs.
fn victims_bytes(t: &TestCoffer, layout: Layout, bucket: &Option<String>) -> Vec<String> {
    match layout {
        Layout::Database => {
            let db = t.raw_db();
            let mut stmt = db.prepare("SELECT container || '/' || name FROM blobs ORDER BY 1").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        }
        _ => objects_on_server(bucket.as_ref().unwrap()),
    }
}

async fn attacks_are_refused(layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let (config, bucket) = tenant_config(dir.path(), layout);
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let first = data(10_000, 1);
    let victim = t.coffer.put("victim", Content::from_bytes(first.clone(), None).unwrap()).await.unwrap();
    let before = victims_bytes(&t, layout, &bucket);

    for (org, kind) in ATTACKS {
        // Same size as the victim's files, so a size check alone would be fooled.
        let refused = |err: &Error| match *kind {
            "denied" => matches!(err, Error::Denied(_)),
            _ => matches!(err, Error::Policy(m) if m.contains("neither wrote it there nor found it")),
        };
        let err = t.coffer.put(org, Content::from_bytes(vec![7u8; 10_000], None).unwrap()).await.unwrap_err();
        assert!(refused(&err), "{layout:?} {org}: {err}");
        assert!(t.coffer.list(org, None, 10).await.unwrap().is_empty(), "{layout:?} {org} got a record");
        // The same attack through a name (a blobstore plugin's write) is
        // refused alike, and leaves no name.
        t.coffer.create_container(org, "c").await.unwrap();
        let content = Content::from_bytes(vec![7u8; 10_000], None).unwrap();
        let err = t.coffer.put_named(org, "c", "n", content).await.unwrap_err();
        assert!(refused(&err), "{layout:?} {org} by name: {err}");
        assert!(t.coffer.list_named(org, "c", "", 10).await.unwrap().is_empty(), "{layout:?} {org} got a name");
        assert_eq!(victims_bytes(&t, layout, &bucket), before, "{layout:?} {org} changed the victim's bytes");
        assert!(t.coffer.get_bytes("victim", &victim.sha256).await.unwrap() == first, "{layout:?} after {org}");
    }
    // The victim still stores, also the file the poison aimed at, and
    // gets back exactly its bytes.
    let later = t.coffer.put("victim", Content::from_bytes(future_file(), None).unwrap()).await.unwrap();
    assert_eq!(later.deduplicated, Some(false), "{layout:?}: nothing was planted there");
    assert!(t.coffer.get_bytes("victim", &later.sha256).await.unwrap() == future_file());
    // And the attacker, through its own policy, still stores its own.
    let own = t.coffer.put("mallory-write", Content::from_bytes("mine", None).unwrap());
    assert!(matches!(own.await, Err(Error::Denied(_))), "mallory-write always aims at the victim");
    let normal = t.coffer.put("normal", Content::from_bytes("after the attacks", None).unwrap()).await.unwrap();
    assert!(t.coffer.get_bytes("normal", &normal.sha256).await.unwrap() == "after the attacks");
}

#[tokio::test]
async fn a_tenant_policy_cannot_touch_another_organisation_in_the_database() {
    attacks_are_refused(Layout::Database).await;
}

#[tokio::test]
async fn a_tenant_policy_cannot_touch_another_organisations_bucket() {
    attacks_are_refused(Layout::BucketPerOrg).await;
}

#[tokio::test]
async fn a_tenant_policy_cannot_touch_another_organisations_part_of_a_shared_bucket() {
    attacks_are_refused(Layout::OneBucket).await;
}

/// A record that points into another organisation's namespace (one left
/// by an older Coffer, or planted in the catalog) is refused before a
/// byte is read: the caller gets an error, never the start of another
/// organisation's object.
#[tokio::test]
async fn a_record_pointing_into_another_namespace_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = tenant_config(dir.path(), Layout::Database);
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let secret = data(300_000, 5);
    let victim = t.coffer.put("victim", Content::from_bytes(secret.clone(), None).unwrap()).await.unwrap();
    // Same size, other content: a streamed read would hand out every chunk
    // but the last before the digest check failed.
    let fake = coffer::Digest::of(&vec![0u8; secret.len()]);
    t.raw_db()
        .execute(
            "INSERT INTO objects (org, sha256, size, content_type, backend, container, name, created_at)
             VALUES ('mallory-write', ?1, ?2, 'application/octet-stream', 'database', 'victim', ?3, 0)",
            rusqlite::params![fake.to_string(), secret.len() as i64, victim.key],
        )
        .unwrap();
    let err = t.coffer.get("mallory-write", &fake.to_string()).await.map(|_| ()).unwrap_err();
    assert!(matches!(&err, Error::Denied(m) if m.contains("outside every namespace")), "{err}");
    let err = t.coffer.delete("mallory-write", &fake.to_string()).await.unwrap_err();
    assert!(matches!(&err, Error::Denied(_)), "{err}");
    assert!(t.coffer.get_bytes("victim", &victim.sha256).await.unwrap() == secret);

    // Through the CLI: exit code 4 (denied), and no output file.
    let out_file = t.dir.path().join("out.bin");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(t.dir.path())
        .env_clear()
        .env("COFFER_DATABASE_URL", format!("sqlite:{}", t.db_path().display()))
        .env("COFFER_CACHE_DIR", "none")
        .args(["get", "--org", "mallory-write", &fake.to_string(), "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out_file.exists(), "no byte was written");
}

/// Store calls act for a put: a policy probing storage while it
/// authorises a read is refused.
#[tokio::test]
async fn store_calls_outside_a_put_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config
        .tenants
        .insert("head-outside-put".into(), [("policy".to_string(), guest("hostile").display().to_string())].into());
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let info = t.coffer.put("head-outside-put", Content::from_bytes("x", None).unwrap()).await.unwrap();
    let err = t.coffer.get_bytes("head-outside-put", &info.sha256).await.unwrap_err();
    assert!(matches!(&err, Error::Denied(m) if m.contains("outside put")), "{err}");
}

/// Through the CLI, with the tenants in a config file: the attack exits
/// with the code for "denied" and says where it was refused.
#[test]
fn the_cli_reports_a_refused_attack_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coffer.toml");
    std::fs::write(
        &file,
        format!(
            "database_url = \"sqlite:{}\"\ncache_dir = \"none\"\n[tenants.mallory-write]\npolicy = \"{}\"\n",
            dir.path().join("c.db").display(),
            guest("hostile").display()
        ),
    )
    .unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"attack").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(dir.path())
        .env_clear()
        .env("COFFER_CONFIG", &file)
        .args(["put", "--org", "mallory-write"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("database:victim/") && stderr.contains("outside"), "{stderr}");
}
