//! A node's BMC: its driver, the rule that racklift alone drives the BMC of
//! a node in a step, and every operator change recorded as a node event.

use super::AppError;
use crate::bmc::{BmcDriver, BmcError, BmcTarget, Drivers};
use crate::store::{NodeRecord, Store};

/// The driver for `rec`'s BMC, its password unsealed.
pub fn driver_for_record(
    store: &Store,
    drivers: &Drivers,
    rec: &NodeRecord,
) -> Result<Box<dyn BmcDriver>, BmcError> {
    let password = store
        .bmc_password(rec)
        .map_err(|e| BmcError::Unsupported(e.to_string()))?;
    drivers.driver_for(&BmcTarget::of(rec, password))
}

impl super::App {
    /// The driver for `rec`'s BMC.
    pub fn driver(&self, rec: &NodeRecord) -> Result<Box<dyn BmcDriver>, BmcError> {
        driver_for_record(&self.store, &self.drivers, rec)
    }
}

impl super::App {
    /// A node's record and its BMC driver. For a change (`change`), refused
    /// while racklift itself drives the machine (a node in a step:
    /// `power_owned`), and for a node with no BMC (driver `none`).
    pub async fn node_driver(
        &self,
        id: &str,
        change: bool,
    ) -> Result<(NodeRecord, Box<dyn BmcDriver>), AppError> {
        let rec = self.store.get_record(id).await?;
        if change && rec.node.state.is_transient() {
            return Err(AppError::conflict(
                "power_owned",
                format!(
                    "node '{}' is {}: racklift drives its BMC until that step ends; wait for it or abort it first",
                    rec.node.name, rec.node.state
                ),
            ));
        }
        let d = self.driver(&rec)?;
        if d.is_manual() && change {
            return Err(AppError::Bmc(BmcError::Unsupported(format!(
                "node '{}' has no BMC (driver 'none')",
                rec.node.name
            ))));
        }
        Ok((rec, d))
    }

    /// Records what a BMC change came to as a node event (kind `bmc`):
    /// `done(result)`, or "`asked` failed: why"; passes the result on.
    pub async fn record_bmc_change<T>(
        &self,
        rec: &NodeRecord,
        actor: &str,
        asked: &str,
        r: Result<T, BmcError>,
        done: impl FnOnce(&T) -> String,
    ) -> Result<T, AppError> {
        let text = match &r {
            Ok(v) => done(v),
            Err(e) => format!("{asked} failed: {e}"),
        };
        if let Err(e) = self.store.log_event(rec.node.id, "bmc", actor, &text).await {
            tracing::warn!(error = %e, "recording an event failed");
        }
        Ok(r?)
    }
}
