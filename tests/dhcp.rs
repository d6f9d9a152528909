//! The DHCP server against real clients on a veth link between two network
//! namespaces: busybox udhcpc and ISC dhclient get leases, options and boot
//! files; an enrolled node gets its fixed address; a client written here sends
//! DECLINE and hostile packets; a second racklift process on the same
//! PostgreSQL database never hands out an address the first one leased; and
//! racklift as proxyDHCP beside dnsmasq gives the boot file while dnsmasq gives
//! the address; and ndisc6's rdisc6 solicits a router and hears racklift's
//! advertisement of none (server mode) or nothing (proxy mode).
//!
//! Needs root, iproute2, udhcpc, dhclient and dnsmasq (scripts/setup-test-env.sh
//! installs them): without them the tests print SKIP, and fail under CI.

mod common;

use common::netns::{Link, Netns};
use common::{Backend, TestServer, peers};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use racklift::config::{Config, DhcpMode, SubnetConfig};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVER: &str = "10.77.0.1";

fn ready(programs: &[&str]) -> bool {
    common::netns::available()
        && peers::require(
            programs,
            "Debian packages udhcpc, isc-dhcp-client, dnsmasq-base",
        )
}

fn subnet(discovery: bool) -> SubnetConfig {
    SubnetConfig {
        network: "10.77.0.0/16".parse().unwrap(),
        ranges: vec![(
            "10.77.1.10".parse().unwrap(),
            "10.77.1.250".parse().unwrap(),
        )],
        router: Some(SERVER.parse().unwrap()),
        dns_servers: vec!["10.77.0.53".parse().unwrap()],
        domain: Some("lab.example".into()),
        next_server: None,
        lease_time: Duration::from_secs(3600),
        discovery,
    }
}

/// racklift serving DHCP on `rl-s`, its HTTP API on 10.77.0.1:8080 inside the namespace.
fn serve_dhcp(cfg: &mut Config, mode: DhcpMode, iface: &str, subnets: Vec<SubnetConfig>) {
    cfg.dhcp.enabled = true;
    cfg.dhcp.mode = mode;
    cfg.dhcp.interfaces = vec![iface.to_string()];
    cfg.dhcp.subnets = subnets;
    cfg.http.listen = "0.0.0.0:8080".parse().unwrap();
    cfg.http.public_url = format!("http://{SERVER}:8080");
}

/// A udhcpc script that records each event's environment in `dir/<event>`
/// and configures the address (inside the client namespace only).
fn udhcpc_script(dir: &Path) -> String {
    let path = dir.join("udhcpc.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  bound|renew)\n    ip addr flush dev \"$interface\"\n    ip addr add \"$ip/$subnet\" dev \"$interface\"\n    env > {dir}/\"$1\".tmp && mv {dir}/\"$1\".tmp {dir}/\"$1\" ;;\nesac\nexit 0\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One udhcpc run in the client namespace with `mac`: the `bound`
/// environment, or None when no lease came.
fn udhcpc(link: &Link, mac: &str, extra: &[&str]) -> Option<HashMap<String, String>> {
    link.set_client_mac(mac);
    let dir = tempfile::tempdir().unwrap();
    let script = udhcpc_script(dir.path());
    let out = link
        .cli
        .cmd("udhcpc")
        .args([
            "-i", "rl-c", "-n", "-q", "-f", "-t", "3", "-T", "1", "-A", "1", "-s", &script,
        ])
        .args(extra)
        .output()
        .expect("run udhcpc");
    if !out.status.success() {
        return None;
    }
    Some(env_file(&dir.path().join("bound")))
}

async fn leases(s: &TestServer) -> Vec<Value> {
    let (st, v) = s.get("/v1/dhcp/leases").await;
    assert_eq!(st, 200, "{v}");
    v.as_array().unwrap().clone()
}

fn lease_of<'a>(all: &'a [Value], mac: &str) -> Option<&'a Value> {
    all.iter().find(|l| l["mac"] == mac)
}

async fn start(
    backend: Backend,
    link: &Link,
    tweak: impl FnOnce(&mut Config),
) -> Option<TestServer> {
    TestServer::start_in(backend, Some(&link.srv.name), tweak).await
}

