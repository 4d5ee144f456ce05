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
    hostile_with(|_| {}).await
}

async fn hostile_with(change: impl FnOnce(&mut coffer::Config)) -> TestCoffer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(guest("hostile"));
    change(&mut config);
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
    // Time enough that the fuel, not the time limit, is what stops it.
    let t = hostile_with(|c| c.limits.timeout_ms = 20_000).await;
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
    assert!(matches!(&err, Error::Policy(m) if m.contains("host calls")), "{err}");
}

#[tokio::test]
async fn a_policy_asking_for_a_backend_that_is_not_configured_is_refused() {
    let t = hostile().await;
    let err = contained(&t, "no-such-backend").await;
    assert!(matches!(&err, Error::Denied(m) if m.contains("s3:bucket/") && m.contains("outside")), "{err}");
}

#[tokio::test]
async fn a_policy_cannot_smuggle_paths_into_s3_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some(&crate::support::unique_bucket("smuggle")), None);
    config.policy = Some(guest("hostile"));
    let t = TestCoffer { coffer: Coffer::open(config).await.unwrap(), dir };
    let err = t.coffer.put("bad-names", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
    assert!(matches!(&err, Error::Denied(m) if m.contains("Bad/Bucket")), "{err}");
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
        matches!(&err, Error::Config(m) if m.contains("coffer:storage/policy@0.1.0") && m.contains("this host speaks coffer:storage/policy@0.2.0") && m.contains("namespaces(org)")),
        "{err}"
    );
}

/// A guest that sleeps on a WASI clock is stopped by the time limit (its
/// own time), and one that spins on the clock by the budget of calls into
/// the host (WASI imports count), long before either would have finished,
/// even with fuel to spare.
#[tokio::test]
async fn a_sleeping_or_spinning_guest_is_stopped_at_its_time_limit() {
    let t = hostile_with(|c| c.limits.fuel = u64::MAX / 4).await;
    for (org, stopped_by) in [("sleep", "COFFER_POLICY_TIMEOUT"), ("poll", "WASI imports and the runtime's own calls")]
    {
        let started = std::time::Instant::now();
        let err = contained(&t, org).await;
        assert!(matches!(&err, Error::Policy(m) if m.contains(stopped_by)), "{org}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{org} was not stopped early");
    }
}

/// A guest that opens WASI resources (pollables) and never drops them is
/// stopped when its call's resource table is full (1024 entries), with
/// the transition budget (4096) still to spare.
#[tokio::test]
async fn a_guest_holding_resources_is_stopped_at_its_resource_table_limit() {
    let t = hostile().await;
    let err = contained(&t, "leak-resources").await;
    assert!(matches!(&err, Error::Policy(m) if m.contains("more than 1024 resources")), "{err}");
}

/// Host I/O does not count against the time limit: a put whose uploads
/// each take longer than the whole limit still succeeds.
#[tokio::test]
async fn slow_storage_does_not_count_against_the_policy_time_limit() {
    use crate::fault_proxy::{Fault, FaultProxy, Op};
    let proxy = FaultProxy::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some(&crate::support::unique_bucket("slow")), None);
    config.s3.endpoint_url = Some(proxy.endpoint());
    config.limits.timeout_ms = 100;
    let coffer = Coffer::open(config).await.unwrap();
    proxy.always(Op::PutObject, Fault::Delay(std::time::Duration::from_millis(400)));
    let info = coffer.put("acme", Content::from_bytes("slow but fine", None).unwrap()).await.unwrap();
    assert_eq!(coffer.get_bytes("acme", &info.sha256).await.unwrap(), "slow but fine");
}

