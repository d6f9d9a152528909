//! Test harness: a racklift server per test on SQLite or on a fresh PostgreSQL
//! database, an HTTP client with the admin token, and waiting helpers.
//!
//! PostgreSQL comes from `RACKLIFT_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached the
//! PostgreSQL variant of a test is skipped with a printed reason, unless `CI` is
//! set, where it fails.
#![allow(dead_code)]

pub mod netns;
pub mod peers;

use racklift::config::Config;
use racklift::server::Running;
use serde_json::{Value, json};
use sqlx::Connection;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
    pub running: Option<Running>,
    pub cfg: Config,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pg: Option<(String, String)>,
    /// The network namespace the server's sockets live in (HTTP reached
    /// through a loopback forwarder).
    pub netns: Option<String>,
}

pub fn pg_admin_url() -> String {
    std::env::var("RACKLIFT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub use peers::in_ci;

/// A fresh PostgreSQL database; None (skip) when PostgreSQL is unreachable outside CI.
pub async fn fresh_pg_db() -> Option<(String, String)> {
    let admin = pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if in_ci() {
                panic!("PostgreSQL at {admin} is unreachable in CI: {e}");
            }
            eprintln!("SKIP: PostgreSQL at {admin} is unreachable ({e}); set RACKLIFT_TEST_PG");
            return None;
        }
    };
    let name = format!("rl_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    Some((admin, format!("{base}/{name}")))
}

/// Drops a database made by [`fresh_pg_db`].
pub async fn drop_pg_db(admin: &str, db_url: &str) {
    let name = db_url.rsplit('/').next().unwrap_or_default().to_string();
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// A configuration for tests: fast polling, short leases, files in `dir`.
pub fn test_config(dir: &std::path::Path, db_url: &str) -> Config {
    let mut cfg = Config::defaults();
    cfg.data_dir = dir.to_path_buf();
    cfg.database.url = db_url.to_string();
    cfg.secrets.key_file = dir.join("secret.key");
    cfg.secrets.admin_token_file = dir.join("admin.token");
    // Boot files of this test only (the defaults lie under ./racklift-data).
    cfg.boot.assets_dir = dir.join("assets");
    cfg.conductor.poll_interval = Duration::from_millis(50);
    cfg.conductor.lease = Duration::from_secs(2);
    cfg.conductor.retry_backoff = Duration::from_millis(20);
    cfg.conductor.workers = 4;
    cfg.http.public_url = "http://racklift.test:8080".into();
    // No profiles unless a test asks for them.
    cfg.profiles_dir = dir.join("profiles");
    cfg
}

impl TestServer {
    /// Starts a server; `tweak` adjusts the configuration. None when skipped.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestServer> {
        TestServer::start_in(backend, None, tweak).await
    }

    /// Starts a server whose sockets (HTTP, TFTP, DHCP) are bound inside the
    /// network namespace `netns`; `url` still works from the test.
    pub async fn start_in(
        backend: Backend,
        netns: Option<&str>,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}/racklift.db", dir.path().display()),
                None,
            ),
            Backend::Postgres => {
                let (admin, url) = fresh_pg_db().await?;
                (url.clone(), Some((admin, url)))
            }
        };
        let mut cfg = test_config(dir.path(), &db_url);
        tweak(&mut cfg);
        let mut s = TestServer {
            url: String::new(),
            token: String::new(),
            http: reqwest::Client::new(),
            running: None,
            cfg,
            backend,
            dir,
            pg,
            netns: netns.map(str::to_string),
        };
        s.boot().await;
        Some(s)
    }

    /// (Re)starts the server process on the same data (and the same port).
    pub async fn boot(&mut self) {
        let running = if let Some(ns) = self.netns.clone() {
            let cfg = self.cfg.clone();
            let sockets = netns::run_in(&ns, move || racklift::server::Listeners::bind(&cfg))
                .expect("sockets bound in the namespace");
            let port = sockets.http.local_addr().expect("addr").port();
            let running = racklift::server::start_with(self.cfg.clone(), sockets)
                .await
                .expect("server starts");
            let fwd = netns::forward(&ns, ([127, 0, 0, 1], port).into()).await;
            self.url = format!("http://{fwd}");
            running
        } else {
            // A restart keeps the port, as agents and clients keep the URL.
            let addr = self
                .url
                .strip_prefix("http://")
                .unwrap_or("127.0.0.1:0")
                .to_string();
            let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
            let running = racklift::server::start(self.cfg.clone(), listener)
                .await
                .expect("server starts");
            self.url = format!("http://{}", running.addr);
            running
        };
        self.token = std::fs::read_to_string(&self.cfg.secrets.admin_token_file)
            .expect("admin token written on first start")
            .trim()
            .to_string();
        self.running = Some(running);
    }

    /// Stops the server (as a clean shutdown).
    pub async fn halt(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub fn drivers(&self) -> &racklift::bmc::Drivers {
        &self.running.as_ref().expect("running").drivers
    }

    pub fn store(&self) -> &racklift::store::Store {
        &self.running.as_ref().expect("running").store
    }

    /// Stops the server and drops its PostgreSQL database.
    pub async fn finish(mut self) {
        self.halt().await;
        if let Some((admin, url)) = self.pg.take() {
            drop_pg_db(&admin, &url).await;
        }
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.req_as(&self.token, method, path, body).await
    }

    pub async fn req_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            r = r.bearer_auth(token);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn create(&self, body: Value) -> Value {
        let (st, v) = self.post("/v1/nodes", body).await;
        assert_eq!(st, 201, "{v}");
        v
    }

    pub async fn act(&self, node: &str, action: &str) -> (u16, Value) {
        self.post(&format!("/v1/nodes/{node}/actions/{action}"), json!({}))
            .await
    }

    pub async fn node(&self, node: &str) -> Value {
        let (st, v) = self.get(&format!("/v1/nodes/{node}")).await;
        assert_eq!(st, 200, "{v}");
        v
    }

    /// Waits (up to 20 s) until the node is in `state`; returns it.
    pub async fn wait_state(&self, node: &str, state: &str) -> Value {
        self.wait_state_within(node, state, Duration::from_secs(20))
            .await
    }

    /// Waits (up to `bound`) until the node is in `state`; returns it. On
    /// failure, says where its steps and events stand.
    pub async fn wait_state_within(&self, node: &str, state: &str, bound: Duration) -> Value {
        let start = Instant::now();
        loop {
            let n = self.node(node).await;
            if n["state"] == state {
                return n;
            }
            if start.elapsed() > bound {
                let (_, steps) = self.get(&format!("/v1/nodes/{node}/steps")).await;
                let events = self.events(node).await;
                panic!(
                    "node {node} never reached {state}; it is {n}\nsteps: {steps}\nevents: {events:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn inspect_with(&self, name: &str, mac: &str, facts: &Value) -> Value {
        if self.get(&format!("/v1/nodes/{name}")).await.0 == 404 {
            self.create(json!({"name": name, "boot_mac": mac, "bmc": {"driver": "fake", "address": format!("bmc-{name}")}}))
                .await;
            self.act(name, "manage").await;
            self.wait_state(name, "manageable").await;
        }
        let (st, v) = self.act(name, "inspect").await;
        assert_eq!(st, 202, "{v}");
        let token = self.boot_token(mac).await;
        let (st, v) = self
            .agent(
                &token,
                "/v1/agent/inventory",
                json!({"inventory": {"facts": facts}}),
            )
            .await;
        assert_eq!(st, 202, "{v}");
        self.wait_state(name, "manageable").await
    }

    /// Waits until the node's step waits for the agent; returns the boot script's token.
    pub async fn boot_token(&self, mac: &str) -> String {
        let start = Instant::now();
        loop {
            let node = self.node_by_mac(mac).await;
            let (_, steps) = self
                .get(&format!("/v1/nodes/{}/steps", node["id"].as_str().unwrap()))
                .await;
            let waiting = steps
                .as_array()
                .is_some_and(|s| s.iter().any(|st| st["status"] == "waiting"));
            if waiting {
                let script = self.boot_script(mac).await;
                return script_token(&script)
                    .unwrap_or_else(|| panic!("no token in boot script:\n{script}"));
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node with {mac} never waited for its agent: {steps}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn node_by_mac(&self, mac: &str) -> Value {
        let (_, page) = self.get("/v1/nodes?limit=1000").await;
        page["nodes"]
            .as_array()
            .and_then(|ns| {
                ns.iter().find(|n| {
                    n["macs"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|x| x == mac))
                })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no node with MAC {mac}"))
    }

    pub async fn boot_script(&self, mac: &str) -> String {
        let r = self
            .http
            .get(format!("{}/boot.ipxe?mac={mac}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Posts as the agent with `token`.
    pub async fn agent(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.req_as(token, reqwest::Method::POST, path, Some(body))
            .await
    }

    pub async fn events(&self, node: &str) -> Vec<Value> {
        let (st, v) = self
            .get(&format!("/v1/nodes/{node}/events?limit=1000"))
            .await;
        assert_eq!(st, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// The Prometheus text at /metrics.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Opens `GET /v1/events/stream` with the admin token, resuming after
    /// `after` (sent as `Last-Event-ID`) when given.
    pub async fn event_stream(&self, after: Option<i64>) -> reqwest::Response {
        let mut r = self
            .http
            .get(format!("{}/v1/events/stream", self.url))
            .bearer_auth(&self.token);
        if let Some(a) = after {
            r = r.header("Last-Event-ID", a.to_string());
        }
        r.send().await.expect("event stream")
    }

    /// The database, opened directly (to check what is stored at rest).
    pub async fn raw_db(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.cfg.database.url)
            .await
            .expect("raw db")
    }
}

/// The enrolment body of a node with a fake BMC at `bmc_address`.
pub fn node_body(name: &str, mac: &str, bmc_address: &str, password: &str) -> Value {
    json!({"name": name, "boot_mac": mac, "bmc": {"driver": "fake", "address": bmc_address, "username": "admin", "password": password}})
}

/// Acts and expects the action to be accepted; returns the node.
pub async fn act_ok(s: &TestServer, node: &str, action: &str) -> Value {
    let (st, v) = s.act(node, action).await;
    assert_eq!(st, 202, "{action} on {node}: {v}");
    v
}

/// A counter's value in the Prometheus text (0 when absent).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The `racklift.token=` of a boot script, if it has one.
pub fn script_token(script: &str) -> Option<String> {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("racklift.token="))
        .map(str::to_string)
}

/// The sequence of state changes in a node's events.
pub fn state_path(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "state" || e["kind"] == "created")
        .map(|e| e["to_state"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Runs a test body against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $tweak:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) = common::TestServer::start(common::Backend::Sqlite, $tweak).await {
                    super::$name(&s).await;
                    s.finish().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = common::TestServer::start(common::Backend::Postgres, $tweak).await
                {
                    super::$name(&s).await;
                    s.finish().await;
                }
            }
        }
    };
    ($name:ident) => {
        $crate::on_both_backends!($name, |_| {});
    };
}
