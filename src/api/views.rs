//! What the API answers, apart from the domain model: a node as the API
//! shows it (built from [`crate::node::Node`], so the model can change, with
//! new fields for deploy and roles or other internal types, without changing
//! what clients read), a page of nodes, an enrolment, a power state, a node's
//! RAID volumes, the profile list, a profile dry run, a reload and a new API
//! token. The OpenAPI schema describes these types. They deserialize too: the
//! CLI reads the API's answers into them (`crate::cli`'s typed client). The
//! store's rows the API serves as they are (a token, a lease, an event) are
//! re-exported here, so the CLI finds every answer it reads in this module.

use crate::bmc::RaidVolume;
use crate::node::{BmcView, MacAddr, Node};
use crate::profiles::Verdict;
use crate::profiles::profile::Quota;
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::store::leases::Lease;
pub use crate::store::{ApiToken, EventRow};

/// A node, as `GET /v1/nodes/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Node)]
pub struct NodeView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub name: String,
    /// The MAC the node network-boots from.
    #[schema(value_type = Option<String>, example = "52:54:00:12:34:56")]
    pub boot_mac: Option<MacAddr>,
    /// Every port's MAC (the boot MAC included); unique across nodes.
    #[schema(value_type = Vec<String>)]
    pub macs: Vec<MacAddr>,
    pub bmc: BmcView,
    pub state: State,
    /// The stable state racklift is driving the node to, if any.
    pub target: Option<State>,
    /// Bumped by every change; send it back in `If-Match` or `generation` to detect concurrent changes.
    pub generation: i64,
    pub profile: Option<String>,
    pub role: Option<String>,
    /// Given by the profile's hostname pool (or a pin) when the profile was selected.
    pub hostname: Option<String>,
    /// Addresses per network, from the profile's pools.
    pub addresses: BTreeMap<String, String>,
    pub last_error: Option<String>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    /// `on`, `off`, or null when unknown.
    pub power_state: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub state_changed_at: String,
    /// The operator actions allowed in the current state.
    pub allowed_actions: Vec<String>,
}

impl From<Node> for NodeView {
    fn from(n: Node) -> NodeView {
        NodeView {
            id: n.id,
            name: n.name,
            boot_mac: n.boot_mac,
            macs: n.macs,
            bmc: n.bmc,
            state: n.state,
            target: n.target,
            generation: n.generation,
            profile: n.profile,
            role: n.role,
            hostname: n.hostname,
            addresses: n.addresses,
            last_error: n.last_error,
            maintenance: n.maintenance,
            maintenance_reason: n.maintenance_reason,
            power_state: n.power_state,
            created_at: n.created_at,
            updated_at: n.updated_at,
            state_changed_at: n.state_changed_at,
            allowed_actions: n.allowed_actions,
        }
    }
}

/// An enrolled node, and what its enrolment changed elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    #[serde(flatten)]
    pub node: NodeView,
    /// MACs this enrolment took from nodes that discovery enrolled and nobody
    /// has managed yet (also in both nodes' events); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A page of nodes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodePage {
    pub nodes: Vec<NodeView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// A power state as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PowerView {
    /// `on`, `off` or `unknown`.
    pub power_state: String,
}

/// A node's RAID volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RaidView {
    pub volumes: Vec<RaidVolume>,
}

/// A profile in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileSummary {
    pub name: String,
    pub order: i64,
    pub quota: Quota,
    pub specs: usize,
    pub hostnames: usize,
    pub role: Option<String>,
    pub file: String,
}

/// The outcome of a dry run: every profile's verdict, and the one that would be chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    pub selected: Option<String>,
    pub verdicts: Vec<Verdict>,
}

/// The names of the profiles in force after a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reloaded {
    pub loaded: Vec<String>,
}

/// A new token: its text is shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: ApiToken,
    pub secret: String,
}