async fn leases_options_and_boot_files(backend: Backend) {
    if !ready(&["udhcpc"]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let Some(s) = start(backend, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![subnet(true)])
    })
    .await
    else {
        return;
    };
    let mac = "52:54:00:77:00:01";
    let env = udhcpc(&link, mac, &[]).expect("a lease");
    let ip: Ipv4Addr = env["ip"].parse().unwrap();
    assert!(
        (Ipv4Addr::new(10, 77, 1, 10)..=Ipv4Addr::new(10, 77, 1, 250)).contains(&ip),
        "{env:?}"
    );
    assert_eq!(env["subnet"], "255.255.0.0");
    assert_eq!(env["router"], SERVER);
    assert_eq!(env["dns"].trim(), "10.77.0.53");
    assert_eq!(env["domain"], "lab.example");
    assert_eq!(env["lease"], "3600");
    assert_eq!(env["serverid"], SERVER);
    // The same machine again: the same address.
    let again = udhcpc(&link, mac, &[]).expect("a second lease");
    assert_eq!(again["ip"], env["ip"]);
    let all = leases(&s).await;
    let l = lease_of(&all, mac).expect("lease stored");
    assert_eq!(l["ip"], env["ip"].as_str());
    assert_eq!(l["state"], "bound");

    // PXE ROMs by architecture, and iPXE itself.
    let bios = udhcpc(
        &link,
        "52:54:00:77:00:02",
        &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "93:0000"],
    )
    .expect("BIOS lease");
    assert_eq!(bios["boot_file"], "undionly.kpxe", "{bios:?}");
    assert_eq!(bios["siaddr"], SERVER);
    let uefi = udhcpc(
        &link,
        "52:54:00:77:00:03",
        &["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "93:0007"],
    )
    .expect("UEFI lease");
    assert_eq!(uefi["boot_file"], "ipxe.efi", "{uefi:?}");
    let http_boot = udhcpc(
        &link,
        "52:54:00:77:00:05",
        &["-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "93:0010"],
    )
    .expect("UEFI HTTP boot lease");
    assert_eq!(
        http_boot["boot_file"],
        format!("http://{SERVER}:8080/assets/ipxe/ipxe.efi"),
        "{http_boot:?}"
    );
    let ipxe = udhcpc(&link, "52:54:00:77:00:04", &["-x", "77:69505845"]).expect("iPXE lease");
    assert_eq!(
        ipxe["boot_file"],
        format!("http://{SERVER}:8080/boot.ipxe?mac=52:54:00:77:00:04"),
        "{ipxe:?}"
    );
    let m = s.metrics().await;
    assert!(m.contains("racklift_dhcp_received_discover_total"), "{m}");
    assert!(
        m.contains("racklift_dhcp_request_duration_seconds_count"),
        "{m}"
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_options_and_boot_files_sqlite() {
    leases_options_and_boot_files(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_options_and_boot_files_postgres() {
    leases_options_and_boot_files(Backend::Postgres).await;
}

/// A profile that takes every machine and gives it an address in 10.77.9.x.
fn fixed_address_profile(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("any.toml"),
        "name = \"any\"\nquota = \"unlimited\"\nspecs = []\n\n[networks.provisioning]\nrange = \"10.77.9.10-10.77.9.20\"\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_node_gets_its_address_and_strangers_nothing() {
    if !ready(&["udhcpc", "curl"]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let Some(s) = start(Backend::Sqlite, &link, |c| {
        fixed_address_profile(&c.data_dir.join("profiles"));
        c.profiles_dir = c.data_dir.join("profiles");
        let tftp = c.data_dir.join("tftp");
        std::fs::create_dir_all(&tftp).unwrap();
        std::fs::write(tftp.join("undionly.kpxe"), vec![7u8; 70_000]).unwrap();
        c.tftp.enabled = true;
        c.tftp.listen = "0.0.0.0:69".parse().unwrap();
        c.tftp.root = tftp;
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![subnet(false)])
    })
    .await
    else {
        return;
    };
    // Discovery is off: a machine racklift does not know gets no answer.
    assert!(udhcpc(&link, "52:54:00:77:01:99", &[]).is_none());
    let mac = "52:54:00:77:01:01";
    let n = s.inspect_with("n1", mac, &json!([])).await;
    assert_eq!(n["addresses"], json!({"provisioning": "10.77.9.10"}), "{n}");
    let env = udhcpc(&link, mac, &["-V", "PXEClient:Arch:00000:UNDI:002001"])
        .expect("a lease for the node");
    assert_eq!(env["ip"], "10.77.9.10");
    assert_eq!(env["hostname"], "n1");
    let events = s.events("n1").await;
    let dhcp: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "dhcp")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        dhcp.iter().any(|t| t.contains("DISCOVER")
            && t.contains("OFFER 10.77.9.10")
            && t.contains("undionly.kpxe")),
        "{dhcp:?}"
    );
    assert!(
        dhcp.iter()
            .any(|t| t.contains("REQUEST") && t.contains("ACK 10.77.9.10")),
        "{dhcp:?}"
    );
    // The stranger's DISCOVERs were counted, not answered.
    assert!(
        s.metrics()
            .await
            .contains("racklift_dhcp_silent_unknown_client_total")
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhclient_renews_and_releases() {
    if !ready(&["dhclient"]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let Some(s) = start(Backend::Sqlite, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![subnet(true)])
    })
    .await
    else {
        return;
    };
    let mac = "52:54:00:77:02:01";
    link.set_client_mac(mac);
    let dir = tempfile::tempdir().unwrap();
    let (pf, lf) = (dir.path().join("pid"), dir.path().join("leases"));
    let dhclient = |extra: &[&str]| {
        let out = link
            .cli
            .cmd("dhclient")
            .args(["-v", "-1", "-sf", "/bin/true", "-pf"])
            .arg(&pf)
            .arg("-lf")
            .arg(&lf)
            .args(extra)
            .arg("rl-c")
            .output()
            .expect("run dhclient");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Ok(pid) = std::fs::read_to_string(&pf) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let log = dhclient(&[]);
    assert!(log.contains("DHCPACK"), "{log}");
    let first = lease_of(&leases(&s).await, mac).cloned().expect("lease");
    assert_eq!(first["state"], "bound");
    // What dhclient's own script would do (its RELEASE is sent from this address).
    let cidr = format!("{}/16", first["ip"].as_str().unwrap());
    link.cli.ip(&["addr", "add", &cidr, "dev", "rl-c"]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Started again with its lease file, dhclient asks for the same address.
    let log = dhclient(&[]);
    assert!(
        log.contains("DHCPREQUEST") && log.contains("DHCPACK"),
        "{log}"
    );
    let renewed = lease_of(&leases(&s).await, mac).cloned().expect("lease");
    assert_eq!(renewed["ip"], first["ip"]);
    assert!(
        renewed["expires_at_ms"].as_i64() > first["expires_at_ms"].as_i64(),
        "{first} -> {renewed}"
    );
    dhclient(&["-r"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let released = loop {
        let l = lease_of(&leases(&s).await, mac)
            .cloned()
            .expect("lease kept");
        if l["state"] == "released" || Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        released["state"],
        "released",
        "{released}\n{}",
        s.metrics().await
    );
    assert_eq!(released["ip"], first["ip"]);
    s.finish().await;
}

/// A DHCP client written here, on the client side of the link.
struct RawClient {
    sock: UdpSocket,
}

impl RawClient {
    fn new(ns: &Netns) -> RawClient {
        let sock = ns
            .run(|| racklift::netboot::dhcp::net::bind_on("rl-c", 68))
            .expect("client socket");
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        RawClient { sock }
    }

    fn message(mac: [u8; 6], kind: MessageType, opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        // Replies come as broadcasts: this socket's interface has no address.
        m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn send_to(&self, m: &Message, to: SocketAddr) {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        self.sock.send_to(&buf, to).unwrap();
    }

    fn send(&self, m: &Message) {
        self.send_to(m, "255.255.255.255:67".parse().unwrap());
    }

    /// Every reply to `xid` within `wait`.
    fn replies(&self, xid: u32, wait: Duration) -> Vec<Message> {
        let until = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        while Instant::now() < until {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf)
                && let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n]))
                && m.xid() == xid
            {
                out.push(m);
            }
        }
        out
    }

    fn reply(&self, xid: u32) -> Option<Message> {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Some(m) = self
                .replies(xid, Duration::from_millis(300))
                .into_iter()
                .next()
            {
                return Some(m);
            }
        }
        None
    }

    /// DISCOVER, OFFER, REQUEST, ACK: the address bound.
    fn lease(&self, mac: [u8; 6]) -> Ipv4Addr {
        let d = Self::message(mac, MessageType::Discover, vec![]);
        self.send(&d);
        let offer = self.reply(d.xid()).expect("an offer");
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        let r = Self::message(
            mac,
            MessageType::Request,
            vec![
                DhcpOption::RequestedIpAddress(offer.yiaddr()),
                DhcpOption::ServerIdentifier(SERVER.parse().unwrap()),
            ],
        );
        self.send(&r);
        let ack = self.reply(r.xid()).expect("an ack");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        ack.yiaddr()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_quarantines_and_hostile_packets_are_survived() {
    if !ready(&[]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let mut small = subnet(true);
    small.ranges = vec![("10.77.1.10".parse().unwrap(), "10.77.1.11".parse().unwrap())];
    let Some(s) = start(Backend::Sqlite, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![small])
    })
    .await
    else {
        return;
    };
    let c = RawClient::new(&link.cli);
    let a = [0x52, 0x54, 0, 0x77, 3, 1];
    let ip = c.lease(a);
    // The client finds the address in use and declines it.
    c.send(&RawClient::message(
        a,
        MessageType::Decline,
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER.parse().unwrap()),
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = leases(&s).await;
        let l = all.iter().find(|l| l["ip"] == ip.to_string()).unwrap();
        if l["state"] == "declined" {
            assert_eq!(l["mac"], Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "never declined: {l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two addresses, one quarantined: the next two clients share what is left.
    let b = c.lease([0x52, 0x54, 0, 0x77, 3, 2]);
    assert_ne!(b, ip);
    let d = RawClient::message([0x52, 0x54, 0, 0x77, 3, 3], MessageType::Discover, vec![]);
    c.send(&d);
    assert!(
        c.replies(d.xid(), Duration::from_secs(1)).is_empty(),
        "pool exhausted: no offer"
    );

    // Hostile packets, then a good one still gets its answer.
    let good = {
        let m = RawClient::message([0x52, 0x54, 0, 0x77, 3, 2], MessageType::Discover, vec![]);
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    };
    let mut hostile: Vec<Vec<u8>> = vec![vec![], vec![1], good[..239].to_vec()];
    let mut magic = good.clone();
    magic[236..240].copy_from_slice(b"EVIL");
    hostile.push(magic);
    let mut hlen = good.clone();
    hlen[2] = 255;
    hostile.push(hlen);
    let mut reply = good.clone();
    reply[0] = 2;
    hostile.push(reply);
    let mut oversized = good[..240].to_vec();
    for _ in 0..6 {
        oversized.push(43);
        oversized.push(255);
        oversized.extend(std::iter::repeat_n(0xAA, 255));
    }
    hostile.push(oversized);
    let mut cut = good[..240].to_vec();
    cut.extend_from_slice(&[53, 1, 1, 55, 250, 1, 2]);
    hostile.push(cut);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for len in [240, 300, 576, 1400] {
        let mut r = Vec::with_capacity(len);
        while r.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            r.extend_from_slice(&seed.to_le_bytes());
        }
        r.truncate(len);
        hostile.push(r);
    }
    for _ in 0..20 {
        for p in &hostile {
            c.sock.send_to(p, "255.255.255.255:67").unwrap();
        }
    }
    let probe = Message::decode(&mut Decoder::new(&good)).unwrap();
    let mut answer = None;
    for _ in 0..3 {
        // As a client does: ask again when no answer came.
        c.sock.send_to(&good, "255.255.255.255:67").unwrap();
        answer = c.reply(probe.xid());
        if answer.is_some() {
            break;
        }
    }
    let answer = answer.expect("still answering");
    assert_eq!(answer.yiaddr(), b);
    let m = s.metrics().await;
    let malformed: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("racklift_dhcp_malformed_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(malformed >= 20 * 9, "{malformed} malformed counted:\n{m}");
    s.finish().await;
}

/// A full server's answer to a firmware PXE client (EDK2's, asking for
/// x64 UEFI) is a plain DHCP offer with the boot file, not a BINL offer
/// (option 60 `PXEClient`) that would send the client to UDP 4011 for it; and
/// a client that asks on 4011 all the same (one that took a BINL offer) gets
/// its boot file there, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_pxe_gets_a_plain_offer_and_an_answer_on_4011() {
    if !ready(&[]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let Some(s) = start(Backend::Sqlite, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![subnet(true)])
    })
    .await
    else {
        return;
    };
    let c = RawClient::new(&link.cli);
    let mac = [0x52, 0x54, 0, 0x77, 6, 1];
    let edk2 = || {
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003000".to_vec()),
            DhcpOption::ClientSystemArchitecture(dhcproto::v4::Architecture(7)),
        ]
    };
    let d = RawClient::message(mac, MessageType::Discover, edk2());
    c.send(&d);
    let offer = c.reply(d.xid()).expect("an offer");
    assert_eq!(
        offer.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"ipxe.efi".to_vec()))
    );
    assert_eq!(offer.siaddr(), SERVER.parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        None,
        "a BINL offer would send the firmware to 4011"
    );
    let ip = offer.yiaddr();
    let r = RawClient::message(
        mac,
        MessageType::Request,
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER.parse().unwrap()),
        ]
        .into_iter()
        .chain(edk2())
        .collect(),
    );
    c.send(&r);
    assert_eq!(c.reply(r.xid()).expect("an ack").yiaddr(), ip);

    link.cli
        .ip(&["addr", "add", &format!("{ip}/16"), "dev", "rl-c"]);
    let mut q = RawClient::message(mac, MessageType::Request, edk2());
    q.set_ciaddr(ip);
    let mut got = None;
    for _ in 0..3 {
        c.send_to(&q, (SERVER.parse::<Ipv4Addr>().unwrap(), 4011).into());
        got = c
            .replies(q.xid(), Duration::from_secs(1))
            .into_iter()
            .next();
        if got.is_some() {
            break;
        }
    }
    let ack = got.expect("an answer on port 4011 in server mode");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(
        ack.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"ipxe.efi".to_vec()))
    );
    let m = s.metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("racklift_dhcp_boot_service_requests_total ") && !l.ends_with(" 0")
        ),
        "{m}"
    );
    s.finish().await;
}

