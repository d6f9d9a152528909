//! The node lifecycle driven end to end on both backends, with the fake BMC
//! driver and this test playing the ramdisk agent's callbacks.

mod common;

use common::{TestServer, act_ok, node_body, state_path};
use serde_json::{Value, json};
use std::time::Duration;

/// Enrols a fake-BMC node and takes it to manageable.
async fn managed(s: &TestServer, name: &str, mac: &str, bmc: &str) {
    s.create(node_body(name, mac, bmc, "pw")).await;
    act_ok(s, name, "manage").await;
    s.wait_state(name, "manageable").await;
}

/// Plays the agent: waits for the boot, fetches the script's token, reports.
async fn agent_reports(s: &TestServer, mac: &str, ok: bool, message: &str) -> String {
    let token = s.boot_token(mac).await;
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/status",
            json!({"ok": ok, "message": message}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    token
}

async fn full_lifecycle_walk(s: &TestServer) {
    let mac = "52:54:00:10:00:01";
    s.create(node_body("walk-1", mac, "10.9.0.1", "pw")).await;
    act_ok(s, "walk-1", "manage").await;
    let n = s.wait_state("walk-1", "manageable").await;
    assert_eq!(n["power_state"], "off");

    // Inspection: one-time PXE boot, power on, wait for the inventory, power off.
    let v = act_ok(s, "walk-1", "inspect").await;
    assert_eq!(v["state"], "inspecting");
    let token = s.boot_token(mac).await;
    let script = s.boot_script(mac).await;
    assert!(
        script.contains("racklift.api=http://racklift.test:8080")
            && script.contains("BOOTIF=01-52-54-00-10-00-01"),
        "{script}"
    );
    let inv = json!({"system": {"serial": "SN-1"}, "cpus": 2, "memory_mib": 1024});
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 202, "{v}");
    s.wait_state("walk-1", "manageable").await;
    let (st, stored) = s.get("/v1/nodes/walk-1/inventory").await;
    assert_eq!((st, stored), (200, inv));
    let m = s.drivers().fake.machine("10.9.0.1").unwrap();
    assert_eq!(
        m.commands,
        [
            "boot pxe once",
            "power on",
            "booted once from the one-time device",
            "power off"
        ]
    );
    // The token died with its boot.
    let (st, v) = s.agent(&token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!(st, 401, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ended"),
        "{v}"
    );

    // Cleaning, deployment, configuration.
    act_ok(s, "walk-1", "provide").await;
    agent_reports(s, mac, true, "disks wiped").await;
    s.wait_state("walk-1", "available").await;
    act_ok(s, "walk-1", "deploy").await;
    agent_reports(s, mac, true, "image written").await;
    let n = s.wait_state("walk-1", "active").await;
    assert_eq!(n["target"], Value::Null);
    let m = s.drivers().fake.machine("10.9.0.1").unwrap();
    assert_eq!(m.boot, Some((racklift::bmc::BootDevice::Disk, true)));
    assert!(s.boot_script(mac).await.contains("sanboot"));
    act_ok(s, "walk-1", "configure").await;
    s.wait_state("walk-1", "in_service").await;

    // Reprovision goes back through cleaning and installation on its own.
    let v = act_ok(s, "walk-1", "reprovision").await;
    assert_eq!(
        (v["state"].as_str(), v["target"].as_str()),
        (Some("cleaning"), Some("active"))
    );
    agent_reports(s, mac, true, "disks wiped").await;
    s.wait_state("walk-1", "deploying").await;
    agent_reports(s, mac, true, "image written").await;
    s.wait_state("walk-1", "active").await;

    // Undeploy through cleaning to available, then delete.
    act_ok(s, "walk-1", "undeploy").await;
    agent_reports(s, mac, true, "disks wiped").await;
    s.wait_state("walk-1", "available").await;

    let ev = s.events("walk-1").await;
    assert_eq!(
        state_path(&ev),
        [
            "enrolled",
            "verifying",
            "manageable",
            "inspecting",
            "manageable",
            "cleaning",
            "available",
            "deploying",
            "active",
            "configuring",
            "in_service",
            "cleaning",
            "available",
            "deploying",
            "active",
            "cleaning",
            "available"
        ]
    );
    // Every state event names its action and actor, and chains from the previous one.
    let states: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "state").collect();
    for w in states.windows(2) {
        assert_eq!(w[0]["to_state"], w[1]["from_state"], "{w:?}");
    }
    assert!(
        states
            .iter()
            .all(|e| e["action"].is_string() && e["actor"].is_string())
    );
    assert!(
        ev.iter().any(|e| e["kind"] == "boot"),
        "boot script fetches are events"
    );
    let (st, _) = s
        .req(reqwest::Method::DELETE, "/v1/nodes/walk-1", None)
        .await;
    assert_eq!(st, 204);
}
on_both_backends!(full_lifecycle_walk);

