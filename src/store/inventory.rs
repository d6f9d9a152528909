//! Inventories: the document an agent posted, and its facts stored beside it.

use super::*;

impl Store {
    /// Stores a node's raw inventory and its facts, replacing the previous
    /// ones; returns the previous facts when there was an inventory.
    pub async fn put_inventory(
        &self,
        node_id: Uuid,
        data: &serde_json::Value,
        facts: &[Fact],
    ) -> Result<Option<Vec<Fact>>> {
        let prev = match self.inventory(node_id).await? {
            Some(_) => self.inventory_facts(node_id).await?,
            None => None,
        };
        let facts_text =
            serde_json::to_string(facts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO inventories (node_id, data, facts, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_id) DO UPDATE SET data = excluded.data, facts = excluded.facts, \
             received_at = excluded.received_at",
        )
        .bind(node_id.to_string())
        .bind(data.to_string())
        .bind(facts_text)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(prev)
    }

    /// A node's stored inventory.
    pub async fn inventory(&self, node_id: Uuid) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT data FROM inventories WHERE node_id = $1")
            .bind(node_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            let s: String = r.try_get("data")?;
            serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// A node's stored facts; inventories stored before facts were kept are
    /// flattened on the way out.
    pub async fn inventory_facts(&self, node_id: Uuid) -> Result<Option<Vec<Fact>>> {
        let row = sqlx::query("SELECT data, facts FROM inventories WHERE node_id = $1")
            .bind(node_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        match r.try_get::<Option<String>, _>("facts")? {
            Some(f) => Ok(Some(serde_json::from_str(&f).map_err(corrupt)?)),
            None => {
                let data: String = r.try_get("data")?;
                let v: serde_json::Value = serde_json::from_str(&data).map_err(corrupt)?;
                Ok(Some(crate::profiles::facts_from_inventory(&v)))
            }
        }
    }
}
