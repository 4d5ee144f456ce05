//! Hostile policy components are contained: each gets a clear error,
//! nothing is stored or lost, and the host serves a normal request right
//! after. The components are in `tests/guests/`, built by host/build.rs.

use coffer::{Coffer, Content, Error};

use crate::support::{TestCoffer, sqlite_config};

/// A test component's path.
pub fn guest(name: &str) -> std::path::PathBuf {
    std::path::Path::new(coffer::policy::TEST_GUESTS_DIR).join(format!("coffer_test_guest_{name}.wasm"))
}

async fn hostile() -> TestCoffer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(guest("hostile"));
    TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir }
}

fn count(t: &TestCoffer, table: &str) -> i64 {
    t.raw_db().query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

/// Put as `org`, expect failure; then prove nothing was stored and that a
/// normal organisation is still served by the same host.
async fn contained(t: &TestCoffer, org: &str) -> Error {
    let before = (count(t, "objects"), count(t, "blobs"));
    let err = t.coffer.put(org, Content::from_bytes(vec![7u8; 10_000], None).unwrap()).await.unwrap_err();
    assert_eq!((count(t, "objects"), count(t, "blobs")), before, "{org}: nothing stored");
    assert_eq!(count(t, "pending"), 0, "{org}: its reservations were released");
    let normal = t.coffer.put("normal", Content::from_bytes(format!("after {org}"), None).unwrap()).await.unwrap();
    assert_eq!(t.coffer.get_bytes("normal", &normal.sha256).await.unwrap(), format!("after {org}"));
    err
}

#[tokio::test]
async fn a_trapping_policy_is_an_error_for_that_call_only() {
    let t = hostile().await;
    let err = contained(&t, "trap").await;
    assert!(matches!(&err, Error::Policy(m) if m.contains("trapped")), "{err}");
    let err = t.coffer.container_name("trap").await.unwrap_err();
    assert!(matches!(&err, Error::Policy(m) if m.contains("trapped")), "{err}");
}

/// A policy that traps after writing: the bytes it wrote are deleted
/// (nothing refers to them) and its reservation released.
#[tokio::test]
async fn a_policy_trapping_after_it_wrote_leaves_nothing_behind() {
    let t = hostile().await;
    let err = contained(&t, "write-then-trap").await;
    assert!(matches!(&err, Error::Policy(m) if m.contains("trapped")), "{err}");
}

#[tokio::test]
async fn an_endless_loop_runs_out_of_fuel() {
    let t = hostile().await;
    let started = std::time::Instant::now();
    let err = contained(&t, "loop").await;
    assert!(matches!(&err, Error::Policy(m) if m.contains("CPU budget") && m.contains("COFFER_POLICY_FUEL")), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "stopped in bounded time");
}

#[tokio::test]
async fn allocating_without_end_hits_the_memory_limit() {
    let t = hostile().await;
    let err = contained(&t, "alloc").await;
    assert!(
        matches!(&err, Error::Policy(m) if m.contains("memory limit") && m.contains("COFFER_POLICY_MEMORY")),
        "{err}"
    );
}

#[tokio::test]
async fn a_huge_error_message_is_cut_to_size() {
    let t = hostile().await;
    let err = contained(&t, "huge-string").await;
    assert!(matches!(&err, Error::Denied(m) if m.len() <= 2000), "message of {} bytes", err.to_string().len());
}

#[tokio::test]
async fn the_guest_sees_no_files_environment_or_network() {
    // The host holds S3 credentials here; none of them may show.
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some("escape"), None);
    config.policy = Some(guest("hostile"));
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let err = contained(&t, "escape").await;
    assert!(matches!(&err, Error::Denied(m) if m == "fs:denied file:denied env:empty net:denied"), "{err}");
}

#[tokio::test]
async fn peeking_is_bounded() {
    let t = hostile().await;
    let err = contained(&t, "peek-all").await;
    assert!(matches!(&err, Error::Denied(m) if m == "peeked 4096 bytes"), "{err}");
}

#[tokio::test]
async fn store_calls_per_operation_are_bounded() {
    let t = hostile().await;
    let err = contained(&t, "spin-store").await;
    assert!(matches!(&err, Error::Policy(m) if m.contains("store calls")), "{err}");
}

#[tokio::test]
async fn a_policy_cannot_write_read_or_claim_another_organisations_objects() {
    let t = hostile().await;
    let bytes = vec![7u8; 10_000];
    let victim = t.coffer.put("victim", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    for (org, kind) in [("mallory-write", "denied"), ("mallory-head", "denied"), ("mallory-claim", "policy")] {
        let err = contained(&t, org).await;
        match kind {
            "denied" => assert!(matches!(&err, Error::Denied(m) if m.contains("another organisation")), "{org}: {err}"),
            _ => assert!(
                matches!(&err, Error::Policy(m) if m.contains("neither wrote it there nor found it")),
                "{org}: {err}"
            ),
        }
        assert!(t.coffer.list(org, None, 10).await.unwrap().is_empty(), "{org} got no record");
    }
    assert!(t.coffer.get_bytes("victim", &victim.sha256).await.unwrap() == bytes, "the victim's object is intact");
}

#[tokio::test]
async fn a_policy_asking_for_a_backend_that_is_not_configured_is_refused() {
    let t = hostile().await;
    let err = contained(&t, "no-such-backend").await;
    assert!(matches!(&err, Error::Config(m) if m.contains("S3 is not configured")), "{err}");
}

#[tokio::test]
async fn a_policy_cannot_smuggle_paths_into_s3_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some(&crate::support::unique_bucket("smuggle")), None);
    config.policy = Some(guest("hostile"));
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let err = t.coffer.put("bad-names", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidName(m) if m.contains("Bad/Bucket")), "{err}");
    assert!(t.coffer.list("bad-names", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_trap_while_authorising_a_read_is_contained() {
    let t = hostile().await;
    let info = t.coffer.put("trap-on-read", Content::from_bytes("x", None).unwrap()).await.unwrap();
    let err = t.coffer.get_bytes("trap-on-read", &info.sha256).await.unwrap_err();
    assert!(matches!(&err, Error::Policy(m) if m.contains("trapped")), "{err}");
    assert_eq!(count(&t, "objects"), 1, "the object is still recorded");
}

#[tokio::test]
async fn a_component_importing_what_the_host_does_not_provide_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(guest("extra_import"));
    let err = Coffer::open(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("import this host does not provide") && m.contains("secrets")),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_for_another_contract_version_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(guest("other_version"));
    let err = Coffer::open(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("coffer:storage/policy@0.2.0") && m.contains("this host speaks coffer:storage/policy@0.1.0")),
        "{err}"
    );
}
