//! The `ipmi` BMC driver against a real BMC: OpenIPMI's `ipmi_sim`, one per
//! test, whose chassis script records what racklift told the "machine".
//! A UDP proxy written here sits between the driver and the simulator when a
//! test needs to lose packets or watch sessions.

mod common;
#[path = "common/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "common/udp_proxy.rs"]
mod udp_proxy;

use common::{TestServer, peers};
use ipmi_sim::{IpmiSim, PASSWORD, USER};
use racklift::bmc::{BmcDriver, BmcError, BmcTarget, BootDevice, Drivers, PowerAction, PowerState};
use racklift::node::BmcDriverKind;
use serde_json::json;
use std::time::Duration;
use tokio::net::UdpSocket;
use udp_proxy::Proxy;

async fn start_sim() -> Option<IpmiSim> {
    tokio::task::spawn_blocking(IpmiSim::start)
        .await
        .expect("starting ipmi_sim")
}

fn target(port: u16, user: &str, password: &str) -> BmcTarget {
    BmcTarget {
        driver: BmcDriverKind::Ipmi,
        address: Some("127.0.0.1".into()),
        port: Some(port),
        username: Some(user.into()),
        password: Some(password.into()),
        verify_tls: true,
        node_key: "test".into(),
    }
}

fn driver(d: &Drivers, port: u16) -> Box<dyn BmcDriver> {
    d.driver_for(&target(port, USER, PASSWORD))
        .expect("an ipmi driver")
}

/// Drivers with a short per-try timeout, for tests that lose packets on purpose.
fn quick_drivers(try_ms: u64, tries: u32) -> Drivers {
    let mut d = Drivers::default();
    d.ipmi.try_timeout = Duration::from_millis(try_ms);
    d.ipmi.tries = tries;
    d
}

fn ipmitool_power(sim: &IpmiSim) -> String {
    let out = sim
        .ipmitool(&["chassis", "power", "status"])
        .output()
        .expect("ipmitool runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_boot_and_status_reach_the_machine() {
    let Some(sim) = start_sim().await else { return };
    let d = Drivers::default();
    let bmc = driver(&d, sim.port);

    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));
    bmc.set_boot_device(BootDevice::Pxe, false).await.unwrap();
    assert_eq!(sim.boot(), "pxe");
    bmc.power(PowerAction::On).await.unwrap();
    assert!(sim.powered());
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));
    assert_eq!(ipmitool_power(&sim), "Chassis Power is on");

    bmc.power(PowerAction::Reset).await.unwrap();
    assert!(sim.powered());
    bmc.power(PowerAction::SoftOff).await.unwrap();
    assert!(!sim.powered());
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));

    bmc.power(PowerAction::On).await.unwrap();
    // ipmi_sim powers off at once and back on a second later.
    bmc.power(PowerAction::Cycle).await.unwrap();
    sim.wait_until("power back on after the cycle", |s| {
        s.log()
            .ends_with(&["power 0".to_string(), "power 1".to_string()])
    });
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));
    bmc.power(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));
    assert_eq!(ipmitool_power(&sim), "Chassis Power is off");

    bmc.set_boot_device(BootDevice::Disk, true).await.unwrap();
    assert_eq!(sim.boot(), "default", "the default hard drive");
    bmc.set_boot_device(BootDevice::Cd, false).await.unwrap();
    assert_eq!(sim.boot(), "cdrom");
    let e = bmc
        .set_boot_device(BootDevice::UefiHttp, false)
        .await
        .unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e}");

    assert_eq!(
        sim.log(),
        [
            "boot pxe",
            "power 1",
            "reset 1",
            "shutdown 1",
            "power 1",
            "power 0",
            "power 1",
            "power 0",
            "boot default",
            "boot cdrom"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_at_once_without_retries() {
    let Some(sim) = start_sim().await else { return };
    let proxy = Proxy::start(sim.port, 0).await;
    let d = Drivers::default();

    let bad = d
        .driver_for(&target(proxy.port, USER, "not-the-password"))
        .unwrap();
    let e = bad.power_state().await.unwrap_err();
    assert!(matches!(e, BmcError::Auth { .. }), "{e:?}");
    assert!(!e.is_transient());
    assert_eq!(
        e.to_string(),
        format!(
            "BMC at 127.0.0.1:{} refused the credentials of user 'admin'",
            proxy.port
        )
    );
    // One session attempt, no packet sent twice: nothing was retried or waited for.
    let st = proxy.stats();
    assert_eq!(st.sessions(), 1, "{st:?}");
    assert_eq!(st.resent, 0, "{st:?}");

    let unknown = d
        .driver_for(&target(proxy.port, "nobody", PASSWORD))
        .unwrap();
    let e = unknown.power(PowerAction::On).await.unwrap_err();
    assert!(
        matches!(&e, BmcError::Auth { user, .. } if user == "nobody"),
        "{e:?}"
    );
    let st = proxy.stats();
    assert_eq!((st.sessions(), st.resent), (2, 0), "{st:?}");
    assert!(sim.log().is_empty(), "the machine was not touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_succeed_when_every_third_packet_is_lost() {
    let Some(sim) = start_sim().await else { return };
    let proxy = Proxy::start(sim.port, 3).await;
    let d = quick_drivers(250, 4);
    let bmc = driver(&d, proxy.port);

    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));
    bmc.set_boot_device(BootDevice::Pxe, false).await.unwrap();
    assert_eq!(sim.boot(), "pxe");
    bmc.power(PowerAction::On).await.unwrap();
    assert!(sim.powered());
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));
    bmc.power(PowerAction::Off).await.unwrap();
    assert!(!sim.powered());
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));

    let st = proxy.stats();
    assert!(
        st.dropped_to_bmc > 0 && st.dropped_to_client > 0,
        "the link lost packets both ways: {st:?}"
    );
    assert!(st.resent > 0, "lost requests were sent again: {st:?}");
    // A lost answer makes the BMC run a command twice; the machine still ends
    // up where it was told to be, in order.
    let mut log = sim.log();
    log.dedup();
    assert_eq!(log, ["boot pxe", "power 1", "power 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_is_transient_and_bounded() {
    // A BMC address where something receives but never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let d = quick_drivers(200, 3);
    let bmc = driver(&d, port);
    let e = tokio::time::timeout(Duration::from_secs(60), bmc.power_state())
        .await
        .expect("the driver gives up on its own")
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("BMC at 127.0.0.1:{port} did not answer: no answer after 3 tries of 200 ms each")
    );
    // The first packet (the RMCP ping) was sent three times, byte for byte.
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(100), silent.recv(&mut buf)).await
    {
        seen.push(buf[..n].to_vec());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|p| p == &seen[0]));

    // Nothing listening at all: the host says so, and that is transient too.
    let closed = ipmi_sim::free_udp_port();
    let e = driver(&Drivers::default(), closed)
        .power(PowerAction::On)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("nothing listens on UDP port"), "{e}");
}

