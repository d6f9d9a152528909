//! The REST API on both backends: enrolment, validation, auth, listing, events,
//! the live stream, metrics and the OpenAPI document.

mod common;

use common::{TestServer, counter};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use std::time::Duration;

fn fake_node(name: &str, mac: &str) -> Value {
    json!({"name": name, "boot_mac": mac, "bmc": {"driver": "fake", "address": format!("bmc-{name}"), "username": "admin", "password": "pw-of-{name}-s3cret"}})
}

async fn node_count(s: &TestServer) -> usize {
    let (_, page) = s.get("/v1/nodes?limit=1000").await;
    page["nodes"].as_array().map(Vec::len).unwrap_or(0)
}

async fn event_total(s: &TestServer) -> i64 {
    s.store().last_event_id().await.unwrap()
}

async fn enrol_read_update_delete(s: &TestServer) {
    let n = s.create(json!({"name": "compute-001", "boot_mac": "52-54-00-AA-00-01", "macs": ["52:54:00:aa:00:02"],
        "bmc": {"driver": "ipmi", "address": "10.1.0.1", "port": 623, "username": "admin", "password": "hunter2-secret"}, "profile": "compute"}))
    .await;
    assert_eq!(n["state"], "enrolled");
    assert_eq!(n["generation"], 1);
    assert_eq!(n["boot_mac"], "52:54:00:aa:00:01");
    assert_eq!(n["macs"], json!(["52:54:00:aa:00:01", "52:54:00:aa:00:02"]));
    assert_eq!(n["bmc"]["password_set"], true);
    assert_eq!(n["allowed_actions"], json!(["manage"]));
    let id = n["id"].as_str().unwrap().to_string();

    // By id and by name; the password is nowhere in what the API returns.
    let by_name = s.node("compute-001").await;
    assert_eq!(by_name["id"], id.as_str());
    for path in [
        format!("/v1/nodes/{id}"),
        "/v1/nodes".into(),
        format!("/v1/nodes/{id}/events"),
    ] {
        let (_, v) = s.get(&path).await;
        assert!(
            !v.to_string().contains("hunter2"),
            "{path} leaks the password"
        );
    }
    // ...nor in the database, where it is sealed.
    let db = s.raw_db().await;
    let row = sqlx::query("SELECT bmc_password FROM nodes WHERE id = $1")
        .bind(id.clone())
        .fetch_one(&db)
        .await
        .unwrap();
    let sealed: String = row.try_get("bmc_password").unwrap();
    assert!(
        sealed.starts_with("v1:") && !sealed.contains("hunter2"),
        "{sealed}"
    );
    db.close().await;

    // PATCH changes only what is given and bumps the generation.
    let (st, v) = s
        .req(
            Method::PATCH,
            "/v1/nodes/compute-001",
            Some(json!({"role": "nova-compute", "generation": 1})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["role"], "nova-compute");
    assert_eq!(v["profile"], "compute");
    assert_eq!(v["generation"], 2);
    // A stale generation is a conflict, and changes nothing.
    let (st, v) = s
        .req(
            Method::PATCH,
            "/v1/nodes/compute-001",
            Some(json!({"role": "other", "generation": 1})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    assert_eq!(s.node(&id).await["role"], "nova-compute");
    // null clears.
    let (st, v) = s
        .req(
            Method::PATCH,
            &format!("/v1/nodes/{id}"),
            Some(json!({"profile": null})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["profile"], Value::Null);

    // Delete: gone, but its history stays readable by UUID.
    let (st, _) = s.req(Method::DELETE, "/v1/nodes/compute-001", None).await;
    assert_eq!(st, 204);
    let (st, v) = s.get("/v1/nodes/compute-001").await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
    let ev = s.events(&id).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "updated", "updated", "deleted"]);
    // Its MACs are free again.
    s.create(json!({"name": "again", "boot_mac": "52:54:00:aa:00:01"}))
        .await;
}
on_both_backends!(enrol_read_update_delete);

async fn bad_input_is_refused_and_nothing_is_written(s: &TestServer) {
    s.create(fake_node("n1", "52:54:00:00:00:01")).await;
    let before = (node_count(s).await, event_total(s).await);
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "bad mac",
            json!({"name": "x", "boot_mac": "52:54:00:00:00:zz"}),
            400,
            "invalid_body",
            "boot_mac",
        ),
        (
            "multicast mac",
            json!({"name": "x", "macs": ["01:00:5e:00:00:01"]}),
            400,
            "invalid_body",
            "multicast",
        ),
        (
            "bad ip",
            json!({"name": "x", "bmc": {"driver": "ipmi", "address": "999.1.1.1"}}),
            400,
            "invalid_field",
            "bmc.address",
        ),
        (
            "ipmi without address",
            json!({"name": "x", "bmc": {"driver": "ipmi"}}),
            400,
            "invalid_field",
            "bmc.address",
        ),
        (
            "unknown driver",
            json!({"name": "x", "bmc": {"driver": "telnet"}}),
            400,
            "invalid_body",
            "bmc.driver",
        ),
        (
            "unknown field",
            json!({"name": "x", "colour": "red"}),
            400,
            "invalid_body",
            "unknown field `colour`",
        ),
        (
            "bad name",
            json!({"name": "Bad Name"}),
            400,
            "invalid_field",
            "name",
        ),
        (
            "duplicate name",
            json!({"name": "n1"}),
            409,
            "duplicate_name",
            "n1",
        ),
        (
            "duplicate mac",
            json!({"name": "x", "macs": ["52:54:00:00:00:01"]}),
            409,
            "duplicate_mac",
            "52:54:00:00:00:01",
        ),
        (
            "mac twice",
            json!({"name": "x", "macs": ["52:54:00:00:00:09", "52:54:00:00:00:09"]}),
            400,
            "invalid_field",
            "twice",
        ),
        (
            "wrong type",
            json!({"name": 5}),
            400,
            "invalid_body",
            "name",
        ),
    ];
    for (what, body, status, code, needle) in cases {
        let (st, v) = s.post("/v1/nodes", body).await;
        assert_eq!(st, status, "{what}: {v}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{what}: {v}"
        );
    }
    // Malformed JSON and an oversized body.
    let raw = |body: Vec<u8>| {
        s.http
            .post(format!("{}/v1/nodes", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = raw(b"{\"name\": \"x\",".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "malformed_json");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column 13"),
        "{v}"
    );
    let mut big = b"{\"name\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    big.extend(b"\"}");
    // Its own connection: the server stops reading a body past the limit.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/nodes", s.url))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    // Bad PATCH and bad queries.
    let (st, v) = s
        .req(
            Method::PATCH,
            "/v1/nodes/n1",
            Some(json!({"macs": ["nope"]})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    let (st, v) = s.get("/v1/nodes?state=flying").await;
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("enrolled, verifying"),
        "{v}"
    );
    let (st, _) = s.get("/v1/nodes?limit=0").await;
    assert_eq!(st, 400);
    let (st, v) = s.get("/v1/nodes?colour=red").await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.act("n1", "fly").await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("unknown_action")),
        "{v}"
    );
    // Nothing was written by any refused request.
    assert_eq!((node_count(s).await, event_total(s).await), before);
    // And the server still answers.
    assert_eq!(s.get("/healthz").await.0, 200);
}
on_both_backends!(bad_input_is_refused_and_nothing_is_written);

