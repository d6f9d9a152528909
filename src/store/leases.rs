//! DHCP leases: the rows behind every address the DHCP server hands out.
//!
//! Safe when several racklift processes share one PostgreSQL database: an
//! address is claimed by a single statement whose primary key decides the
//! winner (`INSERT ... ON CONFLICT (ip) DO UPDATE ... WHERE` the old lease has
//! expired or belongs to the same client), and a client holds at most one row
//! per subnet (a partial unique index), so no address ever goes to two clients.
//! Rows stay after expiry: a returning client gets its old address back.
//! Addresses listed in a profile's IP pool are never handed out dynamically.

use super::{Result, Store, now_ms};
use crate::node::MacAddr;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use utoipa::ToSchema;

/// What a lease row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Offered, waiting for the client's REQUEST.
    Offered,
    /// Acknowledged: the client uses the address until it expires.
    Bound,
    /// Given back by the client (RELEASE) or dropped for another address.
    Released,
    /// Reported in use by someone else (DECLINE): quarantined until it expires.
    Declined,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }

    fn parse(s: &str) -> Option<LeaseState> {
        Some(match s {
            "offered" => LeaseState::Offered,
            "bound" => LeaseState::Bound,
            "released" => LeaseState::Released,
            "declined" => LeaseState::Declined,
            _ => return None,
        })
    }
}

/// One lease, as `GET /v1/dhcp/leases` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    #[schema(value_type = String)]
    pub ip: Ipv4Addr,
    /// The subnet it belongs to (CIDR).
    pub subnet: String,
    /// The client's MAC; none while quarantined.
    #[schema(value_type = Option<String>)]
    pub mac: Option<MacAddr>,
    pub state: LeaseState,
    pub hostname: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    pub updated_at_ms: i64,
    /// Server identifier of the racklift process that last changed it.
    pub server: String,
}

/// A claim on one address for one client.
#[derive(Debug, Clone)]
pub struct LeaseClaim<'a> {
    pub ip: Ipv4Addr,
    pub subnet: &'a str,
    pub mac: MacAddr,
    pub state: LeaseState,
    pub hostname: Option<&'a str>,
    pub expires_at: i64,
    pub server: &'a str,
}

/// How a claim went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The address is this client's now.
    Won,
    /// Another client holds it, or a profile pool reserves it.
    Busy,
    /// The client already holds another address in this subnet (another
    /// process may just have given it one): read it with [`Store::client_lease`].
    ClientHasOther,
}

macro_rules! lease_cols {
    () => {
        "ip, subnet, mac, state, hostname, expires_at, updated_at, server"
    };
}

/// A lease row's columns as stored, in `lease_cols!()` order.
type LeaseColumns = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    i64,
    String,
);

fn lease_from_columns(c: LeaseColumns) -> Result<Lease> {
    let (ip, subnet, mac, state, hostname, expires_at_ms, updated_at_ms, server) = c;
    let corrupt = |what: &str| super::StoreError::Corrupt(format!("lease {ip}: {what}"));
    Ok(Lease {
        ip: ip.parse().map_err(|_| corrupt("bad address"))?,
        subnet,
        mac: mac
            .map(|m| m.parse().map_err(|_| corrupt("bad MAC")))
            .transpose()?,
        state: LeaseState::parse(&state).ok_or_else(|| corrupt("bad state"))?,
        hostname,
        expires_at_ms,
        updated_at_ms,
        server,
    })
}

fn lease_from_row(r: &sqlx::any::AnyRow) -> Result<Lease> {
    lease_from_columns((
        r.try_get("ip")?,
        r.try_get("subnet")?,
        r.try_get("mac")?,
        r.try_get("state")?,
        r.try_get("hostname")?,
        r.try_get("expires_at")?,
        r.try_get("updated_at")?,
        r.try_get("server")?,
    ))
}

const CLIENT_LEASE_SQL: &str = concat!(
    "SELECT ",
    lease_cols!(),
    " FROM dhcp_leases WHERE subnet = $1 AND mac = $2"
);
const LEASE_AT_SQL: &str = concat!("SELECT ", lease_cols!(), " FROM dhcp_leases WHERE ip = $1");
const FORGET_SQL: &str = "UPDATE dhcp_leases SET mac = NULL, state = 'released', expires_at = $1, \
     updated_at = $1, server = $2 WHERE subnet = $3 AND mac = $4 AND ip <> $5";
