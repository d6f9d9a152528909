//! DHCP exchanges per second: perfdhcp (Kea's benchmark) runs full 4-message
//! exchanges (DISCOVER, OFFER, REQUEST, ACK) from 50,000 simulated clients,
//! as a relay agent (giaddr set, answers sent back to it), over a veth link
//! between two network namespaces, against racklift (leases durable
//! in SQLite), dnsmasq, and Kea with and without lease persistence, one after
//! the other on the same link. Prints a Markdown table.
//!
//!     cargo bench --bench dhcp
//!
//! Needs root, iproute2, perfdhcp (kea-admin), kea-dhcp4-server and dnsmasq
//! (scripts/setup-test-env.sh installs them); without them it prints SKIP.
//! RACKLIFT_BENCH_SECS sets each run's length (default 10);
//! RACKLIFT_BENCH_ONLY=racklift (or kea, dnsmasq; several separated by commas)
//! runs only the servers whose name contains one of them;
//! RACKLIFT_BENCH_ROUNDS=N runs every server N times, taking turns;
//! RACKLIFT_BENCH_BASELINE=/path/to/an/older/racklift runs that binary too,
//! beside this build's, named by RACKLIFT_BENCH_BASELINE_LABEL. After
//! racklift's runs its own counters are printed
//! (answers, requests shed under overload, malformed), so a drop perfdhcp
//! sees can be told apart from one racklift chose.

mod common;
#[path = "../tests/common/netns.rs"]
mod netns;

use common::{Racklift, peers};
use netns::Link;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const RANGE: (&str, &str) = ("10.77.0.10", "10.77.255.250");

