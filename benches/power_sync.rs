//! One power-state sync round over 1,000 BMCs, Redfish and IPMI.
//!
//! - Redfish: 1,000 instances of the DMTF-schema test service of
//!   `tests/common/redfish_server.rs`, each on its own loopback port, in this
//!   process (real HTTP; a session per read: service root, session, systems,
//!   system, session end).
//! - IPMI: 1,000 OpenIPMI `ipmi_sim` processes, each on its own UDP port of
//!   127.0.0.1 (real RMCP+ sessions: set-up, privilege, Get Chassis Status,
//!   close; the simulator runs its chassis script for every status). Skipped
//!   with a reason when `ipmi_sim` is not installed.
//!
//! For each, racklift is started in-process (SQLite), the 1,000 nodes are
//! enrolled and taken to `manageable` (the conductor verifies each BMC), then
//! `power_sync::sync_once` is timed at several concurrency limits: once with
//! nothing changed, once after half of the machines changed power behind
//! racklift's back (500 changes and events recorded).
//!
//! Run: `cargo bench --bench power_sync`. Prints Markdown tables for
//! docs/PERFORMANCE.md.

#[path = "../tests/common/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "../tests/common/peers.rs"]
mod peers;
#[path = "../tests/common/redfish_server.rs"]
mod redfish_server;

use futures::StreamExt;
use racklift::config::Config;
use racklift::server::Running;
use redfish_server::{Options, RedfishServer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BMCS: usize = 1_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        redfish().await;
        ipmi().await;
    });
}

/// The simulated machines, to change their power behind racklift's back.
enum Bmcs {
    Redfish(Vec<RedfishServer>),
    Ipmi(Vec<ipmi_sim::IpmiSim>),
}

impl Bmcs {
    /// Powers every other machine on (or off), as someone at the rack would.
    fn flip_half(&self, on: bool) {
        match self {
            Bmcs::Redfish(v) => {
                for b in v.iter().step_by(2) {
                    b.machine().power = if on { "On" } else { "Off" }.into();
                }
            }
            Bmcs::Ipmi(v) => {
                for b in v.iter().step_by(2) {
                    std::fs::write(b.dir().join("power"), if on { "1\n" } else { "0\n" })
                        .expect("chassis state file");
                }
            }
        }
    }
}

async fn redfish() {
    let mut v = Vec::with_capacity(BMCS);
    for _ in 0..BMCS {
        v.push(RedfishServer::start(Options::default()).await);
    }
    let nodes = v
        .iter()
        .map(|b| {
            json!({"driver": "redfish", "address": b.address(false), "port": b.addr.port(),
                   "username": redfish_server::USER, "password": redfish_server::PASSWORD})
        })
        .collect();
    measure(
        "Redfish BMCs (test service on loopback HTTP; sessions, 5 requests per read)",
        nodes,
        Bmcs::Redfish(v),
    )
    .await;
}

async fn ipmi() {
    if !ipmi_sim::available() {
        return;
    }
    let t = Instant::now();
    let sims: Vec<ipmi_sim::IpmiSim> = futures::stream::iter(0..BMCS)
        .map(|_| async {
            tokio::task::spawn_blocking(ipmi_sim::IpmiSim::start)
                .await
                .expect("starting ipmi_sim")
                .expect("ipmi_sim installed")
        })
        .buffer_unordered(16)
        .collect()
        .await;
    eprintln!(
        "{BMCS} ipmi_sim started in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let nodes = sims
        .iter()
        .map(|s| {
            json!({"driver": "ipmi", "address": "127.0.0.1", "port": s.port,
                   "username": ipmi_sim::USER, "password": ipmi_sim::PASSWORD})
        })
        .collect();
    measure(
        "IPMI BMCs (`ipmi_sim` processes on loopback UDP; one RMCP+ session per read)",
        nodes,
        Bmcs::Ipmi(sims),
    )
    .await;
}

async fn measure(what: &str, bmcs: Vec<Value>, machines: Bmcs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(dir.path()).await;
    let t = Instant::now();
    enrol_and_manage(&running, dir.path(), bmcs).await;
    eprintln!(
        "{BMCS} nodes enrolled and verified in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("\nOne power sync round over {BMCS} {what}:\n");
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
        machines.flip_half(round % 2 == 0);
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

async fn start(dir: &std::path::Path) -> Running {
    let mut cfg = Config::defaults();
    cfg.data_dir = dir.to_path_buf();
    cfg.database.url = format!("sqlite://{}/racklift.db", dir.display());
    cfg.secrets.key_file = dir.join("secret.key");
    cfg.secrets.admin_token_file = dir.join("admin.token");
    cfg.profiles_dir = dir.join("profiles");
    cfg.conductor.poll_interval = Duration::from_millis(50);
    cfg.conductor.workers = 32;
    // The bench runs its own rounds.
    cfg.conductor.power_sync_interval = Duration::ZERO;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    racklift::server::start(cfg, listener)
        .await
        .expect("racklift starts")
}

async fn enrol_and_manage(running: &Running, dir: &std::path::Path, bmcs: Vec<Value>) {
    let url = format!("http://{}", running.addr);
    let token = std::fs::read_to_string(dir.join("admin.token"))
        .expect("admin token")
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let calls = bmcs.into_iter().enumerate().map(|(i, bmc)| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/nodes"))
                .bearer_auth(&token)
                .json(&json!({"name": format!("bmc-{i:04}"), "bmc": bmc}))
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
    futures::stream::iter(calls)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let t = Instant::now();
    loop {
        let managed = running
            .store
            .count_by_state()
            .await
            .expect("count")
            .into_iter()
            .find(|(s, _)| s == "manageable")
            .map(|(_, n)| n as usize)
            .unwrap_or(0);
        if managed == BMCS {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "only {managed} managed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