async fn invalid_actions_list_what_is_allowed(s: &TestServer) {
    s.create(node_body("inv-1", "52:54:00:10:01:01", "10.9.1.1", "pw"))
        .await;
    let (st, v) = s.act("inv-1", "deploy").await;
    assert_eq!(st, 409);
    assert_eq!(v["error"]["code"], "invalid_action");
    assert_eq!(v["error"]["allowed_actions"], json!(["manage"]));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed: manage"),
        "{v}"
    );
    act_ok(s, "inv-1", "manage").await;
    s.wait_state("inv-1", "manageable").await;
    act_ok(s, "inv-1", "provide").await;
    agent_reports(s, "52:54:00:10:01:01", true, "ok").await;
    s.wait_state("inv-1", "available").await;
    act_ok(s, "inv-1", "deploy").await;
    agent_reports(s, "52:54:00:10:01:01", true, "ok").await;
    s.wait_state("inv-1", "active").await;
    // An installed node cannot be deleted: it must be undeployed first.
    let (st, v) = s
        .req(reqwest::Method::DELETE, "/v1/nodes/inv-1", None)
        .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(
        v["error"]["allowed_actions"],
        json!(["configure", "reprovision", "undeploy"])
    );
}
on_both_backends!(invalid_actions_list_what_is_allowed);

async fn bmc_failures_fail_or_retry_clearly(s: &TestServer) {
    // Wrong password: fails at once, with the reason, back to enrolled.
    s.create(node_body("badpw", "52:54:00:10:02:01", "10.9.2.1", "wrong"))
        .await;
    act_ok(s, "badpw", "manage").await;
    let n = s.wait_state("badpw", "enrolled").await;
    let e = n["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("refused the credentials of user 'admin'"), "{n}");
    let (_, steps) = s.get("/v1/nodes/badpw/steps").await;
    assert_eq!(
        steps[0]["attempts"], 1,
        "an auth failure is not retried: {steps}"
    );

    // Unreachable: retried max_attempts times, then failed with the count.
    s.create(node_body(
        "down",
        "52:54:00:10:02:02",
        "unreachable-1",
        "pw",
    ))
    .await;
    act_ok(s, "down", "manage").await;
    let n = s.wait_state("down", "enrolled").await;
    let e = n["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains("after 3 attempts") && e.contains("did not answer"),
        "{n}"
    );
    let retries = s
        .events("down")
        .await
        .iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("retrying")))
        .count();
    assert_eq!(retries, 2);

    // Flaky: the retries succeed.
    managed(s, "flaky", "52:54:00:10:02:03", "flaky-1").await;

    // An ipmi node whose BMC port is closed: retried, then failed with the reason.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    s.create(json!({"name": "ipmi-1", "bmc": {"driver": "ipmi", "address": "127.0.0.1", "port": closed}}))
        .await;
    act_ok(s, "ipmi-1", "manage").await;
    let n = s.wait_state("ipmi-1", "enrolled").await;
    let e = n["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains("after 3 attempts") && e.contains("nothing listens on UDP port"),
        "{n}"
    );
}
on_both_backends!(bmc_failures_fail_or_retry_clearly);

