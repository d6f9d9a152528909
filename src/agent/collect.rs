//! Collectors: each reads one part of the machine from /sys, /proc and the
//! firmware tables under a [`Root`], with no external tools.

use super::root::Root;
use super::smbios;
use crate::protocol::inventory::*;
use std::collections::{BTreeMap, BTreeSet};

const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Everything, for the machine booted with `bootif` (the `BOOTIF=` MAC).
pub fn inventory(root: &Root, bootif: Option<&str>) -> Inventory {
    let (bmc, bmc_note) = super::ipmi::bmc(root);
    Inventory {
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            collect_ms: None,
            notes: bmc_note.into_iter().collect(),
        },
        system: system(root),
        cpu: cpu(root),
        memory: memory(root),
        disks: disks(root),
        nics: nics(root, bootif),
        bonds: bonds(root),
        pci: pci(root),
        bmc,
    }
}

fn clean(v: Option<String>) -> Option<String> {
    v.filter(|s| !smbios::placeholder(s))
}

/// System identity, firmware and boot mode.
pub fn system(root: &Root) -> System {
    let table = root
        .bytes("/sys/firmware/dmi/tables/DMI")
        .unwrap_or_default();
    let t = smbios::system_info(&table);
    let id = |f: &str| clean(root.text(&format!("/sys/class/dmi/id/{f}")));
    let uefi = root.exists("/sys/firmware/efi");
    let secure_boot = if uefi {
        // efivars: 4 bytes of attributes, then the value (one byte).
        root.bytes(SECURE_BOOT_VAR)
            .and_then(|b| b.get(4).copied())
            .map(|v| v == 1)
    } else {
        None
    };
    System {
        vendor: id("sys_vendor").or(clean(t.vendor)),
        product: id("product_name").or(clean(t.product)),
        serial: id("product_serial").or(clean(t.serial)),
        uuid: id("product_uuid")
            .map(|u| u.to_ascii_lowercase())
            .or(t.uuid),
        bios_vendor: id("bios_vendor").or(clean(t.bios_vendor)),
        bios_version: id("bios_version").or(clean(t.bios_version)),
        bios_date: id("bios_date").or(clean(t.bios_date)),
        boot_mode: if uefi { "uefi" } else { "bios" }.into(),
        secure_boot,
    }
}

/// Processors from /proc/cpuinfo, with the maximum frequency from cpufreq.
pub fn cpu(root: &Root) -> Cpu {
    let text = root.text("/proc/cpuinfo").unwrap_or_default();
    let mut c = Cpu::default();
    // (package, core) pairs and per-package thread counts.
    let mut cores: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut packages: BTreeMap<u32, CpuPackage> = BTreeMap::new();
    let mut mhz: Option<f64> = None;
    for block in text.split("\n\n").filter(|b| b.contains("processor")) {
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (key, v) = l.split_once(':')?;
                (key.trim() == k).then(|| v.trim().to_string())
            })
        };
        let num = |k: &str| field(k).and_then(|v| v.parse::<u32>().ok());
        c.threads += 1;
        let pkg = num("physical id").unwrap_or(0);
        let core = num("core id").unwrap_or(c.threads - 1);
        cores.insert((pkg, core));
        let model = field("model name");
        let p = packages.entry(pkg).or_insert(CpuPackage {
            id: pkg,
            model: model.clone(),
            cores: 0,
            threads: 0,
        });
        p.threads += 1;
        if c.model.is_none() {
            c.model = model;
            c.vendor = field("vendor_id");
            mhz = field("cpu MHz").and_then(|v| v.parse().ok());
            c.flags = field("flags")
                .map(|f| f.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default();
        }
    }
    for (pkg, _) in &cores {
        if let Some(p) = packages.get_mut(pkg) {
            p.cores += 1;
        }
    }
    c.cores = cores.len() as u32;
    c.sockets = packages.len() as u32;
    c.packages = packages.into_values().collect();
    let max_khz = root
        .text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .and_then(|v| v.parse::<u64>().ok());
    c.mhz = max_khz
        .map(|k| (k / 1000) as u32)
        .or(mhz.map(|m| m.round() as u32));
    c.virtualization = ["vmx", "svm"]
        .iter()
        .find(|f| c.flags.iter().any(|x| x == *f))
        .map(|f| f.to_string());
    c
}

/// Memory from /proc/meminfo and SMBIOS type 17.
pub fn memory(root: &Root) -> Memory {
    let usable = root
        .text("/proc/meminfo")
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let table = root
        .bytes("/sys/firmware/dmi/tables/DMI")
        .unwrap_or_default();
    let dimms = smbios::dimms(&table);
    let installed: u64 = dimms.iter().map(|d| d.size_bytes).sum();
    Memory {
        total_bytes: if installed > 0 { installed } else { usable },
        usable_bytes: usable,
        dimms,
    }
}

/// The PCI address (`0000:00:04.0`) nearest the device in a resolved sysfs path.
fn pci_address(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|c| is_pci(c))
        .map(str::to_string)
}

