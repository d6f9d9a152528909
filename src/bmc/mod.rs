//! BMC control: one driver interface for power and boot device, and the drivers
//! behind it.
//!
//! Drivers here:
//! - `ipmi` ([`ipmi`]): IPMI 2.0 over LAN (RMCP+, cipher suite 3) through the
//!   `ipmi-rs` crate, one session per command, requests retransmitted when an
//!   answer is late;
//! - `fake` (an in-process stand-in with scriptable faults, for tests and demos);
//! - `none` (no BMC: power is switched by hand and racklift only waits).
//!
//! `redfish` nodes are accepted and stored; until that driver is built, any step
//! that needs it fails at once with a clear "driver not available" error rather
//! than hanging.
//!
//! Errors say whether retrying can help ([`BmcError::is_transient`]); the
//! conductor retries transient ones with backoff and fails the node otherwise.
//! [`Drivers`] serialises the commands to each IPMI BMC (address and port): a
//! BMC never sees two of this process's sessions at once, however many nodes
//! or workers share it.

mod fake;
pub mod ipmi;

pub use fake::{FakeBmcs, FakeMachine};
pub use ipmi::{FirmwareBoot, IpmiDriver, IpmiSettings};

use crate::node::BmcDriverKind;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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

/// Where the machine boots from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cd,
    UefiHttp,
}

/// A BMC failure, classified by what retrying can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    /// Timeouts, dropped packets, 5xx, resets: worth retrying.
    #[error("BMC at {address} did not answer: {detail}")]
    Transient { address: String, detail: String },
    /// Wrong user name or password.
    #[error("BMC at {address} refused the credentials of user '{user}'")]
    Auth { address: String, user: String },
    /// The BMC or driver cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else the BMC refused.
    #[error("BMC at {address} refused: {detail}")]
    Refused { address: String, detail: String },
}

impl BmcError {
    pub fn is_transient(&self) -> bool {
        matches!(self, BmcError::Transient { .. })
    }
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

/// One BMC driver: what the conductor asks of a machine's BMC.
#[async_trait]
pub trait BmcDriver: Send + Sync {
    /// Reads the power state; also proves the credentials work.
    async fn power_state(&self) -> Result<PowerState, BmcError>;
    /// Powers on, off, resets or cycles the machine.
    async fn power(&self, action: PowerAction) -> Result<(), BmcError>;
    /// Sets the next boot device, once or for every boot.
    async fn set_boot_device(&self, device: BootDevice, persistent: bool) -> Result<(), BmcError>;
    /// Whether a human must act (no BMC): the conductor says so in the node's events.
    fn is_manual(&self) -> bool {
        false
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
            BmcDriverKind::Redfish => Err(BmcError::Unsupported(format!(
                "the '{}' BMC driver is not available in this racklift build",
                target.driver.as_str()
            ))),
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
    async fn set_boot_device(
        &self,
        _device: BootDevice,
        _persistent: bool,
    ) -> Result<(), BmcError> {
        Ok(())
    }
    fn is_manual(&self) -> bool {
        true
    }
}