async fn agent_failure_and_abort(s: &TestServer) {
    let mac = "52:54:00:10:03:01";
    managed(s, "af-1", mac, "10.9.3.1").await;
    act_ok(s, "af-1", "provide").await;
    agent_reports(s, mac, false, "disk /dev/sdb did not wipe: I/O error").await;
    let n = s.wait_state("af-1", "clean_failed").await;
    assert_eq!(n["last_error"], "disk /dev/sdb did not wipe: I/O error");
    assert_eq!(
        n["power_state"], "off",
        "a failed clean still powers the machine off"
    );
    // Abort while inspecting.
    act_ok(s, "af-1", "manage").await;
    act_ok(s, "af-1", "inspect").await;
    let token = s.boot_token(mac).await;
    let (st, v) = s
        .post(
            "/v1/nodes/af-1/actions/abort",
            json!({"reason": "wrong rack"}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["state"], "inspect_failed");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("aborted by api: wrong rack"),
        "{v}"
    );
    // The aborted boot's token no longer works, and a late report changes nothing.
    let (st, _) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"x": 1}}),
        )
        .await;
    assert_eq!(st, 401);
    assert_eq!(s.node("af-1").await["state"], "inspect_failed");
}
on_both_backends!(agent_failure_and_abort);

async fn inspection_times_out_with_a_reason(s: &TestServer) {
    managed(s, "slow-1", "52:54:00:10:04:01", "10.9.4.1").await;
    act_ok(s, "slow-1", "inspect").await;
    let n = s.wait_state("slow-1", "inspect_failed").await;
    let e = n["last_error"].as_str().unwrap();
    assert!(
        e.contains("inspect timed out after") && e.contains("waiting for the ramdisk's inventory"),
        "{e}"
    );
}
on_both_backends!(inspection_times_out_with_a_reason, |c| c
    .conductor
    .timeouts
    .inspect =
    Duration::from_millis(1500));

async fn agent_tokens_are_per_boot(s: &TestServer) {
    let mac = "52:54:00:10:05:01";
    managed(s, "tok-1", mac, "10.9.5.1").await;
    act_ok(s, "tok-1", "inspect").await;
    let token = s.boot_token(mac).await;
    // Forged, missing, and operator tokens are refused on agent endpoints.
    for t in ["rla_forged", "", s.token.as_str()] {
        let (st, v) = s
            .agent(t, "/v1/agent/inventory", json!({"inventory": {}}))
            .await;
        assert_eq!(st, 401, "{t}: {v}");
    }
    // A non-object inventory is refused without using up the boot.
    let (st, _) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": [1, 2]}))
        .await;
    assert_eq!(st, 400);
    let (st, v) = s.agent(&token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!((st, v["command"].as_str()), (200, Some("wait")));
    let (st, _) = s
        .agent(
            &token,
            "/v1/agent/log",
            json!({"lines": ["collecting disks", "posting inventory"]}),
        )
        .await;
    assert_eq!(st, 202);
    let (st, _) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"ok": true}}),
        )
        .await;
    assert_eq!(st, 202);
    s.wait_state("tok-1", "manageable").await;
    let ev = s.events("tok-1").await;
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "agent" && e["reason"] == "collecting disks")
    );
    // Reused in a later boot: refused.
    act_ok(s, "tok-1", "inspect").await;
    let fresh = s.boot_token(mac).await;
    assert_ne!(fresh, token);
    let (st, _) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": {}}))
        .await;
    assert_eq!(st, 401);
    let r = s.metrics().await;
    assert!(r.contains("racklift_agent_token_refused_total"), "{r}");
}
on_both_backends!(agent_tokens_are_per_boot);