/// The claim (see [`Store::claim_lease`]): $1 ip, $2 subnet, $3 mac, $4 state,
/// $5 hostname, $6 expires_at, $7 now, $8 server, $9 force. A pool entry of a
/// profile is reserved unless this is a forced (fixed) claim. A client's live
/// bound lease is never turned back into an offer (another process may have
/// read it as offered just before).
const CLAIM_SQL: &str = "INSERT INTO dhcp_leases (ip, subnet, mac, state, hostname, expires_at, updated_at, server) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
     WHERE $9 OR NOT EXISTS (SELECT 1 FROM allocations WHERE value = $1) \
     ON CONFLICT (ip) DO UPDATE SET subnet = excluded.subnet, mac = excluded.mac, \
     state = CASE WHEN dhcp_leases.mac = excluded.mac AND dhcp_leases.state = 'bound' \
       AND dhcp_leases.expires_at >= $7 THEN 'bound' ELSE excluded.state END, \
     hostname = COALESCE(excluded.hostname, dhcp_leases.hostname), \
     expires_at = CASE WHEN dhcp_leases.mac = excluded.mac AND dhcp_leases.state = 'bound' \
       AND dhcp_leases.expires_at > excluded.expires_at THEN dhcp_leases.expires_at \
       ELSE excluded.expires_at END, \
     updated_at = excluded.updated_at, server = excluded.server \
     WHERE $9 OR dhcp_leases.expires_at < $7 OR dhcp_leases.mac = excluded.mac";
/// The bind: $1 expires_at, $2 now, $3 hostname, $4 server, $5 ip, $6 mac.
const BIND_SQL: &str = "UPDATE dhcp_leases SET state = 'bound', expires_at = $1, updated_at = $2, \
     hostname = COALESCE($3, hostname), server = $4 \
     WHERE ip = $5 AND mac = $6 AND state <> 'declined'";

impl Store {
    /// The lease row of `mac` in `subnet`, whatever its state.
    pub async fn client_lease(&self, subnet: &str, mac: MacAddr) -> Result<Option<Lease>> {
        let op = Op::ClientLease {
            subnet: subnet.to_string(),
            mac,
        };
        match self.lease_op(op).await? {
            Done::Lease(l) => Ok(l),
            _ => unreachable!("a read answers with a lease"),
        }
    }

