//! The ramdisk's side of the API: the boot script a machine fetches, and the
//! agent's reports, authenticated by a per-boot token (never an operator token).
//!
//! Agent tokens (see [`crate::store::tokens`]): one per boot of a step. The
//! boot script hands it to every fetch of that boot until the agent first
//! uses it, and to nobody after that; racklift's next boot of the machine
//! for the step replaces it. A token speaks for its node and step only, and
//! only for what the step expects: an inventory while inspecting, a result
//! (`/v1/agent/status`) while cleaning or deploying. Anything else is
//! refused `403 wrong_step` and recorded in the node's events. The token is
//! checked before the body is read as JSON, so a caller without one learns
//! nothing from its body's errors. Forged, expired and ended-boot tokens are
//! refused and counted, and logged at most once per 10 s.
//!
//! The boot script tells a MAC without a step nothing about its node (see
//! [`crate::boot`]); each fetch is an event of the node, repeats counted on
//! one row.
//!
//! Discovery: a MAC no node has, asking while discovery is on, gets the
//! ramdisk with a discovery token (`rld_...`, bound to that MAC, expiring,
//! handed out like an agent token). Its inventory enrols the machine (named
//! from its serial number, else its MAC, with the BMC address the agent
//! found) and runs profile selection; the token then speaks for that node's
//! log and heartbeats, and enrols nothing more. The machine holds the MAC it
//! booted from and those of its inventory no node holds (a MAC another node
//! holds is an event on both, never a refusal); at most
//! `discovery.max_per_minute` machines are enrolled in any minute (`429`
//! with `Retry-After` beyond). Answers to these callers name no other node.

use super::{ApiError, ApiJson, AppState, bearer};
use crate::agent::inventory::Inventory;
use crate::boot::{BootView, RamdiskParams, script};
use crate::log_limit::LogLimit;
use crate::node::MacAddr;
use crate::node::limits;
use crate::node::{BmcDriverKind, BmcInput, NewNode};
use crate::profiles::matcher::Fact;
use crate::state::State as NodeState;
use crate::store::profiles::Candidate;
use crate::store::tokens::DISCOVERY_PREFIX;
use crate::store::{AgentAuth, DiscoveryAuth, Handout, Phase, StepOutcome, StoreError};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// `GET /boot.ipxe?mac=...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BootParams {
    /// The MAC the machine booted from (iPXE: `${net0/mac}`).
    mac: String,
}

#[utoipa::path(get, path = "/boot.ipxe", params(BootParams),
    responses((status = 200, description = "An iPXE script", content_type = "text/plain"), (status = 400, body = super::error::ErrorBody, description = "No MAC, or not a MAC (invalid_query)")))]
pub(super) async fn boot_script(
    State(app): State<AppState>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    params: Result<Query<BootParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let mac: MacAddr = p
        .mac
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_query", format!("mac: {e}")))?;
    let client_ip = client.map(|c| c.0.0.ip());
    let view = match app.store.node_by_mac(mac).await? {
        None if app.cfg.discovery_enabled_for(client_ip) => {
            match app
                .store
                .hand_out_discovery_token(&mac.to_string(), app.cfg.discovery.token_ttl)
                .await?
            {
                Handout::Token(token) => {
                    app.metrics.count("discovery_boots");
                    tracing::info!(%mac, "unknown machine booting: discovery ramdisk offered");
                    BootView::Discover { token }
                }
                Handout::Used => BootView::TokenUsed,
            }
        }
        None => {
            app.metrics.count("boot_scripts_unknown_mac");
            BootView::Nothing
        }
        Some(rec) => {
            let n = &rec.node;
            let step = if !n.maintenance
                && matches!(
                    n.state,
                    NodeState::Inspecting | NodeState::Cleaning | NodeState::Deploying
                ) {
                app.store
                    .active_step(n.id)
                    .await?
                    .filter(|s| s.stage != "finish")
            } else {
                None
            };
            let (view, what) = match step {
                Some(step) => match app
                    .store
                    .hand_out_agent_token(n.id, step.id, app.cfg.boot.token_ttl)
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
            app.store
                .log_event_coalesced(
                    n.id,
                    "boot",
                    "boot",
                    &format!("boot script fetched by {mac}: {what}"),
                )
                .await?;
            view
        }
    };
    let b = &app.cfg.boot;
    let params = RamdiskParams {
        api_url: &app.cfg.http.public_url,
        kernel_url: &b.kernel_url,
        initrd_url: &b.initrd_url,
        kernel_args: &b.kernel_args,
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script(&view, mac, &params),
    )
        .into_response())
}

