//! Discovery and inspection with racklift-agent's real inventories (collected
//! from the captured machines in tests/fixtures/agent) and the agent's own
//! HTTP client, against a real racklift server on both backends.

mod common;

use common::TestServer;
use racklift::agent::{Client, Command, Pacing, Root, Settings, collect};
use racklift::protocol::Inventory;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const SERVER_MAC: &str = "e4:43:4b:aa:00:01";
const VM_MAC: &str = "52:54:00:12:34:01";

fn fixture_inventory(name: &str, bootif: &str) -> Inventory {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(name);
    collect::inventory(&Root::new(dir), Some(bootif))
}

fn fast() -> Pacing {
    Pacing {
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(400),
        heartbeat: Duration::from_millis(50),
        request_timeout: Duration::from_secs(10),
    }
}

/// Runs the agent's client (blocking) with `token` against the server.
async fn run_agent(
    s: &TestServer,
    token: &str,
    inv: Inventory,
) -> Result<racklift::agent::client::Outcome, racklift::agent::client::AgentError> {
    let settings = Settings {
        api: s.url.clone(),
        token: token.to_string(),
        bootif: None,
    };
    tokio::task::spawn_blocking(move || Client::new(settings, fast())?.run(&inv))
        .await
        .unwrap()
}

fn with_discovery_and_profiles(cfg: &mut racklift::config::Config) {
    cfg.discovery.enabled = true;
    cfg.profiles_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles");
}

async fn discovery_token(s: &TestServer, mac: &str) -> String {
    let script = s.boot_script(mac).await;
    assert!(script.contains("to be discovered"), "{script}");
    common::script_token(&script).unwrap_or_else(|| panic!("no token in {script}"))
}

async fn unknown_machines_wait_while_discovery_is_off(s: &TestServer) {
    let script = s.boot_script(SERVER_MAC).await;
    assert!(
        script.contains("nothing to boot from the network") && !script.contains("kernel"),
        "{script}"
    );
}
on_both_backends!(unknown_machines_wait_while_discovery_is_off);

async fn a_discovered_machine_enrols_itself(s: &TestServer) {
    let token = discovery_token(s, SERVER_MAC).await;
    assert!(token.starts_with("rld_"), "{token}");
    let inv = fixture_inventory("server-2s-nvme-raid-bond", "01-e4-43-4b-aa-00-01");
    let out = run_agent(s, &token, inv.clone()).await.expect("agent run");
    assert_eq!(
        out.command,
        Command::PowerOff,
        "enrolled: the machine powers off"
    );
    assert_eq!(out.attempts, 1);

    // Named from its serial number, with every port, profile selected.
    let n = s.node("4n4zq42").await;
    assert_eq!(n["state"], "enrolled");
    assert_eq!(n["boot_mac"], SERVER_MAC);
    assert_eq!(
        n["macs"],
        json!([SERVER_MAC, "e4:43:4b:aa:00:02", "3c:fd:fe:bb:00:10"])
    );
    assert_eq!(n["profile"], "compute", "{n}");
    let (st, stored) = s.get("/v1/nodes/4n4zq42/inventory").await;
    assert_eq!(st, 200);
    assert_eq!(serde_json::from_value::<Inventory>(stored).unwrap(), inv);
    let (st, facts) = s.get("/v1/nodes/4n4zq42/facts").await;
    assert_eq!(st, 200);
    let facts = facts.as_array().unwrap();
    assert!(
        facts.contains(&json!(["disk", "sda", "size", "1999"])),
        "{facts:?}"
    );
    assert!(facts.contains(&json!(["system", "product", "serial", "4N4ZQ42"])));
    let events = s.events("4n4zq42").await;
    assert!(
        events.iter().any(|e| e["kind"] == "discovery"
            && e["reason"]
                .as_str()
                .unwrap()
                .contains("profile 'compute' selected")),
        "{events:?}"
    );
    // The agent's log lines became the node's events.
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "agent"
                && e["reason"].as_str().unwrap().contains("inventory stored")),
        "{events:?}"
    );

    // One enrolment per token.
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used to enrol its machine"),
        "{v}"
    );
    // The machine is known now: its next boot is no discovery, and the
    // script names nothing of the node (it has no step).
    let script = s.boot_script(SERVER_MAC).await;
    assert!(
        script.contains("nothing to boot from the network")
            && !script.contains("4n4zq42")
            && !script.contains("enrolled"),
        "{script}"
    );
}
on_both_backends!(
    a_discovered_machine_enrols_itself,
    with_discovery_and_profiles
);

async fn discovery_records_the_bmc_and_names_by_mac_without_serial(s: &TestServer) {
    let mut inv = fixture_inventory("qemu-seabios", "01-52-54-00-12-34-01");
    inv.system.serial = None;
    inv.bmc = Some(racklift::protocol::inventory::Bmc {
        channel: 1,
        ipv4: Some("10.1.2.3".into()),
        mac: Some("52:54:00:aa:bb:cc".into()),
    });
    let token = discovery_token(s, VM_MAC).await;
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["node"], "node-525400123401");
    let n = s.node("node-525400123401").await;
    assert_eq!(n["bmc"]["driver"], "ipmi");
    assert_eq!(n["bmc"]["address"], "10.1.2.3");
    // The VM matches no shipped profile: selection ran and said why.
    assert_eq!(n["profile"], Value::Null);
}
on_both_backends!(
    discovery_records_the_bmc_and_names_by_mac_without_serial,
    with_discovery_and_profiles
);

