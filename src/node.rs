//! The node model: what racklift knows of one machine, and the validated inputs
//! that create and change it.
//!
//! Validation lives here, not in the API or the store: a [`MacAddr`] is always
//! normalised (`52:54:00:ab:cd:ef`), a name is always DNS-safe, a BMC address is
//! always a host name or IP. The BMC password never appears in a [`Node`]: only
//! whether one is set.

pub mod limits;

use crate::state::State;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;
use uuid::Uuid;

/// A validation failure, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An Ethernet MAC address, stored lower-case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a MAC address (write e.g. 52:54:00:12:34:56)");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if b == [0; 6] || b == [0xff; 6] {
            return Err(format!("'{s}' is not a usable MAC address"));
        }
        if b[0] & 1 == 1 {
            return Err(format!("'{s}' is a multicast address, not a NIC's"));
        }
        Ok(MacAddr(b))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How racklift talks to a node's BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum BmcDriverKind {
    Ipmi,
    Redfish,
    /// An in-process stand-in for tests and demos.
    Fake,
    /// No BMC: power is switched by hand.
    #[default]
    None,
}

impl BmcDriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BmcDriverKind::Ipmi => "ipmi",
            BmcDriverKind::Redfish => "redfish",
            BmcDriverKind::Fake => "fake",
            BmcDriverKind::None => "none",
        }
    }
}

impl FromStr for BmcDriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ipmi" => Ok(BmcDriverKind::Ipmi),
            "redfish" => Ok(BmcDriverKind::Redfish),
            "fake" => Ok(BmcDriverKind::Fake),
            "none" => Ok(BmcDriverKind::None),
            o => Err(format!(
                "unknown driver '{o}' (ipmi, redfish, fake or none)"
            )),
        }
    }
}

/// A node's BMC as shown by the API: never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BmcView {
    pub driver: BmcDriverKind,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    /// Whether a password is stored (it is never returned).
    pub password_set: bool,
    /// Whether the BMC's TLS certificate is verified (Redfish).
    pub verify_tls: bool,
}

/// A node as racklift knows it: the domain model. What the API shows of it
/// is `crate::api::views::NodeView`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: Uuid,
    pub name: String,
    /// The MAC the node network-boots from.
    pub boot_mac: Option<MacAddr>,
    /// Every port's MAC (the boot MAC included); unique across nodes.
    pub macs: Vec<MacAddr>,
    pub bmc: BmcView,
    pub state: State,
    /// The stable state racklift is driving the node to, if any.
    pub target: Option<State>,
    /// Bumped by every change; send it back in `If-Match` or `generation` to detect concurrent changes.
    pub generation: i64,
    pub profile: Option<String>,
    pub role: Option<String>,
    /// Given by the profile's hostname pool (or a pin) when the profile was selected.
    pub hostname: Option<String>,
    /// Addresses per network, from the profile's pools.
    pub addresses: std::collections::BTreeMap<String, String>,
    pub last_error: Option<String>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    /// `on`, `off`, or null when unknown.
    pub power_state: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub state_changed_at: String,
    /// The operator actions allowed in the current state.
    pub allowed_actions: Vec<String>,
}

/// The BMC part of a create or update request.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcInput {
    pub driver: Option<BmcDriverKind>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    /// Write-only: stored encrypted, never returned.
    pub password: Option<String>,
    pub verify_tls: Option<bool>,
}

/// `POST /v1/nodes`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    /// Defaults to `node-<boot mac without colons>` or `node-<uuid prefix>`.
    pub name: Option<String>,
    #[schema(value_type = Option<String>)]
    pub boot_mac: Option<MacAddr>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub macs: Vec<MacAddr>,
    #[serde(default)]
    pub bmc: BmcInput,
    pub profile: Option<String>,
    pub role: Option<String>,
}

