//! Boot-file download throughput: 64 concurrent downloads of a 256 MiB file
//! from racklift's `/assets/` (`racklift serve`) and from nginx serving the
//! same file on the same machine (loopback), 3 rounds each, alternating.
//! Prints a Markdown table.
//!
//!     cargo bench --bench http
//!
//! Needs nginx (scripts/setup-test-env.sh installs it); without it racklift is
//! measured alone. RACKLIFT_BENCH_MIB sets the file size (default 256).
//! RACKLIFT_BENCH_BASELINE=/path/to/an/older/racklift runs that binary too,
//! beside this build's, named by RACKLIFT_BENCH_BASELINE_LABEL.

mod common;

use common::peers;
use futures::StreamExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const ROUNDS: usize = 3;

async fn download_all(url: &str, size: u64) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let resp = client.get(&url).send().await.expect("request");
            assert!(resp.status().is_success(), "{url}: {}", resp.status());
            let mut stream = resp.bytes_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                n += chunk.expect("body").len() as u64;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        let n = t.await.unwrap();
        assert_eq!(n, size, "a download came back short");
        total += n;
    }
    total as f64 / started.elapsed().as_secs_f64() / (1024.0 * 1024.0)
}

fn nginx(dir: &Path, root: &Path, port: u16) -> Option<peers::Peer> {
    let bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| Path::new(b).is_file() || peers::on_path(b))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {r}; }}\n}}\n",
            d = dir.display(),
            r = root.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args(["-c"])
        .arg(&conf)
        .args(["-p"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(peers::Peer(child))
}

async fn wait_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::Client::new().head(url).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: u64 = std::env::var("RACKLIFT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let size = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(assets.join("images")).unwrap();
    let file = assets.join("images/disk.raw");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
        for _ in 0..mib {
            f.write_all(&block).unwrap();
        }
    }
    // racklift: each binary as `racklift serve`, with its own data directory.
    let mut servers = Vec::new();
    let mut running = Vec::new();
    for (i, bin) in common::binaries().into_iter().enumerate() {
        let run_dir = dir.path().join(format!("racklift-{i}"));
        std::fs::create_dir(&run_dir).unwrap();
        let listen = format!("127.0.0.1:{}", common::free_port());
        let cfg = common::config(
            &run_dir,
            &listen,
            &format!("[boot]\nassets_dir = \"{}\"\n", assets.display()),
        );
        running.push(bin.serve(&cfg));
        let url = format!("http://{listen}/assets/images/disk.raw");
        wait_up(&url).await;
        servers.push((format!("{} `/assets/`", bin.name), url));
    }
    let port = common::free_port();
    let ng_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ng_dir).unwrap();
    let ng = nginx(&ng_dir, &assets, port);
    let ng_url = format!("http://127.0.0.1:{port}/images/disk.raw");
    if ng.is_some() {
        wait_up(&ng_url).await;
        servers.push(("nginx (sendfile)".into(), ng_url));
    } else {
        println!("nginx not installed: racklift alone");
    }
    // The servers take turns, round by round.
    let mut rates = vec![Vec::new(); servers.len()];
    for _ in 0..ROUNDS {
        for ((_, url), rates) in servers.iter().zip(&mut rates) {
            rates.push(download_all(url, size).await);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!("| server | {CLIENTS} downloads of {mib} MiB, MiB/s (median of {ROUNDS}) | rounds |");
    println!("|---|---|---|");
    for ((name, _), rates) in servers.iter().zip(&rates) {
        println!("| {name} | {:.0} | {rates:.0?} |", med(&mut rates.clone()));
    }
    drop((ng, running));
}
