//! racklift-agent's HTTP side when things go wrong: a server that is down at
//! first (a real racklift, started late), one that answers 500 once (a small
//! axum server that records what it got), and a wrong token. The agent
//! recovers or says clearly why it stopped, and never loses the inventory.

mod common;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::TestServer;
use racklift::agent::client::{AgentError, Outcome};
use racklift::agent::{Client, Command, Pacing, Root, Settings, collect};
use racklift::protocol::Inventory;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn inventory() -> Inventory {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent/qemu-seabios");
    collect::inventory(&Root::new(dir), Some("01-52-54-00-12-34-01"))
}

fn spawn_agent(url: &str, token: &str) -> tokio::task::JoinHandle<Result<Outcome, AgentError>> {
    let settings = Settings {
        api: url.to_string(),
        token: token.to_string(),
        bootif: None,
    };
    let pacing = Pacing {
        first_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(300),
        heartbeat: Duration::from_millis(50),
        request_timeout: Duration::from_secs(10),
    };
    let inv = inventory();
    tokio::task::spawn_blocking(move || Client::new(settings, pacing)?.run(&inv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_first_gets_the_inventory_when_it_comes_back() {
    let Some(mut s) = TestServer::start(common::Backend::Sqlite, |_| {}).await else {
        return;
    };
    let mac = "52:54:00:12:34:01";
    s.create(json!({"name": "late", "boot_mac": mac, "bmc": {"driver": "fake", "address": "10.9.8.1", "username": "u", "password": "p"}}))
        .await;
    assert_eq!(s.act("late", "manage").await.0, 202);
    s.wait_state("late", "manageable").await;
    assert_eq!(s.act("late", "inspect").await.0, 202);
    let token = s.boot_token(mac).await;
    s.halt().await;
    let agent = spawn_agent(&s.url, &token);
    // Long enough for several refused connections.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!agent.is_finished());
    s.boot().await;
    let out = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("agent finishes")
        .unwrap()
        .expect("agent run");
    assert!(out.attempts > 1, "{out:?}");
    assert_eq!(out.command, Command::PowerOff);
    s.wait_state("late", "manageable").await;
    let (_, stored) = s.get("/v1/nodes/late/inventory").await;
    assert_eq!(
        serde_json::from_value::<Inventory>(stored).unwrap(),
        inventory()
    );
    // The failed attempts reached the node's events once the server was back.
    let events = s.events("late").await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "agent"
                && e["reason"].as_str().unwrap().contains("attempt 1 failed")),
        "{events:?}"
    );
    s.finish().await;
}

/// What the flaky server saw.
#[derive(Default)]
struct Seen {
    inventories: Vec<Value>,
    log: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_with_the_same_inventory() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new()
        .route(
            "/v1/agent/inventory",
            post(|State(seen): State<Arc<Mutex<Seen>>>, Json(body): Json<Value>| async move {
                let mut s = seen.lock().unwrap();
                s.inventories.push(body["inventory"].clone());
                if s.inventories.len() == 1 {
                    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"code": "internal", "message": "database unreachable"}})))
                } else {
                    (StatusCode::ACCEPTED, Json(json!({"stored": true})))
                }
            }),
        )
        .route(
            "/v1/agent/log",
            post(|State(seen): State<Arc<Mutex<Seen>>>, Json(body): Json<Value>| async move {
                let lines = body["lines"].as_array().cloned().unwrap_or_default();
                seen.lock().unwrap().log.extend(lines.iter().map(|l| l.as_str().unwrap_or_default().to_string()));
                StatusCode::ACCEPTED
            }),
        )
        .route("/v1/agent/heartbeat", post(|| async { Json(json!({"command": "poweroff"})) }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let out = spawn_agent(&url, "rla_test")
        .await
        .unwrap()
        .expect("agent run");
    assert_eq!(
        out,
        Outcome {
            attempts: 2,
            command: Command::PowerOff
        }
    );
    let s = seen.lock().unwrap();
    assert_eq!(s.inventories.len(), 2);
    assert_eq!(
        s.inventories[0], s.inventories[1],
        "the retry sends the same inventory"
    );
    assert_eq!(
        serde_json::from_value::<Inventory>(s.inventories[1].clone()).unwrap(),
        inventory()
    );
    assert!(
        s.log
            .iter()
            .any(|l| l.contains("attempt 1 failed") && l.contains("500: database unreachable")),
        "{:?}",
        s.log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_stops_the_agent_with_the_reason() {
    let Some(s) = TestServer::start(common::Backend::Sqlite, |_| {}).await else {
        return;
    };
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        spawn_agent(&s.url, "rla_not-a-real-token"),
    )
    .await
    .expect("the agent gives up at once")
    .unwrap();
    match r {
        Err(AgentError::Unauthorized { status, message }) => {
            assert_eq!(status, 401);
            assert_eq!(message, "unknown agent token");
        }
        other => panic!("expected a refused token, got {other:?}"),
    }
    assert!(s.metrics().await.contains("agent_token_refused"));
    s.finish().await;
}
