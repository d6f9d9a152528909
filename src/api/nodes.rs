//! Node endpoints: enrolment, listing, reading, changing, deleting, actions.

use super::error::{ErrorBody, OptJson};
use super::{ApiError, ApiJson, AppState};

use super::views::{Enrolled, NodePage, NodeView};
use crate::node::{NewNode, NodePatch};
use crate::state::State as NodeState;
use crate::store::NodeFilter;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Who made a request, for event rows.
pub(super) fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-racklift-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(|v| format!("api:{v}"))
        .unwrap_or_else(|| "api".to_string())
}

#[utoipa::path(post, path = "/v1/nodes", request_body = NewNode,
    responses((status = 201, body = Enrolled),
        (status = 400, body = ErrorBody, description = "Invalid body: malformed_json, invalid_body, or invalid_field naming the field (and its limit: at most 64 MACs, names of 63 characters ...)"),
        (status = 409, body = ErrorBody, description = "Another node has the name (duplicate_name) or a MAC (duplicate_mac); a MAC held by a discovered node nobody has managed is taken from it instead (notes)")),
    security(("bearer" = [])))]
pub(super) async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(new): ApiJson<NewNode>,
) -> Result<Response, ApiError> {
    let (node, notes) = app.enrol_node(&new, &actor(&headers)).await?;
    let location = format!("/v1/nodes/{}", node.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Enrolled {
            node: node.into(),
            notes,
        }),
    )
        .into_response())
}