/// Who an agent request speaks for.
enum Caller {
    /// A node's boot, for the step under way.
    Boot(AgentAuth),
    /// A machine discovered at boot (enrolled once its inventory is in).
    Discovery(DiscoveryAuth),
    /// A node's boot whose step has ended (accepted for log lines only).
    Ended(uuid::Uuid),
}

/// The agent a request speaks for, checked before its body is read: a
/// live boot or discovery token (an ended one is refused).
pub(super) struct Agent(Caller);

/// Like [`Agent`], but a boot token whose step has ended (and which has not
/// expired) still speaks for its node: the agent's last log lines can arrive
/// after the server finished the step.
pub(super) struct AgentLate(Caller);

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        agent_for(app, &parts.headers, false).await.map(Agent)
    }
}

impl FromRequestParts<AppState> for AgentLate {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        agent_for(app, &parts.headers, true).await.map(AgentLate)
    }
}

/// Refused agent tokens: one log line per 10 s (every one is counted).
static REFUSED: LogLimit = LogLimit::new(std::time::Duration::from_secs(10));

/// Checks the agent's token; refusals are counted and logged (rate-limited).
async fn agent_for(
    app: &AppState,
    headers: &HeaderMap,
    after_end: bool,
) -> Result<Caller, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "agent requests carry 'Authorization: Bearer <racklift.token from the kernel command line>'",
        ));
    };
    let checked = if token.starts_with(DISCOVERY_PREFIX) {
        app.store
            .check_discovery_token(token)
            .await?
            .map(Caller::Discovery)
    } else {
        match app.store.check_agent_token(token).await? {
            Err(crate::store::AgentTokenError::Ended) if after_end => {
                match app.store.agent_token_node(token).await? {
                    Some(node_id) => {
                        return Ok(Caller::Ended(node_id));
                    }
                    None => Err(crate::store::AgentTokenError::Unknown),
                }
            }
            other => other.map(Caller::Boot),
        }
    };
    checked.map_err(|why| {
        app.metrics.count("agent_token_refused");
        if let Some(left_out) = REFUSED.allow() {
            tracing::warn!(reason = %why, refused_since_last_line = left_out, "agent token refused");
        }
        ApiError::unauthorized(why.to_string())
    })
}

/// What a step's agent may report.
fn expected(phase: Phase) -> &'static str {
    match phase {
        Phase::Inspect => "an inventory (POST /v1/agent/inventory)",
        Phase::Clean => "a cleaning result (POST /v1/agent/status)",
        Phase::Deploy => "a deployment result (POST /v1/agent/status)",
        Phase::Verify | Phase::Configure => "no report",
    }
}

/// Refuses a report its step does not take: `403 wrong_step`, counted, and
/// recorded in the node's events (repeats counted on one row).
async fn misfit(app: &AppState, auth: &AgentAuth, what: &str) -> ApiError {
    app.metrics.count("agent_reports_refused");
    let text = format!(
        "agent report refused: {what} does not fit the {} step {} (it takes {})",
        auth.phase.as_str(),
        auth.step_id,
        expected(auth.phase)
    );
    if let Some(left_out) = REFUSED.allow() {
        tracing::warn!(node = %auth.node_id, refused_since_last_line = left_out, "{text}");
    }
    if let Err(e) = app
        .store
        .log_event_coalesced(auth.node_id, "agent", "agent", &text)
        .await
    {
        return e.into();
    }
    ApiError::forbidden_code(
        "wrong_step",
        format!(
            "this boot's {} step takes {}, not {what}",
            auth.phase.as_str(),
            expected(auth.phase)
        ),
    )
}

