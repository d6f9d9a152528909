//! Firmware power-on to boot script, under QEMU TCG, by every path a machine
//! network-boots: SeaBIOS and OVMF with QEMU's iPXE ROM, EDK2's own PXE
//! client (no ROM on the NIC), and EDK2's UEFI HTTP boot (PXE turned off).
//! Each path is booted from racklift alone (DHCP, TFTP, HTTP), from racklift
//! with its router advertisements off, and from dnsmasq (DHCP, TFTP) with
//! racklift serving only HTTP, in one run; the figure is QEMU's start to the
//! first `GET /boot.ipxe`, which racklift serves in every case.
//!
//! `cargo bench --bench boot` (root, QEMU, OVMF, dnsmasq, Debian's ipxe:
//! scripts/setup-test-env.sh installs them). `RACKLIFT_BENCH_ROUNDS` (default
//! 1) repeats each boot; `RACKLIFT_BENCH_ONLY=seabios,ovmf-pxe,...` picks paths.

mod common;
#[path = "../tests/common/netns.rs"]
mod netns;

use common::{Racklift, peers};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const MAC: &str = "52:54:00:5b:00:01";
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const SERVER: &str = "10.88.0.1";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, PartialEq, Eq)]
enum BootPath {
    SeabiosIpxe,
    OvmfIpxe,
    OvmfPxe,
    OvmfHttp,
}

impl BootPath {
    const ALL: [BootPath; 4] = [
        BootPath::SeabiosIpxe,
        BootPath::OvmfIpxe,
        BootPath::OvmfPxe,
        BootPath::OvmfHttp,
    ];
    fn key(self) -> &'static str {
        match self {
            BootPath::SeabiosIpxe => "seabios",
            BootPath::OvmfIpxe => "ovmf-ipxe",
            BootPath::OvmfPxe => "ovmf-pxe",
            BootPath::OvmfHttp => "ovmf-http",
        }
    }
    fn label(self) -> &'static str {
        match self {
            BootPath::SeabiosIpxe => "SeaBIOS, QEMU's iPXE ROM",
            BootPath::OvmfIpxe => "OVMF, QEMU's iPXE EFI driver",
            BootPath::OvmfPxe => "OVMF, EDK2's PXE (no ROM), ipxe.efi by TFTP",
            BootPath::OvmfHttp => "OVMF, EDK2's HTTP boot (PXE off), ipxe.efi by HTTP",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Racklift,
    RackliftNoRa,
    Dnsmasq,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Racklift => "racklift",
            Server::RackliftNoRa => "racklift, no RA",
            Server::Dnsmasq => "dnsmasq + racklift HTTP",
        }
    }
}

/// `racklift serve` in the namespace: HTTP on 10.88.0.1:8080 (the boot
/// script, `/assets/ipxe/` from `tftp_root`), and DHCP and TFTP on the tap
/// unless dnsmasq serves those.
fn racklift(
    bin: &Racklift,
    ns: &netns::Netns,
    dir: &Path,
    tftp_root: &Path,
    s: Server,
) -> peers::Peer {
    // `/assets/ipxe/` serves the TFTP root in every case (HTTP boot's ipxe.efi).
    let served = s != Server::Dnsmasq;
    let mut tables = format!(
        "[tftp]\nenabled = {served}\nlisten = \"0.0.0.0:69\"\nroot = \"{}\"\n",
        tftp_root.display()
    );
    if served {
        tables.push_str(&format!(
            "[dhcp]\nenabled = true\ninterfaces = [\"tap0\"]\nrouter_advertisements = {ra}\n\
             [[dhcp.subnet]]\nnetwork = \"10.88.0.0/24\"\nranges = [\"10.88.0.100-10.88.0.200\"]\ndiscovery = true\nlease_time = \"1h\"\n",
            ra = s == Server::Racklift,
        ));
    }
    let cfg = dir.join("racklift.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{d}/data\"\nprofiles = {{ dir = \"{d}/profiles\" }}\n\
             [http]\nlisten = \"0.0.0.0:8080\"\npublic_url = \"http://{SERVER}:8080\"\n\
             [discovery]\nenabled = true\n[log]\nlevel = \"warn\"\n{tables}",
            d = dir.display()
        ),
    )
    .unwrap();
    bin.serve_by(ns.cmd(&bin.path), &cfg)
}

