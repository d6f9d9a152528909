//! End to end: the real ramdisk (Debian's kernel, busybox, the static
//! racklift-agent) boots in QEMU (TCG, 2 vCPUs, 1 GiB, two virtio disks of 4
//! and 8 GiB with serials, two NICs) by direct kernel boot, reaches a real
//! racklift server at 10.0.2.2 (QEMU's user network maps it to the host's
//! loopback), and the machine appears in the API as it is. The VM has QEMU's
//! simulated BMC on a KCS interface, which the agent asks through /dev/ipmi0.
//! Once under SeaBIOS as an inspection of an enrolled node, once under OVMF
//! (UEFI) as the discovery of an unknown machine; then the whole way over the
//! network from a tap in a namespace, by every path a firmware takes: QEMU's
//! iPXE ROM (SeaBIOS and OVMF), EDK2's own PXE client with no ROM on the NIC,
//! and EDK2's UEFI HTTP boot with PXE turned off, the last two also with
//! racklift as proxyDHCP beside dnsmasq.
//!
//! Needs qemu-system-x86_64, Debian's ovmf and the ramdisk built by
//! boot-assets/build-ramdisk.sh (or in RACKLIFT_RAMDISK_DIR). Without them the
//! tests are skipped with the reason, except under CI where they fail. The
//! timings printed (QEMU start to init, to network, to inventory stored; the
//! agent's own run) are reported in docs/PERFORMANCE.md.

mod common;

use common::TestServer;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Hard limit for one VM's life (TCG on a shared machine is slow).
const VM_TIMEOUT: Duration = Duration::from_secs(300);
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const MAC1: &str = "52:54:00:5a:00:01";
const MAC2: &str = "52:54:00:5a:00:02";

/// One VM at a time: two TCG guests on a small machine starve each other.
static ONE_VM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Ramdisk {
    kernel: PathBuf,
    initrd: PathBuf,
}

