//! The command line: `racklift serve` and the client commands that talk to the
//! API (`racklift node ...`, `racklift token ...`). Tables by default, JSON with
//! `--json`. The URL and token come from flags or `RACKLIFT_URL` /
//! `RACKLIFT_TOKEN` (clap reads them; the binary's `main` hands clap the
//! environment), falling back to `./racklift-data/admin.token`.

use crate::api::views::{
    ApiToken, CreatedToken, Enrolled, EventRow, Lease, NodePage, NodeView, PowerView,
    ProfileSummary, RaidView, Reloaded, TestResult,
};
use crate::bmc::{BiosSettings, RaidVolume};
use crate::protocol::Fact;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "racklift",
    version,
    about = "Bare-metal provisioning server and its command line"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Configuration file (TOML); every key has a default.
        #[arg(long, env = "RACKLIFT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Nodes: list, show, create, update, delete, act, read events.
    Node {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Role profiles: list, show, test against facts or a node, reload from disk.
    Profile {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        cmd: ProfileCmd,
    },
    /// DHCP leases.
    Lease {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        cmd: LeaseCmd,
    },
    /// API tokens (admin only).
    Token {
        #[command(flatten)]
        client: ClientOpts,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Debug, Args)]
pub struct ClientOpts {
    /// racklift's API URL.
    #[arg(
        long,
        env = "RACKLIFT_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API token (default: the content of ./racklift-data/admin.token).
    #[arg(long, env = "RACKLIFT_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The filters of `racklift node list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    maintenance: Option<bool>,
    /// Fetch every page.
    #[arg(long)]
    all: bool,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List(ListArgs),
    /// Show one node.
    Show { id: String },
    /// Enrol a node.
    Create(NodeFields),
    /// Change a node.
    Update {
        id: String,
        #[command(flatten)]
        fields: NodeFields,
    },
    /// Delete a node.
    Delete { id: String },
    /// Run a lifecycle action (manage, inspect, provide, deploy, configure,
    /// reprovision, undeploy, abort, maintenance_on, maintenance_off).
    Action {
        id: String,
        action: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Power through the node's BMC: on, off (hard), soft-off, reset, cycle,
    /// or status (read now).
    Power {
        id: String,
        action: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Set the next boot device: pxe, disk, cd or uefi-http.
    BootDevice {
        id: String,
        device: String,
        /// For every boot, not only the next.
        #[arg(long)]
        persistent: bool,
        /// Legacy (BIOS) boot instead of UEFI.
        #[arg(long, conflicts_with = "uefi")]
        legacy: bool,
        /// UEFI boot (default: leave the BMC's mode).
        #[arg(long)]
        uefi: bool,
    },
    /// BIOS attributes through the node's BMC (Redfish).
    Bios {
        #[command(subcommand)]
        cmd: BiosCmd,
    },
    /// RAID volumes through the node's BMC (Redfish).
    Raid {
        #[command(subcommand)]
        cmd: RaidCmd,
    },
    /// A node's stored inventory (JSON, as its agent posted it).
    Inventory { id: String },
    /// A node's hardware facts ([class, type, key, value]).
    Facts { id: String },
    /// A node's events.
    Events {
        id: String,
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `--wait` and `--timeout`, for the commands whose effect comes later.
#[derive(Debug, Clone, Copy, Args)]
pub struct Wait {
    /// Follow the node until the change is done; exit non-zero (with the
    /// node's last_error) if it fails.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. 90s, 30m (default 30m).
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    timeout: Option<std::time::Duration>,
}

impl Wait {
    fn timeout(&self) -> std::time::Duration {
        self.timeout
            .unwrap_or(std::time::Duration::from_secs(30 * 60))
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

/// The power actions, as the CLI writes them.
const POWER_ACTIONS: [&str; 6] = ["on", "off", "soft-off", "reset", "cycle", "status"];
/// The boot devices, as the CLI writes them.
const BOOT_DEVICES: [&str; 4] = ["pxe", "disk", "cd", "uefi-http"];

/// `word` in the CLI's spelling (`-`, also taking `_`) if it is one of
/// `known`; otherwise an error listing them, with a hint when the node and
/// the word were given the other way round.
fn one_of(what: &str, word: &str, known: &[&str], id: &str, usage: &str) -> anyhow::Result<String> {
    let w = word.to_ascii_lowercase().replace('_', "-");
    if known.contains(&w.as_str()) {
        return Ok(w);
    }
    let swapped = id.to_ascii_lowercase().replace('_', "-");
    if known.contains(&swapped.as_str()) {
        bail!("the node comes first: racklift {usage} {word} {id}");
    }
    bail!("unknown {what} '{word}'; one of: {}", known.join(", "))
}

#[derive(Debug, Subcommand)]
pub enum BiosCmd {
    /// Current attributes, and those pending for the next boot.
    Show { id: String },
    /// Change attributes (NAME=VALUE ...); they apply at the next boot.
    Set {
        id: String,
        #[arg(required = true)]
        attributes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RaidCmd {
    /// List the volumes.
    Show { id: String },
    /// Create a volume from member disks (ids from `node raid show` or the
    /// BMC inventory), a size, or both.
    Create {
        id: String,
        /// 0, 1, 5, 6, 10, 50 or 60.
        #[arg(long)]
        level: String,
        /// A member disk id (repeat for several).
        #[arg(long = "disk")]
        disks: Vec<String>,
        /// Size, e.g. 200GB, 1TiB or bytes.
        #[arg(long)]
        size: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a volume.
    Delete { id: String, volume: String },
}

/// Follows a node after an action (`answer` is the action's answer) until it
/// reaches the action's target state; an error (with `last_error`) when it
/// settles elsewhere or fails, or when `timeout` passes.
async fn wait_for_target(
    c: &Client,
    id: &str,
    answer: &NodeView,
    timeout: std::time::Duration,
) -> anyhow::Result<NodeView> {
    let want = answer.target.unwrap_or(answer.state);
    let until = std::time::Instant::now() + timeout;
    let path = format!("/v1/nodes/{}", enc(id));
    let mut n = answer.clone();
    loop {
        if n.state == want {
            return Ok(n);
        }
        let settled = !n.state.is_transient() && n.target.is_none();
        if n.state.is_failed() || settled {
            bail!(
                "{id}: {} (wanted {want}): {}",
                n.state,
                n.last_error.as_deref().unwrap_or("no error recorded")
            );
        }
        if std::time::Instant::now() > until {
            bail!(
                "{id}: still {} after {} s (wanted {want})",
                n.state,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        n = c.get(&path).await?;
    }
}

/// `NAME=VALUE` pairs as a JSON object (numbers and booleans as such).
fn attributes(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            bail!("'{p}' is not NAME=VALUE (e.g. ProcVirtualization=Enabled)");
        };
        let v = v.trim();
        let value = match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(v)),
        };
        out.insert(k.trim().to_string(), value);
    }
    Ok(out)
}

/// `200GB`, `1TiB`, `512MB` or a number of bytes.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("'{s}' is not a size (write e.g. 200GB or 1TiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        o => bail!("unknown unit '{o}' in '{s}' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("'{s}' is too large"))
}

fn volume_rows(volumes: &[RaidVolume]) -> String {
    table_of(
        &["id", "name", "level", "bytes", "disks", "storage"],
        volumes,
        |v| {
            vec![
                v.id.clone(),
                opt(v.name.as_ref()),
                opt(v.level.as_ref()),
                opt(v.capacity_bytes),
                v.drives.join(","),
                v.storage.clone(),
            ]
        },
    )
}

#[derive(Debug, Args, Default)]
pub struct NodeFields {
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub boot_mac: Option<String>,
    /// A port MAC (repeat for several).
    #[arg(long = "mac")]
    pub macs: Vec<String>,
    #[arg(long)]
    pub bmc_driver: Option<String>,
    #[arg(long)]
    pub bmc_address: Option<String>,
    #[arg(long)]
    pub bmc_port: Option<u16>,
    #[arg(long)]
    pub bmc_username: Option<String>,
    /// BMC password (or RACKLIFT_BMC_PASSWORD).
    #[arg(long, env = "RACKLIFT_BMC_PASSWORD", hide_env_values = true)]
    pub bmc_password: Option<String>,
    /// Accept a self-signed BMC certificate.
    #[arg(long)]
    pub bmc_insecure: bool,
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// List the profiles in force, in the order they are tried.
    List,
    /// Show one profile.
    Show { name: String },
    /// Dry-run every profile against a facts file (JSON list of
    /// [class, type, key, value]) or a stored node; assigns nothing.
    Test {
        /// A JSON file of facts.
        #[arg(long, conflicts_with = "node")]
        facts: Option<PathBuf>,
        /// A node's UUID or name.
        #[arg(long)]
        node: Option<String>,
    },
    /// Load the profile files again (a broken file keeps the previous set).
    Reload,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// List leases (expired ones too: a returning client gets its old address).
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a token (its secret is printed once).
    Create {
        name: String,
        #[arg(long, default_value = "readonly")]
        role: String,
    },
    /// List tokens.
    List,
    /// Revoke a token.
    Delete { id: String },
}

impl NodeFields {
    fn body(&self) -> Value {
        let mut body = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.to_string(), v);
            }
        };
        put("name", self.name.clone().map(Value::from));
        put("boot_mac", self.boot_mac.clone().map(Value::from));
        put("macs", (!self.macs.is_empty()).then(|| json!(self.macs)));
        put("profile", self.profile.clone().map(Value::from));
        put("role", self.role.clone().map(Value::from));
        let mut bmc = serde_json::Map::new();
        let mut b = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                bmc.insert(k.to_string(), v);
            }
        };
        b("driver", self.bmc_driver.clone().map(Value::from));
        b("address", self.bmc_address.clone().map(Value::from));
        b("port", self.bmc_port.map(Value::from));
        b("username", self.bmc_username.clone().map(Value::from));
        b("password", self.bmc_password.clone().map(Value::from));
        b(
            "verify_tls",
            self.bmc_insecure.then_some(Value::from(false)),
        );
        if !bmc.is_empty() {
            body.insert("bmc".into(), Value::Object(bmc));
        }
        Value::Object(body)
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    fn new(o: &ClientOpts) -> anyhow::Result<Client> {
        let token = match &o.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string("racklift-data/admin.token")
                .map(|t| t.trim().to_string())
                .context("no token: pass --token, set RACKLIFT_TOKEN, or run from the directory holding racklift-data/admin.token")?,
        };
        Ok(Client {
            http: reqwest::Client::new(),
            url: o.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("x-racklift-actor", "cli");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach racklift at {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let code = v["error"]["code"].as_str().unwrap_or("error");
            bail!("{status} {code}: {msg}");
        }
        Ok(v)
    }

    /// A request whose answer is read into `T`: the client is typed by the
    /// API's own views (`crate::api::views`).
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let v = self.call(method, path, body).await?;
        serde_json::from_value(v).with_context(|| {
            format!("racklift's answer to {path} is not what this CLI reads (another version?)")
        })
    }

    /// `GET path`, read into `T`.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path, None).await
    }
}

/// An answer read into `T`, beside the JSON it came as: tables read the
/// typed value, `--json` prints the server's JSON as received (fields this
/// CLI does not know included).
struct Answer<T> {
    typed: T,
    json: Value,
}

impl<'de, T: serde::de::DeserializeOwned> serde::Deserialize<'de> for Answer<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Value::deserialize(d)?;
        let typed = T::deserialize(&json).map_err(serde::de::Error::custom)?;
        Ok(Answer { typed, json })
    }
}

