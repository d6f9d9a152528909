//! Operator operations on nodes: enrol, change, delete, act.
//!
//! An operator's enrolment or change naming a MAC that a discovered node
//! nobody has managed yet holds takes the MAC from it; what was taken is
//! returned (the answer's `notes`) and recorded in both nodes' events.

use super::{App, AppError};
use crate::node::limits::{self, check_len, check_opt};
use crate::node::{MacAddr, NewNode, Node, NodePatch};
use crate::state::Event;

/// Every action name an operator may ask for.
pub const ACTIONS: &str = "manage, inspect, provide, deploy, configure, reprovision, undeploy, abort, maintenance_on, maintenance_off";

impl App {
    /// Takes the MACs an operator's node names from discovered nodes nobody
    /// has managed yet; returns what was taken.
    async fn take_from_discovered(
        &self,
        macs: &[MacAddr],
        name: &str,
        node: Option<uuid::Uuid>,
        actor: &str,
    ) -> Result<Vec<String>, AppError> {
        let notes = self
            .store
            .take_discovered_macs(macs, name, node, actor)
            .await?;
        if !notes.is_empty() {
            self.metrics.count("discovered_macs_taken");
        }
        Ok(notes)
    }

    /// Records on the operator's node what its change took from discovered
    /// nodes (the change itself is already committed: a failure is logged).
    async fn note_taken(&self, node: uuid::Uuid, notes: &[String], actor: &str) {
        for n in notes {
            if let Err(e) = self.store.log_event(node, "updated", actor, n).await {
                tracing::warn!(error = %e, "recording a taken MAC failed");
            }
        }
    }

    /// Enrols an operator's node; returns it and the MACs taken from
    /// discovered nodes.
    pub async fn enrol_node(
        &self,
        new: &NewNode,
        actor: &str,
    ) -> Result<(Node, Vec<String>), AppError> {
        let (name, macs) = new.validate()?;
        let notes = self.take_from_discovered(&macs, &name, None, actor).await?;
        let node = self.store.create_node(new, actor).await?;
        self.note_taken(node.id, &notes, actor).await;
        Ok((node, notes))
    }

    /// Changes a node (guarded by `patch.generation` when given).
    pub async fn update_node(
        &self,
        id: &str,
        patch: &NodePatch,
        actor: &str,
    ) -> Result<Node, AppError> {
        let mut wanted: Vec<MacAddr> = patch.macs.clone().unwrap_or_default();
        wanted.extend(patch.boot_mac.flatten());
        let mut notes = Vec::new();
        if !wanted.is_empty() {
            patch.check()?;
            let cur = self.store.get_node(id).await?;
            let name = patch.name.clone().unwrap_or(cur.name);
            notes = self
                .take_from_discovered(&wanted, &name, Some(cur.id), actor)
                .await?;
        }
        let node = self.store.update_node(id, patch, actor).await?;
        self.note_taken(node.id, &notes, actor).await;
        Ok(node)
    }

    /// Deletes a node (only in a state that allows it); returns it as it was.
    pub async fn delete_node(&self, id: &str, actor: &str) -> Result<Node, AppError> {
        Ok(self.store.delete_node(id, actor).await?)
    }

    /// An operator's action on a node by name (`manage`, ...,
    /// `maintenance_on`), applied only at `generation` when given; the work
    /// it starts is queued for the conductor.
    pub async fn act(
        &self,
        id: &str,
        action: &str,
        reason: Option<&str>,
        generation: Option<i64>,
        actor: &str,
    ) -> Result<Node, AppError> {
        check_opt("reason", reason, limits::REASON)?;
        check_len("action", action, limits::WORD)?;
        Ok(match action {
            "maintenance_on" => {
                let reason = reason.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
                    AppError::invalid(
                        "invalid_field",
                        "reason: maintenance_on needs a reason, e.g. {\"reason\": \"replacing a DIMM\"}",
                    )
                })?;
                self.store
                    .set_maintenance(id, true, Some(reason), actor)
                    .await?
            }
            "maintenance_off" => self.store.set_maintenance(id, false, reason, actor).await?,
            other => {
                let event = other
                    .parse::<Event>()
                    .ok()
                    .filter(|e| e.is_operator_action())
                    .ok_or_else(|| {
                        AppError::invalid(
                            "unknown_action",
                            format!("unknown action '{other}'; actions are: {ACTIONS}"),
                        )
                    })?;
                self.store.act(id, event, actor, reason, generation).await?
            }
        })
    }
}
