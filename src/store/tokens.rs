//! Tokens: operator API tokens (admin or read-only), agent tokens (one per
//! step's boot) and discovery tokens (one per unknown machine's boot).
//!
//! Only SHA-256 hashes identify a token. An operator token's text is shown
//! once, when made. An agent or discovery token's text is kept sealed (see
//! [`crate::secrets`]) only until its agent first uses it, so that re-fetches
//! of the boot script during the same boot get the same token and no fetch
//! after that first use gets it at all.

use super::{Result, Store, StoreError, now_ms};
use crate::secrets::{hash_token, new_token, write_private};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::path::Path;
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads only.
    Readonly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readonly => "readonly",
        }
    }
    fn parse(s: &str) -> Result<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "readonly" => Ok(Role::Readonly),
            o => Err(StoreError::Corrupt(format!("unknown token role '{o}'"))),
        }
    }
}

/// An API token as listed (never its text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

/// Why an agent token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentTokenError {
    #[error("unknown agent token")]
    Unknown,
    #[error("agent token expired")]
    Expired,
    #[error("agent token belongs to a boot that has ended")]
    Ended,
    #[error("discovery token was already used to enrol its machine")]
    Used,
}

/// Who a discovery token speaks for: a machine no node had when it booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryAuth {
    pub hash: String,
    /// The MAC the machine booted from.
    pub mac: String,
    /// The node its inventory enrolled, once it has.
    pub node_id: Option<Uuid>,
}

/// The prefix of discovery tokens (boot tokens start with `rla_`).
pub const DISCOVERY_PREFIX: &str = "rld_";

/// What a boot script may hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handout {
    /// This token (the same until the agent first uses it).
    Token(String),
    /// This boot's token was used already: it is never handed out again.
    Used,
}

/// Who an agent token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentAuth {
    pub node_id: Uuid,
    pub step_id: i64,
    /// The step's phase: what the token may report.
    pub phase: super::Phase,
    /// Whether the step still waits for the agent's report.
    pub waiting: bool,
    /// Whether the step has its report (or failed) and is finishing.
    pub finishing: bool,
}

impl Store {
    /// Makes an API token; returns it with its text (shown once).
    pub async fn create_api_token(&self, name: &str, role: Role) -> Result<(ApiToken, String)> {
        let text = new_token("rl_");
        let tok = self.insert_api_token(name, role, &text).await?;
        Ok((tok, text))
    }

