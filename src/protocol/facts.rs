//! Flattening an agent inventory into eDeploy's `(class, type, key, value)`
//! facts, in the vocabulary eDeploy's `hardware` library uses, so profiles
//! written for eDeploy inventories match machines racklift-agent described:
//!
//! - `system product {vendor,name,serial,uuid}`, `firmware bios {vendor,version,date}`,
//!   `firmware boot mode` (`uefi`/`bios`), `firmware secure_boot enabled`;
//! - `cpu physical number`, `cpu logical number`, `cpu physical_N
//!   {product,vendor,cores,threads,frequency}` (frequency in Hz), `cpu
//!   physical_N virtualization` (`vmx`/`svm`) and `flags`;
//! - `memory total size` (bytes), `memory banks count`, `memory bank:N
//!   {size,clock,slot,vendor,product,serial,type}` (size in bytes, clock in Hz);
//! - `disk NAME {size,vendor,model,serial,wwn,rotational,removable,by_path,by_id}`
//!   (size in GB of 10^9 bytes, rounded down, as eDeploy);
//! - `network NAME {serial,businfo,driver,link,speed,boot,bond}` (`serial` is
//!   the MAC, `businfo` is `pci@ADDRESS`, `link` is `yes`/`no`, speed `1000Mb/s`);
//! - `system ipmi {channel,ipv4,mac}` when the BMC answered;
//! - `pci ADDRESS {vendor,device,class,driver}`.

use super::fact::Fact;
use super::inventory::Inventory;

/// The facts of an inventory, in a stable order.
pub fn facts(inv: &Inventory) -> Vec<Fact> {
    let mut out = Vec::new();
    let mut put = |c: &str, t: &str, k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push(Fact::new(c, t, k, v));
        }
    };
    let s = &inv.system;
    put("system", "product", "vendor", s.vendor.clone());
    put("system", "product", "name", s.product.clone());
    put("system", "product", "serial", s.serial.clone());
    put("system", "product", "uuid", s.uuid.clone());
    put("firmware", "bios", "vendor", s.bios_vendor.clone());
    put("firmware", "bios", "version", s.bios_version.clone());
    put("firmware", "bios", "date", s.bios_date.clone());
    put("firmware", "boot", "mode", Some(s.boot_mode.clone()));
    put(
        "firmware",
        "secure_boot",
        "enabled",
        s.secure_boot.map(|b| b.to_string()),
    );

    let c = &inv.cpu;
    put("cpu", "physical", "number", Some(c.sockets.to_string()));
    put("cpu", "logical", "number", Some(c.threads.to_string()));
    for (i, p) in c.packages.iter().enumerate() {
        let t = format!("physical_{i}");
        put("cpu", &t, "product", p.model.clone());
        put("cpu", &t, "vendor", c.vendor.clone());
        put("cpu", &t, "cores", Some(p.cores.to_string()));
        put("cpu", &t, "threads", Some(p.threads.to_string()));
        put(
            "cpu",
            &t,
            "frequency",
            c.mhz.map(|m| (u64::from(m) * 1_000_000).to_string()),
        );
        put("cpu", &t, "virtualization", c.virtualization.clone());
        put("cpu", &t, "flags", Some(c.flags.join(" ")));
    }

    let m = &inv.memory;
    put("memory", "total", "size", Some(m.total_bytes.to_string()));
    put("memory", "banks", "count", Some(m.dimms.len().to_string()));
    for (i, d) in m.dimms.iter().enumerate() {
        let t = format!("bank:{i}");
        put("memory", &t, "size", Some(d.size_bytes.to_string()));
        put(
            "memory",
            &t,
            "clock",
            d.speed_mts.map(|s| (u64::from(s) * 1_000_000).to_string()),
        );
        put("memory", &t, "slot", Some(d.slot.clone()));
        put("memory", &t, "type", d.kind.clone());
        put("memory", &t, "vendor", d.manufacturer.clone());
        put("memory", &t, "product", d.part.clone());
        put("memory", &t, "serial", d.serial.clone());
    }

    for d in &inv.disks {
        let t = d.name.as_str();
        put(
            "disk",
            t,
            "size",
            Some((d.size_bytes / 1_000_000_000).to_string()),
        );
        put("disk", t, "vendor", d.vendor.clone());
        put("disk", t, "model", d.model.clone());
        put("disk", t, "serial", d.serial.clone());
        put("disk", t, "wwn", d.wwn.clone());
        put(
            "disk",
            t,
            "rotational",
            Some(u8::from(d.rotational).to_string()),
        );
        put(
            "disk",
            t,
            "removable",
            Some(u8::from(d.removable).to_string()),
        );
        put("disk", t, "by_path", d.by_path.clone());
        put("disk", t, "by_id", d.by_id.first().cloned());
    }

    for n in &inv.nics {
        let t = n.name.as_str();
        put("network", t, "serial", Some(n.mac.clone()));
        put(
            "network",
            t,
            "businfo",
            n.pci_address.as_ref().map(|a| format!("pci@{a}")),
        );
        put("network", t, "driver", n.driver.clone());
        put(
            "network",
            t,
            "link",
            n.link.map(|l| if l { "yes" } else { "no" }.to_string()),
        );
        put(
            "network",
            t,
            "speed",
            n.speed_mbps.map(|s| format!("{s}Mb/s")),
        );
        put("network", t, "boot", n.booted.then(|| "yes".to_string()));
        put("network", t, "bond", n.bond.clone());
    }

    if let Some(b) = &inv.bmc {
        put("system", "ipmi", "channel", Some(b.channel.to_string()));
        put("system", "ipmi", "ipv4", b.ipv4.clone());
        put("system", "ipmi", "mac", b.mac.clone());
    }

    for p in &inv.pci {
        let t = p.address.as_str();
        put("pci", t, "vendor", Some(p.vendor_id.clone()));
        put("pci", t, "device", Some(p.device_id.clone()));
        put("pci", t, "class", Some(p.class.clone()));
        put("pci", t, "driver", p.driver.clone());
    }
    out
}