/// `PATCH /v1/nodes/{id}`: only the fields given change; `null` clears a field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub boot_mac: Option<Option<MacAddr>>,
    #[schema(value_type = Option<Vec<String>>)]
    pub macs: Option<Vec<MacAddr>>,
    pub bmc: Option<BmcInput>,
    #[serde(default, deserialize_with = "double_option")]
    pub profile: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub role: Option<Option<String>>,
    /// When given, the change applies only if the node is still at this generation.
    pub generation: Option<i64>,
}

fn double_option<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A node name: 1-63 characters of `a-z 0-9 - . _`, starting with a letter or digit.
pub fn validate_name(field: &str, name: &str) -> Result<(), FieldError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c);
    if name.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    limits::check_len(field, name, limits::NAME)?;
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(FieldError::new(
            field,
            format!(
                "'{name}' may hold only a-z, 0-9, '-', '.', '_' and must start with a letter or digit"
            ),
        ));
    }
    if Uuid::parse_str(name).is_ok() {
        return Err(FieldError::new(field, "must not look like a UUID"));
    }
    Ok(())
}

/// The host of `host:port` or `[v6]:port`, when `a` is written so.
fn host_and_port(a: &str) -> Option<&str> {
    let (host, port) = match a.strip_prefix('[') {
        Some(r) => {
            let (h, p) = r.split_once("]:")?;
            (h, p)
        }
        None => a.split_once(':').filter(|(_, p)| !p.contains(':'))?,
    };
    (!port.is_empty() && port.chars().all(|c| c.is_ascii_digit())).then_some(host)
}

/// A BMC address: an IP address or a DNS name.
pub fn validate_bmc_address(addr: &str) -> Result<(), FieldError> {
    if addr.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let looks_numeric = addr
        .split('.')
        .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()));
    if looks_numeric || addr.contains(':') {
        return Err(FieldError::new(
            "bmc.address",
            format!("'{addr}' is not a valid IP address"),
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if addr.len() <= 253 && addr.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(FieldError::new(
            "bmc.address",
            format!("'{addr}' is not an IP address or host name"),
        ))
    }
}

/// A Redfish address written as a URL, in parts: `https://host[:port][/]` or
/// `http://...`, the host an IP address (IPv6 in brackets when a port
/// follows) or a DNS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedfishUrl<'a> {
    pub tls: bool,
    pub host: &'a str,
    /// The port as written after the host, if one was.
    pub port: Option<&'a str>,
}

/// The parts of a Redfish address that starts with `http://` or `https://`.
pub fn redfish_url(addr: &str) -> Option<RedfishUrl<'_>> {
    let (tls, rest) = match addr.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, addr.strip_prefix("http://")?),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        match r.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
            None => (rest, None),
        }
    } else {
        match rest.split_once(':') {
            // More than one colon: an IPv6 address without a port.
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            _ => (rest, None),
        }
    };
    Some(RedfishUrl { tls, host, port })
}

/// A port written in an address: 1-65535.
fn parse_port(field: &str, p: &str) -> Result<u16, FieldError> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(FieldError::new(
            field,
            format!("'{p}' is not a port (1-65535)"),
        )),
    }
}

/// A profile or role name: like a node name.
pub fn validate_label(field: &str, v: &str) -> Result<(), FieldError> {
    validate_name(field, v)
}

impl BmcInput {
    /// The length bounds of its strings (checked before the address is parsed).
    pub fn check_bounds(&self) -> Result<(), FieldError> {
        limits::check_opt("bmc.address", self.address.as_deref(), limits::BMC_ADDRESS)?;
        limits::check_opt(
            "bmc.username",
            self.username.as_deref(),
            limits::BMC_USERNAME,
        )?;
        limits::check_opt(
            "bmc.password",
            self.password.as_deref(),
            limits::BMC_PASSWORD,
        )
    }
}

