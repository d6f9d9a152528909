//! Durable work: each transient state of a node has one step row, claimed by a
//! conductor worker under a lease, moved through its stages, and closed with the
//! node's `done` or `fail` transition in the same transaction.
//!
//! Stages: `start` (BMC actions) → `await` (status `waiting`, for the agent's
//! report) → `finish` (BMC actions after the report). A step whose lease lapses
//! (its worker died) is taken over; a step past its phase deadline fails its node.

use super::{
    Move, NodeRecord, Result, Store, StoreError, move_node, node_cols, node_from_row, now_ms,
};
use crate::state::{Event, State, transition};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// The phase a step carries out, one per transient state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Verify,
    Inspect,
    Clean,
    Deploy,
    Configure,
}

impl Phase {
    /// The phase of a transient state.
    pub fn of(state: State) -> Option<Phase> {
        match state {
            State::Verifying => Some(Phase::Verify),
            State::Inspecting => Some(Phase::Inspect),
            State::Cleaning => Some(Phase::Clean),
            State::Deploying => Some(Phase::Deploy),
            State::Configuring => Some(Phase::Configure),
            State::Enrolled
            | State::Manageable
            | State::InspectFailed
            | State::CleanFailed
            | State::Available
            | State::DeployFailed
            | State::Active
            | State::ConfigureFailed
            | State::InService => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Verify => "verify",
            Phase::Inspect => "inspect",
            Phase::Clean => "clean",
            Phase::Deploy => "deploy",
            Phase::Configure => "configure",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Phase> {
        Ok(match s {
            "verify" => Phase::Verify,
            "inspect" => Phase::Inspect,
            "clean" => Phase::Clean,
            "deploy" => Phase::Deploy,
            "configure" => Phase::Configure,
            o => return Err(StoreError::Corrupt(format!("unknown step phase '{o}'"))),
        })
    }
}

/// What the agent (or the installed host) reported for a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub ok: bool,
    pub message: Option<String>,
    /// Kept as the node's `last_error` even when the step succeeds (e.g. an
    /// inspection whose hardware matched no profile).
    #[serde(default)]
    pub note: Option<String>,
}

/// A claimed or inspected step.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: i64,
    pub node_id: Uuid,
    pub phase: Phase,
    pub stage: String,
    pub status: String,
    pub attempts: i64,
    pub deadline: i64,
    pub outcome: Option<StepOutcome>,
}

/// Which rows a close may touch.
enum Guard<'a> {
    /// Still running under this owner's lease.
    Owner(&'a str),
    /// Active and past its deadline.
    Expired(i64),
}

/// What a reaper pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Steps whose worker's lease lapsed, made claimable again.
    pub resumed: u64,
    /// Nodes failed because their phase ran past its deadline.
    pub timed_out: u64,
    /// Nodes failed because they were in a transient state with no step.
    pub orphaned: u64,
}

