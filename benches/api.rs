//! API figures, on SQLite and PostgreSQL side by side, against the real
//! `racklift` binary: enrolment rate for 10,000 nodes, latency of a filtered
//! list under 50 concurrent readers, and the server's memory.
//!
//! Run: `cargo bench --bench api` (PostgreSQL from `RACKLIFT_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped if unreachable).
//! Prints a Markdown table for docs/PERFORMANCE.md.

use serde_json::json;
use sqlx::Connection;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 10_000;
const WRITERS: usize = 32;
const READERS: usize = 50;
const READS_PER_READER: usize = 100;

struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn start(dir: &std::path::Path, db: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_racklift"))
        .arg("serve")
        .current_dir(dir)
        .env("RACKLIFT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("RACKLIFT__DATABASE__URL", db)
        .env("RACKLIFT__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("racklift starts");
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while reqwest::get(format!("{url}/healthz"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(dir.join("racklift-data/admin.token"))
        .unwrap()
        .trim()
        .to_string();
    Server { child, url, token }
}

struct Figures {
    enrol_per_s: f64,
    list_p50_ms: f64,
    list_p99_ms: f64,
    list_per_s: f64,
    rss_mib: f64,
    peak_mib: f64,
}

async fn run(db: &str, dir: &std::path::Path) -> Figures {
    let s = start(dir, db).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (http, url, token, next) = (http.clone(), s.url.clone(), s.token.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= NODES {
                    return;
                }
                let mac = format!("52:54:{:02x}:{:02x}:{:02x}:01", i >> 16, (i >> 8) & 0xff, i & 0xff);
                let body = json!({"name": format!("bench-{i:05}"), "boot_mac": mac,
                    "bmc": {"driver": "ipmi", "address": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff), "username": "admin", "password": "secret"}});
                let r = http.post(format!("{url}/v1/nodes")).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let enrol = t0.elapsed();
    // One pass over every page first, as a dashboard does when it opens: the
    // figure is the steady state of a running server.
    let mut after = String::new();
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{}/v1/nodes?state=enrolled&limit=1000&after={after}",
                s.url
            ))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    let t1 = Instant::now();
    let mut lat = Vec::new();
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let (http, url, token) = (http.clone(), s.url.clone(), s.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut l = Vec::with_capacity(READS_PER_READER);
            for k in 0..READS_PER_READER {
                // Pages at different offsets of the filtered list.
                let after = format!("bench-{:05}", (r * 197 + k * 89) % NODES);
                let t = Instant::now();
                let resp = http
                    .get(format!(
                        "{url}/v1/nodes?state=enrolled&limit=100&after={after}"
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await.unwrap();
                l.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            l
        }));
    }
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let list_time = t1.elapsed();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let pid = s.child.id();
    Figures {
        enrol_per_s: NODES as f64 / enrol.as_secs_f64(),
        list_p50_ms: pct(0.50),
        list_p99_ms: pct(0.99),
        list_per_s: lat.len() as f64 / list_time.as_secs_f64(),
        rss_mib: rss_kib(pid, "VmRSS:") as f64 / 1024.0,
        peak_mib: rss_kib(pid, "VmHWM:") as f64 / 1024.0,
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` asks for a list: there are no unit tests here.
        return;
    }
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}/racklift-data/racklift.db",
        dir.path().display()
    );
    rows.push(("SQLite", run(&db, dir.path()).await));

    let admin = std::env::var("RACKLIFT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut c) => {
            let name = format!("rl_bench_{}", std::process::id());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').unwrap().0;
            let pdir = tempfile::tempdir().unwrap();
            rows.push((
                "PostgreSQL",
                run(&format!("{base}/{name}"), pdir.path()).await,
            ));
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await
            .unwrap();
        }
        Err(e) => eprintln!("PostgreSQL skipped: {e}"),
    }
    println!(
        "| backend | enrol {NODES} nodes (nodes/s) | filtered list p50 (ms) | p99 (ms) | lists/s ({READERS} readers) | RSS after (MiB) | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1} |",
            f.enrol_per_s, f.list_p50_ms, f.list_p99_ms, f.list_per_s, f.rss_mib, f.peak_mib
        );
    }
}
