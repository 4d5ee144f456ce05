//! Where the database is: `COFFER_DATABASE_URL`, an SQLite file (the
//! embedded default) or a PostgreSQL server (`pg_url.rs`).

use std::path::PathBuf;

use super::pg_url::PgUrl;
use crate::error::{Error, Result};

/// Default SQLite file, in the current directory.
pub const DEFAULT_DATABASE: &str = "coffer.db";

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (its `Debug` never shows the password).
    Postgres(Box<PgUrl>),
}

impl DatabaseUrl {
    /// Parse `sqlite:PATH`, `sqlite://PATH`, a plain path, or a
    /// `postgres://` / `postgresql://` URL.
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::Config("COFFER_DATABASE_URL is empty".into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(Box::new(PgUrl::parse(url)?)));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(Error::Config(format!(
                "COFFER_DATABASE_URL: unknown scheme {scheme:?}; use sqlite:PATH or postgres://USER:PASSWORD@HOST/DB"
            )));
        }
        if is_in_memory(path) {
            return Err(Error::Config(format!(
                "COFFER_DATABASE_URL {url:?} is an in-memory database (:memory:), which every connection sees as a \
                 different, empty database and which loses everything on exit: give a file, e.g. sqlite:coffer.db"
            )));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }
}

/// Whether `path` names an in-memory SQLite database, which every
/// connection would see as a different, empty one.
pub fn is_in_memory(path: &str) -> bool {
    path == ":memory:" || path.is_empty() || (path.starts_with("file:") && path.contains("mode=memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(DatabaseUrl::parse("sqlite:/x/y.db").unwrap(), DatabaseUrl::Sqlite("/x/y.db".into()));
        assert_eq!(DatabaseUrl::parse("sqlite:///x/y.db").unwrap(), DatabaseUrl::Sqlite("/x/y.db".into()));
        assert_eq!(DatabaseUrl::parse("rel.db").unwrap(), DatabaseUrl::Sqlite("rel.db".into()));
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(matches!(DatabaseUrl::parse("postgresql://u@h/db"), Ok(DatabaseUrl::Postgres(_))));
        assert!(matches!(DatabaseUrl::parse("postgres://h/db"), Err(Error::Config(m)) if m.contains("no user")));
        for memory in ["sqlite::memory:", ":memory:", "sqlite:file::memory:?mode=memory"] {
            assert!(matches!(DatabaseUrl::parse(memory), Err(Error::Config(m)) if m.contains(":memory:")), "{memory}");
        }
    }
}
