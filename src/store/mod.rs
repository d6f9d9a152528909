//! The store: the only code in racklift that holds SQL.
//!
//! One code path serves both backends through sqlx's `Any` driver: SQLite (the
//! embedded default, WAL mode, one writer connection and a pool of readers,
//! plus the DHCP lease thread's own connection, see [`leases`]) and
//! PostgreSQL (one pool; several racklift processes may share the database). The
//! SQL is the common dialect of both (`$N` placeholders, `RETURNING`, partial
//! indexes); the schemas differ only in column types and live in
//! `migrations/sqlite` and `migrations/postgres`, run when the store opens.
//!
//! What is stored where (one file per kind of row, each adding its part of
//! `impl Store`):
//! - here: opening, the two backends' sessions, errors, the notifications
//!   (`events_written`, `work_ready`, the nodes epoch) and sealed passwords;
//! - [`nodes`]: enrolment (group-committed in [`enrol`]), reads and lists,
//!   the DHCP directory, changes and deletion;
//! - [`actions`]: operator actions and maintenance, persisting what
//!   [`crate::state`] decides;
//! - [`steps`]: each step's stages, leases, results, cleanups and the reaper;
//! - [`power`], [`events`], [`inventory`], [`profiles`] (assignments, CMDB and
//!   pools), [`discovered`] (machines enrolled at boot), [`tokens`] (API and
//!   agent tokens), [`leases`] (DHCP), [`health`].
//!
//! Invariants kept here:
//! - every change of a node bumps its `generation` and is guarded by it: a
//!   concurrent change gets [`StoreError::Conflict`], never a lost update;
//! - every change of a node appends an event row in the same transaction;
//! - a node's state changes only through [`crate::state::transition`];
//! - a node has at most one active step (a partial unique index enforces it).

mod actions;
pub mod discovered;
mod enrol;
mod events;
pub mod health;
mod inventory;
pub mod leases;
mod nodes;
mod power;
pub mod profiles;
mod steps;
pub mod tokens;

pub(crate) use actions::{Move, move_node};
pub use events::EventRow;
pub(crate) use events::insert_event;
pub use nodes::{DirectoryEntry, NodeFilter, NodeRecord};
use nodes::{join_macs, node_from_row};
pub use steps::{Phase, Stage, StageRecord, StageResult, Step, StepOutcome, StepStatus};
pub use tokens::{AgentAuth, AgentTokenError, ApiToken, DiscoveryAuth, Handout, Role};

use crate::config::PhaseTimeouts;
use crate::node::{
    BmcDriverKind, BmcInput, BmcView, FieldError, MacAddr, NewNode, Node, NodePatch, port_list,
    validate_bmc,
};
use crate::protocol::Fact;
use crate::secrets::SecretBox;
use crate::state::{Event, State, target_of, transition};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

/// What can go wrong in the store, each with what an operator needs to know.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Duplicate { field: String, message: String },
    #[error("'{action}' is not allowed in state '{state}'")]
    InvalidTransition {
        state: State,
        action: String,
        allowed: Vec<String>,
    },
    #[error("node is in maintenance ({reason}): turn maintenance off first")]
    Maintenance { reason: String },
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite's lease thread (see [`leases`]).
    #[error("database: {0}")]
    Lease(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    /// A file or task the store depends on failed (not the data itself).
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 text of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

macro_rules! node_cols {
    () => {
        "id, name, boot_mac, macs, bmc_driver, bmc_address, bmc_port, bmc_username, \
         bmc_password, bmc_verify_tls, state, target, generation, profile, role, last_error, \
         maintenance, maintenance_reason, power_state, created_at, updated_at, state_changed_at, \
         hostname, addresses"
    };
}
pub(crate) use node_cols;

/// The database handle shared by the whole server.
#[derive(Clone)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    secrets: SecretBox,
    timeouts: Arc<PhaseTimeouts>,
    /// Woken when an event is committed by this process.
    pub events_written: Arc<Notify>,
    /// Bumped after every local commit that changes what DHCP knows of a MAC
    /// (enrolment, a node's MACs or name, its deletion, its profile's
    /// addresses): the DHCP directory read before it is not used.
    nodes_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Woken when a step becomes due in this process.
    pub work_ready: Arc<Notify>,
    /// The enrolment writer (group commit).
    enrol: tokio::sync::mpsc::Sender<enrol::Pending>,
    /// SQLite only: the DHCP lease thread (see [`leases::spawn_thread`]).
    lease_thread: Option<tokio::sync::mpsc::Sender<leases::Queued>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.backend)
    }
}

/// Connection settings for SQLite: WAL, no fsync per commit (WAL stays durable
/// across a process crash), a generous busy timeout, foreign keys enforced.
fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        use sqlx::Executor;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = NORMAL").await?;
        conn.execute("PRAGMA busy_timeout = 10000").await?;
        conn.execute("PRAGMA foreign_keys = ON").await?;
        Ok(())
    })
}

/// The writer's connection settings: those of [`sqlite_pragmas`], then a
/// refusal of a connection SQLite could open only for reading (it does so
/// without a word when the file is not writable at that moment; such a
/// connection would fail every write after the file is writable again).
fn sqlite_writer_setup(
    conn: &mut sqlx::AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        use sqlx::Executor;
        sqlite_pragmas(conn, meta).await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        conn.execute("ROLLBACK").await?;
        Ok(())
    })
}

