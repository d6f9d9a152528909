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

use serde::{Deserialize, Deserializer};
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

/// A duration written as `500ms`, `30s`, `5m`, `2h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (write e.g. 500ms, 30s, 5m, 2h)"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(d)
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    http: WireHttp,
    #[serde(default)]
    database: WireDatabase,
    #[serde(default)]
    secrets: WireSecrets,
    #[serde(default)]
    conductor: WireConductor,
    #[serde(default)]
    boot: WireBoot,
    #[serde(default)]
    profiles: WireProfiles,
    #[serde(default)]
    dhcp: WireDhcp,
    #[serde(default)]
    tftp: WireTftp,
    #[serde(default)]
    discovery: WireDiscovery,
    #[serde(default)]
    log: WireLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDiscovery {
    enabled: Option<bool>,
    token_ttl: Option<HumanDuration>,
    max_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHttp {
    listen: Option<String>,
    public_url: Option<String>,
    max_body_bytes: Option<usize>,
    header_read_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDatabase {
    url: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSecrets {
    key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConductor {
    workers: Option<usize>,
    poll_interval: Option<HumanDuration>,
    lease: Option<HumanDuration>,
    max_attempts: Option<u32>,
    retry_backoff: Option<HumanDuration>,
    power_sync_interval: Option<HumanDuration>,
    power_sync_concurrency: Option<usize>,
    repeat_stages: Option<bool>,
    #[serde(default)]
    timeouts: WireTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTimeouts {
    verify: Option<HumanDuration>,
    inspect: Option<HumanDuration>,
    clean: Option<HumanDuration>,
    deploy: Option<HumanDuration>,
    configure: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBoot {
    kernel_url: Option<String>,
    initrd_url: Option<String>,
    kernel_args: Option<String>,
    token_ttl: Option<HumanDuration>,
    assets_dir: Option<PathBuf>,
    ramdisk_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireProfiles {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDhcp {
    enabled: Option<bool>,
    mode: Option<String>,
    interfaces: Option<NameList>,
    port: Option<u16>,
    proxy_port: Option<u16>,
    lease_time: Option<HumanDuration>,
    offer_hold: Option<HumanDuration>,
    decline_quarantine: Option<HumanDuration>,
    snponly: Option<bool>,
    #[serde(default)]
    subnet: Vec<WireSubnet>,
}

/// A list of names, or one string of comma-separated names (environment overrides).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NameList {
    List(Vec<String>),
    Text(String),
}

impl NameList {
    fn into_vec(self) -> Vec<String> {
        match self {
            NameList::List(v) => v,
            NameList::Text(t) => t
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSubnet {
    network: Option<String>,
    #[serde(default)]
    ranges: Vec<String>,
    router: Option<String>,
    #[serde(default)]
    dns_servers: Vec<String>,
    domain: Option<String>,
    next_server: Option<String>,
    lease_time: Option<HumanDuration>,
    discovery: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTftp {
    enabled: Option<bool>,
    listen: Option<String>,
    root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLog {
    level: Option<String>,
    format: Option<String>,
}

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
pub const IPXE_DIR: &str = "/usr/lib/ipxe";

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
pub const ENV_PREFIX: &str = "RACKLIFT__";

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
    pub fn from_toml_str(
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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

fn validate(w: Wire) -> Result<Config, ConfigError> {
    let data_dir = w
        .data_dir
        .unwrap_or_else(|| PathBuf::from("./racklift-data"));
    let listen_text = w.http.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        invalid(
            "http.listen",
            format!("'{listen_text}' is not an address:port such as 127.0.0.1:8080"),
        )
    })?;
    let public_url = match w.http.public_url {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            u.trim_end_matches('/').to_string()
        }
        Some(u) => {
            return Err(invalid(
                "http.public_url",
                format!("'{u}' must start with http:// or https://"),
            ));
        }
        None => format!("http://{listen}"),
    };
    let max_body_bytes = w.http.max_body_bytes.unwrap_or(1 << 20);
    if max_body_bytes < 1024 {
        return Err(invalid("http.max_body_bytes", "must be at least 1024"));
    }
    let header_read_timeout = w
        .http
        .header_read_timeout
        .map_or(Duration::from_secs(30), |h| h.0);
    let idle_timeout = w.http.idle_timeout.map_or(Duration::from_secs(60), |h| h.0);
    for (k, v) in [
        ("http.header_read_timeout", header_read_timeout),
        ("http.idle_timeout", idle_timeout),
    ] {
        if v < Duration::from_millis(100) {
            return Err(invalid(k, "must be at least 100ms"));
        }
    }
    let http_max_connections = w.http.max_connections.unwrap_or(4096);
    if !(16..=1_000_000).contains(&http_max_connections) {
        return Err(invalid(
            "http.max_connections",
            "must be between 16 and 1000000",
        ));
    }
    let url = match w.database.url {
        Some(u)
            if u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://") =>
        {
            u
        }
        Some(u) => {
            return Err(invalid(
                "database.url",
                format!("'{u}' must be a sqlite:// or postgres:// URL"),
            ));
        }
        None => format!("sqlite://{}", data_dir.join("racklift.db").display()),
    };
    let max_connections = w.database.max_connections.unwrap_or(8);
    if max_connections == 0 {
        return Err(invalid("database.max_connections", "must be at least 1"));
    }
    let c = w.conductor;
    let workers = c.workers.unwrap_or(8);
    if workers == 0 || workers > 1024 {
        return Err(invalid("conductor.workers", "must be between 1 and 1024"));
    }
    let max_attempts = c.max_attempts.unwrap_or(3);
    if max_attempts == 0 {
        return Err(invalid("conductor.max_attempts", "must be at least 1"));
    }
    let d = |v: Option<HumanDuration>, default: u64| {
        v.map(|h| h.0).unwrap_or(Duration::from_secs(default))
    };
    let timeouts = PhaseTimeouts {
        verify: d(c.timeouts.verify, 300),
        inspect: d(c.timeouts.inspect, 1800),
        clean: d(c.timeouts.clean, 3600),
        deploy: d(c.timeouts.deploy, 3600),
        configure: d(c.timeouts.configure, 3600),
    };
    for (k, v) in [
        ("conductor.timeouts.verify", timeouts.verify),
        ("conductor.timeouts.inspect", timeouts.inspect),
        ("conductor.timeouts.clean", timeouts.clean),
        ("conductor.timeouts.deploy", timeouts.deploy),
        ("conductor.timeouts.configure", timeouts.configure),
    ] {
        if v.is_zero() {
            return Err(invalid(k, "must be longer than zero"));
        }
    }
    let poll_interval = c
        .poll_interval
        .map(|h| h.0)
        .unwrap_or(Duration::from_secs(1));
    let lease = c.lease.map(|h| h.0).unwrap_or(Duration::from_secs(30));
    if lease < Duration::from_secs(2) {
        return Err(invalid("conductor.lease", "must be at least 2s"));
    }
    let power_sync_concurrency = c.power_sync_concurrency.unwrap_or(32);
    if power_sync_concurrency == 0 || power_sync_concurrency > 4096 {
        return Err(invalid(
            "conductor.power_sync_concurrency",
            "must be between 1 and 4096",
        ));
    }
    let level = w.log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(invalid(
            "log.level",
            format!("'{level}' is not a level or filter (error, warn, info, debug, trace)"),
        ));
    }
    let json = match w.log.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(o) => {
            return Err(invalid(
                "log.format",
                format!("'{o}' is not 'text' or 'json'"),
            ));
        }
    };
    let tftp = validate_tftp(w.tftp, &data_dir)?;
    let dhcp = validate_dhcp(w.dhcp)?;
    let assets_dir = w
        .boot
        .assets_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("assets"));
    let kernel_url = w
        .boot
        .kernel_url
        .unwrap_or_else(|| format!("{public_url}/assets/ramdisk/vmlinuz"));
    let initrd_url = w
        .boot
        .initrd_url
        .unwrap_or_else(|| format!("{public_url}/assets/ramdisk/initrd.img"));
    Ok(Config {
        secrets: SecretsConfig {
            key_file: w
                .secrets
                .key_file
                .unwrap_or_else(|| data_dir.join("secret.key")),
            admin_token_file: w
                .secrets
                .admin_token_file
                .unwrap_or_else(|| data_dir.join("admin.token")),
        },
        data_dir,
        http: HttpConfig {
            listen,
            public_url,
            max_body_bytes,
            header_read_timeout,
            idle_timeout,
            max_connections: http_max_connections,
        },
        database: DatabaseConfig {
            url,
            max_connections,
        },
        conductor: ConductorConfig {
            repeat_stages: c.repeat_stages.unwrap_or(false),
            workers,
            poll_interval,
            lease,
            max_attempts,
            retry_backoff: c
                .retry_backoff
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(2)),
            power_sync_interval: c
                .power_sync_interval
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(60)),
            power_sync_concurrency,
            timeouts,
        },
        boot: BootConfig {
            kernel_url,
            initrd_url,
            kernel_args: w
                .boot
                .kernel_args
                .unwrap_or_else(|| "console=tty0 console=ttyS0,115200n8".into()),
            assets_dir,
            token_ttl: w
                .boot
                .token_ttl
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(7200)),
            ramdisk_dir: w
                .boot
                .ramdisk_dir
                .unwrap_or_else(|| PathBuf::from("boot-assets/ramdisk")),
        },
        profiles_dir: w.profiles.dir.unwrap_or_else(|| PathBuf::from("profiles")),
        dhcp,
        discovery: DiscoveryConfig {
            enabled: w.discovery.enabled.unwrap_or(false),
            token_ttl: w
                .discovery
                .token_ttl
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(3600)),
            max_per_minute: match w.discovery.max_per_minute {
                Some(0) => {
                    return Err(invalid(
                        "discovery.max_per_minute",
                        "must be at least 1 (turn discovery off with enabled = false)",
                    ));
                }
                Some(n) => n,
                None => 120,
            },
        },
        tftp,
        log: LogConfig { level, json },
    })
}

fn validate_dhcp(w: WireDhcp) -> Result<DhcpConfig, ConfigError> {
    use std::net::Ipv4Addr;
    let enabled = w.enabled.unwrap_or(false);
    let mode = match w.mode.as_deref() {
        None | Some("server") => DhcpMode::Server,
        Some("proxy") => DhcpMode::Proxy,
        Some(o) => {
            return Err(invalid(
                "dhcp.mode",
                format!("'{o}' is not 'server' or 'proxy'"),
            ));
        }
    };
    let interfaces = w.interfaces.map(NameList::into_vec).unwrap_or_default();
    if enabled && interfaces.is_empty() {
        return Err(invalid(
            "dhcp.interfaces",
            "name the interfaces to serve, e.g. [\"eth1\"] (DHCP is never served on every interface by default)",
        ));
    }
    if let Some(i) = interfaces
        .iter()
        .find(|i| i.is_empty() || i.len() > 15 || i.contains(['/', ' ']))
    {
        return Err(invalid(
            "dhcp.interfaces",
            format!("'{i}' is not an interface name"),
        ));
    }
    let lease_time = w
        .lease_time
        .map(|h| h.0)
        .unwrap_or(Duration::from_secs(12 * 3600));
    if lease_time < Duration::from_secs(60) {
        return Err(invalid("dhcp.lease_time", "must be at least 60s"));
    }
    let mut subnets: Vec<SubnetConfig> = Vec::new();
    for (i, s) in w.subnet.into_iter().enumerate() {
        let key = |k: &str| format!("dhcp.subnet[{i}].{k}");
        let ip = |k: &str, v: &str| -> Result<Ipv4Addr, ConfigError> {
            v.trim()
                .parse()
                .map_err(|_| invalid(&key(k), format!("'{v}' is not an IPv4 address")))
        };
        let text = s
            .network
            .ok_or_else(|| invalid(&key("network"), "missing (write e.g. \"10.0.0.0/24\")"))?;
        let network: ipnetwork::Ipv4Network = text.parse().map_err(|_| {
            invalid(
                &key("network"),
                format!("'{text}' is not an IPv4 CIDR such as 10.0.0.0/24"),
            )
        })?;
        if network.network() != network.ip() {
            return Err(invalid(
                &key("network"),
                format!(
                    "'{text}' has host bits set (did you mean {}/{}?)",
                    network.network(),
                    network.prefix()
                ),
            ));
        }
        if let Some(other) = subnets.iter().find(|o| o.network.overlaps(network)) {
            return Err(invalid(
                &key("network"),
                format!("{network} overlaps {} of another subnet", other.network),
            ));
        }
        let mut ranges = Vec::new();
        for r in &s.ranges {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b) = (ip("ranges", a)?, ip("ranges", b)?);
            if a > b {
                return Err(invalid(
                    &key("ranges"),
                    format!("'{r}': the first address is past the last"),
                ));
            }
            if !network.contains(a) || !network.contains(b) {
                return Err(invalid(
                    &key("ranges"),
                    format!("'{r}' is not inside {network}"),
                ));
            }
            if a == network.network() || b == network.broadcast() {
                return Err(invalid(
                    &key("ranges"),
                    format!("'{r}' includes the network or broadcast address of {network}"),
                ));
            }
            ranges.push((a, b));
        }
        let router = s.router.as_deref().map(|v| ip("router", v)).transpose()?;
        let dns_servers = s
            .dns_servers
            .iter()
            .map(|v| ip("dns_servers", v))
            .collect::<Result<Vec<_>, _>>()?;
        let next_server = s
            .next_server
            .as_deref()
            .map(|v| ip("next_server", v))
            .transpose()?;
        if let Some(d) = &s.domain
            && (d.is_empty()
                || d.len() > 253
                || d.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')))
        {
            return Err(invalid(
                &key("domain"),
                format!("'{d}' is not a domain name"),
            ));
        }
        let sub_lease = s.lease_time.map(|h| h.0).unwrap_or(lease_time);
        if sub_lease < Duration::from_secs(60) {
            return Err(invalid(&key("lease_time"), "must be at least 60s"));
        }
        subnets.push(SubnetConfig {
            network,
            ranges,
            router,
            dns_servers,
            domain: s.domain,
            next_server,
            lease_time: sub_lease,
            discovery: s.discovery.unwrap_or(false),
        });
    }
    if enabled && mode == DhcpMode::Server && subnets.is_empty() {
        return Err(invalid(
            "dhcp.subnet",
            "a DHCP server needs at least one [[dhcp.subnet]]",
        ));
    }
    Ok(DhcpConfig {
        enabled,
        mode,
        interfaces,
        port: w.port.unwrap_or(67),
        proxy_port: w.proxy_port.unwrap_or(4011),
        lease_time,
        offer_hold: w.offer_hold.map(|h| h.0).unwrap_or(Duration::from_secs(60)),
        decline_quarantine: w
            .decline_quarantine
            .map(|h| h.0)
            .unwrap_or(Duration::from_secs(3600)),
        snponly: w.snponly.unwrap_or(false),
        subnets,
    })
}

fn validate_tftp(w: WireTftp, data_dir: &Path) -> Result<TftpConfig, ConfigError> {
    let enabled = w.enabled.unwrap_or(false);
    let listen_text = w.listen.unwrap_or_else(|| "0.0.0.0:69".into());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        invalid(
            "tftp.listen",
            format!("'{listen_text}' is not an address:port such as 0.0.0.0:69"),
        )
    })?;
    let root = match w.root {
        Some(r) if r.as_os_str().is_empty() => {
            return Err(invalid("tftp.root", "must not be empty"));
        }
        Some(r) => {
            if enabled && !r.is_dir() {
                return Err(invalid(
                    "tftp.root",
                    format!("'{}' is not a directory", r.display()),
                ));
            }
            r
        }
        None if Path::new(IPXE_DIR).is_dir() => PathBuf::from(IPXE_DIR),
        None => data_dir.join("tftp"),
    };
    Ok(TftpConfig {
        enabled,
        listen,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml", std::iter::empty())
    }

    #[test]
    fn defaults_run_with_no_file() {
        let c = Config::defaults();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./racklift-data"));
        assert_eq!(c.database.url, "sqlite://./racklift-data/racklift.db");
        assert_eq!(
            c.secrets.key_file,
            PathBuf::from("./racklift-data/secret.key")
        );
        assert!(!c.dhcp.enabled && !c.tftp.enabled);
        assert_eq!(c.tftp.listen.to_string(), "0.0.0.0:69");
        if Path::new(IPXE_DIR).is_dir() {
            assert_eq!(c.tftp.root, PathBuf::from(IPXE_DIR));
        } else {
            assert_eq!(c.tftp.root, PathBuf::from("./racklift-data/tftp"));
        }
        assert_eq!(c.conductor.timeouts.inspect, Duration::from_secs(1800));
    }

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults_it_documents() {
        let text = include_str!("../racklift.example.toml");
        let c = parse(text).expect("racklift.example.toml is valid");
        let d = Config::defaults();
        assert_eq!(c.http.listen, d.http.listen);
        assert_eq!(c.conductor.workers, d.conductor.workers);
        assert_eq!(c.conductor.timeouts.deploy, d.conductor.timeouts.deploy);
        assert_eq!(c.conductor.max_attempts, d.conductor.max_attempts);
        assert_eq!(
            c.conductor.power_sync_interval,
            d.conductor.power_sync_interval
        );
        assert_eq!(
            c.conductor.power_sync_concurrency,
            d.conductor.power_sync_concurrency
        );
        assert_eq!(c.boot.token_ttl, d.boot.token_ttl);
        assert_eq!(c.tftp.listen, d.tftp.listen);
        assert_eq!(c.tftp.enabled, d.tftp.enabled);
        assert_eq!(c.discovery.enabled, d.discovery.enabled);
        assert_eq!(c.discovery.token_ttl, d.discovery.token_ttl);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("[http]\nlisten = \"nonsense\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen") && e.contains("nonsense"), "{e}");
        let e = parse("[http]\nidle_timeout = \"10ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http.idle_timeout") && e.contains("100ms"),
            "{e}"
        );
        let e = parse("[http]\nmax_connections = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.max_connections"), "{e}");
        let c = parse("[http]\nheader_read_timeout = \"5s\"\nmax_connections = 100\n").unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.http.max_connections, 100);
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        let e = parse("[conductor.timeouts]\ninspect = \"10 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("inspect") && e.contains("parsecs"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = parse("[database]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
        let e = parse("[conductor]\nworkers = 0\n").unwrap_err().to_string();
        assert!(e.contains("conductor.workers"), "{e}");
        let e = parse("[tftp]\nlisten = \"69\"\n").unwrap_err().to_string();
        assert!(e.contains("tftp.listen"), "{e}");
        let e = parse("[tftp]\nroot = \"\"\n").unwrap_err().to_string();
        assert!(e.contains("tftp.root"), "{e}");
        let e = parse("[tftp]\nenabled = true\nroot = \"/nonexistent/racklift-tftp\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tftp.root") && e.contains("not a directory"),
            "{e}"
        );
        let c =
            parse("[tftp]\nenabled = true\nlisten = \"127.0.0.1:6969\"\nroot = \"/\"\n").unwrap();
        assert!(c.tftp.enabled);
        assert_eq!(c.tftp.listen.port(), 6969);
        assert_eq!(c.tftp.root, PathBuf::from("/"));
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_refused_with_a_line() {
        let e = parse("[http]\nlisten_on = \"1.2.3.4:5\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = parse("[http\nlisten = 1").unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("line 1"), "{e}");
        let e = parse("[http]\nlisten = 5\n").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            (
                "RACKLIFT__HTTP__LISTEN".to_string(),
                "0.0.0.0:9000".to_string(),
            ),
            ("RACKLIFT__CONDUCTOR__WORKERS".to_string(), "3".to_string()),
            ("RACKLIFT__TFTP__ENABLED".to_string(), "true".to_string()),
            (
                "RACKLIFT__DHCP__INTERFACES".to_string(),
                "rl0, rl1".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::from_toml_str("[http]\nlisten = \"127.0.0.1:1\"\n", "f", env).unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.conductor.workers, 3);
        assert!(c.tftp.enabled);
        assert_eq!(c.dhcp.interfaces, ["rl0", "rl1"]);
        let e = Config::from_toml_str(
            "",
            "f",
            vec![("RACKLIFT__HTTP__NOPE".to_string(), "1".to_string())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn dhcp_subnets() {
        let c = parse(
            "[dhcp]\nenabled = true\ninterfaces = [\"rl-s\"]\nlease_time = \"1h\"\n\
             [[dhcp.subnet]]\nnetwork = \"10.77.0.0/16\"\nranges = [\"10.77.1.10-10.77.1.20\", \"10.77.2.5\"]\n\
             router = \"10.77.0.1\"\ndns_servers = [\"10.77.0.1\"]\ndomain = \"lab.example\"\ndiscovery = true\n\
             [[dhcp.subnet]]\nnetwork = \"192.168.5.0/24\"\nlease_time = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(c.dhcp.mode, DhcpMode::Server);
        assert_eq!(c.dhcp.subnets.len(), 2);
        let s = &c.dhcp.subnets[0];
        assert_eq!(s.ranges.len(), 2);
        assert_eq!(
            s.ranges[1],
            ("10.77.2.5".parse().unwrap(), "10.77.2.5".parse().unwrap())
        );
        assert_eq!(s.lease_time, Duration::from_secs(3600));
        assert_eq!(c.dhcp.subnets[1].lease_time, Duration::from_secs(300));
        assert!(c.discovery_enabled_for(Some("10.77.3.3".parse().unwrap())));
        assert!(!c.discovery_enabled_for(Some("192.168.5.3".parse().unwrap())));
        assert!(!c.discovery_enabled_for(None));
        for (text, key, what) in [
            (
                "[dhcp]\nenabled = true\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\n",
                "dhcp.interfaces",
                "name the interfaces",
            ),
            (
                "[dhcp]\nenabled = true\ninterfaces = [\"x\"]\n",
                "dhcp.subnet",
                "at least one",
            ),
            (
                "[[dhcp.subnet]]\nnetwork = \"10.0.0.1/24\"\n",
                "dhcp.subnet[0].network",
                "host bits",
            ),
            (
                "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/33\"\n",
                "dhcp.subnet[0].network",
                "not an IPv4 CIDR",
            ),
            (
                "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nranges = [\"10.0.1.1-10.0.1.5\"]\n",
                "dhcp.subnet[0].ranges",
                "not inside",
            ),
            (
                "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nranges = [\"10.0.0.9-10.0.0.5\"]\n",
                "dhcp.subnet[0].ranges",
                "past the last",
            ),
            (
                "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nrouter = \"x\"\n",
                "dhcp.subnet[0].router",
                "not an IPv4",
            ),
            (
                "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/16\"\n",
                "dhcp.subnet[1].network",
                "overlaps",
            ),
            ("[dhcp]\nmode = \"relay\"\n", "dhcp.mode", "'relay'"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(what), "{text}: {e}");
        }
        let p = parse("[dhcp]\nenabled = true\nmode = \"proxy\"\ninterfaces = \"rl-s\"\n").unwrap();
        assert_eq!(p.dhcp.mode, DhcpMode::Proxy);
        assert_eq!(p.dhcp.interfaces, ["rl-s"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }
}