async fn bad_inventories_and_tokens_are_refused_clearly(s: &TestServer) {
    let token = discovery_token(s, VM_MAC).await;
    let mut inv = serde_json::to_value(fixture_inventory("qemu-seabios", "")).unwrap();
    inv["disks"][1]["size_bytes"] = json!("eight gigabytes");
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 400, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("inventory.disks[1].size_bytes: invalid type"),
        "{m}"
    );
    inv["disks"][1]["size_bytes"] = json!(1);
    inv["cpu"]["wattage"] = json!(9000);
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inventory.cpu.wattage: unknown field `wattage`"),
        "{v}"
    );
    // A discovered machine must send the agent's inventory.
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"cpus": 2}}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    // None of that used the token up.
    inv["cpu"].as_object_mut().unwrap().remove("wattage");
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 202, "{v}");

    // Forged tokens of either kind; a boot script fetched again hands out the
    // same token until the machine first uses it, and none after that.
    for forged in ["rld_forged", "rla_forged"] {
        let (st, v) = s.agent(forged, "/v1/agent/heartbeat", json!({})).await;
        assert_eq!(st, 401, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown agent token")
        );
    }
    let first = discovery_token(s, SERVER_MAC).await;
    let second = discovery_token(s, SERVER_MAC).await;
    assert_eq!(first, second, "the same boot gets the same token");
    let (st, _) = s.agent(&first, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!(st, 200);
    let script = s.boot_script(SERVER_MAC).await;
    assert!(
        common::script_token(&script).is_none() && script.contains("started already"),
        "a used token is not handed out again: {script}"
    );
    assert!(s.metrics().await.contains("agent_token_refused"));
}
on_both_backends!(bad_inventories_and_tokens_are_refused_clearly, |c| c
    .discovery
    .enabled =
    true);

async fn discovery_tokens_expire(s: &TestServer) {
    let token = discovery_token(s, VM_MAC).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let inv = fixture_inventory("qemu-seabios", "");
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    // The next boot of the machine gets a new token, not the expired one.
    let again = discovery_token(s, VM_MAC).await;
    assert_ne!(
        again, token,
        "an expired discovery token was handed out again"
    );
}
on_both_backends!(discovery_tokens_expire, |c| {
    c.discovery.enabled = true;
    c.discovery.token_ttl = Duration::from_millis(10);
});

async fn reinspection_records_what_changed(s: &TestServer) {
    s.create(json!({"name": "vm-1", "boot_mac": VM_MAC, "bmc": {"driver": "fake", "address": "10.9.7.1", "username": "u", "password": "p"}}))
        .await;
    assert_eq!(s.act("vm-1", "manage").await.0, 202);
    s.wait_state("vm-1", "manageable").await;
    let before = fixture_inventory("qemu-seabios", "01-52-54-00-12-34-01");
    let mut tokens = Vec::new();
    for inv in [before.clone(), {
        let mut after = before.clone();
        after.disks.truncate(1);
        after.memory.total_bytes /= 2;
        after.memory.dimms[0].size_bytes /= 2;
        let mut nic = after.nics[1].clone();
        nic.name = "eth2".into();
        nic.mac = "52:54:00:12:34:03".into();
        after.nics.push(nic);
        after
    }] {
        assert_eq!(s.act("vm-1", "inspect").await.0, 202);
        let token = s.boot_token(VM_MAC).await;
        let out = run_agent(s, &token, inv).await.expect("agent run");
        assert_eq!(out.command, Command::PowerOff);
        s.wait_state("vm-1", "manageable").await;
        tokens.push(token);
    }
    // Late log lines of the last boot are kept; an earlier boot's token is refused.
    let line = json!({"lines": ["powering off"]});
    assert_eq!(
        s.agent(&tokens[1], "/v1/agent/log", line.clone()).await.0,
        202
    );
    assert_eq!(
        s.agent(&tokens[0], "/v1/agent/log", line.clone()).await.0,
        401
    );
    assert_eq!(
        s.agent(&tokens[1], "/v1/agent/heartbeat", json!({}))
            .await
            .0,
        401
    );
    let events = s.events("vm-1").await;
    let changed: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "inventory")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(
        changed,
        [
            "hardware changed: disk vdb removed (serial DISK-B, size 8); \
          memory bank:0 size: 1073741824 -> 536870912; \
          memory total size: 1073741824 -> 536870912; \
          network eth2 added (serial 52:54:00:12:34:03)"
        ]
    );
    let (_, facts) = s.get("/v1/nodes/vm-1/facts").await;
    assert!(!facts.as_array().unwrap().iter().any(|f| f[1] == "vdb"));
}
on_both_backends!(reinspection_records_what_changed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramdisk_is_served_where_the_boot_script_points() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("vmlinuz"), b"kernel image").unwrap();
    let dir = files.path().to_path_buf();
    let Some(s) = TestServer::start(common::Backend::Sqlite, move |c| {
        c.discovery.enabled = true;
        c.boot.ramdisk_dir = dir;
    })
    .await
    else {
        return;
    };
    let script = s.boot_script(VM_MAC).await;
    assert!(
        script.contains("/assets/ramdisk/vmlinuz initrd=initrd.img"),
        "{script}"
    );
    let get = |path: &str| s.http.get(format!("{}{path}", s.url)).send();
    let r = get("/assets/ramdisk/vmlinuz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"kernel image");
    // Replaced on disk: the new file is served.
    std::fs::write(files.path().join("vmlinuz"), b"newer kernel image").unwrap();
    let r = get("/assets/ramdisk/vmlinuz").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"newer kernel image");
    let r = get("/assets/ramdisk/initrd.img").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("build-ramdisk.sh"),
        "{v}"
    );
    let r = get("/assets/ramdisk/..%2Fsecret.key").await.unwrap();
    assert_eq!(r.status(), 404);
    s.finish().await;
}
