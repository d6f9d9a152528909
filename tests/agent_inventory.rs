//! racklift-agent's collectors on captured machines: QEMU VMs under SeaBIOS
//! and OVMF (captured from the real ramdisk with `racklift.capture`) and a two-socket server with
//! NVMe, a RAID volume and bonded NICs (built by make-server-fixture.py). Each
//! must give exactly its expected inventory, and facts the profiles can match.

use racklift::agent::{Root, collect};
use racklift::profiles::matcher::Facts;
use racklift::protocol::Fact;
use racklift::protocol::{Inventory, facts};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(name)
}

fn collected(name: &str, bootif: &str) -> Inventory {
    collect::inventory(&Root::new(fixture(name)), Some(bootif))
}

fn expected(name: &str) -> Inventory {
    let text = std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap();
    let mut inv: Inventory = serde_json::from_str(&text).unwrap();
    inv.agent.version = env!("CARGO_PKG_VERSION").into();
    inv
}

#[test]
fn qemu_vm_inventory_is_exact() {
    let inv = collected("qemu-seabios", "01-52-54-00-12-34-01");
    assert_eq!(inv, expected("qemu-seabios"));
    // What an operator checks.
    assert_eq!(inv.system.serial.as_deref(), Some("QEMU-SN-0001"));
    assert_eq!(inv.system.boot_mode, "bios");
    assert_eq!((inv.cpu.sockets, inv.cpu.threads), (1, 2));
    assert_eq!(inv.memory.total_bytes, 1 << 30);
    let disks: Vec<(&str, u64, Option<&str>)> = inv
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.size_bytes, d.serial.as_deref()))
        .collect();
    assert_eq!(
        disks,
        [
            ("vda", 4 << 30, Some("DISK-A")),
            ("vdb", 8 << 30, Some("DISK-B"))
        ]
    );
    assert_eq!(inv.boot_mac(), Some("52:54:00:12:34:01"));
    assert_eq!(inv.nics[1].driver.as_deref(), Some("e1000"));
    assert!(inv.bmc.is_none());
}

#[test]
fn qemu_uefi_vm_inventory_is_exact() {
    let inv = collected("qemu-ovmf", "01-52-54-00-12-34-01");
    assert_eq!(inv, expected("qemu-ovmf"));
    assert_eq!(
        (inv.system.boot_mode.as_str(), inv.system.secure_boot),
        ("uefi", Some(false))
    );
    assert_eq!(
        inv.system.bios_vendor.as_deref(),
        Some("EFI Development Kit II / OVMF")
    );
}

#[test]
fn server_inventory_is_exact() {
    let inv = collected("server-2s-nvme-raid-bond", "01-e4-43-4b-aa-00-01");
    assert_eq!(inv, expected("server-2s-nvme-raid-bond"));
    assert_eq!(
        (inv.system.boot_mode.as_str(), inv.system.secure_boot),
        ("uefi", Some(true))
    );
    assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (2, 4, 8));
    assert_eq!(inv.cpu.virtualization.as_deref(), Some("vmx"));
    assert_eq!(inv.cpu.mhz, Some(3900));
    assert_eq!(inv.memory.total_bytes, 64 << 30);
    assert_eq!(inv.memory.dimms.len(), 2, "empty slots are not DIMMs");
    // loop0 and zram0 are skipped; stable names are derived without udev.
    let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "sda"]);
    let raid = &inv.disks[1];
    assert_eq!(
        raid.by_path.as_deref(),
        Some("pci-0000:3b:00.0-scsi-0:2:0:0")
    );
    assert_eq!(
        raid.wwn.as_deref(),
        Some("0x6f4ee0806b1b2c0029a1b2c3d4e5f607")
    );
    assert_eq!(raid.driver.as_deref(), Some("sd"));
    assert!(raid.rotational && !inv.disks[0].rotational);
    assert_eq!(
        inv.disks[0].by_path.as_deref(),
        Some("pci-0000:5e:00.0-nvme-1")
    );
    // Bond members report their own permanent MACs, not the bond's.
    let macs: Vec<(&str, &str, Option<&str>)> = inv
        .nics
        .iter()
        .map(|n| (n.name.as_str(), n.mac.as_str(), n.bond.as_deref()))
        .collect();
    assert_eq!(
        macs,
        [
            ("eno1", "e4:43:4b:aa:00:01", Some("bond0")),
            ("eno2", "e4:43:4b:aa:00:02", Some("bond0")),
            ("ens1f0", "3c:fd:fe:bb:00:10", None),
        ]
    );
    assert_eq!(inv.nics[2].link, Some(false));
    assert_eq!(inv.bonds[0].mode.as_deref(), Some("802.3ad"));
    assert_eq!(inv.boot_mac(), Some("e4:43:4b:aa:00:01"));
}

#[test]
fn facts_speak_edeploy_and_match_the_shipped_profiles() {
    let inv = collected("server-2s-nvme-raid-bond", "01-e4-43-4b-aa-00-01");
    let f = facts::facts(&inv);
    for want in [
        Fact::new("system", "product", "vendor", "Dell Inc."),
        Fact::new("system", "product", "serial", "4N4ZQ42"),
        Fact::new("firmware", "bios", "version", "2.19.1"),
        Fact::new("firmware", "boot", "mode", "uefi"),
        Fact::new("cpu", "physical", "number", "2"),
        Fact::new("cpu", "logical", "number", "8"),
        Fact::new(
            "cpu",
            "physical_0",
            "product",
            "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
        ),
        Fact::new("cpu", "physical_1", "cores", "2"),
        Fact::new("memory", "total", "size", "68719476736"),
        Fact::new("memory", "bank:0", "clock", "2933000000"),
        Fact::new("disk", "sda", "size", "1999"),
        Fact::new("disk", "nvme0n1", "size", "1600"),
        Fact::new("network", "eno2", "serial", "e4:43:4b:aa:00:02"),
        Fact::new("network", "eno1", "businfo", "pci@0000:19:00.0"),
        Fact::new("network", "eno1", "link", "yes"),
        Fact::new("network", "eno1", "boot", "yes"),
        Fact::new("network", "eno1", "bond", "bond0"),
    ] {
        assert!(f.contains(&want), "missing {want:?}");
    }
    // The compute profile (two Xeon sockets, a disk of 200 GB or more) matches
    // this server and not the single-socket VM.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let profiles = racklift::profiles::load_dir(&dir).unwrap();
    let compute: Vec<_> = profiles
        .iter()
        .filter(|p| p.name == "compute")
        .cloned()
        .collect();
    let v = racklift::profiles::evaluate(&compute, &Facts::new(f));
    assert!(v[0].matched, "{:?}", v[0]);
    let vm = facts::facts(&collected("qemu-seabios", "01-52-54-00-12-34-01"));
    let v = racklift::profiles::evaluate(&compute, &Facts::new(vm));
    assert!(!v[0].matched);
}

#[test]
fn a_missing_tree_gives_an_empty_inventory_not_a_panic() {
    let inv = collect::inventory(&Root::new("/nonexistent-root"), None);
    assert!(inv.disks.is_empty() && inv.nics.is_empty());
    assert_eq!(inv.system.boot_mode, "bios");
    assert_eq!(inv.cpu.threads, 0);
}
