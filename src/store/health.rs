//! The store's health as `/healthz` reports it, and which errors are faults
//! of the storage (the disk, the database server, the connection to it)
//! rather than of the request: those answer 503 `storage_unavailable`, and a
//! write that met one was not made.

use super::{Backend, Result, Store, StoreError};
use std::time::Duration;

/// How long a health probe may wait for its connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/healthz` says of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Reads answer (`Err` with the cause otherwise).
    pub database: std::result::Result<(), String>,
    /// A write can be made and committed (`Err` with the cause otherwise).
    pub storage: std::result::Result<(), String>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.database.is_ok() && self.storage.is_ok()
    }
}

impl Store {
    /// Probes reads and a committed write (SQLite: the database header's
    /// `user_version` written back unchanged, one page through the WAL;
    /// PostgreSQL: a transaction id assigned, which a read-only server
    /// refuses), each within [`PROBE_TIMEOUT`].
    pub async fn health(&self) -> Health {
        let database = bounded(self.ping()).await;
        let storage = bounded(self.write_probe()).await;
        Health { database, storage }
    }

    async fn write_probe(&self) -> Result<()> {
        use sqlx::Row;
        let mut tx = self.write.begin().await?;
        match self.backend {
            Backend::Sqlite => {
                let v: i64 = sqlx::query("PRAGMA user_version")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {v}")))
                    .execute(&mut *tx)
                    .await?;
            }
            Backend::Postgres => {
                sqlx::query("SELECT CAST(txid_current() AS BIGINT)")
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn bounded(probe: impl Future<Output = Result<()>>) -> std::result::Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// SQLite's primary result codes that mean the storage failed, not the
/// statement: BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
/// PROTOCOL, NOTADB.
const SQLITE_STORAGE_CODES: [i64; 9] = [5, 6, 8, 10, 11, 13, 14, 15, 26];

/// Whether an SQLite (extended) result code is a storage fault.
fn sqlite_storage_code(code: i64) -> bool {
    SQLITE_STORAGE_CODES.contains(&(code & 0xff))
}

/// Whether a PostgreSQL SQLSTATE is a fault of the server or the connection:
/// connection exceptions (08), insufficient resources (53), operator
/// intervention such as a shutdown (57), system errors (58), a read-only
/// transaction (25006), a server in recovery (also 57P03).
fn pg_storage_state(state: &str) -> bool {
    ["08", "53", "57", "58"]
        .iter()
        .any(|c| state.starts_with(c))
        || state == "25006"
}

impl StoreError {
    /// Whether the error is a fault of the storage rather than of the
    /// request (see the module doc).
    pub fn is_storage_fault(&self) -> bool {
        match self {
            StoreError::Db(e) => sqlx_storage_fault(e),
            StoreError::Lease(e) => e
                .sqlite_error()
                .is_some_and(|s| sqlite_storage_code(i64::from(s.extended_code))),
            StoreError::Unavailable(_) => true,
            _ => false,
        }
    }
}

fn sqlx_storage_fault(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => match code.parse::<i64>() {
                Ok(n) => sqlite_storage_code(n),
                Err(_) => pg_storage_state(&code),
            },
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_codes() {
        // SQLITE_IOERR_WRITE (778), SQLITE_READONLY_DBMOVED (1032), SQLITE_FULL.
        assert!(sqlite_storage_code(778) && sqlite_storage_code(1032) && sqlite_storage_code(13));
        // SQLITE_CONSTRAINT_UNIQUE (2067) is the request's fault.
        assert!(!sqlite_storage_code(2067));
        assert!(
            pg_storage_state("57P01") && pg_storage_state("08006") && pg_storage_state("25006")
        );
        assert!(!pg_storage_state("23505") && !pg_storage_state("40001"));
    }
}