    /// Every (subnet, MAC) that holds a lease row.
    pub async fn lease_clients(&self) -> Result<Vec<(String, MacAddr)>> {
        let rows = sqlx::query("SELECT subnet, mac FROM dhcp_leases WHERE mac IS NOT NULL")
            .fetch_all(&self.read)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let subnet: String = r.try_get("subnet")?;
            let mac: String = r.try_get("mac")?;
            if let Ok(mac) = mac.parse() {
                out.push((subnet, mac));
            }
        }
        Ok(out)
    }

    /// The lease row of an address.
    pub async fn lease_at(&self, ip: Ipv4Addr) -> Result<Option<Lease>> {
        match self.lease_op(Op::LeaseAt { ip }).await? {
            Done::Lease(l) => Ok(l),
            _ => unreachable!("a read answers with a lease"),
        }
    }

    /// Every lease, by subnet and address.
    pub async fn list_leases(&self) -> Result<Vec<Lease>> {
        sqlx::query(concat!(
            "SELECT ",
            lease_cols!(),
            " FROM dhcp_leases ORDER BY subnet, ip"
        ))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(lease_from_row)
        .collect()
    }

    /// Drops every address `mac` holds in `subnet` but `keep`: the rows lose
    /// their MAC and are free at once.
    pub async fn forget_client_leases(
        &self,
        subnet: &str,
        mac: MacAddr,
        keep: Option<Ipv4Addr>,
        server: &str,
    ) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        forget(&mut conn, subnet, mac, keep, server).await
    }

    /// Claims `c.ip` for `c.mac`: wins when the address is free, expired, or
    /// already this client's. `move_client` first drops the client's other
    /// address in the subnet; `force` (a node's fixed address) also takes the
    /// address from whoever holds it and ignores profile pool reservations.
    pub async fn claim_lease(
        &self,
        c: &LeaseClaim<'_>,
        force: bool,
        move_client: bool,
    ) -> Result<Claim> {
        let op = Op::Claim(ClaimOp {
            ip: c.ip,
            subnet: c.subnet.to_string(),
            mac: c.mac,
            state: c.state,
            hostname: c.hostname.map(str::to_string),
            expires_at: c.expires_at,
            server: c.server.to_string(),
            force,
            move_client,
        });
        match self.lease_op(op).await? {
            Done::Claim(c) => Ok(c),
            _ => unreachable!("a claim answers with a claim"),
        }
    }

    /// Binds (ACK) or extends the lease of `mac` on `ip`; false when the row is
    /// not this client's any more.
    pub async fn bind_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        expires_at: i64,
        hostname: Option<&str>,
        server: &str,
    ) -> Result<bool> {
        let op = Op::Bind(BindOp {
            ip,
            mac,
            expires_at,
            hostname: hostname.map(str::to_string),
            server: server.to_string(),
        });
        match self.lease_op(op).await? {
            Done::Changed(b) => Ok(b),
            _ => unreachable!("a bind answers with a change"),
        }
    }

    /// Runs one lease operation: on SQLite's lease thread, batched with the
    /// others waiting; on a connection of its own on PostgreSQL.
    async fn lease_op(&self, op: Op) -> Result<Done> {
        if let Some(tx) = &self.lease_thread {
            let stopped = || super::StoreError::Unavailable("the lease thread stopped".into());
            let (reply, rx) = tokio::sync::oneshot::channel();
            tx.send((op, reply)).await.map_err(|_| stopped())?;
            return rx
                .await
                .map_err(|_| stopped())?
                .map_err(super::StoreError::Unavailable);
        }
        let mut conn = self.write.acquire().await?;
        run(&mut conn, &op).await
    }

    /// RELEASE: the address is free at once; the row keeps the MAC, so the
    /// client gets the same address when it comes back and nobody took it.
    pub async fn release_lease(&self, ip: Ipv4Addr, mac: MacAddr, server: &str) -> Result<bool> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE dhcp_leases SET state = 'released', expires_at = $1, updated_at = $1, server = $2 \
             WHERE ip = $3 AND mac = $4 AND state <> 'declined'",
        )
        .bind(now)
        .bind(server.to_string())
        .bind(ip.to_string())
        .bind(mac.to_string())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// DECLINE: the client found the address in use; nobody gets it until `until`.
    pub async fn decline_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        until: i64,
        server: &str,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE dhcp_leases SET state = 'declined', mac = NULL, expires_at = $1, updated_at = $2, \
             server = $3 WHERE ip = $4 AND mac = $5",
        )
        .bind(until)
        .bind(now_ms())
        .bind(server.to_string())
        .bind(ip.to_string())
        .bind(mac.to_string())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Addresses of `subnet` nobody may take now (live leases and quarantines),
    /// with every address a profile pool reserves.
    pub async fn unavailable_addresses(&self, subnet: &str) -> Result<HashSet<Ipv4Addr>> {
        let mut out = HashSet::new();
        let live = sqlx::query("SELECT ip FROM dhcp_leases WHERE subnet = $1 AND expires_at >= $2")
            .bind(subnet.to_string())
            .bind(now_ms())
            .fetch_all(&self.read)
            .await?;
        let reserved = sqlx::query("SELECT value FROM allocations")
            .fetch_all(&self.read)
            .await?;
        for r in live.iter().chain(reserved.iter()) {
            let v: String = r.try_get(0)?;
            if let Ok(ip) = v.parse() {
                out.insert(ip);
            }
        }
        Ok(out)
    }
}

/// A claim, owned (see [`Store::claim_lease`]).
#[derive(Debug)]
pub(super) struct ClaimOp {
    ip: Ipv4Addr,
    subnet: String,
    mac: MacAddr,
    state: LeaseState,
    hostname: Option<String>,
    expires_at: i64,
    server: String,
    force: bool,
    move_client: bool,
}

/// A bind, owned (see [`Store::bind_lease`]).
#[derive(Debug)]
pub(super) struct BindOp {
    ip: Ipv4Addr,
    mac: MacAddr,
    expires_at: i64,
    hostname: Option<String>,
    server: String,
}

/// A lease operation, owned, so it can wait in the lease thread's queue.
#[derive(Debug)]
pub(super) enum Op {
    Claim(ClaimOp),
    Bind(BindOp),
    ClientLease { subnet: String, mac: MacAddr },
    LeaseAt { ip: Ipv4Addr },
}

/// What a lease operation did or found.
#[derive(Debug)]
pub(super) enum Done {
    Claim(Claim),
    Changed(bool),
    Lease(Option<Lease>),
}

/// An operation waiting for the lease thread, and where its outcome goes.
pub(super) type Queued = (Op, tokio::sync::oneshot::Sender<Result<Done, String>>);

/// Most operations run in one transaction.
const BATCH: usize = 256;
/// How long the lease thread waits for more operations before a commit when
/// its queue runs dry: a DHCP answer a little later (clients wait seconds),
/// for a fraction of the commits and wake-ups below saturation.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