/// Prints rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

/// A table of `items`, a row each.
fn table_of<T>(headers: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(headers, &rows)
}

/// A BIOS attribute's value as shown in tables: a text as it is, `-` for
/// null, anything else as its JSON.
fn attribute_text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        o => o.to_string(),
    }
}

/// An optional field as shown in tables: `-` when absent.
fn opt(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A list field as shown in tables: its JSON.
fn list(v: &[impl serde::Serialize]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn node_rows(nodes: &[NodeView]) -> String {
    table_of(
        &[
            "name", "state", "boot mac", "bmc", "power", "maint", "profile", "id",
        ],
        nodes,
        |n| {
            vec![
                n.name.clone(),
                n.state.to_string(),
                opt(n.boot_mac),
                n.bmc.driver.as_str().into(),
                opt(n.power_state.as_ref()),
                yes_no(n.maintenance),
                opt(n.profile.as_ref()),
                n.id.to_string(),
            ]
        },
    )
}

fn node_detail(n: &NodeView) -> String {
    let b = &n.bmc;
    let rows = [
        ("id", n.id.to_string()),
        ("name", n.name.clone()),
        ("state", n.state.to_string()),
        ("target", opt(n.target)),
        ("generation", n.generation.to_string()),
        ("boot_mac", opt(n.boot_mac)),
        ("macs", list(&n.macs)),
        ("profile", opt(n.profile.as_ref())),
        ("role", opt(n.role.as_ref())),
        ("power_state", opt(n.power_state.as_ref())),
        ("maintenance", n.maintenance.to_string()),
        ("maintenance_reason", opt(n.maintenance_reason.as_ref())),
        ("last_error", opt(n.last_error.as_ref())),
        ("allowed_actions", list(&n.allowed_actions)),
        ("created_at", n.created_at.clone()),
        ("updated_at", n.updated_at.clone()),
        ("bmc.driver", b.driver.as_str().into()),
        ("bmc.address", opt(b.address.as_ref())),
        ("bmc.port", opt(b.port)),
        ("bmc.username", opt(b.username.as_ref())),
        ("bmc.password_set", b.password_set.to_string()),
        ("bmc.verify_tls", b.verify_tls.to_string()),
    ];
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![k.into(), v]).collect();
    table(&["field", "value"], &rows)
}

fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a client command; returns the text to print.
pub async fn run_client(command: Command) -> anyhow::Result<String> {
    match command {
        Command::Serve { .. } => bail!("serve is not a client command"),
        Command::Node { client, cmd } => {
            node_command(&Client::new(&client)?, client.json, cmd).await
        }
        Command::Profile { client, cmd } => {
            profile_command(&Client::new(&client)?, client.json, cmd).await
        }
        Command::Lease {
            client,
            cmd: LeaseCmd::List,
        } => lease_list(&Client::new(&client)?, client.json).await,
        Command::Token { client, cmd } => {
            token_command(&Client::new(&client)?, client.json, cmd).await
        }
    }
}

/// `racklift node ...`.
async fn node_command(c: &Client, as_json: bool, cmd: NodeCmd) -> anyhow::Result<String> {
    let out = match cmd {
        NodeCmd::List(filter) => list_nodes(c, as_json, filter).await?,
        NodeCmd::Show { id } => {
            let n: NodeView = c.get(&format!("/v1/nodes/{}", enc(&id))).await?;
            if as_json {
                serde_json::to_string_pretty(&n)?
            } else {
                node_detail(&n)
            }
        }
        NodeCmd::Create(f) => {
            let e: Enrolled = c.send(Method::POST, "/v1/nodes", Some(f.body())).await?;
            if as_json {
                serde_json::to_string_pretty(&e)?
            } else {
                let notes: String = e.notes.iter().map(|n| format!("\nnote: {n}")).collect();
                node_detail(&e.node) + &notes
            }
        }
        NodeCmd::Update { id, fields } => {
            let n: NodeView = c
                .send(
                    Method::PATCH,
                    &format!("/v1/nodes/{}", enc(&id)),
                    Some(fields.body()),
                )
                .await?;
            if as_json {
                serde_json::to_string_pretty(&n)?
            } else {
                node_detail(&n)
            }
        }
        NodeCmd::Delete { id } => {
            c.call(Method::DELETE, &format!("/v1/nodes/{}", enc(&id)), None)
                .await?;
            if as_json {
                json!({"deleted": id}).to_string()
            } else {
                format!("deleted {id}")
            }
        }
        NodeCmd::Action {
            id,
            action,
            reason,
            wait,
        } => {
            let body = reason.map(|r| json!({ "reason": r })).unwrap_or(json!({}));
            let mut n: NodeView = c
                .send(
                    Method::POST,
                    &format!("/v1/nodes/{}/actions/{}", enc(&id), enc(&action)),
                    Some(body),
                )
                .await?;
            if wait.wait {
                n = wait_for_target(c, &id, &n, wait.timeout()).await?;
            }
            if as_json {
                serde_json::to_string_pretty(&n)?
            } else {
                format!("{}: {} (target {})", n.name, n.state, opt(n.target))
            }
        }
        NodeCmd::Power { id, action, wait } => {
            power_command(c, as_json, &id, &action, wait).await?
        }
        NodeCmd::BootDevice {
            id,
            device,
            persistent,
            legacy,
            uefi,
        } => {
            let device = one_of(
                "boot device",
                &device,
                &BOOT_DEVICES,
                &id,
                "node boot-device",
            )?;
            let mut body = json!({"device": device.replace('-', "_"), "persistent": persistent});
            if legacy {
                body["mode"] = json!("legacy");
            } else if uefi {
                body["mode"] = json!("uefi");
            }
            c.call(
                Method::POST,
                &format!("/v1/nodes/{}/boot-device", enc(&id)),
                Some(body),
            )
            .await?;
            let how = if persistent {
                "every boot"
            } else {
                "the next boot"
            };
            format!("{id}: boot from {device} for {how}")
        }
        NodeCmd::Bios { cmd } => bios_command(c, as_json, cmd).await?,
        NodeCmd::Raid { cmd } => raid_command(c, as_json, cmd).await?,
        NodeCmd::Inventory { id } => {
            let inv = c
                .call(
                    Method::GET,
                    &format!("/v1/nodes/{}/inventory", enc(&id)),
                    None,
                )
                .await?;
            serde_json::to_string_pretty(&inv)?
        }
        NodeCmd::Facts { id } => {
            let facts: Answer<Vec<Fact>> = c.get(&format!("/v1/nodes/{}/facts", enc(&id))).await?;
            if as_json {
                serde_json::to_string_pretty(&facts.json)?
            } else {
                let rows: Vec<Vec<String>> = facts
                    .typed
                    .into_iter()
                    .map(|f| vec![f.class, f.kind, f.key, f.value])
                    .collect();
                table(&["CLASS", "TYPE", "KEY", "VALUE"], &rows)
            }
        }
        NodeCmd::Events { id, after, limit } => {
            let ev: Answer<Vec<EventRow>> = c
                .get(&format!(
                    "/v1/nodes/{}/events?after={after}&limit={limit}",
                    enc(&id)
                ))
                .await?;
            if as_json {
                serde_json::to_string_pretty(&ev.json)?
            } else {
                event_rows(&ev.typed)
            }
        }
    };
    Ok(out)
}

fn event_rows(events: &[EventRow]) -> String {
    table_of(
        &["id", "at", "kind", "action", "state", "actor", "reason"],
        events,
        |e| {
            vec![
                e.id.to_string(),
                e.at.clone(),
                e.kind.clone(),
                opt(e.action.as_ref()),
                format!(
                    "{} -> {}",
                    opt(e.from_state.as_ref()),
                    opt(e.to_state.as_ref())
                ),
                e.actor.clone(),
                opt(e.reason.as_ref()),
            ]
        },
    )
}

/// `racklift node list`: every page with `--all`.
async fn list_nodes(c: &Client, as_json: bool, f: ListArgs) -> anyhow::Result<String> {
    let ListArgs {
        state,
        profile,
        maintenance,
        all,
        limit,
    } = f;
    let mut nodes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = format!("/v1/nodes?limit={limit}");
        if let Some(s) = &state {
            q.push_str(&format!("&state={}", enc(s)));
        }
        if let Some(p) = &profile {
            q.push_str(&format!("&profile={}", enc(p)));
        }
        if let Some(m) = maintenance {
            q.push_str(&format!("&maintenance={m}"));
        }
        if let Some(a) = &after {
            q.push_str(&format!("&after={}", enc(a)));
        }
        let page: NodePage = c.get(&q).await?;
        nodes.extend(page.nodes);
        after = page.next;
        if !all || after.is_none() {
            break;
        }
    }
    Ok(if as_json {
        serde_json::to_string_pretty(&nodes)?
    } else {
        node_rows(&nodes)
    })
}