/// Filters and paging of the node list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only nodes in this state.
    #[param(value_type = Option<NodeState>)]
    state: Option<String>,
    /// Only nodes with this profile.
    profile: Option<String>,
    /// Only nodes with (true) or without (false) maintenance.
    maintenance: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` value of the previous page.
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/nodes", params(ListParams),
    responses((status = 200, body = NodePage), (status = 400, body = ErrorBody, description = "A bad filter or page size (invalid_query)")),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(app): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let state = p
        .state
        .as_deref()
        .map(str::parse::<NodeState>)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 1000",
        ));
    }
    let versions = app
        .store
        .list_node_versions(&NodeFilter {
            state,
            profile: p.profile,
            maintenance: p.maintenance,
            after: p.after,
            limit,
        })
        .await?;
    let missing: Vec<uuid::Uuid> = {
        let cache = app
            .node_json
            .lock()
            .map_err(|_| ApiError::unavailable("node cache poisoned"))?;
        versions
            .iter()
            .filter(|(id, g, _)| cache.get(id).is_none_or(|(cg, _)| cg < g))
            .map(|(id, _, _)| *id)
            .collect()
    };
    let fresh = if missing.is_empty() {
        Vec::new()
    } else {
        app.store.nodes_by_ids(&missing).await?
    };
    let mut cache = app
        .node_json
        .lock()
        .map_err(|_| ApiError::unavailable("node cache poisoned"))?;
    if cache.len() + fresh.len() > 100_000 {
        cache.clear();
    }
    for n in fresh {
        let (id, generation) = (n.id, n.generation);
        let text = serde_json::to_string(&NodeView::from(n))
            .map_err(|e| ApiError::unavailable(&e.to_string()))?;
        cache.insert(id, (generation, text.into()));
    }
    let mut body = String::with_capacity(versions.len() * 800 + 64);
    body.push_str("{\"nodes\":[");
    let mut first = true;
    for (id, _, _) in &versions {
        // A node deleted between the two queries is left out.
        if let Some((_, json)) = cache.get(id) {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(json);
        }
    }
    drop(cache);
    let next = (versions.len() as i64 == limit)
        .then(|| versions.last().map(|(_, _, name)| name.clone()))
        .flatten();
    body.push_str("],\"next\":");
    body.push_str(&serde_json::to_string(&next).unwrap_or_else(|_| "null".into()));
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[utoipa::path(get, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = NodeView), (status = 404, body = ErrorBody, description = "No such node")), security(("bearer" = [])))]
pub(super) async fn show(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    Ok(Json(app.store.get_node(&id).await?.into()))
}

/// The generation in an `If-Match` header, if any.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_matches('"'))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_header",
                        "If-Match must hold the node's generation, e.g. If-Match: \"7\"",
                    )
                })
        })
        .transpose()
}

#[utoipa::path(patch, path = "/v1/nodes/{id}", request_body = NodePatch, params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = NodeView),
        (status = 400, body = ErrorBody, description = "Invalid body or If-Match header: malformed_json, invalid_body, invalid_header, or invalid_field naming the field and its limit"),
        (status = 409, body = ErrorBody, description = "Generation mismatch (conflict), or another node has the name or a MAC (duplicate_name, duplicate_mac); a MAC held by a discovered node nobody has managed is taken from it instead (in both nodes' events)")),
    security(("bearer" = [])))]
pub(super) async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(mut patch): ApiJson<NodePatch>,
) -> Result<Json<NodeView>, ApiError> {
    if let Some(g) = if_match(&headers)? {
        patch.generation = Some(g);
    }
    let node = app.update_node(&id, &patch, &actor(&headers)).await?;
    Ok(Json(node.into()))
}

#[utoipa::path(delete, path = "/v1/nodes/{id}", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 204, description = "Deleted"), (status = 409, body = ErrorBody, description = "Not deletable in its state")), security(("bearer" = [])))]
pub(super) async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    app.delete_node(&id, &actor(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Options of an action.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    /// Why (recorded in the event; required for maintenance_on).
    reason: Option<String>,
    /// Apply only if the node is still at this generation.
    generation: Option<i64>,
}

#[utoipa::path(post, path = "/v1/nodes/{id}/actions/{action}", request_body(content = Option<ActionBody>),
    params(("id" = String, Path, description = "UUID or name"), ("action" = String, Path, description = "manage, inspect, provide, deploy, configure, reprovision, undeploy, abort, maintenance_on, maintenance_off")),
    responses((status = 202, body = NodeView, description = "Accepted; work queued"),
        (status = 400, body = ErrorBody, description = "Unknown action (unknown_action), a reason too long or missing (invalid_field), a bad body or If-Match header"),
        (status = 409, body = ErrorBody, description = "Not allowed in the node's state (invalid_action; allowed_actions lists what is), in maintenance, or a generation mismatch")),
    security(("bearer" = [])))]
pub(super) async fn action(
    State(app): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    OptJson(body): OptJson<ActionBody>,
) -> Result<Response, ApiError> {
    let generation = if_match(&headers)?.or(body.generation);
    let node = app
        .act(
            &id,
            &action,
            body.reason.as_deref(),
            generation,
            &actor(&headers),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(NodeView::from(node))).into_response())
}

#[utoipa::path(get, path = "/v1/nodes/{id}/inventory", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, description = "The raw inventory the agent posted"), (status = 404, body = ErrorBody, description = "No node, or not inspected yet")), security(("bearer" = [])))]
pub(super) async fn inventory(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node = app.store.get_node(&id).await?;
    let inv = app.store.inventory(node.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "node '{}' has no inventory yet: inspect it",
            node.name
        ))
    })?;
    Ok(Json(inv))
}

/// One unit of durable work: a phase carried out stage by stage.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StepView {
    id: i64,
    phase: String,
    /// The stages of the phase, in order.
    plan: Vec<String>,
    /// The first unfinished stage (the last one, once the step has ended).
    stage: String,
    /// pending, running, waiting, done, failed or cancelled.
    status: String,
    /// Attempts at the current stage.
    attempts: i64,
    deadline: String,
    /// Why the step failed (set while its cleanups run, and after).
    failure: Option<String>,
    /// Each stage run and cleanup, in order.
    stages: Vec<StageView>,
}

/// How a stage run (or a cleanup of a failed step) ended.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StageView {
    stage: String,
    /// The cleanup this record is of (power_off, boot_from_network), if any.
    cleanup: Option<String>,
    /// done, failed, or retried (a transient failure, tried again).
    result: String,
    message: Option<String>,
    at: String,
}

#[utoipa::path(get, path = "/v1/nodes/{id}/steps", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = Vec<StepView>)), security(("bearer" = [])))]
pub(super) async fn steps(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<StepView>>, ApiError> {
    let node = app.store.get_node(&id).await?;
    let steps = app.store.node_steps(node.id).await?;
    let mut records: std::collections::HashMap<i64, Vec<crate::store::StageRecord>> =
        std::collections::HashMap::new();
    for r in app.store.stage_records(node.id).await? {
        records.entry(r.step_id).or_default().push(r);
    }
    Ok(Json(
        steps
            .into_iter()
            .map(|s| {
                let mine = records.remove(&s.id).unwrap_or_default();
                StepView {
                    id: s.id,
                    phase: s.phase.as_str().into(),
                    plan: s.phase.plan().iter().map(|x| x.as_str().into()).collect(),
                    stage: s.stage.as_str().into(),
                    status: s.status.as_str().into(),
                    attempts: s.attempts,
                    deadline: crate::store::rfc3339(s.deadline),
                    failure: s.failure,
                    stages: mine
                        .into_iter()
                        .map(|r| StageView {
                            stage: r.stage.as_str().into(),
                            cleanup: r.cleanup,
                            result: r.result.as_str().into(),
                            message: r.message,
                            at: crate::store::rfc3339(r.at),
                        })
                        .collect(),
                }
            })
            .collect(),
    ))
}