/// dnsmasq as the DHCP and TFTP server of the tap, configured as its manual
/// says for each client: iPXE (user class) gets the boot script's URL, an
/// HTTP-boot client `ipxe.efi` by URL, an x64 UEFI PXE client `ipxe.efi`.
fn dnsmasq(ns: &netns::Netns, dir: &Path, tftp_root: &Path) -> peers::Peer {
    ns.cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--port=0",
            "--interface=tap0",
            "--bind-interfaces",
            "--no-ping",
            "--no-resolv",
            "--no-hosts",
            "--dhcp-authoritative",
            "--dhcp-range=10.88.0.100,10.88.0.200,1h",
            "--dhcp-userclass=set:ipxe,iPXE",
            "--dhcp-vendorclass=set:http,HTTPClient",
            "--dhcp-match=set:efi64,option:client-arch,7",
            "--dhcp-option-force=tag:http,60,HTTPClient",
            "--enable-tftp",
        ])
        .arg(format!("--tftp-root={}", tftp_root.display()))
        .arg(format!(
            "--dhcp-boot=tag:ipxe,http://{SERVER}:8080/boot.ipxe?mac={MAC}"
        ))
        .arg(format!(
            "--dhcp-boot=tag:http,tag:!ipxe,http://{SERVER}:8080/assets/ipxe/ipxe.efi"
        ))
        .arg("--dhcp-boot=tag:efi64,tag:!ipxe,tag:!http,ipxe.efi")
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(peers::Peer)
        .expect("dnsmasq")
}

fn qemu(ns: &netns::Netns, path: BootPath) -> peers::Peer {
    let mut cmd = ns.cmd("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-smp", "2", "-m", "1024"])
        .args(["-display", "none", "-vga", "none", "-monitor", "none"])
        .args(["-serial", "null", "-no-reboot", "-boot", "n"])
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"]);
    if path != BootPath::SeabiosIpxe {
        cmd.args(["-bios", OVMF]);
    }
    let rom = match path {
        BootPath::OvmfPxe | BootPath::OvmfHttp => ",romfile=",
        _ => "",
    };
    cmd.args([
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={MAC}{rom}"),
    ]);
    if path == BootPath::OvmfHttp {
        for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
            cmd.args([
                "-fw_cfg",
                &format!("name=opt/org.tianocore/{knob},string=no"),
            ]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(peers::Peer)
        .expect("qemu")
}

/// How many boot scripts racklift has served, from its `/metrics` (read
/// inside the namespace with the admin token).
fn scripts_served(token: &str) -> Option<u64> {
    let mut c = std::net::TcpStream::connect((SERVER, 8080)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        c,
        "GET /metrics HTTP/1.0\r\nHost: {SERVER}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    if !body.starts_with("HTTP/1.1 200") && !body.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| {
                l.starts_with("racklift_http_requests_total{method=\"GET\",route=\"/boot.ipxe\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// One boot: seconds from QEMU's start to racklift's first boot script.
fn boot(bin: &Racklift, path: BootPath, server: Server) -> Option<f64> {
    let ns = netns::with_tap("bt");
    let dir = tempfile::tempdir().unwrap();
    let tftp_root = dir.path().join("tftp");
    std::fs::create_dir_all(&tftp_root).unwrap();
    let ipxe = std::fs::canonicalize("/usr/lib/ipxe/ipxe.efi").expect("ipxe.efi (package ipxe)");
    std::fs::copy(&ipxe, tftp_root.join("ipxe.efi")).unwrap();
    let _racklift = racklift(bin, &ns, dir.path(), &tftp_root, server);
    let _dnsmasq = (server == Server::Dnsmasq).then(|| dnsmasq(&ns, dir.path(), &tftp_root));
    let data = dir.path().to_path_buf();
    let name = ns.name.clone();
    // Up and answering before the machine starts.
    let started = Instant::now();
    let token = loop {
        let t = common::admin_token(&data);
        if !t.is_empty() {
            let t2 = t.clone();
            if netns::run_in(&name, move || scripts_served(&t2)) == Some(0) {
                break t;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "racklift did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    if server == Server::Dnsmasq {
        std::thread::sleep(Duration::from_millis(500));
    }
    let _vm = qemu(&ns, path);
    let t0 = Instant::now();
    netns::run_in(&name, move || {
        while t0.elapsed() < BOOT_TIMEOUT {
            if scripts_served(&token).is_some_and(|n| n > 0) {
                return Some(t0.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    })
}

fn main() {
    if !netns::available()
        || !peers::require(
            &["qemu-system-x86_64", "dnsmasq"],
            "Debian packages qemu-system-x86, ovmf, dnsmasq-base, ipxe",
        )
    {
        return;
    }
    let rounds: usize = std::env::var("RACKLIFT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let only = std::env::var("RACKLIFT_BENCH_ONLY").unwrap_or_default();
    let bin = common::binaries().pop().expect("this build");
    let servers = [Server::Racklift, Server::RackliftNoRa, Server::Dnsmasq];
    println!("QEMU start to first boot script (s), TCG, {rounds} round(s)\n");
    println!(
        "| path | {} |\n|---|{}",
        servers.map(Server::label).join(" | "),
        "---|".repeat(servers.len())
    );
    for path in BootPath::ALL {
        if !only.is_empty() && !only.split(',').any(|k| k == path.key()) {
            continue;
        }
        let mut cells = Vec::new();
        for server in servers {
            let times: Vec<String> = (0..rounds)
                .map(|_| match boot(&bin, path, server) {
                    Some(t) => format!("{t:.1}"),
                    None => "no boot".into(),
                })
                .collect();
            cells.push(times.join(" / "));
        }
        println!("| {} | {} |", path.label(), cells.join(" | "));
    }
}
