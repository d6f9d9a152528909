//! What somebody on the boot network can and cannot do with racklift's boot
//! script and agent endpoints, on both backends: agent tokens handed out once
//! per boot and good only for the report their step takes, a boot script that
//! tells a MAC without a step nothing, tokens checked before bodies, bounded
//! agent bodies, and discovery that squats no MAC, names no node to its
//! caller and enrols at a bounded rate.

mod common;

use common::{TestServer, act_ok, node_body};
use racklift::agent::{Root, collect};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Enrols a fake-BMC node and takes it to manageable.
async fn managed(s: &TestServer, name: &str, mac: &str, bmc: &str) {
    s.create(node_body(name, mac, bmc, "pw")).await;
    act_ok(s, name, "manage").await;
    s.wait_state(name, "manageable").await;
}

/// The agent inventory of a captured machine, booted from `bootif`.
fn agent_inventory(bootif: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent/qemu-seabios");
    serde_json::to_value(collect::inventory(&Root::new(dir), Some(bootif))).unwrap()
}

/// The agent inventory with its NICs' MACs replaced by `macs`.
fn inventory_with_macs(macs: &[&str]) -> Value {
    let mut inv = agent_inventory("");
    let nic = inv["nics"][0].clone();
    inv["nics"] = macs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut n = nic.clone();
            n["name"] = json!(format!("eth{i}"));
            n["mac"] = json!(m);
            n
        })
        .collect();
    inv["system"]["serial"] = Value::Null;
    inv
}

async fn raw_count(s: &TestServer, sql: &str) -> i64 {
    use sqlx::Row;
    let db = s.raw_db().await;
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&db)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    db.close().await;
    n
}

async fn a_token_is_handed_out_once_per_boot(s: &TestServer) {
    let mac = "52:54:00:20:00:01";
    managed(s, "once-1", mac, "10.20.0.1").await;
    act_ok(s, "once-1", "inspect").await;
    let token = s.boot_token(mac).await;
    // Fetched again during the same boot, before the agent used it: the same.
    for _ in 0..3 {
        let again = common::script_token(&s.boot_script(mac).await);
        assert_eq!(again.as_deref(), Some(token.as_str()));
    }
    // Its text is sealed at rest, never in the clear.
    assert_eq!(
        raw_count(
            s,
            &format!("SELECT COUNT(*) FROM agent_tokens WHERE sealed LIKE '%{token}%'")
        )
        .await,
        0
    );
    // The agent uses it: nobody gets it from the boot script any more.
    let (st, v) = s.agent(&token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!((st, &v["command"]), (200, &json!("wait")), "{v}");
    let script = s.boot_script(mac).await;
    assert!(
        common::script_token(&script).is_none()
            && !script.contains("kernel")
            && script.contains("started already"),
        "{script}"
    );
    assert_eq!(
        raw_count(
            s,
            "SELECT COUNT(*) FROM agent_tokens WHERE sealed IS NOT NULL"
        )
        .await,
        0,
        "a used token's text is not kept"
    );
    // The agent that has it goes on.
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": {"cpus": 2}}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    s.wait_state("once-1", "manageable").await;
    // The next boot (cleaning) has a token of its own; the old one is dead.
    act_ok(s, "once-1", "provide").await;
    let clean = s.boot_token(mac).await;
    assert_ne!(clean, token);
    let (st, _) = s.agent(&token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!(st, 401);
    // One token row per step, however often the script was fetched.
    assert_eq!(raw_count(s, "SELECT COUNT(*) FROM agent_tokens").await, 2);
    let (st, _) = s
        .agent(&clean, "/v1/agent/status", json!({"ok": true}))
        .await;
    assert_eq!(st, 202);
    s.wait_state("once-1", "available").await;
}
on_both_backends!(a_token_is_handed_out_once_per_boot);

async fn a_token_reports_only_what_its_step_takes(s: &TestServer) {
    let mac = "52:54:00:20:00:02";
    managed(s, "scope-1", mac, "10.20.0.2").await;
    act_ok(s, "scope-1", "inspect").await;
    let token = s.boot_token(mac).await;
    // Inspection takes an inventory, not a result.
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/status",
            json!({"ok": true, "message": "inspected"}),
        )
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (403, &json!("wrong_step")),
        "{v}"
    );
    assert_eq!(s.node("scope-1").await["state"], "inspecting");
    let inv = json!({"system": {"serial": "REAL-1"}});
    let (st, _) = s
        .agent(&token, "/v1/agent/inventory", json!({"inventory": inv}))
        .await;
    assert_eq!(st, 202);
    s.wait_state("scope-1", "manageable").await;

    // Cleaning takes a result, not an inventory: the stored one stays.
    act_ok(s, "scope-1", "provide").await;
    let clean = s.boot_token(mac).await;
    let forged = json!({"system": {"serial": "FORGED"}});
    let (st, v) = s
        .agent(&clean, "/v1/agent/inventory", json!({"inventory": forged}))
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (403, &json!("wrong_step")),
        "{v}"
    );
    let (_, stored) = s.get("/v1/nodes/scope-1/inventory").await;
    assert_eq!(stored, inv, "a cleaning token cannot replace the inventory");
    assert_eq!(s.node("scope-1").await["state"], "cleaning");
    let events = s.events("scope-1").await;
    assert!(
        events.iter().any(|e| e["kind"] == "agent"
            && e["reason"].as_str().is_some_and(
                |r| r.starts_with("agent report refused: an inventory does not fit the clean step")
            )),
        "the refusal is an event: {events:?}"
    );
    assert!(s.metrics().await.contains("agent_reports_refused"));
    // Its bodies are bounded, and the result is taken.
    let (st, v) = s
        .agent(
            &clean,
            "/v1/agent/status",
            json!({"ok": true, "message": "x".repeat(2001)}),
        )
        .await;
    assert_eq!((st, &v["error"]["field"]), (400, &json!("message")), "{v}");
    let (st, v) = s
        .agent(
            &clean,
            "/v1/agent/log",
            json!({"lines": ["fine", "y".repeat(1001)]}),
        )
        .await;
    assert_eq!((st, &v["error"]["field"]), (400, &json!("lines[1]")), "{v}");
    let (st, _) = s
        .agent(
            &clean,
            "/v1/agent/status",
            json!({"ok": true, "message": "disks wiped"}),
        )
        .await;
    assert_eq!(st, 202);
    s.wait_state("scope-1", "available").await;
}
on_both_backends!(a_token_reports_only_what_its_step_takes);

