//! Configuration: a TOML file, environment overrides, and defaults that run with no file.
//!
//! The file is parsed into "wire" structs (every key optional, unknown keys refused),
//! then environment overrides `RACKLIFT__SECTION__KEY=value` are applied, then the
//! result is validated into [`Config`]. A bad file or override stops start-up with
//! a message naming the key and what is wrong. Only `main` reads the environment:
//! this module takes the variables as an argument.
//!
//! `racklift.example.toml` at the top of the repository documents every key; a
//! test parses it.
//!
//! `wire.rs` holds the file's shape, `validate.rs` the rules, this file the
//! validated sections and the loading.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key '{key}': {message}")]
    Invalid { key: String, message: String },
}

#[cfg(test)]
mod tests;
mod validate;
mod wire;

use validate::validate;
use wire::Wire;
pub use wire::parse_duration;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite database, the secrets key and the admin token live.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub secrets: SecretsConfig,
    pub conductor: ConductorConfig,
    pub boot: BootConfig,
    /// The directory of profile files (`*.toml`).
    pub profiles_dir: PathBuf,
    pub dhcp: DhcpConfig,
    pub tftp: TftpConfig,
    pub discovery: DiscoveryConfig,
    pub log: LogConfig,
}

/// Discovery: machines no node has get the ramdisk and enrol themselves.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub enabled: bool,
    /// How long a discovery token stays valid (one enrolment each).
    pub token_ttl: Duration,
    /// The most machines discovery enrols in any minute; more are answered
    /// 429 with Retry-After (the agent waits and asks again).
    pub max_per_minute: u32,
}

impl Config {
    /// Whether a machine no node has, asking from `client`, is offered the
    /// discovery ramdisk: everywhere with `[discovery] enabled`, else where the
    /// client's DHCP subnet has `discovery = true`.
    pub fn discovery_enabled_for(&self, client: Option<std::net::IpAddr>) -> bool {
        self.discovery.enabled
            || client.is_some_and(|ip| match ip {
                std::net::IpAddr::V4(v4) => self
                    .dhcp
                    .subnets
                    .iter()
                    .any(|s| s.discovery && s.network.contains(v4)),
                std::net::IpAddr::V6(_) => false,
            })
    }
}

#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub enabled: bool,
    /// UDP address the TFTP server binds.
    pub listen: SocketAddr,
    /// The directory served read-only (created at start-up when it is the default one).
    pub root: PathBuf,
}

/// Whether racklift hands out addresses or only boot answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// A full DHCP server: addresses, options and PXE answers.
    Server,
    /// proxyDHCP: only the PXE part, on ports 67 and 4011; another server
    /// hands out addresses.
    Proxy,
}

#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub enabled: bool,
    pub mode: DhcpMode,
    /// Network interfaces served (each gets its own sockets).
    pub interfaces: Vec<String>,
    /// The server port (67); clients are answered on `port + 1`.
    pub port: u16,
    /// The PXE boot-server port of proxyDHCP mode (4011).
    pub proxy_port: u16,
    pub lease_time: Duration,
    /// How long an offered address is held for the client's REQUEST.
    pub offer_hold: Duration,
    /// How long an address a client DECLINEd stays out of use.
    pub decline_quarantine: Duration,
    /// Serve `snponly.efi` rather than `ipxe.efi` to UEFI x64 PXE clients.
    pub snponly: bool,
    /// Answer IPv6 router solicitations on the served interfaces (and
    /// advertise now and then) with a router advertisement that says "no
    /// router, no addresses here": iPXE ends its IPv6 autoconfiguration at
    /// once instead of waiting for a router that never answers.
    pub router_advertisements: bool,
    pub subnets: Vec<SubnetConfig>,
}