/// `POST /v1/agent/inventory`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InventoryBody {
    /// The machine's inventory, as collected by racklift-agent (an object
    /// with an `agent` member is checked field by field), or any JSON object.
    #[schema(value_type = Object)]
    inventory: serde_json::Value,
}

/// Checks an inventory and flattens it into facts. An agent inventory must
/// parse whole; the error names the field.
fn checked_facts(raw: &serde_json::Value) -> Result<(Option<Inventory>, Vec<Fact>), ApiError> {
    if !raw.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "inventory: a JSON object is expected",
        ));
    }
    if raw.get("agent").is_none() {
        return Ok((None, crate::profiles::facts_from_inventory(raw)));
    }
    let inv: Inventory = serde_path_to_error::deserialize(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("inventory.{}: {}", e.path(), e.inner()),
        )
    })?;
    let facts = crate::agent::facts::facts(&inv);
    Ok((Some(inv), facts))
}

#[utoipa::path(post, path = "/v1/agent/inventory", request_body = InventoryBody,
    responses((status = 202, description = "Stored"), (status = 400, body = super::error::ErrorBody, description = "Malformed inventory (the message names the field)"),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown, expired, or of a boot that has ended (checked before the body)"),
        (status = 403, body = super::error::ErrorBody, description = "The token's step takes no inventory (wrong_step; recorded in the node's events)"),
        (status = 409, body = super::error::ErrorBody, description = "The inspection is not waiting for the inventory yet, or the discovered machine's boot MAC is taken"),
        (status = 429, body = super::error::ErrorBody, description = "discovery.max_per_minute machines were enrolled in the last minute; Retry-After says when to ask again")),
    security(("agent" = [])))]
pub(super) async fn inventory(
    State(app): State<AppState>,
    Agent(caller): Agent,
    ApiJson(body): ApiJson<InventoryBody>,
) -> Result<Response, ApiError> {
    let (parsed, facts) = checked_facts(&body.inventory)?;
    let auth = match caller {
        Caller::Boot(a) => a,
        Caller::Discovery(d) => return discovered(&app, d, &body.inventory, parsed, &facts).await,
        Caller::Ended(_) => {
            return Err(ApiError::unauthorized(
                crate::store::AgentTokenError::Ended.to_string(),
            ));
        }
    };
    if auth.phase != Phase::Inspect {
        return Err(misfit(&app, &auth, "an inventory").await);
    }
    if !auth.waiting {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_waiting",
            "the inspection step is not waiting for the inventory yet; retry shortly",
        ));
    }
    let (what, size) = store_inventory(&app, auth.node_id, &body.inventory, &facts).await?;
    let (selected, note) = select_profile(&app, auth.node_id, &facts).await?;
    app.store
        .agent_report(
            auth.step_id,
            &StepOutcome {
                ok: true,
                message: Some(format!("{what} ({size} bytes); {selected}")),
                note,
            },
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"stored": true}))).into_response())
}

/// Stores an inventory and its facts; a replaced inventory leaves an event
/// saying what changed. Returns what happened and the document's size.
async fn store_inventory(
    app: &AppState,
    node_id: uuid::Uuid,
    raw: &serde_json::Value,
    facts: &[Fact],
) -> Result<(&'static str, usize), ApiError> {
    let prev = app.store.put_inventory(node_id, raw, facts).await?;
    let size = raw.to_string().len();
    let what = if prev.is_some() {
        "inventory replaced"
    } else {
        "inventory received"
    };
    app.store
        .log_event(node_id, "agent", "agent", &format!("{what} ({size} bytes)"))
        .await?;
    if let Some(old) = prev {
        let changes = crate::agent::facts::diff(&old, facts);
        let text = if changes.is_empty() {
            "hardware unchanged since the last inventory".to_string()
        } else {
            format!("hardware changed: {}", changes.join("; "))
        };
        app.store
            .log_event(node_id, "inventory", "agent", &text)
            .await?;
    }
    Ok((what, size))
}

