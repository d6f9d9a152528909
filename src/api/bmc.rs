//! A node's BMC, directly: power, boot device, BIOS attributes, RAID volumes
//! and the BMC's own inventory, under `/v1/nodes/{id}/...`.
//!
//! Reads need any token and work in every state, `enrolled` included (a
//! wrong address or password answers `502 bmc_auth` / `bmc_unreachable` and
//! changes nothing, so an operator can check a BMC before `manage`); changes
//! need an admin token (as every non-GET request) and are refused with
//! `409 power_owned` while racklift itself drives the machine (a node in a
//! step: verifying, inspecting, cleaning, deploying, configuring). Every change, done or failed, is recorded as a
//! node event (kind `bmc`). BMC failures map to stable codes: `bmc_unreachable` (502, worth
//! retrying), `bmc_auth` (502), `bmc_refused` (502, the BMC's own message),
//! `bmc_unsupported` (422), and a RAID volume the BMC does not have is
//! `404 volume_not_found`. Bodies are bounded by [`crate::node::limits`].
//! The ownership rule and the events are [`crate::app::bmc`]'s.

use super::error::ErrorBody;
use super::nodes::actor;
use super::views::{PowerView, RaidView};
use super::{ApiError, ApiJson, AppState};
use crate::bmc::{
    BiosSettings, BmcError, BmcInventory, BootDevice, BootOverride, FirmwareBoot, PowerAction,
    RaidVolume, VolumeSpec,
};
use crate::node::FieldError;
use crate::node::limits::{self, check_count, check_len, check_opt};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

