//! A real machine network-boots: QEMU (TCG) with its own iPXE ROM on a tap
//! device in a network namespace gets its lease from racklift's DHCP server
//! (or, with racklift as proxyDHCP, its address from dnsmasq and its boot
//! script URL from racklift), fetches `/boot.ipxe` over HTTP, and both show up
//! as events on its node.
//!
//! Needs root, iproute2 and qemu-system-x86 with ipxe-qemu
//! (scripts/setup-test-env.sh installs them): without them the test prints
//! SKIP, and fails under CI.

mod common;

use common::netns::Netns;
use common::{Backend, TestServer, peers};
use racklift::config::DhcpMode;
use serde_json::json;
use std::time::{Duration, Instant};

const MAC: &str = "52:54:00:88:00:01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_pxe_boots_from_racklift() {
    if !common::netns::available()
        || !peers::require(
            &["qemu-system-x86_64"],
            "Debian packages qemu-system-x86, ipxe-qemu",
        )
    {
        return;
    }
    let ns = common::netns::with_tap("p");
    let Some(s) = TestServer::start_in(Backend::Sqlite, Some(&ns.name), |c| {
        common::netns::serve_tap_network(c, false)
    })
    .await
    else {
        return;
    };
    s.create(json!({"name": "vm1", "boot_mac": MAC, "bmc": {"driver": "none"}}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let _qemu = qemu(&ns, "tap0", &serial);
    wait_boot(&s, &serial, "ACK 10.88.0.").await;
    let all = s.get("/v1/dhcp/leases").await.1;
    let lease = all
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == MAC)
        .cloned()
        .expect("the machine's lease");
    assert_eq!(lease["state"], "bound");
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(console.contains("iPXE"), "{console}");
    s.finish().await;
}

/// QEMU booting from the network on `tap`, its console in `serial`.
fn qemu(ns: &Netns, tap: &str, serial: &std::path::Path) -> peers::Peer {
    ns.cmd("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
        .args(["-boot", "n"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(peers::Peer)
        .expect("qemu")
}

/// Waits until the node's events show a DHCP answer containing `dhcp` that
/// names the boot script, and the boot script fetched.
async fn wait_boot(s: &TestServer, serial: &std::path::Path, dhcp: &str) {
    let started = Instant::now();
    let (mut answered, mut fetched) = (false, false);
    while !(answered && fetched) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no network boot within 180 s; console:\n{}\nevents: {:#?}",
            std::fs::read_to_string(serial).unwrap_or_default(),
            s.events("vm1").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let events = s.events("vm1").await;
        let texts: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
        answered = texts
            .iter()
            .any(|t| t.starts_with("DHCP ") && t.contains(dhcp) && t.contains("boot.ipxe"));
        fetched = texts
            .iter()
            .any(|t| t.contains(&format!("boot script fetched by {MAC}")));
    }
    eprintln!(
        "network boot to boot script: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let console = std::fs::read_to_string(serial).unwrap_or_default();
    assert!(console.contains("iPXE"), "{console}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_boots_with_racklift_as_proxy_dhcp_beside_dnsmasq() {
    if !common::netns::available()
        || !peers::require(
            &["qemu-system-x86_64", "dnsmasq"],
            "Debian packages qemu-system-x86, ipxe-qemu, dnsmasq-base",
        )
    {
        return;
    }
    // The machine's tap and dnsmasq's veth on one bridge; racklift on the bridge.
    let ns = Netns::new("p");
    let dns = Netns::new("d");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ns.ip(&[
        "link", "add", "rl-sd", "type", "veth", "peer", "name", "rl-d", "netns", &dns.name,
    ]);
    for port in ["tap0", "rl-sd"] {
        ns.ip(&["link", "set", port, "master", "br0"]);
        ns.ip(&["link", "set", port, "up"]);
    }
    ns.ip(&["addr", "add", "10.88.0.1/24", "dev", "br0"]);
    ns.ip(&["link", "set", "br0", "up"]);
    dns.ip(&["addr", "add", "10.88.0.2/24", "dev", "rl-d"]);
    dns.ip(&["link", "set", "rl-d", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let _dnsmasq = common::netns::dnsmasq(&dns, "rl-d", "10.88.0.100,10.88.0.150,10m", dir.path());
    let Some(s) = TestServer::start_in(Backend::Sqlite, Some(&ns.name), |c| {
        c.dhcp.enabled = true;
        c.dhcp.mode = DhcpMode::Proxy;
        c.dhcp.interfaces = vec!["br0".into()];
        c.http.listen = "0.0.0.0:8080".parse().unwrap();
        c.http.public_url = "http://10.88.0.1:8080".into();
    })
    .await
    else {
        return;
    };
    s.create(json!({"name": "vm1", "boot_mac": MAC, "bmc": {"driver": "none"}}))
        .await;
    let serial = dir.path().join("serial.log");
    let _qemu = qemu(&ns, "tap0", &serial);
    wait_boot(&s, &serial, "OFFER").await;
    // The address came from dnsmasq: racklift leased nothing.
    let leases = s.get("/v1/dhcp/leases").await.1;
    assert_eq!(leases, json!([]), "{leases}");
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(console.contains("10.88.0.1"), "{console}");
    s.finish().await;
}
