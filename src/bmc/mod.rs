//! BMC control: one driver interface for power, boot device, BIOS settings,
//! RAID volumes and out-of-band inventory, and the drivers behind it.
//!
//! Drivers here:
//! - `ipmi` ([`ipmi`]): IPMI 2.0 over LAN (RMCP+, cipher suite 3) through the
//!   `ipmi-rs` crate, one session per command, requests retransmitted when an
//!   answer is late; power and boot device only (BIOS, RAID and inventory are
//!   refused as unsupported);
//! - `redfish` ([`redfish`]): Redfish over HTTPS, a small client of its own on
//!   `reqwest`;
//! - `fake` (an in-process stand-in with scriptable faults, for tests and demos);
//! - `none` (no BMC: power is switched by hand and racklift only waits).
//!
//! Errors say whether retrying can help ([`BmcError::is_transient`]); the
//! conductor retries transient ones with backoff and fails the node otherwise.
//! [`Drivers`] serialises the commands to each BMC (address and port): a BMC
//! never sees two of this process's commands at once, however many nodes or
//! workers share it.

mod fake;
pub mod ipmi;
pub mod redfish;

pub use fake::{FakeBmcs, FakeMachine};
pub use ipmi::{FirmwareBoot, IpmiDriver, IpmiSettings};
pub use redfish::{RedfishDriver, RedfishSettings};

use crate::node::BmcDriverKind;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;
use utoipa::ToSchema;

/// The power state a BMC reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
    /// No BMC to ask.
    Unknown,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }
}

/// A power command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    /// Hard power off.
    Off,
    /// ACPI shutdown request.
    SoftOff,
    Reset,
    Cycle,
}

impl std::str::FromStr for PowerAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "on" => PowerAction::On,
            "off" => PowerAction::Off,
            "soft_off" | "soft-off" => PowerAction::SoftOff,
            "reset" => PowerAction::Reset,
            "cycle" => PowerAction::Cycle,
            o => {
                return Err(format!(
                    "unknown power action '{o}' (on, off, soft_off, reset or cycle)"
                ));
            }
        })
    }
}

/// Where the machine boots from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cd,
    UefiHttp,
}

impl std::str::FromStr for BootDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pxe" => BootDevice::Pxe,
            "disk" => BootDevice::Disk,
            "cd" => BootDevice::Cd,
            "uefi_http" | "uefi-http" => BootDevice::UefiHttp,
            o => {
                return Err(format!(
                    "unknown boot device '{o}' (pxe, disk, cd or uefi-http)"
                ));
            }
        })
    }
}

/// A boot device request: the device, once or for every boot, and the
/// firmware path (`None`: the driver's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    pub device: BootDevice,
    pub persistent: bool,
    pub mode: Option<FirmwareBoot>,
}

/// A machine's BIOS attributes: those in force, and those set to apply at the
/// next boot (only the ones that differ from the current value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BiosSettings {
    #[schema(value_type = Object)]
    pub current: Map<String, Value>,
    #[schema(value_type = Object)]
    pub pending: Map<String, Value>,
}

/// The attributes of `wanted` whose current value differs, as
/// `name: wanted X, current Y` (an empty list: all in force). Numbers and
/// booleans compare equal to their text (`1` and `"1"`), as profiles and BMCs
/// write them differently.
pub fn bios_mismatches(wanted: &Map<String, Value>, current: &Map<String, Value>) -> Vec<String> {
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            o => o.to_string(),
        }
    }
    wanted
        .iter()
        .filter_map(|(k, w)| match current.get(k) {
            Some(c) if text(c) == text(w) => None,
            Some(c) => Some(format!("{k}: wanted {}, current {}", text(w), text(c))),
            None => Some(format!(
                "{k}: wanted {}, the BMC has no such attribute",
                text(w)
            )),
        })
        .collect()
}

/// A RAID volume (logical drive) of a storage controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RaidVolume {
    pub id: String,
    pub name: Option<String>,
    /// `RAID0`, `RAID1`, `RAID5`, `RAID6`, `RAID10`, `RAID50`, `RAID60`.
    pub level: Option<String>,
    pub capacity_bytes: Option<u64>,
    /// The ids of its member disks.
    pub drives: Vec<String>,
    /// The id of its storage controller.
    pub storage: String,
}

/// A volume to create: its level and either member disks or a size (or both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// RAID level: `0`, `1`, `5`, `6`, `10`, `50`, `60` (or `RAID1` ...).
    pub level: String,
    /// Member disk ids (see the node's BMC inventory); empty lets the controller choose.
    #[serde(default)]
    pub drives: Vec<String>,
    pub capacity_bytes: Option<u64>,
    pub name: Option<String>,
    /// Storage controller id (default: the one holding the disks, or the first).
    pub storage: Option<String>,
}

