//! Boot-file download throughput: 64 concurrent downloads of a 256 MiB file
//! from racklift's `/assets/` and from nginx serving the same file on the same
//! machine (loopback), 3 rounds each, alternating. Prints a Markdown table.
//!
//!     cargo bench --bench http
//!
//! Needs nginx (scripts/setup-test-env.sh installs it); without it racklift is
//! measured alone. RACKLIFT_BENCH_MIB sets the file size (default 256).

#[path = "../tests/common/peers.rs"]
mod peers;

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
    // racklift in this process, as `serve` would run it (release build).
    let mut cfg = racklift::config::Config::defaults();
    cfg.data_dir = dir.path().join("data");
    cfg.database.url = format!("sqlite://{}/racklift.db", cfg.data_dir.display());
    cfg.secrets.key_file = cfg.data_dir.join("secret.key");
    cfg.secrets.admin_token_file = cfg.data_dir.join("admin.token");
    cfg.profiles_dir = cfg.data_dir.join("profiles");
    cfg.boot.assets_dir = assets.clone();
    cfg.log.level = "warn".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = racklift::server::start(cfg, listener).await.unwrap();
    let rl_url = format!("http://{}/assets/images/disk.raw", running.addr);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ng_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ng_dir).unwrap();
    let ng = nginx(&ng_dir, &assets, port);
    let ng_url = format!("http://127.0.0.1:{port}/images/disk.raw");
    if ng.is_some() {
        wait_up(&ng_url).await;
    } else {
        println!("nginx not installed: racklift alone");
    }
    let (mut rl, mut nx) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        rl.push(download_all(&rl_url, size).await);
        if ng.is_some() {
            nx.push(download_all(&ng_url, size).await);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!("| server | {CLIENTS} downloads of {mib} MiB, MiB/s (median of {ROUNDS}) | rounds |");
    println!("|---|---|---|");
    println!(
        "| racklift `/assets/` | {:.0} | {rl:.0?} |",
        med(&mut rl.clone())
    );
    if ng.is_some() {
        println!(
            "| nginx (sendfile) | {:.0} | {nx:.0?} |",
            med(&mut nx.clone())
        );
    }
    running.stop().await;
}
