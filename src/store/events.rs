//! Node events: the history every change appends to, and the reads of it
//! (per node, and the global feed behind the event stream).

use super::*;
use serde::Deserialize;

/// A row of a node's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

pub(super) fn event_from_row(r: &sqlx::any::AnyRow) -> Result<EventRow> {
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

impl Store {
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
}