impl VolumeSpec {
    /// The level in Redfish's `RAIDType` spelling, or why it is not one.
    pub fn raid_type(&self) -> Result<String, BmcError> {
        let l = self.level.trim().to_ascii_uppercase();
        let n = l.strip_prefix("RAID").unwrap_or(&l);
        match n {
            "0" | "1" | "5" | "6" | "10" | "50" | "60" => Ok(format!("RAID{n}")),
            _ => Err(BmcError::Unsupported(format!(
                "'{}' is not a RAID level (0, 1, 5, 6, 10, 50 or 60)",
                self.level
            ))),
        }
    }

    /// Checks the spec before anything is sent.
    pub fn check(&self) -> Result<(), BmcError> {
        self.raid_type()?;
        if self.drives.is_empty() && self.capacity_bytes.is_none() {
            return Err(BmcError::Unsupported(
                "a volume needs member disks, a size, or both".into(),
            ));
        }
        Ok(())
    }
}

/// What the BMC knows of the machine without booting it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BmcInventory {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub bios_version: Option<String>,
    pub cpus: Option<u64>,
    pub memory_gib: Option<f64>,
    pub nics: Vec<BmcNic>,
    pub disks: Vec<BmcDisk>,
}

/// A network port as the BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BmcNic {
    pub id: String,
    pub mac: Option<String>,
    pub speed_mbps: Option<u64>,
}

/// A physical disk as the BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BmcDisk {
    pub id: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub capacity_bytes: Option<u64>,
    /// `HDD` or `SSD`.
    pub media: Option<String>,
    pub storage: Option<String>,
}

/// A BMC failure, classified by what retrying can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    /// Timeouts, dropped packets, 5xx, resets: worth retrying.
    #[error("BMC at {address} did not answer: {detail}")]
    Transient { address: String, detail: String },
    /// Nothing accepts connections at the BMC's address and port (the
    /// connection was refused for a while): a wrong address or port more
    /// often than a BMC restarting, so not retried by the conductor.
    #[error("BMC at {address} refused the connection: {detail}")]
    Closed { address: String, detail: String },
    /// Wrong user name or password.
    #[error("BMC at {address} refused the credentials of user '{user}'")]
    Auth { address: String, user: String },
    /// The BMC or driver cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else the BMC refused.
    #[error("BMC at {address} refused: {detail}")]
    Refused { address: String, detail: String },
    /// The RAID volume asked for is not on the BMC (`known`: the ones that are).
    #[error("BMC at {address} has no RAID volume '{id}' (volumes: {})", list_or_none(.known))]
    NoVolume {
        address: String,
        id: String,
        known: Vec<String>,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl BmcError {
    pub fn is_transient(&self) -> bool {
        matches!(self, BmcError::Transient { .. })
    }
}

/// `base * 2^n`, at most `cap`, scaled by a random factor between 0.5 and 1
/// (jitter), so that many callers that failed together do not retry together.
pub fn backoff_with_jitter(base: Duration, n: u32, cap: Duration) -> Duration {
    let d = base.saturating_mul(2u32.saturating_pow(n.min(16))).min(cap);
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// Where and how to reach one BMC.
#[derive(Clone, PartialEq, Eq)]
pub struct BmcTarget {
    pub driver: BmcDriverKind,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub verify_tls: bool,
    /// Identifies the machine when there is no address (the fake driver).
    pub node_key: String,
}

impl std::fmt::Debug for BmcTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcTarget")
            .field("driver", &self.driver)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("verify_tls", &self.verify_tls)
            .finish()
    }
}

/// One BMC driver: what racklift asks of a machine's BMC.
#[async_trait]
pub trait BmcDriver: Send + Sync {
    /// Reads the power state; also proves the credentials work.
    async fn power_state(&self) -> Result<PowerState, BmcError>;
    /// Powers on, off (hard or soft), resets or cycles the machine.
    async fn power(&self, action: PowerAction) -> Result<(), BmcError>;
    /// Sets the next boot device, once or for every boot, in a firmware mode.
    async fn set_boot(&self, boot: BootOverride) -> Result<(), BmcError>;
    /// Sets the next boot device in the driver's default firmware mode.
    async fn set_boot_device(&self, device: BootDevice, persistent: bool) -> Result<(), BmcError> {
        self.set_boot(BootOverride {
            device,
            persistent,
            mode: None,
        })
        .await
    }
    /// Reads the BIOS attributes in force and those pending for the next boot.
    async fn bios(&self) -> Result<BiosSettings, BmcError>;
    /// Changes BIOS attributes; they apply at the next boot (power on or reset).
    async fn set_bios(&self, changes: &Map<String, Value>) -> Result<(), BmcError>;
    /// Lists the RAID volumes of every storage controller.
    async fn raid_volumes(&self) -> Result<Vec<RaidVolume>, BmcError>;
    /// Creates a RAID volume and returns it once the BMC has made it.
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<RaidVolume, BmcError>;
    /// Deletes the RAID volume with this id.
    async fn delete_volume(&self, id: &str) -> Result<(), BmcError>;
    /// Reads the machine's inventory as the BMC sees it (system, NICs, disks).
    async fn inventory(&self) -> Result<BmcInventory, BmcError>;
    /// Whether a human must act (no BMC): the conductor says so in the node's events.
    fn is_manual(&self) -> bool {
        false
    }
}