/// Run on every connection given back to a pool: a connection still inside a
/// transaction is closed (which ends the transaction) instead of being reused.
/// A COMMIT or ROLLBACK that fails (a disk error, a connection lost) leaves
/// the driver counting an open transaction, and every later `begin()` on that
/// connection would become a savepoint inside it, acknowledged and never
/// committed.
fn release_clean(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        use sqlx::Connection;
        // Runs a rollback the driver queued when a transaction was dropped.
        conn.ping().await?;
        if conn.is_in_transaction() {
            tracing::warn!("a database connection was left inside a transaction: closed");
            return Ok(false);
        }
        Ok(true)
    })
}

/// Every PostgreSQL session: a transaction left idle for a minute (its
/// client hung or lost) is ended by the server, so its row locks cannot hold
/// up the steps and nodes of everyone else.
fn postgres_session(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        use sqlx::Executor;
        conn.execute("SET idle_in_transaction_session_timeout = '60s'")
            .await?;
        Ok(())
    })
}

fn sqlite_url(url: &str) -> String {
    if url.contains('?') || url.contains(":memory:") {
        url.to_string()
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The SQLite `file:` URI of a `sqlite:` URL (same path, same parameters).
fn sqlite_uri(url: &str) -> String {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    format!("file:{}", sqlite_url(rest))
}

impl Store {
    /// Opens the database at `url`, creating it (SQLite) and running migrations.
    pub async fn open(
        url: &str,
        max_connections: u32,
        secrets: SecretBox,
        timeouts: PhaseTimeouts,
    ) -> Result<Store> {
        install_default_drivers();
        let (backend, read, write) = if url.starts_with("sqlite:") {
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p))
                .filter(|p| !p.is_empty() && !p.contains(":memory:"))
                && let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                crate::secrets::private_dir(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
                // SQLite gives its -wal and -shm files the database file's mode.
                let files = ["", "-wal", "-shm"]
                    .map(|end| std::path::PathBuf::from(format!("{path}{end}")));
                crate::secrets::private_files(&files).map_err(|e| {
                    StoreError::Unavailable(format!("cannot make {path} private: {e}"))
                })?;
                if !files[0].exists() {
                    crate::secrets::write_private(&files[0], b"").map_err(|e| {
                        StoreError::Unavailable(format!("cannot create {path}: {e}"))
                    })?;
                }
            }
            let url = sqlite_url(url);
            let pragmas = sqlite_pragmas;
            // One writer: SQLite serialises writes anyway. The lease thread's
            // connection is the only other writer; the busy timeout orders them.
            let write = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(sqlite_writer_setup)
                .after_release(release_clean)
                .connect(&url)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&write).await?;
            let read = AnyPoolOptions::new()
                .max_connections(max_connections)
                .after_connect(pragmas)
                .after_release(release_clean)
                .connect(&url)
                .await?;
            (Backend::Sqlite, read, write)
        } else {
            // A connection is waited for at most 10 s: when the server is
            // down, sqlx retries the connection until then, and a write
            // answers 503 after that wait rather than after half a minute.
            let pool = AnyPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(postgres_session)
                .after_release(release_clean)
                .connect(url)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            (Backend::Postgres, pool.clone(), pool)
        };
        let events_written = Arc::new(Notify::new());
        let enrol = enrol::spawn(write.clone(), events_written.clone());
        let lease_thread = match backend {
            Backend::Sqlite => Some(leases::spawn_thread(&sqlite_uri(url))?),
            Backend::Postgres => None,
        };
        Ok(Store {
            enrol,
            lease_thread,
            read,
            write,
            backend,
            secrets,
            timeouts: Arc::new(timeouts),
            events_written,
            nodes_epoch: Arc::default(),
            work_ready: Arc::new(Notify::new()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (used before exit).
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// Whether the database answers reads.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// The BMC password of a node, decrypted (for BMC drivers only).
    pub fn bmc_password(&self, rec: &NodeRecord) -> Result<Option<String>> {
        rec.bmc_password_sealed
            .as_deref()
            .map(|s| {
                self.secrets
                    .open(s)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    fn deadline_for(&self, phase: Phase, now: i64) -> i64 {
        let t = &self.timeouts;
        let d = match phase {
            Phase::Verify => t.verify,
            Phase::Inspect => t.inspect,
            Phase::Clean => t.clean,
            Phase::Deploy => t.deploy,
            Phase::Configure => t.configure,
        };
        now + d.as_millis() as i64
    }

    // ---------------------------------------------------------------- nodes

    pub(crate) fn nodes_changed(&self) {
        self.nodes_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn conflict(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "node '{name}' was changed by someone else meanwhile: reload it and try again"
    ))
}

/// A unique violation that slipped past the checks (a concurrent insert).
fn duplicate(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && d.is_unique_violation()
    {
        let what = format!("{} {}", d.message(), d.constraint().unwrap_or(""));
        let field = if what.contains("name") {
            "name"
        } else {
            "macs"
        };
        return StoreError::Duplicate {
            field: field.into(),
            message: format!("{field} is already used by another node"),
        };
    }
    StoreError::Db(e)
}

fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}
