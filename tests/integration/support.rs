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
    let mut config = Config {
        database_url: Some(format!("sqlite:{}", dir.join("coffer.db").display())),
        ..Config::default()
    };
    for (k, v) in settings {
        config.settings.insert(k.to_string(), v.to_string());
    }
    config
}

pub async fn sqlite_coffer(settings: &[(&str, &str)]) -> TestCoffer {
    let dir = tempfile::tempdir().unwrap();
    let coffer = Coffer::open(sqlite_config(dir.path(), settings))
        .await
        .unwrap();
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
