//! A booted machine's side: which boot script a MAC gets, who an agent token
//! speaks for, and what its reports do.
//!
//! Agent tokens (see [`crate::store::tokens`]): one per boot of a step,
//! handed to every fetch of that boot's script until the agent first uses
//! it, and to nobody after that. A token speaks for its node and step only,
//! and only for what the step expects: an inventory while inspecting, a
//! result while cleaning or deploying. Anything else is refused
//! (`wrong_step`) and recorded in the node's events. Forged, expired and
//! ended-boot tokens are refused and counted, and logged at most once per
//! 10 s. The boot script tells a MAC without a step nothing about its node
//! (see [`crate::netboot::script`]); each fetch is an event of the node, repeats counted
//! on one row.

use super::{App, AppError};
use crate::log_limit::LogLimit;
use crate::node::MacAddr;
use crate::protocol::{Command, Fact, Inventory};
use crate::state::State as NodeState;
use crate::store::tokens::DISCOVERY_PREFIX;
use crate::store::{AgentAuth, AgentTokenError, DiscoveryAuth, Handout, Phase, StepOutcome};

/// What a MAC that asks for its boot script gets (rendered by
/// [`crate::netboot::script`]).
#[derive(Debug, Clone)]
pub enum BootView {
    /// Nothing to boot from the network now (the reason is not told).
    Nothing,
    /// An installed node: its local disk.
    LocalDisk,
    /// No node has this MAC; discovery is on and hands out this token.
    Discover { token: String },
    /// A node's step waits for the ramdisk: this boot's token.
    Ramdisk {
        name: String,
        state: NodeState,
        token: String,
    },
    /// This boot's token was handed out and its agent has used it: it is not
    /// handed out again (racklift's next boot of the machine brings a new one).
    TokenUsed,
}

/// Who an agent request speaks for.
pub enum Caller {
    /// A node's boot, for the step under way.
    Boot(AgentAuth),
    /// A machine discovered at boot (enrolled once its inventory is in).
    Discovery(DiscoveryAuth),
    /// A node's boot whose step has ended (accepted for log lines only).
    Ended(uuid::Uuid),
}

/// What an accepted inventory did.
pub enum Accepted {
    /// Stored for the node's inspection.
    Stored,
    /// A discovered machine enrolled as this node.
    Enrolled { name: String, id: uuid::Uuid },
}

/// Refused agent tokens: one log line per 10 s (every one is counted).
static REFUSED: LogLimit = LogLimit::new(std::time::Duration::from_secs(10));

/// What a step's agent may report.
fn expected(phase: Phase) -> &'static str {
    match phase {
        Phase::Inspect => "an inventory (POST /v1/agent/inventory)",
        Phase::Clean => "a cleaning result (POST /v1/agent/status)",
        Phase::Deploy => "a deployment result (POST /v1/agent/status)",
        Phase::Verify | Phase::Configure => "no report",
    }
}

/// Checks an inventory and flattens it into facts. An agent inventory (an
/// object with an `agent` member) must parse whole; the error names the field.
pub fn checked_facts(raw: &serde_json::Value) -> Result<(Option<Inventory>, Vec<Fact>), AppError> {
    if !raw.is_object() {
        return Err(AppError::invalid(
            "invalid_body",
            "inventory: a JSON object is expected",
        ));
    }
    if raw.get("agent").is_none() {
        return Ok((None, crate::profiles::facts_from_inventory(raw)));
    }
    let inv: Inventory = serde_path_to_error::deserialize(raw).map_err(|e| {
        AppError::invalid(
            "invalid_body",
            format!("inventory.{}: {}", e.path(), e.inner()),
        )
    })?;
    let facts = crate::protocol::facts::facts(&inv);
    Ok((Some(inv), facts))
}