    async fn insert_api_token(&self, name: &str, role: Role, text: &str) -> Result<ApiToken> {
        let id = Uuid::new_v4().to_string();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.clone())
        .bind(name.to_string())
        .bind(role.as_str())
        .bind(hash_token(text))
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(ApiToken {
            id,
            name: name.to_string(),
            role,
            created_at: super::rfc3339(now),
        })
    }

    /// The role of an API token, if it is one.
    pub async fn api_token_role(&self, text: &str) -> Result<Option<Role>> {
        let row = sqlx::query("SELECT role FROM api_tokens WHERE hash = $1")
            .bind(hash_token(text))
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Role::parse(&r.try_get::<String, _>("role")?))
            .transpose()
    }

    pub async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at FROM api_tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiToken {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    role: Role::parse(&r.try_get::<String, _>("role")?)?,
                    created_at: super::rfc3339(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub async fn delete_api_token(&self, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.write)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("token '{id}'")));
        }
        Ok(())
    }

    /// Makes sure an admin token exists. When the token file exists its token is
    /// registered; when no admin token exists at all, one is made and written to
    /// `file` (mode 0600). Returns the file's path when it was written now.
    pub async fn ensure_admin_token(&self, file: &Path) -> Result<Option<std::path::PathBuf>> {
        let io = |e: std::io::Error| {
            StoreError::Unavailable(format!("admin token file {}: {e}", file.display()))
        };
        if let Ok(text) = std::fs::read_to_string(file) {
            let text = text.trim();
            if self.api_token_role(text).await?.is_none() {
                self.insert_api_token("admin (token file)", Role::Admin, text)
                    .await?;
            }
            return Ok(None);
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE role = 'admin'")
            .fetch_one(&self.read)
            .await?;
        if row.try_get::<i64, _>("n")? > 0 {
            return Ok(None);
        }
        let text = new_token("rl_");
        write_private(file, format!("{text}\n").as_bytes()).map_err(io)?;
        self.insert_api_token("admin (first start)", Role::Admin, &text)
            .await?;
        Ok(Some(file.to_path_buf()))
    }

    /// The agent token of a step's current boot, for its boot script: the
    /// same token on every fetch until the agent first uses it
    /// ([`Handout::Used`] after that), a new one when there is none or the
    /// unused one expired. Valid for `ttl`.
    pub async fn hand_out_agent_token(
        &self,
        node_id: Uuid,
        step_id: i64,
        ttl: Duration,
    ) -> Result<Handout> {
        if let Some(h) = self.agent_token_handout(step_id).await? {
            return Ok(h);
        }
        let text = new_token("rla_");
        let now = now_ms();
        sqlx::query(
            "DELETE FROM agent_tokens WHERE step_id = $1 AND used_at IS NULL AND expires_at < $2",
        )
        .bind(step_id)
        .bind(now)
        .execute(&self.write)
        .await?;
        // Two fetches at once: one insert wins, both hand out its token.
        sqlx::query(
            "INSERT INTO agent_tokens (step_id, node_id, hash, sealed, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (step_id) DO NOTHING",
        )
        .bind(step_id)
        .bind(node_id.to_string())
        .bind(hash_token(&text))
        .bind(self.secrets.seal(&text))
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.write)
        .await?;
        self.agent_token_handout(step_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("step {step_id}: agent token not kept")))
    }

    /// The step's token as the boot script may hand it out; None when there is
    /// none to hand out (none yet, or unused and expired).
    async fn agent_token_handout(&self, step_id: i64) -> Result<Option<Handout>> {
        let row =
            sqlx::query("SELECT sealed, used_at, expires_at FROM agent_tokens WHERE step_id = $1")
                .bind(step_id)
                .fetch_optional(&self.write)
                .await?;
        let Some(r) = row else { return Ok(None) };
        if r.try_get::<Option<i64>, _>("used_at")?.is_some() {
            return Ok(Some(Handout::Used));
        }
        if r.try_get::<i64, _>("expires_at")? < now_ms() {
            return Ok(None);
        }
        match r.try_get::<Option<String>, _>("sealed")? {
            Some(sealed) => {
                let text = self.secrets.open(&sealed).map_err(|e| {
                    StoreError::Corrupt(format!("agent token of step {step_id}: {e}"))
                })?;
                Ok(Some(Handout::Token(text)))
            }
            None => Ok(Some(Handout::Used)),
        }
    }

    /// Forgets a step's agent token: racklift is booting the machine again for
    /// the step, and that boot gets a token of its own.
    pub async fn new_agent_boot(&self, step_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM agent_tokens WHERE step_id = $1")
            .bind(step_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Checks an agent token: it must exist, be unexpired, and belong to the boot
    /// (step) still under way. Its first use makes it one the boot script no
    /// longer hands out.
    pub async fn check_agent_token(
        &self,
        text: &str,
    ) -> Result<Result<AgentAuth, AgentTokenError>> {
        let hash = hash_token(text);
        let row = sqlx::query(
            "SELECT t.node_id, t.step_id, t.expires_at, t.used_at, s.status, s.stage, s.phase, s.failure \
             FROM agent_tokens t LEFT JOIN steps s ON s.id = t.step_id WHERE t.hash = $1",
        )
        .bind(hash.clone())
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else {
            return Ok(Err(AgentTokenError::Unknown));
        };
        let expires: i64 = r.try_get("expires_at")?;
        if expires < now_ms() {
            return Ok(Err(AgentTokenError::Expired));
        }
        let status: Option<String> = r.try_get("status")?;
        let status = status.as_deref().and_then(super::StepStatus::parse);
        let active = status.is_some_and(super::StepStatus::is_active);
        if !active {
            return Ok(Err(AgentTokenError::Ended));
        }
        if r.try_get::<Option<i64>, _>("used_at")?.is_none() {
            sqlx::query(
                "UPDATE agent_tokens SET used_at = $1, sealed = NULL WHERE hash = $2 AND used_at IS NULL",
            )
            .bind(now_ms())
            .bind(hash)
            .execute(&self.write)
            .await?;
        }
        let node: String = r.try_get("node_id")?;
        let phase: Option<String> = r.try_get("phase")?;
        let phase = super::steps::parse_phase(phase.as_deref().unwrap_or_default())?;
        let stage: Option<String> = r.try_get("stage")?;
        let failed = r.try_get::<Option<String>, _>("failure")?.is_some();
        let finishing = stage
            .as_deref()
            .and_then(super::Stage::parse)
            .is_some_and(|s| phase.boot_over(s, failed));
        Ok(Ok(AgentAuth {
            node_id: Uuid::parse_str(&node).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            step_id: r.try_get("step_id")?,
            phase,
            waiting: status == Some(super::StepStatus::Waiting),
            finishing,
        }))
    }

    /// The node of an unexpired agent token whose boot was the node's last
    /// one, whatever its step's state (a later boot makes it worthless).
    pub async fn agent_token_node(&self, text: &str) -> Result<Option<Uuid>> {
        let row = sqlx::query(
            "SELECT t.node_id FROM agent_tokens t WHERE t.hash = $1 AND t.expires_at >= $2 \
             AND t.step_id = (SELECT MAX(s.id) FROM steps s WHERE s.node_id = t.node_id)",
        )
        .bind(hash_token(text))
        .bind(now_ms())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let n: String = r.try_get("node_id")?;
            Uuid::parse_str(&n).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// The discovery token of a machine that booted from `mac`, for its boot
    /// script: the same token until the machine first uses it
    /// ([`Handout::Used`] after that, until it expires), a new one otherwise.
    /// Expired tokens that enrolled nothing are dropped when a new one is minted.
    pub async fn hand_out_discovery_token(&self, mac: &str, ttl: Duration) -> Result<Handout> {
        let now = now_ms();
        // A re-fetch of the script during the same boot only reads; expired
        // tokens are swept when a new one is minted, not on every fetch.
        let row = sqlx::query(
            "SELECT sealed FROM discovery_tokens WHERE mac = $1 AND node_id IS NULL \
             AND expires_at >= $2 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(mac.to_string())
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        if let Some(r) = row {
            return match r.try_get::<Option<String>, _>("sealed")? {
                Some(sealed) => self
                    .secrets
                    .open(&sealed)
                    .map(Handout::Token)
                    .map_err(|e| StoreError::Corrupt(format!("discovery token of {mac}: {e}"))),
                None => Ok(Handout::Used),
            };
        }
        sqlx::query("DELETE FROM discovery_tokens WHERE node_id IS NULL AND expires_at < $1")
            .bind(now)
            .execute(&self.write)
            .await?;
        let text = new_token(DISCOVERY_PREFIX);
        sqlx::query(
            "INSERT INTO discovery_tokens (hash, mac, sealed, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_token(&text))
        .bind(mac.to_string())
        .bind(self.secrets.seal(&text))
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(Handout::Token(text))
    }

    /// Checks a discovery token: it must exist and be unexpired.
    pub async fn check_discovery_token(
        &self,
        text: &str,
    ) -> Result<Result<DiscoveryAuth, AgentTokenError>> {
        let hash = hash_token(text);
        let row = sqlx::query(
            "SELECT mac, expires_at, node_id, sealed FROM discovery_tokens WHERE hash = $1",
        )
        .bind(hash.clone())
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else {
            return Ok(Err(AgentTokenError::Unknown));
        };
        if r.try_get::<i64, _>("expires_at")? < now_ms() {
            return Ok(Err(AgentTokenError::Expired));
        }
        if r.try_get::<Option<String>, _>("sealed")?.is_some() {
            sqlx::query("UPDATE discovery_tokens SET sealed = NULL WHERE hash = $1")
                .bind(hash.clone())
                .execute(&self.write)
                .await?;
        }
        let node_id = r
            .try_get::<Option<String>, _>("node_id")?
            .map(|n| Uuid::parse_str(&n).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        Ok(Ok(DiscoveryAuth {
            hash,
            mac: r.try_get("mac")?,
            node_id,
        }))
    }

    /// Takes a discovery token for one enrolment while fewer than
    /// `max_per_minute` enrolments were taken in the last minute; false when
    /// it was taken already or the minute is full.
    pub async fn claim_discovery_token(&self, hash: &str, max_per_minute: u32) -> Result<bool> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE discovery_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL \
             AND (SELECT COUNT(*) FROM discovery_tokens WHERE used_at >= $3) < $4",
        )
        .bind(now)
        .bind(hash.to_string())
        .bind(now - 60_000)
        .bind(i64::from(max_per_minute))
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records the node a claimed discovery token enrolled, or (None) gives the
    /// token back when the enrolment failed.
    pub async fn settle_discovery_token(&self, hash: &str, node_id: Option<Uuid>) -> Result<()> {
        let q = match node_id {
            Some(id) => sqlx::query("UPDATE discovery_tokens SET node_id = $1 WHERE hash = $2")
                .bind(id.to_string()),
            None => sqlx::query(
                "UPDATE discovery_tokens SET used_at = NULL WHERE hash = $1 AND node_id IS NULL",
            ),
        };
        q.bind(hash.to_string()).execute(&self.write).await?;
        Ok(())
    }
}