/// The ramdisk and QEMU (and OVMF when asked), or the reason to skip.
fn prerequisites(uefi: bool) -> Option<Ramdisk> {
    let dir = std::env::var("RACKLIFT_RAMDISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("boot-assets/ramdisk"));
    let r = Ramdisk {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    let missing = if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".to_string())
    } else if !r.kernel.exists() || !r.initrd.exists() {
        Some(format!(
            "no ramdisk in {} (run boot-assets/build-ramdisk.sh)",
            dir.display()
        ))
    } else if uefi && !Path::new(OVMF).exists() {
        Some(format!("{OVMF} is missing (Debian: ovmf)"))
    } else {
        None
    };
    match missing {
        None => Some(r),
        Some(why) if common::in_ci() => panic!("QEMU test cannot run in CI: {why}"),
        Some(why) => {
            eprintln!("SKIP: {why}");
            None
        }
    }
}

/// A running VM; killed when dropped.
struct Vm {
    child: Child,
    started: Instant,
    /// Console lines with the time they arrived.
    console: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the VM gets its ramdisk.
enum Start<'a> {
    /// QEMU loads the kernel and initrd itself; user-mode networking.
    Kernel { r: &'a Ramdisk, append: &'a str },
    /// Network boot from the tap `tap0` inside the namespace `ns`, where
    /// racklift serves DHCP, TFTP and HTTP: through QEMU's iPXE ROM, or
    /// (`rom: false`) through the firmware's own PXE client alone.
    Pxe { ns: &'a str, via: Via },
}

/// How a machine network-boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// QEMU's iPXE option ROM on the NIC (SeaBIOS), or its EFI driver (OVMF).
    IpxeRom,
    /// The firmware's own PXE client (no option ROM): EDK2's, under OVMF.
    FirmwarePxe,
    /// The firmware's own UEFI HTTP boot, PXE turned off in its settings
    /// (OVMF's `opt/org.tianocore/IPv4PXESupport` and `IPv6PXESupport`).
    FirmwareHttp,
}

impl Vm {
    fn boot(r: &Ramdisk, dir: &Path, uefi: bool, serial: &str, append: &str) -> Vm {
        Vm::start(dir, uefi, serial, Start::Kernel { r, append })
    }

    fn start(dir: &Path, uefi: bool, serial: &str, how: Start<'_>) -> Vm {
        // QEMU's simulated BMC on a KCS interface: the kernel's IPMI driver
        // finds it, and the agent talks to it through /dev/ipmi0.
        let bmc = [
            "-device",
            "ipmi-bmc-sim,id=bmc0",
            "-device",
            "isa-ipmi-kcs,bmc=bmc0",
        ];
        for (name, gib) in [("disk-a.raw", 4u64), ("disk-b.raw", 8)] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            f.set_len(gib << 30).unwrap(); // sparse
        }
        let mut cmd = match how {
            Start::Pxe { ns, .. } => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            Start::Kernel { .. } => std::process::Command::new("qemu-system-x86_64"),
        };
        cmd.args(["-accel", "tcg", "-smp", "2", "-m", "1024"])
            .args(["-display", "none", "-vga", "none", "-monitor", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .args(["-smbios", &format!("type=1,serial={serial}")])
            .args(bmc);
        if uefi {
            cmd.args(["-bios", OVMF]);
        }
        match how {
            Start::Kernel { r, append } => {
                cmd.arg("-kernel")
                    .arg(&r.kernel)
                    .arg("-initrd")
                    .arg(&r.initrd)
                    .args(["-append", append])
                    .args(["-netdev", "user,id=n0"]);
            }
            Start::Pxe { .. } => {
                cmd.args(["-boot", "n"])
                    .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"]);
            }
        }
        for (i, (name, serial)) in [("disk-a.raw", "RL-DISK-A"), ("disk-b.raw", "RL-DISK-B")]
            .iter()
            .enumerate()
        {
            cmd.arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=d{i}",
                    dir.join(name).display()
                ))
                .args([
                    "-device",
                    &format!("virtio-blk-pci,drive=d{i},serial={serial}"),
                ]);
        }
        // An empty romfile leaves the NIC without QEMU's iPXE option ROM.
        let rom = match how {
            Start::Pxe {
                via: Via::FirmwarePxe | Via::FirmwareHttp,
                ..
            } => ",romfile=",
            _ => "",
        };
        if let Start::Pxe {
            via: Via::FirmwareHttp,
            ..
        } = how
        {
            for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                cmd.args([
                    "-fw_cfg",
                    &format!("name=opt/org.tianocore/{knob},string=no"),
                ]);
            }
        }
        cmd.args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={MAC1}{rom}"),
        ])
        .args(["-netdev", "user,id=n1,restrict=on"])
        .args(["-device", &format!("e1000,netdev=n1,mac={MAC2}")]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("qemu starts");
        let console = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let c = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                c.lock().unwrap().push((started.elapsed(), line));
            }
        });
        Vm {
            child,
            started,
            console,
        }
    }

    /// When the console first showed a line containing `what`.
    fn seen(&self, what: &str) -> Option<Duration> {
        self.console
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(what))
            .map(|(t, _)| *t)
    }

    /// Waits until `node` has an inventory; returns it and when it was seen.
    async fn inventory_of(&mut self, s: &TestServer, node: &str) -> (Value, Duration) {
        let path = format!("/v1/nodes/{node}/inventory");
        let inv = self
            .until(&format!("an inventory for {node}"), async || {
                let (st, inv) = s.get(&path).await;
                (st == 200).then_some(inv)
            })
            .await;
        (inv, self.started.elapsed())
    }

    /// Waits for the guest to power itself off (QEMU exits with -no-reboot).
    async fn powered_off(&mut self) {
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            assert!(
                self.started.elapsed() < VM_TIMEOUT,
                "the VM did not power off; console:\n{}",
                self.console_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn console_text(&self) -> String {
        self.console
            .lock()
            .unwrap()
            .iter()
            .map(|(t, l)| format!("{:7.2} {l}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `check` until it gives a value; panics with the console after the hard timeout.
    async fn until<T>(&mut self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if self.started.elapsed() > VM_TIMEOUT {
                panic!(
                    "{what}: not within {VM_TIMEOUT:?}; console:\n{}",
                    self.console_text()
                );
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{what}: QEMU exited ({st}); console:\n{}",
                    self.console_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn append(s: &TestServer, token: &str) -> String {
    let port = s.url.rsplit(':').next().unwrap();
    format!(
        "console=ttyS0 quiet racklift.api=http://10.0.2.2:{port} racklift.token={token} BOOTIF=01-{}",
        MAC1.replace(':', "-")
    )
}

/// What a user checks of the machine as the API shows it.
fn check_inventory(inv: &Value, boot_mode: &str) {
    assert_eq!(inv["cpu"]["threads"], 2, "{inv}");
    assert_eq!(inv["memory"]["total_bytes"], 1u64 << 30);
    let disks: Vec<(String, u64, String)> = inv["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["size_bytes"].as_u64().unwrap(),
                d["serial"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [
            ("vda".to_string(), 4u64 << 30, "RL-DISK-A".to_string()),
            ("vdb".to_string(), 8u64 << 30, "RL-DISK-B".to_string())
        ]
    );
    // Kernel names follow driver load order: compare by MAC.
    let mut macs: Vec<(&str, bool)> = inv["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["mac"].as_str().unwrap(), n["booted"].as_bool().unwrap()))
        .collect();
    macs.sort();
    assert_eq!(macs, [(MAC1, true), (MAC2, false)]);
    assert_eq!(inv["system"]["boot_mode"], boot_mode);
}

/// The node's events once the agent's own account of its run is among them
/// (its log lines may land after the node's state changed).
async fn agent_lines(vm: &mut Vm, s: &TestServer, node: &str) -> Vec<Value> {
    vm.until("the agent's log lines", async || {
        let events = s.events(node).await;
        events
            .iter()
            .any(|e| {
                e["kind"] == "agent"
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("inventory stored"))
            })
            .then_some(events)
    })
    .await
}

/// Prints the figures of one boot.
fn report(label: &str, vm: &Vm, stored: Duration, inv: &Value, events: &[Value]) {
    let agent_line = events
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .find(|r| r.starts_with("inventory stored"))
        .unwrap_or("(no agent line)");
    eprintln!(
        "{label}: init at {:.1} s, drivers at {:.1} s, network at {:.1} s, inventory stored at {:.1} s \
         after QEMU start; agent: collection {} ms; {agent_line}",
        vm.seen("racklift-ramdisk: init started")
            .unwrap_or_default()
            .as_secs_f64(),
        vm.seen("racklift-ramdisk: drivers loaded")
            .unwrap_or_default()
            .as_secs_f64(),
        vm.seen("racklift-ramdisk: network")
            .unwrap_or_default()
            .as_secs_f64(),
        stored.as_secs_f64(),
        inv["agent"]["collect_ms"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_of_a_seabios_vm() {
    let Some(r) = prerequisites(false) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let Some(s) = TestServer::start(common::Backend::Sqlite, |c| {
        c.conductor.timeouts.inspect = VM_TIMEOUT;
    })
    .await
    else {
        return;
    };
    s.create(
        json!({"name": "vm-bios", "boot_mac": MAC1, "macs": [MAC1, MAC2],
        "bmc": {"driver": "fake", "address": "10.9.9.1", "username": "u", "password": "p"}}),
    )
    .await;
    assert_eq!(s.act("vm-bios", "manage").await.0, 202);
    s.wait_state("vm-bios", "manageable").await;
    assert_eq!(s.act("vm-bios", "inspect").await.0, 202);
    let token = s.boot_token(MAC1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot(&r, dir.path(), false, "RL-VM-BIOS", &append(&s, &token));
    let (inv, stored) = vm.inventory_of(&s, "vm-bios").await;
    check_inventory(&inv, "bios");
    assert_eq!(inv["system"]["serial"], "RL-VM-BIOS");
    // QEMU's BMC answers over /dev/ipmi0 but has no LAN configuration
    // (completion code 0xc1, command not supported): no BMC section, a note.
    assert_eq!(inv["bmc"], Value::Null);
    assert!(
        inv["agent"]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("completion code 0xc1")),
        "{}",
        inv["agent"]
    );
    vm.until("inspection done", async || {
        (s.node("vm-bios").await["state"] == "manageable").then_some(())
    })
    .await;
    let events = agent_lines(&mut vm, &s, "vm-bios").await;
    report("SeaBIOS", &vm, stored, &inv, &events);
    drop(vm);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_of_a_uefi_vm() {
    let Some(r) = prerequisites(true) else { return };
    let _one = ONE_VM.lock().await;
    let Some(s) = TestServer::start(common::Backend::Sqlite, |c| c.discovery.enabled = true).await
    else {
        return;
    };
    let script = s.boot_script(MAC1).await;
    let token = common::script_token(&script).unwrap_or_else(|| panic!("{script}"));
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::boot(&r, dir.path(), true, "RL-VM-UEFI", &append(&s, &token));
    let (inv, stored) = vm.inventory_of(&s, "rl-vm-uefi").await;
    check_inventory(&inv, "uefi");
    assert_eq!(inv["system"]["secure_boot"], false);
    let n = s.node("rl-vm-uefi").await;
    assert_eq!(n["state"], "enrolled");
    assert_eq!(n["macs"], json!([MAC1, MAC2]));
    // Enrolled: the agent is told to power off, and the VM does.
    let events = agent_lines(&mut vm, &s, "rl-vm-uefi").await;
    vm.powered_off().await;
    report("OVMF", &vm, stored, &inv, &events);
    drop(vm);
    s.finish().await;
}

/// The whole way, as in a rack: an unknown machine powered on in a network
/// namespace where racklift alone serves DHCP (discovery on for the subnet),
/// TFTP and HTTP. QEMU's iPXE ROM gets its lease and the boot script URL,
/// racklift answers with the discovery ramdisk, the kernel and initrd come
/// over HTTP, the agent posts the inventory, and the machine is enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_discovery_through_racklift_dhcp() {
    pxe_discovery(false, Via::IpxeRom, false).await;
}

/// The same under UEFI (OVMF, with the iPXE EFI driver of QEMU's NIC ROM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_discovery_through_racklift_dhcp_uefi() {
    pxe_discovery(true, Via::IpxeRom, false).await;
}

/// The same with EDK2's own PXE client and no iPXE ROM on the NIC: the
/// firmware takes racklift's plain DHCP offer, loads `ipxe.efi` over
/// racklift's TFTP, and that iPXE asks again and chains the boot script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_discovery_through_edk2s_own_pxe_client() {
    pxe_discovery(true, Via::FirmwarePxe, false).await;
}

/// EDK2's own PXE client again, with racklift as proxyDHCP beside dnsmasq,
/// which alone hands out addresses: the firmware takes dnsmasq's address and
/// racklift's boot file, and so do the iPXE it loads and the ramdisk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_discovery_through_edk2s_own_pxe_client_by_proxy_dhcp() {
    if !common::peers::require(&["dnsmasq"], "Debian package dnsmasq-base") {
        return;
    }
    pxe_discovery(true, Via::FirmwarePxe, true).await;
}

/// OVMF with PXE turned off boots by UEFI HTTP boot: racklift's offer to
/// the `HTTPClient` names `ipxe.efi` by URL, the firmware downloads it from
/// racklift's HTTP server, and that iPXE chains the boot script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_discovery_through_edk2s_own_http_client() {
    pxe_discovery(true, Via::FirmwareHttp, false).await;
}

/// UEFI HTTP boot with racklift as proxyDHCP beside dnsmasq: the address
/// from dnsmasq, the boot URL from racklift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_discovery_through_edk2s_own_http_client_by_proxy_dhcp() {
    if !common::peers::require(&["dnsmasq"], "Debian package dnsmasq-base") {
        return;
    }
    pxe_discovery(true, Via::FirmwareHttp, true).await;
}

async fn pxe_discovery(uefi: bool, via: Via, proxy: bool) {
    let rom = via == Via::IpxeRom;
    if !common::netns::available() {
        return;
    }
    let Some(_) = prerequisites(uefi) else {
        return;
    };
    let _one = ONE_VM.lock().await;
    let ns = common::netns::with_tap("q");
    let dnsmasq_dir = tempfile::tempdir().unwrap();
    let (_dnsmasq, _dns_ns) = if proxy {
        let (peer, dns) = common::netns::dnsmasq_beside_tap(&ns, dnsmasq_dir.path());
        (Some(peer), Some(dns))
    } else {
        (None, None)
    };
    // The TFTP root holds a copy of the iPXE binary (Debian's ipxe.efi is a
    // symlink out of its directory, which the TFTP server does not follow).
    let tftp_root = tempfile::tempdir().unwrap();
    if !rom {
        let ipxe =
            std::fs::canonicalize("/usr/lib/ipxe/ipxe.efi").expect("ipxe.efi (package ipxe)");
        std::fs::copy(&ipxe, tftp_root.path().join("ipxe.efi")).unwrap();
    }
    let root = tftp_root.path().to_path_buf();
    let Some(s) = TestServer::start_in(common::Backend::Sqlite, Some(&ns.name), move |c| {
        common::netns::serve_tap_network(c, true);
        if proxy {
            c.dhcp.mode = racklift::config::DhcpMode::Proxy;
            c.dhcp.interfaces = vec!["br0".into()];
            // The link has no IPv6 router: the operator turns them on.
            c.dhcp.router_advertisements = true;
        }
        if !rom {
            c.tftp.enabled = true;
            c.tftp.listen = "0.0.0.0:69".parse().unwrap();
            c.tftp.root = root;
        }
        c.boot.kernel_args = "console=ttyS0 quiet".into();
        // For docs/PERFORMANCE.md: the same boot without router advertisements.
        if std::env::var("RACKLIFT_QEMU_RA").as_deref() == Ok("off") {
            c.dhcp.router_advertisements = false;
        }
        if let Ok(dir) = std::env::var("RACKLIFT_RAMDISK_DIR") {
            c.boot.ramdisk_dir = dir.into();
        } else {
            c.boot.ramdisk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot-assets/ramdisk");
        }
    })
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(
        dir.path(),
        uefi,
        "RL-VM-PXE",
        Start::Pxe { ns: &ns.name, via },
    );
    let (inv, stored) = vm.inventory_of(&s, "rl-vm-pxe").await;
    check_inventory(&inv, if uefi { "uefi" } else { "bios" });
    let n = s.node("rl-vm-pxe").await;
    assert_eq!(n["macs"], json!([MAC1, MAC2]));
    let events = agent_lines(&mut vm, &s, "rl-vm-pxe").await;
    let texts: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    // Once enrolled, its next DHCP exchange (the ramdisk's) is on its node.
    assert!(
        texts.iter().any(|t| t.contains("inventory stored")),
        "{texts:#?}"
    );
    let leases = s.get("/v1/dhcp/leases").await.1;
    let bound = leases
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["mac"] == MAC1 && l["state"] == "bound");
    // By proxy, the addresses are dnsmasq's: racklift leases none.
    assert_eq!(bound, !proxy, "{leases}");
    if proxy {
        let leased = std::fs::read_to_string(dnsmasq_dir.path().join("dnsmasq.leases")).unwrap();
        assert!(leased.contains(MAC1), "dnsmasq leased: {leased}");
    }
    vm.powered_off().await;
    // The firmware fetched ipxe.efi from racklift: over TFTP by PXE, over
    // HTTP by HTTP boot (and then not over TFTP).
    let metrics = s.metrics().await;
    let transfers = common::counter(&metrics, "racklift_tftp_transfers_total");
    let by_http = common::counter(
        &metrics,
        "racklift_http_requests_total{method=\"GET\",route=\"/assets/ipxe/*\",status=\"200\"}",
    );
    match via {
        Via::IpxeRom => {}
        Via::FirmwarePxe => assert!(transfers >= 1, "no TFTP transfer counted:\n{metrics}"),
        Via::FirmwareHttp => assert!(
            transfers == 0 && by_http >= 1,
            "ipxe.efi not over HTTP alone:\n{metrics}"
        ),
    }
    let label = match (uefi, via, proxy) {
        (true, Via::IpxeRom, _) => "PXE (OVMF, iPXE EFI driver, racklift DHCP+HTTP)",
        (true, Via::FirmwarePxe, false) => {
            "PXE (OVMF's own PXE client, ipxe.efi over racklift TFTP, DHCP+HTTP)"
        }
        (true, Via::FirmwarePxe, true) => {
            "PXE (OVMF's own PXE client, dnsmasq DHCP, racklift proxyDHCP+TFTP+HTTP)"
        }
        (true, Via::FirmwareHttp, false) => {
            "HTTP boot (OVMF's own HTTP client, ipxe.efi over racklift HTTP, DHCP+HTTP)"
        }
        (true, Via::FirmwareHttp, true) => {
            "HTTP boot (OVMF's own HTTP client, dnsmasq DHCP, racklift proxyDHCP+HTTP)"
        }
        _ => "PXE (SeaBIOS, iPXE ROM, racklift DHCP+HTTP)",
    };
    report(label, &vm, stored, &inv, &events);
    drop(vm);
    s.finish().await;
}
