//! Periodic power-state sync: reads the power state of every node under
//! management through its BMC driver, a bounded number at a time, and records
//! what changed outside racklift (someone pressed the button, another tool
//! used the BMC) as the node's power state and an event.
//!
//! Nodes in a step are left out (the conductor owns their power and records it
//! itself), as are `enrolled` ones (their BMC is not verified yet). A reading
//! is recorded only if the stored state is still the one the sync compared
//! against, so a conductor's newer reading is never overwritten. A BMC that
//! does not answer is skipped until the next round; it makes no event.

use crate::app::bmc::driver_for_record;
use crate::bmc::{Drivers, PowerState};
use crate::store::{NodeRecord, Store, StoreError};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What one round found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Nodes whose BMC was read.
    pub checked: usize,
    /// Nodes whose power state changed (recorded with an event).
    pub changed: usize,
    /// Nodes whose BMC could not be read.
    pub failed: usize,
}

/// Reads every eligible node's power state, `concurrency` BMCs at a time, each
/// within `timeout`, and records the changes.
pub async fn sync_once(
    store: &Store,
    drivers: &Drivers,
    concurrency: usize,
    timeout: Duration,
) -> Result<SyncReport, StoreError> {
    let nodes = store.power_sync_nodes().await?;
    let results: Vec<Outcome> = futures::stream::iter(nodes)
        .map(|rec| sync_node(store, drivers, rec, timeout))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut r = SyncReport::default();
    for o in results {
        match o {
            Outcome::Same => r.checked += 1,
            Outcome::Changed => {
                r.checked += 1;
                r.changed += 1;
            }
            Outcome::Failed => r.failed += 1,
        }
    }
    Ok(r)
}

enum Outcome {
    Same,
    Changed,
    Failed,
}

async fn sync_node(
    store: &Store,
    drivers: &Drivers,
    rec: NodeRecord,
    timeout: Duration,
) -> Outcome {
    let node = rec.node.id;
    let read = async {
        let d = driver_for_record(store, drivers, &rec)?;
        d.power_state().await
    };
    let power = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::debug!(%node, error = %e, "power sync: BMC not read");
            return Outcome::Failed;
        }
        Err(_) => {
            tracing::debug!(%node, "power sync: BMC did not answer in time");
            return Outcome::Failed;
        }
    };
    if power == PowerState::Unknown || rec.node.power_state.as_deref() == Some(power.as_str()) {
        return Outcome::Same;
    }
    match store
        .sync_power_state(node, rec.node.power_state.as_deref(), power.as_str())
        .await
    {
        Ok(true) => {
            tracing::info!(%node, power = power.as_str(), previous = ?rec.node.power_state, "power changed outside racklift");
            Outcome::Changed
        }
        Ok(false) => Outcome::Same,
        Err(e) => {
            tracing::warn!(%node, error = %e, "power sync: recording failed");
            Outcome::Failed
        }
    }
}

/// Runs a round every `interval` until `shutdown` turns true (the first one
/// after one interval).
pub async fn run(
    store: Store,
    drivers: Drivers,
    interval: Duration,
    concurrency: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = interval.min(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let started = Instant::now();
        match sync_once(&store, &drivers, concurrency, timeout).await {
            Ok(r) => tracing::debug!(
                ?r,
                took_ms = started.elapsed().as_millis() as u64,
                "power sync round"
            ),
            Err(e) => tracing::warn!(error = %e, "power sync round failed"),
        }
    }
}
