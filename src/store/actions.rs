//! Operator actions and maintenance: a node moved through
//! [`crate::state::transition`] toward [`crate::state::target_of`], its step
//! queued in the same transaction.

use super::*;

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

impl Store {
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
        let target = target_of(event, node.role.is_some());
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
    pub(super) async fn queue_step_for(
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
}