/// A node name from a serial number: lower case, other characters as `-`.
fn name_from_serial(serial: &str) -> Option<String> {
    let s: String = serial
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let s: String = s.chars().take(63).collect();
    (!s.is_empty() && crate::node::validate_name("name", &s).is_ok()).then_some(s)
}

/// Enrols a discovered machine from its inventory (once per token).
async fn discovered(
    app: &AppState,
    d: DiscoveryAuth,
    raw: &serde_json::Value,
    inv: Option<Inventory>,
    facts: &[Fact],
) -> Result<Response, ApiError> {
    if d.node_id.is_some() {
        return Err(ApiError::unauthorized(
            crate::store::AgentTokenError::Used.to_string(),
        ));
    }
    let Some(inv) = inv else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "inventory: a discovered machine must send racklift-agent's inventory (an object with 'agent', 'system', 'nics', ...)",
        ));
    };
    let max = app.cfg.discovery.max_per_minute;
    let limited = |frees_at: Option<i64>| {
        app.metrics.count("discovery_rate_limited");
        let wait_ms = frees_at.map_or(60_000, |t| t - crate::store::now_ms());
        ApiError::too_many(
            format!(
                "discovery enrols at most {max} machines a minute (discovery.max_per_minute); ask again later"
            ),
            (wait_ms.max(0) as u64).div_ceil(1000),
        )
    };
    let (recent, frees_at) = app.store.discoveries_last_minute().await?;
    if recent >= i64::from(max) {
        return Err(limited(frees_at));
    }
    if !app.store.claim_discovery_token(&d.hash, max).await? {
        let (recent, frees_at) = app.store.discoveries_last_minute().await?;
        if recent >= i64::from(max) {
            return Err(limited(frees_at));
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "discovery_in_progress",
            "this discovery token is enrolling its machine already",
        ));
    }
    match enrol(app, &d, &inv).await {
        Ok(node) => {
            app.store
                .settle_discovery_token(&d.hash, Some(node.id))
                .await?;
            store_inventory(app, node.id, raw, facts).await?;
            let (selected, _) = select_profile(app, node.id, facts).await?;
            app.store
                .log_event(
                    node.id,
                    "discovery",
                    "discovery",
                    &format!("enrolled by discovery from {}; {selected}", d.mac),
                )
                .await?;
            app.metrics.count("nodes_discovered");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"stored": true, "node": node.name, "id": node.id})),
            )
                .into_response())
        }
        Err(e) => {
            app.store.settle_discovery_token(&d.hash, None).await?;
            Err(e)
        }
    }
}

