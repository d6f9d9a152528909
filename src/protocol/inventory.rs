//! The inventory document racklift-agent posts: what the machine is, in plain
//! units (bytes, MHz, Mbit/s). The server checks it against these types (an
//! inventory that names `agent` must parse as one) and flattens it into
//! eDeploy facts with [`super::facts`].

use serde::{Deserialize, Serialize};

/// The whole inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub agent: AgentInfo,
    pub system: System,
    pub cpu: Cpu,
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub bonds: Vec<Bond>,
    #[serde(default)]
    pub pci: Vec<PciDevice>,
    /// The BMC's LAN settings, when the machine has one the agent could ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Bmc>,
}

/// Who collected the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub version: String,
    /// Milliseconds the collection took (absent in captured-tree tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_ms: Option<u64>,
    /// What the agent could not find out, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The machine as a whole and its firmware.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    /// `uefi` or `bios`: how this boot happened.
    pub boot_mode: String,
    /// UEFI Secure Boot; None on BIOS or when the variable is unreadable.
    pub secure_boot: Option<bool>,
}

/// Processors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub sockets: u32,
    /// Physical cores, all sockets together.
    pub cores: u32,
    /// Logical processors (hardware threads), all sockets together.
    pub threads: u32,
    /// Maximum frequency when the kernel knows it, else the current one.
    pub mhz: Option<u32>,
    /// `vmx` (Intel VT-x), `svm` (AMD-V), or None.
    pub virtualization: Option<String>,
    pub flags: Vec<String>,
    pub packages: Vec<CpuPackage>,
}

/// One socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuPackage {
    pub id: u32,
    pub model: Option<String>,
    pub cores: u32,
    pub threads: u32,
}

/// Memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// Installed memory: the DIMMs' sum when the firmware lists them, else
    /// what the kernel manages.
    pub total_bytes: u64,
    /// What the kernel manages (MemTotal).
    pub usable_bytes: u64,
    pub dimms: Vec<Dimm>,
}

/// A block device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Kernel name (`sda`, `vda`, `nvme0n1`): not stable across boots.
    pub name: String,
    pub size_bytes: u64,
    pub rotational: bool,
    pub removable: bool,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// World Wide Name (`0x5000c500...`, `eui.0025...`).
    pub wwn: Option<String>,
    /// Stable name by bus position, as in /dev/disk/by-path.
    pub by_path: Option<String>,
    /// Stable names by identity, as in /dev/disk/by-id.
    pub by_id: Vec<String>,
    /// `virtio`, `nvme`, `scsi`, `ata`, `usb`, `mmc` or None.
    pub bus: Option<String>,
    pub driver: Option<String>,
}

/// A physical network port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    /// The port's own (permanent) MAC address.
    pub mac: String,
    pub driver: Option<String>,
    pub pci_address: Option<String>,
    /// Carrier; None when the interface is down and the kernel cannot tell.
    pub link: Option<bool>,
    pub speed_mbps: Option<u32>,
    /// Whether the machine booted from this port (BOOTIF).
    pub booted: bool,
    /// The bond this port belongs to.
    pub bond: Option<String>,
}

/// A bonding interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    pub name: String,
    pub mode: Option<String>,
    pub members: Vec<String>,
}

/// A PCI function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciDevice {
    pub address: String,
    pub vendor_id: String,
    pub device_id: String,
    pub class: String,
    pub driver: Option<String>,
}

/// The BMC's LAN configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    pub channel: u8,
    pub ipv4: Option<String>,
    pub mac: Option<String>,
}

impl Inventory {
    /// The MAC the machine booted from, if the agent knew it.
    pub fn boot_mac(&self) -> Option<&str> {
        self.nics.iter().find(|n| n.booted).map(|n| n.mac.as_str())
    }
}

/// A memory device (type 17) with a module installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimm {
    /// Device locator (`DIMM 0`, `PROC 1 DIMM 1`).
    pub slot: String,
    pub bank: Option<String>,
    pub size_bytes: u64,
    /// `DDR4`, `RAM`, ...
    pub kind: Option<String>,
    /// Maximum speed in MT/s.
    pub speed_mts: Option<u32>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub part: Option<String>,
}
