//! Bounded fuzzing of what comes from outside: `Range` headers, digests,
//! organisation and object names, `Authorization` headers, configuration
//! files, and batch-read bodies sent to a real server. Each property runs
//! `COFFER_FUZZ_CASES` cases (a short pass by default; a long run is
//! `COFFER_FUZZ_CASES=100000 cargo test --workspace fuzz`), and nothing is
//! written into the repository (no failure persistence).

use std::time::Duration;

use coffer::catalog::named::{MAX_NAME_LEN, validate_name};
use coffer::config::{Scope, ServerSettings, TokenSettings};
use coffer::org::{MAX_ORG_LEN, validate_org};
use coffer::server::auth::{Caller, Tokens, token_hash};
use coffer::server::body::parse_range;
use coffer::{Config, Content, Digest, Error};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseResult, TestRunner};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;

use crate::http::TestServer;
use crate::support::{data, sqlite_config};

/// Cases per property: `COFFER_FUZZ_CASES` when set (a long run), else
/// `default` (CI's short pass).
fn cases(default: u32) -> u32 {
    std::env::var("COFFER_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// `cases` cases, and no failure files written into the repository.
fn bounded(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any text, control characters and all, up to `max` characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(|chars| chars.into_iter().collect::<String>())
}

proptest! {
    #![proptest_config(bounded(cases(256)))]

    /// Any `Range` header over any size: no panic, and a range it gives
    /// is a `bytes=` range lying inside the object.
    #[test]
    fn fuzz_range_headers_never_panic_and_stay_inside_the_object(
        header in prop_oneof![
            text(64),
            "[ ]{0,2}(bytes|BYTES|items)?=?[ ]{0,2}[-+0-9 ,]{0,30}",
            "bytes=[0-9]{0,25}-[0-9]{0,25}",
            "bytes=-?[0-9]{0,3}(,[0-9]{0,3}-[0-9]{0,3})?",
        ],
        size in prop_oneof![Just(0u64), 1u64..1000, any::<u64>()],
    ) {
        if let Ok(Some((start, end))) = parse_range(&header, size) {
            prop_assert!(start <= end && end < size, "{:?} over {} bytes gave {}-{}", header, size, start, end);
            prop_assert!(header.trim().starts_with("bytes="), "{:?} gave a range", header);
        }
    }

    /// Well-formed `bytes=first-last`, `bytes=first-` and `bytes=-suffix`
    /// as RFC 9110 (14.1.2) reads them, as the unit test `ranges` pins
    /// down: the last byte is cut to the object's, a range starting past
    /// the end, running backwards or asking for an empty suffix is
    /// unsatisfiable, and several ranges are answered with the whole object.
    #[test]
    fn fuzz_well_formed_byte_ranges_follow_rfc_9110(
        first in prop_oneof![0u64..3000, any::<u64>()],
        last in prop_oneof![0u64..3000, any::<u64>()],
        size in prop_oneof![0u64..2000, any::<u64>()],
    ) {
        let want = if first <= last && first < size { Ok(Some((first, last.min(size - 1)))) } else { Err(()) };
        prop_assert_eq!(parse_range(&format!("bytes={}-{}", first, last), size), want);
        let want = if first < size { Ok(Some((first, size - 1))) } else { Err(()) };
        prop_assert_eq!(parse_range(&format!("bytes={}-", first), size), want);
        let want = if last > 0 && size > 0 { Ok(Some((size.saturating_sub(last), size - 1))) } else { Err(()) };
        prop_assert_eq!(parse_range(&format!("bytes=-{}", last), size), want);
        prop_assert_eq!(parse_range(&format!("bytes={}-{},{}-", first, last, first), size), Ok(None));
    }

    /// Any text as a digest: no panic, accepted exactly when it is 64
    /// lowercase hex digits (anything else an invalid name), and shown
    /// back unchanged.
    #[test]
    fn fuzz_digests_parse_only_canonical_hex(
        input in prop_oneof![text(80), "[0-9a-f]{64}", "[0-9a-fA-F]{62,66}", "[0-9a-f]{64}[ \n/.]?"],
    ) {
        let canonical = input.len() == 64 && input.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match input.parse::<Digest>() {
            Ok(digest) => {
                prop_assert!(canonical, "{:?} was accepted", input);
                prop_assert_eq!(&digest.to_string(), &input);
            }
            Err(e) => prop_assert!(!canonical && matches!(e, Error::InvalidName(_)), "{:?}: {}", input, e),
        }
    }

    /// Every digest round-trips through its text, which is 64 lowercase
    /// hex digits.
    #[test]
    fn fuzz_every_digest_round_trips_through_its_text(raw in any::<[u8; 32]>()) {
        let digest = Digest::from_raw(raw);
        let shown = digest.to_string();
        prop_assert!(shown.len() == 64 && shown.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{}", shown);
        prop_assert_eq!(shown.parse::<Digest>().ok(), Some(digest));
    }

    /// Any organisation identifier: no panic, and accepted exactly under
    /// the documented rules (1 to 128 bytes, no '/', no control character,
    /// no surrounding white space, not "." or ".."); a refusal is an
    /// invalid name.
    #[test]
    fn fuzz_organisation_identifiers_follow_their_rules(
        org in prop_oneof![text(40), text(200), "[ ./a]{0,3}", "[a-z]{127,129}", "\\PC{120,135}"],
    ) {
        let valid = !org.is_empty()
            && org.len() <= MAX_ORG_LEN
            && !org.contains('/')
            && !org.chars().any(char::is_control)
            && org.trim() == org
            && org != "."
            && org != "..";
        match validate_org(&org) {
            Ok(()) => prop_assert!(valid, "{:?} was accepted", org),
            Err(Error::InvalidName(m)) => prop_assert!(!valid && m.contains("organisation"), "{:?}: {}", org, m),
            Err(e) => prop_assert!(false, "{:?}: not an invalid name: {}", org, e),
        }
    }

    /// Any container or object name: no panic, and accepted exactly when
    /// it is 1 to 1024 bytes without a control character; a refusal is an
    /// invalid name saying which kind of name.
    #[test]
    fn fuzz_container_and_object_names_follow_their_rules(
        name in prop_oneof![text(40), text(1100), "[a-z]{1023,1025}", "\\PC{1020,1030}"],
        object in any::<bool>(),
    ) {
        let what = if object { "object" } else { "container" };
        let valid = !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control);
        match validate_name(what, &name) {
            Ok(()) => prop_assert!(valid, "{:?} was accepted", name),
            Err(Error::InvalidName(m)) => prop_assert!(!valid && m.starts_with(what), "{:?}: {}", name, m),
            Err(e) => prop_assert!(false, "{:?}: not an invalid name: {}", name, e),
        }
    }
}

/// The token [`tokens`] configures for organisation acme (scope read).
const TOKEN: &str = "coffer_fuzz-acme-token";
/// The admin token [`tokens`] configures.
const ADMIN: &str = "coffer_fuzz-admin-token";

/// [`TOKEN`] for acme and [`ADMIN`], as `coffer serve` holds them.
fn tokens() -> Tokens {
    let settings = ServerSettings {
        tokens: vec![TokenSettings {
            name: "acme".into(),
            org: "acme".into(),
            sha256: token_hash(TOKEN),
            scopes: vec![Scope::Read],
        }],
        admin_token_sha256: Some(token_hash(ADMIN)),
        ..ServerSettings::default()
    };
    settings.validate().unwrap();
    Tokens::new(&settings)
}

/// `Authorization` values: arbitrary bytes, and a scheme, white space and
/// a token (the real ones, near misses, anything) put together.
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    let scheme = proptest::sample::select(vec!["Bearer ", "bearer ", "BEARER ", "Bearer", "Bearer  ", "Basic ", ""]);
    let token = prop_oneof![
        Just(TOKEN.to_string()),
        Just(ADMIN.to_string()),
        Just(TOKEN[1..].to_string()),
        Just(TOKEN.to_string() + "x"),
        Just(TOKEN.to_uppercase()),
        Just([TOKEN, ADMIN].join(" ")),
        "[ -~]{0,60}",
        text(30),
    ];
    let pad = "[ \t]{0,2}";
    let built = (scheme, pad, token, pad)
        .prop_map(|(scheme, before, token, after)| format!("{scheme}{before}{token}{after}").into_bytes());
    prop_oneof![3 => built, 1 => proptest::collection::vec(any::<u8>(), 0..80)]
}

proptest! {
    #![proptest_config(bounded(cases(256)))]

    /// Any `Authorization` header: no panic, and a caller only for a
    /// `Bearer` header whose token is a configured one (the organisation's
    /// for its organisation, the admin's as admin); anything else 401.
    #[test]
    fn fuzz_authorization_headers_authenticate_only_configured_tokens(value in authorization()) {
        // What the header can carry at all (no NUL, no line breaks, …).
        let Ok(value) = HeaderValue::from_bytes(&value) else { return Ok(()) };
        let presented = value
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.clone());
        match tokens().caller(&headers) {
            Ok(Caller::Org { org, .. }) => {
                prop_assert!(presented == Some(TOKEN) && org == "acme", "{:?} authenticated for {}", value, org)
            }
            Ok(Caller::Admin) => prop_assert!(presented == Some(ADMIN), "{:?} authenticated as admin", value),
            Ok(Caller::Open) => prop_assert!(false, "{:?}: open although tokens are configured", value),
            Err(e) => {
                prop_assert_eq!(e.status.as_u16(), 401);
                prop_assert!(presented != Some(TOKEN) && presented != Some(ADMIN), "{:?} was refused", value);
            }
        }
    }
}

