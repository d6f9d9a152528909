//! Durable work: each transient state of a node has one step row, claimed by a
//! conductor worker under a lease, moved through its stages, and closed with the
//! node's `done` or `fail` transition in the same transaction.
//!
//! A step moves through its phase's plan ([`crate::plan`]) one stage at a
//! time; each stage's result is written (to `step_stages`) in the same
//! statement group that moves the step to its next stage, so a restart
//! resumes at the first unfinished stage. A stage that awaits the agent leaves
//! the step `waiting` until the report comes. A failed step keeps its reason
//! in `failure` while its cleanups run, then closes. A step whose lease lapses
//! (its worker died) is taken over; a step past its phase deadline fails its
//! node (after its cleanups, when it owes any).

use super::{
    Move, NodeRecord, Result, Store, StoreError, move_node, node_cols, node_from_row, now_ms,
};
pub use crate::plan::{Phase, Stage, StageResult, StepStatus};
use crate::state::{Continuation, Event, continuation, target_on_arrival, transition};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};
use std::time::Duration;
use uuid::Uuid;

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
    /// The first unfinished stage of the phase's plan.
    pub stage: Stage,
    pub status: StepStatus,
    pub attempts: i64,
    pub deadline: i64,
    pub outcome: Option<StepOutcome>,
    /// Set when the step failed: its cleanups run, then it closes with this.
    pub failure: Option<String>,
}

/// One recorded stage run or cleanup of a step.
#[derive(Debug, Clone)]
pub struct StageRecord {
    pub step_id: i64,
    pub stage: Stage,
    /// The cleanup this record is of, if it is one.
    pub cleanup: Option<String>,
    pub result: StageResult,
    pub message: Option<String>,
    pub at: i64,
}