fn step_from_row(r: &sqlx::any::AnyRow) -> Result<Step> {
    let node_id: String = r.try_get("node_id")?;
    let phase: String = r.try_get("phase")?;
    let outcome: Option<String> = r.try_get("outcome")?;
    Ok(Step {
        id: r.try_get("id")?,
        node_id: Uuid::parse_str(&node_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        phase: Phase::parse(&phase)?,
        stage: r.try_get("stage")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        deadline: r.try_get("deadline")?,
        outcome: outcome
            .map(|o| serde_json::from_str(&o).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?,
    })
}

impl Store {
    /// Claims the next due step of a node not in maintenance, under a lease.
    pub async fn claim_step(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Step, NodeRecord)>> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "UPDATE steps SET status = 'running', owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT s.id FROM steps s JOIN nodes n ON n.id = s.node_id \
                         WHERE s.status = 'pending' AND s.run_after <= $3 AND n.maintenance = 0 \
                         ORDER BY s.run_after, s.id LIMIT 1) \
             AND status = 'pending' \
             RETURNING id, node_id, phase, stage, status, attempts, deadline, outcome",
        )
        .bind(owner.to_string())
        .bind(now + lease.as_millis() as i64)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let step = step_from_row(&row)?;
        let node = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE id = $1"
        ))
        .bind(step.node_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let rec = node_from_row(&node)?;
        tx.commit().await?;
        Ok(Some((step, rec)))
    }

    /// Extends a running step's lease; false when the step is no longer ours.
    pub async fn renew_lease(&self, step_id: i64, owner: &str, lease: Duration) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE steps SET lease_until = $1 WHERE id = $2 AND status = 'running' AND owner = $3",
        )
        .bind(now_ms() + lease.as_millis() as i64)
        .bind(step_id)
        .bind(owner.to_string())
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The step now waits for the agent's report.
    pub async fn step_wait(&self, step_id: i64, owner: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE steps SET status = 'waiting', stage = 'await', owner = NULL, lease_until = NULL, \
             attempts = 0, updated_at = $1 WHERE id = $2 AND status = 'running' AND owner = $3",
        )
        .bind(now_ms())
        .bind(step_id)
        .bind(owner.to_string())
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// A transient failure: try the stage again after `delay`.
    pub async fn step_retry(
        &self,
        step_id: i64,
        owner: &str,
        error: &str,
        delay: Duration,
    ) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE steps SET status = 'pending', owner = NULL, lease_until = NULL, last_error = $1, \
             run_after = $2, updated_at = $3 WHERE id = $4 AND status = 'running' AND owner = $5",
        )
        .bind(error.to_string())
        .bind(now + delay.as_millis() as i64)
        .bind(now)
        .bind(step_id)
        .bind(owner.to_string())
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The agent's report for a waiting step: it moves to its `finish` stage.
    pub async fn agent_report(&self, step_id: i64, outcome: &StepOutcome) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE steps SET status = 'pending', stage = 'finish', outcome = $1, run_after = $2, \
             attempts = 0, updated_at = $2 WHERE id = $3 AND status = 'waiting'",
        )
        .bind(serde_json::to_string(outcome).unwrap_or_default())
        .bind(now)
        .bind(step_id)
        .execute(&self.write)
        .await?;
        let moved = res.rows_affected() == 1;
        if moved {
            self.work_ready.notify_waiters();
        }
        Ok(moved)
    }

    /// The active step of a node.
    pub async fn active_step(&self, node_id: Uuid) -> Result<Option<Step>> {
        let row = sqlx::query(
            "SELECT id, node_id, phase, stage, status, attempts, deadline, outcome FROM steps \
             WHERE node_id = $1 AND status IN ('pending', 'running', 'waiting')",
        )
        .bind(node_id.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| step_from_row(&r)).transpose()
    }

    /// Closes a running step owned by `owner` with the node's `done` or `fail`.
    /// Returns false when the step was no longer ours (aborted, timed out, taken over).
    pub async fn step_finish(
        &self,
        step: &Step,
        owner: &str,
        result: Result<Option<String>, String>,
    ) -> Result<bool> {
        let note = step.outcome.as_ref().and_then(|o| o.note.clone());
        self.close_step(step.id, Guard::Owner(owner), result, note, "conductor")
            .await
    }

    async fn close_step(
        &self,
        step_id: i64,
        guard: Guard<'_>,
        result: Result<Option<String>, String>,
        note: Option<String>,
        actor: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let (status, error) = match &result {
            Ok(_) => ("done", None),
            Err(e) => ("failed", Some(e.clone())),
        };
        for _attempt in 0..5 {
            let mut tx = self.write.begin().await?;
            let q = match guard {
                Guard::Owner(_) => {
                    "UPDATE steps SET status = $1, last_error = $2, owner = NULL, updated_at = $3 \
                     WHERE id = $4 AND status = 'running' AND owner = $5 RETURNING node_id"
                }
                Guard::Expired(_) => {
                    "UPDATE steps SET status = $1, last_error = $2, owner = NULL, updated_at = $3 \
                     WHERE id = $4 AND status IN ('pending', 'running', 'waiting') AND deadline < $5 \
                     RETURNING node_id"
                }
            };
            let q = sqlx::query(q)
                .bind(status)
                .bind(error.clone())
                .bind(now)
                .bind(step_id);
            let q = match guard {
                Guard::Owner(o) => q.bind(o.to_string()),
                Guard::Expired(t) => q.bind(t),
            };
            let Some(row) = q.fetch_optional(&mut *tx).await? else {
                return Ok(false);
            };
            let node_id: String = row.try_get("node_id")?;
            let rec = self.record_in(&mut tx, &node_id).await?;
            match self
                .settle(&mut tx, &rec, &result, note.as_deref(), actor, now)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            tx.commit().await?;
            self.events_written.notify_waiters();
            self.work_ready.notify_waiters();
            return Ok(true);
        }
        Err(StoreError::Conflict(format!(
            "step {step_id}: its node kept changing; the step will be retried"
        )))
    }

    async fn record_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        node_id: &str,
    ) -> Result<NodeRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE id = $1"
        ))
        .bind(node_id.to_string())
        .fetch_one(&mut **tx)
        .await?;
        node_from_row(&row)
    }

    /// Applies a step's result to its node and continues toward the node's target.
    async fn settle(
        &self,
        tx: &mut Transaction<'static, Any>,
        rec: &NodeRecord,
        result: &Result<Option<String>, String>,
        note: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let node = &rec.node;
        let event = if result.is_ok() {
            Event::Done
        } else {
            Event::Fail
        };
        let Ok(to) = transition(node.state, event) else {
            // The node left the step's state meanwhile (aborted): nothing to settle.
            return Ok(());
        };
        let (message, last_error) = match result {
            Ok(m) => (m.clone(), note),
            Err(e) => (Some(e.clone()), Some(e.as_str())),
        };
        let next = match (event, to, node.target) {
            (Event::Done, State::Available, Some(State::Active | State::InService)) => {
                Some(Event::Deploy)
            }
            (Event::Done, State::Active, Some(State::InService)) => Some(Event::Configure),
            _ => None,
        }
        .filter(|_| !node.maintenance);
        let target = match (event, next) {
            (Event::Fail, _) => None,
            (_, Some(_)) => node.target,
            (_, None) if node.target == Some(to) => None,
            (_, None) => node.target,
        };
        move_node(
            tx,
            node,
            Move {
                event,
                to,
                target,
                last_error,
                actor,
                reason: message.as_deref(),
                now,
            },
        )
        .await?;
        let mut state = to;
        if let Some(ev) = next {
            let after = transition(to, ev).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut moved = node.clone();
            moved.state = to;
            moved.generation += 1;
            let target = if node.target == Some(after) {
                None
            } else {
                node.target
            };
            move_node(
                tx,
                &moved,
                Move {
                    event: ev,
                    to: after,
                    target,
                    last_error: None,
                    actor,
                    reason: Some("continuing toward the requested state"),
                    now,
                },
            )
            .await?;
            state = after;
        }
        self.queue_step_for(tx, node.id, state, now).await?;
        Ok(())
    }

    /// One reaper pass: lapsed leases become claimable, steps past their deadline
    /// fail their nodes, and nodes in a transient state with no step fail too.
    pub async fn reap(&self) -> Result<Reaped> {
        let now = now_ms();
        let resumed = sqlx::query(
            "UPDATE steps SET status = 'pending', owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE status = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(&self.write)
        .await?
        .rows_affected();
        let mut out = Reaped {
            resumed,
            ..Reaped::default()
        };
        if out.resumed > 0 {
            self.work_ready.notify_waiters();
        }
        let expired = sqlx::query(
            "SELECT s.id, s.phase, s.stage, s.created_at, s.last_error FROM steps s JOIN nodes n ON n.id = s.node_id \
             WHERE s.status IN ('pending', 'running', 'waiting') AND s.deadline < $1 AND n.maintenance = 0",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        for r in expired {
            let id: i64 = r.try_get("id")?;
            let phase: String = r.try_get("phase")?;
            let stage: String = r.try_get("stage")?;
            let created: i64 = r.try_get("created_at")?;
            let waited = Duration::from_millis((now - created).max(0) as u64).as_secs();
            let what = match stage.as_str() {
                "await" if phase == "inspect" => "waiting for the ramdisk's inventory",
                "await" => "waiting for the agent's report",
                "start" => "starting (BMC unreachable or busy?)",
                _ => "finishing",
            };
            let last_error: Option<String> = r.try_get("last_error")?;
            // The deadline is the end, not the cause: keep the last failure.
            let reason = match last_error {
                Some(e) => {
                    format!("{phase} timed out after {waited} s while {what}; last error: {e}")
                }
                None => format!("{phase} timed out after {waited} s while {what}"),
            };
            if self
                .close_step(id, Guard::Expired(now), Err(reason), None, "conductor")
                .await?
            {
                out.timed_out += 1;
            }
        }
        out.orphaned = self.fail_orphans(now).await?;
        // Spent agent tokens are kept a day past their expiry so that a late
        // agent is told precisely why it is refused, then purged.
        sqlx::query("DELETE FROM agent_tokens WHERE expires_at < $1")
            .bind(now - 86_400_000)
            .execute(&self.write)
            .await?;
        Ok(out)
    }

    /// Start-up recovery for a database only this process uses (SQLite): every
    /// running step was interrupted by the restart and is resumed at once.
    pub async fn resume_interrupted(&self) -> Result<u64> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE steps SET status = 'pending', owner = NULL, lease_until = NULL, run_after = $1, \
             updated_at = $1 WHERE status = 'running' RETURNING node_id, phase, stage",
        )
        .bind(now)
        .fetch_all(&self.write)
        .await?;
        for r in &rows {
            let node: String = r.try_get("node_id")?;
            let phase: String = r.try_get("phase")?;
            let stage: String = r.try_get("stage")?;
            if let Ok(id) = Uuid::parse_str(&node) {
                self.log_event(
                    id,
                    "step",
                    "conductor",
                    &format!("{phase} step resumed at stage '{stage}' after a restart"),
                )
                .await?;
            }
        }
        Ok(rows.len() as u64)
    }

    async fn fail_orphans(&self, now: i64) -> Result<u64> {
        let rows = sqlx::query(
            "SELECT id FROM nodes n WHERE state IN ('verifying', 'inspecting', 'cleaning', 'deploying', 'configuring') \
             AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.node_id = n.id AND s.status IN ('pending', 'running', 'waiting'))",
        )
        .fetch_all(&self.read)
        .await?;
        let mut n = 0;
        for r in rows {
            let id: String = r.try_get("id")?;
            let mut tx = self.write.begin().await?;
            let rec = self.record_in(&mut tx, &id).await?;
            let has_step = sqlx::query(
                "SELECT id FROM steps WHERE node_id = $1 AND status IN ('pending', 'running', 'waiting')",
            )
            .bind(id.clone())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if has_step || !rec.node.state.is_transient() {
                continue;
            }
            let reason = format!(
                "no work was recorded for state '{}' (recovered at start-up)",
                rec.node.state
            );
            match self
                .settle(&mut tx, &rec, &Err(reason), None, "conductor", now)
                .await
            {
                Ok(()) => {
                    tx.commit().await?;
                    n += 1;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        if n > 0 {
            self.events_written.notify_waiters();
        }
        Ok(n)
    }

    /// Every step of a node, newest first (for the API).
    pub async fn node_steps(&self, node_id: Uuid) -> Result<Vec<Step>> {
        let rows = sqlx::query(
            "SELECT id, node_id, phase, stage, status, attempts, deadline, outcome FROM steps \
             WHERE node_id = $1 ORDER BY id DESC LIMIT 50",
        )
        .bind(node_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(step_from_row).collect()
    }
}
