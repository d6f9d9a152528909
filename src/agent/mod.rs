//! racklift-agent, the ramdisk's program, as a library: it describes the
//! machine from /sys, /proc and the firmware tables (no external tools), posts
//! that inventory to racklift with the boot's token, then heartbeats and obeys.
//! What it says to the server (the inventory, its facts, the reports and
//! commands) is [`crate::protocol`], shared with the server.
//!
//! - [`root`]: reading files under a root directory (`/`, or a captured tree in
//!   tests), with optional capture of everything read;
//! - [`smbios`]: the raw SMBIOS table (system, BIOS, DIMMs);
//! - [`collect`]: the collectors (system, CPU, memory, disks, NICs, bonds, PCI);
//! - [`ipmi`]: the BMC's LAN address through `/dev/ipmi0`;
//! - [`client`]: posting with retries, log shipping, heartbeats;
//! - [`power`]: powering off or rebooting the machine when told to.

pub mod client;
pub mod collect;
pub mod ipmi;
pub mod power;
pub mod root;
pub mod smbios;

pub use crate::protocol::Command;
pub use client::{Client, Pacing, Settings, parse_cmdline};
pub use root::Root;

use crate::protocol::Inventory;

/// Collects the inventory and records how long it took.
pub fn collect_timed(root: &Root, bootif: Option<&str>) -> Inventory {
    let started = std::time::Instant::now();
    let mut inv = collect::inventory(root, bootif);
    inv.agent.collect_ms = Some(started.elapsed().as_millis() as u64);
    inv
}
