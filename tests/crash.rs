//! The real `racklift` binary killed with SIGKILL in the middle of 50 concurrent
//! operations, then started again on the same database: no node is left stuck
//! and no event is lost. Also the README's CLI walk against the real binary.

mod common;

use common::{Backend, state_path};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database a case runs on: SQLite in `dir`, or a fresh PostgreSQL database
/// (with what is needed to drop it). None when PostgreSQL is skipped.
async fn database(
    backend: Backend,
    dir: &std::path::Path,
) -> Option<(Option<(String, String)>, String)> {
    match backend {
        Backend::Sqlite => Some((
            None,
            format!("sqlite://{}/racklift-data/racklift.db", dir.display()),
        )),
        Backend::Postgres => {
            let (admin, url) = common::fresh_pg_db().await?;
            Some((Some((admin, url.clone())), url))
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `racklift serve` with `env` and waits until /healthz answers.
async fn spawn(dir: &std::path::Path, db_url: &str, extra: &[(&str, &str)]) -> Proc {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_racklift"));
    cmd.arg("serve")
        .current_dir(dir)
        .env("RACKLIFT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RACKLIFT__DATABASE__URL", db_url)
        .env("RACKLIFT__CONDUCTOR__POLL_INTERVAL", "50ms")
        .env("RACKLIFT__CONDUCTOR__LEASE", "2s")
        .env("RACKLIFT__CONDUCTOR__RETRY_BACKOFF", "50ms")
        .env("RACKLIFT__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("server-{port}.log"))).unwrap(),
        ));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("racklift starts");
    let p = Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{}/healthz", p.url)).await
            && r.status() == 200
        {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "racklift did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crash_case(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((pg, db_url)) = database(backend, dir.path()).await else {
        return;
    };
    // Short phase timeouts so every phase waiting for an agent ends by itself.
    let timeouts = [
        ("RACKLIFT__CONDUCTOR__TIMEOUTS__INSPECT", "3s"),
        ("RACKLIFT__CONDUCTOR__TIMEOUTS__CLEAN", "3s"),
    ];
    let p = spawn(dir.path(), &db_url, &timeouts).await;
    let token = std::fs::read_to_string(dir.path().join("racklift-data/admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    // 50 nodes, each taken through several actions concurrently; the 50th
    // operation in flight is interrupted by SIGKILL.
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let http = http.clone();
        let url = p.url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("crash-{i:02}");
            let body = json!({"name": name, "boot_mac": format!("52:54:00:22:00:{i:02x}"), "bmc": {"driver": "fake", "address": format!("10.22.0.{i}"), "password": "pw"}});
            let post = |path: String, body: Value| http.post(format!("{url}{path}")).bearer_auth(&token).json(&body).send();
            if post("/v1/nodes".into(), body).await.is_err() {
                return;
            }
            let act = |a: &str| post(format!("/v1/nodes/{name}/actions/{a}"), json!({}));
            if act("manage").await.is_err() {
                return;
            }
            // Wait for verification, then start inspecting; some abort and provide.
            for _ in 0..100 {
                let Ok(r) = http.get(format!("{url}/v1/nodes/{name}")).bearer_auth(&token).send().await else { return };
                let Ok(n) = r.json::<Value>().await else { return };
                if n["state"] == "manageable" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if act("inspect").await.is_err() || i % 2 == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(u64::from(i % 5) * 20)).await;
            if act("abort").await.is_err() {
                return;
            }
            let _ = act("provide").await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut p = p;
    // SIGKILL: no shutdown code runs.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let p = spawn(dir.path(), &db_url, &timeouts).await;
    let get = |path: String| {
        let http = http.clone();
        let token = token.clone();
        let url = p.url.clone();
        async move {
            http.get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // No node stays in a transient state: each is resumed to its end or failed with a reason.
    let transient = [
        "verifying",
        "inspecting",
        "cleaning",
        "deploying",
        "configuring",
    ];
    let start = Instant::now();
    let nodes = loop {
        let page = get("/v1/nodes?limit=1000".into()).await;
        let nodes = page["nodes"].as_array().cloned().unwrap_or_default();
        let busy: Vec<&Value> = nodes
            .iter()
            .filter(|n| transient.contains(&n["state"].as_str().unwrap()))
            .collect();
        if busy.is_empty() {
            break nodes;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nodes stuck after restart: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !nodes.is_empty(),
        "some nodes were enrolled before the kill"
    );
    let mut by_state = std::collections::BTreeMap::<String, usize>::new();
    for n in &nodes {
        *by_state
            .entry(n["state"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    eprintln!(
        "{backend:?}: {} nodes after restart, by state: {by_state:?}; waited {:?}",
        nodes.len(),
        start.elapsed()
    );
    for n in &nodes {
        // Every node's events replay to its current state: none lost, none invented.
        let ev = get(format!(
            "/v1/nodes/{}/events?limit=1000",
            n["id"].as_str().unwrap()
        ))
        .await;
        let ev = ev.as_array().cloned().unwrap();
        let path = state_path(&ev);
        assert_eq!(path.first().map(String::as_str), Some("enrolled"), "{n}");
        assert_eq!(
            path.last().map(String::as_str),
            n["state"].as_str(),
            "{}: {path:?}",
            n["name"]
        );
        let states: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "state").collect();
        for w in states.windows(2) {
            assert_eq!(
                w[0]["to_state"], w[1]["from_state"],
                "{}: broken chain {w:?}",
                n["name"]
            );
        }
        if n["state"].as_str().unwrap().ends_with("_failed") {
            assert!(
                n["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                "{n}"
            );
        }
    }
    drop(p);
    if let Some((admin, url)) = pg {
        common::drop_pg_db(&admin, &url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_operations_sqlite() {
    crash_case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_operations_postgres() {
    crash_case(Backend::Postgres).await;
}

fn cli(dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String) {
    common::peers::run(
        Command::new(env!("CARGO_BIN_EXE_racklift"))
            .args(args)
            .current_dir(dir)
            .env("RACKLIFT_URL", url)
            .env_remove("RACKLIFT_TOKEN"),
    )
}

/// The README's first tour, with the CLI, against the real binary.
async fn cli_tour(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((pg, db)) = database(backend, dir.path()).await else {
        return;
    };
    let p = spawn(dir.path(), &db, &[]).await;
    let d = dir.path();
    let (ok, out) = cli(
        d,
        &p.url,
        &[
            "node",
            "create",
            "--name",
            "rack1-u01",
            "--boot-mac",
            "52:54:00:33:00:01",
            "--bmc-driver",
            "fake",
            "--bmc-address",
            "10.33.0.1",
            "--bmc-username",
            "admin",
            "--bmc-password",
            "secret",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("enrolled") && out.contains("password_set") && !out.contains("secret\n"),
        "{out}"
    );
    let (ok, out) = cli(
        d,
        &p.url,
        &["node", "action", "rack1-u01", "manage", "--wait"],
    );
    assert!(ok && out.contains("rack1-u01: manageable"), "{out}");
    let (_, out) = cli(d, &p.url, &["node", "list", "--state", "manageable"]);
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(out.contains("rack1-u01"), "{out}");
    let (ok, out) = cli(d, &p.url, &["node", "show", "rack1-u01", "--json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "manageable");
    let (ok, out) = cli(d, &p.url, &["node", "events", "rack1-u01"]);
    assert!(ok && out.contains("verifying -> manageable"), "{out}");
    // Inspection with racklift-agent's inventory of a captured VM; the CLI
    // shows the inventory and its facts.
    let (ok, out) = cli(d, &p.url, &["node", "action", "rack1-u01", "inspect"]);
    assert!(ok, "{out}");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/agent/qemu-seabios"
    );
    let inv = racklift::agent::collect::inventory(&racklift::agent::Root::new(fixture), None);
    let http = reqwest::Client::new();
    let start = Instant::now();
    // The boot script hands this boot's token out until the agent first uses
    // it: like the agent, keep the first one and retry with it.
    let mut token = None;
    loop {
        if token.is_none() {
            let script = http
                .get(format!("{}/boot.ipxe?mac=52:54:00:33:00:01", p.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            token = common::script_token(&script);
        }
        if let Some(token) = &token {
            let r = http
                .post(format!("{}/v1/agent/inventory", p.url))
                .bearer_auth(token)
                .json(&serde_json::json!({ "inventory": inv }))
                .send()
                .await
                .unwrap();
            if r.status() == 202 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "token: {token:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let (_, out) = cli(d, &p.url, &["node", "show", "rack1-u01", "--json"]);
        if serde_json::from_str::<Value>(&out).is_ok_and(|v| v["state"] == "manageable") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = cli(d, &p.url, &["node", "inventory", "rack1-u01"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["disks"][1]["serial"], "DISK-B");
    let (ok, out) = cli(d, &p.url, &["node", "facts", "rack1-u01"]);
    assert!(
        ok && out.lines().next().unwrap().starts_with("CLASS"),
        "{out}"
    );
    assert!(
        out.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["disk", "vdb", "serial", "DISK-B"]
        ),
        "{out}"
    );
    // A refused action exits non-zero and says what is allowed.
    let (ok, out) = cli(d, &p.url, &["node", "action", "rack1-u01", "deploy"]);
    assert!(
        !ok && out.contains("409") && out.contains("allowed: manage, inspect, provide"),
        "{out}"
    );
    let (ok, out) = cli(d, &p.url, &["token", "create", "grafana"]);
    assert!(ok && out.contains("readonly"), "{out}");
    let (ok, out) = cli(d, &p.url, &["node", "delete", "rack1-u01"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(d, &p.url, &["node", "show", "rack1-u01"]);
    assert!(!ok && out.contains("404"), "{out}");
    // A bad config file stops start-up naming the key.
    std::fs::write(d.join("bad.toml"), "[conductor]\nworkers = \"many\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_racklift"))
        .args(["serve", "--config", "bad.toml"])
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("bad.toml")
            && err.contains("workers")
            && err.contains("line 2"),
        "{err}"
    );
    drop(p);
    if let Some((admin, url)) = pg {
        common::drop_pg_db(&admin, &url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tour_sqlite() {
    cli_tour(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tour_postgres() {
    cli_tour(Backend::Postgres).await;
}

/// A TCP service that accepts connections and never answers (a hung BMC);
/// it holds them until dropped.
struct SilentBmc {
    port: u16,
    _task: tokio::task::JoinHandle<()>,
}

impl SilentBmc {
    async fn start() -> SilentBmc {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((c, _)) = l.accept().await {
                held.push(c);
            }
        });
        SilentBmc { port, _task: task }
    }
}

/// SIGTERM while a step waits on a BMC that never answers: the process exits
/// without waiting for the BMC's timeouts and retries (it would take minutes),
/// and the next start runs the step again. Its log, written to a file, holds
/// no terminal colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_hung_bmc() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}/racklift-data/racklift.db",
        dir.path().display()
    );
    let bmc = SilentBmc::start().await;
    let env = [("RACKLIFT__LOG__LEVEL", "info")];
    let mut p = spawn(dir.path(), &db, &env).await;
    let token = std::fs::read_to_string(dir.path().join("racklift-data/admin.token")).unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", p.url))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
    };
    let r = post(
        "/v1/nodes",
        json!({"name": "hung", "bmc": {"driver": "redfish",
               "address": format!("http://127.0.0.1:{}", bmc.port),
               "username": "root", "password": "pw"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post("/v1/nodes/hung/actions/manage", json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The step is under way: its worker waits on the BMC.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "racklift still running 30 s after SIGTERM, while the BMC request it waits on has not ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("exited {:?} after SIGTERM with {status}", started.elapsed());
    assert!(status.success(), "{status}");
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("server-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log}");

    // The next start takes the interrupted step up again.
    drop(p);
    let p = spawn(dir.path(), &db, &env).await;
    let n: Value = http
        .get(format!("{}/v1/nodes/hung", p.url))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(n["state"], "verifying", "{n}");
}
