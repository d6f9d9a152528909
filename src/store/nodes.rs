//! Nodes: enrolment, reads, lists, the DHCP directory of enrolled MACs,
//! changes and deletion, each guarded by the node's generation.

use super::*;

/// Filters of `GET /v1/nodes`.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub state: Option<State>,
    pub profile: Option<String>,
    pub maintenance: Option<bool>,
    /// Return names after this one (keyset pagination).
    pub after: Option<String>,
    pub limit: i64,
}

/// One enrolled MAC as the DHCP server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub mac: MacAddr,
    pub node_id: Uuid,
    /// Its hostname, else its name.
    pub hostname: String,
    /// Its assigned addresses, as stored (one per network).
    pub addresses: Vec<String>,
}

/// What [`Store::dhcp_directory`] reads, one row per port.
macro_rules! directory_sql {
    () => {
        "SELECT p.mac AS mac, n.id AS id, n.name AS name, n.hostname AS hostname, \
         n.addresses AS addresses FROM ports p JOIN nodes n ON n.id = p.node_id"
    };
}

pub(super) fn directory_entry(r: &sqlx::any::AnyRow) -> Result<DirectoryEntry> {
    let mac: String = r.try_get("mac")?;
    let id: String = r.try_get("id")?;
    let hostname: Option<String> = r.try_get("hostname")?;
    let addresses: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&r.try_get::<String, _>("addresses")?)
            .map_err(|e| corrupt("addresses", e))?;
    Ok(DirectoryEntry {
        mac: mac.parse().map_err(|e| corrupt("ports.mac", e))?,
        node_id: Uuid::parse_str(&id).map_err(|e| corrupt("nodes.id", e))?,
        hostname: hostname.unwrap_or(r.try_get("name")?),
        addresses: addresses.into_values().collect(),
    })
}

/// A node row as stored, the sealed BMC password included.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub node: Node,
    pub bmc_password_sealed: Option<String>,
}