impl From<BmcError> for ApiError {
    fn from(e: BmcError) -> Self {
        let (status, code) = match &e {
            BmcError::Transient { .. } | BmcError::Closed { .. } => {
                (StatusCode::BAD_GATEWAY, "bmc_unreachable")
            }
            BmcError::Auth { .. } => (StatusCode::BAD_GATEWAY, "bmc_auth"),
            BmcError::Refused { .. } => (StatusCode::BAD_GATEWAY, "bmc_refused"),
            BmcError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bmc_unsupported"),
            BmcError::NoVolume { .. } => (StatusCode::NOT_FOUND, "volume_not_found"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A power command.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PowerBody {
    /// `on`, `off` (hard), `soft_off` (ACPI shutdown), `reset` or `cycle`.
    action: String,
}

#[utoipa::path(get, path = "/v1/nodes/{id}/power", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = PowerView, description = "Read from the BMC now, and recorded (in any state, `enrolled` included)"),
        (status = 422, body = ErrorBody, description = "The node's BMC password cannot be read (bmc_unsupported)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn power_status(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PowerView>, ApiError> {
    let (rec, d) = app.node_driver(&id, false).await?;
    let p = d.power_state().await?;
    if p != crate::bmc::PowerState::Unknown {
        app.store
            .set_power_state(rec.node.id, p.as_str(), "api")
            .await?;
    }
    Ok(Json(PowerView {
        power_state: p.as_str().into(),
    }))
}

#[utoipa::path(post, path = "/v1/nodes/{id}/power", request_body = PowerBody, params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = PowerView, description = "Done; the state read afterwards"),
        (status = 409, body = ErrorBody, description = "racklift drives this node's power now (power_owned)"),
        (status = 422, body = ErrorBody, description = "The node has no BMC (bmc_unsupported)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn power(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PowerBody>,
) -> Result<Json<PowerView>, ApiError> {
    check_len("action", &body.action, limits::WORD)?;
    let action: PowerAction = body
        .action
        .parse()
        .map_err(|e: String| ApiError::bad_request("invalid_field", format!("action: {e}")))?;
    let (rec, d) = app.node_driver(&id, true).await?;
    let asked = format!("power {}", body.action);
    let r = d.power(action).await;
    app.record_bmc_change(&rec, &actor(&headers), &asked, r, |_| asked.clone())
        .await?;
    let p = d.power_state().await?;
    if p != crate::bmc::PowerState::Unknown {
        app.store
            .set_power_state(rec.node.id, p.as_str(), &actor(&headers))
            .await?;
    }
    Ok(Json(PowerView {
        power_state: p.as_str().into(),
    }))
}

/// A boot device request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BootBody {
    /// `pxe`, `disk`, `cd` or `uefi_http`.
    device: BootDevice,
    /// For every boot (default: the next boot only).
    #[serde(default)]
    persistent: bool,
    /// `uefi` or `legacy` (default: leave the BMC's mode).
    mode: Option<String>,
}

#[utoipa::path(post, path = "/v1/nodes/{id}/boot-device", request_body = BootBody, params(("id" = String, Path, description = "UUID or name")),
    responses((status = 204, description = "Set"),
        (status = 409, body = ErrorBody, description = "racklift drives this node's BMC now (power_owned)"),
        (status = 422, body = ErrorBody, description = "The BMC cannot boot that way, or the node has no BMC (bmc_unsupported)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn boot_device(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BootBody>,
) -> Result<StatusCode, ApiError> {
    check_opt("mode", body.mode.as_deref(), limits::WORD)?;
    let mode = match body.mode.as_deref() {
        None => None,
        Some("uefi") => Some(FirmwareBoot::Uefi),
        Some("legacy") => Some(FirmwareBoot::Legacy),
        Some(o) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("mode: '{o}' is not 'uefi' or 'legacy'"),
            ));
        }
    };
    let (rec, d) = app.node_driver(&id, true).await?;
    let asked = format!(
        "boot device {} ({}{})",
        serde_json::to_value(body.device)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        if body.persistent {
            "persistent"
        } else {
            "once"
        },
        body.mode.map(|m| format!(", {m}")).unwrap_or_default()
    );
    let r = d
        .set_boot(BootOverride {
            device: body.device,
            persistent: body.persistent,
            mode,
        })
        .await;
    app.record_bmc_change(&rec, &actor(&headers), &asked, r, |_| asked.clone())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/nodes/{id}/bios", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = BiosSettings),
        (status = 422, body = ErrorBody, description = "The driver has no BIOS settings (IPMI, none)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn bios(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BiosSettings>, ApiError> {
    let (_, d) = app.node_driver(&id, false).await?;
    Ok(Json(d.bios().await?))
}

/// BIOS attributes to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BiosBody {
    /// Attribute names and values, e.g. `{"ProcVirtualization": "Enabled"}`.
    #[schema(value_type = Object)]
    attributes: Map<String, Value>,
}

#[utoipa::path(patch, path = "/v1/nodes/{id}/bios", request_body = BiosBody, params(("id" = String, Path, description = "UUID or name")),
    responses((status = 202, body = BiosSettings, description = "Pending: applied at the next boot"),
        (status = 409, body = ErrorBody, description = "racklift drives this node's BMC now (power_owned)"),
        (status = 422, body = ErrorBody, description = "The driver has no BIOS settings (IPMI, none), or the BMC refused an attribute"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn set_bios(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BiosBody>,
) -> Result<(StatusCode, Json<BiosSettings>), ApiError> {
    if body.attributes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "attributes: give at least one, e.g. {\"attributes\": {\"ProcVirtualization\": \"Enabled\"}}",
        ));
    }
    check_bios(&body.attributes)?;
    let (rec, d) = app.node_driver(&id, true).await?;
    let attrs = Value::Object(body.attributes.clone());
    let r = d.set_bios(&body.attributes).await;
    app.record_bmc_change(
        &rec,
        &actor(&headers),
        &format!("BIOS settings {attrs}"),
        r,
        |_| format!("BIOS settings set, applied at the next boot: {attrs}"),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(d.bios().await?)))
}

#[utoipa::path(get, path = "/v1/nodes/{id}/raid", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = RaidView),
        (status = 422, body = ErrorBody, description = "The driver has no RAID (IPMI, none)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn raid(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RaidView>, ApiError> {
    let (_, d) = app.node_driver(&id, false).await?;
    Ok(Json(RaidView {
        volumes: d.raid_volumes().await?,
    }))
}

