//! The ramdisk's side of the API, translated to [`crate::app::agent`] and
//! [`crate::app::discovery`] (which hold the agent-token and discovery
//! rules): the boot script a machine fetches, and the agent's reports,
//! authenticated by a per-boot token (never an operator token). The token is
//! checked before the body is read as JSON, so a caller without one learns
//! nothing from its body's errors.

use super::{ApiError, ApiJson, AppState, bearer};
use crate::app::agent::{Accepted, Caller};
use crate::netboot::script::{RamdiskParams, script};
use crate::node::MacAddr;
use crate::node::limits;
use crate::protocol::{Heartbeat, LogLines, StatusReport};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
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
    let view = app.boot_view(mac, client.map(|c| c.0.0.ip())).await?;
    let b = &app.cfg.boot;
    let missing = crate::netboot::script::ramdisk_missing(b, &app.cfg.http.public_url);
    let params = RamdiskParams {
        api_url: &app.cfg.http.public_url,
        kernel_url: &b.kernel_url,
        initrd_url: &b.initrd_url,
        kernel_args: &b.kernel_args,
        missing: missing.as_ref().map(|m| m.console.as_str()),
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script(&view, mac, &params),
    )
        .into_response())
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

/// Checks the agent's token (before the body is read).
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
    Ok(app.agent_caller(token, after_end).await?)
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
    let answer = match app.accept_inventory(caller, &body.inventory).await? {
        Accepted::Stored => json!({"stored": true}),
        Accepted::Enrolled { name, id } => json!({"stored": true, "node": name, "id": id}),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[utoipa::path(post, path = "/v1/agent/status", request_body = StatusReport,
    responses((status = 202, description = "Recorded"),
        (status = 400, body = super::error::ErrorBody, description = "Malformed body, or a message of more than 2000 characters"),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown, expired, or of a boot that has ended (checked before the body)"),
        (status = 403, body = super::error::ErrorBody, description = "The token's step takes no result (an inspection takes an inventory; wrong_step, recorded in the node's events)"),
        (status = 409, body = super::error::ErrorBody, description = "The step is not waiting for a report")), security(("agent" = [])))]
pub(super) async fn status(
    State(app): State<AppState>,
    Agent(caller): Agent,
    ApiJson(body): ApiJson<StatusReport>,
) -> Result<Response, ApiError> {
    if matches!(caller, Caller::Boot(_)) {
        limits::check_opt("message", body.message.as_deref(), limits::AGENT_MESSAGE)?;
    }
    app.record_result(caller, body.ok, body.message).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"recorded": true}))).into_response())
}

#[utoipa::path(post, path = "/v1/agent/heartbeat", responses((status = 200, body = Heartbeat),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown, expired, or of a boot that has ended")), security(("agent" = [])))]
pub(super) async fn heartbeat(Agent(caller): Agent) -> Result<Json<Heartbeat>, ApiError> {
    Ok(Json(Heartbeat {
        command: crate::app::agent::next_command(&caller),
    }))
}

#[utoipa::path(post, path = "/v1/agent/log", request_body = LogLines, responses((status = 202, description = "Recorded as node events"),
        (status = 400, body = super::error::ErrorBody, description = "Malformed body, more than 200 lines, or a line of more than 1000 characters (invalid_field names it)"),
        (status = 401, body = super::error::ErrorBody, description = "No agent token, or one that is unknown or expired (a boot that has ended may still send its last lines)")), security(("agent" = [])))]
pub(super) async fn log(
    State(app): State<AppState>,
    AgentLate(caller): AgentLate,
    ApiJson(body): ApiJson<LogLines>,
) -> Result<StatusCode, ApiError> {
    limits::check_count("lines", body.lines.len(), limits::AGENT_LOG_LINES)?;
    for (i, line) in body.lines.iter().enumerate() {
        limits::check_len(&format!("lines[{i}]"), line, limits::AGENT_LOG_LINE)?;
    }
    app.agent_log(&caller, body.lines).await?;
    Ok(StatusCode::ACCEPTED)
}
