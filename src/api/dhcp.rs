//! DHCP leases as the operator sees them: `GET /v1/dhcp/leases`.

use super::views::Lease;
use super::{ApiError, AppState};
use axum::Json;
use axum::extract::State;

#[utoipa::path(get, path = "/v1/dhcp/leases",
    responses((status = 200, description = "Every lease, by subnet and address (expired ones included: a returning client gets its old address back)", body = [Lease])),
    security(("bearer" = [])))]
pub(super) async fn leases(State(app): State<AppState>) -> Result<Json<Vec<Lease>>, ApiError> {
    Ok(Json(app.store.list_leases().await?))
}