/// Creates the discovered machine's node: the MAC it booted from, the MACs of
/// its inventory that no node holds (each one another node holds is an event
/// on both nodes), the BMC address the agent found.
async fn enrol(
    app: &AppState,
    d: &DiscoveryAuth,
    inv: &Inventory,
) -> Result<crate::node::Node, ApiError> {
    let boot_mac: crate::node::MacAddr = d
        .mac
        .parse()
        .map_err(|e: String| ApiError::from(StoreError::Corrupt(e)))?;
    let mut reported: Vec<crate::node::MacAddr> = Vec::new();
    for n in &inv.nics {
        if let Ok(m) = n.mac.parse::<crate::node::MacAddr>()
            && m != boot_mac
            && !reported.contains(&m)
        {
            reported.push(m);
        }
    }
    reported.truncate(limits::MACS - 1);
    let held = app.store.mac_holders(&reported).await?;
    let mut macs = vec![boot_mac];
    macs.extend(
        reported
            .iter()
            .filter(|m| !held.iter().any(|h| h.mac == **m)),
    );
    let by_mac = format!("node-{}", d.mac.replace(':', ""));
    let by_serial = inv.system.serial.as_deref().and_then(name_from_serial);
    let bmc = match inv.bmc.as_ref().and_then(|b| b.ipv4.clone()) {
        Some(address) => BmcInput {
            driver: Some(BmcDriverKind::Ipmi),
            address: Some(address),
            ..Default::default()
        },
        None => BmcInput::default(),
    };
    let mut names = Vec::new();
    if let Some(n) = by_serial {
        names.push(n.clone());
    }
    names.push(by_mac);
    for name in names {
        let new = NewNode {
            name: Some(name),
            boot_mac: Some(boot_mac),
            macs: macs.clone(),
            bmc: bmc.clone(),
            profile: None,
            role: None,
        };
        match app.store.create_node(&new, "discovery").await {
            Ok(node) => {
                for h in &held {
                    app.metrics.count("discovery_mac_conflicts");
                    app.store
                        .log_event(
                            node.id,
                            "discovery",
                            "discovery",
                            &format!(
                                "inventory MAC {} not taken: it is a port of node '{}'",
                                h.mac, h.name
                            ),
                        )
                        .await?;
                    app.store
                        .log_event(
                            h.node_id,
                            "discovery",
                            "discovery",
                            &format!(
                                "discovered machine '{}' (booted from {boot_mac}) reported MAC {}, a port of this node; it was not given to it",
                                node.name, h.mac
                            ),
                        )
                        .await?;
                }
                return Ok(node);
            }
            // Another node holds that name: try the next one.
            Err(StoreError::Duplicate { field, .. }) if field == "name" => {}
            // A MAC taken meanwhile. The caller is not authenticated as an
            // operator: the answer names no node.
            Err(StoreError::Duplicate { .. }) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "duplicate",
                    "the discovered machine cannot be enrolled: a node holds its boot MAC",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "duplicate",
        "the discovered machine cannot be enrolled: nodes hold the names made from its serial number and its MAC",
    ))
}

/// Matches the inventory's facts against the profiles in force and takes the
/// first that matches and has room. Returns what happened, and the reason to
/// keep as the node's last error when nothing could be selected.
async fn select_profile(
    app: &AppState,
    node_id: uuid::Uuid,
    facts: &[Fact],
) -> Result<(String, Option<String>), ApiError> {
    let profiles = app.profiles.read().map(|p| p.clone()).unwrap_or_default();
    if profiles.is_empty() {
        return Ok(("no profiles defined".into(), None));
    }
    let facts = crate::profiles::matcher::Facts::new(facts.to_vec());
    let verdicts = crate::profiles::evaluate(&profiles, &facts);
    let candidates: Vec<Candidate<'_>> = verdicts
        .iter()
        .zip(profiles.iter())
        .filter(|(v, _)| v.matched)
        .map(|(v, p)| Candidate {
            profile: p,
            captures: &v.captures,
        })
        .collect();
    let mut reasons: Vec<String> = verdicts.iter().filter_map(|v| v.reason.clone()).collect();
    if !candidates.is_empty() {
        match app
            .store
            .assign_profile(node_id, &candidates, "profiles")
            .await?
        {
            Ok(a) => return Ok((format!("profile '{}' selected", a.profile), None)),
            Err(why) => reasons.extend(why),
        }
    }
    let why = format!("no profile could be selected: {}", reasons.join("; "));
    app.store
        .log_event(node_id, "profile", "profiles", &why)
        .await?;
    Ok(("no profile selected".into(), Some(why)))
}

/// `POST /v1/agent/status`: the agent's result for the boot's step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusBody {
    ok: bool,
    message: Option<String>,
}

