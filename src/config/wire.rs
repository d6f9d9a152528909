//! The file as written: every key optional, unknown keys refused, durations
//! in words (`30s`, `5m`). Nothing here is checked beyond its type; see
//! `validate.rs`.

use super::*;
use serde::{Deserialize, Deserializer};

/// A duration written as `500ms`, `30s`, `5m`, `2h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HumanDuration(pub(super) Duration);

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
pub(super) struct Wire {
    pub(super) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) http: WireHttp,
    #[serde(default)]
    pub(super) database: WireDatabase,
    #[serde(default)]
    pub(super) secrets: WireSecrets,
    #[serde(default)]
    pub(super) conductor: WireConductor,
    #[serde(default)]
    pub(super) boot: WireBoot,
    #[serde(default)]
    pub(super) profiles: WireProfiles,
    #[serde(default)]
    pub(super) dhcp: WireDhcp,
    #[serde(default)]
    pub(super) tftp: WireTftp,
    #[serde(default)]
    pub(super) discovery: WireDiscovery,
    #[serde(default)]
    pub(super) log: WireLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDiscovery {
    pub(super) enabled: Option<bool>,
    pub(super) token_ttl: Option<HumanDuration>,
    pub(super) max_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireHttp {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) header_read_timeout: Option<HumanDuration>,
    pub(super) idle_timeout: Option<HumanDuration>,
    pub(super) max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDatabase {
    pub(super) url: Option<String>,
    pub(super) max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireSecrets {
    pub(super) key_file: Option<PathBuf>,
    pub(super) admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireConductor {
    pub(super) workers: Option<usize>,
    pub(super) poll_interval: Option<HumanDuration>,
    pub(super) lease: Option<HumanDuration>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_backoff: Option<HumanDuration>,
    pub(super) power_sync_interval: Option<HumanDuration>,
    pub(super) power_sync_concurrency: Option<usize>,
    pub(super) repeat_stages: Option<bool>,
    #[serde(default)]
    pub(super) timeouts: WireTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireTimeouts {
    pub(super) verify: Option<HumanDuration>,
    pub(super) inspect: Option<HumanDuration>,
    pub(super) clean: Option<HumanDuration>,
    pub(super) deploy: Option<HumanDuration>,
    pub(super) configure: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireBoot {
    pub(super) kernel_url: Option<String>,
    pub(super) initrd_url: Option<String>,
    pub(super) kernel_args: Option<String>,
    pub(super) token_ttl: Option<HumanDuration>,
    pub(super) assets_dir: Option<PathBuf>,
    pub(super) ramdisk_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireProfiles {
    pub(super) dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDhcp {
    pub(super) enabled: Option<bool>,
    pub(super) mode: Option<String>,
    pub(super) interfaces: Option<NameList>,
    pub(super) port: Option<u16>,
    pub(super) proxy_port: Option<u16>,
    pub(super) lease_time: Option<HumanDuration>,
    pub(super) offer_hold: Option<HumanDuration>,
    pub(super) decline_quarantine: Option<HumanDuration>,
    pub(super) snponly: Option<bool>,
    pub(super) router_advertisements: Option<bool>,
    #[serde(default)]
    pub(super) subnet: Vec<WireSubnet>,
}

/// A list of names, or one string of comma-separated names (environment overrides).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum NameList {
    List(Vec<String>),
    Text(String),
}

impl NameList {
    pub(super) fn into_vec(self) -> Vec<String> {
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
pub(super) struct WireSubnet {
    pub(super) network: Option<String>,
    #[serde(default)]
    pub(super) ranges: Vec<String>,
    pub(super) router: Option<String>,
    #[serde(default)]
    pub(super) dns_servers: Vec<String>,
    pub(super) domain: Option<String>,
    pub(super) next_server: Option<String>,
    pub(super) lease_time: Option<HumanDuration>,
    pub(super) discovery: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireTftp {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<String>,
    pub(super) root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}