/// SQLite's lease thread: a connection of its own on a thread of its own,
/// which runs every operation waiting when it is free in one transaction (a
/// failed statement rolls back alone, so each keeps its own outcome), reads
/// included, so they see every write before them. A DHCP exchange costs two
/// writes; one commit per write would cap a boot storm at the commit rate, and
/// one thread hand-off per statement (what an async driver costs) took most
/// of the server's CPU in a boot storm. `uri` is an SQLite `file:` URI.
pub(super) fn spawn_thread(uri: &str) -> Result<tokio::sync::mpsc::Sender<Queued>> {
    let conn = open_lease_connection(uri).map_err(|e| {
        super::StoreError::Unavailable(format!("cannot open the lease connection: {e}"))
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(4096);
    let uri = uri.to_string();
    std::thread::Builder::new()
        .name("racklift-leases".into())
        .spawn(move || {
            let mut conn = Some(conn);
            loop {
                let c = match conn.take() {
                    Some(c) => c,
                    None => match open_lease_connection(&uri) {
                        Ok(c) => c,
                        Err(e) => {
                            // Refuse what waits, then try again: the storage
                            // may come back.
                            tracing::error!(error = %e, "lease connection not reopened");
                            while let Ok((_, reply)) = rx.try_recv() {
                                let _ =
                                    reply.send(Err(format!("lease connection unavailable: {e}")));
                            }
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            if rx.is_closed() && rx.is_empty() {
                                return;
                            }
                            continue;
                        }
                    },
                };
                match serve_batches(&c, &mut rx) {
                    Served::Closed => return,
                    Served::Broken(e) => {
                        // Whatever the connection holds is given up with it
                        // (closing rolls back an open transaction).
                        tracing::error!(error = %e, "lease connection reset after a storage error");
                        drop(c);
                    }
                }
            }
        })
        .map_err(|e| {
            super::StoreError::Unavailable(format!("cannot start the lease thread: {e}"))
        })?;
    Ok(tx)
}

fn open_lease_connection(uri: &str) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
    )?;
    // A file SQLite could open only for reading is opened read-only without
    // a word: refuse such a connection rather than fail every write on it.
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
    Ok(conn)
}

/// Why [`serve_batches`] returned.
enum Served {
    /// Every sender is gone.
    Closed,
    /// The connection cannot be trusted any more (a transaction SQLite ended
    /// by itself, or one that could not be ended).
    Broken(String),
}

fn serve_batches(
    conn: &rusqlite::Connection,
    rx: &mut tokio::sync::mpsc::Receiver<Queued>,
) -> Served {
    let mut stmts = match Statements::prepare(conn) {
        Ok(s) => s,
        Err(e) => return Served::Broken(format!("lease statements not prepared: {e}")),
    };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let mut lingered = false;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) if !lingered => {
                    // Let the operations of the requests arriving now
                    // join this transaction instead of each paying for
                    // its own commit and wake-up.
                    lingered = true;
                    std::thread::sleep(LINGER);
                }
                Err(_) => break,
            }
        }
        let outcome = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let mut done = Vec::with_capacity(batch.len());
            for (op, _) in &batch {
                done.push(stmts.run(op).map_err(|e| e.to_string()));
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (an I/O
                    // error, a full disk): nothing of the batch is written,
                    // and nothing after it may run outside a transaction.
                    let e = done.pop().and_then(Result::err).unwrap_or_default();
                    return Err(Failed::RolledBack(e));
                }
            }
            if let Err(e) = conn.execute_batch("COMMIT") {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(Failed::Commit(e));
            }
            Ok(done)
        })();
        match outcome {
            Ok(done) => {
                for ((_, reply), d) in batch.into_iter().zip(done) {
                    let _ = reply.send(d);
                }
            }
            Err(failed) => {
                let why = failed.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(format!("lease write not committed: {why}")));
                }
                if matches!(failed, Failed::RolledBack(_)) || !conn.is_autocommit() {
                    return Served::Broken(why);
                }
            }
        }
    }
    Served::Closed
}

/// How a batch's transaction failed.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("{0}")]
    Begin(#[from] rusqlite::Error),
    #[error("transaction rolled back by the database: {0}")]
    RolledBack(String),
    #[error("commit failed: {0}")]
    Commit(rusqlite::Error),
}

