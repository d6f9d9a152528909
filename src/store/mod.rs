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
//! Invariants kept here:
//! - every change of a node bumps its `generation` and is guarded by it: a
//!   concurrent change gets [`StoreError::Conflict`], never a lost update;
//! - every change of a node appends an event row in the same transaction;
//! - a node's state changes only through [`crate::state::transition`];
//! - a node has at most one active step (a partial unique index enforces it).

pub mod discovered;
mod enrol;
pub mod health;
pub mod leases;
pub mod profiles;
mod steps;
pub mod tokens;

pub use steps::{Phase, Stage, StageRecord, StageResult, Step, StepOutcome, StepStatus};
pub use tokens::{AgentAuth, AgentTokenError, ApiToken, DiscoveryAuth, Handout, Role};

use crate::config::PhaseTimeouts;
use crate::node::{
    BmcDriverKind, BmcInput, BmcView, FieldError, MacAddr, NewNode, Node, NodePatch, port_list,
    validate_bmc,
};
use crate::profiles::matcher::Fact;
use crate::secrets::SecretBox;
use crate::state::{Event, State, transition};
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

/// A row of a node's history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventRow {
    pub id: i64,
    #[schema(value_type = String, format = Uuid)]
    pub node_id: Uuid,
    /// `created`, `updated`, `deleted`, `state`, `maintenance`, `step`, `agent`.
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub action: Option<String>,
    pub actor: String,
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub at: String,
    /// How many times it happened (repeats of the same event, such as a
    /// machine asking for its boot script again, are counted here).
    pub repeats: i64,
    /// When it last happened, if more than once.
    pub last_at: Option<String>,
}

/// Filters of `GET /v1/nodes`.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub state: Option<State>,
    pub profile: Option<String>,
    pub maintenance: Option<bool>,
    /// Return names after this one (keyset pagination).
    pub after: Option<String>,
    pub limit: i64,
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

/// One enrolled MAC as the DHCP server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub mac: MacAddr,
    pub node_id: Uuid,
    /// Its hostname, else its name.
    pub hostname: String,
    /// Its assigned addresses, as stored (one per network).
    pub addresses: Vec<String>,
}

/// What [`Store::dhcp_directory`] reads, one row per port.
macro_rules! directory_sql {
    () => {
        "SELECT p.mac AS mac, n.id AS id, n.name AS name, n.hostname AS hostname, \
         n.addresses AS addresses FROM ports p JOIN nodes n ON n.id = p.node_id"
    };
}

fn directory_entry(r: &sqlx::any::AnyRow) -> Result<DirectoryEntry> {
    let mac: String = r.try_get("mac")?;
    let id: String = r.try_get("id")?;
    let hostname: Option<String> = r.try_get("hostname")?;
    let addresses: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&r.try_get::<String, _>("addresses")?)
            .map_err(|e| corrupt("addresses", e))?;
    Ok(DirectoryEntry {
        mac: mac.parse().map_err(|e| corrupt("ports.mac", e))?,
        node_id: Uuid::parse_str(&id).map_err(|e| corrupt("nodes.id", e))?,
        hostname: hostname.unwrap_or(r.try_get("name")?),
        addresses: addresses.into_values().collect(),
    })
}