#[utoipa::path(post, path = "/v1/nodes/{id}/raid", request_body = VolumeSpec, params(("id" = String, Path, description = "UUID or name")),
    responses((status = 201, body = RaidVolume),
        (status = 400, body = ErrorBody, description = "Bad level, neither disks nor size, or a field too long (invalid_field)"),
        (status = 409, body = ErrorBody, description = "racklift drives this node's BMC now (power_owned)"),
        (status = 422, body = ErrorBody, description = "The driver has no RAID (IPMI, none)"),
        (status = 502, body = ErrorBody, description = "The BMC failed or refused the volume: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn create_volume(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(spec): ApiJson<VolumeSpec>,
) -> Result<(StatusCode, Json<RaidVolume>), ApiError> {
    check_volume(&spec)?;
    spec.check()
        .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?;
    let (rec, d) = app.node_driver(&id, true).await?;
    let r = d.create_volume(&spec).await;
    let asked = format!("RAID volume {} on {}", spec.level, spec.drives.join(", "));
    let v = app
        .record_bmc_change(&rec, &actor(&headers), &asked, r, |v| {
            format!(
                "RAID volume '{}' created: {} on {}",
                v.id,
                v.level.as_deref().unwrap_or("?"),
                v.drives.join(", ")
            )
        })
        .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(delete, path = "/v1/nodes/{id}/raid/{volume}", params(("id" = String, Path, description = "UUID or name"), ("volume" = String, Path, description = "Volume id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "No such node (not_found), or the BMC has no such volume (volume_not_found)"),
        (status = 409, body = ErrorBody, description = "racklift drives this node's BMC now (power_owned)"),
        (status = 422, body = ErrorBody, description = "The driver has no RAID (IPMI, none)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn delete_volume(
    State(app): State<AppState>,
    Path((id, volume)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_len("volume", &volume, limits::BMC_ID)?;
    let (rec, d) = app.node_driver(&id, true).await?;
    let r = d.delete_volume(&volume).await;
    app.record_bmc_change(
        &rec,
        &actor(&headers),
        &format!("deleting RAID volume '{volume}'"),
        r,
        |_| format!("RAID volume '{volume}' deleted"),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/nodes/{id}/bmc-inventory", params(("id" = String, Path, description = "UUID or name")),
    responses((status = 200, body = BmcInventory),
        (status = 422, body = ErrorBody, description = "The driver has no inventory (IPMI, none)"),
        (status = 502, body = ErrorBody, description = "The BMC failed: bmc_unreachable, bmc_auth, bmc_refused")),
    security(("bearer" = [])))]
pub(super) async fn inventory(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BmcInventory>, ApiError> {
    let (_, d) = app.node_driver(&id, false).await?;
    Ok(Json(d.inventory().await?))
}

/// The bounds of a BIOS change: how many attributes, how long their names and
/// values; values are strings, numbers or booleans.
fn check_bios(attributes: &Map<String, Value>) -> Result<(), FieldError> {
    check_count("attributes", attributes.len(), limits::BIOS_ATTRIBUTES)?;
    for (name, value) in attributes {
        check_len("attributes (a name)", name, limits::BIOS_VALUE)?;
        let field = format!("attributes.{name}");
        match value {
            Value::String(v) => check_len(&field, v, limits::BIOS_VALUE)?,
            Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(FieldError::new(
                    field,
                    "a BIOS attribute is a string, a number or a boolean",
                ));
            }
        }
    }
    Ok(())
}

/// The bounds of a volume to create.
fn check_volume(spec: &VolumeSpec) -> Result<(), FieldError> {
    check_len("level", &spec.level, limits::WORD)?;
    check_count("drives", spec.drives.len(), limits::VOLUME_DRIVES)?;
    for d in &spec.drives {
        check_len("drives", d, limits::BMC_ID)?;
    }
    check_opt("name", spec.name.as_deref(), limits::BMC_ID)?;
    check_opt("storage", spec.storage.as_deref(), limits::BMC_ID)
}
