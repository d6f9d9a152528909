//! Profile endpoints: list, show, reload from disk, dry-run tests, and a node's
//! facts and match explanations.

use super::error::ErrorBody;
use super::views::{ProfileSummary, Reloaded, TestResult};
use super::{ApiError, ApiJson, AppState};
use crate::node::FieldError;
use crate::node::limits::{self, check_count, check_len, check_opt};
use crate::profiles::matcher::Facts;
use crate::profiles::{Profile, evaluate};
use crate::protocol::Fact;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;

fn current(app: &AppState) -> Arc<Vec<Profile>> {
    app.current_profiles()
}

#[utoipa::path(get, path = "/v1/profiles", responses((status = 200, body = Vec<ProfileSummary>)), security(("bearer" = [])))]
pub(super) async fn list(State(app): State<AppState>) -> Json<Vec<ProfileSummary>> {
    Json(
        current(&app)
            .iter()
            .map(|p| ProfileSummary {
                name: p.name.clone(),
                order: p.order,
                quota: p.quota,
                specs: p.specs.len(),
                hostnames: p.hostnames.len(),
                role: p.role.clone(),
                file: p.file.clone(),
            })
            .collect(),
    )
}

#[utoipa::path(get, path = "/v1/profiles/{name}", params(("name" = String, Path)), responses((status = 200, body = Profile), (status = 404, body = ErrorBody, description = "No such profile")), security(("bearer" = [])))]
pub(super) async fn show(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Profile>, ApiError> {
    current(&app)
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("profile '{name}' not found")))
}

#[utoipa::path(post, path = "/v1/profiles/reload", responses((status = 200, description = "Loaded"), (status = 400, body = ErrorBody, description = "A file is broken (invalid_profile, with its file and line); the previous set stays in force")), security(("bearer" = [])))]
pub(super) async fn reload(State(app): State<AppState>) -> Result<Json<Reloaded>, ApiError> {
    use crate::app::profiles::ReloadError;
    match app.reload_profiles().await {
        Ok(loaded) => Ok(Json(Reloaded { loaded })),
        Err(ReloadError::Store(e)) => Err(e.into()),
        Err(ReloadError::Profile(e)) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_profile",
            message: format!("{e}; the previous profiles stay in force"),
            extra: Some(json!({"file": e.file, "line": e.line})),
            retry_after: None,
        }),
    }
}

/// What to test the profiles against: facts, or a stored node.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TestBody {
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    facts: Option<Vec<Fact>>,
    /// A node's UUID or name: its stored inventory is used.
    node: Option<String>,
}

impl TestBody {
    /// The bounds of a test: how many facts, how long each part and the node's name.
    fn check(&self) -> Result<(), FieldError> {
        check_opt("node", self.node.as_deref(), limits::NAME)?;
        let facts = self.facts.as_deref().unwrap_or_default();
        check_count("facts", facts.len(), limits::FACTS)?;
        for (i, fact) in facts.iter().enumerate() {
            for part in [&fact.class, &fact.kind, &fact.key, &fact.value] {
                check_len(&format!("facts[{i}]"), part, limits::FACT_PART)?;
            }
        }
        Ok(())
    }
}

fn result(profiles: &[Profile], facts: Vec<Fact>) -> TestResult {
    let verdicts = evaluate(profiles, &Facts::new(facts));
    TestResult {
        selected: verdicts
            .iter()
            .find(|v| v.matched)
            .map(|v| v.profile.clone()),
        verdicts,
    }
}

async fn node_facts(app: &AppState, id: &str) -> Result<Vec<Fact>, ApiError> {
    let node = app.store.get_node(id).await?;
    app.store.inventory_facts(node.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "node '{}' has no inventory yet: inspect it",
            node.name
        ))
    })
}

#[utoipa::path(post, path = "/v1/profiles/test", request_body = TestBody,
    responses((status = 200, body = TestResult),
        (status = 400, body = ErrorBody, description = "Neither or both of facts and node, a bad body, or a field too long (invalid_field)"),
        (status = 404, body = ErrorBody, description = "No such node, or it has no inventory yet")),
    security(("bearer" = [])))]
pub(super) async fn test(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Json<TestResult>, ApiError> {
    body.check()?;
    let facts = match (body.facts, body.node) {
        (Some(f), None) => f,
        (None, Some(n)) => node_facts(&app, &n).await?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of 'facts' or 'node'",
            ));
        }
    };
    Ok(Json(result(&current(&app), facts)))
}

#[utoipa::path(get, path = "/v1/nodes/{id}/facts", params(("id" = String, Path)),
    responses((status = 200, description = "[class, type, key, value] facts"), (status = 404, body = ErrorBody, description = "No such node, or it has no inventory yet")), security(("bearer" = [])))]
pub(super) async fn facts(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Fact>>, ApiError> {
    Ok(Json(node_facts(&app, &id).await?))
}

#[utoipa::path(get, path = "/v1/nodes/{id}/matches", params(("id" = String, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = ErrorBody, description = "No such node, or it has no inventory yet")), security(("bearer" = [])))]
pub(super) async fn matches(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TestResult>, ApiError> {
    let facts = node_facts(&app, &id).await?;
    Ok(Json(result(&current(&app), facts)))
}
