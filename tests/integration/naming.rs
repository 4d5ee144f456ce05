//! Bucket naming through the compiled default policy, as operators see
//! it: `coffer bucket-name` / `Coffer::container_name`, which contact no
//! backend, and start-up refusal of bad bucket settings.

use coffer::{Coffer, Error};

use crate::support::s3_config;

async fn per_org(prefix: &str, mapping: bool) -> Coffer {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = s3_config(&dir, None, Some(prefix));
    if mapping {
        config.settings.insert("name-mapping".into(), "true".into());
    }
    Coffer::open(config).await.unwrap()
}

#[tokio::test]
async fn openkat_naming_prefix_plus_org() {
    let coffer = per_org("cyn-", false).await;
    for (org, bucket) in [("org", "cyn-org"), ("org2", "cyn-org2"), ("a.b-c", "cyn-a.b-c")] {
        let (backend, name) = coffer.container_name(org).await.unwrap();
        assert_eq!(backend, coffer::backend::BackendKind::S3);
        assert_eq!(name, bucket);
    }
}

/// Every AWS rule, through the guest: organisation, and the words the
/// refusal must contain.
#[tokio::test]
async fn every_aws_rule_is_enforced_by_the_compiled_policy() {
    let coffer = per_org("b", false).await;
    let long = "o".repeat(63);
    let refused: &[(&str, &str)] = &[
        ("Upper", "lowercase"),
        ("under_score", "lowercase"),
        ("ünïcode", "lowercase"),
        (&long, "at most 63"),
        ("x-", "begin and end"),
        ("x.", "begin and end"),
        ("a..b", "adjacent periods"),
        ("x-s3alias", "reserved suffix"),
        ("x--ol-s3", "reserved suffix"),
        ("x.mrap", "reserved suffix"),
        ("x--x-s3", "reserved suffix"),
        ("x--table-s3", "reserved suffix"),
    ];
    for (org, words) in refused {
        let err = coffer.container_name(org).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidName(m) if m.contains(words) && m.contains(org)), "{org}: {err}");
    }
    // Reserved prefixes and the short-name rule need an empty prefix.
    let bare = per_org("", false).await;
    for (org, words) in [
        ("xn--abc", "reserved prefix"),
        ("sthree-x", "reserved prefix"),
        ("amzn-s3-demo-x", "reserved prefix"),
        ("ab", "at least 3"),
        ("192.168.5.4", "IP address"),
    ] {
        let err = bare.container_name(org).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidName(m) if m.contains(words)), "{org}: {err}");
    }
    for ok in ["abc", "a-b.c", "123", &"a".repeat(63)] {
        assert_eq!(bare.container_name(ok).await.unwrap().1, ok);
    }
}

#[tokio::test]
async fn mapping_gives_valid_deterministic_distinct_names() {
    let coffer = per_org("cyn-", true).await;
    let again = per_org("cyn-", true).await;
    let mut seen = std::collections::HashMap::new();
    for org in ["org", "Org", "ORG", "my_org", "my-org", "My Org", "ünïcode", "日本語", &"L".repeat(100), "x--ol-s3"]
    {
        let (_, name) = coffer.container_name(org).await.unwrap();
        assert_eq!(again.container_name(org).await.unwrap().1, name, "deterministic for {org}");
        assert!(
            (3..=63).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{name}"
        );
        if let Some(other) = seen.insert(name.clone(), org.to_string()) {
            panic!("{other:?} and {org:?} both map to {name}");
        }
    }
    assert_eq!(coffer.container_name("org").await.unwrap().1, "cyn-org", "valid names are kept");
}

#[tokio::test]
async fn bad_bucket_settings_are_refused_at_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (bucket, prefix, words) in [
        (Some("My_Bucket"), None, "S3_BUCKET"),
        (Some("ab"), None, "S3_BUCKET"),
        (Some("192.168.1.1"), None, "IP address"),
        (None, Some("Cyn_"), "S3_BUCKET_PREFIX"),
        (None, Some("xn--"), "reserved prefix"),
    ] {
        let err = Coffer::open(s3_config(dir.path(), bucket, prefix)).await.unwrap_err();
        assert!(matches!(&err, Error::Config(m) if m.contains(words)), "{bucket:?} {prefix:?}: {err}");
    }
}

/// `coffer bucket-name --org ORG` with per-organisation buckets and an
/// endpoint where nothing listens: bucket-name must not try to reach it.
fn bucket_name(dir: &std::path::Path, org: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .current_dir(dir)
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("BUCKET_PER_ORG", "true")
        .env("S3_BUCKET_PREFIX", "cyn-")
        .args(["bucket-name", "--org", org])
        .output()
        .unwrap()
}

#[test]
fn bucket_name_on_the_command_line_needs_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = bucket_name(dir.path(), "org");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bucket"], "cyn-org");
    let refused = bucket_name(dir.path(), "My_Org");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("name-mapping"));
}
