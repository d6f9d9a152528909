//! Profile selection in the database: quota counters, hostname and address
//! pools, taken atomically so that several racklift processes sharing one
//! PostgreSQL database never hand one entry to two nodes nor exceed a quota.
//!
//! - Quota: one counter row per profile, raised by a single guarded `UPDATE`
//!   (`used < quota`); a node's membership row says whose quota it holds.
//! - Pools: one row per entry, free when `node_id` is NULL. An entry pinned to
//!   a machine carries the pin's `$$` key and goes only to that machine.
//! - A node keeps its profile, hostname and addresses when reinstalled; all
//!   are returned when it is deleted.

use super::{Result, Store, StoreError, insert_event, node_cols, node_from_row, now_ms};
use crate::profiles::Profile;
use sqlx::{Any, Row, Transaction};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What a node got from its profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub profile: String,
    pub hostname: Option<String>,
    pub addresses: BTreeMap<String, String>,
}

/// A profile whose specs matched, with what they captured.
pub struct Candidate<'a> {
    pub profile: &'a Profile,
    pub captures: &'a BTreeMap<String, String>,
}

/// The `$$` captures as one key: `k=v;k=v`, sorted.
fn cmdb_key(p: &Profile, captures: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<String> = p
        .specs
        .cmdb_keys()
        .iter()
        .filter_map(|k| captures.get(k).map(|v| format!("{k}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(";"))
}

fn pin_key(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

const HOSTNAME_POOL: &str = "hostname";

fn net_pool(net: &str) -> String {
    format!("net:{net}")
}

enum Take {
    Got(String),
    Exhausted,
}

impl Store {
    /// Creates the pool entries of every profile that do not exist yet (idempotent).
    pub async fn sync_pools(&self, profiles: &[Profile]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for p in profiles {
            let mut pools: Vec<(String, &Vec<String>)> =
                vec![(HOSTNAME_POOL.to_string(), &p.hostnames)];
            pools.extend(p.networks.iter().map(|(n, v)| (net_pool(n), v)));
            for (pool, entries) in pools {
                for (seq, value) in entries.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO allocations (profile, pool, value, seq) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (profile, pool, value) DO NOTHING",
                    )
                    .bind(p.name.clone())
                    .bind(pool.clone())
                    .bind(value.clone())
                    .bind(seq as i64)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // Pinned entries (inside the pool or not) are reserved for their machine.
            for pin in &p.pins {
                let key = format!("pin:{}", pin_key(&pin.matches));
                let mut wanted: Vec<(String, &String)> = pin
                    .hostname
                    .iter()
                    .map(|h| (HOSTNAME_POOL.to_string(), h))
                    .collect();
                wanted.extend(pin.addresses.iter().map(|(n, a)| (net_pool(n), a)));
                for (pool, value) in wanted {
                    sqlx::query(
                        "INSERT INTO allocations (profile, pool, value, seq) VALUES ($1, $2, $3, -1) \
                         ON CONFLICT (profile, pool, value) DO NOTHING",
                    )
                    .bind(p.name.clone())
                    .bind(pool.clone())
                    .bind(value.clone())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE allocations SET cmdb_key = $1 WHERE profile = $2 AND pool = $3 AND value = $4 AND node_id IS NULL")
                        .bind(key.clone())
                        .bind(p.name.clone())
                        .bind(pool)
                        .bind(value.clone())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives the node the first candidate profile with quota and pool entries
    /// left. `Ok(Err(reasons))` says why none could be taken.
    pub async fn assign_profile(
        &self,
        node_id: Uuid,
        candidates: &[Candidate<'_>],
        actor: &str,
    ) -> Result<Result<Assignment, Vec<String>>> {
        let mut reasons = Vec::new();
        for c in candidates {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.try_assign(node_id, c, actor).await {
                    Ok(Ok(a)) => return Ok(Ok(a)),
                    Ok(Err(reason)) => {
                        reasons.push(reason);
                        break;
                    }
                    Err(StoreError::Conflict(_)) if attempt < 5 => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Err(reasons))
    }

    async fn try_assign(
        &self,
        node_id: Uuid,
        c: &Candidate<'_>,
        actor: &str,
    ) -> Result<Result<Assignment, String>> {
        let p = c.profile;
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE id = $1"
        ))
        .bind(node_id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("node '{node_id}'")))?;
        let node = node_from_row(&row)?.node;
        let member: Option<String> =
            sqlx::query("SELECT profile FROM profile_members WHERE node_id = $1")
                .bind(node_id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("profile"))
                .transpose()?;
        if member.as_deref() == Some(p.name.as_str()) {
            // Already this profile's (a reinspection or reinstall): keep everything.
            return Ok(Ok(Assignment {
                profile: p.name.clone(),
                hostname: node.hostname,
                addresses: node.addresses,
            }));
        }
        if member.is_some() {
            release_in(&mut tx, node_id).await?;
        }
        let limit = match p.quota {
            crate::profiles::profile::Quota::Count(n) => i64::from(n),
            crate::profiles::profile::Quota::Unlimited => -1,
        };
        sqlx::query("INSERT INTO profile_quota (profile, used) VALUES ($1, 0) ON CONFLICT (profile) DO NOTHING")
            .bind(p.name.clone())
            .execute(&mut *tx)
            .await?;
        let got = sqlx::query("UPDATE profile_quota SET used = used + 1 WHERE profile = $1 AND ($2 < 0 OR used < $2) RETURNING used")
            .bind(p.name.clone())
            .bind(limit)
            .fetch_optional(&mut *tx)
            .await?;
        if got.is_none() {
            return Ok(Err(format!(
                "{}: its quota of {limit} nodes is reached",
                p.name
            )));
        }
        sqlx::query("INSERT INTO profile_members (node_id, profile) VALUES ($1, $2)")
            .bind(node_id.to_string())
            .bind(p.name.clone())
            .execute(&mut *tx)
            .await?;
        let key = cmdb_key(p, c.captures);
        let pin = p.pins.iter().find(|pin| {
            pin.matches
                .iter()
                .all(|(k, v)| c.captures.get(k) == Some(v))
        });
        let mut hostname = None;
        if !p.hostnames.is_empty() || pin.is_some_and(|p| p.hostname.is_some()) {
            let wanted = pin.and_then(|p| p.hostname.clone());
            match take(&mut tx, &p.name, HOSTNAME_POOL, node_id, wanted.as_deref()).await? {
                Take::Got(h) => hostname = Some(h),
                Take::Exhausted => {
                    return Ok(Err(format!("{}: no hostname left in its pool", p.name)));
                }
            }
        }
        let mut addresses = BTreeMap::new();
        for net in p.networks.keys() {
            let wanted = pin.and_then(|p| p.addresses.get(net).cloned());
            match take(&mut tx, &p.name, &net_pool(net), node_id, wanted.as_deref()).await? {
                Take::Got(a) => {
                    addresses.insert(net.clone(), a);
                }
                Take::Exhausted => {
                    return Ok(Err(format!(
                        "{}: no address left in network '{net}'",
                        p.name
                    )));
                }
            }
        }
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE nodes SET profile = $1, role = COALESCE(role, $2), hostname = $3, addresses = $4, \
             updated_at = $5, generation = generation + 1 WHERE id = $6 AND generation = $7",
        )
        .bind(p.name.clone())
        .bind(p.role.clone())
        .bind(hostname.clone())
        .bind(serde_json::to_string(&addresses).unwrap_or_else(|_| "{}".into()))
        .bind(now)
        .bind(node_id.to_string())
        .bind(node.generation)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "node '{}' changed during profile selection",
                node.name
            )));
        }
        let mut what = vec![format!("profile '{}' selected", p.name)];
        if let Some(h) = &hostname {
            what.push(format!("hostname {h}"));
        }
        what.extend(addresses.iter().map(|(n, a)| format!("{n} {a}")));
        if let Some(k) = &key {
            what.push(format!("machine {k}"));
        }
        insert_event(
            &mut tx,
            node_id,
            "profile",
            None,
            None,
            Some("select_profile"),
            actor,
            Some(&what.join(", ")),
            now,
        )
        .await?;
        tx.commit().await?;
        self.nodes_changed();
        self.events_written.notify_waiters();
        Ok(Ok(Assignment {
            profile: p.name.clone(),
            hostname,
            addresses,
        }))
    }

    /// How many nodes hold each profile's quota.
    pub async fn quota_used(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT profile, used FROM profile_quota")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("profile")?, r.try_get("used")?)))
            .collect()
    }
}

/// Takes one entry of a pool for the node: the pinned one if any, else the
/// first free unpinned entry. Retried a few times when another process takes
/// the same entry at the same moment.
async fn take(
    tx: &mut Transaction<'static, Any>,
    profile: &str,
    pool: &str,
    node_id: Uuid,
    wanted: Option<&str>,
) -> Result<Take> {
    if let Some(v) = wanted {
        let got = sqlx::query(
            "UPDATE allocations SET node_id = $1 WHERE profile = $2 AND pool = $3 AND value = $4 \
             AND (node_id IS NULL OR node_id = $1) RETURNING value",
        )
        .bind(node_id.to_string())
        .bind(profile.to_string())
        .bind(pool.to_string())
        .bind(v.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        return Ok(match got {
            Some(_) => Take::Got(v.to_string()),
            None => Take::Exhausted,
        });
    }
    for _ in 0..10 {
        let got = sqlx::query(
            "UPDATE allocations SET node_id = $1 WHERE profile = $2 AND pool = $3 AND node_id IS NULL \
             AND cmdb_key IS NULL AND value = (SELECT value FROM allocations WHERE profile = $2 AND pool = $3 \
             AND node_id IS NULL AND cmdb_key IS NULL ORDER BY seq LIMIT 1) RETURNING value",
        )
        .bind(node_id.to_string())
        .bind(profile.to_string())
        .bind(pool.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = got {
            return Ok(Take::Got(r.try_get("value")?));
        }
        let free = sqlx::query("SELECT 1 AS one FROM allocations WHERE profile = $1 AND pool = $2 AND node_id IS NULL AND cmdb_key IS NULL LIMIT 1")
            .bind(profile.to_string())
            .bind(pool.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        if free.is_none() {
            return Ok(Take::Exhausted);
        }
    }
    Err(StoreError::Conflict(format!(
        "pool '{pool}' of '{profile}' is contended; retrying"
    )))
}

/// Returns a node's quota and pool entries (inside the caller's transaction).
pub(crate) async fn release_in(tx: &mut Transaction<'static, Any>, node_id: Uuid) -> Result<()> {
    let member = sqlx::query("DELETE FROM profile_members WHERE node_id = $1 RETURNING profile")
        .bind(node_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(r) = member {
        let profile: String = r.try_get("profile")?;
        sqlx::query("UPDATE profile_quota SET used = used - 1 WHERE profile = $1 AND used > 0")
            .bind(profile)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE allocations SET node_id = NULL WHERE node_id = $1")
        .bind(node_id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