impl BmcTarget {
    /// The target of a stored node, with its unsealed password.
    pub fn of(rec: &crate::store::NodeRecord, password: Option<String>) -> BmcTarget {
        let b = &rec.node.bmc;
        BmcTarget {
            driver: b.driver,
            address: b.address.clone(),
            port: b.port,
            username: b.username.clone(),
            password,
            verify_tls: b.verify_tls,
            node_key: rec.node.id.to_string(),
        }
    }
}

/// Picks the driver for a node's BMC.
#[derive(Clone, Default)]
pub struct Drivers {
    pub fake: FakeBmcs,
    /// Timeouts, tries and boot mode of the `ipmi` driver.
    pub ipmi: IpmiSettings,
    /// One lock per IPMI BMC: its commands never overlap.
    ipmi_locks: ipmi::BmcLocks,
    /// Timeouts, retries and waits of the `redfish` driver.
    pub redfish: RedfishSettings,
    /// One lock per Redfish BMC.
    redfish_locks: ipmi::BmcLocks,
    /// The HTTP clients shared by every Redfish driver (connection reuse).
    redfish_http: redfish::Clients,
}

impl Drivers {
    pub fn driver_for(&self, target: &BmcTarget) -> Result<Box<dyn BmcDriver>, BmcError> {
        match target.driver {
            BmcDriverKind::Fake => Ok(Box::new(self.fake.driver(target))),
            BmcDriverKind::None => Ok(Box::new(Manual)),
            BmcDriverKind::Ipmi => {
                let lock = self.ipmi_locks.get(&IpmiDriver::lock_key(target));
                Ok(Box::new(IpmiDriver::new(target, self.ipmi, lock)?))
            }
            BmcDriverKind::Redfish => {
                let lock = self.redfish_locks.get(&RedfishDriver::lock_key(target)?);
                Ok(Box::new(RedfishDriver::new(
                    target,
                    self.redfish,
                    self.redfish_http.get(target.verify_tls)?,
                    lock,
                )?))
            }
        }
    }
}

/// No BMC: every command is a note for the operator.
struct Manual;

#[async_trait]
impl BmcDriver for Manual {
    async fn power_state(&self) -> Result<PowerState, BmcError> {
        Ok(PowerState::Unknown)
    }
    async fn power(&self, _action: PowerAction) -> Result<(), BmcError> {
        Ok(())
    }
    async fn set_boot(&self, _boot: BootOverride) -> Result<(), BmcError> {
        Ok(())
    }
    async fn bios(&self) -> Result<BiosSettings, BmcError> {
        Err(Manual::unsupported("BIOS settings are"))
    }
    async fn set_bios(&self, _changes: &Map<String, Value>) -> Result<(), BmcError> {
        Err(Manual::unsupported("BIOS settings are"))
    }
    async fn raid_volumes(&self) -> Result<Vec<RaidVolume>, BmcError> {
        Err(Manual::unsupported("RAID volumes are"))
    }
    async fn create_volume(&self, _spec: &VolumeSpec) -> Result<RaidVolume, BmcError> {
        Err(Manual::unsupported("RAID volumes are"))
    }
    async fn delete_volume(&self, _id: &str) -> Result<(), BmcError> {
        Err(Manual::unsupported("RAID volumes are"))
    }
    async fn inventory(&self) -> Result<BmcInventory, BmcError> {
        Err(Manual::unsupported("out-of-band inventories are"))
    }
    fn is_manual(&self) -> bool {
        true
    }
}

impl Manual {
    fn unsupported(what: &str) -> BmcError {
        BmcError::Unsupported(format!(
            "{what} not supported without a BMC (driver 'none')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for n in 0..10 {
            let d = backoff_with_jitter(base, n, cap);
            let full = (base * 2u32.pow(n)).min(cap);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?}");
        }
    }

    #[test]
    fn bios_comparison_reads_numbers_as_text() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        let wanted = m(serde_json::json!({"A": "Enabled", "B": 1, "C": "x"}));
        let current = m(serde_json::json!({"A": "Enabled", "B": "1", "C": "y"}));
        assert_eq!(
            bios_mismatches(&wanted, &current),
            ["C: wanted x, current y"]
        );
    }

    #[test]
    fn raid_levels_and_actions_parse() {
        let spec = |l: &str| VolumeSpec {
            level: l.into(),
            drives: vec!["d0".into()],
            ..Default::default()
        };
        assert_eq!(spec("1").raid_type().unwrap(), "RAID1");
        assert_eq!(spec("raid10").raid_type().unwrap(), "RAID10");
        assert!(spec("7").check().is_err());
        assert!(
            VolumeSpec {
                level: "1".into(),
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert_eq!("soft-off".parse::<PowerAction>(), Ok(PowerAction::SoftOff));
        assert_eq!("uefi-http".parse::<BootDevice>(), Ok(BootDevice::UefiHttp));
        assert!("floppy".parse::<BootDevice>().is_err());
    }
}