async fn node_walk_with_an_ipmi_bmc(s: &TestServer) {
    let Some(sim) = start_sim().await else { return };
    let mac = "52:54:00:20:00:01";
    s.create(json!({
        "name": "ipmi-walk",
        "boot_mac": mac,
        "bmc": {"driver": "ipmi", "address": "127.0.0.1", "port": sim.port,
                "username": USER, "password": PASSWORD}
    }))
    .await;
    let (st, v) = s.act("ipmi-walk", "manage").await;
    assert_eq!(st, 202, "{v}");
    let n = s.wait_state("ipmi-walk", "manageable").await;
    assert_eq!(n["power_state"], "off");

    // Inspection: one-time PXE boot and power on; the agent reports; power off.
    let (st, v) = s.act("ipmi-walk", "inspect").await;
    assert_eq!(st, 202, "{v}");
    let token = s.boot_token(mac).await;
    assert_eq!(sim.boot(), "pxe");
    assert!(sim.powered());
    let inventory = json!({"system": {"serial": "SIM-1"}, "cpus": 1});
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": inventory}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    s.wait_state("ipmi-walk", "manageable").await;
    assert!(!sim.powered());

    // Cleaning: the same boot, the agent says the disks are clean.
    let (st, v) = s.act("ipmi-walk", "provide").await;
    assert_eq!(st, 202, "{v}");
    let token = s.boot_token(mac).await;
    assert!(sim.powered());
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/status",
            json!({"ok": true, "message": "disks wiped"}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let n = s.wait_state("ipmi-walk", "available").await;
    assert_eq!(n["power_state"], "off");
    assert!(!sim.powered());
    assert_eq!(
        sim.log(),
        [
            "boot pxe", "power 1", "power 0", "boot pxe", "power 1", "power 0"
        ]
    );
    let events = s.events("ipmi-walk").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "one-time PXE boot set; machine powered on"),
        "{events:?}"
    );
}
on_both_backends!(node_walk_with_an_ipmi_bmc);
