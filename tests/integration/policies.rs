//! Policies while the host runs: per-tenant components, swapping (asked
//! for, or when the file changes), and the on-disk cache of compiled
//! components.

use std::time::Duration;

use coffer::{Coffer, Content, Error};

use crate::sandbox::guest;
use crate::support::{TestCoffer, sqlite_config};

fn is_trap(r: &coffer::Result<coffer::ObjectInfo>) -> bool {
    matches!(r, Err(Error::Policy(m)) if m.contains("trapped"))
}

#[tokio::test]
async fn each_tenant_can_have_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.tenants.insert("trap".into(), [("policy".to_string(), guest("hostile").display().to_string())].into());
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    // "trap" runs the hostile component, which traps for it.
    assert!(is_trap(&t.coffer.put("trap", Content::from_bytes("x", None).unwrap()).await));
    // Everyone else has the default policy: its size rule, its naming.
    let info = t.coffer.put("acme", Content::from_bytes("x", None).unwrap()).await.unwrap();
    assert_eq!(info.container, "acme");
}

#[tokio::test]
async fn a_bad_tenant_policy_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.tenants.insert("acme".into(), [("policy".to_string(), "/nonexistent/p.wasm".to_string())].into());
    let err = Coffer::open(config).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("tenants.acme.policy")), "{err}");
}

#[tokio::test]
async fn a_swapped_policy_applies_to_new_calls_and_a_bad_swap_keeps_the_old() {
    let t = crate::support::sqlite_coffer(&[]).await;
    t.coffer.put("trap", Content::from_bytes("x", None).unwrap()).await.unwrap();

    let hostile = std::fs::read(guest("hostile")).unwrap();
    t.coffer.replace_policy(None, hostile, "hostile").await.unwrap();
    assert!(is_trap(&t.coffer.put("trap", Content::from_bytes("y", None).unwrap()).await));

    let err = t.coffer.replace_policy(None, b"garbage".to_vec(), "garbage").await.unwrap_err();
    assert!(matches!(&err, Error::Policy(m) if m.contains("not a valid WebAssembly component")), "{err}");
    let err = t.coffer.replace_policy(None, std::fs::read(guest("other_version")).unwrap(), "v2").await.unwrap_err();
    assert!(err.to_string().contains("0.2.0"), "{err}");
    // Still the hostile policy, still serving.
    assert!(is_trap(&t.coffer.put("trap", Content::from_bytes("z", None).unwrap()).await));
    t.coffer.put("acme", Content::from_bytes("z", None).unwrap()).await.unwrap();

    t.coffer.replace_policy(None, coffer::policy::DEFAULT_POLICY.to_vec(), "default").await.unwrap();
    t.coffer.put("trap", Content::from_bytes("z", None).unwrap()).await.unwrap();
}

#[tokio::test]
async fn calls_in_flight_while_policies_are_swapped_all_complete() {
    let t = crate::support::sqlite_coffer(&[]).await;
    let puts: Vec<_> = (0..40u32)
        .map(|i| {
            let coffer = t.coffer.clone();
            tokio::spawn(async move {
                coffer.put("acme", Content::from_bytes(i.to_le_bytes().to_vec(), None).unwrap()).await
            })
        })
        .collect();
    for i in 0..6 {
        let bytes =
            if i % 2 == 0 { std::fs::read(guest("hostile")).unwrap() } else { coffer::policy::DEFAULT_POLICY.to_vec() };
        t.coffer.replace_policy(None, bytes, "swap").await.unwrap();
    }
    for p in puts {
        p.await.unwrap().unwrap();
    }
    assert_eq!(t.coffer.list("acme", None, 100).await.unwrap().len(), 40);
}

