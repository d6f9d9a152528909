//! A real machine network-boots from racklift alone: QEMU (TCG) with its own
//! iPXE ROM on a tap device in a network namespace gets its lease from
//! racklift's DHCP server, fetches `/boot.ipxe` over HTTP, and both show up as
//! events on its node.
//!
//! Needs root, iproute2 and qemu-system-x86 with ipxe-qemu
//! (scripts/setup-test-env.sh installs them): without them the test prints
//! SKIP, and fails under CI.

mod common;

use common::netns::Netns;
use common::{Backend, TestServer, peers};
use racklift::config::{DhcpMode, SubnetConfig};
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
    let ns = Netns::new("p");
    ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.88.0.1/24", "dev", "tap0"]);
    ns.ip(&["link", "set", "tap0", "up"]);
    let Some(s) = TestServer::start_in(Backend::Sqlite, Some(&ns.name), |c| {
        c.dhcp.enabled = true;
        c.dhcp.mode = DhcpMode::Server;
        c.dhcp.interfaces = vec!["tap0".into()];
        c.dhcp.subnets = vec![SubnetConfig {
            network: "10.88.0.0/24".parse().unwrap(),
            ranges: vec![(
                "10.88.0.100".parse().unwrap(),
                "10.88.0.200".parse().unwrap(),
            )],
            router: None,
            dns_servers: vec![],
            domain: None,
            next_server: None,
            lease_time: Duration::from_secs(600),
            discovery: false,
        }];
        c.http.listen = "0.0.0.0:8080".parse().unwrap();
        c.http.public_url = "http://10.88.0.1:8080".into();
    })
    .await
    else {
        return;
    };
    s.create(json!({"name": "vm1", "boot_mac": MAC, "bmc": {"driver": "none"}}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let _qemu = ns
        .cmd("qemu-system-x86_64")
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
        .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
        .args(["-boot", "n"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(peers::Peer)
        .expect("qemu");
    let started = Instant::now();
    let (mut acked, mut fetched) = (false, false);
    while !(acked && fetched) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no network boot within 180 s; console:\n{}\nevents: {:#?}",
            std::fs::read_to_string(&serial).unwrap_or_default(),
            s.events("vm1").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let events = s.events("vm1").await;
        let texts: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
        acked = texts.iter().any(|t| {
            t.contains("DHCP REQUEST") && t.contains("ACK 10.88.0.") && t.contains("boot.ipxe")
        });
        fetched = texts
            .iter()
            .any(|t| t.contains(&format!("boot script fetched by {MAC}")));
    }
    eprintln!(
        "PXE boot to boot script: {:.1} s",
        started.elapsed().as_secs_f64()
    );
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
