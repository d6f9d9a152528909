//! Group commit for enrolment: concurrent `create_node` calls are queued to one
//! task that writes each batch as one transaction with multi-row inserts (the
//! nodes, their ports, their `created` events). Under load this turns dozens of
//! transactions into one; alone, a request is written at once.
//!
//! If a batch fails (a duplicate name or MAC), its requests are written again
//! one by one, so each gets its own answer and none is lost.

use super::{Result, StoreError, duplicate, join_macs};
use crate::node::Node;
use crate::state::State;
use sqlx::AnyPool;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, oneshot};

/// The most requests written in one transaction.
const MAX_BATCH: usize = 128;

/// One enrolment waiting to be written.
pub(super) struct Pending {
    pub node: Node,
    pub sealed_password: Option<String>,
    pub actor: String,
    pub at: i64,
    pub reply: oneshot::Sender<Result<Node>>,
}

/// Starts the writer; it ends when every sender is dropped.
pub(super) fn spawn(pool: AnyPool, events: Arc<Notify>) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(4 * MAX_BATCH);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let result = write(&pool, &batch).await;
            match result {
                Ok(()) => {
                    events.notify_waiters();
                    for p in batch {
                        let _ = p.reply.send(Ok(p.node));
                    }
                }
                Err(e) if batch.len() == 1 => {
                    if let Some(p) = batch.pop() {
                        let _ = p.reply.send(Err(e));
                    }
                }
                Err(_) => {
                    for p in batch {
                        let r = write(&pool, std::slice::from_ref(&p)).await;
                        if r.is_ok() {
                            events.notify_waiters();
                        }
                        let _ = p.reply.send(r.map(|()| p.node));
                    }
                }
            }
        }
    });
    tx
}

/// `($1, $2, ...), ($n+1, ...)` with `width` placeholders per row and a row template.
fn rows(count: usize, width: usize, template: &[&str]) -> String {
    (0..count)
        .map(|r| {
            let cells: Vec<String> = template
                .iter()
                .map(
                    |t| match t.strip_prefix('$').and_then(|i| i.parse::<usize>().ok()) {
                        Some(i) => format!("${}", r * width + i),
                        None => (*t).to_string(),
                    },
                )
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes a batch in one transaction.
async fn write(pool: &AnyPool, batch: &[Pending]) -> Result<()> {
    // Fixed SQL text with numbered placeholders; every value is bound.
    let node_row = [
        "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "NULL", "1", "$12",
        "$13", "0", "$14", "$14", "$14",
    ];
    let sql = format!(
        "INSERT INTO nodes (id, name, boot_mac, macs, bmc_driver, bmc_address, bmc_port, bmc_username, \
         bmc_password, bmc_verify_tls, state, target, generation, profile, role, maintenance, created_at, \
         updated_at, state_changed_at) VALUES {}",
        rows(batch.len(), 14, &node_row)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in batch {
        let n = &p.node;
        q = q
            .bind(n.id.to_string())
            .bind(n.name.clone())
            .bind(n.boot_mac.map(|m| m.to_string()))
            .bind(join_macs(&n.macs))
            .bind(n.bmc.driver.as_str())
            .bind(n.bmc.address.clone())
            .bind(n.bmc.port.map(i64::from))
            .bind(n.bmc.username.clone())
            .bind(p.sealed_password.clone())
            .bind(i64::from(n.bmc.verify_tls))
            .bind(State::Enrolled.as_str())
            .bind(n.profile.clone())
            .bind(n.role.clone())
            .bind(p.at);
    }
    let mut tx = pool.begin().await?;
    q.execute(&mut *tx).await.map_err(duplicate)?;
    let ports: Vec<(String, String)> = batch
        .iter()
        .flat_map(|p| {
            p.node
                .macs
                .iter()
                .map(|m| (m.to_string(), p.node.id.to_string()))
        })
        .collect();
    if !ports.is_empty() {
        let sql = format!(
            "INSERT INTO ports (mac, node_id) VALUES {}",
            rows(ports.len(), 2, &["$1", "$2"])
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (mac, id) in ports {
            q = q.bind(mac).bind(id);
        }
        q.execute(&mut *tx).await.map_err(duplicate)?;
    }
    let event_row = [
        "$1",
        "'created'",
        "NULL",
        "'enrolled'",
        "'create'",
        "$2",
        "NULL",
        "$3",
    ];
    let sql = format!(
        "INSERT INTO events (node_id, kind, from_state, to_state, action, actor, reason, at) VALUES {}",
        rows(batch.len(), 3, &event_row)
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in batch {
        q = q
            .bind(p.node.id.to_string())
            .bind(p.actor.clone())
            .bind(p.at);
    }
    q.execute(&mut *tx).await?;
    tx.commit().await.map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_per_row() {
        assert_eq!(
            super::rows(2, 2, &["$1", "'x'", "$2"]),
            "($1, 'x', $2), ($3, 'x', $4)"
        );
    }
}
