//! The wire structs checked into [`super::Config`]: every key's rule, with an
//! error naming the key and what is wrong.

use super::wire::*;
use super::*;

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

pub(super) fn validate(w: Wire) -> Result<Config, ConfigError> {
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
        // racklift speaks for the link it hands addresses out on; in proxy
        // mode another server (often the router) does.
        router_advertisements: w.router_advertisements.unwrap_or(mode == DhcpMode::Server),
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
