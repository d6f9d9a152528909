//! API token management (admin only): make, list, revoke.

use super::error::ErrorBody;
use super::views::{ApiToken, CreatedToken};
use super::{ApiError, ApiJson, AppState};
use crate::node::limits::{self, check_len};
use crate::store::Role;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    role: Role,
}

#[utoipa::path(post, path = "/v1/tokens", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody, description = "A bad body, or a name empty or too long (invalid_field)")),
    security(("bearer" = [])))]
pub(super) async fn create(
    State(app): State<AppState>,
    ApiJson(t): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    check_len("name", &t.name, limits::TOKEN_NAME)?;
    if t.name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "name: say what the token is for (1 to 100 characters)",
        ));
    }
    let (token, secret) = app.store.create_api_token(&t.name, t.role).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = Vec<ApiToken>)), security(("bearer" = [])))]
pub(super) async fn list(State(app): State<AppState>) -> Result<Json<Vec<ApiToken>>, ApiError> {
    Ok(Json(app.store.list_api_tokens().await?))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", params(("id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody, description = "No such token")), security(("bearer" = [])))]
pub(super) async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.delete_api_token(&id).await?;
    app.forget_tokens();
    Ok(StatusCode::NO_CONTENT)
}