async fn the_boot_script_tells_a_mac_without_a_step_nothing(s: &TestServer) {
    let mac = "52:54:00:20:00:03";
    managed(s, "quiet-secret-name", mac, "10.20.0.3").await;
    let known = s.boot_script(mac).await;
    let unknown = s.boot_script("52:54:00:20:00:99").await;
    assert_eq!(
        known.replace(mac, "MAC"),
        unknown.replace("52:54:00:20:00:99", "MAC"),
        "an enrolled MAC without a step reads like an unknown one"
    );
    assert!(
        !known.contains("quiet-secret-name")
            && !known.contains("manageable")
            && !known.contains("kernel"),
        "{known}"
    );
    // Every fetch is accounted for, on one event row with a count, and adds
    // no token.
    for _ in 0..49 {
        s.boot_script(mac).await;
    }
    let fetches: Vec<Value> = s
        .events("quiet-secret-name")
        .await
        .into_iter()
        .filter(|e| e["kind"] == "boot")
        .collect();
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    assert_eq!(fetches[0]["repeats"], 50);
    assert!(fetches[0]["last_at"].is_string());
    assert!(
        fetches[0]["reason"]
            .as_str()
            .unwrap()
            .contains("nothing: the node is manageable with no step"),
        "the operator sees why: {fetches:?}"
    );
    assert_eq!(raw_count(s, "SELECT COUNT(*) FROM agent_tokens").await, 0);
}
on_both_backends!(the_boot_script_tells_a_mac_without_a_step_nothing);