async fn expired_agent_token_is_refused(s: &TestServer) {
    let mac = "52:54:00:10:06:01";
    managed(s, "exp-1", mac, "10.9.6.1").await;
    act_ok(s, "exp-1", "inspect").await;
    let token = s.boot_token(mac).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (st, v) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": {}}))
        .await;
    assert_eq!(st, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
}
on_both_backends!(expired_agent_token_is_refused, |c| c.boot.token_ttl =
    Duration::from_secs(1));

async fn concurrent_actions_never_lose_an_update(s: &TestServer) {
    s.create(node_body("race-1", "52:54:00:10:07:01", "10.9.7.1", "pw"))
        .await;
    let g = s.node("race-1").await["generation"].as_i64().unwrap();
    // Twenty operators press "manage" at once, all from the same generation.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let http = s.http.clone();
            let url = format!("{}/v1/nodes/race-1/actions/manage", s.url);
            let token = s.token.clone();
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(token)
                    .json(&json!({"generation": g}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 202 || *c == 409), "{codes:?}");
    s.wait_state("race-1", "manageable").await;
    let path = state_path(&s.events("race-1").await);
    assert_eq!(path, ["enrolled", "verifying", "manageable"]);
    // Concurrent PATCHes with the same generation: one wins, the rest conflict.
    let g = s.node("race-1").await["generation"].as_i64().unwrap();
    let mut codes = Vec::new();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let http = s.http.clone();
            let url = format!("{}/v1/nodes/race-1", s.url);
            let token = s.token.clone();
            tokio::spawn(async move {
                http.patch(url)
                    .bearer_auth(token)
                    .json(&json!({"role": format!("r{i}"), "generation": g}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert_eq!(
        s.node("race-1").await["generation"].as_i64().unwrap(),
        g + 1
    );
}
on_both_backends!(concurrent_actions_never_lose_an_update);

async fn maintenance_pauses_automatic_work(s: &TestServer) {
    let mac = "52:54:00:10:08:01";
    s.create(node_body("mnt-1", mac, "10.9.8.1", "pw")).await;
    let (st, v) = s
        .post("/v1/nodes/mnt-1/actions/maintenance_on", json!({}))
        .await;
    assert_eq!(st, 400, "a reason is required: {v}");
    let (st, _) = s
        .post(
            "/v1/nodes/mnt-1/actions/maintenance_on",
            json!({"reason": "BMC firmware update"}),
        )
        .await;
    assert_eq!(st, 202);
    let (st, v) = s.act("mnt-1", "manage").await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("maintenance")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BMC firmware update")
    );
    act_ok(s, "mnt-1", "maintenance_off").await;
    act_ok(s, "mnt-1", "manage").await;
    s.wait_state("mnt-1", "manageable").await;
    act_ok(s, "mnt-1", "inspect").await;
    s.boot_token(mac).await;
    // In maintenance while inspecting: the timeout is paused; the boot script
    // offers nothing (and says nothing of the node), its event says why.
    s.post(
        "/v1/nodes/mnt-1/actions/maintenance_on",
        json!({"reason": "hands on"}),
    )
    .await;
    let script = s.boot_script(mac).await;
    assert!(
        !script.contains("kernel") && !script.contains("mnt-1") && !script.contains("maintenance"),
        "{script}"
    );
    assert!(
        s.events("mnt-1").await.iter().any(|e| e["kind"] == "boot"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.ends_with("nothing: the node is in maintenance"))),
        "the fetch in maintenance is an event saying why"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        s.node("mnt-1").await["state"],
        "inspecting",
        "the phase deadline must not fire in maintenance"
    );
    act_ok(s, "mnt-1", "maintenance_off").await;
    let token = s.boot_token(mac).await;
    let (st, _) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"a": 1}}),
        )
        .await;
    assert_eq!(st, 202);
    s.wait_state("mnt-1", "manageable").await;
    let ev = s.events("mnt-1").await;
    let m: Vec<&str> = ev
        .iter()
        .filter(|e| e["kind"] == "maintenance")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        m,
        [
            "maintenance_on",
            "maintenance_off",
            "maintenance_on",
            "maintenance_off"
        ]
    );
}
on_both_backends!(maintenance_pauses_automatic_work, |c| c
    .conductor
    .timeouts
    .inspect =
    Duration::from_secs(2));

