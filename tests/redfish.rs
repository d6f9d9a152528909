//! The `redfish` BMC driver against sushy-tools' emulator (power, boot
//! override, a node walked through manage, inspect and provide) and against
//! the DMTF-schema service of `common/redfish_server.rs` (BIOS settings
//! objects, volumes through task monitors, sessions, 503s, TLS, wrong
//! passwords), and the node BMC endpoints, the CLI, power sync and cleaning
//! with a profile's BIOS and RAID settings (and its refusal by IPMI, against
//! `ipmi_sim`) over the API.

mod common;
#[path = "common/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "common/redfish_server.rs"]
mod redfish_server;
#[path = "common/sushy.rs"]
mod sushy;

use common::{TestServer, peers};
use racklift::bmc::{
    BmcDriver, BmcError, BmcTarget, BootDevice, BootOverride, Drivers, FirmwareBoot, PowerAction,
    PowerState, VolumeSpec, bios_mismatches,
};
use racklift::node::BmcDriverKind;
use redfish_server::{Options, RedfishServer};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};
use sushy::Sushy;

fn drivers() -> Drivers {
    let mut d = Drivers::default();
    d.redfish.poll_interval = Duration::from_millis(100);
    d.redfish.retry_backoff = Duration::from_millis(50);
    d
}

fn target(address: String, port: u16, user: &str, password: &str, verify_tls: bool) -> BmcTarget {
    BmcTarget {
        driver: BmcDriverKind::Redfish,
        address: Some(address),
        port: Some(port),
        username: Some(user.into()),
        password: Some(password.into()),
        verify_tls,
        node_key: "test".into(),
    }
}