/// Keys that move between boots of the same hardware (a VM's measured clock)
/// or are too long to read in a change note.
fn volatile(f: &Fact) -> bool {
    f.class == "cpu" && matches!(f.key.as_str(), "frequency" | "flags")
}

/// What changed between two sets of facts, one readable line per thing:
/// `disk vdb removed (serial DISK-B, size 8)`, `network eth2 added (serial
/// 52:54:00:..)`, `memory total size: 2147483648 -> 1073741824`.
pub fn diff(old: &[Fact], new: &[Fact]) -> Vec<String> {
    use std::collections::BTreeMap;
    type Groups = BTreeMap<(String, String), BTreeMap<String, String>>;
    let group = |fs: &[Fact]| {
        let mut g = Groups::new();
        for f in fs.iter().filter(|f| !volatile(f)) {
            g.entry((f.class.clone(), f.kind.clone()))
                .or_default()
                .insert(f.key.clone(), f.value.clone());
        }
        g
    };
    let (a, b) = (group(old), group(new));
    let summary = |m: &BTreeMap<String, String>| {
        let parts: Vec<String> = ["serial", "size", "model", "product", "slot"]
            .iter()
            .filter_map(|k| m.get(*k).map(|v| format!("{k} {v}")))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let mut out = Vec::new();
    for ((c, t), m) in &a {
        match b.get(&(c.clone(), t.clone())) {
            None => out.push(format!("{c} {t} removed{}", summary(m))),
            Some(n) => {
                for (k, v) in m {
                    match n.get(k) {
                        Some(nv) if nv != v => out.push(format!("{c} {t} {k}: {v} -> {nv}")),
                        None => out.push(format!("{c} {t} {k}: {v} -> (none)")),
                        _ => {}
                    }
                }
                for (k, nv) in n {
                    if !m.contains_key(k) {
                        out.push(format!("{c} {t} {k}: (none) -> {nv}"));
                    }
                }
            }
        }
    }
    for ((c, t), n) in &b {
        if !a.contains_key(&(c.clone(), t.clone())) {
            out.push(format!("{c} {t} added{}", summary(n)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_what_went_came_and_changed() {
        let f = |c: &str, t: &str, k: &str, v: &str| Fact::new(c, t, k, v);
        let old = [
            f("disk", "vda", "size", "4"),
            f("disk", "vdb", "size", "8"),
            f("disk", "vdb", "serial", "DISK-B"),
            f("memory", "total", "size", "2147483648"),
            f("cpu", "physical_0", "frequency", "2443000000"),
        ];
        let new = [
            f("disk", "vda", "size", "4"),
            f("memory", "total", "size", "1073741824"),
            f("network", "eth2", "serial", "52:54:00:00:00:03"),
            f("cpu", "physical_0", "frequency", "2445000000"),
        ];
        assert_eq!(
            diff(&old, &new),
            [
                "disk vdb removed (serial DISK-B, size 8)",
                "memory total size: 2147483648 -> 1073741824",
                "network eth2 added (serial 52:54:00:00:00:03)",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