/// A restart in the middle of a phase: the boot goes on, its token still works,
/// and the node finishes its phase.
async fn restart_case(backend: common::Backend) {
    let Some(mut s) = TestServer::start(backend, |_| {}).await else {
        return;
    };
    let mac = "52:54:00:10:09:01";
    s.create(node_body("rs-1", mac, "10.9.9.1", "pw")).await;
    act_ok(&s, "rs-1", "manage").await;
    s.wait_state("rs-1", "manageable").await;
    act_ok(&s, "rs-1", "inspect").await;
    let token = s.boot_token(mac).await;
    s.halt().await;
    s.boot().await;
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"after": "restart"}}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    s.wait_state("rs-1", "manageable").await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_waiting_work_sqlite() {
    restart_case(common::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_waiting_work_postgres() {
    restart_case(common::Backend::Postgres).await;
}

/// Two racklift processes on one PostgreSQL database share the work: every
/// node is verified exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_postgres() {
    let Some(a) = TestServer::start(common::Backend::Postgres, |_| {}).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::test_config(dir.path(), &a.cfg.database.url);
    cfg.secrets.key_file = a.cfg.secrets.key_file.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = racklift::server::start(cfg, listener).await.unwrap();
    for i in 0..30 {
        s_create(&a, i).await;
    }
    let mut tasks = Vec::new();
    for i in 0..30 {
        let http = a.http.clone();
        let base = if i % 2 == 0 {
            a.url.clone()
        } else {
            format!("http://{}", b.addr)
        };
        let token = a.token.clone();
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/v1/nodes/pg-{i:02}/actions/manage"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    for i in 0..30 {
        a.wait_state(&format!("pg-{i:02}"), "manageable").await;
        let ev = a.events(&format!("pg-{i:02}")).await;
        let done = ev.iter().filter(|e| e["action"] == "done").count();
        assert_eq!(done, 1, "pg-{i:02} verified {done} times");
    }
    b.stop().await;
    a.finish().await;
}

async fn s_create(s: &TestServer, i: usize) {
    s.create(node_body(
        &format!("pg-{i:02}"),
        &format!("52:54:00:11:00:{i:02x}"),
        &format!("10.9.10.{i}"),
        "pw",
    ))
    .await;
}

async fn heartbeat_says_wait_then_poweroff(s: &TestServer) {
    let mac = "52:54:00:10:0a:01";
    managed(s, "hb-1", mac, "10.9.11.1").await;
    act_ok(s, "hb-1", "provide").await;
    let token = s.boot_token(mac).await;
    let (_, v) = s.agent(&token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!(v["command"], "wait");
    // Maintenance holds the step at its finishing stage once the report is in.
    let (st, _) = s
        .post(
            "/v1/nodes/hb-1/actions/maintenance_on",
            json!({"reason": "watch the agent"}),
        )
        .await;
    assert_eq!(st, 202);
    let (st, _) = s
        .agent(
            &token,
            "/v1/agent/status",
            json!({"ok": true, "message": "wiped"}),
        )
        .await;
    assert_eq!(st, 202);
    let (_, v) = s.agent(&token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!(v["command"], "poweroff", "{v}");
    act_ok(s, "hb-1", "maintenance_off").await;
    s.wait_state("hb-1", "available").await;
}
on_both_backends!(heartbeat_says_wait_then_poweroff);

/// A phase deadline that fires while a BMC failure is being retried keeps the
/// failure in `last_error`: the deadline is the end, not the cause.
async fn a_deadline_keeps_the_last_failure(s: &TestServer) {
    s.create(node_body(
        "late",
        "52:54:00:10:09:01",
        "unreachable-9",
        "pw",
    ))
    .await;
    act_ok(s, "late", "manage").await;
    let n = s.wait_state("late", "enrolled").await;
    let e = n["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains("verify timed out") && e.contains("last error") && e.contains("did not answer"),
        "{n}"
    );
}
on_both_backends!(a_deadline_keeps_the_last_failure, |c| {
    // Retried far longer than the phase may take.
    c.conductor.max_attempts = 1000;
    c.conductor.retry_backoff = std::time::Duration::from_millis(300);
    c.conductor.timeouts.verify = std::time::Duration::from_secs(2);
});