impl App {
    /// What a machine booting from `mac` (asking from `client`) is given: the
    /// ramdisk with this boot's token for a node with a step waiting for it,
    /// its local disk, nothing, or discovery for a MAC no node has.
    pub async fn boot_view(
        &self,
        mac: MacAddr,
        client: Option<std::net::IpAddr>,
    ) -> Result<BootView, AppError> {
        let Some(rec) = self.store.node_by_mac(mac).await? else {
            if !self.cfg.discovery_enabled_for(client) {
                self.metrics.count("boot_scripts_unknown_mac");
                return Ok(BootView::Nothing);
            }
            return Ok(
                match self
                    .store
                    .hand_out_discovery_token(&mac.to_string(), self.cfg.discovery.token_ttl)
                    .await?
                {
                    Handout::Token(token) => {
                        self.metrics.count("discovery_boots");
                        tracing::info!(%mac, "unknown machine booting: discovery ramdisk offered");
                        BootView::Discover { token }
                    }
                    Handout::Used => BootView::TokenUsed,
                },
            );
        };
        let n = &rec.node;
        let step = if !n.maintenance
            && matches!(
                n.state,
                NodeState::Inspecting | NodeState::Cleaning | NodeState::Deploying
            ) {
            self.store
                .active_step(n.id)
                .await?
                .filter(|s| !s.phase.boot_over(s.stage, s.failure.is_some()))
        } else {
            None
        };
        let (view, what) = match step {
            Some(step) => match self
                .store
                .hand_out_agent_token(n.id, step.id, self.cfg.boot.token_ttl)
                .await?
            {
                Handout::Token(token) => (
                    BootView::Ramdisk {
                        name: n.name.clone(),
                        state: n.state,
                        token,
                    },
                    format!(
                        "the ramdisk, with the agent token of this boot (step {})",
                        step.id
                    ),
                ),
                Handout::Used => (
                    BootView::TokenUsed,
                    format!(
                        "no ramdisk: the agent token of this boot (step {}) was used already and is not handed out again",
                        step.id
                    ),
                ),
            },
            None if n.maintenance => (
                BootView::Nothing,
                "nothing: the node is in maintenance".to_string(),
            ),
            None if matches!(
                n.state,
                NodeState::Active
                    | NodeState::InService
                    | NodeState::Configuring
                    | NodeState::ConfigureFailed
            ) =>
            {
                (BootView::LocalDisk, "its local disk".to_string())
            }
            None => (
                BootView::Nothing,
                format!(
                    "nothing: the node is {} with no step waiting for the ramdisk",
                    n.state
                ),
            ),
        };
        self.store
            .log_event_coalesced(
                n.id,
                "boot",
                "boot",
                &format!("boot script fetched by {mac}: {what}"),
            )
            .await?;
        Ok(view)
    }

    /// Who `token` speaks for: a live boot or discovery token; with
    /// `after_end`, also a boot token whose step has ended (not expired).
    /// Refusals are counted and logged (rate-limited).
    pub async fn agent_caller(&self, token: &str, after_end: bool) -> Result<Caller, AppError> {
        let checked = if token.starts_with(DISCOVERY_PREFIX) {
            self.store
                .check_discovery_token(token)
                .await?
                .map(Caller::Discovery)
        } else {
            match self.store.check_agent_token(token).await? {
                Err(AgentTokenError::Ended) if after_end => {
                    match self.store.agent_token_node(token).await? {
                        Some(node_id) => return Ok(Caller::Ended(node_id)),
                        None => Err(AgentTokenError::Unknown),
                    }
                }
                other => other.map(Caller::Boot),
            }
        };
        checked.map_err(|why| {
            self.metrics.count("agent_token_refused");
            if let Some(left_out) = REFUSED.allow() {
                tracing::warn!(reason = %why, refused_since_last_line = left_out, "agent token refused");
            }
            AppError::Unauthorized(why.to_string())
        })
    }

    /// Refuses a report its step does not take: `wrong_step`, counted, and
    /// recorded in the node's events (repeats counted on one row).
    async fn misfit(&self, auth: &AgentAuth, what: &str) -> AppError {
        self.metrics.count("agent_reports_refused");
        let text = format!(
            "agent report refused: {what} does not fit the {} step {} (it takes {})",
            auth.phase.as_str(),
            auth.step_id,
            expected(auth.phase)
        );
        if let Some(left_out) = REFUSED.allow() {
            tracing::warn!(node = %auth.node_id, refused_since_last_line = left_out, "{text}");
        }
        if let Err(e) = self
            .store
            .log_event_coalesced(auth.node_id, "agent", "agent", &text)
            .await
        {
            return e.into();
        }
        AppError::forbidden(
            "wrong_step",
            format!(
                "this boot's {} step takes {}, not {what}",
                auth.phase.as_str(),
                expected(auth.phase)
            ),
        )
    }

