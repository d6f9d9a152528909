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
        .execute(&self.write)
        .await?;
        Ok(())
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
        let now = now_ms();
        if force || move_client {
            self.forget_client_leases(c.subnet, c.mac, Some(c.ip), c.server)
                .await?;
        }
        // A pool entry of a profile is reserved unless this is a forced (fixed) claim.
        let res = sqlx::query(
            "INSERT INTO dhcp_leases (ip, subnet, mac, state, hostname, expires_at, updated_at, server) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE $9 OR NOT EXISTS (SELECT 1 FROM allocations WHERE value = $1) \
             ON CONFLICT (ip) DO UPDATE SET subnet = excluded.subnet, mac = excluded.mac, \
             state = excluded.state, hostname = COALESCE(excluded.hostname, dhcp_leases.hostname), \
             expires_at = excluded.expires_at, updated_at = excluded.updated_at, server = excluded.server \
             WHERE $9 OR dhcp_leases.expires_at < $7 OR dhcp_leases.mac = excluded.mac",
        )
        .bind(c.ip.to_string())
        .bind(c.subnet.to_string())
        .bind(c.mac.to_string())
        .bind(c.state.as_str())
        .bind(c.hostname.map(str::to_string))
        .bind(c.expires_at)
        .bind(now)
        .bind(c.server.to_string())
        .bind(force)
        .execute(&self.write)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 1 => Ok(Claim::Won),
            Ok(_) => Ok(Claim::Busy),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Claim::ClientHasOther),
            Err(e) => Err(e.into()),
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
        let r = sqlx::query(
            "UPDATE dhcp_leases SET state = 'bound', expires_at = $1, updated_at = $2, \
             hostname = COALESCE($3, hostname), server = $4 \
             WHERE ip = $5 AND mac = $6 AND state <> 'declined'",
        )
        .bind(expires_at)
        .bind(now_ms())
        .bind(hostname.map(str::to_string))
        .bind(server.to_string())
        .bind(ip.to_string())
        .bind(mac.to_string())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
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