#[tokio::test]
async fn a_changed_component_file_is_swapped_in_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.wasm");
    std::fs::write(&file, coffer::policy::DEFAULT_POLICY).unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(file.clone());
    let coffer = Coffer::open(config).await.unwrap();
    let watcher = coffer.watch_policies(Duration::from_millis(20));

    coffer.put("trap", Content::from_bytes("a", None).unwrap()).await.unwrap();
    std::fs::write(&file, std::fs::read(guest("hostile")).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !is_trap(&coffer.put("trap", Content::from_bytes("b", None).unwrap()).await) {
        assert!(std::time::Instant::now() < deadline, "the changed file was not swapped in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken file is reported and the policy in force stays.
    std::fs::write(&file, b"not a component").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(is_trap(&coffer.put("trap", Content::from_bytes("c", None).unwrap()).await));
    coffer.put("acme", Content::from_bytes("c", None).unwrap()).await.unwrap();
    watcher.abort();

    // Asked for directly, the reload says why.
    std::fs::write(&file, b"still not a component").unwrap();
    let err = coffer.reload_policies().await.unwrap_err();
    assert!(err.to_string().contains("the old policy stays"), "{err}");
}

/// `coffer ARGS` with the cache in `cache`, logging at debug level;
/// its stderr.
fn with_cache(dir: &std::path::Path, cache: &std::path::Path, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(dir)
        .env_clear()
        .env("COFFER_CACHE_DIR", cache)
        .env("COFFER_LOG", "coffer=debug")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn ls_with_cache(dir: &std::path::Path, cache: &std::path::Path) -> String {
    with_cache(dir, cache, &["ls".as_ref(), "--org".as_ref(), "acme".as_ref()])
}

/// The cache entries (not the key) in `cache`.
fn entries(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut e: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    e.sort();
    e
}

#[test]
fn compiled_components_are_cached_on_disk_and_bad_entries_ignored() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = ls_with_cache(dir.path(), &cache);
    assert!(first.contains("compiled a policy component"), "{first}");
    assert_eq!(std::fs::metadata(&cache).unwrap().mode() & 0o777, 0o700, "the cache directory is private");
    assert_eq!(std::fs::metadata(cache.join("key")).unwrap().mode() & 0o777, 0o600, "so is its key");
    let found = entries(&cache);
    assert_eq!(found.len(), 1, "{found:?}");
    let entry = found[0].clone();

    let second = ls_with_cache(dir.path(), &cache);
    assert!(second.contains("loaded a compiled policy component from the cache"), "{second}");
    assert!(
        !second.contains("compiled a policy component\n") && !second.contains("compiled a policy component "),
        "{second}"
    );

    // Damaged: refused, recompiled, rewritten.
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let third = ls_with_cache(dir.path(), &cache);
    assert!(third.contains("refusing a compiled-policy cache entry") && third.contains("HMAC"), "{third}");
    assert!(ls_with_cache(dir.path(), &cache).contains("from the cache"));

    // Forged: native code compiled from another component (the hostile
    // test policy, compiled into the same cache by `policy check`), put
    // in the default policy's place. Its HMAC binds it to the hostile
    // component's bytes, so it is refused and the default recompiled.
    let hostile = crate::sandbox::guest("hostile");
    with_cache(dir.path(), &cache, &["policy".as_ref(), "check".as_ref(), hostile.as_os_str()]);
    let other = entries(&cache).into_iter().find(|e| *e != entry).expect("the hostile policy's entry");
    std::fs::copy(&other, &entry).unwrap();
    let forged = ls_with_cache(dir.path(), &cache);
    assert!(forged.contains("refusing a compiled-policy cache entry") && forged.contains("HMAC"), "{forged}");
    assert!(forged.contains("compiled a policy component"), "{forged}");

    // A version-1 entry with a valid plain SHA-256 (what anyone can
    // compute): refused, it carries no HMAC.
    let payload = b"not machine code for this engine".to_vec();
    let mut old = b"COFFERC1".to_vec();
    use sha2::Digest as _;
    old.extend_from_slice(&sha2::Sha256::digest(&payload));
    old.extend_from_slice(&payload);
    std::fs::write(&entry, old).unwrap();
    assert!(ls_with_cache(dir.path(), &cache).contains("refusing a compiled-policy cache entry"));

    // An entry others may write, or one owned by another user: refused.
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let shared = ls_with_cache(dir.path(), &cache);
    assert!(shared.contains("writable by group or others"), "{shared}");
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        std::process::Command::new("chown").arg("65534").arg(&entry).status().unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        let foreign = ls_with_cache(dir.path(), &cache);
        assert!(foreign.contains("owned by user 65534"), "{foreign}");
        assert_eq!(std::fs::metadata(&entry).unwrap().uid(), 0, "replaced by the user's own entry");
    }

    // A cache directory others may write is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = ls_with_cache(dir.path(), &cache);
    assert!(
        open.contains("not using the compiled-policy cache") && open.contains("writable by group or others"),
        "{open}"
    );
    assert!(!open.contains("loaded a compiled policy component from the cache"), "{open}");
}
