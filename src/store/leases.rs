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
use serde::Serialize;
use sqlx::Row;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use utoipa::ToSchema;

/// What a lease row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

fn lease_from_row(r: &sqlx::any::AnyRow) -> Result<Lease> {
    let ip: String = r.try_get("ip")?;
    let mac: Option<String> = r.try_get("mac")?;
    let state: String = r.try_get("state")?;
    let corrupt = |what: &str| super::StoreError::Corrupt(format!("lease {ip}: {what}"));
    Ok(Lease {
        ip: ip.parse().map_err(|_| corrupt("bad address"))?,
        subnet: r.try_get("subnet")?,
        mac: mac
            .map(|m| m.parse().map_err(|_| corrupt("bad MAC")))
            .transpose()?,
        state: LeaseState::parse(&state).ok_or_else(|| corrupt("bad state"))?,
        hostname: r.try_get("hostname")?,
        expires_at_ms: r.try_get("expires_at")?,
        updated_at_ms: r.try_get("updated_at")?,
        server: r.try_get("server")?,
    })
}

impl Store {
    /// The lease row of `mac` in `subnet`, whatever its state.
    pub async fn client_lease(&self, subnet: &str, mac: MacAddr) -> Result<Option<Lease>> {
        sqlx::query(concat!(
            "SELECT ",
            lease_cols!(),
            " FROM dhcp_leases WHERE subnet = $1 AND mac = $2"
        ))
        .bind(subnet.to_string())
        .bind(mac.to_string())
        .fetch_optional(&self.read)
        .await?
        .map(|r| lease_from_row(&r))
        .transpose()
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
        sqlx::query(concat!(
            "SELECT ",
            lease_cols!(),
            " FROM dhcp_leases WHERE ip = $1"
        ))
        .bind(ip.to_string())
        .fetch_optional(&self.read)
        .await?
        .map(|r| lease_from_row(&r))
        .transpose()
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
        let op = Op::Claim {
            ip: c.ip,
            subnet: c.subnet.to_string(),
            mac: c.mac,
            state: c.state,
            hostname: c.hostname.map(str::to_string),
            expires_at: c.expires_at,
            server: c.server.to_string(),
            force,
            move_client,
        };
        match self.lease_op(op).await? {
            Done::Claim(c) => Ok(c),
            Done::Changed(_) => unreachable!("a claim answers with a claim"),
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
        let op = Op::Bind {
            ip,
            mac,
            expires_at,
            hostname: hostname.map(str::to_string),
            server: server.to_string(),
        };
        match self.lease_op(op).await? {
            Done::Changed(b) => Ok(b),
            Done::Claim(_) => unreachable!("a bind answers with a change"),
        }
    }

    /// Runs one lease write: through the group-commit writer on SQLite, on a
    /// connection of its own on PostgreSQL.
    async fn lease_op(&self, op: Op) -> Result<Done> {
        if let Some(tx) = &self.lease_writer {
            let (reply, rx) = tokio::sync::oneshot::channel();
            tx.send((op, reply))
                .await
                .map_err(|_| super::StoreError::Unavailable("the lease writer stopped".into()))?;
            return rx
                .await
                .map_err(|_| super::StoreError::Unavailable("the lease writer stopped".into()))?
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

/// A lease write, owned, so it can wait in the writer's queue.
#[derive(Debug)]
pub(super) enum Op {
    Claim {
        ip: Ipv4Addr,
        subnet: String,
        mac: MacAddr,
        state: LeaseState,
        hostname: Option<String>,
        expires_at: i64,
        server: String,
        force: bool,
        move_client: bool,
    },
    Bind {
        ip: Ipv4Addr,
        mac: MacAddr,
        expires_at: i64,
        hostname: Option<String>,
        server: String,
    },
}

/// What a lease write did.
#[derive(Debug)]
pub(super) enum Done {
    Claim(Claim),
    Changed(bool),
}

/// A write waiting for the writer, and where its outcome goes.
pub(super) type Queued = (Op, tokio::sync::oneshot::Sender<Result<Done, String>>);

/// Most writes committed together.
const BATCH: usize = 128;

/// SQLite's lease writer: every write waiting when the writer connection is
/// free goes into one transaction (a failed statement rolls back alone, so
/// each write keeps its own outcome). A DHCP exchange costs two writes; one
/// commit per write would cap a boot storm at the commit rate.
pub(super) fn spawn_writer(write: sqlx::AnyPool) -> tokio::sync::mpsc::Sender<Queued> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(4096);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let outcome = async {
                let mut t = write.begin().await?;
                let mut done = Vec::with_capacity(batch.len());
                for (op, _) in &batch {
                    done.push(run(&mut t, op).await.map_err(|e| e.to_string()));
                }
                t.commit().await?;
                Ok::<_, sqlx::Error>(done)
            }
            .await;
            match outcome {
                Ok(done) => {
                    for ((_, reply), d) in batch.into_iter().zip(done) {
                        let _ = reply.send(d);
                    }
                }
                Err(e) => {
                    for (_, reply) in batch {
                        let _ = reply.send(Err(format!("lease write not committed: {e}")));
                    }
                }
            }
        }
    });
    tx
}

