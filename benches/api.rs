//! API figures, on SQLite and PostgreSQL side by side, against the real
//! `racklift` binary: enrolment rate for 10,000 nodes, latency of a filtered
//! list under 50 concurrent readers, and the server's memory.
//!
//! Run: `cargo bench --bench api` (PostgreSQL from `RACKLIFT_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped if unreachable).
//! RACKLIFT_BENCH_BASELINE=/path/to/an/older/racklift runs that binary too,
//! beside this build's on each backend, named by RACKLIFT_BENCH_BASELINE_LABEL.
//! Prints a Markdown table for docs/PERFORMANCE.md.

mod common;

use common::Racklift;
use serde_json::json;
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: usize = 10_000;
const WRITERS: usize = 32;
const READERS: usize = 50;
const READS_PER_READER: usize = 100;

struct Server {
    process: common::peers::Peer,
    url: String,
    token: String,
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

async fn start(bin: &Racklift, dir: &std::path::Path, db: &str) -> Server {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let cfg = common::config(dir, &listen, &format!("[database]\nurl = \"{db}\"\n"));
    let process = bin.serve(&cfg);
    let url = format!("http://{listen}");
    let t0 = Instant::now();
    while reqwest::get(format!("{url}/healthz"))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = common::admin_token(dir);
    Server {
        process,
        url,
        token,
    }
}

struct Figures {
    enrol_per_s: f64,
    list_p50_ms: f64,
    list_p99_ms: f64,
    list_per_s: f64,
    rss_mib: f64,
    peak_mib: f64,
}

async fn run(bin: &Racklift, db: &str, dir: &std::path::Path) -> Figures {
    let s = start(bin, dir, db).await;
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
    let pid = s.process.0.id();
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
    let binaries = common::binaries();
    let mut rows = Vec::new();
    // On each backend the binaries take turns, each with a fresh database.
    for bin in &binaries {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/data/racklift.db", dir.path().display());
        rows.push((&bin.name, "SQLite", run(bin, &db, dir.path()).await));
    }

    let admin = std::env::var("RACKLIFT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut c) => {
            let base = admin.rsplit_once('/').unwrap().0;
            for (i, bin) in binaries.iter().enumerate() {
                let name = format!("rl_bench_{}_{i}", std::process::id());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let pdir = tempfile::tempdir().unwrap();
                rows.push((
                    &bin.name,
                    "PostgreSQL",
                    run(bin, &format!("{base}/{name}"), pdir.path()).await,
                ));
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await
                .unwrap();
            }
        }
        Err(e) => eprintln!("PostgreSQL skipped: {e}"),
    }
    println!(
        "| server | backend | enrol {NODES} nodes (nodes/s) | filtered list p50 (ms) | p99 (ms) | lists/s ({READERS} readers) | RSS after (MiB) | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (server, backend, f) in rows {
        println!(
            "| {server} | {backend} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1} | {:.1} |",
            f.enrol_per_s, f.list_p50_ms, f.list_p99_ms, f.list_per_s, f.rss_mib, f.peak_mib
        );
    }
}
