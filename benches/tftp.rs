//! TFTP throughput: a 32 MiB file fetched with atftp (blksize 1428, windowsize
//! 1 and 16) from racklift's TFTP server (`racklift serve` with `[tftp]` on)
//! and from tftpd-hpa (`in.tftpd`), 3 runs each, the servers taking turns,
//! over loopback. Prints a Markdown table.
//!
//!     cargo bench --bench tftp
//!
//! Needs atftp and tftpd-hpa (scripts/setup-test-env.sh installs them);
//! without them it prints SKIP. RACKLIFT_BENCH_BASELINE=/path/to/an/older/racklift
//! runs that binary too, beside this build's, named by
//! RACKLIFT_BENCH_BASELINE_LABEL.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: usize = 32 * 1024 * 1024;
const RUNS: usize = 3;
const WINDOWS: [u16; 2] = [1, 16];

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
}

fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls with a one-block read of `probe` until `addr` answers.
fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    loop {
        assert!(Instant::now() < deadline, "{addr} never answered");
        sock.send_to(b"\x00\x01probe\x00octet\x00", addr)
            .expect("send");
        let mut buf = [0u8; 1024];
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && n >= 4
            && buf[..2] == [0, 3]
        {
            let _ = sock.send_to(&[0, 4, buf[2], buf[3]], from);
            return;
        }
    }
}

/// One atftp fetch; returns seconds.
fn fetch(addr: SocketAddr, window: u16, out: &Path, want: &[u8]) -> f64 {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new("atftp");
    cmd.args(["--option", "blksize 1428"])
        .arg("--option")
        .arg(format!("windowsize {window}"))
        .arg("-g")
        .arg("-r")
        .arg("big")
        .arg("-l")
        .arg(out)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = Guard(cmd.spawn().expect("atftp"));
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "atftp timed out"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "atftp failed against {addr}");
    let got = std::fs::read(out).expect("output");
    assert!(got == want, "bytes differ from {addr}");
    secs
}

fn main() {
    for tool in ["atftp", "in.tftpd"] {
        if !on_path(tool) {
            println!("SKIP: {tool} is not installed");
            return;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let data = noise(SIZE, 42);
    std::fs::write(root.join("big"), &data).expect("write");
    std::fs::write(root.join("probe"), b"ready").expect("write");
    let out = dir.path().join("out");

    // racklift: each binary as `racklift serve`, with its own data directory.
    let mut servers = Vec::new();
    let mut running = Vec::new();
    for (i, bin) in common::binaries().into_iter().enumerate() {
        let run_dir = dir.path().join(format!("racklift-{i}"));
        std::fs::create_dir(&run_dir).expect("mkdir");
        let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
        let cfg = common::config(
            &run_dir,
            &format!("127.0.0.1:{}", common::free_port()),
            &format!(
                "[tftp]\nenabled = true\nlisten = \"{addr}\"\nroot = \"{}\"\n",
                root.display()
            ),
        );
        running.push(bin.serve(&cfg));
        wait_ready(addr);
        servers.push((bin.name, addr));
    }

    // tftpd-hpa, in the foreground (-L) on a free port.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let hpa_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let in_tftpd = if Path::new("/usr/sbin/in.tftpd").is_file() {
        "/usr/sbin/in.tftpd"
    } else {
        "in.tftpd"
    };
    let _hpa = Guard(
        Command::new(in_tftpd)
            .arg("-L")
            .arg("-s")
            .arg(&root)
            .arg("-a")
            .arg(hpa_addr.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("in.tftpd"),
    );
    wait_ready(hpa_addr);

    println!("32 MiB over loopback with atftp, blksize 1428, {RUNS} runs each (median)\n");
    println!("| server | windowsize | runs (s) | median (s) | MiB/s |");
    println!("|---|---:|---|---:|---:|");
    servers.push(("tftpd-hpa".into(), hpa_addr));
    // The servers take turns, run by run, so a machine whose speed drifts
    // (a busy neighbour, an idle CPU that is slow to wake) weighs on all alike.
    let mut times = vec![Vec::new(); servers.len() * WINDOWS.len()];
    for _ in 0..RUNS {
        for (i, (_, addr)) in servers.iter().enumerate() {
            for (j, w) in WINDOWS.iter().enumerate() {
                times[i * WINDOWS.len() + j].push(fetch(*addr, *w, &out, &data));
            }
        }
    }
    for (i, (name, _)) in servers.iter().enumerate() {
        for (j, w) in WINDOWS.iter().enumerate() {
            let times = &mut times[i * WINDOWS.len() + j];
            let runs = times
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            times.sort_by(f64::total_cmp);
            let median = times[RUNS / 2];
            println!(
                "| {name} | {w} | {runs} | {median:.2} | {:.1} |",
                SIZE as f64 / (1024.0 * 1024.0) / median
            );
        }
    }
    drop(running);
}