fn server_driver(d: &Drivers, s: &RedfishServer) -> Box<dyn BmcDriver> {
    d.driver_for(&target(
        s.address(false),
        s.addr.port(),
        redfish_server::USER,
        redfish_server::PASSWORD,
        true,
    ))
    .expect("a redfish driver")
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sushy_power_boot_override_and_inventory() {
    let Some(emu) = Sushy::start().await else {
        return;
    };
    let d = drivers();
    let bmc = d
        .driver_for(&target(emu.address(), emu.port, "admin", "password", true))
        .unwrap();
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));

    // The driver waits until the change shows; the emulator agrees.
    bmc.power(PowerAction::On).await.unwrap();
    emu.wait_power("On").await;
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));

    // The emulator keeps every override "Continuous" (as libvirt does);
    // `Once` is checked against the test service below.
    bmc.set_boot_device(BootDevice::Pxe, false).await.unwrap();
    let boot = &emu.system().await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe");

    bmc.set_boot(BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: Some(FirmwareBoot::Uefi),
    })
    .await
    .unwrap();
    let boot = &emu.system().await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Hdd");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Continuous");
    assert_eq!(boot["BootSourceOverrideMode"], "UEFI");

    bmc.power(PowerAction::Reset).await.unwrap();
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));
    bmc.power(PowerAction::SoftOff).await.unwrap();
    emu.wait_power("Off").await;
    // No PowerCycle here: off then on.
    bmc.power(PowerAction::Cycle).await.unwrap();
    emu.wait_power("On").await;
    bmc.power(PowerAction::Off).await.unwrap();
    emu.wait_power("Off").await;
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off));

    let inv = bmc.inventory().await.unwrap();
    assert_eq!(inv.uuid.as_deref(), Some(sushy::SYSTEM_UUID));
    assert!(
        inv.nics
            .iter()
            .any(|n| n.mac.as_deref() == Some(sushy::NIC_MAC)),
        "{inv:?}"
    );
    // sushy-tools' fake driver has no BIOS resource: a clear refusal.
    let e = bmc.bios().await.unwrap_err();
    assert!(matches!(e, BmcError::Unsupported(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bios_settings_wait_for_the_reboot_then_verify() {
    let srv = RedfishServer::start(Options::default()).await;
    let d = drivers();
    let bmc = server_driver(&d, &srv);

    let before = bmc.bios().await.unwrap();
    assert_eq!(before.current["ProcVirtualization"], "Disabled");
    assert!(before.pending.is_empty());

    let wanted = attrs(json!({"ProcVirtualization": "Enabled", "SriovGlobalEnable": "Enabled"}));
    bmc.set_bios(&wanted).await.unwrap();
    let pending = bmc.bios().await.unwrap();
    assert_eq!(pending.pending, wanted, "pending until the next boot");
    assert_eq!(pending.current["ProcVirtualization"], "Disabled");
    assert_eq!(
        bios_mismatches(&wanted, &pending.current).len(),
        2,
        "not in force yet"
    );
    assert_eq!(
        srv.machine().bios_apply_time.as_deref(),
        Some("OnReset"),
        "the apply time the BMC supports"
    );

    bmc.power(PowerAction::On).await.unwrap();
    let after = bmc.bios().await.unwrap();
    assert!(after.pending.is_empty(), "{after:?}");
    assert!(bios_mismatches(&wanted, &after.current).is_empty());

    let e = bmc
        .set_bios(&attrs(json!({"NoSuchKnob": "On"})))
        .await
        .unwrap_err();
    assert!(matches!(e, BmcError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("NoSuchKnob"), "{e}");

    let m = srv.machine();
    assert!(
        m.log
            .iter()
            .any(|l| l.starts_with("PATCH /redfish/v1/Systems/1/Bios/Settings If-Match")),
        "the settings PATCH carried the ETag: {:?}",
        m.log
    );
    assert!(m.sessions_made >= 4, "one session per command");
    assert_eq!(m.open_sessions(), 0, "every session was ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_created_through_the_task_monitor_and_deleted() {
    let srv = RedfishServer::start(Options::default()).await;
    let d = drivers();
    let bmc = server_driver(&d, &srv);

    let inv = bmc.inventory().await.unwrap();
    assert_eq!(inv.disks.len(), 4, "{inv:?}");
    assert_eq!(inv.nics[0].mac.as_deref(), Some("52:54:00:aa:00:01"));
    assert_eq!(inv.serial.as_deref(), Some("437XR1138R2"));
    assert!(bmc.raid_volumes().await.unwrap().is_empty());

    let v = bmc
        .create_volume(&VolumeSpec {
            level: "1".into(),
            drives: vec!["Disk.0".into(), "Disk.1".into()],
            name: Some("os".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(v.level.as_deref(), Some("RAID1"));
    assert_eq!(v.drives, ["Disk.0", "Disk.1"]);
    assert_eq!(v.storage, "RAID");
    assert_eq!(bmc.raid_volumes().await.unwrap(), vec![v.clone()]);
    let polls = srv
        .machine()
        .log
        .iter()
        .filter(|l| l.starts_with("GET /redfish/v1/TaskService/TaskMonitors/"))
        .count();
    assert_eq!(polls, 3, "two 202s, then the volume");

    // A disk already in a volume: the BMC's own message comes back.
    let e = bmc
        .create_volume(&VolumeSpec {
            level: "0".into(),
            drives: vec!["Disk.1".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is in use or missing"), "{e}");

    bmc.delete_volume(&v.id).await.unwrap();
    assert!(bmc.raid_volumes().await.unwrap().is_empty());
    let e = bmc.delete_volume("42").await.unwrap_err();
    assert!(e.to_string().contains("no RAID volume '42'"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_succeed_when_the_bmc_is_intermittently_unavailable() {
    let srv = RedfishServer::start(Options {
        flaky: true,
        ..Default::default()
    })
    .await;
    let d = drivers();
    let bmc = server_driver(&d, &srv);
    bmc.set_boot_device(BootDevice::Pxe, false).await.unwrap();
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));
    bmc.set_bios(&attrs(json!({"LogicalProc": "Disabled"})))
        .await
        .unwrap();
    let m = srv.machine();
    assert!(
        m.unavailable >= 3,
        "the BMC said 503 {} times",
        m.unavailable
    );
    assert_eq!(m.power, "On");
    assert_eq!(m.boot_target, "Pxe");
    assert_eq!(
        m.boot_enabled, "Disabled",
        "the one-time override was used by the boot"
    );
    assert!(
        m.log
            .iter()
            .any(|l| l.starts_with("PATCH /redfish/v1/Systems/1 If-Match")),
        "{:?}",
        m.log
    );
    assert_eq!(m.bios_pending["LogicalProc"], "Disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_actions_use_the_reset_types_the_bmc_offers() {
    let srv = RedfishServer::start(Options::default()).await;
    let d = drivers();
    let bmc = server_driver(&d, &srv);
    for a in [
        PowerAction::On,
        PowerAction::On,
        PowerAction::Reset,
        PowerAction::Cycle,
        PowerAction::SoftOff,
        PowerAction::Off,
        PowerAction::Reset,
    ] {
        bmc.power(a).await.unwrap();
    }
    // No PowerCycle offered: a cycle is off then on. Already on or off: nothing
    // sent. A reset of a machine that is off powers it on.
    assert_eq!(
        srv.machine().resets,
        [
            "On",
            "ForceRestart",
            "ForceOff",
            "On",
            "GracefulShutdown",
            "On"
        ]
    );
    assert_eq!(bmc.power_state().await, Ok(PowerState::On));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bmc_is_transient_after_the_retry_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut d = drivers();
    d.redfish.retry_deadline = Duration::from_millis(500);
    let bmc = d
        .driver_for(&target("http://127.0.0.1".into(), port, "u", "p", true))
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(60), bmc.power_state())
        .await
        .expect("the driver gives up on its own")
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "BMC at 127.0.0.1:{port} did not answer: GET /redfish/v1/"
        )),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_given_up_half_way_still_ends_its_session() {
    let srv = RedfishServer::start(Options::default()).await;
    let d = drivers();
    let bmc = server_driver(&d, &srv);
    // A power on waits for the machine; give up while it polls.
    srv.machine().hold_power = true;
    let given_up =
        tokio::time::timeout(Duration::from_millis(500), bmc.power(PowerAction::On)).await;
    assert!(given_up.is_err(), "the machine never turned on");
    let started = Instant::now();
    while srv.machine().open_sessions() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the session was never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(srv.machine().sessions_made, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_etag_is_read_again_and_the_change_sent_once_more() {
    let srv = RedfishServer::start(Options::default()).await;
    let d = drivers();
    let bmc = server_driver(&d, &srv);
    srv.machine().etag_conflicts = 1;
    bmc.set_boot_device(BootDevice::Cd, true).await.unwrap();
    {
        let m = srv.machine();
        assert_eq!(
            (m.boot_target.as_str(), m.boot_enabled.as_str()),
            ("Cd", "Continuous")
        );
        let patches: Vec<&String> = m.log.iter().filter(|l| l.starts_with("PATCH")).collect();
        assert_eq!(patches.len(), 2, "{patches:?}");
        assert_ne!(patches[0], patches[1], "the second carried the new ETag");
    }
    // A resource that keeps changing: the BMC's refusal comes back.
    srv.machine().etag_conflicts = 2;
    let e = bmc
        .set_boot_device(BootDevice::Pxe, false)
        .await
        .unwrap_err();
    assert!(matches!(e, BmcError::Refused { .. }), "{e:?}");
    assert!(e.to_string().contains("412"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificates_need_the_per_node_opt_out() {
    let tls = redfish_server::self_signed();
    let srv = RedfishServer::start(Options {
        tls: Some(tls),
        ..Default::default()
    })
    .await;
    let d = drivers();
    let t = |verify| {
        target(
            srv.address(true),
            srv.addr.port(),
            redfish_server::USER,
            redfish_server::PASSWORD,
            verify,
        )
    };
    let e = d
        .driver_for(&t(true))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(e, BmcError::Refused { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("certificate") && msg.contains("verify_tls"),
        "{msg}"
    );
    let insecure = d.driver_for(&t(false)).unwrap();
    assert_eq!(insecure.power_state().await, Ok(PowerState::Off));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once() {
    for no_sessions in [false, true] {
        let srv = RedfishServer::start(Options {
            no_sessions,
            ..Default::default()
        })
        .await;
        let d = drivers();
        let bmc = d
            .driver_for(&target(
                srv.address(false),
                srv.addr.port(),
                redfish_server::USER,
                "not-the-password",
                true,
            ))
            .unwrap();
        let e = bmc.power(PowerAction::On).await.unwrap_err();
        assert!(matches!(e, BmcError::Auth { .. }), "{e:?}");
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .contains("refused the credentials of user 'root'"),
            "{e}"
        );
        let m = srv.machine();
        assert_eq!(m.log.len(), 2, "no retries: {:?}", m.log);
        assert_eq!(m.power, "Off");
    }
}

/// Waits (up to 90 s: the emulator's power changes take up to 11 s each)
/// until the node is in `state`.
async fn wait_state(s: &TestServer, node: &str, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let n = s.node(node).await;
        if n["state"] == state {
            return n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node {node} never reached {state}: {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the node's step waits for its agent; returns the boot token.
async fn agent_token(s: &TestServer, node: &str, mac: &str) -> String {
    let started = Instant::now();
    loop {
        let (_, steps) = s.get(&format!("/v1/nodes/{node}/steps")).await;
        if steps
            .as_array()
            .is_some_and(|a| a.iter().any(|st| st["status"] == "waiting"))
        {
            return s.boot_token(mac).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node {node} never waited for its agent: {steps}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_walk_with_sushy(s: &TestServer) {
    let Some(emu) = Sushy::start().await else {
        return;
    };
    let mac = sushy::NIC_MAC;
    s.create(json!({
        "name": "rf-walk", "boot_mac": mac,
        "bmc": {"driver": "redfish", "address": emu.address(), "port": emu.port,
                "username": "admin", "password": "password"}
    }))
    .await;
    let (st, v) = s.act("rf-walk", "manage").await;
    assert_eq!(st, 202, "{v}");
    let n = wait_state(s, "rf-walk", "manageable").await;
    assert_eq!(n["power_state"], "off");

    let (st, v) = s.act("rf-walk", "inspect").await;
    assert_eq!(st, 202, "{v}");
    let token = agent_token(s, "rf-walk", mac).await;
    let sys = emu.system().await;
    assert_eq!(sys["PowerState"], "On");
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Pxe");
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"system": {"serial": "SUSHY-1"}}}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let n = wait_state(s, "rf-walk", "manageable").await;
    assert_eq!(n["power_state"], "off");
    emu.wait_power("Off").await;

    let (st, v) = s.act("rf-walk", "provide").await;
    assert_eq!(st, 202, "{v}");
    let token = agent_token(s, "rf-walk", mac).await;
    assert_eq!(emu.system().await["PowerState"], "On");
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/status",
            json!({"ok": true, "message": "disks wiped"}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let n = wait_state(s, "rf-walk", "available").await;
    assert_eq!(n["power_state"], "off");
    emu.wait_power("Off").await;
    let events = s.events("rf-walk").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "one-time PXE boot set; machine powered on"),
        "{events:?}"
    );
}
on_both_backends!(node_walk_with_sushy);

/// A node with a Redfish BMC, taken to `manageable`.
async fn managed_node(s: &TestServer, name: &str, mac: &str, srv: &RedfishServer) {
    s.create(json!({
        "name": name, "boot_mac": mac,
        "bmc": {"driver": "redfish", "address": srv.address(false), "port": srv.addr.port(),
                "username": redfish_server::USER, "password": redfish_server::PASSWORD}
    }))
    .await;
    let (st, v) = s.act(name, "manage").await;
    assert_eq!(st, 202, "{v}");
    wait_state(s, name, "manageable").await;
}

async fn bmc_endpoints(s: &TestServer) {
    let srv = RedfishServer::start(Options::default()).await;
    managed_node(s, "rf-api", "52:54:00:31:00:01", &srv).await;

    let (st, v) = s
        .post("/v1/nodes/rf-api/power", json!({"action": "on"}))
        .await;
    assert_eq!((st, &v["power_state"]), (200, &json!("on")), "{v}");
    assert_eq!(srv.machine().power, "On");
    assert_eq!(s.node("rf-api").await["power_state"], "on");
    let (st, v) = s.get("/v1/nodes/rf-api/power").await;
    assert_eq!((st, &v["power_state"]), (200, &json!("on")), "{v}");
    let (st, v) = s
        .post("/v1/nodes/rf-api/power", json!({"action": "sideways"}))
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &json!("invalid_field")),
        "{v}"
    );

    let (st, v) = s
        .post(
            "/v1/nodes/rf-api/boot-device",
            json!({"device": "uefi_http", "persistent": true, "mode": "uefi"}),
        )
        .await;
    assert_eq!(st, 204, "{v}");
    {
        let m = srv.machine();
        assert_eq!(
            (m.boot_target.as_str(), m.boot_enabled.as_str()),
            ("UefiHttp", "Continuous")
        );
    }

    let (st, v) = s
        .req(
            reqwest::Method::PATCH,
            "/v1/nodes/rf-api/bios",
            Some(json!({"attributes": {"ProcVirtualization": "Enabled"}})),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["pending"]["ProcVirtualization"], "Enabled");
    let (st, v) = s.get("/v1/nodes/rf-api/bios").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["current"]["ProcVirtualization"], "Disabled");

    let (st, v) = s
        .post(
            "/v1/nodes/rf-api/raid",
            json!({"level": "1", "drives": ["Disk.2", "Disk.3"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let vol = v["id"].as_str().unwrap().to_string();
    let (_, v) = s.get("/v1/nodes/rf-api/raid").await;
    assert_eq!(v["volumes"][0]["level"], "RAID1", "{v}");
    let (st, v) = s
        .post(
            "/v1/nodes/rf-api/raid",
            json!({"level": "7", "drives": ["Disk.0"]}),
        )
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &json!("invalid_field")),
        "{v}"
    );
    let (st, v) = s
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/nodes/rf-api/raid/{vol}"),
            None,
        )
        .await;
    assert_eq!(st, 204, "{v}");
    let (st, v) = s
        .req(reqwest::Method::DELETE, "/v1/nodes/rf-api/raid/99", None)
        .await;
    // A volume the BMC does not list is not found, not a refusal.
    assert_eq!(
        (st, &v["error"]["code"]),
        (404, &json!("volume_not_found")),
        "{v}"
    );
    // A volume listed but gone when deleted (the BMC answers 404): not found too.
    let (st, v) = s
        .post(
            "/v1/nodes/rf-api/raid",
            json!({"level": "0", "drives": ["Disk.0"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let gone = v["id"].as_str().unwrap().to_string();
    srv.machine().volume_gone_on_delete = true;
    let (st, v) = s
        .req(
            reqwest::Method::DELETE,
            &format!("/v1/nodes/rf-api/raid/{gone}"),
            None,
        )
        .await;
    srv.machine().volume_gone_on_delete = false;
    assert_eq!(
        (st, &v["error"]["code"]),
        (404, &json!("volume_not_found")),
        "{v}"
    );
    let (_, v) = s.get("/v1/nodes/rf-api/bmc-inventory").await;
    assert_eq!(v["disks"].as_array().map(Vec::len), Some(4), "{v}");

    // Every change is in the node's history.
    let events = s.events("rf-api").await;
    let bmc: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "bmc")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(bmc.len(), 8, "{bmc:?}");
    assert!(
        bmc[0] == "power on" && bmc[4].contains("deleted"),
        "{bmc:?}"
    );
    assert!(
        bmc[5].starts_with("deleting RAID volume '99' failed: BMC at 127.0.0.1"),
        "{bmc:?}"
    );

    // All of it is in the OpenAPI document.
    let (_, doc) = s.get("/v1/openapi.json").await;
    for (path, method) in [
        ("/v1/nodes/{id}/power", "get"),
        ("/v1/nodes/{id}/power", "post"),
        ("/v1/nodes/{id}/boot-device", "post"),
        ("/v1/nodes/{id}/bios", "get"),
        ("/v1/nodes/{id}/bios", "patch"),
        ("/v1/nodes/{id}/raid", "get"),
        ("/v1/nodes/{id}/raid", "post"),
        ("/v1/nodes/{id}/raid/{volume}", "delete"),
        ("/v1/nodes/{id}/bmc-inventory", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "openapi lacks {method} {path}"
        );
    }

    // A read-only token reads but does not change.
    let (_, t) = s
        .post("/v1/tokens", json!({"name": "viewer", "role": "readonly"}))
        .await;
    let ro = t["secret"].as_str().unwrap();
    let (st, _) = s
        .req_as(ro, reqwest::Method::GET, "/v1/nodes/rf-api/power", None)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .req_as(
            ro,
            reqwest::Method::POST,
            "/v1/nodes/rf-api/power",
            Some(json!({"action": "off"})),
        )
        .await;
    assert_eq!(st, 403);

    // While racklift drives the machine, only reads are allowed.
    let (st, v) = s.act("rf-api", "inspect").await;
    assert_eq!(st, 202, "{v}");
    let (st, v) = s
        .post("/v1/nodes/rf-api/power", json!({"action": "off"}))
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (409, &json!("power_owned")),
        "{v}"
    );
    let (st, _) = s.get("/v1/nodes/rf-api/power").await;
    assert_eq!(st, 200);
    let (st, v) = s.act("rf-api", "abort").await;
    assert_eq!(st, 202, "{v}");
}
on_both_backends!(bmc_endpoints);

async fn power_changes_outside_racklift_are_recorded(s: &TestServer) {
    let srv = RedfishServer::start(Options::default()).await;
    managed_node(s, "rf-sync", "52:54:00:31:00:02", &srv).await;
    assert_eq!(s.node("rf-sync").await["power_state"], "off");
    srv.machine().power = "On".into();
    let started = Instant::now();
    loop {
        if s.node("rf-sync").await["power_state"] == "on" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the sync never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = s.events("rf-sync").await;
    assert!(
        events.iter().any(|e| e["kind"] == "power"
            && e["actor"] == "power-sync"
            && e["reason"] == "power off -> on (changed outside racklift)"),
        "{events:?}"
    );
}
on_both_backends!(power_changes_outside_racklift_are_recorded, |c| {
    c.conductor.power_sync_interval = Duration::from_millis(200);
});

async fn cleaning_applies_and_verifies_the_profiles_bios_and_raid(s: &TestServer) {
    let srv = RedfishServer::start(Options::default()).await;
    managed_node(s, "rf-clean", "52:54:00:31:00:03", &srv).await;
    provide_with_profile(s, "rf-clean").await;
    let token = agent_token(s, "rf-clean", "52:54:00:31:00:03").await;
    {
        let m = srv.machine();
        assert_eq!(
            m.bios["ProcVirtualization"], "Enabled",
            "applied by the boot"
        );
        assert_eq!(m.volumes.len(), 1);
        assert_eq!(m.volumes.values().next().unwrap()["RAIDType"], "RAID1");
    }
    let (st, v) = s
        .agent(&token, "/v1/agent/status", json!({"ok": true}))
        .await;
    assert_eq!(st, 202, "{v}");
    wait_state(s, "rf-clean", "available").await;
    let events = s.events("rf-clean").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "BIOS and RAID settings of the profile verified"),
        "{events:?}"
    );
}
on_both_backends!(
    cleaning_applies_and_verifies_the_profiles_bios_and_raid,
    |c| {
        write_profile(&c.profiles_dir);
    }
);

/// Cleaning a node whose driver has no BIOS settings, with a profile that has
/// some: the node fails cleaning with `expected`.
async fn cleaning_fails_when_the_bios_settings_are_not_in_force_after_the_boot(s: &TestServer) {
    let srv = RedfishServer::start(Options::default()).await;
    managed_node(s, "rf-unset", "52:54:00:31:00:07", &srv).await;
    provide_with_profile(s, "rf-unset").await;
    let token = agent_token(s, "rf-unset", "52:54:00:31:00:07").await;
    // Someone (or the firmware) puts the setting back before racklift checks.
    srv.machine()
        .bios
        .insert("ProcVirtualization".into(), "Disabled".into());
    let (st, v) = s
        .agent(&token, "/v1/agent/status", json!({"ok": true}))
        .await;
    assert_eq!(st, 202, "{v}");
    let n = wait_state(s, "rf-unset", "clean_failed").await;
    assert_eq!(
        n["last_error"],
        "the BIOS settings of profile 'bios-raid' are not in force after the reboot: ProcVirtualization: wanted Enabled, current Disabled"
    );
    assert_eq!(
        srv.machine().power,
        "Off",
        "powered off as after any cleaning"
    );
}
on_both_backends!(
    cleaning_fails_when_the_bios_settings_are_not_in_force_after_the_boot,
    |c| {
        write_profile(&c.profiles_dir);
    }
);

async fn cleaning_fails_for(s: &TestServer, name: &str, mac: &str, bmc: Value, expected: &str) {
    s.create(json!({"name": name, "boot_mac": mac, "bmc": bmc}))
        .await;
    let (st, v) = s.act(name, "manage").await;
    assert_eq!(st, 202, "{v}");
    wait_state(s, name, "manageable").await;
    provide_with_profile(s, name).await;
    let n = wait_state(s, name, "clean_failed").await;
    assert_eq!(n["last_error"], expected);
}

async fn cleaning_fails_clearly_when_the_driver_has_no_bios(s: &TestServer) {
    cleaning_fails_for(
        s,
        "no-bios",
        "52:54:00:31:00:04",
        json!({"driver": "none"}),
        "clean failed at apply_bios: profile 'bios-raid' has BIOS settings, but BIOS settings are not supported without a BMC (driver 'none')",
    )
    .await;
    let Some(sim) = tokio::task::spawn_blocking(ipmi_sim::IpmiSim::start)
        .await
        .expect("starting ipmi_sim")
    else {
        return;
    };
    cleaning_fails_for(
        s,
        "ipmi-bios",
        "52:54:00:31:00:06",
        json!({"driver": "ipmi", "address": "127.0.0.1", "port": sim.port,
               "username": ipmi_sim::USER, "password": ipmi_sim::PASSWORD}),
        "clean failed at apply_bios: profile 'bios-raid' has BIOS settings, but BIOS settings are not supported by IPMI; use the redfish driver for this machine",
    )
    .await;
    assert!(
        sim.log().is_empty(),
        "the machine was not touched: {:?}",
        sim.log()
    );
}
on_both_backends!(cleaning_fails_clearly_when_the_driver_has_no_bios, |c| {
    write_profile(&c.profiles_dir);
});

/// Gives the node the `bios-raid` profile and starts cleaning it.
async fn provide_with_profile(s: &TestServer, node: &str) {
    let (st, v) = s
        .req(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{node}"),
            Some(json!({"profile": "bios-raid"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.act(node, "provide").await;
    assert_eq!(st, 202, "{v}");
}

fn write_profile(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("bios-raid.toml"),
        r#"name = "bios-raid"
quota = 10
specs = [["system", "product", "serial", "$serial"]]

[bios]
ProcVirtualization = "Enabled"

[raid]
level = "1"
disks = 2
"#,
    )
    .unwrap();
}

/// Runs the `racklift` CLI against the test server.
fn cli(s: &TestServer, args: &[&str]) -> (bool, String) {
    common::peers::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_racklift"))
            .args(["node", "--url", &s.url, "--token", &s.token])
            .args(args),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_a_nodes_bmc() {
    let Some(s) = TestServer::start(common::Backend::Sqlite, |_| {}).await else {
        return;
    };
    let srv = RedfishServer::start(Options::default()).await;
    managed_node(&s, "rf-cli", "52:54:00:31:00:05", &srv).await;

    // Every node subcommand takes the node first.
    let (ok, out) = cli(&s, &["power", "rf-cli", "status"]);
    assert!(ok && out.trim() == "rf-cli: power off", "{out}");
    let (ok, out) = cli(&s, &["power", "rf-cli", "on", "--wait", "--timeout", "60s"]);
    assert!(ok && out.trim() == "rf-cli: power on", "{out}");
    assert_eq!(srv.machine().power, "On");
    let (ok, out) = cli(&s, &["power", "rf-cli", "sideways"]);
    assert!(
        !ok && out.contains(
            "unknown power action 'sideways'; one of: on, off, soft-off, reset, cycle, status"
        ),
        "{out}"
    );
    let (ok, out) = cli(&s, &["power", "on", "rf-cli"]);
    assert!(
        !ok && out.contains("the node comes first: racklift node power rf-cli on"),
        "{out}"
    );
    // --wait follows an action to its end, and fails with the node's error.
    s.create(json!({"name": "fake-ok", "bmc": {"driver": "fake", "address": "10.7.0.1", "username": "admin", "password": "pw"}}))
        .await;
    s.create(json!({"name": "fake-bad", "bmc": {"driver": "fake", "address": "10.7.0.2", "username": "admin", "password": "wrong"}}))
        .await;
    let (ok, out) = cli(&s, &["action", "fake-ok", "manage", "--wait"]);
    assert!(ok && out.contains("fake-ok: manageable"), "{out}");
    let (ok, out) = cli(
        &s,
        &["action", "fake-bad", "manage", "--wait", "--timeout", "60s"],
    );
    assert!(
        !ok && out.contains("fake-bad: enrolled (wanted manageable)")
            && out.contains("refused the credentials"),
        "{out}"
    );
    // The CLI's own spelling in its errors.
    let (ok, out) = cli(&s, &["boot-device", "rf-cli", "floppy"]);
    assert!(
        !ok && out.contains("one of: pxe, disk, cd, uefi-http"),
        "{out}"
    );

    let (ok, out) = cli(
        &s,
        &["boot-device", "rf-cli", "pxe", "--persistent", "--legacy"],
    );
    assert!(ok, "{out}");
    {
        let m = srv.machine();
        assert_eq!(
            (
                m.boot_target.as_str(),
                m.boot_enabled.as_str(),
                m.boot_mode.as_str()
            ),
            ("Pxe", "Continuous", "Legacy")
        );
    }

    let (ok, out) = cli(&s, &["bios", "set", "rf-cli", "ProcVirtualization=Enabled"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&s, &["bios", "show", "rf-cli"]);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ProcVirtualization"))
        .unwrap_or_default();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["ProcVirtualization", "Disabled", "Enabled"],
        "{out}"
    );
    let (ok, out) = cli(&s, &["bios", "set", "rf-cli", "NoEquals"]);
    assert!(!ok && out.contains("is not NAME=VALUE"), "{out}");

    let (ok, out) = cli(
        &s,
        &[
            "raid", "create", "rf-cli", "--level", "1", "--disk", "Disk.0", "--disk", "Disk.1",
        ],
    );
    assert!(
        ok && out.contains("RAID1") && out.contains("Disk.0,Disk.1"),
        "{out}"
    );
    let (ok, out) = cli(&s, &["--json", "raid", "show", "rf-cli"]);
    let vols: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert!(ok && vols.as_array().map(Vec::len) == Some(1), "{out}");
    let id = vols[0]["id"].as_str().unwrap();
    let (ok, out) = cli(&s, &["raid", "delete", "rf-cli", id]);
    assert!(ok, "{out}");
    assert!(srv.machine().volumes.is_empty());
    s.finish().await;
}

/// A Redfish BMC whose port is closed fails `manage` within seconds, not
/// after minutes of retries, and `last_error` says why and what to check.
/// The address is a URL with the port in it.
async fn a_closed_port_fails_manage_at_once(s: &TestServer) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    s.create(json!({
        "name": "closed", "boot_mac": "52:54:00:ee:00:01",
        "bmc": {"driver": "redfish", "address": format!("http://127.0.0.1:{port}"),
                "username": "root", "password": "pw"}
    }))
    .await;
    let started = Instant::now();
    let (st, v) = s.act("closed", "manage").await;
    assert_eq!(st, 202, "{v}");
    let n = wait_state(s, "closed", "enrolled").await;
    println!("manage failed after {:?}", started.elapsed());
    let e = n["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains(&format!("BMC at 127.0.0.1:{port} refused the connection"))
            && e.contains("bmc.port"),
        "{n}"
    );
    let retries = s
        .events("closed")
        .await
        .into_iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("retrying")))
        .count();
    assert_eq!(retries, 0, "a closed port is not retried by the conductor");
    let (st, v) = s.get("/v1/nodes/closed/power").await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (502, &json!("bmc_unreachable")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the connection"),
        "{v}"
    );
}
on_both_backends!(a_closed_port_fails_manage_at_once);