/// A node row as stored, the sealed BMC password included.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub node: Node,
    pub bmc_password_sealed: Option<String>,
}

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

    /// Creates a node in state `enrolled`.
    pub async fn create_node(&self, new: &NewNode, actor: &str) -> Result<Node> {
        let (name, macs) = new.validate()?;
        let id = Uuid::new_v4();
        let now = now_ms();
        let driver = new.bmc.driver.unwrap_or_default();
        let sealed = new.bmc.password.as_deref().map(|p| self.secrets.seal(p));
        let boot_mac = new.boot_mac.or(macs.first().copied());
        let (taken_name, taken_macs) = (name.clone(), macs.clone());
        let at = rfc3339(now);
        let node = Node {
            id,
            name,
            boot_mac,
            macs,
            bmc: BmcView {
                driver,
                address: new.bmc.address.clone(),
                port: new.bmc.port,
                username: new.bmc.username.clone(),
                password_set: new.bmc.password.is_some(),
                verify_tls: new.bmc.verify_tls.unwrap_or(true),
            },
            state: State::Enrolled,
            target: None,
            generation: 1,
            profile: new.profile.clone(),
            role: new.role.clone(),
            hostname: None,
            addresses: Default::default(),
            last_error: None,
            maintenance: false,
            maintenance_reason: None,
            power_state: None,
            created_at: at.clone(),
            updated_at: at.clone(),
            state_changed_at: at,
            allowed_actions: action_names(State::Enrolled),
        };
        // The unique indexes decide; who holds a taken name or MAC is looked up
        // only after a refusal, to say so.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = enrol::Pending {
            node,
            sealed_password: sealed,
            actor: actor.to_string(),
            at: now,
            reply,
        };
        self.enrol
            .send(pending)
            .await
            .map_err(|_| StoreError::Unavailable("the enrolment writer has stopped".into()))?;
        let written = answer
            .await
            .map_err(|_| StoreError::Unavailable("the enrolment writer has stopped".into()))?;
        if written.is_ok() {
            self.nodes_changed();
        }
        match written {
            Err(e @ StoreError::Duplicate { .. }) => {
                Err(self.who_holds(&taken_name, &taken_macs).await.unwrap_or(e))
            }
            other => other,
        }
    }

    /// After a unique violation: which node holds the name or one of the MACs.
    async fn who_holds(&self, name: &str, macs: &[MacAddr]) -> Option<StoreError> {
        let mut tx = self.read.begin().await.ok()?;
        if let Err(e) = ensure_name_free(&mut tx, name, None).await {
            return Some(e);
        }
        ensure_macs_free(&mut tx, macs, None).await.err()
    }

    /// A node by UUID or name.
    pub async fn get_node(&self, id_or_name: &str) -> Result<Node> {
        Ok(self.get_record(id_or_name).await?.node)
    }

    /// A node with its sealed secrets, by UUID or name.
    pub async fn get_record(&self, id_or_name: &str) -> Result<NodeRecord> {
        let row = if Uuid::parse_str(id_or_name).is_ok() {
            sqlx::query(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE id = $1"
            ))
            .bind(id_or_name.to_lowercase())
            .fetch_optional(&self.read)
            .await?
        } else {
            sqlx::query(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE name = $1"
            ))
            .bind(id_or_name.to_string())
            .fetch_optional(&self.read)
            .await?
        };
        let row = row.ok_or_else(|| StoreError::NotFound(format!("node '{id_or_name}'")))?;
        node_from_row(&row)
    }

    /// The node owning a port with this MAC.
    pub async fn node_by_mac(&self, mac: MacAddr) -> Result<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE id = (SELECT node_id FROM ports WHERE mac = $1)"
        ))
        .bind(mac.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| node_from_row(&r)).transpose()
    }

    /// See [`Store::nodes_epoch`]: read it before reading the directory.
    pub fn nodes_epoch(&self) -> u64 {
        self.nodes_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn nodes_changed(&self) {
        self.nodes_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every enrolled MAC with what DHCP needs of its node (id, hostname or
    /// name, addresses), in one read: the DHCP server's directory.
    pub async fn dhcp_directory(&self) -> Result<Vec<DirectoryEntry>> {
        let rows = sqlx::query(directory_sql!()).fetch_all(&self.read).await?;
        rows.iter().map(directory_entry).collect()
    }

    /// The directory's entry for one MAC, read alone.
    pub async fn dhcp_directory_entry(&self, mac: MacAddr) -> Result<Option<DirectoryEntry>> {
        sqlx::query(concat!(directory_sql!(), " WHERE p.mac = $1"))
            .bind(mac.to_string())
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(directory_entry)
            .transpose()
    }

    /// A page of nodes, ordered by name: each node's id, generation and name.
    /// Callers holding a node's JSON for that generation need nothing more
    /// (every change bumps the generation); [`Store::nodes_by_ids`] fetches the rest.
    pub async fn list_node_versions(&self, f: &NodeFilter) -> Result<Vec<(Uuid, i64, String)>> {
        // Built from fixed fragments only; every value is bound. One statement per
        // combination of filters lets both databases use their indexes. The page
        // comes back as one aggregated row (SQLite 3.44+ and PostgreSQL both have
        // `string_agg ... ORDER BY`): one row to move instead of one per node.
        let mut sql = String::from("SELECT id, generation, name FROM nodes WHERE name > $1");
        let mut n = 1;
        let mut next = |col: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&format!(" AND {col} = ${n}"));
        };
        if f.state.is_some() {
            next("state", &mut sql);
        }
        if f.profile.is_some() {
            next("profile", &mut sql);
        }
        if f.maintenance.is_some() {
            next("maintenance", &mut sql);
        }
        sql.push_str(&format!(" ORDER BY name LIMIT ${}", n + 1));
        let sql = format!(
            "SELECT string_agg(id || ' ' || generation || ' ' || name, ',' ORDER BY name) AS page \
             FROM ({sql}) AS p"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(f.after.clone().unwrap_or_default());
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(p) = &f.profile {
            q = q.bind(p.clone());
        }
        if let Some(m) = f.maintenance {
            q = q.bind(i64::from(m));
        }
        let row = q.bind(f.limit).fetch_one(&self.read).await?;
        let page: Option<String> = row.try_get("page")?;
        // Names never hold spaces or commas (see `validate_name`), nor do UUIDs.
        page.unwrap_or_default()
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut it = e.splitn(3, ' ');
                let (id, generation, name) = (it.next(), it.next(), it.next());
                match (
                    id.map(Uuid::parse_str),
                    generation.map(str::parse::<i64>),
                    name,
                ) {
                    (Some(Ok(id)), Some(Ok(g)), Some(name)) => Ok((id, g, name.to_string())),
                    _ => Err(corrupt("page", format!("unreadable entry '{e}'"))),
                }
            })
            .collect()
    }

    /// The nodes with these ids (in no particular order; missing ones are skipped).
    pub async fn nodes_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Node>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // Fixed text plus numbered placeholders; the ids are bound.
            let sql = format!(
                concat!("SELECT ", node_cols!(), " FROM nodes WHERE id IN ({})"),
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for r in q.fetch_all(&self.read).await? {
                out.push(node_from_row(&r)?.node);
            }
        }
        Ok(out)
    }

    /// How many nodes are in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM nodes GROUP BY state")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Applies a PATCH: only given fields change.
    pub async fn update_node(
        &self,
        id_or_name: &str,
        patch: &NodePatch,
        actor: &str,
    ) -> Result<Node> {
        patch.check()?;
        let rec = self.get_record(id_or_name).await?;
        let cur = &rec.node;
        if let Some(g) = patch.generation
            && g != cur.generation
        {
            return Err(StoreError::Conflict(format!(
                "node '{}' is at generation {}, not {g}: reload it and try again",
                cur.name, cur.generation
            )));
        }
        let mut changed: Vec<&str> = Vec::new();
        let name = match &patch.name {
            Some(n) if *n != cur.name => {
                changed.push("name");
                n.clone()
            }
            _ => cur.name.clone(),
        };
        let boot_mac = match patch.boot_mac {
            Some(b) if b != cur.boot_mac => {
                changed.push("boot_mac");
                b
            }
            _ => cur.boot_mac,
        };
        let macs = port_list(boot_mac, patch.macs.as_ref().unwrap_or(&cur.macs))?;
        if macs != cur.macs {
            changed.push("macs");
        }
        let mut bmc = cur.bmc.clone();
        let mut sealed = rec.bmc_password_sealed.clone();
        if let Some(b) = &patch.bmc {
            let BmcInput {
                driver,
                address,
                port,
                username,
                password,
                verify_tls,
            } = b;
            if let Some(d) = driver {
                bmc.driver = *d;
            }
            if address.is_some() {
                bmc.address = address.clone();
            }
            if port.is_some() {
                bmc.port = *port;
            }
            if username.is_some() {
                bmc.username = username.clone();
            }
            if let Some(v) = verify_tls {
                bmc.verify_tls = *v;
            }
            if let Some(p) = password {
                sealed = Some(self.secrets.seal(p));
            }
            let merged = BmcInput {
                driver: Some(bmc.driver),
                address: bmc.address.clone(),
                port: bmc.port,
                ..Default::default()
            };
            validate_bmc(&merged, bmc.driver)?;
            changed.push("bmc");
        }
        let profile = match &patch.profile {
            Some(p) => {
                changed.push("profile");
                p.clone()
            }
            None => cur.profile.clone(),
        };
        let role = match &patch.role {
            Some(r) => {
                changed.push("role");
                r.clone()
            }
            None => cur.role.clone(),
        };
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        if name != cur.name {
            ensure_name_free(&mut tx, &name, Some(cur.id)).await?;
        }
        if macs != cur.macs {
            ensure_macs_free(&mut tx, &macs, Some(cur.id)).await?;
        }
        let res = sqlx::query(
            "UPDATE nodes SET name = $1, boot_mac = $2, macs = $3, bmc_driver = $4, bmc_address = $5, \
             bmc_port = $6, bmc_username = $7, bmc_password = $8, bmc_verify_tls = $9, profile = $10, \
             role = $11, updated_at = $12, generation = generation + 1 \
             WHERE id = $13 AND generation = $14",
        )
        .bind(name.clone())
        .bind(boot_mac.map(|m| m.to_string()))
        .bind(join_macs(&macs))
        .bind(bmc.driver.as_str())
        .bind(bmc.address.clone())
        .bind(bmc.port.map(i64::from))
        .bind(bmc.username.clone())
        .bind(sealed)
        .bind(i64::from(bmc.verify_tls))
        .bind(profile)
        .bind(role)
        .bind(now)
        .bind(cur.id.to_string())
        .bind(cur.generation)
        .execute(&mut *tx)
        .await
        .map_err(duplicate)?;
        if res.rows_affected() == 0 {
            return Err(conflict(&cur.name));
        }
        if macs != cur.macs {
            sqlx::query("DELETE FROM ports WHERE node_id = $1")
                .bind(cur.id.to_string())
                .execute(&mut *tx)
                .await?;
            insert_ports(&mut tx, cur.id, &macs).await?;
        }
        let reason = if changed.is_empty() {
            "no change".to_string()
        } else {
            format!("changed: {}", changed.join(", "))
        };
        insert_event(
            &mut tx,
            cur.id,
            "updated",
            None,
            None,
            Some("update"),
            actor,
            Some(&reason),
            now,
        )
        .await?;
        tx.commit().await?;
        self.nodes_changed();
        self.events_written.notify_waiters();
        self.get_node(&cur.id.to_string()).await
    }

    /// Deletes a node that holds no installation and has no work under way.
    pub async fn delete_node(&self, id_or_name: &str, actor: &str) -> Result<Node> {
        let node = self.get_node(id_or_name).await?;
        let deletable = matches!(
            node.state,
            State::Enrolled
                | State::Manageable
                | State::Available
                | State::InspectFailed
                | State::CleanFailed
        );
        if !deletable {
            return Err(StoreError::InvalidTransition {
                state: node.state,
                action: "delete".into(),
                allowed: node.allowed_actions.clone(),
            });
        }
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        profiles::release_in(&mut tx, node.id).await?;
        let res = sqlx::query("DELETE FROM nodes WHERE id = $1 AND generation = $2")
            .bind(node.id.to_string())
            .bind(node.generation)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(conflict(&node.name));
        }
        insert_event(
            &mut tx,
            node.id,
            "deleted",
            Some(node.state),
            None,
            Some("delete"),
            actor,
            Some(&format!("node '{}' deleted", node.name)),
            now,
        )
        .await?;
        tx.commit().await?;
        self.nodes_changed();
        self.events_written.notify_waiters();
        Ok(node)
    }

    /// An operator action: moves the node through [`transition`] and queues its step.
    ///
    /// `expected_generation`, when given, must match the node's.
    pub async fn act(
        &self,
        id_or_name: &str,
        event: Event,
        actor: &str,
        reason: Option<&str>,
        expected_generation: Option<i64>,
    ) -> Result<Node> {
        let rec = self.get_record(id_or_name).await?;
        let node = &rec.node;
        if let Some(g) = expected_generation
            && g != node.generation
        {
            return Err(conflict(&node.name));
        }
        if node.maintenance && event != Event::Abort {
            return Err(StoreError::Maintenance {
                reason: node.maintenance_reason.clone().unwrap_or_default(),
            });
        }
        let next = transition(node.state, event).map_err(|_| StoreError::InvalidTransition {
            state: node.state,
            action: event.as_str().into(),
            allowed: node.allowed_actions.clone(),
        })?;
        let target = match event {
            Event::Manage | Event::Inspect => Some(State::Manageable),
            Event::Provide | Event::Undeploy => Some(State::Available),
            Event::Deploy | Event::Reprovision if node.role.is_some() => Some(State::InService),
            Event::Deploy | Event::Reprovision => Some(State::Active),
            Event::Configure => Some(State::InService),
            Event::Abort | Event::Done | Event::Fail => None,
        };
        let last_error = if event == Event::Abort {
            Some(format!(
                "aborted by {actor}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ))
        } else {
            None
        };
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        move_node(
            &mut tx,
            node,
            Move {
                event,
                to: next,
                target,
                last_error: last_error.as_deref(),
                actor,
                reason,
                now,
            },
        )
        .await?;
        let queued = self.queue_step_for(&mut tx, node.id, next, now).await?;
        tx.commit().await?;
        self.events_written.notify_waiters();
        if queued {
            self.work_ready.notify_waiters();
        }
        self.get_node(&node.id.to_string()).await
    }

    /// Cancels any active step of the node and queues the step of `state`, if it has one.
    async fn queue_step_for(
        &self,
        tx: &mut Transaction<'static, Any>,
        node_id: Uuid,
        state: State,
        now: i64,
    ) -> Result<bool> {
        sqlx::query(
            "UPDATE steps SET status = 'cancelled', owner = NULL, updated_at = $1 \
             WHERE node_id = $2 AND status IN ('pending', 'running', 'waiting')",
        )
        .bind(now)
        .bind(node_id.to_string())
        .execute(&mut **tx)
        .await?;
        let Some(phase) = Phase::of(state) else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO steps (node_id, phase, stage, status, attempts, run_after, deadline, \
             created_at, updated_at) VALUES ($1, $2, $3, 'pending', 0, $4, $5, $4, $4)",
        )
        .bind(node_id.to_string())
        .bind(phase.as_str())
        .bind(phase.first().as_str())
        .bind(now)
        .bind(self.deadline_for(phase, now))
        .execute(&mut **tx)
        .await?;
        Ok(true)
    }

    /// Turns maintenance on (with a reason) or off. Off restarts the deadline of
    /// the step under way, since its clock was paused.
    pub async fn set_maintenance(
        &self,
        id_or_name: &str,
        on: bool,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Node> {
        let node = self.get_node(id_or_name).await?;
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let res = sqlx::query(
            "UPDATE nodes SET maintenance = $1, maintenance_reason = $2, updated_at = $3, \
             generation = generation + 1 WHERE id = $4 AND generation = $5",
        )
        .bind(i64::from(on))
        .bind(if on { reason.map(str::to_string) } else { None })
        .bind(now)
        .bind(node.id.to_string())
        .bind(node.generation)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(conflict(&node.name));
        }
        if !on && let Some(phase) = Phase::of(node.state) {
            sqlx::query(
                "UPDATE steps SET deadline = $1 WHERE node_id = $2 \
                     AND status IN ('pending', 'running', 'waiting')",
            )
            .bind(self.deadline_for(phase, now))
            .bind(node.id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let action = if on {
            "maintenance_on"
        } else {
            "maintenance_off"
        };
        insert_event(
            &mut tx,
            node.id,
            "maintenance",
            None,
            None,
            Some(action),
            actor,
            reason,
            now,
        )
        .await?;
        tx.commit().await?;
        self.events_written.notify_waiters();
        if !on {
            self.work_ready.notify_waiters();
        }
        self.get_node(&node.id.to_string()).await
    }

    /// Records the power state seen at the BMC (an event only when it changed).
    pub async fn set_power_state(&self, node_id: Uuid, power: &str, actor: &str) -> Result<()> {
        self.write_power_state(node_id, power, actor, None)
            .await
            .map(|_| ())
    }

    /// Records a power state the periodic sync read, when the stored one is
    /// still `seen` (what the sync compared against): a change made outside
    /// racklift. Returns whether it was recorded.
    pub async fn sync_power_state(
        &self,
        node_id: Uuid,
        seen: Option<&str>,
        power: &str,
    ) -> Result<bool> {
        self.write_power_state(node_id, power, "power-sync", Some(seen))
            .await
    }

    /// The nodes whose power the periodic sync reads: those with a BMC, under
    /// management (not `enrolled`), and not in a step (the conductor owns
    /// their power then).
    pub async fn power_sync_nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE bmc_driver IN ('ipmi', 'redfish', 'fake') \
             AND state NOT IN ('enrolled', 'verifying', 'inspecting', 'cleaning', 'deploying', 'configuring') \
             ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn write_power_state(
        &self,
        node_id: Uuid,
        power: &str,
        actor: &str,
        expect: Option<Option<&str>>,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let prev: Option<Option<String>> =
            sqlx::query("SELECT power_state FROM nodes WHERE id = $1")
                .bind(node_id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("power_state"))
                .transpose()?;
        let Some(prev) = prev else {
            return Err(StoreError::NotFound(format!("node '{node_id}'")));
        };
        if let Some(seen) = expect
            && prev.as_deref() != seen
        {
            // Someone recorded a newer reading meanwhile.
            return Ok(false);
        }
        let changed = prev.as_deref() != Some(power);
        if changed {
            sqlx::query(
                "UPDATE nodes SET power_state = $1, updated_at = $2, generation = generation + 1 \
                 WHERE id = $3",
            )
            .bind(power.to_string())
            .bind(now)
            .bind(node_id.to_string())
            .execute(&mut *tx)
            .await?;
            let mut reason = format!("power {} -> {power}", prev.as_deref().unwrap_or("unknown"));
            if expect.is_some() && prev.is_some() {
                reason.push_str(" (changed outside racklift)");
            }
            insert_event(
                &mut tx,
                node_id,
                "power",
                None,
                None,
                None,
                actor,
                Some(&reason),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        self.events_written.notify_waiters();
        Ok(changed)
    }

    /// Appends an informational event (agent log lines, step progress).
    pub async fn log_event(
        &self,
        node_id: Uuid,
        kind: &str,
        actor: &str,
        text: &str,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        insert_event(
            &mut tx,
            node_id,
            kind,
            None,
            None,
            None,
            actor,
            Some(text),
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.events_written.notify_waiters();
        Ok(())
    }

    /// Like [`Store::log_event`], but when the node's newest event is this
    /// same one (kind, actor and text), it is counted there instead of
    /// written again: a machine that asks every 30 s adds one row, not one
    /// per request. A counted repeat is not streamed again.
    pub async fn log_event_coalesced(
        &self,
        node_id: Uuid,
        kind: &str,
        actor: &str,
        text: &str,
    ) -> Result<()> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE events SET repeats = repeats + 1, last_at = $1 WHERE id = \
             (SELECT MAX(id) FROM events WHERE node_id = $2) \
             AND kind = $3 AND actor = $4 AND reason = $5",
        )
        .bind(now)
        .bind(node_id.to_string())
        .bind(kind.to_string())
        .bind(actor.to_string())
        .bind(text.to_string())
        .execute(&self.write)
        .await?;
        if res.rows_affected() == 1 {
            return Ok(());
        }
        self.log_event(node_id, kind, actor, text).await
    }

    // ---------------------------------------------------------------- events

    /// A node's events, oldest first, after event id `after`.
    pub async fn node_events(
        &self,
        node_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, node_id, kind, from_state, to_state, action, actor, reason, at, repeats, last_at FROM events \
             WHERE node_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(node_id.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// All events after id `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, node_id, kind, from_state, to_state, action, actor, reason, at, repeats, last_at FROM events \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The newest event id (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("m")?)
    }

    // ---------------------------------------------------------------- inventory

    /// Stores a node's raw inventory and its facts, replacing the previous
    /// ones; returns the previous facts when there was an inventory.
    pub async fn put_inventory(
        &self,
        node_id: Uuid,
        data: &serde_json::Value,
        facts: &[Fact],
    ) -> Result<Option<Vec<Fact>>> {
        let prev = match self.inventory(node_id).await? {
            Some(_) => self.inventory_facts(node_id).await?,
            None => None,
        };
        let facts_text =
            serde_json::to_string(facts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO inventories (node_id, data, facts, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET data = excluded.data, facts = excluded.facts, \
             received_at = excluded.received_at",
        )
        .bind(node_id.to_string())
        .bind(data.to_string())
        .bind(facts_text)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(prev)
    }

    /// A node's stored inventory.
    pub async fn inventory(&self, node_id: Uuid) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT data FROM inventories WHERE node_id = $1")
            .bind(node_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            let s: String = r.try_get("data")?;
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// A node's stored facts; inventories stored before facts were kept are
    /// flattened on the way out.
    pub async fn inventory_facts(&self, node_id: Uuid) -> Result<Option<Vec<Fact>>> {
        let row = sqlx::query("SELECT data, facts FROM inventories WHERE node_id = $1")
            .bind(node_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        match r.try_get::<Option<String>, _>("facts")? {
            Some(f) => Ok(Some(serde_json::from_str(&f).map_err(corrupt)?)),
            None => {
                let data: String = r.try_get("data")?;
                let v: serde_json::Value = serde_json::from_str(&data).map_err(corrupt)?;
                Ok(Some(crate::profiles::facts_from_inventory(&v)))
            }
        }
    }
}

/// A state change to persist.
pub(crate) struct Move<'a> {
    pub event: Event,
    pub to: State,
    pub target: Option<State>,
    pub last_error: Option<&'a str>,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    pub now: i64,
}

/// Persists a state change with the generation check and its event row.
pub(crate) async fn move_node(
    tx: &mut Transaction<'static, Any>,
    node: &Node,
    m: Move<'_>,
) -> Result<()> {
    debug_assert_eq!(transition(node.state, m.event), Ok(m.to));
    let res = sqlx::query(
        "UPDATE nodes SET state = $1, target = $2, last_error = $3, updated_at = $4, \
         state_changed_at = $4, generation = generation + 1 WHERE id = $5 AND generation = $6",
    )
    .bind(m.to.as_str())
    .bind(m.target.map(|t| t.as_str()))
    .bind(m.last_error.map(str::to_string))
    .bind(m.now)
    .bind(node.id.to_string())
    .bind(node.generation)
    .execute(&mut **tx)
    .await?;
    if res.rows_affected() == 0 {
        return Err(conflict(&node.name));
    }
    let reason = m.reason.or(m.last_error);
    insert_event(
        tx,
        node.id,
        "state",
        Some(node.state),
        Some(m.to),
        Some(m.event.as_str()),
        m.actor,
        reason,
        m.now,
    )
    .await
}

fn conflict(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "node '{name}' was changed by someone else meanwhile: reload it and try again"
    ))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    node_id: Uuid,
    kind: &str,
    from: Option<State>,
    to: Option<State>,
    action: Option<&str>,
    actor: &str,
    reason: Option<&str>,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (node_id, kind, from_state, to_state, action, actor, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(node_id.to_string())
    .bind(kind.to_string())
    .bind(from.map(|s| s.as_str()))
    .bind(to.map(|s| s.as_str()))
    .bind(action.map(str::to_string))
    .bind(actor.to_string())
    .bind(reason.map(str::to_string))
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn ensure_name_free(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    except: Option<Uuid>,
) -> Result<()> {
    let row = sqlx::query("SELECT id FROM nodes WHERE name = $1")
        .bind(name.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(r) = row {
        let id: String = r.try_get("id")?;
        if except.map(|e| e.to_string()) != Some(id) {
            return Err(StoreError::Duplicate {
                field: "name".into(),
                message: format!("name '{name}' is already used by another node"),
            });
        }
    }
    Ok(())
}

async fn ensure_macs_free(
    tx: &mut Transaction<'static, Any>,
    macs: &[MacAddr],
    except: Option<Uuid>,
) -> Result<()> {
    for m in macs {
        let row = sqlx::query(
            "SELECT n.id, n.name FROM ports p JOIN nodes n ON n.id = p.node_id WHERE p.mac = $1",
        )
        .bind(m.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = row {
            let id: String = r.try_get("id")?;
            if except.map(|e| e.to_string()) != Some(id) {
                let owner: String = r.try_get("name")?;
                return Err(StoreError::Duplicate {
                    field: "macs".into(),
                    message: format!("MAC {m} is already a port of node '{owner}'"),
                });
            }
        }
    }
    Ok(())
}

async fn insert_ports(
    tx: &mut Transaction<'static, Any>,
    id: Uuid,
    macs: &[MacAddr],
) -> Result<()> {
    for m in macs {
        sqlx::query("INSERT INTO ports (mac, node_id) VALUES ($1, $2)")
            .bind(m.to_string())
            .bind(id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(duplicate)?;
    }
    Ok(())
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

fn join_macs(macs: &[MacAddr]) -> String {
    macs.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn corrupt(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {e}"))
}

fn node_from_row(r: &sqlx::any::AnyRow) -> Result<NodeRecord> {
    let id: String = r.try_get("id")?;
    let state: String = r.try_get("state")?;
    let state = State::from_str(&state).map_err(|e| corrupt("state", e))?;
    let target: Option<String> = r.try_get("target")?;
    let macs: String = r.try_get("macs")?;
    let macs = macs
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| corrupt("macs", e)))
        .collect::<Result<Vec<MacAddr>>>()?;
    let boot_mac: Option<String> = r.try_get("boot_mac")?;
    let driver: String = r.try_get("bmc_driver")?;
    let port: Option<i64> = r.try_get("bmc_port")?;
    let sealed: Option<String> = r.try_get("bmc_password")?;
    let created: i64 = r.try_get("created_at")?;
    let updated: i64 = r.try_get("updated_at")?;
    let changed: i64 = r.try_get("state_changed_at")?;
    let node = Node {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("id", e))?,
        name: r.try_get("name")?,
        boot_mac: boot_mac
            .map(|m| m.parse().map_err(|e| corrupt("boot_mac", e)))
            .transpose()?,
        macs,
        bmc: BmcView {
            driver: BmcDriverKind::from_str(&driver).map_err(|e| corrupt("bmc_driver", e))?,
            address: r.try_get("bmc_address")?,
            port: port.and_then(|p| u16::try_from(p).ok()),
            username: r.try_get("bmc_username")?,
            password_set: sealed.is_some(),
            verify_tls: r.try_get::<i64, _>("bmc_verify_tls")? != 0,
        },
        state,
        target: target
            .map(|t| State::from_str(&t).map_err(|e| corrupt("target", e)))
            .transpose()?,
        generation: r.try_get("generation")?,
        profile: r.try_get("profile")?,
        role: r.try_get("role")?,
        hostname: r.try_get("hostname")?,
        addresses: serde_json::from_str(&r.try_get::<String, _>("addresses")?)
            .map_err(|e| corrupt("addresses", e))?,
        last_error: r.try_get("last_error")?,
        maintenance: r.try_get::<i64, _>("maintenance")? != 0,
        maintenance_reason: r.try_get("maintenance_reason")?,
        power_state: r.try_get("power_state")?,
        created_at: rfc3339(created),
        updated_at: rfc3339(updated),
        state_changed_at: rfc3339(changed),
        allowed_actions: action_names(state),
    };
    Ok(NodeRecord {
        node,
        bmc_password_sealed: sealed,
    })
}

fn action_names(state: State) -> Vec<String> {
    state
        .allowed_actions()
        .iter()
        .map(|e| e.as_str().to_string())
        .collect()
}

fn event_from_row(r: &sqlx::any::AnyRow) -> Result<EventRow> {
    let node_id: String = r.try_get("node_id")?;
    let at: i64 = r.try_get("at")?;
    Ok(EventRow {
        id: r.try_get("id")?,
        node_id: Uuid::parse_str(&node_id).map_err(|e| corrupt("node_id", e))?,
        kind: r.try_get("kind")?,
        from_state: r.try_get("from_state")?,
        to_state: r.try_get("to_state")?,
        action: r.try_get("action")?,
        actor: r.try_get("actor")?,
        reason: r.try_get("reason")?,
        at_ms: at,
        at: rfc3339(at),
        repeats: r.try_get("repeats")?,
        last_at: r.try_get::<Option<i64>, _>("last_at")?.map(rfc3339),
    })
}
