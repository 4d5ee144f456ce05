//! The same contract tests for both shipped policies: the built-in Rust
//! one and the Python tiering one. Then what makes the tiering policy
//! different: small objects stay in the database, large ones go to S3
//! under a fan-out key, and retention blocks early deletion.

use coffer::backend::BackendKind;
use coffer::{Coffer, Config, Content, Error};

use crate::support::{data, s3_config, sqlite_config, tiering_policy, unique_bucket};

#[derive(Clone, Copy, Debug)]
enum Which {
    Default,
    Tiering,
}

fn with_policy(mut config: Config, which: Which) -> Config {
    if let Which::Tiering = which {
        config.policy = Some(tiering_policy());
    }
    config
}

async fn contract(which: Which) {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(
        dir.path(),
        &[("max-size", "100000"), ("allowed-content-types", "text/*, application/octet-stream")],
    );
    let coffer = Coffer::open(with_policy(config, which)).await.unwrap();

    // Round trip, de-duplication, listing.
    let bytes = data(50_000, 31);
    let first = coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    let again = coffer.put("acme", Content::from_bytes(bytes.clone(), None).unwrap()).await.unwrap();
    assert_eq!((first.deduplicated, again.deduplicated), (Some(false), Some(true)), "{which:?}");
    assert_eq!(first.key, again.key);
    assert!(coffer.get_bytes("acme", &first.sha256).await.unwrap() == bytes);
    assert_eq!(coffer.stat("acme", &first.sha256.to_string()).await.unwrap().size, 50_000);
    assert_eq!(coffer.list("acme", None, 10).await.unwrap().len(), 1);

    // Tenant rules from the settings.
    let big = coffer.put("acme", Content::from_bytes(vec![0u8; 100_001], None).unwrap()).await;
    assert!(matches!(big, Err(Error::Denied(_))), "{which:?}: {big:?}");
    let typed = coffer.put("acme", Content::from_bytes("x", Some("image/png")).unwrap()).await;
    assert!(matches!(typed, Err(Error::Denied(_))), "{which:?}: {typed:?}");
    coffer.put("acme", Content::from_bytes("x", Some("text/plain")).unwrap()).await.unwrap();

    // Another organisation sees nothing, whatever the policy.
    let key = first.sha256.to_string();
    assert!(matches!(coffer.get("globex", &key).await, Err(Error::NotFound(_))));
    assert!(coffer.list("globex", None, 10).await.unwrap().is_empty());

    // Naming without S3, deletion allowed by default.
    assert_eq!(coffer.container_name("acme").await.unwrap().1, "acme");
    coffer.delete("acme", &key).await.unwrap();
    assert!(matches!(coffer.stat("acme", &key).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn the_built_in_policy_passes_the_contract_tests() {
    contract(Which::Default).await;
}

#[tokio::test]
async fn the_python_tiering_policy_passes_the_contract_tests() {
    contract(Which::Tiering).await;
}

#[tokio::test]
async fn tiering_keeps_small_objects_in_the_database_and_sends_large_ones_to_s3() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("tiering");
    let mut config = s3_config(dir.path(), Some(&bucket), None);
    config.settings.insert("tier-threshold".into(), "10000".into());
    let coffer = Coffer::open(with_policy(config, Which::Tiering)).await.unwrap();
    let small = coffer.put("acme", Content::from_bytes(data(9_999, 32), None).unwrap()).await.unwrap();
    let large = coffer.put("acme", Content::from_bytes(data(10_000, 33), None).unwrap()).await.unwrap();
    assert_eq!(small.backend, BackendKind::Database);
    assert_eq!(large.backend, BackendKind::S3);
    let sha = large.sha256.to_string();
    assert_eq!(large.key, format!("acme/{}/{sha}", &sha[..2]), "fan-out key layout");
    assert_eq!(crate::support::objects_on_server(&bucket), vec![large.key.clone()]);
    assert!(coffer.get_bytes("acme", &large.sha256).await.unwrap() == data(10_000, 33));
    assert!(coffer.get_bytes("acme", &small.sha256).await.unwrap() == data(9_999, 32));
}

#[tokio::test]
async fn tiering_retention_refuses_early_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), &[("retention-days", "30")]);
    let coffer = Coffer::open(with_policy(config, Which::Tiering)).await.unwrap();
    let info = coffer.put("acme", Content::from_bytes("evidence", None).unwrap()).await.unwrap();
    let err = coffer.delete("acme", &info.sha256.to_string()).await.unwrap_err();
    assert!(matches!(&err, Error::Denied(m) if m.contains("retention") && m.contains("30")), "{err}");
    assert_eq!(coffer.get_bytes("acme", &info.sha256).await.unwrap(), "evidence");
}

#[tokio::test]
async fn tiering_refuses_bad_settings_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path(), &[("tier-threshold", "lots")]);
    let err = Coffer::open(with_policy(config, Which::Tiering)).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("tier-threshold")), "{err}");
}

/// `coffer policy check FILE`: (exit code, stdout, stderr).
fn policy_check(file: &std::path::Path) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(dir.path())
        .env_clear()
        .env("COFFER_CACHE_DIR", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache"))
        .args(["policy", "check"])
        .arg(file)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn policy_check_passes_both_shipped_policies_and_explains_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("default.wasm");
    std::fs::write(&default, coffer::policy::DEFAULT_POLICY).unwrap();
    for file in [default, tiering_policy()] {
        let (code, stdout, stderr) = policy_check(&file);
        assert_eq!(code, Some(0), "{}: {stderr}", file.display());
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(report["exports"].as_array().unwrap().iter().any(|e| e == "coffer:storage/policy@0.2.0"), "{report}");
        assert_eq!(report["steps"].as_array().unwrap().len(), 7);
    }
    let (code, _, stderr) = policy_check(&crate::sandbox::guest("other_version"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("implements coffer:storage/policy@0.1.0"), "{stderr}");
    // What a policy for the previous contract must change.
    for change in ["namespaces(org)", "check-config", "SHA-256", "only from `put`"] {
        assert!(stderr.contains(change), "{change}: {stderr}");
    }
    let (code, _, stderr) = policy_check(&crate::sandbox::guest("extra_import"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("does not provide"), "{stderr}");
}