async fn auth_roles(s: &TestServer) {
    let (st, v) = s.req_as("", Method::GET, "/v1/nodes", None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (st, _) = s.req_as("rl_forged", Method::GET, "/v1/nodes", None).await;
    assert_eq!(st, 401);
    // /healthz and the OpenAPI document need no token.
    assert_eq!(s.req_as("", Method::GET, "/healthz", None).await.0, 200);
    assert_eq!(
        s.req_as("", Method::GET, "/v1/openapi.json", None).await.0,
        200
    );
    // A read-only token reads, and is refused every write.
    let (st, t) = s
        .post(
            "/v1/tokens",
            json!({"name": "dashboard", "role": "readonly"}),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let ro = t["secret"].as_str().unwrap().to_string();
    assert_eq!(s.req_as(&ro, Method::GET, "/v1/nodes", None).await.0, 200);
    let (st, v) = s
        .req_as(&ro, Method::POST, "/v1/nodes", Some(json!({"name": "x"})))
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(s.req_as(&ro, Method::GET, "/v1/tokens", None).await.0, 403);
    // Tokens are stored hashed.
    let db = s.raw_db().await;
    let rows = sqlx::query("SELECT hash FROM api_tokens")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let h: String = r.try_get("hash").unwrap();
        assert!(h.len() == 64 && h != ro && h != s.token);
    }
    db.close().await;
    // A revoked token stops working.
    let id = t["id"].as_str().unwrap();
    assert_eq!(
        s.req(Method::DELETE, &format!("/v1/tokens/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(s.req_as(&ro, Method::GET, "/v1/nodes", None).await.0, 401);
}
on_both_backends!(auth_roles);

async fn list_filters_and_pages(s: &TestServer) {
    for i in 0..25 {
        let mut body = fake_node(&format!("node-{i:03}"), &format!("52:54:00:00:01:{i:02x}"));
        if i % 5 == 0 {
            body["profile"] = json!("storage");
        }
        s.create(body).await;
    }
    for i in 0..3 {
        let (st, v) = s
            .post(
                &format!("/v1/nodes/node-{i:03}/actions/maintenance_on"),
                json!({"reason": "disk swap"}),
            )
            .await;
        assert_eq!(st, 202, "{v}");
    }
    let (_, p) = s.get("/v1/nodes?profile=storage").await;
    let names: Vec<&str> = p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["node-000", "node-005", "node-010", "node-015", "node-020"]
    );
    let (_, p) = s.get("/v1/nodes?maintenance=true").await;
    assert_eq!(p["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(p["nodes"][0]["maintenance_reason"], "disk swap");
    let (_, p) = s
        .get("/v1/nodes?maintenance=false&profile=storage&state=enrolled")
        .await;
    assert_eq!(p["nodes"].as_array().unwrap().len(), 4);
    // Pages of 10 cover every node once, in name order.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (_, p) = s
            .get(&format!("/v1/nodes?state=enrolled&limit=10&after={after}"))
            .await;
        seen.extend(
            p["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_string()),
        );
        match p["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 25);
    assert_eq!(seen, sorted);
}
on_both_backends!(list_filters_and_pages);

async fn live_event_stream_resumes_without_loss(s: &TestServer) {
    use futures::StreamExt;
    let resp = s.event_stream(None).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    s.create(fake_node("sse-1", "52:54:00:00:02:01")).await;
    let (st, _) = s.act("sse-1", "manage").await;
    assert_eq!(st, 202);
    s.wait_state("sse-1", "manageable").await;
    // Read until the verifying -> manageable event arrives.
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("\"to_state\":\"manageable\"") {
                return;
            }
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "stream never showed the node becoming manageable:\n{text}"
    );
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        text.contains("event: created") && text.contains("event: state"),
        "{text}"
    );
    drop(body);
    // Reconnecting with Last-Event-ID replays what came after it, and only that.
    let first = ids[0];
    let resp = s.event_stream(Some(first)).await;
    let mut body = resp.bytes_stream();
    let mut replay = String::new();
    let total = s.events("sse-1").await.len();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            replay.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if replay.matches("\nid:").count() + usize::from(replay.starts_with("id:")) >= total - 1
            {
                return;
            }
        }
    })
    .await;
    let replayed: Vec<i64> = replay
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(replayed.len(), total - 1, "{replay}");
    assert!(replayed.iter().all(|i| *i > first));
}
on_both_backends!(live_event_stream_resumes_without_loss);

/// CPU time (user + system) of this process, the server included, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

async fn idle_event_streams_wait(s: &TestServer) {
    use futures::StreamExt;
    for i in 0..100 {
        s.create(fake_node(
            &format!("idle-{i}"),
            &format!("52:54:00:00:05:{i:02x}"),
        ))
        .await;
    }
    let mut streams = Vec::new();
    for _ in 0..200 {
        let resp = s.event_stream(None).await;
        assert_eq!(resp.status(), 200);
        streams.push(resp.bytes_stream());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reads_before = counter(&s.metrics().await, "racklift_event_stream_reads_total");
    let ticks_before = cpu_ticks();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reads = counter(&s.metrics().await, "racklift_event_stream_reads_total") - reads_before;
    let ticks = cpu_ticks() - ticks_before;
    eprintln!("200 idle streams over 10 s: {reads} reads, {ticks} CPU ticks");
    // Each idle stream reads on its 5 s timer only: about two reads each.
    assert!(
        reads <= 200 * 4,
        "200 idle streams read the events {reads} times in 10 s: the stream loop does not wait"
    );
    // A new event still wakes them all at once.
    s.create(fake_node("idle-wake", "52:54:00:00:06:01")).await;
    let first = streams.first_mut().unwrap();
    let mut text = String::new();
    let woke = tokio::time::timeout(Duration::from_secs(4), async {
        while let Some(chunk) = first.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("idle-wake") || text.contains("event: created") {
                return;
            }
        }
    })
    .await;
    assert!(woke.is_ok(), "an idle stream missed a new event: {text}");
}
on_both_backends!(idle_event_streams_wait);

async fn metrics_and_openapi(s: &TestServer) {
    s.create(fake_node("m1", "52:54:00:00:03:01")).await;
    let (_, _) = s.get("/v1/nodes/m1").await;
    let text = s.metrics().await;
    assert!(
        text.contains("racklift_nodes{state=\"enrolled\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "racklift_http_requests_total{method=\"GET\",route=\"/v1/nodes/{id}\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE racklift_http_request_duration_seconds histogram"));
    let (st, doc) = s.get("/v1/openapi.json").await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/v1/nodes",
        "/v1/nodes/{id}",
        "/v1/nodes/{id}/actions/{action}",
        "/v1/events/stream",
        "/v1/agent/inventory",
        "/healthz",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"]["Node"].is_object());
}
on_both_backends!(metrics_and_openapi);

async fn list_shows_every_change_at_once(s: &TestServer) {
    s.create(fake_node("c1", "52:54:00:00:04:01")).await;
    let (_, p) = s.get("/v1/nodes").await;
    assert_eq!(p["nodes"][0]["role"], Value::Null);
    let (st, _) = s
        .req(
            Method::PATCH,
            "/v1/nodes/c1",
            Some(json!({"role": "ceph-osd"})),
        )
        .await;
    assert_eq!(st, 200);
    let (_, p) = s.get("/v1/nodes").await;
    assert_eq!(p["nodes"][0]["role"], "ceph-osd");
    assert_eq!(p["nodes"][0], s.node("c1").await, "list and show agree");
    s.act("c1", "manage").await;
    s.wait_state("c1", "manageable").await;
    let (_, p) = s.get("/v1/nodes?state=manageable").await;
    assert_eq!(p["nodes"][0]["power_state"], "off");
    assert_eq!(
        p["nodes"][0]["allowed_actions"],
        json!(["manage", "inspect", "provide"])
    );
    assert_eq!(s.req(Method::DELETE, "/v1/nodes/c1", None).await.0, 204);
    let (_, p) = s.get("/v1/nodes").await;
    assert_eq!(p["nodes"], json!([]));
}
on_both_backends!(list_shows_every_change_at_once);

async fn concurrent_enrolments_each_get_their_own_answer(s: &TestServer) {
    // 30 distinct nodes, plus one that reuses a name and one that reuses a MAC,
    // all at once: the group writer must not let a duplicate sink its batch.
    let mut bodies: Vec<Value> = (0..30).map(|i| json!({"name": format!("burst-{i:02}"), "boot_mac": format!("52:54:00:05:00:{i:02x}")})).collect();
    bodies.push(json!({"name": "burst-00", "boot_mac": "52:54:00:05:01:00"}));
    bodies.push(json!({"name": "burst-dup-mac", "boot_mac": "52:54:00:05:00:01"}));
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let http = s.http.clone();
            let url = format!("{}/v1/nodes", s.url);
            let token = s.token.clone();
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&b)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut created = 0;
    let mut codes = Vec::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        match st {
            201 => created += 1,
            409 => codes.push(v["error"]["code"].as_str().unwrap().to_string()),
            other => panic!("{other}: {v}"),
        }
    }
    codes.sort();
    assert_eq!(created, 30);
    assert_eq!(codes, ["duplicate_mac", "duplicate_name"]);
    assert_eq!(node_count(s).await, 30);
    let created_events = s
        .store()
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "created")
        .count();
    assert_eq!(
        created_events, 30,
        "one created event per node, none for the refused"
    );
}
on_both_backends!(concurrent_enrolments_each_get_their_own_answer);

