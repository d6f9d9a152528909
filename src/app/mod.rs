//! The application layer: the operations racklift performs, whoever asks.
//!
//! The `/v1` handlers, the conductor, and the fronts still to come (the web
//! UI, an Ironic-compatible API) call these and only translate: an HTTP
//! handler turns a request into arguments and an [`AppError`] into a status.
//! Nothing here knows of HTTP.
//!
//! - [`agent`]: what a booted machine's reports do: an inventory accepted
//!   (checked, stored, diffed, profile selected), a step result recorded, a
//!   report that does not fit its step refused and recorded.
//! - [`discovery`]: enrolling a machine nobody declared from its inventory.
//! - [`profiles`]: the profile set in force, loaded and reloaded from disk,
//!   and profile selection for a node.
//! - [`nodes`]: an operator's enrolment, changes, deletion and actions.
//! - [`bmc`]: the driver for a node's BMC.

pub mod agent;
pub mod bmc;
pub mod discovery;
pub mod error;
pub mod nodes;
pub mod profiles;

pub use error::AppError;

use crate::bmc::Drivers;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::profiles::SharedProfiles;
use crate::store::Store;
use std::sync::Arc;

/// What every operation needs: the store, the configuration, the counters,
/// the BMC drivers and the profile set in force. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub drivers: Drivers,
    /// The profile set in force (replaced whole by a successful reload).
    pub profiles: SharedProfiles,
}