/// Keys of the configuration file's tables, as they are spelt.
const CONFIG_KEYS: &[&str] = &[
    "database_url",
    "policy",
    "cache_dir",
    "delete_timeout",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "endpoint_url",
    "region",
    "bucket",
    "bucket_per_org",
    "bucket_prefix",
    "virtual_hosted",
    "create_buckets",
    "multipart_threshold",
    "part_size",
    "timeout",
    "listen",
    "admin_token_sha256",
    "tokens",
    "max_body",
    "max_in_flight",
    "max_connections",
    "max_in_flight_per_org",
    "min_rate",
    "request_timeout",
    "idle_timeout",
    "shutdown_grace",
    "spool_dir",
    "spool_limit",
    "name",
    "org",
    "sha256",
    "scopes",
    "fuel",
    "memory",
    "host_calls",
    "timeout_ms",
    "instances",
    "queue",
    "instances_per_org",
    "cpu_share_percent",
    "host_io_ms",
    "max-size",
    "name-mapping",
    "allow-delete",
    "allowed-content-types",
];

/// TOML-ish text: the file's tables and keys with values of every type,
/// unknown keys, and lines of anything.
fn toml_text() -> impl Strategy<Value = String> {
    let table = proptest::sample::select(vec![
        "[s3]",
        "[server]",
        "[[server.tokens]]",
        "[server.tokens]",
        "[limits]",
        "[settings]",
        "[tenants]",
        "[tenants.acme]",
        "[[s3]]",
        "[]",
    ])
    .prop_map(String::from);
    let key = prop_oneof![
        4 => proptest::sample::select(CONFIG_KEYS).prop_map(String::from),
        1 => "[a-z_.-]{1,12}",
        1 => "\"\\PC{0,10}\"",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9]{1,25}",
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[a-zA-Z0-9:/._ -]{0,30}\"",
        "\"[0-9a-f]{64}\"",
        any::<String>().prop_map(|s| format!("{s:?}")),
        proptest::sample::select(vec![
            "[\"read\"]",
            "[\"read\", \"write\", \"delete\", \"link\"]",
            "[\"admin\"]",
            "[]",
            "{}",
            "{ x = 1 }",
            "1.5",
            "-0",
            "nan",
            "inf",
            "1979-05-27T07:32:00Z",
            "'''\nmany\nlines\n'''",
            "\"\"\"",
            "\"sqlite::memory:\"",
            "\"postgres://user:password@host:5432/db?sslmode=require\"",
        ])
        .prop_map(String::from),
        "\\PC{0,20}",
    ];
    let line = prop_oneof![
        2 => table,
        6 => (key, value).prop_map(|(key, value)| format!("{key} = {value}")),
        1 => "\\PC{0,40}",
        1 => text(40),
    ];
    proptest::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(bounded(cases(256)))]

    /// Any TOML-ish configuration file: no panic, read as a configuration
    /// (which validates without panicking) or refused as a configuration
    /// error naming the file.
    #[test]
    fn fuzz_config_files_load_or_fail_as_config_errors(text in toml_text()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coffer.toml");
        std::fs::write(&path, &text).unwrap();
        match Config::from_file(&path) {
            Ok(config) => {
                let _ = config.validate();
            }
            Err(Error::Config(m)) => prop_assert!(m.contains("coffer.toml"), "{:?}: {}", text, m),
            Err(e) => prop_assert!(false, "{:?}: not a configuration error: {}", text, e),
        }
    }

    /// Whatever follows a secret in the file, an error about the file
    /// never quotes the secret (toml's own messages print the offending
    /// line, serde's the offending value).
    #[test]
    fn fuzz_config_file_errors_never_quote_a_secret(rest in toml_text(), secret in "[A-Za-z0-9]{16}") {
        let secret = format!("TOPSECRET{secret}");
        let text = format!("[s3]\nsecret_access_key = \"{secret}\"\n{rest}\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coffer.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = Config::from_file(&path) {
            let shown = e.to_string();
            prop_assert!(!shown.contains(&secret), "{:?}: {}", text, shown);
        }
    }
}