/// The lease thread's statements, prepared once.
struct Statements<'c> {
    forget: rusqlite::Statement<'c>,
    claim: rusqlite::Statement<'c>,
    bind: rusqlite::Statement<'c>,
    client_lease: rusqlite::Statement<'c>,
    lease_at: rusqlite::Statement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c rusqlite::Connection) -> rusqlite::Result<Statements<'c>> {
        Ok(Statements {
            forget: conn.prepare(FORGET_SQL)?,
            claim: conn.prepare(CLAIM_SQL)?,
            bind: conn.prepare(BIND_SQL)?,
            client_lease: conn.prepare(CLIENT_LEASE_SQL)?,
            lease_at: conn.prepare(LEASE_AT_SQL)?,
        })
    }

    /// One operation, inside the batch's transaction.
    fn run(&mut self, op: &Op) -> Result<Done> {
        let now = now_ms();
        match op {
            Op::Claim(c) => {
                let (ip, mac) = (c.ip.to_string(), c.mac.to_string());
                if c.force || c.move_client {
                    self.forget
                        .execute(rusqlite::params![now, c.server, c.subnet, mac, ip])?;
                }
                let res = self.claim.execute(rusqlite::params![
                    ip,
                    c.subnet,
                    mac,
                    c.state.as_str(),
                    c.hostname,
                    c.expires_at,
                    now,
                    c.server,
                    c.force
                ]);
                Ok(Done::Claim(match res {
                    Ok(1) => Claim::Won,
                    Ok(_) => Claim::Busy,
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                    {
                        Claim::ClientHasOther
                    }
                    Err(e) => return Err(e.into()),
                }))
            }
            Op::Bind(b) => {
                let n = self.bind.execute(rusqlite::params![
                    b.expires_at,
                    now,
                    b.hostname,
                    b.server,
                    b.ip.to_string(),
                    b.mac.to_string()
                ])?;
                Ok(Done::Changed(n == 1))
            }
            Op::ClientLease { subnet, mac } => {
                read_lease(&mut self.client_lease, &[subnet, &mac.to_string()])
            }
            Op::LeaseAt { ip } => read_lease(&mut self.lease_at, &[&ip.to_string()]),
        }
    }
}

fn read_lease(stmt: &mut rusqlite::Statement<'_>, p: &[&dyn rusqlite::ToSql]) -> Result<Done> {
    use rusqlite::OptionalExtension;
    let cols = stmt
        .query_row(p, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?;
    Ok(Done::Lease(cols.map(lease_from_columns).transpose()?))
}

async fn forget(
    conn: &mut sqlx::AnyConnection,
    subnet: &str,
    mac: MacAddr,
    keep: Option<Ipv4Addr>,
    server: &str,
) -> Result<()> {
    sqlx::query(FORGET_SQL)
        .bind(now_ms())
        .bind(server.to_string())
        .bind(subnet.to_string())
        .bind(mac.to_string())
        .bind(keep.map(|ip| ip.to_string()).unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One operation on a connection of the pool (PostgreSQL).
async fn run(conn: &mut sqlx::AnyConnection, op: &Op) -> Result<Done> {
    let now = now_ms();
    match op {
        Op::Claim(c) => {
            if c.force || c.move_client {
                forget(conn, &c.subnet, c.mac, Some(c.ip), &c.server).await?;
            }
            let res = sqlx::query(CLAIM_SQL)
                .bind(c.ip.to_string())
                .bind(c.subnet.clone())
                .bind(c.mac.to_string())
                .bind(c.state.as_str())
                .bind(c.hostname.clone())
                .bind(c.expires_at)
                .bind(now)
                .bind(c.server.clone())
                .bind(c.force)
                .execute(&mut *conn)
                .await;
            Ok(Done::Claim(match res {
                Ok(r) if r.rows_affected() == 1 => Claim::Won,
                Ok(_) => Claim::Busy,
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Claim::ClientHasOther,
                Err(e) => return Err(e.into()),
            }))
        }
        Op::Bind(b) => {
            let r = sqlx::query(BIND_SQL)
                .bind(b.expires_at)
                .bind(now)
                .bind(b.hostname.clone())
                .bind(b.server.clone())
                .bind(b.ip.to_string())
                .bind(b.mac.to_string())
                .execute(&mut *conn)
                .await?;
            Ok(Done::Changed(r.rows_affected() == 1))
        }
        Op::ClientLease { subnet, mac } => Ok(Done::Lease(
            sqlx::query(CLIENT_LEASE_SQL)
                .bind(subnet.clone())
                .bind(mac.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| lease_from_row(&r))
                .transpose()?,
        )),
        Op::LeaseAt { ip } => Ok(Done::Lease(
            sqlx::query(LEASE_AT_SQL)
                .bind(ip.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| lease_from_row(&r))
                .transpose()?,
        )),
    }
}