    /// An inventory from `caller`: stored for its inspection (and a profile
    /// selected), or, from a discovery token, the machine enrolled.
    pub async fn accept_inventory(
        &self,
        caller: Caller,
        raw: &serde_json::Value,
    ) -> Result<Accepted, AppError> {
        let (parsed, facts) = checked_facts(raw)?;
        let auth = match caller {
            Caller::Boot(a) => a,
            Caller::Discovery(d) => return self.enrol_discovered(d, raw, parsed, &facts).await,
            Caller::Ended(_) => {
                return Err(AppError::Unauthorized(AgentTokenError::Ended.to_string()));
            }
        };
        if auth.phase != Phase::Inspect {
            return Err(self.misfit(&auth, "an inventory").await);
        }
        if !auth.waiting {
            return Err(AppError::conflict(
                "not_waiting",
                "the inspection step is not waiting for the inventory yet; retry shortly",
            ));
        }
        let (what, size) = self.store_inventory(auth.node_id, raw, &facts).await?;
        let selected = self.select_profile(auth.node_id, &facts).await?;
        self.store
            .agent_report(
                auth.step_id,
                auth.phase,
                &StepOutcome {
                    ok: true,
                    message: Some(format!("{what} ({size} bytes); {}", selected.summary)),
                    note: selected.failure,
                },
            )
            .await?;
        Ok(Accepted::Stored)
    }

    /// Stores an inventory and its facts; a replaced inventory leaves an
    /// event saying what changed. Returns what happened and the size.
    pub(super) async fn store_inventory(
        &self,
        node_id: uuid::Uuid,
        raw: &serde_json::Value,
        facts: &[Fact],
    ) -> Result<(&'static str, usize), AppError> {
        let prev = self.store.put_inventory(node_id, raw, facts).await?;
        let size = raw.to_string().len();
        let what = if prev.is_some() {
            "inventory replaced"
        } else {
            "inventory received"
        };
        self.store
            .log_event(node_id, "agent", "agent", &format!("{what} ({size} bytes)"))
            .await?;
        if let Some(old) = prev {
            let changes = crate::protocol::facts::diff(&old, facts);
            let text = if changes.is_empty() {
                "hardware unchanged since the last inventory".to_string()
            } else {
                format!("hardware changed: {}", changes.join("; "))
            };
            self.store
                .log_event(node_id, "inventory", "agent", &text)
                .await?;
        }
        Ok((what, size))
    }

    /// The agent's result for its boot's step (cleaning or deploying).
    pub async fn record_result(
        &self,
        caller: Caller,
        ok: bool,
        message: Option<String>,
    ) -> Result<(), AppError> {
        let Caller::Boot(auth) = caller else {
            return Err(AppError::forbidden(
                "wrong_step",
                "a discovery boot has no step to report on: it posts its inventory",
            ));
        };
        if !matches!(auth.phase, Phase::Clean | Phase::Deploy) {
            return Err(self.misfit(&auth, "a step result").await);
        }
        let outcome = StepOutcome {
            ok,
            message,
            note: None,
        };
        if !self
            .store
            .agent_report(auth.step_id, auth.phase, &outcome)
            .await?
        {
            return Err(AppError::conflict(
                "not_waiting",
                "this boot's step is not waiting for a report; retry shortly",
            ));
        }
        Ok(())
    }

    /// The agent's log lines, as events of its node (a machine not enrolled
    /// yet: the server's own log).
    pub async fn agent_log(&self, caller: &Caller, lines: Vec<String>) -> Result<(), AppError> {
        let node_id = match caller {
            Caller::Boot(a) => Some(a.node_id),
            Caller::Discovery(d) => d.node_id,
            Caller::Ended(id) => Some(*id),
        };
        for line in lines {
            match (node_id, caller) {
                (Some(id), _) => self.store.log_event(id, "agent", "agent", &line).await?,
                (None, Caller::Discovery(d)) => tracing::info!(mac = %d.mac, "agent: {line}"),
                (None, _) => {}
            }
        }
        Ok(())
    }
}

/// What the agent should do next: `poweroff` once its report is in (the step
/// is finishing, or the discovered machine is enrolled), else `wait` (also
/// while the step is still starting: a fast machine can boot before the BMC
/// calls return).
pub fn next_command(caller: &Caller) -> Command {
    match caller {
        Caller::Boot(auth) if auth.finishing => Command::PowerOff,
        Caller::Discovery(d) if d.node_id.is_some() => Command::PowerOff,
        _ => Command::Wait,
    }
}