#[utoipa::path(post, path = "/v1/agent/status", request_body = StatusBody,
    responses((status = 202, description = "Recorded"),
        (status = 400, body = super::error::ErrorBody, description = "Malformed body, or a message of more than 2000 characters"),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown, expired, or of a boot that has ended (checked before the body)"),
        (status = 403, body = super::error::ErrorBody, description = "The token's step takes no result (an inspection takes an inventory; wrong_step, recorded in the node's events)"),
        (status = 409, body = super::error::ErrorBody, description = "The step is not waiting for a report")), security(("agent" = [])))]
pub(super) async fn status(
    State(app): State<AppState>,
    Agent(caller): Agent,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Response, ApiError> {
    let Caller::Boot(auth) = caller else {
        return Err(ApiError::forbidden_code(
            "wrong_step",
            "a discovery boot has no step to report on: it posts its inventory",
        ));
    };
    limits::check_opt("message", body.message.as_deref(), limits::AGENT_MESSAGE)?;
    if !matches!(auth.phase, Phase::Clean | Phase::Deploy) {
        return Err(misfit(&app, &auth, "a step result").await);
    }
    if !app
        .store
        .agent_report(
            auth.step_id,
            &StepOutcome {
                ok: body.ok,
                message: body.message,
                note: None,
            },
        )
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_waiting",
            "this boot's step is not waiting for a report; retry shortly",
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"recorded": true}))).into_response())
}

/// What the agent should do next.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Command {
    /// `wait` (keep heartbeating) or `poweroff` (the report is in; the step is
    /// finishing, or the discovered machine is enrolled).
    command: String,
}

#[utoipa::path(post, path = "/v1/agent/heartbeat", responses((status = 200, body = Command),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown, expired, or of a boot that has ended")), security(("agent" = [])))]
pub(super) async fn heartbeat(Agent(caller): Agent) -> Result<Json<Command>, ApiError> {
    // Until the report is in, the agent waits (also while the step is still
    // starting: a fast machine can boot before the BMC calls return). A
    // discovered machine powers off once it is enrolled.
    let command = match caller {
        Caller::Boot(auth) if auth.finishing => "poweroff",
        Caller::Discovery(d) if d.node_id.is_some() => "poweroff",
        _ => "wait",
    };
    Ok(Json(Command {
        command: command.into(),
    }))
}

/// `POST /v1/agent/log`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LogBody {
    lines: Vec<String>,
}

#[utoipa::path(post, path = "/v1/agent/log", request_body = LogBody, responses((status = 202, description = "Recorded as node events"),
        (status = 400, body = super::error::ErrorBody, description = "Malformed body, more than 200 lines, or a line of more than 1000 characters (invalid_field names it)"),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown or expired (a boot that has ended may still send its last lines)")), security(("agent" = [])))]
pub(super) async fn log(
    State(app): State<AppState>,
    AgentLate(caller): AgentLate,
    ApiJson(body): ApiJson<LogBody>,
) -> Result<StatusCode, ApiError> {
    limits::check_count("lines", body.lines.len(), limits::AGENT_LOG_LINES)?;
    for (i, line) in body.lines.iter().enumerate() {
        limits::check_len(&format!("lines[{i}]"), line, limits::AGENT_LOG_LINE)?;
    }
    let node_id = match &caller {
        Caller::Boot(a) => Some(a.node_id),
        Caller::Discovery(d) => d.node_id,
        Caller::Ended(id) => Some(*id),
    };
    for line in body.lines {
        match (node_id, &caller) {
            (Some(id), _) => app.store.log_event(id, "agent", "agent", &line).await?,
            // Not enrolled yet: the server's own log keeps it.
            (None, Caller::Discovery(d)) => tracing::info!(mac = %d.mac, "agent: {line}"),
            (None, _) => {}
        }
    }
    Ok(StatusCode::ACCEPTED)
}