impl NewNode {
    /// Checks the request and fills in defaults; returns the name and the full MAC list.
    pub fn validate(&self) -> Result<(String, Vec<MacAddr>), FieldError> {
        let macs = port_list(self.boot_mac, &self.macs)?;
        validate_bmc(&self.bmc, self.bmc.driver.unwrap_or_default())?;
        if let Some(p) = &self.profile {
            validate_label("profile", p)?;
        }
        if let Some(r) = &self.role {
            validate_label("role", r)?;
        }
        let name = match &self.name {
            Some(n) => {
                validate_name("name", n)?;
                n.clone()
            }
            None => match self.boot_mac.or(macs.first().copied()) {
                Some(m) => format!("node-{}", m.to_string().replace(':', "")),
                None => format!("node-{}", &Uuid::new_v4().simple().to_string()[..12]),
            },
        };
        Ok((name, macs))
    }
}

impl NodePatch {
    /// Every check that needs no stored node, made before the store is read:
    /// bounds, names, labels.
    pub fn check(&self) -> Result<(), FieldError> {
        if let Some(n) = &self.name {
            validate_name("name", n)?;
        }
        if let Some(m) = &self.macs {
            limits::check_count("macs", m.len(), limits::MACS)?;
        }
        if let Some(b) = &self.bmc {
            b.check_bounds()?;
        }
        if let Some(Some(p)) = &self.profile {
            validate_label("profile", p)?;
        }
        if let Some(Some(r)) = &self.role {
            validate_label("role", r)?;
        }
        Ok(())
    }
}

/// A node's ports: `macs` with the boot MAC first when it is not among them;
/// at most [`limits::MACS`], none twice.
pub fn port_list(boot_mac: Option<MacAddr>, macs: &[MacAddr]) -> Result<Vec<MacAddr>, FieldError> {
    // Counted before anything else: the duplicate check is quadratic.
    limits::check_count("macs", macs.len(), limits::MACS)?;
    let mut all = macs.to_vec();
    if let Some(b) = boot_mac
        && !all.contains(&b)
    {
        all.insert(0, b);
        limits::check_count("macs", all.len(), limits::MACS)?;
    }
    check_unique_macs(&all)?;
    Ok(all)
}

/// Refuses a MAC listed twice.
pub fn check_unique_macs(macs: &[MacAddr]) -> Result<(), FieldError> {
    for (i, m) in macs.iter().enumerate() {
        if macs[..i].contains(m) {
            return Err(FieldError::new("macs", format!("{m} is listed twice")));
        }
    }
    Ok(())
}

