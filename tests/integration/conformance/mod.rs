//! One conformance suite for the `BlobStore` trait, run against every
//! backend: the embedded SQLite database, PostgreSQL and S3 (on the real
//! test servers); and one for the `Catalog` trait, on SQLite and
//! PostgreSQL, alone and with two catalogs ("hosts") racing on one
//! database.

mod blobs;
mod catalog;
mod named;

use coffer::Digest;
use coffer::backend::{BackendKind, Location};
use coffer::catalog::{Pending, Record, Token};
use coffer::config::DatabaseUrl;
use coffer::db::postgres::PgDb;

/// A PostgreSQL database opened the way Coffer opens it (a pool of its own:
/// each call is another "host").
pub async fn open_pg(url: &str) -> std::sync::Arc<PgDb> {
    let Ok(DatabaseUrl::Postgres(url)) = DatabaseUrl::parse(url) else { panic!("not a PostgreSQL URL") };
    std::sync::Arc::new(PgDb::open(&url).await.unwrap())
}

fn location(container: &str, name: &str) -> Location {
    Location { backend: BackendKind::Database, container: container.into(), name: name.into() }
}

fn pending(org: &str, sha: Digest, at: &Location) -> Pending {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    Pending {
        token: Token::new(),
        org: org.into(),
        sha256: sha,
        size: 1,
        location: at.clone(),
        created_at: now,
        touched_at: now,
    }
}

fn record(org: &str, sha: Digest, at: &Location) -> Record {
    Record {
        org: org.into(),
        sha256: sha,
        size: 1,
        content_type: "x".into(),
        location: at.clone(),
        created_at: 1,
        parked: false,
    }
}
