//! The OpenAPI document, generated from the handlers' annotations.

use super::{agent, assets, events, nodes, profiles, tokens};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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

/// racklift's REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "racklift", description = "Bare-metal provisioning: nodes, lifecycle actions, events, agent callbacks."),
    paths(
        super::healthz, super::metrics,
        nodes::create, nodes::list, nodes::show, nodes::update, nodes::delete, nodes::action, nodes::inventory, nodes::steps,
        events::node_events, events::stream,
        tokens::create, tokens::list, tokens::delete,
        profiles::list, profiles::show, profiles::reload, profiles::test, profiles::facts, profiles::matches,
        agent::boot_script, agent::inventory, agent::status, agent::heartbeat, agent::log, assets::ramdisk,
    ),
    components(schemas(crate::node::Node, crate::node::NewNode, crate::node::NodePatch, crate::node::BmcInput, crate::node::BmcView,
        crate::node::BmcDriverKind, crate::state::State, crate::state::Event, crate::store::EventRow, crate::store::Role, crate::store::ApiToken)),
    modifiers(&Security)
)]
pub struct ApiDoc;

pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
