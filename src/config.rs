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
    dhcp: WireToggle,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHttp {
    listen: Option<String>,
    public_url: Option<String>,
    max_body_bytes: Option<usize>,
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
    ramdisk_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireProfiles {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireToggle {
    enabled: Option<bool>,
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
    pub dhcp_enabled: bool,
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
}

impl Config {
    /// Whether a machine no node has, asking from `client`, is offered the
    /// discovery ramdisk. One switch today; the single place to consult, so a
    /// per-subnet setting can answer here later.
    pub fn discovery_enabled_for(&self, client: Option<std::net::IpAddr>) -> bool {
        let _ = client;
        self.discovery.enabled
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

/// Where Debian's `ipxe` package puts its boot files: the TFTP root by default when present.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The URL machines use to reach this server (kernel command lines, boot scripts).
    pub public_url: String,
    pub max_body_bytes: usize,
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
        },
        database: DatabaseConfig {
            url,
            max_connections,
        },
        conductor: ConductorConfig {
            workers,
            poll_interval,
            lease,
            max_attempts,
            retry_backoff: c
                .retry_backoff
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(2)),
            timeouts,
        },
        boot: BootConfig {
            kernel_url,
            initrd_url,
            kernel_args: w
                .boot
                .kernel_args
                .unwrap_or_else(|| "console=tty0 console=ttyS0,115200n8".into()),
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
        dhcp_enabled: w.dhcp.enabled.unwrap_or(false),
        discovery: DiscoveryConfig {
            enabled: w.discovery.enabled.unwrap_or(false),
            token_ttl: w
                .discovery
                .token_ttl
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(3600)),
        },
        tftp,
        log: LogConfig { level, json },
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
        assert!(!c.dhcp_enabled && !c.tftp.enabled);
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
            ("RACKLIFT__DHCP__ENABLED".to_string(), "true".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::from_toml_str("[http]\nlisten = \"127.0.0.1:1\"\n", "f", env).unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.conductor.workers, 3);
        assert!(c.dhcp_enabled);
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
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }
}
