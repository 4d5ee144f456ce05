//! Transactions: SERIALIZABLE for every catalog change (see `mod.rs`),
//! commits whose outcome a lost connection leaves in doubt, and the
//! server's clock.

use deadpool_postgres::Transaction;
use tokio_postgres::IsolationLevel;

use crate::error::{Error, Result};
use crate::error::{PgTransient, pg_transient};

/// The server's clock, in whole seconds since the Unix epoch (the start
/// of the transaction).
pub(super) const NOW: &str = "floor(extract(epoch from now()))::bigint";

pub(super) async fn serializable<'c>(client: &'c mut deadpool_postgres::Object) -> Result<Transaction<'c>> {
    Ok(client.build_transaction().isolation_level(IsolationLevel::Serializable).start().await?)
}

/// Commit `tx`, whose repeat could not tell that it had been made: a
/// connection lost during the COMMIT leaves it in doubt, and that is said
/// (and not retried), never guessed.
pub(super) async fn commit_in_doubt(tx: Transaction<'_>, what: &str) -> Result<()> {
    tx.commit().await.map_err(|e| match pg_transient(&e) {
        Some(PgTransient::Connection) => Error::Backend {
            message: format!(
                "the connection was lost while {what} was committed, so it may or may not have been made ({e})"
            ),
            retryable: true,
            source: None,
        },
        _ => Error::from(e),
    })
}

/// The server's clock in `tx` (the start of the transaction).
pub(super) async fn now_in(tx: &Transaction<'_>) -> Result<u64> {
    let stmt = tx.prepare_cached(&format!("SELECT {NOW}")).await?;
    Ok(tx.query_one(&stmt, &[]).await?.get::<_, i64>(0) as u64)
}