/// `racklift node bios ...`: the BIOS attributes in force and pending.
async fn bios_command(c: &Client, as_json: bool, cmd: BiosCmd) -> anyhow::Result<String> {
    let (id, b): (String, Answer<BiosSettings>) = match cmd {
        BiosCmd::Show { id } => {
            let b = c.get(&format!("/v1/nodes/{}/bios", enc(&id))).await?;
            (id, b)
        }
        BiosCmd::Set { id, attributes: a } => {
            let body = json!({ "attributes": attributes(&a)? });
            let b = c
                .send(
                    Method::PATCH,
                    &format!("/v1/nodes/{}/bios", enc(&id)),
                    Some(body),
                )
                .await?;
            (id, b)
        }
    };
    Ok(if as_json {
        serde_json::to_string_pretty(&b.json)?
    } else {
        format!("{id}\n{}", bios_rows(&b.typed))
    })
}

fn bios_rows(b: &BiosSettings) -> String {
    let rows: Vec<Vec<String>> = b
        .current
        .iter()
        .map(|(k, cur)| {
            vec![
                k.clone(),
                attribute_text(cur),
                b.pending.get(k).map(attribute_text).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["attribute", "current", "pending (next boot)"], &rows)
}

/// `racklift node raid ...`: volumes shown, created and deleted.
async fn raid_command(c: &Client, as_json: bool, cmd: RaidCmd) -> anyhow::Result<String> {
    Ok(match cmd {
        RaidCmd::Show { id } => {
            let r: Answer<RaidView> = c.get(&format!("/v1/nodes/{}/raid", enc(&id))).await?;
            if as_json {
                serde_json::to_string_pretty(&r.json["volumes"])?
            } else {
                volume_rows(&r.typed.volumes)
            }
        }
        RaidCmd::Create {
            id,
            level,
            disks,
            size,
            name,
        } => {
            let mut body = json!({"level": level, "drives": disks});
            if let Some(sz) = size {
                body["capacity_bytes"] = json!(parse_size(&sz)?);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v: Answer<RaidVolume> = c
                .send(
                    Method::POST,
                    &format!("/v1/nodes/{}/raid", enc(&id)),
                    Some(body),
                )
                .await?;
            if as_json {
                serde_json::to_string_pretty(&v.json)?
            } else {
                volume_rows(std::slice::from_ref(&v.typed))
            }
        }
        RaidCmd::Delete { id, volume } => {
            c.call(
                Method::DELETE,
                &format!("/v1/nodes/{}/raid/{}", enc(&id), enc(&volume)),
                None,
            )
            .await?;
            format!("{id}: volume {volume} deleted")
        }
    })
}

/// `racklift node power ID ACTION`, waiting for the change with `--wait`.
async fn power_command(
    c: &Client,
    as_json: bool,
    id: &str,
    action: &str,
    wait: Wait,
) -> anyhow::Result<String> {
    let action = one_of("power action", action, &POWER_ACTIONS, id, "node power")?;
    let path = format!("/v1/nodes/{}/power", enc(id));
    let mut p: Answer<PowerView> = if action == "status" {
        c.get(&path).await?
    } else {
        let a = action.replace('-', "_");
        c.send(Method::POST, &path, Some(json!({ "action": a })))
            .await?
    };
    if wait.wait && action != "status" {
        let want = if action.ends_with("off") { "off" } else { "on" };
        let until = std::time::Instant::now() + wait.timeout();
        while p.typed.power_state != want {
            if std::time::Instant::now() > until {
                bail!(
                    "{id}: power is still {} after {} s (wanted {want})",
                    p.typed.power_state,
                    wait.timeout().as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            p = c.get(&path).await?;
        }
    }
    Ok(if as_json {
        p.json.to_string()
    } else {
        format!("{id}: power {}", p.typed.power_state)
    })
}
/// `racklift profile ...`.
async fn profile_command(c: &Client, as_json: bool, cmd: ProfileCmd) -> anyhow::Result<String> {
    let out = match cmd {
        ProfileCmd::List => {
            let p: Answer<Vec<ProfileSummary>> = c.get("/v1/profiles").await?;
            if as_json {
                serde_json::to_string_pretty(&p.json)?
            } else {
                profile_rows(&p.typed)
            }
        }
        ProfileCmd::Show { name } => {
            let p = c
                .call(Method::GET, &format!("/v1/profiles/{}", enc(&name)), None)
                .await?;
            serde_json::to_string_pretty(&p)?
        }
        ProfileCmd::Test { facts, node } => {
            let body = match (facts, node) {
                (Some(f), None) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    let v: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", f.display()))?;
                    json!({ "facts": v })
                }
                (None, Some(n)) => json!({ "node": n }),
                _ => bail!("give --facts FILE or --node ID"),
            };
            let r: Answer<TestResult> = c
                .send(Method::POST, "/v1/profiles/test", Some(body))
                .await?;
            if as_json {
                serde_json::to_string_pretty(&r.json)?
            } else {
                verdict_rows(&r.typed)
            }
        }
        ProfileCmd::Reload => {
            let r: Answer<Reloaded> = c
                .send(Method::POST, "/v1/profiles/reload", Some(json!({})))
                .await?;
            if as_json {
                r.json.to_string()
            } else {
                format!("loaded: {}", list(&r.typed.loaded))
            }
        }
    };
    Ok(out)
}

fn profile_rows(profiles: &[ProfileSummary]) -> String {
    table_of(
        &[
            "order",
            "name",
            "quota",
            "specs",
            "hostnames",
            "role",
            "file",
        ],
        profiles,
        |p| {
            vec![
                p.order.to_string(),
                p.name.clone(),
                p.quota.to_string(),
                p.specs.to_string(),
                p.hostnames.to_string(),
                opt(p.role.as_ref()),
                p.file.clone(),
            ]
        },
    )
}

fn verdict_rows(r: &TestResult) -> String {
    let verdicts = table_of(&["profile", "match", "why not"], &r.verdicts, |v| {
        vec![v.profile.clone(), yes_no(v.matched), opt(v.reason.as_ref())]
    });
    format!("selected: {}\n{verdicts}", opt(r.selected.as_ref()))
}

/// `racklift lease list`.
async fn lease_list(c: &Client, as_json: bool) -> anyhow::Result<String> {
    let l: Answer<Vec<Lease>> = c.get("/v1/dhcp/leases").await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&l.json)?);
    }
    Ok(lease_rows(&l.typed))
}

fn lease_rows(leases: &[Lease]) -> String {
    table_of(
        &["ip", "mac", "state", "hostname", "expires", "subnet"],
        leases,
        |l| {
            vec![
                l.ip.to_string(),
                opt(l.mac),
                l.state.as_str().into(),
                opt(l.hostname.as_ref()),
                crate::store::rfc3339(l.expires_at_ms),
                l.subnet.clone(),
            ]
        },
    )
}

/// `racklift token ...`.
async fn token_command(c: &Client, as_json: bool, cmd: TokenCmd) -> anyhow::Result<String> {
    let out = match cmd {
        TokenCmd::Create { name, role } => {
            let t: Answer<CreatedToken> = c
                .send(
                    Method::POST,
                    "/v1/tokens",
                    Some(json!({"name": name, "role": role})),
                )
                .await?;
            if as_json {
                serde_json::to_string_pretty(&t.json)?
            } else {
                let CreatedToken { token, secret } = &t.typed;
                format!(
                    "token {} ({}): {secret}\nkeep the secret now: it is not shown again",
                    token.id,
                    token.role.as_str(),
                )
            }
        }
        TokenCmd::List => {
            let t: Answer<Vec<ApiToken>> = c.get("/v1/tokens").await?;
            if as_json {
                serde_json::to_string_pretty(&t.json)?
            } else {
                token_rows(&t.typed)
            }
        }
        TokenCmd::Delete { id } => {
            c.call(Method::DELETE, &format!("/v1/tokens/{}", enc(&id)), None)
                .await?;
            format!("revoked {id}")
        }
    };
    Ok(out)
}

fn token_rows(tokens: &[ApiToken]) -> String {
    table_of(&["id", "name", "role", "created"], tokens, |t| {
        vec![
            t.id.clone(),
            t.name.clone(),
            t.role.as_str().into(),
            t.created_at.clone(),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }

    #[test]
    fn tables_read_typed_answers() {
        let ev: Vec<EventRow> = serde_json::from_value(json!([{
            "id": 7, "node_id": "00000000-0000-0000-0000-000000000001", "kind": "state",
            "from_state": "verifying", "to_state": "manageable", "action": null,
            "actor": "conductor", "reason": null, "at_ms": 0, "at": "t0", "repeats": 1,
            "last_at": null
        }]))
        .unwrap();
        assert_eq!(
            event_rows(&ev),
            "ID  AT  KIND   ACTION  STATE                    ACTOR      REASON\n\
             7   t0  state  -       verifying -> manageable  conductor  -"
        );
        let leases: Vec<Lease> = serde_json::from_value(json!([{
            "ip": "10.0.0.5", "subnet": "10.0.0.0/24", "mac": null, "state": "declined",
            "hostname": null, "expires_at_ms": 0, "updated_at_ms": 0, "server": "s1"
        }]))
        .unwrap();
        assert_eq!(
            lease_rows(&leases),
            "IP        MAC  STATE     HOSTNAME  EXPIRES               SUBNET\n\
             10.0.0.5  -    declined  -         1970-01-01T00:00:00Z  10.0.0.0/24"
        );
        let r: TestResult = serde_json::from_value(json!({"selected": null, "verdicts": [
            {"profile": "web", "matched": false, "reason": "no disk", "captures": {}}]}))
        .unwrap();
        assert_eq!(
            verdict_rows(&r),
            "selected: -\nPROFILE  MATCH  WHY NOT\nweb      no     no disk"
        );
        let p: Vec<ProfileSummary> = serde_json::from_value(json!([{"name": "web", "order": 1,
            "quota": "unlimited", "specs": 2, "hostnames": 0, "role": null, "file": "w.toml"}]))
        .unwrap();
        assert_eq!(
            profile_rows(&p),
            "ORDER  NAME  QUOTA      SPECS  HOSTNAMES  ROLE  FILE\n\
             1      web   unlimited  2      0          -     w.toml"
        );
        let b: BiosSettings = serde_json::from_value(
            json!({"current": {"A": "x", "B": 3, "C": null}, "pending": {"B": 4}}),
        )
        .unwrap();
        assert_eq!(
            bios_rows(&b),
            "ATTRIBUTE  CURRENT  PENDING (NEXT BOOT)\nA          x\nB          3        4\nC          -"
        );
        let v: RaidVolume = serde_json::from_value(json!({"id": "V1", "name": null,
            "level": "RAID1", "capacity_bytes": 10, "drives": ["D0", "D1"], "storage": "S"}))
        .unwrap();
        assert_eq!(
            volume_rows(&[v]),
            "ID  NAME  LEVEL  BYTES  DISKS  STORAGE\nV1  -     RAID1  10     D0,D1  S"
        );
    }

    #[test]
    fn an_answer_keeps_its_json() {
        let raw = json!({"power_state": "on", "since": 3});
        let a: Answer<PowerView> = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!((a.typed.power_state.as_str(), a.json), ("on", raw));
        assert!(serde_json::from_value::<Answer<PowerView>>(json!({"state": "on"})).is_err());
    }

    #[test]
    fn create_body_only_has_given_fields() {
        let f = NodeFields {
            name: Some("n1".into()),
            macs: vec!["52:54:00:00:00:01".into()],
            bmc_driver: Some("fake".into()),
            ..Default::default()
        };
        assert_eq!(
            f.body(),
            json!({"name": "n1", "macs": ["52:54:00:00:00:01"], "bmc": {"driver": "fake"}})
        );
    }

    #[test]
    fn bmc_commands_parse() {
        let c = Cli::try_parse_from([
            "racklift",
            "node",
            "boot-device",
            "n1",
            "uefi-http",
            "--persistent",
            "--legacy",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::Node {
                cmd: NodeCmd::BootDevice {
                    persistent: true,
                    legacy: true,
                    ..
                },
                ..
            }
        ));
        assert!(Cli::try_parse_from(["racklift", "node", "bios", "set", "n1"]).is_err());
        let a = attributes(&["A=Enabled".into(), "B=3".into(), "C=true".into()]).unwrap();
        assert_eq!(Value::Object(a), json!({"A": "Enabled", "B": 3, "C": true}));
        assert!(attributes(&["novalue".into()]).is_err());
        assert_eq!(parse_size("200GB").unwrap(), 200_000_000_000);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn cli_parses() {
        let c =
            Cli::try_parse_from(["racklift", "node", "--json", "action", "n1", "manage"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Node {
                cmd: NodeCmd::Action { .. },
                ..
            }
        ));
    }
}
