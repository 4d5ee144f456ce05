//! Start-up checks: a bad configuration or policy component is refused when
//! Coffer opens, with a message that says what is wrong.

use coffer::{Coffer, Error};

use crate::support::sqlite_config;

async fn open_with_policy(bytes: &[u8]) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    std::fs::write(&path, bytes).unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(path);
    Coffer::open(config).await.unwrap_err()
}

#[tokio::test]
async fn a_missing_policy_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(dir.path().join("nope.wasm"));
    let err = Coffer::open(config).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("COFFER_POLICY") && m.contains("nope.wasm")), "{err}");
}

#[tokio::test]
async fn garbage_is_not_a_policy_component() {
    let err = open_with_policy(b"this is not wasm at all").await;
    assert!(matches!(&err, Error::Config(m) if m.contains("not a valid WebAssembly component")), "{err}");
}

#[tokio::test]
async fn a_core_module_is_told_to_become_a_component() {
    // The smallest valid core module: magic and version 1.
    let err = open_with_policy(b"\0asm\x01\0\0\0").await;
    assert!(matches!(&err, Error::Config(m) if m.contains("core WebAssembly module")), "{err}");
}

#[tokio::test]
async fn the_built_in_policy_is_used_when_none_is_given_and_can_be_given_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.wasm");
    std::fs::write(&path, coffer::policy::DEFAULT_POLICY).unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.policy = Some(path);
    let coffer = Coffer::open(config).await.unwrap();
    coffer.put("acme", coffer::Content::from_bytes("x", None).unwrap()).await.unwrap();
}

#[tokio::test]
async fn bad_policy_settings_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let err = Coffer::open(sqlite_config(dir.path(), &[("max-size", "ten")])).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("max-size")), "{err}");
    let err = Coffer::open(sqlite_config(dir.path(), &[("allow-delete", "perhaps")])).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("allow-delete")), "{err}");
}

#[tokio::test]
async fn an_unreadable_database_location_is_a_clear_error() {
    let config =
        coffer::Config { database_url: Some("sqlite:/nonexistent-dir/sub/coffer.db".into()), ..Default::default() };
    let err = Coffer::open(config).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/sub/coffer.db"), "{err}");
}

/// Every tenant's settings are checked when Coffer opens, and the error
/// names the tenant and the setting.
#[tokio::test]
async fn a_bad_tenant_setting_stops_coffer_at_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path(), &[]);
    config.tenants.insert("acme".into(), [("max-size".to_string(), "ten".to_string())].into());
    let err = Coffer::open(config).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("tenants.acme") && m.contains("max-size")), "{err}");

    // A tenant whose name cannot have a bucket, configured with a bucket
    // per organisation and no name mapping, is refused at start-up too.
    let mut config = crate::support::s3_config(dir.path(), None, Some("cyn-"));
    config.tenants.insert("My_Org".into(), Default::default());
    let err = Coffer::open(config).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidName(m) if m.contains("My_Org")), "{err}");
}
