//! Discovered nodes and the MACs they may hold.
//!
//! A node enrolled by discovery (its discovery token records it) speaks only
//! for itself: it holds the MAC it booted from and those of its inventory
//! that no node held; while it is still `enrolled` (nobody has managed it),
//! an operator's enrolment or change that names one of its MACs takes that
//! MAC from it, and both nodes' events say so. Discoveries per minute are
//! counted here, from the tokens that enrolled a node.

use super::{Result, Store, insert_event, now_ms};
use crate::node::MacAddr;
use crate::state::State;
use sqlx::Row;
use uuid::Uuid;

/// A MAC held by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub mac: MacAddr,
    pub node_id: Uuid,
    pub name: String,
}

impl Store {
    /// The nodes holding any of `macs` (at most [`crate::node::limits::MACS`]),
    /// in the order of `macs`, read in one query.
    pub async fn mac_holders(&self, macs: &[MacAddr]) -> Result<Vec<Holder>> {
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT p.mac, n.id, n.name FROM ports p JOIN nodes n ON n.id = p.node_id \
             WHERE p.mac IN ({})",
            in_list(1, macs.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in macs {
            q = q.bind(m.to_string());
        }
        let mut held = std::collections::HashMap::new();
        for r in q.fetch_all(&self.read).await? {
            let id: String = r.try_get("id")?;
            let node_id = Uuid::parse_str(&id).map_err(|e| super::corrupt("id", e))?;
            held.insert(
                r.try_get::<String, _>("mac")?,
                (node_id, r.try_get("name")?),
            );
        }
        Ok(macs
            .iter()
            .filter_map(|m| {
                let (node_id, name) = held.get(&m.to_string())?.clone();
                Some(Holder {
                    mac: *m,
                    node_id,
                    name,
                })
            })
            .collect())
    }

    /// Takes those of `macs` held by discovered nodes nobody has managed yet
    /// (still `enrolled`) from them, for the operator's node `taker` (`None`:
    /// a node being created, `Some`: that node, which keeps its own). Each
    /// holder's event says which MAC went where; returns one line per MAC
    /// taken, for the taker's answer and events.
    pub async fn take_discovered_macs(
        &self,
        macs: &[MacAddr],
        taker_name: &str,
        taker: Option<Uuid>,
        actor: &str,
    ) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        // One read finds whether there is anything to take; the usual answer
        // is no, and an operator's enrolment then writes nothing more here
        // (enrolments are group-committed; a write per MAC would undo that).
        let held = self.discovered_enrolled_macs(macs).await?;
        for m in macs.iter().filter(|m| held.contains(&m.to_string())) {
            let mut tx = self.write.begin().await?;
            let row = sqlx::query(
                "SELECT n.id, n.name, n.boot_mac, n.macs FROM ports p JOIN nodes n ON n.id = p.node_id \
                 WHERE p.mac = $1 AND n.state = $2 \
                 AND EXISTS (SELECT 1 FROM discovery_tokens d WHERE d.node_id = n.id)",
            )
            .bind(m.to_string())
            .bind(State::Enrolled.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(r) = row else { continue };
            let id: String = r.try_get("id")?;
            if taker.map(|t| t.to_string()).as_deref() == Some(id.as_str()) {
                continue;
            }
            let holder: String = r.try_get("name")?;
            let mac = m.to_string();
            let rest: Vec<String> = r
                .try_get::<String, _>("macs")?
                .split(',')
                .filter(|s| !s.is_empty() && *s != mac)
                .map(str::to_string)
                .collect();
            let boot: Option<String> = r.try_get("boot_mac")?;
            let boot = match boot {
                Some(b) if b == mac => rest.first().cloned(),
                other => other,
            };
            let now = now_ms();
            sqlx::query("DELETE FROM ports WHERE mac = $1")
                .bind(mac.clone())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE nodes SET macs = $1, boot_mac = $2, generation = generation + 1, updated_at = $3 WHERE id = $4",
            )
            .bind(rest.join(","))
            .bind(boot)
            .bind(now)
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
            let holder_id = Uuid::parse_str(&id).map_err(|e| super::corrupt("id", e))?;
            insert_event(
                &mut tx,
                holder_id,
                "updated",
                None,
                None,
                None,
                actor,
                Some(&format!(
                    "MAC {mac} taken by the operator for node '{taker_name}': this node was discovered and is not managed yet"
                )),
                now,
            )
            .await?;
            tx.commit().await?;
            self.events_written.notify_waiters();
            self.nodes_changed();
            notes.push(format!(
                "MAC {mac} was taken from node '{holder}', which discovery had enrolled and nobody has managed"
            ));
        }
        Ok(notes)
    }

    /// Those of `macs` held by discovered nodes still `enrolled` (one read).
    async fn discovered_enrolled_macs(&self, macs: &[MacAddr]) -> Result<Vec<String>> {
        if macs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT p.mac FROM ports p JOIN nodes n ON n.id = p.node_id \
             WHERE n.state = $1 AND p.mac IN ({}) \
             AND EXISTS (SELECT 1 FROM discovery_tokens d WHERE d.node_id = n.id)",
            in_list(2, macs.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(State::Enrolled.as_str());
        for m in macs {
            q = q.bind(m.to_string());
        }
        let rows = q.fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("mac").map_err(Into::into))
            .collect()
    }

    /// How many machines discovery enrolled in the last minute, and when (ms)
    /// the oldest of them leaves that minute.
    pub async fn discoveries_last_minute(&self) -> Result<(i64, Option<i64>)> {
        let since = now_ms() - 60_000;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(used_at) AS oldest FROM discovery_tokens \
             WHERE used_at IS NOT NULL AND used_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.read)
        .await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((row.try_get("n")?, oldest.map(|o| o + 60_000)))
    }
}

/// `$first, $first+1, ...`: `n` numbered placeholders for an `IN (...)` list.
fn in_list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
