//! The OpenAPI document, generated from the handlers' annotations.
//!
//! Each handler's attribute lists its own answers (success, and the errors only
//! it gives: 409, 422, 502 ...). The answers every endpoint of a kind gives are
//! added by [`CommonErrors`] from the operation's shape: 401 (and 403 for
//! changes and tokens) where a token is needed, 400 and 413 where there is a
//! body, 400 where there are query parameters, 404 where the path names
//! something, 500 and 503 (`storage_unavailable`) where the store is used. Every error answer has the
//! [`ErrorBody`] schema.

use super::error::{ErrorBody, ErrorDetail};
use super::{agent, bmc, dhcp, events, nodes, profiles, tokens};
use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        c.add_security_scheme("bearer", bearer());
        c.add_security_scheme("agent", bearer());
    }
}

/// The error answers implied by an operation's shape (see the module doc).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for (path, item) in api.paths.paths.iter_mut() {
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            for (method, op) in ops {
                if let Some(op) = op {
                    add_common_errors(path, method, op);
                }
            }
        }
    }
}

fn add_common_errors(path: &str, method: &str, op: &mut Operation) {
    let schemes = serde_json::to_value(&op.security).unwrap_or_default();
    let needs = |scheme: &str| {
        schemes
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r.get(scheme).is_some()))
    };
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_in = |at: ParameterIn| params.iter().any(|p| p.parameter_in == at);
    let mut errors: Vec<(&str, &str)> = Vec::new();
    if needs("bearer") {
        errors.push((
            "401",
            "No token, or an unknown or revoked one (unauthorized)",
        ));
        if method != "get" || path.starts_with("/v1/tokens") {
            errors.push((
                "403",
                "A read-only token (forbidden): this needs an admin token",
            ));
        }
    }
    if needs("agent") {
        errors.push((
            "401",
            "No agent token, or one refused: unknown, expired, of an ended boot (unauthorized)",
        ));
    }
    if op.request_body.is_some() {
        errors.push((
            "400",
            "The body is not what this endpoint takes: malformed_json, invalid_body or invalid_field, naming the field",
        ));
        errors.push((
            "413",
            "The body is larger than the server accepts, http.max_body_bytes (body_too_large)",
        ));
    }
    if has_in(ParameterIn::Query) {
        errors.push(("400", "A bad query parameter (invalid_query)"));
    }
    if has_in(ParameterIn::Path) {
        errors.push(("404", "No such node (not_found), or nothing by that name"));
    }
    if path != "/healthz" {
        errors.push((
            "500",
            "Internal error (internal): the server log has the details",
        ));
        errors.push((
            "503",
            "The database cannot be used now (storage_unavailable): nothing was changed; /healthz says when it is back",
        ));
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// racklift's REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "racklift", description = "Bare-metal provisioning: nodes, lifecycle actions, events, agent callbacks."),
    paths(
        super::healthz, super::metrics,
        nodes::create, nodes::list, nodes::show, nodes::update, nodes::delete, nodes::action, nodes::inventory, nodes::steps,
        bmc::power_status, bmc::power, bmc::boot_device, bmc::bios, bmc::set_bios, bmc::raid, bmc::create_volume, bmc::delete_volume, bmc::inventory,
        events::node_events, events::stream, dhcp::leases,
        tokens::create, tokens::list, tokens::delete,
        profiles::list, profiles::show, profiles::reload, profiles::test, profiles::facts, profiles::matches,
        agent::boot_script, agent::inventory, agent::status, agent::heartbeat, agent::log,
    ),
    components(schemas(super::views::NodeView, crate::node::NewNode, crate::node::NodePatch, crate::node::BmcInput, crate::node::BmcView,
        crate::node::BmcDriverKind, crate::state::State, crate::state::Event, super::views::EventRow, crate::store::Role, super::views::ApiToken,
        super::views::Lease, crate::store::leases::LeaseState,
        crate::bmc::BootDevice, crate::bmc::BiosSettings, crate::bmc::RaidVolume, crate::bmc::VolumeSpec, crate::bmc::BmcInventory, crate::bmc::BmcNic, crate::bmc::BmcDisk,
        nodes::StepView, nodes::StageView, super::views::PowerView, bmc::PowerBody, bmc::BootBody, bmc::BiosBody, super::views::RaidView, super::views::Enrolled, ErrorBody, ErrorDetail)),
    modifiers(&Security, &CommonErrors)
)]
pub struct ApiDoc;

pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