/// One subnet the DHCP server answers for (directly attached or behind a relay).
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetConfig {
    pub network: ipnetwork::Ipv4Network,
    /// Dynamic address ranges, inclusive.
    pub ranges: Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    pub router: Option<std::net::Ipv4Addr>,
    pub dns_servers: Vec<std::net::Ipv4Addr>,
    pub domain: Option<String>,
    /// The TFTP server clients are sent to; default: racklift's own address.
    pub next_server: Option<std::net::Ipv4Addr>,
    pub lease_time: Duration,
    /// Whether machines racklift does not know get an answer (and then the
    /// inventory ramdisk) on this subnet.
    pub discovery: bool,
}

/// Where Debian's `ipxe` package puts its boot files: the TFTP root by default when present.
pub(super) const IPXE_DIR: &str = "/usr/lib/ipxe";

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The URL machines use to reach this server (kernel command lines, boot scripts).
    pub public_url: String,
    pub max_body_bytes: usize,
    /// How long a connection has to send a complete request head, counted
    /// from when it connects or its previous answer ends (so also how long an
    /// idle keep-alive connection is kept).
    pub header_read_timeout: Duration,
    /// How long a request in progress may move no byte: a body the client
    /// stops sending, an answer it stops reading.
    pub idle_timeout: Duration,
    /// The most HTTP connections open at once; past it a new one is answered
    /// 503 and closed.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct SecretsConfig {
    pub key_file: PathBuf,
    pub admin_token_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ConductorConfig {
    pub workers: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// How often the power state of every managed node is read (zero: never).
    pub power_sync_interval: Duration,
    /// How many BMCs the power sync reads at once.
    pub power_sync_concurrency: usize,
    /// Perform every stage twice (a check that the stages are idempotent).
    pub repeat_stages: bool,
    pub timeouts: PhaseTimeouts,
}

/// How long each phase may wait before its node goes to the failed state.
#[derive(Debug, Clone)]
pub struct PhaseTimeouts {
    pub verify: Duration,
    pub inspect: Duration,
    pub clean: Duration,
    pub deploy: Duration,
    pub configure: Duration,
}

#[derive(Debug, Clone)]
pub struct BootConfig {
    pub kernel_url: String,
    pub initrd_url: String,
    pub kernel_args: String,
    pub token_ttl: Duration,
    /// Served over HTTP under `/assets/` (images, other boot files), with Range support.
    pub assets_dir: PathBuf,
    /// Where `vmlinuz` and `initrd.img` are, served under `/assets/ramdisk/`.
    pub ramdisk_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub json: bool,
}

/// The environment variable prefix for overrides: `RACKLIFT__HTTP__LISTEN=...`.
const ENV_PREFIX: &str = "RACKLIFT__";

impl Config {
    /// The defaults, as if started with no file and no overrides.
    pub fn defaults() -> Config {
        Config::from_toml_str("", "<defaults>", std::iter::empty()).expect("the defaults are valid")
    }

    /// Loads `path` (when given), applies the `RACKLIFT__*` variables of `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml_str(&text, &p.display().to_string(), env)
            }
            None => Config::from_toml_str("", "<defaults>", env),
        }
    }

    /// Parses TOML text (named `origin` in errors), applies overrides, validates.
    pub(super) fn from_toml_str(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        };
        // The file alone first, so errors carry its line numbers.
        toml::from_str::<Wire>(text).map_err(parse_err)?;
        let mut value: toml::Table = text.parse().map_err(parse_err)?;
        let mut overridden = Vec::new();
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
            if keys.iter().any(|k| k.is_empty()) {
                return Err(ConfigError::Env {
                    var,
                    message: "empty key segment (write RACKLIFT__SECTION__KEY)".into(),
                });
            }
            set_path(&mut value, &keys, scalar(&raw)).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            overridden.push(var);
        }
        let wire: Wire = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Env {
                var: overridden.join(", "),
                message: e.to_string().trim_end().to_string(),
            })?;
        validate(wire)
    }
}

/// An override's text as a TOML scalar: integers and booleans keep their type.
fn scalar(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], v: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("'{k}' is not a section"))?;
    }
    t.insert(last.clone(), v);
    Ok(())
}