/// The columns of a step, in `step_from_row`'s order.
macro_rules! step_cols {
    () => {
        "id, node_id, phase, stage, status, attempts, deadline, outcome, failure"
    };
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
    let outcome: Option<String> = r.try_get("outcome")?;
    Ok(Step {
        id: r.try_get("id")?,
        node_id: Uuid::parse_str(&node_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        phase: parse_phase(&r.try_get::<String, _>("phase")?)?,
        stage: parse_stage(&r.try_get::<String, _>("stage")?)?,
        status: StepStatus::parse(&r.try_get::<String, _>("status")?)
            .ok_or_else(|| StoreError::Corrupt("unknown step status".into()))?,
        attempts: r.try_get("attempts")?,
        deadline: r.try_get("deadline")?,
        outcome: outcome
            .map(|o| serde_json::from_str(&o).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?,
        failure: r.try_get("failure")?,
    })
}

/// A phase name read from the database.
pub(super) fn parse_phase(s: &str) -> Result<Phase> {
    Phase::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown step phase '{s}'")))
}

fn parse_stage(s: &str) -> Result<Stage> {
    Stage::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown step stage '{s}'")))
}

/// A stage run of a step, to record (a cleanup's is written by
/// `record_cleanup`, guarded by the step's owner).
#[derive(Clone, Copy)]
struct Run<'a> {
    stage: Stage,
    result: StageResult,
    message: Option<&'a str>,
}

impl<'a> Run<'a> {
    fn of(stage: Stage, result: StageResult, message: Option<&'a str>) -> Self {
        Run {
            stage,
            result,
            message,
        }
    }
}

/// Records a stage run of a step.
async fn insert_record(
    tx: &mut Transaction<'static, Any>,
    step_id: i64,
    run: Run<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO step_stages (step_id, stage, result, message, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(step_id)
    .bind(run.stage.as_str())
    .bind(run.result.as_str())
    .bind(run.message.map(str::to_string))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a guarded move of a step: when the step moved (it was still ours),
/// the run is recorded and both commit together; otherwise nothing is.
async fn commit_with(
    mut tx: Transaction<'static, Any>,
    moved: bool,
    step_id: i64,
    run: Run<'_>,
    now: i64,
) -> Result<bool> {
    if !moved {
        return Ok(false);
    }
    insert_record(&mut tx, step_id, run, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// A guarded update of a step, bound and ready to run.
type StepUpdate<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

impl Store {
    /// Runs a guarded update of a step and, when it moved the step, records
    /// `run` with it; false (and nothing written) when the guard did not hold.
    async fn move_step(
        &self,
        update: StepUpdate<'_>,
        step_id: i64,
        run: Run<'_>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let moved = update.execute(&mut *tx).await?.rows_affected() == 1;
        commit_with(tx, moved, step_id, run, now).await
    }

    /// Claims the next due step of a node not in maintenance, under a lease.
    pub async fn claim_step(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Step, NodeRecord)>> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE steps SET status = 'running', owner = $1, lease_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT s.id FROM steps s JOIN nodes n ON n.id = s.node_id \
                         WHERE s.status = 'pending' AND s.run_after <= $3 AND n.maintenance = 0 \
                         ORDER BY s.run_after, s.id LIMIT 1) \
             AND status = 'pending' \
             RETURNING ",
            step_cols!()
        ))
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

    /// A stage of a running step is done: it is recorded and the step moves
    /// to `next`, still held by its worker (or `waiting`, when `next` awaits
    /// a report). False when the step is no longer ours.
    pub async fn step_advance(
        &self,
        step_id: i64,
        owner: &str,
        done: Stage,
        message: Option<&str>,
        next: Stage,
    ) -> Result<bool> {
        let now = now_ms();
        let q = if next.awaits() {
            "UPDATE steps SET status = 'waiting', stage = $1, owner = NULL, lease_until = NULL, \
             attempts = 0, last_error = NULL, updated_at = $2 \
             WHERE id = $3 AND status = 'running' AND owner = $4"
        } else {
            "UPDATE steps SET stage = $1, attempts = 1, last_error = NULL, updated_at = $2 \
             WHERE id = $3 AND status = 'running' AND owner = $4"
        };
        let update = sqlx::query(q)
            .bind(next.as_str())
            .bind(now)
            .bind(step_id)
            .bind(owner.to_string());
        let run = Run::of(done, StageResult::Done, message);
        self.move_step(update, step_id, run, now).await
    }

    /// The step waits again at its (awaiting) stage.
    pub async fn step_wait(&self, step_id: i64, owner: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE steps SET status = 'waiting', owner = NULL, lease_until = NULL, \
             attempts = 0, updated_at = $1 WHERE id = $2 AND status = 'running' AND owner = $3",
        )
        .bind(now_ms())
        .bind(step_id)
        .bind(owner.to_string())
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// A transient failure of `stage`: it runs again after `delay`.
    pub async fn step_retry(
        &self,
        step_id: i64,
        owner: &str,
        stage: Stage,
        error: &str,
        delay: Duration,
    ) -> Result<bool> {
        let now = now_ms();
        let update = sqlx::query(
            "UPDATE steps SET status = 'pending', owner = NULL, lease_until = NULL, last_error = $1, \
             run_after = $2, updated_at = $3 WHERE id = $4 AND status = 'running' AND owner = $5",
        )
        .bind(error.to_string())
        .bind(now + delay.as_millis() as i64)
        .bind(now)
        .bind(step_id)
        .bind(owner.to_string());
        if !self
            .move_step(
                update,
                step_id,
                Run::of(stage, StageResult::Retried, Some(error)),
                now,
            )
            .await?
        {
            return Ok(false);
        }
        self.work_ready.notify_waiters();
        Ok(true)
    }

    /// `stage` failed: the step keeps the reason while its worker runs the
    /// cleanups it owes, then closes.
    pub async fn step_failing(
        &self,
        step_id: i64,
        owner: &str,
        stage: Stage,
        reason: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let update = sqlx::query(
            "UPDATE steps SET failure = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'running' AND owner = $4",
        )
        .bind(reason.to_string())
        .bind(now)
        .bind(step_id)
        .bind(owner.to_string());
        let run = Run::of(stage, StageResult::Failed, Some(reason));
        self.move_step(update, step_id, run, now).await
    }

    /// Records how a cleanup of a running step went.
    pub async fn record_cleanup(
        &self,
        step_id: i64,
        owner: &str,
        stage: Stage,
        cleanup: &str,
        result: Result<Option<String>, String>,
    ) -> Result<bool> {
        let (result, message) = match &result {
            Ok(m) => (StageResult::Done, m.as_deref()),
            Err(e) => (StageResult::Failed, Some(e.as_str())),
        };
        // The owner's guard is the insert's own condition: no record is
        // written for a step that is no longer ours, whenever it changed hands.
        let inserted = sqlx::query(
            "INSERT INTO step_stages (step_id, stage, cleanup, result, message, at) \
             SELECT id, $1, $2, $3, $4, $5 FROM steps WHERE id = $6 AND status = 'running' AND owner = $7",
        )
        .bind(stage.as_str())
        .bind(cleanup.to_string())
        .bind(result.as_str())
        .bind(message.map(str::to_string))
        .bind(now_ms())
        .bind(step_id)
        .bind(owner.to_string())
        .execute(&self.write)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// The agent's report for a waiting step: recorded as the result of its
    /// awaiting stage; the step moves on to the next stage, or (a failure)
    /// to its cleanups.
    pub async fn agent_report(
        &self,
        step_id: i64,
        phase: Phase,
        outcome: &StepOutcome,
    ) -> Result<bool> {
        let now = now_ms();
        let (stage, failure, result) = if outcome.ok {
            let next = phase.after(Stage::AwaitAgent).unwrap_or(Stage::AwaitAgent);
            (next, None, StageResult::Done)
        } else {
            let why = outcome
                .message
                .clone()
                .unwrap_or_else(|| "the agent reported a failure".into());
            (Stage::AwaitAgent, Some(why), StageResult::Failed)
        };
        let run = Run::of(Stage::AwaitAgent, result, outcome.message.as_deref());
        let update = sqlx::query(
            "UPDATE steps SET status = 'pending', stage = $1, outcome = $2, failure = $3, run_after = $4, \
             attempts = 0, updated_at = $4 WHERE id = $5 AND status = 'waiting' AND stage = $6",
        )
        .bind(stage.as_str())
        .bind(serde_json::to_string(outcome).unwrap_or_default())
        .bind(failure)
        .bind(now)
        .bind(step_id)
        .bind(Stage::AwaitAgent.as_str());
        if !self.move_step(update, step_id, run, now).await? {
            return Ok(false);
        }
        self.work_ready.notify_waiters();
        Ok(true)
    }

    /// The active step of a node.
    pub async fn active_step(&self, node_id: Uuid) -> Result<Option<Step>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            step_cols!(),
            " FROM steps WHERE node_id = $1 AND status IN ('pending', 'running', 'waiting')"
        ))
        .bind(node_id.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| step_from_row(&r)).transpose()
    }

    /// Closes a running step owned by `owner` with the node's `done` or `fail`.
    /// Returns false when the step was no longer ours (aborted, timed out, taken over).
    /// `last`: the final stage, done, recorded with its message in the same
    /// transaction (none when the step failed: its stage is recorded already).
    pub async fn step_finish(
        &self,
        step: &Step,
        owner: &str,
        result: Result<Option<String>, String>,
        last: Option<(Stage, Option<String>)>,
    ) -> Result<bool> {
        let note = step.outcome.as_ref().and_then(|o| o.note.clone());
        let record = last.map(|(stage, m)| (stage, StageResult::Done, m));
        self.close_step(
            step.id,
            Guard::Owner(owner),
            result,
            note,
            record,
            "conductor",
        )
        .await
    }

    async fn close_step(
        &self,
        step_id: i64,
        guard: Guard<'_>,
        result: Result<Option<String>, String>,
        note: Option<String>,
        record: Option<(Stage, StageResult, Option<String>)>,
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
            if let Some((stage, r, m)) = &record {
                insert_record(&mut tx, step_id, Run::of(*stage, *r, m.as_deref()), now).await?;
            }
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
        let Continuation { next, target } = continuation(event, to, node.target, node.maintenance);
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
            move_node(
                tx,
                &moved,
                Move {
                    event: ev,
                    to: after,
                    target: target_on_arrival(after, target),
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
        // A failed step whose cleanups have not finished within this grace
        // past its deadline is closed without them: a node is never stranded.
        const CLEANUP_GRACE_MS: i64 = 300_000;
        let expired = sqlx::query(
            "SELECT s.id, s.phase, s.stage, s.created_at, s.last_error, s.failure FROM steps s \
             JOIN nodes n ON n.id = s.node_id \
             WHERE s.status IN ('pending', 'running', 'waiting') AND s.deadline < $1 AND n.maintenance = 0 \
             AND (s.failure IS NULL OR s.deadline < $2)",
        )
        .bind(now)
        .bind(now - CLEANUP_GRACE_MS)
        .fetch_all(&self.read)
        .await?;
        for r in expired {
            let id: i64 = r.try_get("id")?;
            let phase = parse_phase(&r.try_get::<String, _>("phase")?)?;
            let stage = parse_stage(&r.try_get::<String, _>("stage")?)?;
            let created: i64 = r.try_get("created_at")?;
            let waited = Duration::from_millis((now - created).max(0) as u64).as_secs();
            let what = match stage {
                Stage::AwaitAgent if phase == Phase::Inspect => {
                    "waiting for the ramdisk's inventory".to_string()
                }
                Stage::AwaitAgent => "waiting for the agent's report".to_string(),
                s if phase.position(s) == Some(0) => {
                    format!("at stage {s} (BMC unreachable or busy?)")
                }
                s => format!("at stage {s}"),
            };
            let last_error: Option<String> = r.try_get("last_error")?;
            let failure: Option<String> = r.try_get("failure")?;
            let owes = failure.is_none() && !phase.cleanups_at(stage).is_empty();
            // The deadline is the end, not the cause: keep the last failure.
            let reason = match (failure, last_error) {
                (Some(f), _) => format!("{f} (its cleanups did not finish in time)"),
                (None, Some(e)) => {
                    format!("{phase} timed out after {waited} s while {what}; last error: {e}")
                }
                (None, None) => format!("{phase} timed out after {waited} s while {what}"),
            };
            let closed = if owes {
                // The cleanups run in a worker (the machine may be running
                // the ramdisk), which then closes the step with the reason.
                let mut tx = self.write.begin().await?;
                let res = sqlx::query(
                    "UPDATE steps SET failure = $1, status = 'pending', owner = NULL, lease_until = NULL, \
                     run_after = $2, updated_at = $2 \
                     WHERE id = $3 AND status IN ('pending', 'running', 'waiting') AND failure IS NULL",
                )
                .bind(reason.clone())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let run = Run::of(stage, StageResult::Failed, Some(&reason));
                let marked = commit_with(tx, res.rows_affected() == 1, id, run, now).await?;
                if marked {
                    self.work_ready.notify_waiters();
                }
                marked
            } else {
                let record = Some((stage, StageResult::Failed, Some(reason.clone())));
                self.close_step(
                    id,
                    Guard::Expired(now),
                    Err(reason),
                    None,
                    record,
                    "conductor",
                )
                .await?
            };
            if closed {
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
        let rows = sqlx::query(concat!(
            "SELECT ",
            step_cols!(),
            " FROM steps WHERE node_id = $1 ORDER BY id DESC LIMIT 50"
        ))
        .bind(node_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(step_from_row).collect()
    }

    /// The stage records of a node's steps (those `node_steps` lists), in order.
    pub async fn stage_records(&self, node_id: Uuid) -> Result<Vec<StageRecord>> {
        let rows = sqlx::query(
            "SELECT r.step_id, r.stage, r.cleanup, r.result, r.message, r.at FROM step_stages r \
             WHERE r.step_id IN (SELECT id FROM steps WHERE node_id = $1 ORDER BY id DESC LIMIT 50) \
             ORDER BY r.id",
        )
        .bind(node_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StageRecord {
                    step_id: r.try_get("step_id")?,
                    stage: parse_stage(&r.try_get::<String, _>("stage")?)?,
                    cleanup: r.try_get("cleanup")?,
                    result: StageResult::parse(&r.try_get::<String, _>("result")?)
                        .ok_or_else(|| StoreError::Corrupt("unknown stage result".into()))?,
                    message: r.try_get("message")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }
}