/// A call's storage lookups share one budget of I/O time: a policy that
/// looks again and again at a slow server gets `unavailable` once the
/// budget is spent, instead of holding its instance for 256 slow lookups.
#[tokio::test]
async fn a_calls_storage_lookups_stop_at_their_io_budget() {
    use crate::fault_proxy::{Fault, FaultProxy, Op};
    let proxy = FaultProxy::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::s3_config(dir.path(), Some(&crate::support::unique_bucket("io-budget")), None);
    config.s3.endpoint_url = Some(proxy.endpoint());
    config.policy = Some(guest("hostile"));
    config.limits.host_io_ms = 1000;
    let coffer = Coffer::open(config).await.unwrap();
    proxy.always(Op::HeadObject, Fault::Delay(std::time::Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let err = coffer.put("slow-heads", Content::from_bytes("looked at", None).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("COFFER_POLICY_HOST_IO"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "stopped at the budget: {:?}", started.elapsed());
    assert!(coffer.list("slow-heads", None, 10).await.unwrap().is_empty());
}

/// More calls than instance slots wait for one: 200 concurrent puts
/// through a slow S3 server with 4 slots all succeed. With a short queue,
/// the calls beyond it fail at once as busy (retryable) and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_instance_slots_queue_and_beyond_the_queue_fail_as_busy() {
    use crate::fault_proxy::{Fault, FaultProxy, Op};
    let proxy = FaultProxy::start();
    let open = |instances: u32, queue: u32| {
        let endpoint = proxy.endpoint();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let mut config = crate::support::s3_config(dir.path(), Some(&crate::support::unique_bucket("queue")), None);
            config.s3.endpoint_url = Some(endpoint);
            config.limits.instances = instances;
            config.limits.queue = queue;
            // One organisation may hold every slot here: the engine's
            // slots and queue are what is tested.
            config.limits.instances_per_org = instances;
            (Coffer::open(config).await.unwrap(), dir)
        }
    };
    let put_all = |coffer: Coffer, n: u32| async move {
        let puts: Vec<_> = (0..n)
            .map(|i| {
                let c = coffer.clone();
                tokio::spawn(
                    async move { c.put("acme", Content::from_bytes(format!("object {i}"), None).unwrap()).await },
                )
            })
            .collect();
        let mut results = Vec::new();
        for p in puts {
            results.push(p.await.unwrap());
        }
        results
    };
    proxy.always(Op::PutObject, Fault::Delay(std::time::Duration::from_millis(40)));

    let (coffer, _dir) = open(4, 1024).await;
    let results = put_all(coffer.clone(), 200).await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    assert_eq!(coffer.list("acme", None, 1000).await.unwrap().len(), 200);

    let (coffer, _dir) = open(2, 4).await;
    // The organisation's namespaces asked for (and remembered) first: each
    // put below is then one policy call, holding its slot through its
    // upload, whenever its task gets to run.
    coffer.put("acme", Content::from_bytes("first", None).unwrap()).await.unwrap();
    proxy.always(Op::PutObject, Fault::Delay(std::time::Duration::from_millis(300)));
    let results = put_all(coffer.clone(), 30).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.is_retryable() && e.to_string().contains("busy") && e.to_string().contains("COFFER_POLICY_QUEUE")))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok + busy, 30, "{results:?}");
    assert!(busy > 0 && ok >= 6, "ok {ok}, busy {busy}");
    assert_eq!(coffer.list("acme", None, 1000).await.unwrap().len(), ok + 1, "the busy ones stored nothing");
}

/// Every import counts, and running out stops the call (a guest cannot
/// ignore the error and go on looping).
#[tokio::test]
async fn a_log_flood_or_a_loop_on_settings_is_stopped_by_the_host_call_budget() {
    let t = hostile().await;
    for org in ["log-flood", "setting-loop"] {
        let err = contained(&t, org).await;
        assert!(matches!(&err, Error::Policy(m) if m.contains("host calls") && m.contains("stopped")), "{org}: {err}");
    }
}

/// A policy's log line cannot pass for one of the host's: its line break
/// is escaped, inside a quoted field.
#[test]
fn a_policy_cannot_forge_host_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "forge").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(dir.path())
        .env_clear()
        .env("COFFER_POLICY", guest("hostile"))
        .env("COFFER_CACHE_DIR", "none")
        .env("COFFER_LOG", "coffer=debug")
        .args(["put", "--org", "log-forge"])
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("FORGED host line"), "the policy's line is logged: {stderr}");
    for line in stderr.lines() {
        assert!(!line.starts_with("2026-01-01T00:00:00.000000Z"), "a forged line: {line}");
    }
}

/// A put may reserve two locations (its place and a fallback), and names
/// are bounded before anything is done with them: refused with a short
/// message, nothing stored, the reservations released.
#[tokio::test]
async fn a_put_is_bounded_in_places_and_name_lengths() {
    let t = hostile().await;
    let err = contained(&t, "many-places").await;
    assert!(matches!(&err, Error::Denied(m) if m.contains("at most 2 locations")), "{err}");
    for org in ["long-name", "long-container"] {
        let err = contained(&t, org).await;
        assert!(matches!(&err, Error::InvalidName(m) if m.contains("at most") && m.len() < 200), "{org}: {err}");
    }
}
