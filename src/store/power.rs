//! The power state seen at each node's BMC: recorded, with an event only
//! when it changed.

use super::*;

impl Store {
    /// Records the power state seen at the BMC (an event only when it changed).
    pub async fn set_power_state(&self, node_id: Uuid, power: &str, actor: &str) -> Result<()> {
        self.write_power_state(node_id, power, actor, None)
            .await
            .map(|_| ())
    }

    /// Records a power state the periodic sync read, when the stored one is
    /// still `seen` (what the sync compared against): a change made outside
    /// racklift. Returns whether it was recorded.
    pub async fn sync_power_state(
        &self,
        node_id: Uuid,
        seen: Option<&str>,
        power: &str,
    ) -> Result<bool> {
        self.write_power_state(node_id, power, "power-sync", Some(seen))
            .await
    }

    /// The nodes whose power the periodic sync reads: those with a BMC, under
    /// management (not `enrolled`), and not in a step (the conductor owns
    /// their power then).
    pub async fn power_sync_nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE bmc_driver IN ('ipmi', 'redfish', 'fake') \
             AND state NOT IN ('enrolled', 'verifying', 'inspecting', 'cleaning', 'deploying', 'configuring') \
             ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn write_power_state(
        &self,
        node_id: Uuid,
        power: &str,
        actor: &str,
        expect: Option<Option<&str>>,
    ) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        let prev: Option<Option<String>> =
            sqlx::query("SELECT power_state FROM nodes WHERE id = $1")
                .bind(node_id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("power_state"))
                .transpose()?;
        let Some(prev) = prev else {
            return Err(StoreError::NotFound(format!("node '{node_id}'")));
        };
        if let Some(seen) = expect
            && prev.as_deref() != seen
        {
            // Someone recorded a newer reading meanwhile.
            return Ok(false);
        }
        let changed = prev.as_deref() != Some(power);
        if changed {
            sqlx::query(
                "UPDATE nodes SET power_state = $1, updated_at = $2, generation = generation + 1 \
                 WHERE id = $3",
            )
            .bind(power.to_string())
            .bind(now)
            .bind(node_id.to_string())
            .execute(&mut *tx)
            .await?;
            let mut reason = format!("power {} -> {power}", prev.as_deref().unwrap_or("unknown"));
            if expect.is_some() && prev.is_some() {
                reason.push_str(" (changed outside racklift)");
            }
            insert_event(
                &mut tx,
                node_id,
                "power",
                None,
                None,
                None,
                actor,
                Some(&reason),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        self.events_written.notify_waiters();
        Ok(changed)
    }
}