async fn forget(
    conn: &mut sqlx::AnyConnection,
    subnet: &str,
    mac: MacAddr,
    keep: Option<Ipv4Addr>,
    server: &str,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "UPDATE dhcp_leases SET mac = NULL, state = 'released', expires_at = $1, \
         updated_at = $1, server = $2 WHERE subnet = $3 AND mac = $4 AND ip <> $5",
    )
    .bind(now)
    .bind(server.to_string())
    .bind(subnet.to_string())
    .bind(mac.to_string())
    .bind(keep.map(|ip| ip.to_string()).unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn run(conn: &mut sqlx::AnyConnection, op: &Op) -> Result<Done> {
    let now = now_ms();
    match op {
        Op::Claim {
            ip,
            subnet,
            mac,
            state,
            hostname,
            expires_at,
            server,
            force,
            move_client,
        } => {
            if *force || *move_client {
                forget(conn, subnet, *mac, Some(*ip), server).await?;
            }
            // A pool entry of a profile is reserved unless this is a forced (fixed)
            // claim. A client's live bound lease is never turned back into an
            // offer (another process may have read it as offered just before).
            let res = sqlx::query(
                "INSERT INTO dhcp_leases (ip, subnet, mac, state, hostname, expires_at, updated_at, server) \
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
                 WHERE $9 OR dhcp_leases.expires_at < $7 OR dhcp_leases.mac = excluded.mac",
            )
            .bind(ip.to_string())
            .bind(subnet.clone())
            .bind(mac.to_string())
            .bind(state.as_str())
            .bind(hostname.clone())
            .bind(*expires_at)
            .bind(now)
            .bind(server.clone())
            .bind(*force)
            .execute(&mut *conn)
            .await;
            Ok(Done::Claim(match res {
                Ok(r) if r.rows_affected() == 1 => Claim::Won,
                Ok(_) => Claim::Busy,
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Claim::ClientHasOther,
                Err(e) => return Err(e.into()),
            }))
        }
        Op::Bind {
            ip,
            mac,
            expires_at,
            hostname,
            server,
        } => {
            let r = sqlx::query(
                "UPDATE dhcp_leases SET state = 'bound', expires_at = $1, updated_at = $2, \
                 hostname = COALESCE($3, hostname), server = $4 \
                 WHERE ip = $5 AND mac = $6 AND state <> 'declined'",
            )
            .bind(*expires_at)
            .bind(now)
            .bind(hostname.clone())
            .bind(server.clone())
            .bind(ip.to_string())
            .bind(mac.to_string())
            .execute(&mut *conn)
            .await?;
            Ok(Done::Changed(r.rows_affected() == 1))
        }
    }
}
