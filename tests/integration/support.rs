//! Shared helpers: a Coffer on a fresh SQLite file, test data.

use std::path::PathBuf;

use coffer::{Coffer, Config};

/// A Coffer on its own database in a temporary directory.
pub struct TestCoffer {
    pub coffer: Coffer,
    pub dir: tempfile::TempDir,
}

impl TestCoffer {
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("coffer.db")
    }

    /// Open the database directly, to look at (or damage) what is stored.
    pub fn raw_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db_path()).unwrap()
    }
}

/// The database-backed configuration for `dir`, with `settings` (policy
/// settings such as `max-size`) applied.
pub fn sqlite_config(dir: &std::path::Path, settings: &[(&str, &str)]) -> Config {
    let mut config =
        Config { database_url: Some(format!("sqlite:{}", dir.join("coffer.db").display())), ..Config::default() };
    for (k, v) in settings {
        config.settings.insert(k.to_string(), v.to_string());
    }
    config
}

pub async fn sqlite_coffer(settings: &[(&str, &str)]) -> TestCoffer {
    let dir = tempfile::tempdir().unwrap();
    let coffer = Coffer::open(sqlite_config(dir.path(), settings)).await.unwrap();
    TestCoffer { coffer, dir }
}

/// Deterministic, incompressible-looking test bytes.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A bucket name no other test uses.
pub fn unique_bucket(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{stem}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// All of a read's bytes, or its error.
pub async fn drain(mut stream: coffer::content::ByteStream) -> coffer::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// The configuration for S3 on the test server, with the catalog in `dir`.
pub fn s3_config(dir: &std::path::Path, bucket: Option<&str>, prefix: Option<&str>) -> Config {
    let server = crate::s3_server::server();
    let mut config = sqlite_config(dir, &[]);
    config.s3.access_key_id = Some(crate::s3_server::ACCESS_KEY.into());
    config.s3.secret_access_key = Some(crate::s3_server::SECRET_KEY.into());
    config.s3.endpoint_url = Some(server.endpoint());
    config.s3.bucket = bucket.map(str::to_string);
    if let Some(p) = prefix {
        config.s3.bucket_per_org = Some(true);
        config.s3.bucket_prefix = Some(p.to_string());
    }
    config
}

/// A Coffer on S3 (one bucket, `bucket`), its catalog in a temporary directory.
pub async fn s3_coffer(bucket: &str) -> TestCoffer {
    let dir = tempfile::tempdir().unwrap();
    let coffer = Coffer::open(s3_config(dir.path(), Some(bucket), None)).await.unwrap();
    TestCoffer { coffer, dir }
}

/// Files under `bucket` on the test server (s3s-fs keeps objects as files),
/// as paths relative to the bucket, skipping its bookkeeping files.
pub fn objects_on_server(bucket: &str) -> Vec<String> {
    let root = crate::s3_server::server().root.join(bucket);
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
                if !rel.starts_with('.') && !rel.contains("/.") {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    out
}

/// Lowercase hex SHA-256 of a file, read in pieces.
pub fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut hasher).unwrap();
    hex::encode(hasher.finalize())
}

/// The Python tiering policy (`policies/tiering-py`), built with
/// componentize-py into the test's scratch target directory once per
/// process, and compiled once (warming the host's in-process cache, so
/// each test's Coffer does not compile its 18 MB again).
pub fn tiering_policy() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
            let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiering.wasm");
            let status = std::process::Command::new("componentize-py")
                .current_dir(&root)
                .args(["-d", "wit", "-w", "policy-component", "componentize", "app", "-p", "policies/tiering-py", "-o"])
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("componentize-py builds the Python policy: pip install componentize-py==0.25.1 (.ci/run does)");
            assert!(status.success(), "componentize-py failed to build policies/tiering-py");
            let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-cache");
            let bytes = std::fs::read(&out).unwrap();
            let limits = coffer::config::PolicyLimits::default();
            coffer::policy::Policy::from_bytes(&bytes, "tiering", &limits, Some(&cache)).unwrap();
            out
        })
        .clone()
}