async fn tokens_are_checked_before_bodies(s: &TestServer) {
    for path in [
        "/v1/agent/inventory",
        "/v1/agent/status",
        "/v1/agent/log",
        "/v1/agent/heartbeat",
    ] {
        for token in ["", "rla_forged", "rld_forged"] {
            let mut r = s.http.post(format!("{}{path}", s.url));
            if !token.is_empty() {
                r = r.bearer_auth(token);
            }
            let resp = r
                .header("content-type", "application/json")
                .body("{\"not json")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{path} with '{token}'");
        }
    }
    // Every refusal is counted, though the log holds one line per 10 s.
    let m = s.metrics().await;
    let refused: u64 = m
        .lines()
        .find(|l| l.starts_with("racklift_agent_token_refused"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(refused, 8, "{m}");
}
on_both_backends!(tokens_are_checked_before_bodies);

fn with_discovery(cfg: &mut racklift::config::Config) {
    cfg.discovery.enabled = true;
}

async fn discovery_token(s: &TestServer, mac: &str) -> String {
    let script = s.boot_script(mac).await;
    common::script_token(&script).unwrap_or_else(|| panic!("no token in {script}"))
}

async fn a_discovered_machine_squats_no_mac(s: &TestServer) {
    let real = "52:54:00:21:00:01";
    s.create(node_body("real-1", real, "10.21.0.1", "pw")).await;
    // An outsider's "machine" claims real-1's MAC and a free one.
    let boot = "52:54:00:21:00:10";
    let free = "52:54:00:21:00:11";
    let token = discovery_token(s, boot).await;
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": inventory_with_macs(&[boot, real, free])}),
        )
        .await;
    assert_eq!(st, 202, "{v}");
    let name = v["node"].as_str().unwrap().to_string();
    assert_eq!(s.node(&name).await["macs"], json!([boot, free]));
    assert_eq!(s.node("real-1").await["macs"], json!([real]));
    let said = |events: Vec<Value>, what: &str| {
        events.iter().any(|e| {
            e["kind"] == "discovery" && e["reason"].as_str().is_some_and(|r| r.contains(what))
        })
    };
    assert!(said(
        s.events(&name).await,
        &format!("{real} not taken: it is a port of node 'real-1'")
    ));
    assert!(said(
        s.events("real-1").await,
        &format!("reported MAC {real}, a port of this node")
    ));

    // The operator enrols the machine that really has the free MAC: it is
    // taken from the discovered node nobody has managed, and the answer says so.
    let (st, v) = s
        .post(
            "/v1/nodes",
            json!({"name": "real-2", "macs": [free], "bmc": {"driver": "fake", "address": "10.21.0.2"}}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains(free) && notes.contains(&name),
        "the answer says what was taken: {v}"
    );
    assert_eq!(s.node(&name).await["macs"], json!([boot]));
    assert_eq!(s.node("real-2").await["macs"], json!([free]));
    // The DHCP directory follows: the free MAC is real-2's now.
    assert_eq!(s.node_by_mac(free).await["name"], "real-2");
    // Once managed, a discovered node keeps its MACs.
    act_ok(s, &name, "manage").await;
    s.wait_state(&name, "manageable").await;
    let (st, v) = s
        .post(
            "/v1/nodes",
            json!({"name": "real-3", "macs": [boot], "bmc": {"driver": "fake", "address": "10.21.0.3"}}),
        )
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (409, &json!("duplicate_mac")),
        "{v}"
    );
    // An operator node's MACs are never taken by an operator's enrolment.
    let (st, _) = s
        .post("/v1/nodes", json!({"name": "real-4", "macs": [real]}))
        .await;
    assert_eq!(st, 409);
}
on_both_backends!(a_discovered_machine_squats_no_mac, with_discovery);

async fn discovery_answers_name_no_node(s: &TestServer) {
    let mac = "52:54:00:22:00:01";
    let token = discovery_token(s, mac).await;
    // Meanwhile the operator enrols the machine under a name of their own.
    s.create(node_body("private-name", mac, "10.22.0.1", "pw"))
        .await;
    let (st, v) = s
        .agent(
            &token,
            "/v1/agent/inventory",
            json!({"inventory": inventory_with_macs(&[mac])}),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(!v.to_string().contains("private-name"), "{v}");
    // A discovery token posts an inventory, nothing else.
    let other = discovery_token(s, "52:54:00:22:00:02").await;
    let (st, v) = s
        .agent(&other, "/v1/agent/status", json!({"ok": true}))
        .await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (403, &json!("wrong_step")),
        "{v}"
    );
}
on_both_backends!(discovery_answers_name_no_node, with_discovery);

async fn discovery_enrols_at_a_bounded_rate(s: &TestServer) {
    let mut answers = Vec::new();
    for i in 0..3 {
        let mac = format!("52:54:00:23:00:{i:02}");
        let token = discovery_token(s, &mac).await;
        let r = s
            .http
            .post(format!("{}/v1/agent/inventory", s.url))
            .bearer_auth(&token)
            .json(&json!({"inventory": inventory_with_macs(&[&mac])}))
            .send()
            .await
            .unwrap();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        answers.push((body, retry_after, token));
    }
    let (st, _) = s.get("/v1/nodes").await;
    assert_eq!(st, 200);
    let (body, retry_after, token) = &answers[2];
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{retry_after:?}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("discovery.max_per_minute"),
        "{body}"
    );
    assert!(answers[0].0["node"].is_string() && answers[1].0["node"].is_string());
    // The refused machine's token is not spent: it enrols once the minute
    // has room (its heartbeat still works meanwhile).
    let (st, _) = s.agent(token, "/v1/agent/heartbeat", json!({})).await;
    assert_eq!(st, 200);
    let (_, page) = s.get("/v1/nodes").await;
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
}
on_both_backends!(discovery_enrols_at_a_bounded_rate, |c| {
    c.discovery.enabled = true;
    c.discovery.max_per_minute = 2;
});
