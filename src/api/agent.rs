//! The ramdisk's side of the API: the boot script a machine fetches, and the
//! agent's reports, authenticated by a per-boot token (never an operator token).
//!
//! A token is minted when a node waiting for the ramdisk fetches its boot
//! script; it is good for that node and that boot (the step under way) only.
//! Forged, expired and ended-boot tokens are refused, counted and logged.

use super::{ApiError, ApiJson, AppState, bearer};
use crate::boot::{BootView, RamdiskParams, script};
use crate::node::MacAddr;
use crate::state::State as NodeState;
use crate::store::profiles::Candidate;
use crate::store::{AgentAuth, StepOutcome};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// `GET /boot.ipxe?mac=...`.
#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct BootParams {
    /// The MAC the machine booted from (iPXE: `${net0/mac}`).
    mac: String,
}

#[utoipa::path(get, path = "/boot.ipxe", params(BootParams), responses((status = 200, description = "An iPXE script", content_type = "text/plain")))]
pub(super) async fn boot_script(
    State(app): State<AppState>,
    params: Result<Query<BootParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let mac: MacAddr = p
        .mac
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_query", format!("mac: {e}")))?;
    let view = match app.store.node_by_mac(mac).await? {
        None => BootView::Unknown,
        Some(rec) => {
            let n = &rec.node;
            let mut token = None;
            if !n.maintenance
                && matches!(
                    n.state,
                    NodeState::Inspecting | NodeState::Cleaning | NodeState::Deploying
                )
                && let Some(step) = app.store.active_step(n.id).await?
                && step.stage != "finish"
            {
                token = Some(
                    app.store
                        .mint_agent_token(n.id, step.id, app.cfg.boot.token_ttl)
                        .await?,
                );
            }
            app.store
                .log_event(
                    n.id,
                    "boot",
                    "boot",
                    &format!(
                        "boot script fetched by {mac} ({})",
                        if token.is_some() {
                            "ramdisk"
                        } else {
                            "no network boot"
                        }
                    ),
                )
                .await?;
            BootView::Node {
                name: n.name.clone(),
                state: n.state,
                maintenance: n.maintenance,
                token,
            }
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

/// Checks the agent's token; refusals are logged and counted.
async fn agent(app: &AppState, headers: &HeaderMap) -> Result<AgentAuth, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "agent requests carry 'Authorization: Bearer <racklift.token from the kernel command line>'",
        ));
    };
    match app.store.check_agent_token(token).await? {
        Ok(a) => Ok(a),
        Err(why) => {
            app.metrics.count("agent_token_refused");
            tracing::warn!(reason = %why, "agent token refused");
            Err(ApiError::unauthorized(why.to_string()))
        }
    }
}

/// `POST /v1/agent/inventory`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InventoryBody {
    /// The machine's inventory, as collected by racklift-agent.
    #[schema(value_type = Object)]
    inventory: serde_json::Value,
}

#[utoipa::path(post, path = "/v1/agent/inventory", request_body = InventoryBody,
    responses((status = 202, description = "Stored"), (status = 401, description = "Bad agent token"), (status = 409, description = "The node is not waiting for an inventory")),
    security(("agent" = [])))]
pub(super) async fn inventory(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InventoryBody>,
) -> Result<Response, ApiError> {
    let auth = agent(&app, &headers).await?;
    if !body.inventory.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "inventory: a JSON object is expected",
        ));
    }
    let step = app
        .store
        .active_step(auth.node_id)
        .await?
        .filter(|s| s.id == auth.step_id);
    let is_inspect = step
        .as_ref()
        .is_some_and(|s| s.phase == crate::store::Phase::Inspect);
    let prev = app
        .store
        .put_inventory(auth.node_id, &body.inventory)
        .await?;
    let size = body.inventory.to_string().len();
    let what = if prev.is_some() {
        "inventory replaced"
    } else {
        "inventory received"
    };
    app.store
        .log_event(
            auth.node_id,
            "agent",
            "agent",
            &format!("{what} ({size} bytes)"),
        )
        .await?;
    if is_inspect {
        if !auth.waiting {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_waiting",
                "the inspection step is not waiting for the inventory yet; retry shortly",
            ));
        }
        let (selected, note) = select_profile(&app, auth.node_id, &body.inventory).await?;
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
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"stored": true}))).into_response())
}

/// Matches the inventory's facts against the profiles in force and takes the
/// first that matches and has room. Returns what happened, and the reason to
/// keep as the node's last error when nothing could be selected.
async fn select_profile(
    app: &AppState,
    node_id: uuid::Uuid,
    inventory: &serde_json::Value,
) -> Result<(String, Option<String>), ApiError> {
    let profiles = app.profiles.read().map(|p| p.clone()).unwrap_or_default();
    if profiles.is_empty() {
        return Ok(("no profiles defined".into(), None));
    }
    let facts =
        crate::profiles::matcher::Facts::new(crate::profiles::facts_from_inventory(inventory));
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
    responses((status = 202, description = "Recorded"), (status = 409, description = "The step is not waiting for a report")), security(("agent" = [])))]
pub(super) async fn status(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Response, ApiError> {
    let auth = agent(&app, &headers).await?;
    let message = body
        .message
        .map(|m| m.chars().take(2000).collect::<String>());
    if !app
        .store
        .agent_report(
            auth.step_id,
            &StepOutcome {
                ok: body.ok,
                message,
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
    /// `wait` (keep heartbeating) or `poweroff` (the report is in; the step is finishing).
    command: String,
}

#[utoipa::path(post, path = "/v1/agent/heartbeat", responses((status = 200, body = Command)), security(("agent" = [])))]
pub(super) async fn heartbeat(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Command>, ApiError> {
    let auth = agent(&app, &headers).await?;
    // Until the report is in, the agent waits (also while the step is still
    // starting: a fast machine can boot before the BMC calls return).
    let command = if auth.finishing { "poweroff" } else { "wait" };
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

#[utoipa::path(post, path = "/v1/agent/log", request_body = LogBody, responses((status = 202, description = "Recorded as node events")), security(("agent" = [])))]
pub(super) async fn log(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LogBody>,
) -> Result<StatusCode, ApiError> {
    let auth = agent(&app, &headers).await?;
    if body.lines.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_body",
            "lines: at most 200 per request",
        ));
    }
    for line in body.lines {
        let line: String = line.chars().take(1000).collect();
        app.store
            .log_event(auth.node_id, "agent", "agent", &line)
            .await?;
    }
    Ok(StatusCode::ACCEPTED)
}