/// The client side of a proxyDHCP test: the PXE DISCOVER gets two offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_dhcp_beside_dnsmasq() {
    if !ready(&["dnsmasq"]) {
        return;
    }
    // Three namespaces on one bridge: racklift (10.77.0.1), dnsmasq (10.77.0.2), the client.
    let srv = Netns::new("s");
    let dns = Netns::new("d");
    let cli = Netns::new("c");
    srv.ip(&["link", "add", "br0", "type", "bridge"]);
    srv.ip(&[
        "link", "add", "rl-s", "type", "veth", "peer", "name", "rl-c", "netns", &cli.name,
    ]);
    srv.ip(&[
        "link", "add", "rl-sd", "type", "veth", "peer", "name", "rl-d", "netns", &dns.name,
    ]);
    for port in ["rl-s", "rl-sd"] {
        srv.ip(&["link", "set", port, "master", "br0"]);
        srv.ip(&["link", "set", port, "up"]);
    }
    srv.ip(&["addr", "add", "10.77.0.1/16", "dev", "br0"]);
    srv.ip(&["link", "set", "br0", "up"]);
    dns.ip(&["addr", "add", "10.77.0.2/16", "dev", "rl-d"]);
    dns.ip(&["link", "set", "rl-d", "up"]);
    cli.ip(&["link", "set", "rl-c", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let dnsmasq = common::netns::dnsmasq(&dns, "rl-d", "10.77.2.10,10.77.2.50,1h", dir.path());
    let Some(s) = TestServer::start_in(Backend::Sqlite, Some(&srv.name), |c| {
        serve_dhcp(c, DhcpMode::Proxy, "br0", vec![subnet(true)])
    })
    .await
    else {
        return;
    };
    let c = RawClient::new(&cli);
    let mac = [0x52, 0x54, 0, 0x77, 4, 1];
    let pxe = || {
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(dhcproto::v4::Architecture(0)),
        ]
    };
    let d = RawClient::message(mac, MessageType::Discover, pxe());
    let mut offers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while offers.len() < 2 && Instant::now() < deadline {
        c.send(&d);
        for o in c.replies(d.xid(), Duration::from_secs(1)) {
            let sid = o.opts().get(OptionCode::ServerIdentifier).cloned();
            if !offers
                .iter()
                .any(|(s, _): &(Option<DhcpOption>, Message)| *s == sid)
            {
                offers.push((sid, o));
            }
        }
    }
    let by = |ip: &str| {
        offers
            .iter()
            .find(|(s, _)| *s == Some(DhcpOption::ServerIdentifier(ip.parse().unwrap())))
            .map(|(_, m)| m.clone())
    };
    let from_dnsmasq = by("10.77.0.2").expect("dnsmasq offers an address");
    let from_racklift = by(SERVER).expect("racklift answers the PXE part");
    let addr = from_dnsmasq.yiaddr();
    assert!(addr.to_string().starts_with("10.77.2."), "{addr}");
    assert!(
        from_racklift.yiaddr().is_unspecified(),
        "proxyDHCP gives no address"
    );
    assert_eq!(
        from_racklift.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );
    assert_eq!(
        from_racklift.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(from_racklift.siaddr(), SERVER.parse::<Ipv4Addr>().unwrap());
    // The ROM takes dnsmasq's address, then asks racklift's boot service on 4011.
    let r = RawClient::message(
        mac,
        MessageType::Request,
        vec![
            DhcpOption::RequestedIpAddress(addr),
            DhcpOption::ServerIdentifier("10.77.0.2".parse().unwrap()),
        ],
    );
    c.send(&r);
    let ack = c.reply(r.xid()).expect("dnsmasq acks");
    assert_eq!(ack.yiaddr(), addr);
    cli.ip(&["addr", "add", &format!("{addr}/16"), "dev", "rl-c"]);
    let mut q = RawClient::message(mac, MessageType::Request, pxe());
    q.set_ciaddr(addr);
    let mut got = None;
    for _ in 0..3 {
        c.send_to(&q, (Ipv4Addr::new(10, 77, 0, 1), 4011).into());
        got = c
            .replies(q.xid(), Duration::from_secs(1))
            .into_iter()
            .next();
        if got.is_some() {
            break;
        }
    }
    let ack = got.expect("an answer on port 4011");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(
        ack.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );
    drop(dnsmasq);
    s.finish().await;
}

/// Two racklift processes on one link and one PostgreSQL database (the second
/// a real `racklift serve` in the server namespace): both answer every
/// DISCOVER, and no address goes to two of the clients that ask at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_postgres_never_share_an_address() {
    if !ready(&["udhcpc"]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let mut small = subnet(true);
    small.ranges = vec![("10.77.1.10".parse().unwrap(), "10.77.1.60".parse().unwrap())];
    let sub = small.clone();
    let Some(a) = start(Backend::Postgres, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![sub])
    })
    .await
    else {
        return;
    };
    // The second process reaches PostgreSQL through a port forwarded into the namespace.
    let pg: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    common::netns::forward_into(&link.srv.name, pg, pg).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("b.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "data_dir = \"{d}\"\nprofiles = {{ dir = \"{d}/profiles\" }}\n\
             [http]\nlisten = \"0.0.0.0:8081\"\npublic_url = \"http://{SERVER}:8081\"\n\
             [database]\nurl = \"{url}\"\n\
             [secrets]\nkey_file = \"{key}\"\n\
             [dhcp]\nenabled = true\ninterfaces = [\"rl-s\"]\n\
             [[dhcp.subnet]]\nnetwork = \"10.77.0.0/16\"\nranges = [\"10.77.1.10-10.77.1.60\"]\nrouter = \"{SERVER}\"\ndiscovery = true\nlease_time = \"1h\"\n",
            d = dir.path().display(),
            url = a.cfg.database.url,
            key = a.cfg.secrets.key_file.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("b.log")).unwrap();
    let _b = link
        .srv
        .cmd(env!("CARGO_BIN_EXE_racklift"))
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map(peers::Peer)
        .expect("second racklift");
    let b_url = format!(
        "http://{}",
        common::netns::forward(&link.srv.name, "127.0.0.1:8081".parse().unwrap()).await
    );
    let http = reqwest::Client::new();
    let metrics_of = |url: String| {
        let http = http.clone();
        let token = a.token.clone();
        async move {
            http.get(format!("{url}/metrics"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics_of(b_url.clone()).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "second racklift never came up:\n{}",
            std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 24 machines ask at once, each on a macvlan of the client link.
    const N: usize = 24;
    let mut clients = Vec::new();
    for i in 0..N {
        let ifname = format!("mv{i}");
        let mac = format!("52:54:00:77:05:{i:02x}");
        link.cli.ip(&[
            "link", "add", &ifname, "link", "rl-c", "type", "macvlan", "mode", "bridge",
        ]);
        link.cli.ip(&["link", "set", &ifname, "address", &mac]);
        link.cli.ip(&["link", "set", &ifname, "up"]);
        let out = tempfile::tempdir().unwrap();
        let script = udhcpc_script(out.path());
        let child = link
            .cli
            .cmd("udhcpc")
            .args([
                "-i", &ifname, "-n", "-q", "-f", "-t", "5", "-T", "1", "-A", "1", "-s", &script,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("udhcpc");
        clients.push((mac, out, child));
    }
    let mut got: HashMap<String, String> = HashMap::new();
    for (mac, out, mut child) in clients {
        let st = child.wait().unwrap();
        assert!(st.success(), "{mac} got no lease");
        got.insert(mac, env_file(&out.path().join("bound"))["ip"].clone());
    }
    let mut ips: Vec<&String> = got.values().collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "an address went to two clients: {got:?}");
    let all = leases(&a).await;
    for (mac, ip) in &got {
        let l = lease_of(&all, mac).unwrap_or_else(|| panic!("no lease row for {mac}"));
        assert_eq!(l["ip"], ip.as_str(), "{l}");
        assert_eq!(l["state"], "bound", "{l}");
    }
    let answered = |m: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix("racklift_dhcp_answered_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let ma = a.metrics().await;
    let mb = metrics_of(b_url.clone()).await.unwrap_or_default();
    assert!(
        answered(&ma) > 0 && answered(&mb) > 0,
        "both processes answered: {} and {}",
        answered(&ma),
        answered(&mb)
    );
    a.finish().await;
}

/// rdisc6 on the client side: its output and whether a router answered.
fn rdisc6(link: &Link) -> (bool, String) {
    link.wait_link_local();
    peers::run(
        link.cli
            .cmd("rdisc6")
            .args(["-1", "-r", "3", "-w", "1000", "rl-c"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_solicitations_get_an_advertisement_of_no_router() {
    if !ready(&["rdisc6"]) {
        return;
    }
    let link = Link::new("10.77.0.1/16");
    let Some(s) = start(Backend::Sqlite, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![subnet(false)]);
        assert!(c.dhcp.router_advertisements, "on by default in server mode");
    })
    .await
    else {
        return;
    };
    let (answered, text) = rdisc6(&link);
    assert!(answered, "no router advertisement heard:\n{text}");
    // What a host takes from it: no default router, no DHCPv6, no prefix.
    for line in [
        "Stateful address conf.    :           No",
        "Stateful other conf.      :           No",
        "Router lifetime           :            0",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert!(!text.contains("Prefix"), "{text}");
    assert!(text.contains(" from fe80::"), "{text}");
    let m = s.metrics().await;
    assert!(
        common::counter(&m, "racklift_ra_solicitations_total") >= 1,
        "{m}"
    );
    assert!(common::counter(&m, "racklift_ra_sent_total") >= 1, "{m}");
    s.finish().await;

    // Off: rdisc6 hears nothing, and the DHCP server still serves.
    let link = Link::new("10.77.0.1/16");
    let Some(s) = start(Backend::Sqlite, &link, |c| {
        serve_dhcp(c, DhcpMode::Server, "rl-s", vec![subnet(false)]);
        c.dhcp.router_advertisements = false;
    })
    .await
    else {
        return;
    };
    let (answered, text) = rdisc6(&link);
    assert!(!answered && text.contains("No response"), "{text}");
    assert!(!s.metrics().await.contains("racklift_ra_"));
    s.finish().await;
}