async fn every_field_is_bounded_before_the_store(s: &TestServer) {
    s.create(fake_node("b1", "52:54:00:00:06:01")).await;
    let before = (node_count(s).await, event_total(s).await);
    // 45,000 MACs (a 900 KB body): refused at once, naming the field and the limit.
    let macs: Vec<String> = (0..45_000u32)
        .map(|i| {
            format!(
                "52:54:01:{:02x}:{:02x}:{:02x}",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let (st, v) = s
        .post("/v1/nodes", json!({"name": "many", "macs": macs}))
        .await;
    println!("45,000 MACs refused in {:?}", started.elapsed());
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_field")),
        "{v}"
    );
    assert_eq!(v["error"]["field"], "macs", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 64"),
        "{v}"
    );
    let (st, v) = s
        .req(Method::PATCH, "/v1/nodes/b1", Some(json!({"macs": macs})))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("macs")),
        "{v}"
    );
    // 64 with the boot MAC is the most.
    let (st, v) = s
        .post(
            "/v1/nodes",
            json!({"name": "m65", "boot_mac": "52:54:02:00:00:99", "macs": &macs[..64]}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("macs")),
        "{v}"
    );
    let long = "a".repeat(10_000);
    let bmc = |k: &str| {
        let mut b = json!({"driver": "fake", "address": "bmc-x"});
        b[k] = json!(long);
        json!({"name": "x", "bmc": b})
    };
    // (what, path, method, body, field, limit)
    let cases: Vec<(&str, Method, Value, &str, &str)> = vec![
        (
            "/v1/nodes",
            Method::POST,
            json!({"name": long}),
            "name",
            "63",
        ),
        (
            "/v1/nodes",
            Method::POST,
            bmc("address"),
            "bmc.address",
            "270",
        ),
        (
            "/v1/nodes",
            Method::POST,
            bmc("username"),
            "bmc.username",
            "64",
        ),
        (
            "/v1/nodes",
            Method::POST,
            bmc("password"),
            "bmc.password",
            "256",
        ),
        (
            "/v1/nodes",
            Method::POST,
            json!({"name": "x", "profile": long}),
            "profile",
            "63",
        ),
        (
            "/v1/nodes",
            Method::POST,
            json!({"name": "x", "role": long}),
            "role",
            "63",
        ),
        (
            "/v1/nodes/b1",
            Method::PATCH,
            json!({"name": long}),
            "name",
            "63",
        ),
        (
            "/v1/nodes/b1",
            Method::PATCH,
            json!({"bmc": {"password": long}}),
            "bmc.password",
            "256",
        ),
        (
            "/v1/nodes/b1",
            Method::PATCH,
            json!({"bmc": {"username": long}}),
            "bmc.username",
            "64",
        ),
        (
            "/v1/nodes/b1",
            Method::PATCH,
            json!({"role": long}),
            "role",
            "63",
        ),
        (
            "/v1/nodes/b1/actions/maintenance_on",
            Method::POST,
            json!({"reason": long}),
            "reason",
            "1000",
        ),
        (
            "/v1/nodes/b1/power",
            Method::POST,
            json!({"action": long}),
            "action",
            "32",
        ),
        (
            "/v1/nodes/b1/boot-device",
            Method::POST,
            json!({"device": "pxe", "mode": long}),
            "mode",
            "32",
        ),
        (
            "/v1/nodes/b1/bios",
            Method::PATCH,
            json!({"attributes": {"BootMode": long}}),
            "attributes.BootMode",
            "1024",
        ),
        (
            "/v1/nodes/b1/raid",
            Method::POST,
            json!({"level": "1", "drives": ["disk0"], "name": long}),
            "name",
            "256",
        ),
        (
            "/v1/nodes/b1/raid",
            Method::POST,
            json!({"level": "1", "drives": [long]}),
            "drives",
            "256",
        ),
        (
            "/v1/tokens",
            Method::POST,
            json!({"name": long, "role": "readonly"}),
            "name",
            "100",
        ),
        (
            "/v1/profiles/test",
            Method::POST,
            json!({"node": long}),
            "node",
            "63",
        ),
    ];
    for (path, method, body, field, limit) in cases {
        let (st, v) = s.req(method.clone(), path, Some(body)).await;
        assert_eq!(st, 400, "{method} {path} {field}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("at most {limit}")), "{path}: {v}");
        assert!(!msg.contains(&long), "{path}: the message echoes the value");
    }
    let (st, v) = s
        .req(Method::DELETE, &format!("/v1/nodes/b1/raid/{long}"), None)
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("volume")),
        "{v}"
    );
    // Nothing was written, the fake machine saw nothing, and the server answers.
    assert_eq!((node_count(s).await, event_total(s).await), before);
    assert!(
        s.drivers()
            .fake
            .machine("bmc-b1")
            .is_none_or(|m| m.commands.is_empty())
    );
    assert_eq!(s.get("/healthz").await.0, 200);
}
on_both_backends!(every_field_is_bounded_before_the_store);

