//! Discovery: enrolling a machine nobody declared, from the inventory its
//! discovery token (`rld_...`, bound to the MAC it booted from) posts.
//!
//! The machine is named from its serial number, else its MAC, with the BMC
//! address the agent found, and profile selection runs. It holds the MAC it
//! booted from and those of its inventory no node holds (a MAC another node
//! holds is an event on both, never a refusal); at most
//! `discovery.max_per_minute` machines are enrolled in any minute. Answers
//! to these callers name no other node.

use super::agent::Accepted;
use super::{App, AppError};
use crate::node::{BmcDriverKind, BmcInput, MacAddr, NewNode, Node, limits};
use crate::protocol::{Fact, Inventory};
use crate::store::{AgentTokenError, DiscoveryAuth, StoreError};

/// A node name from a serial number: lower case, other characters as `-`.
fn name_from_serial(serial: &str) -> Option<String> {
    let s: String = serial
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let s: String = s.chars().take(63).collect();
    (!s.is_empty() && crate::node::validate_name("name", &s).is_ok()).then_some(s)
}

impl App {
    /// Refused: `discovery.max_per_minute` machines were enrolled in the last
    /// minute; `frees_at` is when the oldest of them leaves the window.
    fn discovery_limited(&self, frees_at: Option<i64>) -> AppError {
        self.metrics.count("discovery_rate_limited");
        let wait_ms = frees_at.map_or(60_000, |t| t - crate::store::now_ms());
        AppError::TooMany {
            message: format!(
                "discovery enrols at most {} machines a minute (discovery.max_per_minute); ask again later",
                self.cfg.discovery.max_per_minute
            ),
            retry_after: (wait_ms.max(0) as u64).div_ceil(1000).max(1),
        }
    }

    /// Enrols a discovered machine from its inventory (once per token).
    pub(super) async fn enrol_discovered(
        &self,
        d: DiscoveryAuth,
        raw: &serde_json::Value,
        inv: Option<Inventory>,
        facts: &[Fact],
    ) -> Result<Accepted, AppError> {
        if d.node_id.is_some() {
            return Err(AppError::Unauthorized(AgentTokenError::Used.to_string()));
        }
        let Some(inv) = inv else {
            return Err(AppError::invalid(
                "invalid_body",
                "inventory: a discovered machine must send racklift-agent's inventory (an object with 'agent', 'system', 'nics', ...)",
            ));
        };
        let max = self.cfg.discovery.max_per_minute;
        let (recent, frees_at) = self.store.discoveries_last_minute().await?;
        if recent >= i64::from(max) {
            return Err(self.discovery_limited(frees_at));
        }
        if !self.store.claim_discovery_token(&d.hash, max).await? {
            let (recent, frees_at) = self.store.discoveries_last_minute().await?;
            if recent >= i64::from(max) {
                return Err(self.discovery_limited(frees_at));
            }
            return Err(AppError::conflict(
                "discovery_in_progress",
                "this discovery token is enrolling its machine already",
            ));
        }
        let node = match self.enrol(&d, &inv).await {
            Ok(node) => node,
            Err(e) => {
                self.store.settle_discovery_token(&d.hash, None).await?;
                return Err(e);
            }
        };
        self.store
            .settle_discovery_token(&d.hash, Some(node.id))
            .await?;
        self.store_inventory(node.id, raw, facts).await?;
        let selected = self.select_profile(node.id, facts).await?;
        self.store
            .log_event(
                node.id,
                "discovery",
                "discovery",
                &format!("enrolled by discovery from {}; {}", d.mac, selected.summary),
            )
            .await?;
        self.metrics.count("nodes_discovered");
        Ok(Accepted::Enrolled {
            name: node.name,
            id: node.id,
        })
    }

    /// Creates the discovered machine's node: the MAC it booted from, the
    /// MACs of its inventory that no node holds (each one another node holds
    /// is an event on both nodes), the BMC address the agent found.
    async fn enrol(&self, d: &DiscoveryAuth, inv: &Inventory) -> Result<Node, AppError> {
        let boot_mac: MacAddr = d
            .mac
            .parse()
            .map_err(|e: String| AppError::Store(StoreError::Corrupt(e)))?;
        let mut reported: Vec<MacAddr> = Vec::new();
        for n in &inv.nics {
            if let Ok(m) = n.mac.parse::<MacAddr>()
                && m != boot_mac
                && !reported.contains(&m)
            {
                reported.push(m);
            }
        }
        reported.truncate(limits::MACS - 1);
        let held = self.store.mac_holders(&reported).await?;
        let mut macs = vec![boot_mac];
        macs.extend(
            reported
                .iter()
                .filter(|m| !held.iter().any(|h| h.mac == **m)),
        );
        let by_mac = format!("node-{}", d.mac.replace(':', ""));
        let by_serial = inv.system.serial.as_deref().and_then(name_from_serial);
        let bmc = match inv.bmc.as_ref().and_then(|b| b.ipv4.clone()) {
            Some(address) => BmcInput {
                driver: Some(BmcDriverKind::Ipmi),
                address: Some(address),
                ..Default::default()
            },
            None => BmcInput::default(),
        };
        for name in by_serial.into_iter().chain([by_mac]) {
            let new = NewNode {
                name: Some(name),
                boot_mac: Some(boot_mac),
                macs: macs.clone(),
                bmc: bmc.clone(),
                profile: None,
                role: None,
            };
            match self.store.create_node(&new, "discovery").await {
                Ok(node) => {
                    for h in &held {
                        self.metrics.count("discovery_mac_conflicts");
                        self.store
                            .log_event(
                                node.id,
                                "discovery",
                                "discovery",
                                &format!(
                                    "inventory MAC {} not taken: it is a port of node '{}'",
                                    h.mac, h.name
                                ),
                            )
                            .await?;
                        self.store
                            .log_event(
                                h.node_id,
                                "discovery",
                                "discovery",
                                &format!(
                                    "discovered machine '{}' (booted from {boot_mac}) reported MAC {}, a port of this node; it was not given to it",
                                    node.name, h.mac
                                ),
                            )
                            .await?;
                    }
                    return Ok(node);
                }
                // Another node holds that name: try the next one.
                Err(StoreError::Duplicate { field, .. }) if field == "name" => {}
                // A MAC taken meanwhile. The caller is not authenticated as an
                // operator: the answer names no node.
                Err(StoreError::Duplicate { .. }) => {
                    return Err(AppError::conflict(
                        "duplicate",
                        "the discovered machine cannot be enrolled: a node holds its boot MAC",
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::conflict(
            "duplicate",
            "the discovered machine cannot be enrolled: nodes hold the names made from its serial number and its MAC",
        ))
    }
}