pub(super) async fn ensure_name_free(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    except: Option<Uuid>,
) -> Result<()> {
    let row = sqlx::query("SELECT id FROM nodes WHERE name = $1")
        .bind(name.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(r) = row {
        let id: String = r.try_get("id")?;
        if except.map(|e| e.to_string()) != Some(id) {
            return Err(StoreError::Duplicate {
                field: "name".into(),
                message: format!("name '{name}' is already used by another node"),
            });
        }
    }
    Ok(())
}

pub(super) async fn ensure_macs_free(
    tx: &mut Transaction<'static, Any>,
    macs: &[MacAddr],
    except: Option<Uuid>,
) -> Result<()> {
    for m in macs {
        let row = sqlx::query(
            "SELECT n.id, n.name FROM ports p JOIN nodes n ON n.id = p.node_id WHERE p.mac = $1",
        )
        .bind(m.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = row {
            let id: String = r.try_get("id")?;
            if except.map(|e| e.to_string()) != Some(id) {
                let owner: String = r.try_get("name")?;
                return Err(StoreError::Duplicate {
                    field: "macs".into(),
                    message: format!("MAC {m} is already a port of node '{owner}'"),
                });
            }
        }
    }
    Ok(())
}

pub(super) async fn insert_ports(
    tx: &mut Transaction<'static, Any>,
    id: Uuid,
    macs: &[MacAddr],
) -> Result<()> {
    for m in macs {
        sqlx::query("INSERT INTO ports (mac, node_id) VALUES ($1, $2)")
            .bind(m.to_string())
            .bind(id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(duplicate)?;
    }
    Ok(())
}

pub(super) fn join_macs(macs: &[MacAddr]) -> String {
    macs.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn node_from_row(r: &sqlx::any::AnyRow) -> Result<NodeRecord> {
    let id: String = r.try_get("id")?;
    let state: String = r.try_get("state")?;
    let state = State::from_str(&state).map_err(|e| corrupt("state", e))?;
    let target: Option<String> = r.try_get("target")?;
    let macs: String = r.try_get("macs")?;
    let macs = macs
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| corrupt("macs", e)))
        .collect::<Result<Vec<MacAddr>>>()?;
    let boot_mac: Option<String> = r.try_get("boot_mac")?;
    let driver: String = r.try_get("bmc_driver")?;
    let port: Option<i64> = r.try_get("bmc_port")?;
    let sealed: Option<String> = r.try_get("bmc_password")?;
    let created: i64 = r.try_get("created_at")?;
    let updated: i64 = r.try_get("updated_at")?;
    let changed: i64 = r.try_get("state_changed_at")?;
    let node = Node {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("id", e))?,
        name: r.try_get("name")?,
        boot_mac: boot_mac
            .map(|m| m.parse().map_err(|e| corrupt("boot_mac", e)))
            .transpose()?,
        macs,
        bmc: BmcView {
            driver: BmcDriverKind::from_str(&driver).map_err(|e| corrupt("bmc_driver", e))?,
            address: r.try_get("bmc_address")?,
            port: port.and_then(|p| u16::try_from(p).ok()),
            username: r.try_get("bmc_username")?,
            password_set: sealed.is_some(),
            verify_tls: r.try_get::<i64, _>("bmc_verify_tls")? != 0,
        },
        state,
        target: target
            .map(|t| State::from_str(&t).map_err(|e| corrupt("target", e)))
            .transpose()?,
        generation: r.try_get("generation")?,
        profile: r.try_get("profile")?,
        role: r.try_get("role")?,
        hostname: r.try_get("hostname")?,
        addresses: serde_json::from_str(&r.try_get::<String, _>("addresses")?)
            .map_err(|e| corrupt("addresses", e))?,
        last_error: r.try_get("last_error")?,
        maintenance: r.try_get::<i64, _>("maintenance")? != 0,
        maintenance_reason: r.try_get("maintenance_reason")?,
        power_state: r.try_get("power_state")?,
        created_at: rfc3339(created),
        updated_at: rfc3339(updated),
        state_changed_at: rfc3339(changed),
        allowed_actions: action_names(state),
    };
    Ok(NodeRecord {
        node,
        bmc_password_sealed: sealed,
    })
}

pub(super) fn action_names(state: State) -> Vec<String> {
    state
        .allowed_actions()
        .iter()
        .map(|e| e.as_str().to_string())
        .collect()
}

impl Store {
    /// Creates a node in state `enrolled`.
    pub async fn create_node(&self, new: &NewNode, actor: &str) -> Result<Node> {
        let (name, macs) = new.validate()?;
        let id = Uuid::new_v4();
        let now = now_ms();
        let driver = new.bmc.driver.unwrap_or_default();
        let sealed = new.bmc.password.as_deref().map(|p| self.secrets.seal(p));
        let boot_mac = new.boot_mac.or(macs.first().copied());
        let (taken_name, taken_macs) = (name.clone(), macs.clone());
        let at = rfc3339(now);
        let node = Node {
            id,
            name,
            boot_mac,
            macs,
            bmc: BmcView {
                driver,
                address: new.bmc.address.clone(),
                port: new.bmc.port,
                username: new.bmc.username.clone(),
                password_set: new.bmc.password.is_some(),
                verify_tls: new.bmc.verify_tls.unwrap_or(true),
            },
            state: State::Enrolled,
            target: None,
            generation: 1,
            profile: new.profile.clone(),
            role: new.role.clone(),
            hostname: None,
            addresses: Default::default(),
            last_error: None,
            maintenance: false,
            maintenance_reason: None,
            power_state: None,
            created_at: at.clone(),
            updated_at: at.clone(),
            state_changed_at: at,
            allowed_actions: action_names(State::Enrolled),
        };
        // The unique indexes decide; who holds a taken name or MAC is looked up
        // only after a refusal, to say so.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = enrol::Pending {
            node,
            sealed_password: sealed,
            actor: actor.to_string(),
            at: now,
            reply,
        };
        self.enrol
            .send(pending)
            .await
            .map_err(|_| StoreError::Unavailable("the enrolment writer has stopped".into()))?;
        let written = answer
            .await
            .map_err(|_| StoreError::Unavailable("the enrolment writer has stopped".into()))?;
        if written.is_ok() {
            self.nodes_changed();
        }
        match written {
            Err(e @ StoreError::Duplicate { .. }) => {
                Err(self.who_holds(&taken_name, &taken_macs).await.unwrap_or(e))
            }
            other => other,
        }
    }

    /// After a unique violation: which node holds the name or one of the MACs.
    async fn who_holds(&self, name: &str, macs: &[MacAddr]) -> Option<StoreError> {
        let mut tx = self.read.begin().await.ok()?;
        if let Err(e) = ensure_name_free(&mut tx, name, None).await {
            return Some(e);
        }
        ensure_macs_free(&mut tx, macs, None).await.err()
    }

    /// A node by UUID or name.
    pub async fn get_node(&self, id_or_name: &str) -> Result<Node> {
        Ok(self.get_record(id_or_name).await?.node)
    }

    /// A node with its sealed secrets, by UUID or name.
    pub async fn get_record(&self, id_or_name: &str) -> Result<NodeRecord> {
        let row = if Uuid::parse_str(id_or_name).is_ok() {
            sqlx::query(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE id = $1"
            ))
            .bind(id_or_name.to_lowercase())
            .fetch_optional(&self.read)
            .await?
        } else {
            sqlx::query(concat!(
                "SELECT ",
                node_cols!(),
                " FROM nodes WHERE name = $1"
            ))
            .bind(id_or_name.to_string())
            .fetch_optional(&self.read)
            .await?
        };
        let row = row.ok_or_else(|| StoreError::NotFound(format!("node '{id_or_name}'")))?;
        node_from_row(&row)
    }

    /// The node owning a port with this MAC.
    pub async fn node_by_mac(&self, mac: MacAddr) -> Result<Option<NodeRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE id = (SELECT node_id FROM ports WHERE mac = $1)"
        ))
        .bind(mac.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| node_from_row(&r)).transpose()
    }

    /// See [`Store::nodes_epoch`]: read it before reading the directory.
    pub fn nodes_epoch(&self) -> u64 {
        self.nodes_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every enrolled MAC with what DHCP needs of its node (id, hostname or
    /// name, addresses), in one read: the DHCP server's directory.
    pub async fn dhcp_directory(&self) -> Result<Vec<DirectoryEntry>> {
        let rows = sqlx::query(directory_sql!()).fetch_all(&self.read).await?;
        rows.iter().map(directory_entry).collect()
    }

    /// The directory's entry for one MAC, read alone.
    pub async fn dhcp_directory_entry(&self, mac: MacAddr) -> Result<Option<DirectoryEntry>> {
        sqlx::query(concat!(directory_sql!(), " WHERE p.mac = $1"))
            .bind(mac.to_string())
            .fetch_optional(&self.read)
            .await?
            .as_ref()
            .map(directory_entry)
            .transpose()
    }

    /// A page of nodes, ordered by name: each node's id, generation and name.
    /// Callers holding a node's JSON for that generation need nothing more
    /// (every change bumps the generation); [`Store::nodes_by_ids`] fetches the rest.
    pub async fn list_node_versions(&self, f: &NodeFilter) -> Result<Vec<(Uuid, i64, String)>> {
        // Built from fixed fragments only; every value is bound. One statement per
        // combination of filters lets both databases use their indexes. The page
        // comes back as one aggregated row (SQLite 3.44+ and PostgreSQL both have
        // `string_agg ... ORDER BY`): one row to move instead of one per node.
        let mut sql = String::from("SELECT id, generation, name FROM nodes WHERE name > $1");
        let mut n = 1;
        let mut next = |col: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&format!(" AND {col} = ${n}"));
        };
        if f.state.is_some() {
            next("state", &mut sql);
        }
        if f.profile.is_some() {
            next("profile", &mut sql);
        }
        if f.maintenance.is_some() {
            next("maintenance", &mut sql);
        }
        sql.push_str(&format!(" ORDER BY name LIMIT ${}", n + 1));
        let sql = format!(
            "SELECT string_agg(id || ' ' || generation || ' ' || name, ',' ORDER BY name) AS page \
             FROM ({sql}) AS p"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(f.after.clone().unwrap_or_default());
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(p) = &f.profile {
            q = q.bind(p.clone());
        }
        if let Some(m) = f.maintenance {
            q = q.bind(i64::from(m));
        }
        let row = q.bind(f.limit).fetch_one(&self.read).await?;
        let page: Option<String> = row.try_get("page")?;
        // Names never hold spaces or commas (see `validate_name`), nor do UUIDs.
        page.unwrap_or_default()
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut it = e.splitn(3, ' ');
                let (id, generation, name) = (it.next(), it.next(), it.next());
                match (
                    id.map(Uuid::parse_str),
                    generation.map(str::parse::<i64>),
                    name,
                ) {
                    (Some(Ok(id)), Some(Ok(g)), Some(name)) => Ok((id, g, name.to_string())),
                    _ => Err(corrupt("page", format!("unreadable entry '{e}'"))),
                }
            })
            .collect()
    }

    /// The nodes with these ids (in no particular order; missing ones are skipped).
    pub async fn nodes_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Node>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // Fixed text plus numbered placeholders; the ids are bound.
            let sql = format!(
                concat!("SELECT ", node_cols!(), " FROM nodes WHERE id IN ({})"),
                marks.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for r in q.fetch_all(&self.read).await? {
                out.push(node_from_row(&r)?.node);
            }
        }
        Ok(out)
    }

    /// How many nodes are in each state.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM nodes GROUP BY state")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Applies a PATCH: only given fields change.
    pub async fn update_node(
        &self,
        id_or_name: &str,
        patch: &NodePatch,
        actor: &str,
    ) -> Result<Node> {
        patch.check()?;
        let rec = self.get_record(id_or_name).await?;
        let cur = &rec.node;
        if let Some(g) = patch.generation
            && g != cur.generation
        {
            return Err(StoreError::Conflict(format!(
                "node '{}' is at generation {}, not {g}: reload it and try again",
                cur.name, cur.generation
            )));
        }
        let mut changed: Vec<&str> = Vec::new();
        let name = match &patch.name {
            Some(n) if *n != cur.name => {
                changed.push("name");
                n.clone()
            }
            _ => cur.name.clone(),
        };
        let boot_mac = match patch.boot_mac {
            Some(b) if b != cur.boot_mac => {
                changed.push("boot_mac");
                b
            }
            _ => cur.boot_mac,
        };
        let macs = port_list(boot_mac, patch.macs.as_ref().unwrap_or(&cur.macs))?;
        if macs != cur.macs {
            changed.push("macs");
        }
        let mut bmc = cur.bmc.clone();
        let mut sealed = rec.bmc_password_sealed.clone();
        if let Some(b) = &patch.bmc {
            let BmcInput {
                driver,
                address,
                port,
                username,
                password,
                verify_tls,
            } = b;
            if let Some(d) = driver {
                bmc.driver = *d;
            }
            if address.is_some() {
                bmc.address = address.clone();
            }
            if port.is_some() {
                bmc.port = *port;
            }
            if username.is_some() {
                bmc.username = username.clone();
            }
            if let Some(v) = verify_tls {
                bmc.verify_tls = *v;
            }
            if let Some(p) = password {
                sealed = Some(self.secrets.seal(p));
            }
            let merged = BmcInput {
                driver: Some(bmc.driver),
                address: bmc.address.clone(),
                port: bmc.port,
                ..Default::default()
            };
            validate_bmc(&merged, bmc.driver)?;
            changed.push("bmc");
        }
        let profile = match &patch.profile {
            Some(p) => {
                changed.push("profile");
                p.clone()
            }
            None => cur.profile.clone(),
        };
        let role = match &patch.role {
            Some(r) => {
                changed.push("role");
                r.clone()
            }
            None => cur.role.clone(),
        };
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        if name != cur.name {
            ensure_name_free(&mut tx, &name, Some(cur.id)).await?;
        }
        if macs != cur.macs {
            ensure_macs_free(&mut tx, &macs, Some(cur.id)).await?;
        }
        let res = sqlx::query(
            "UPDATE nodes SET name = $1, boot_mac = $2, macs = $3, bmc_driver = $4, bmc_address = $5, \
             bmc_port = $6, bmc_username = $7, bmc_password = $8, bmc_verify_tls = $9, profile = $10, \
             role = $11, updated_at = $12, generation = generation + 1 \
             WHERE id = $13 AND generation = $14",
        )
        .bind(name.clone())
        .bind(boot_mac.map(|m| m.to_string()))
        .bind(join_macs(&macs))
        .bind(bmc.driver.as_str())
        .bind(bmc.address.clone())
        .bind(bmc.port.map(i64::from))
        .bind(bmc.username.clone())
        .bind(sealed)
        .bind(i64::from(bmc.verify_tls))
        .bind(profile)
        .bind(role)
        .bind(now)
        .bind(cur.id.to_string())
        .bind(cur.generation)
        .execute(&mut *tx)
        .await
        .map_err(duplicate)?;
        if res.rows_affected() == 0 {
            return Err(conflict(&cur.name));
        }
        if macs != cur.macs {
            sqlx::query("DELETE FROM ports WHERE node_id = $1")
                .bind(cur.id.to_string())
                .execute(&mut *tx)
                .await?;
            insert_ports(&mut tx, cur.id, &macs).await?;
        }
        let reason = if changed.is_empty() {
            "no change".to_string()
        } else {
            format!("changed: {}", changed.join(", "))
        };
        insert_event(
            &mut tx,
            cur.id,
            "updated",
            None,
            None,
            Some("update"),
            actor,
            Some(&reason),
            now,
        )
        .await?;
        tx.commit().await?;
        self.nodes_changed();
        self.events_written.notify_waiters();
        self.get_node(&cur.id.to_string()).await
    }

    /// Deletes a node that holds no installation and has no work under way.
    pub async fn delete_node(&self, id_or_name: &str, actor: &str) -> Result<Node> {
        let node = self.get_node(id_or_name).await?;
        let deletable = matches!(
            node.state,
            State::Enrolled
                | State::Manageable
                | State::Available
                | State::InspectFailed
                | State::CleanFailed
        );
        if !deletable {
            return Err(StoreError::InvalidTransition {
                state: node.state,
                action: "delete".into(),
                allowed: node.allowed_actions.clone(),
            });
        }
        let now = now_ms();
        let mut tx = self.write.begin().await?;
        profiles::release_in(&mut tx, node.id).await?;
        let res = sqlx::query("DELETE FROM nodes WHERE id = $1 AND generation = $2")
            .bind(node.id.to_string())
            .bind(node.generation)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(conflict(&node.name));
        }
        insert_event(
            &mut tx,
            node.id,
            "deleted",
            Some(node.state),
            None,
            Some("delete"),
            actor,
            Some(&format!("node '{}' deleted", node.name)),
            now,
        )
        .await?;
        tx.commit().await?;
        self.nodes_changed();
        self.events_written.notify_waiters();
        Ok(node)
    }
}