async fn missing_raid_volume_is_404_and_power_reads_in_enrolled(s: &TestServer) {
    s.create(fake_node("r1", "52:54:00:00:07:01")).await;
    // An enrolled node's power can be read (to check its BMC before manage);
    // the node stays enrolled.
    let (st, v) = s.get("/v1/nodes/r1/power").await;
    assert_eq!((st, v["power_state"].as_str()), (200, Some("off")), "{v}");
    assert_eq!(s.node("r1").await["state"], "enrolled");
    let mut wrong = fake_node("r2", "52:54:00:00:07:02");
    wrong["bmc"]["password"] = json!("wrong");
    s.create(wrong).await;
    let (st, v) = s.get("/v1/nodes/r2/power").await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("bmc_auth")),
        "{v}"
    );
    assert_eq!(s.node("r2").await["state"], "enrolled");

    let (st, v) = s
        .post(
            "/v1/nodes/r1/raid",
            json!({"level": "1", "drives": ["disk0", "disk1"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let vol = v["id"].as_str().unwrap().to_string();
    let (st, v) = s.req(Method::DELETE, "/v1/nodes/r1/raid/nope", None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("volume_not_found")),
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("'nope'") && msg.contains(&vol), "{v}");
    let (st, _) = s
        .req(Method::DELETE, &format!("/v1/nodes/r1/raid/{vol}"), None)
        .await;
    assert_eq!(st, 204);
    let (st, v) = s
        .req(Method::DELETE, &format!("/v1/nodes/r1/raid/{vol}"), None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("volume_not_found")),
        "{v}"
    );
}
on_both_backends!(missing_raid_volume_is_404_and_power_reads_in_enrolled);

async fn openapi_documents_queries_and_errors(s: &TestServer) {
    let (_, doc) = s.get("/v1/openapi.json").await;
    let list = &doc["paths"]["/v1/nodes"]["get"];
    let params = list["parameters"].as_array().unwrap();
    for name in ["state", "profile", "maintenance", "limit", "after"] {
        let p = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {list}"));
        assert_eq!(p["in"], "query", "{p}");
        assert_ne!(p["required"], true, "{p}");
    }
    let events = &doc["paths"]["/v1/nodes/{id}/events"]["get"]["parameters"];
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "after" && p["in"] == "query"),
        "{events}"
    );
    let error_ref = json!({"$ref": "#/components/schemas/ErrorBody"});
    for (path, method, codes) in [
        (
            "/v1/nodes",
            "post",
            &["400", "401", "403", "409", "413"][..],
        ),
        ("/v1/nodes", "get", &["400", "401"][..]),
        ("/v1/nodes/{id}", "get", &["401", "404"][..]),
        (
            "/v1/nodes/{id}",
            "patch",
            &["400", "401", "403", "404", "409", "413"][..],
        ),
        (
            "/v1/nodes/{id}",
            "delete",
            &["401", "403", "404", "409"][..],
        ),
        (
            "/v1/nodes/{id}/actions/{action}",
            "post",
            &["400", "401", "404", "409"][..],
        ),
        (
            "/v1/nodes/{id}/raid/{volume}",
            "delete",
            &["401", "403", "404", "409", "422", "502"][..],
        ),
        ("/v1/tokens", "get", &["401", "403"][..]),
        ("/v1/tokens", "post", &["400", "401", "403"][..]),
        (
            "/v1/agent/inventory",
            "post",
            &["400", "401", "409", "413"][..],
        ),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for code in codes {
            let r = &responses[*code];
            assert_eq!(
                r["content"]["application/json"]["schema"], error_ref,
                "{method} {path} {code}: {responses}"
            );
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
on_both_backends!(openapi_documents_queries_and_errors);