/// A runtime for the properties over HTTP: proptest's cases are
/// synchronous, so each one `block_on`s its request, and the server's
/// tasks run on the workers in between.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(20).prop_map(Value::String),
        "[0-9a-f]{64}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(prop_oneof![Just("sha256".to_string()), "[a-z0-9_]{0,10}"], inner, 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Batch-read bodies: requests of the right shape whose digests are
/// stored, unknown, malformed or repeated (and one over the limit of
/// 1000), arbitrary JSON, arbitrary text and arbitrary bytes.
fn batch_bodies(stored: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let too_many = serde_json::json!({ "sha256": vec![stored[0].clone(); 1001] }).to_string().into_bytes();
    let digest = prop_oneof![
        3 => proptest::sample::select(stored),
        1 => "[0-9a-f]{64}",
        1 => "[0-9a-fA-F]{0,70}",
        1 => text(80),
        1 => "(\\.\\./)+[a-z/]{0,20}",
    ];
    let shaped = proptest::collection::vec(digest, 0..24)
        .prop_map(|digests| serde_json::json!({ "sha256": digests }).to_string().into_bytes());
    prop_oneof![
        6 => shaped,
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => text(200).prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => Just(too_many),
    ]
}

/// The failure of one case, saying what broke.
fn broke(what: String) -> TestCaseError {
    TestCaseError::fail(what)
}

