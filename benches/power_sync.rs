//! One power-state sync round over 1,000 Redfish BMCs: each BMC is the
//! DMTF-schema test service of `tests/common/redfish_server.rs` on its own
//! loopback port (real HTTP, a session per read: service root, session,
//! systems, system, session end), all in this process with racklift itself.
//!
//! The bench starts racklift in-process (SQLite), enrols 1,000 nodes with
//! Redfish BMCs, takes them to `manageable` (the conductor verifies each BMC),
//! then times `power_sync::sync_once` at several concurrency limits: once with
//! nothing changed, once after half of the machines were powered on behind
//! racklift's back (500 changes and events recorded).
//!
//! Run: `cargo bench --bench power_sync`. Prints a Markdown table for
//! docs/PERFORMANCE.md.

#[path = "../tests/common/redfish_server.rs"]
mod redfish_server;

use futures::StreamExt;
use racklift::config::Config;
use redfish_server::{Options, RedfishServer};
use serde_json::json;
use std::time::{Duration, Instant};

const BMCS: usize = 1_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let mut bmcs = Vec::with_capacity(BMCS);
    for _ in 0..BMCS {
        bmcs.push(RedfishServer::start(Options::default()).await);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::defaults();
    cfg.data_dir = dir.path().to_path_buf();
    cfg.database.url = format!("sqlite://{}/racklift.db", dir.path().display());
    cfg.secrets.key_file = dir.path().join("secret.key");
    cfg.secrets.admin_token_file = dir.path().join("admin.token");
    cfg.profiles_dir = dir.path().join("profiles");
    cfg.conductor.poll_interval = Duration::from_millis(50);
    cfg.conductor.workers = 32;
    // The bench runs its own rounds.
    cfg.conductor.power_sync_interval = Duration::ZERO;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = racklift::server::start(cfg.clone(), listener)
        .await
        .expect("racklift starts");
    let url = format!("http://{}", running.addr);
    let token = std::fs::read_to_string(&cfg.secrets.admin_token_file)
        .expect("admin token")
        .trim()
        .to_string();
    let http = reqwest::Client::new();

    let t = Instant::now();
    let enrol = bmcs.iter().enumerate().map(|(i, b)| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let body = json!({
            "name": format!("bmc-{i:04}"),
            "bmc": {"driver": "redfish", "address": b.address(false), "port": b.addr.port(),
                    "username": redfish_server::USER, "password": redfish_server::PASSWORD}
        });
        async move {
            let r = http
                .post(format!("{url}/v1/nodes"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("enrol");
            assert_eq!(r.status(), 201);
            let r = http
                .post(format!("{url}/v1/nodes/bmc-{i:04}/actions/manage"))
                .bearer_auth(&token)
                .json(&json!({}))
                .send()
                .await
                .expect("manage");
            assert_eq!(r.status(), 202);
        }
    });
    futures::stream::iter(enrol)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    loop {
        let n = running
            .store
            .count_by_state()
            .await
            .expect("count")
            .into_iter()
            .find(|(s, _)| s == "manageable")
            .map(|(_, n)| n)
            .unwrap_or(0);
        if n as usize == BMCS {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "only {n} managed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{BMCS} nodes enrolled and verified in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    println!(
        "One power sync round over {BMCS} Redfish BMCs on loopback (sessions, 5 HTTP requests per BMC):\n"
    );
    println!("| concurrency | nothing changed | 500 changed (recorded) |");
    println!("|---|---|---|");
    for (round, concurrency) in [8usize, 32, 128].into_iter().enumerate() {
        let once = || {
            racklift::power_sync::sync_once(
                &running.store,
                &running.drivers,
                concurrency,
                Duration::from_secs(30),
            )
        };
        let t = Instant::now();
        let r = once().await.expect("sync");
        let same = t.elapsed();
        assert_eq!((r.checked, r.changed, r.failed), (BMCS, 0, 0), "{r:?}");
        // Half the machines change power behind racklift's back.
        let to = if round % 2 == 0 { "On" } else { "Off" };
        for b in bmcs.iter().step_by(2) {
            b.machine().power = to.into();
        }
        let t = Instant::now();
        let r = once().await.expect("sync");
        let changed = t.elapsed();
        assert_eq!(
            (r.checked, r.changed, r.failed),
            (BMCS, BMCS / 2, 0),
            "{r:?}"
        );
        println!(
            "| {concurrency} | {:.2} s | {:.2} s |",
            same.as_secs_f64(),
            changed.as_secs_f64()
        );
    }
    running.stop().await;
}