/// Simulated clients (RACKLIFT_BENCH_CLIENTS): by default fewer than the
/// range's 65,000 addresses, so no run ends with clients the pool cannot serve
/// (those count as drops, and a full pool slows every server's search).
fn clients() -> u32 {
    std::env::var("RACKLIFT_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// What perfdhcp measured.
#[derive(Debug, Default)]
struct Run {
    /// Completed exchanges (ACKs received) per second of sending.
    rate: f64,
    /// What perfdhcp printed as its rate (it counts the exit wait too).
    perfdhcp_rate: f64,
    sent: u64,
    drops_offer: u64,
    drops_ack: u64,
    acks: u64,
}

fn parse_perfdhcp(out: &str) -> Run {
    let mut r = Run::default();
    let mut section = "";
    for line in out.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Rate:") {
            r.perfdhcp_rate = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if l.starts_with("***Statistics for:") {
            section = if l.contains("DISCOVER-OFFER") {
                "do"
            } else {
                "ra"
            };
        } else if let Some(v) = l.strip_prefix("drops:") {
            let n = v.trim().parse().unwrap_or(0);
            if section == "do" {
                r.drops_offer = n;
            } else {
                r.drops_ack = n;
            }
        } else if let Some(v) = l.strip_prefix("sent packets:")
            && section == "do"
        {
            r.sent = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("received packets:")
            && section == "ra"
        {
            r.acks = v.trim().parse().unwrap_or(0);
        }
    }
    r
}

fn perfdhcp(link: &Link, rate: u32, secs: u64, wait: bool) -> Run {
    let mut cmd = link.cli.cmd("perfdhcp");
    cmd.args(["-4", "-l", "rl-c", "-R", &clients().to_string()])
        .args(["-r", &rate.to_string(), "-p", &secs.to_string()]);
    if wait {
        // Wait a second after the last send for the answers still in flight;
        // without it they count as drops for every server.
        cmd.args(["-W", "1000000"]);
    }
    let out = cmd.output().expect("perfdhcp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut r = parse_perfdhcp(&text);
    // With the exit wait perfdhcp divides by the wait too: count per second of sending.
    r.rate = if wait {
        r.acks as f64 / secs as f64
    } else {
        r.perfdhcp_rate
    };
    if r.perfdhcp_rate == 0.0 {
        eprintln!(
            "perfdhcp printed no rate:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r
}

/// CPU time a process has used so far (all its threads, user and system), in
/// clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime is the
    // 12th and stime the 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// racklift's DHCP counters, from `/metrics` inside the server's namespace.
fn racklift_counters(link: &Link, dir: &Path) -> String {
    let out = link
        .srv
        .cmd("curl")
        .args(["-s", "-H"])
        .arg(format!(
            "Authorization: Bearer {}",
            common::admin_token(dir)
        ))
        .arg("http://127.0.0.1:8080/metrics")
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("racklift_dhcp_") && l.contains("_total"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// UDP datagrams the kernel dropped in `ns` for want of receive-buffer
/// room (`RcvbufErrors` in /proc/net/snmp).
fn udp_rcvbuf_errors(ns: &netns::Netns) -> u64 {
    let out = ns.cmd("cat").arg("/proc/net/snmp").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until perfdhcp sees answers (the server is up).
fn wait_answering(link: &Link) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while perfdhcp(link, 10, 1, true).acks == 0 {
        assert!(Instant::now() < deadline, "server never answered");
    }
}

fn racklift(bin: &Racklift, link: &Link, dir: &Path) -> peers::Peer {
    let cfg = common::config(
        dir,
        "127.0.0.1:8080",
        &format!(
            "[dhcp]\nenabled = true\ninterfaces = [\"rl-s\"]\n\
             [[dhcp.subnet]]\nnetwork = \"10.77.0.0/16\"\nranges = [\"{a}-{b}\"]\nrouter = \"10.77.0.1\"\ndiscovery = true\nlease_time = \"1h\"\n",
            a = RANGE.0,
            b = RANGE.1,
        ),
    );
    bin.serve_by(link.srv.cmd(&bin.path), &cfg)
}

fn dnsmasq(link: &Link, dir: &Path) -> peers::Peer {
    link.srv
        .cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--port=0",
            "--interface=rl-s",
            "--bind-interfaces",
            "--no-ping",
            "--quiet-dhcp",
            "--no-resolv",
            "--no-hosts",
            "--dhcp-authoritative",
            "--dhcp-lease-max=200000",
        ])
        .arg(format!("--dhcp-range={},{},1h", RANGE.0, RANGE.1))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(peers::Peer)
        .expect("dnsmasq")
}

fn kea(link: &Link, dir: &Path, persist: bool) -> peers::Peer {
    let cfg = dir.join("kea.json");
    let leases = dir.join("kea-leases4.csv");
    let _ = std::fs::remove_file(&leases);
    std::fs::write(
        &cfg,
        format!(
            r#"{{"Dhcp4": {{
  "interfaces-config": {{"interfaces": ["rl-s"], "dhcp-socket-type": "raw"}},
  "lease-database": {{"type": "memfile", "persist": {persist}, "name": "{leases}", "lfc-interval": 0}},
  "valid-lifetime": 3600,
  "subnet4": [{{"id": 1, "subnet": "10.77.0.0/16", "pools": [{{"pool": "{a} - {b}"}}],
               "option-data": [{{"name": "routers", "data": "10.77.0.1"}}]}}],
  "loggers": [{{"name": "kea-dhcp4", "severity": "ERROR",
               "output_options": [{{"output": "{log}"}}]}}]
}}}}"#,
            leases = leases.display(),
            a = RANGE.0,
            b = RANGE.1,
            log = dir.join("kea.log").display(),
        ),
    )
    .unwrap();
    link.srv
        .cmd("kea-dhcp4")
        .arg("-c")
        .arg(&cfg)
        .env("KEA_LOCKFILE_DIR", dir)
        .env("KEA_PIDFILE_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(peers::Peer)
        .expect("kea-dhcp4")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let need = ["perfdhcp", "kea-dhcp4", "dnsmasq", "ip"];
    let missing: Vec<&str> = need
        .iter()
        .copied()
        .filter(|p| !peers::on_path(p) && !Path::new("/usr/sbin").join(p).is_file())
        .collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !missing.is_empty() {
        println!("SKIP: needs root and {need:?} (missing: {missing:?})");
        return;
    }
    let secs: u64 = std::env::var("RACKLIFT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rows = Vec::new();
    type Start<'a> = Box<dyn Fn(&Link, &Path) -> peers::Peer + 'a>;
    let binaries = common::binaries();
    let mut servers: Vec<(String, Start, u32)> = binaries
        .iter()
        .map(|bin| {
            let start: Start = Box::new(move |l, d| racklift(bin, l, d));
            (
                format!("{}, SQLite, leases durable", bin.name),
                start,
                20000,
            )
        })
        .collect();
    servers.push((
        "Kea memfile persist=true".into(),
        Box::new(|l, d| kea(l, d, true)),
        20000,
    ));
    servers.push((
        "Kea memfile persist=false".into(),
        Box::new(|l, d| kea(l, d, false)),
        20000,
    ));
    servers.push(("dnsmasq".into(), Box::new(dnsmasq), 5000));
    let only = std::env::var("RACKLIFT_BENCH_ONLY").unwrap_or_default();
    let only: Vec<String> = only.split(',').map(|o| o.trim().to_lowercase()).collect();
    let rounds: u32 = std::env::var("RACKLIFT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Rounds take the servers in turn, so a slow spell of the machine falls on
    // all of them rather than on one.
    let order = (1..=rounds).flat_map(|round| servers.iter().map(move |s| (round, s)));
    for (round, (name, start, rate)) in order {
        let (name, rate) = (name.as_str(), *rate);
        if !only.iter().any(|o| name.to_lowercase().contains(o)) {
            continue;
        }
        // A fresh link and lease store per server: nobody starts warm.
        let link = Link::new("10.77.0.1/16");
        // perfdhcp plays a relay agent: its address is the giaddr answers go to.
        link.cli.ip(&["addr", "add", "10.77.0.2/16", "dev", "rl-c"]);
        let dir = tempfile::tempdir().unwrap();
        let _server = start(&link, dir.path());
        wait_answering(&link);
        let max = perfdhcp(&link, rate, secs, false);
        if name.starts_with("racklift") {
            eprintln!(
                "racklift counters after saturation: {}",
                racklift_counters(&link, dir.path())
            );
        }
        // Then the highest rate with no drop at all: from 90 % of what it
        // sustained down in steps of 5 % of it.
        let mut steady_rate = ((max.rate * 0.9) as u32).max(10);
        let pid = _server.0.id();
        let mut cpu_before = cpu_ticks(pid);
        let mut steady = perfdhcp(&link, steady_rate, secs, true);
        for step in 1..=8 {
            if steady.drops_offer + steady.drops_ack == 0 {
                break;
            }
            eprintln!(
                "{name}: at {steady_rate}/s: {steady:?}; kernel receive-buffer drops so far: server {}, perfdhcp {}",
                udp_rcvbuf_errors(&link.srv),
                udp_rcvbuf_errors(&link.cli)
            );
            steady_rate = ((max.rate * (0.9 - 0.05 * step as f64)) as u32).max(10);
            cpu_before = cpu_ticks(pid);
            steady = perfdhcp(&link, steady_rate, secs, true);
        }
        // The server's CPU time (every thread, user and system) per exchange
        // completed in that last run.
        let cpu_us = (cpu_ticks(pid) - cpu_before) as f64 * 1e6
            / ticks_per_sec()
            / steady.acks.max(1) as f64;
        eprintln!("{name}: {max:?}; at {steady_rate}/s: {steady:?}");
        if name.starts_with("racklift") {
            eprintln!(
                "racklift counters after the runs below saturation: {}",
                racklift_counters(&link, dir.path())
            );
        }
        rows.push((round, name, rate, max, steady_rate, steady, cpu_us));
    }
    println!(
        "| round | server | offered rate | 4-way exchanges/s | drops (offer/ack) | highest rate without drops | drops there | server CPU per exchange there |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (round, name, rate, max, steady_rate, steady, cpu_us) in &rows {
        println!(
            "| {round} | {name} | {rate}/s | {:.0} | {}/{} of {} | {steady_rate}/s: {:.0} | {}/{} of {} | {cpu_us:.0} µs |",
            max.rate,
            max.drops_offer,
            max.drops_ack,
            max.sent,
            steady.rate,
            steady.drops_offer,
            steady.drops_ack,
            steady.sent
        );
    }
}