/// Checks a BMC input against the driver it will be used with.
pub fn validate_bmc(b: &BmcInput, driver: BmcDriverKind) -> Result<(), FieldError> {
    b.check_bounds()?;
    if let Some(a) = &b.address {
        match (driver, redfish_url(a)) {
            // A Redfish address may be a URL: `https://` (the default) or
            // `http://`, with a port or without.
            (BmcDriverKind::Redfish, Some(url)) => {
                validate_bmc_address(url.host)?;
                if let Some(p) = url.port {
                    let p = parse_port("bmc.address", p)?;
                    if b.port.is_some_and(|q| q != p) {
                        return Err(FieldError::new(
                            "bmc.port",
                            format!("{} disagrees with the port in bmc.address '{a}'", b.port.unwrap_or_default()),
                        ));
                    }
                }
            }
            _ => validate_bmc_address(a).map_err(|e| match host_and_port(a) {
                Some(host) if driver == BmcDriverKind::Redfish => FieldError::new(
                    "bmc.address",
                    format!("'{a}': write it as https://{a} (or http://{a}), or put the port in bmc.port and the host '{host}' here"),
                ),
                Some(host) => FieldError::new(
                    "bmc.address",
                    format!("'{a}' holds a port: put the host '{host}' here and the port in bmc.port"),
                ),
                None => e,
            })?,
        }
    }
    if b.port == Some(0) {
        return Err(FieldError::new("bmc.port", "must be between 1 and 65535"));
    }
    if matches!(driver, BmcDriverKind::Ipmi | BmcDriverKind::Redfish) && b.address.is_none() {
        return Err(FieldError::new(
            "bmc.address",
            format!("is required with driver '{}'", driver.as_str()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_normalise() {
        let m: MacAddr = "52-54-00-AB-cd-EF".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:ef");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:zz",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "525400abcdef",
            "52:54:00:ab:cd:eff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_addresses() {
        assert!(validate_name("name", "compute-001").is_ok());
        assert!(validate_name("name", "Compute").is_err());
        assert!(validate_name("name", "-x").is_err());
        assert!(validate_name("name", &"a".repeat(64)).is_err());
        assert!(validate_name("name", "0b5e5e8e-8f3a-4a8e-9d3e-1c2b3a4d5e6f").is_err());
        assert!(validate_bmc_address("10.0.0.5").is_ok());
        assert!(validate_bmc_address("fe80::1").is_ok());
        assert!(validate_bmc_address("bmc-01.rack3.example").is_ok());
        assert!(validate_bmc_address("bad host").is_err());
        assert!(validate_bmc_address("999.1.1.1").is_err());
        assert!(validate_bmc_address("10.0.0").is_err());
        assert!(validate_bmc_address("fe80::zz").is_err());
        let bmc = |a: &str| BmcInput {
            address: Some(a.into()),
            ..Default::default()
        };
        assert!(validate_bmc(&bmc("https://bmc-1.example"), BmcDriverKind::Redfish).is_ok());
        assert!(validate_bmc(&bmc("http://127.0.0.1"), BmcDriverKind::Redfish).is_ok());
        assert!(validate_bmc(&bmc("https://[fe80::1]"), BmcDriverKind::Redfish).is_ok());
        assert!(validate_bmc(&bmc("https://bad host"), BmcDriverKind::Redfish).is_err());
        assert!(validate_bmc(&bmc("ftp://x"), BmcDriverKind::Redfish).is_err());
        assert!(validate_bmc(&bmc("http://127.0.0.1"), BmcDriverKind::Ipmi).is_err());
        // A URL with a port; a port that disagrees with bmc.port is refused.
        assert!(validate_bmc(&bmc("http://127.0.0.1:8000"), BmcDriverKind::Redfish).is_ok());
        assert!(validate_bmc(&bmc("https://[fe80::1]:8443/"), BmcDriverKind::Redfish).is_ok());
        let mut both = bmc("http://127.0.0.1:8000");
        both.port = Some(9000);
        let e = validate_bmc(&both, BmcDriverKind::Redfish).unwrap_err();
        assert_eq!(e.field, "bmc.port", "{e}");
        assert!(validate_bmc(&bmc("http://127.0.0.1:0"), BmcDriverKind::Redfish).is_err());
        // host:port without a scheme says what to write.
        let e = validate_bmc(&bmc("127.0.0.1:8000"), BmcDriverKind::Redfish).unwrap_err();
        assert!(e.to_string().contains("http://127.0.0.1:8000"), "{e}");
        let e = validate_bmc(&bmc("10.0.0.5:623"), BmcDriverKind::Ipmi).unwrap_err();
        assert!(e.to_string().contains("bmc.port"), "{e}");
        assert_eq!(
            redfish_url("https://[fe80::1]:8443"),
            Some(RedfishUrl {
                tls: true,
                host: "fe80::1",
                port: Some("8443")
            })
        );
        assert_eq!(
            redfish_url("http://fe80::1"),
            Some(RedfishUrl {
                tls: false,
                host: "fe80::1",
                port: None
            })
        );
    }

    #[test]
    fn new_node_defaults_and_checks() {
        let n = NewNode {
            boot_mac: Some("52:54:00:00:00:01".parse().unwrap()),
            macs: vec!["52:54:00:00:00:02".parse().unwrap()],
            ..Default::default()
        };
        let (name, macs) = n.validate().unwrap();
        assert_eq!(name, "node-525400000001");
        assert_eq!(macs.len(), 2);
        let dup = NewNode {
            macs: vec!["52:54:00:00:00:02".parse().unwrap(); 2],
            ..Default::default()
        };
        assert_eq!(dup.validate().unwrap_err().field, "macs");
        let ipmi = NewNode {
            bmc: BmcInput {
                driver: Some(BmcDriverKind::Ipmi),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ipmi.validate().unwrap_err().field, "bmc.address");
    }
}