/// Send one batch read and check its answer: 200 with a tar of the
/// manifest and then each object it lists, intact, or 4xx with a JSON
/// error; never a 5xx, never a broken or endless answer.
async fn batch_answer(client: &reqwest::Client, url: &str, body: Vec<u8>, stored: &[String]) -> TestCaseResult {
    let sent = String::from_utf8_lossy(&body).chars().take(300).collect::<String>();
    let r = client.post(url).body(body).send().await.map_err(|e| broke(format!("{sent:?}: no answer: {e}")))?;
    let status = r.status();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = r.bytes().await.map_err(|e| broke(format!("{sent:?}: {status}: the answer broke off: {e}")))?;
    let answer = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).to_string();
    prop_assert!(status.as_u16() == 200 || status.is_client_error(), "{:?}: {}: {}", sent, status, answer);
    if status.is_client_error() {
        let error: Value =
            serde_json::from_slice(&bytes).map_err(|_| broke(format!("{sent:?}: {status}: not JSON: {answer}")))?;
        prop_assert!(error["error"].is_string() && error["message"].is_string(), "{:?}: {}: {}", sent, status, error);
        return Ok(());
    }
    prop_assert_eq!(content_type.as_str(), "application/x-tar");
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(&bytes[..]);
    for entry in archive.entries().map_err(|e| broke(format!("{sent:?}: not a tar: {e}")))? {
        let mut entry = entry.map_err(|e| broke(format!("{sent:?}: a tar entry: {e}")))?;
        let name = entry
            .path()
            .map(|path| path.to_string_lossy().to_string())
            .map_err(|e| broke(format!("{sent:?}: a tar entry's name: {e}")))?;
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content)
            .map_err(|e| broke(format!("{sent:?}: tar entry {name}: {e}")))?;
        entries.push((name, content));
    }
    prop_assert!(!entries.is_empty() && entries[0].0 == "manifest.json", "{:?}: no manifest first", sent);
    let manifest: Value =
        serde_json::from_slice(&entries[0].1).map_err(|e| broke(format!("{sent:?}: the manifest: {e}")))?;
    let objects = manifest["objects"].as_array().cloned().unwrap_or_default();
    let errors = manifest["errors"].as_array().cloned().unwrap_or_default();
    prop_assert!(manifest["objects"].is_array() && manifest["errors"].is_array(), "{:?}: {}", sent, manifest);
    prop_assert!(errors.iter().all(|e| e["error"].is_string() && e["sha256"].is_string()), "{:?}: {}", sent, manifest);
    prop_assert_eq!(objects.len() + 1, entries.len(), "{:?}: {}", sent, manifest);
    for (object, (name, content)) in objects.iter().zip(&entries[1..]) {
        let sha = object["sha256"].as_str().unwrap_or_default();
        prop_assert!(stored.iter().any(|s| s.as_str() == sha) && name.as_str() == sha, "{:?}: {}", sent, manifest);
        prop_assert_eq!(Digest::of(content).to_string(), sha.to_string(), "{:?}: entry {}", sent, name);
    }
    Ok(())
}

/// Batch reads with any body are answered 200 with a tar (the manifest,
/// then each object it lists, intact) or 4xx with a JSON error: never a
/// 5xx, never a hang (30 s per request at most).
#[test]
fn fuzz_batch_reads_answer_a_tar_or_a_json_error() {
    let rt = runtime();
    let (server, stored, client) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = sqlite_config(dir.path(), &[]);
        let server = TestServer::start(dir, config).await;
        let mut stored = Vec::new();
        for (seed, len) in [0usize, 5, 700, 5000].into_iter().enumerate() {
            let content = Content::from_bytes(data(len, seed as u8), None).unwrap();
            stored.push(server.coffer.put("acme", content).await.unwrap().sha256.to_string());
        }
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        (server, stored, client)
    });
    let url = format!("{}/v1/orgs/acme/batch-read", server.url);
    let mut runner = TestRunner::new(ProptestConfig { max_shrink_iters: 64, ..bounded(cases(32)) });
    let result =
        runner.run(&batch_bodies(stored.clone()), |body| rt.block_on(batch_answer(&client, &url, body, &stored)));
    rt.block_on(async move {
        drop(client);
        drop(server);
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
}