fn is_pci(c: &str) -> bool {
    let b = c.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && c.chars()
            .enumerate()
            .all(|(i, ch)| matches!(i, 4 | 7 | 10) || ch.is_ascii_hexdigit())
}

/// `0:2:0:0`-style SCSI address in a path.
fn scsi_address(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|c| {
            let parts: Vec<&str> = c.split(':').collect();
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit()))
        })
        .map(str::to_string)
}

fn id_part(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("_")
}

/// SCSI VPD page 0x80 (unit serial number): 4-byte header, then the text.
fn vpd_serial(b: &[u8]) -> Option<String> {
    let len = *b.get(3)? as usize;
    let s = String::from_utf8_lossy(b.get(4..4 + len)?)
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// Block devices, skipping loop, ram, zram and device-mapper layers.
pub fn disks(root: &Root) -> Vec<Disk> {
    let mut out = Vec::new();
    for name in root.list("/sys/block") {
        if ["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let b = format!("/sys/block/{name}");
        let Some(real) = root.resolve(&b) else {
            continue;
        };
        if real.contains("/virtual/") {
            continue;
        }
        let size_bytes = root
            .text(&format!("{b}/size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        let flag = |f: &str| root.text(&format!("{b}/{f}")).as_deref() == Some("1");
        let dev = |f: &str| clean(root.text(&format!("{b}/device/{f}")));
        let is_virtio = name.starts_with("vd");
        let bus = if is_virtio {
            Some("virtio")
        } else if name.starts_with("nvme") {
            Some("nvme")
        } else if name.starts_with("mmcblk") {
            Some("mmc")
        } else if real.contains("/usb") {
            Some("usb")
        } else if real.split('/').any(|c| c.starts_with("ata")) {
            Some("ata")
        } else if name.starts_with("sd") {
            Some("scsi")
        } else {
            None
        };
        let wwid = root
            .text(&format!("{b}/wwid"))
            .or_else(|| root.text(&format!("{b}/device/wwid")));
        let wwn = wwid.as_deref().and_then(|w| {
            if let Some(naa) = w.strip_prefix("naa.") {
                Some(format!("0x{}", naa.to_ascii_lowercase()))
            } else if w.starts_with("eui.") {
                Some(w.to_string())
            } else {
                None
            }
        });
        let serial = match bus {
            Some("virtio") => clean(root.text(&format!("{b}/serial"))),
            Some("nvme") => dev("serial"),
            _ => root
                .bytes(&format!("{b}/device/vpd_pg80"))
                .and_then(|v| vpd_serial(&v))
                .or_else(|| dev("serial")),
        };
        // A virtio device's `vendor` is the PCI vendor id, not a disk vendor.
        let vendor = if is_virtio { None } else { dev("vendor") };
        let model = dev("model");
        let driver = match bus {
            Some("virtio") => Some("virtio_blk".to_string()),
            Some("nvme") => Some("nvme".to_string()),
            _ => root.link_name(&format!("{b}/device/driver")),
        };
        let pci = pci_address(&real);
        let by_path = pci.as_ref().map(|p| {
            let base = format!("pci-{p}");
            match bus {
                Some("nvme") => {
                    let ns = name.rsplit_once('n').map(|(_, n)| n).unwrap_or("1");
                    format!("{base}-nvme-{ns}")
                }
                Some("ata") => {
                    let port = real
                        .split('/')
                        .find_map(|c| c.strip_prefix("ata"))
                        .unwrap_or("0");
                    format!("{base}-ata-{port}")
                }
                Some("virtio") => base,
                _ => match scsi_address(&real) {
                    Some(a) => format!("{base}-scsi-{a}"),
                    None => base,
                },
            }
        });
        let mut by_id = links_to(root, "/dev/disk/by-id", &name);
        if by_id.is_empty() {
            if let Some(s) = &serial {
                match bus {
                    Some("virtio") => by_id.push(format!("virtio-{}", id_part(s))),
                    Some("nvme") => by_id.push(format!(
                        "nvme-{}_{}",
                        id_part(model.as_deref().unwrap_or("")),
                        id_part(s)
                    )),
                    Some("ata") => by_id.push(format!(
                        "ata-{}_{}",
                        id_part(model.as_deref().unwrap_or("")),
                        id_part(s)
                    )),
                    _ => by_id.push(format!(
                        "scsi-{}_{}_{}",
                        id_part(vendor.as_deref().unwrap_or("")),
                        id_part(model.as_deref().unwrap_or("")),
                        id_part(s)
                    )),
                }
            }
            if let Some(w) = wwn.as_deref().filter(|w| w.starts_with("0x")) {
                by_id.push(format!("wwn-{w}"));
            }
            by_id.sort();
        }
        let by_path = links_to(root, "/dev/disk/by-path", &name)
            .into_iter()
            .next()
            .or(by_path);
        out.push(Disk {
            size_bytes,
            rotational: flag("queue/rotational"),
            removable: flag("removable"),
            vendor,
            model,
            serial,
            wwn,
            by_path,
            by_id,
            bus: bus.map(str::to_string),
            driver,
            name,
        });
    }
    out
}

/// The names of udev's links in `dir` that point at `/dev/<dev>` (sorted).
fn links_to(root: &Root, dir: &str, dev: &str) -> Vec<String> {
    let mut v: Vec<String> = root
        .list(dir)
        .into_iter()
        .filter(|l| {
            root.link(&format!("{dir}/{l}"))
                .is_some_and(|t| t.rsplit('/').next() == Some(dev))
        })
        .collect();
    v.sort();
    v
}

/// Permanent MACs of bond members, from /proc/net/bonding/<bond>.
fn permanent_macs(root: &Root, bond: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let text = root
        .text(&format!("/proc/net/bonding/{bond}"))
        .unwrap_or_default();
    let mut current: Option<String> = None;
    for l in text.lines() {
        if let Some(n) = l.strip_prefix("Slave Interface:") {
            current = Some(n.trim().to_string());
        } else if let (Some(m), Some(n)) = (l.strip_prefix("Permanent HW addr:"), &current) {
            out.insert(n.clone(), m.trim().to_ascii_lowercase());
        }
    }
    out
}

/// The MAC of `BOOTIF=01-aa-bb-cc-dd-ee-ff` (or a plain MAC).
pub fn bootif_mac(bootif: &str) -> Option<String> {
    let t = bootif.trim().to_ascii_lowercase().replace('-', ":");
    let t = if t.len() == 20 && t.starts_with("01:") {
        &t[3..]
    } else {
        t.as_str()
    };
    let ok = t.len() == 17
        && t.split(':').count() == 6
        && t.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| t.to_string())
}

/// Physical network ports (those with a device behind them).
pub fn nics(root: &Root, bootif: Option<&str>) -> Vec<Nic> {
    let boot = bootif.and_then(bootif_mac);
    let mut out = Vec::new();
    for name in root.list("/sys/class/net") {
        let n = format!("/sys/class/net/{name}");
        if !root.exists(&format!("{n}/device")) {
            continue;
        }
        let real = root.resolve(&format!("{n}/device")).unwrap_or_default();
        let bond = root
            .link_name(&format!("{n}/master"))
            .filter(|m| root.exists(&format!("/sys/class/net/{m}/bonding")));
        let current = root
            .text(&format!("{n}/address"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mac = bond
            .as_ref()
            .and_then(|b| permanent_macs(root, b).remove(&name))
            .unwrap_or(current);
        let link = root.text(&format!("{n}/carrier")).map(|c| c == "1");
        let speed_mbps = root
            .text(&format!("{n}/speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|&s| s > 0)
            .map(|s| s as u32);
        out.push(Nic {
            booted: boot.as_deref() == Some(mac.as_str()),
            driver: root.link_name(&format!("{n}/device/driver")),
            pci_address: pci_address(&real),
            link,
            speed_mbps,
            bond,
            mac,
            name,
        });
    }
    out
}

/// Bonding interfaces and their members.
pub fn bonds(root: &Root) -> Vec<Bond> {
    root.list("/sys/class/net")
        .into_iter()
        .filter(|n| root.exists(&format!("/sys/class/net/{n}/bonding")))
        .map(|n| {
            let b = format!("/sys/class/net/{n}/bonding");
            Bond {
                mode: root
                    .text(&format!("{b}/mode"))
                    .and_then(|m| m.split_whitespace().next().map(str::to_string)),
                members: root
                    .text(&format!("{b}/slaves"))
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
                name: n,
            }
        })
        .collect()
}

/// PCI functions.
pub fn pci(root: &Root) -> Vec<PciDevice> {
    let hex = |p: &str| {
        root.text(p)
            .map(|v| v.trim_start_matches("0x").to_ascii_lowercase())
            .unwrap_or_default()
    };
    root.list("/sys/bus/pci/devices")
        .into_iter()
        .map(|a| {
            let d = format!("/sys/bus/pci/devices/{a}");
            PciDevice {
                vendor_id: hex(&format!("{d}/vendor")),
                device_id: hex(&format!("{d}/device")),
                class: hex(&format!("{d}/class")),
                driver: root.link_name(&format!("{d}/driver")),
                address: a,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootif_forms() {
        assert_eq!(
            bootif_mac("01-52-54-00-AB-CD-EF").as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(
            bootif_mac("52:54:00:ab:cd:ef").as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(bootif_mac("01-52-54"), None);
        assert_eq!(bootif_mac("zz-52-54-00-ab-cd-ef-00"), None);
    }

    #[test]
    fn addresses_in_paths() {
        let p =
            "/sys/devices/pci0000:00/0000:00:02.0/0000:03:00.0/host0/target0:2:0/0:2:0:0/block/sda";
        assert_eq!(pci_address(p).as_deref(), Some("0000:03:00.0"));
        assert_eq!(scsi_address(p).as_deref(), Some("0:2:0:0"));
        assert_eq!(pci_address("/sys/devices/virtual/net/lo"), None);
        assert_eq!(vpd_serial(b"\0\x80\0\x05ABCDE"), Some("ABCDE".into()));
    }
}
