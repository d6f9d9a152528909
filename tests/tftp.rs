//! The TFTP server against real clients: atftp (the one client here that
//! sends windowsize, RFC 7440) and curl, plus hostile packets from a plain UDP
//! socket. Without atftp or curl the tests print SKIP, except under CI where
//! they fail (scripts/setup-test-env.sh installs both).

#[path = "common/peers.rs"]
mod peers;

use racklift::metrics::Metrics;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const BIG: usize = 3 * 1024 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// True when `tool` is on PATH; otherwise SKIP (or fail under CI).
fn have(tool: &str) -> bool {
    peers::require(&[tool], "Debian packages atftp, curl")
}

/// Pseudo-random bytes (xorshift), the same for the same seed.
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

/// A TFTP server on 127.0.0.1, a free port, over a temporary root.
struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Root: `big` (3 MiB), `small` (1000 bytes), `etc/passwd` (a decoy that
    /// an absolute-path request must not reach), and `escape`, a symbolic link
    /// to `secret` outside the root.
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("big"), noise(BIG, 0x9E37_79B9_7F4A_7C15)).expect("write");
        std::fs::write(root.join("small"), noise(1000, 7)).expect("write");
        std::fs::write(root.join("etc/passwd"), b"decoy inside the root\n").expect("write");
        std::fs::write(dir.path().join("secret"), b"outside the root\n").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape"))
            .expect("symlink");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::default());
        let (shutdown, rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        {
            let metrics = metrics.clone();
            let root = root.clone();
            rt.spawn(async move {
                racklift::tftp::serve(socket, &root, metrics, rx)
                    .await
                    .expect("tftp serve");
            });
        }
        let s = Server {
            addr,
            dir,
            metrics,
            shutdown,
            rt: Some(rt),
        };
        s.wait_ready();
        s
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Polls with a one-block read of `small` until the server answers.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        loop {
            assert!(Instant::now() < deadline, "TFTP server never answered");
            sock.send_to(b"\x00\x01small\x00octet\x00", self.addr)
                .expect("send");
            let mut buf = [0u8; 1024];
            if let Ok((n, from)) = sock.recv_from(&mut buf)
                && n >= 4
                && buf[..2] == [0, 3]
            {
                // Acknowledge the single block so the transfer ends.
                let _ = sock.send_to(&[0, 4, buf[2], buf[3]], from);
                return;
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        let text = self.metrics.render(&[]);
        let prefix = format!("racklift_{name}_total ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().expect("counter value"))
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Ran {
    status: ExitStatus,
    output: String,
}

/// Runs `cmd` with stdout and stderr in a file, killed after `timeout`.
fn run(mut cmd: Command, log: &Path, timeout: Duration) -> Ran {
    let f = File::create(log).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().expect("dup"))
        .stderr(f);
    let mut child = Guard(cmd.spawn().expect("spawn client"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        status,
        output: std::fs::read_to_string(log).unwrap_or_default(),
    }
}

fn atftp_get(s: &Server, remote: &str, local: &Path, opts: &[&str], trace: bool) -> Ran {
    let mut cmd = Command::new("atftp");
    if trace {
        cmd.arg("--trace");
    }
    for o in opts {
        cmd.arg("--option").arg(o);
    }
    cmd.arg("-g")
        .arg("-r")
        .arg(remote)
        .arg("-l")
        .arg(local)
        .arg(s.addr.ip().to_string())
        .arg(s.addr.port().to_string());
    run(cmd, &local.with_extension("log"), CLIENT_TIMEOUT)
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[test]
fn atftp_fetches_with_blksize_and_windowsize_16() {
    if !have("atftp") {
        return;
    }
    let s = Server::start();
    let out = s.out("big.out");
    let r = atftp_get(
        &s,
        "big",
        &out,
        &["blksize 1428", "windowsize 16", "tsize 0"],
        true,
    );
    assert!(r.status.success(), "atftp failed: {}", tail(&r.output));
    assert!(same_bytes(&out, &s.root().join("big")), "bytes differ");
    let oack = r
        .output
        .lines()
        .find(|l| l.contains("received OACK"))
        .unwrap_or_else(|| panic!("no OACK in atftp's trace: {}", tail(&r.output)));
    assert!(oack.contains("windowsize: 16"), "{oack}");
    assert!(oack.contains("blksize: 1428"), "{oack}");
    assert!(oack.contains(&format!("tsize: {BIG}")), "{oack}");
    assert!(s.counter("tftp_transfers") >= 1);
}

#[test]
fn curl_fetches_with_blksize() {
    if !have("curl") {
        return;
    }
    let s = Server::start();
    let out = s.out("curl.out");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--tftp-blksize", "1428", "-o"])
        .arg(&out)
        .arg(format!("tftp://{}/big", s.addr));
    let r = run(cmd, &s.out("curl.log"), CLIENT_TIMEOUT);
    assert!(r.status.success(), "curl failed: {}", tail(&r.output));
    assert!(same_bytes(&out, &s.root().join("big")), "bytes differ");
}

#[test]
fn paths_outside_the_root_and_missing_files_are_refused() {
    if !have("atftp") {
        return;
    }
    let s = Server::start();
    let outside = std::fs::read(s.dir.path().join("secret")).expect("secret");
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    let decoy = std::fs::read(s.root().join("etc/passwd")).expect("decoy");
    for (i, name) in [
        "../etc/passwd",
        "/etc/passwd",
        "../secret",
        "etc/../../secret",
        "escape",
        "missing",
    ]
    .iter()
    .enumerate()
    {
        let out = s.out(&format!("refused{i}.out"));
        let r = atftp_get(&s, name, &out, &[], false);
        assert!(
            !r.status.success(),
            "{name} was served: {}",
            tail(&r.output)
        );
        let got = std::fs::read(&out).unwrap_or_default();
        assert!(got.is_empty(), "{name}: {} bytes written", got.len());
        assert!(got != outside && got != passwd && got != decoy);
    }
    assert_eq!(s.counter("tftp_refused"), 5);
    assert_eq!(s.counter("tftp_not_found"), 1);
    assert_eq!(s.counter("tftp_transfers"), 1, "only the readiness probe");
}

#[test]
fn writes_are_refused() {
    if !have("atftp") {
        return;
    }
    let s = Server::start();
    let local = s.out("upload.src");
    std::fs::write(&local, b"should not land").expect("write");
    let mut cmd = Command::new("atftp");
    cmd.arg("-p")
        .arg("-r")
        .arg("upload")
        .arg("-l")
        .arg(&local)
        .arg(s.addr.ip().to_string())
        .arg(s.addr.port().to_string());
    let r = run(cmd, &s.out("upload.log"), CLIENT_TIMEOUT);
    assert!(!r.status.success(), "write accepted: {}", tail(&r.output));
    assert!(!s.root().join("upload").exists());
    assert_eq!(s.counter("tftp_refused"), 1);
}

#[test]
fn malformed_packets_do_not_stop_the_server() {
    if !have("atftp") {
        return;
    }
    let s = Server::start();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let long_name = vec![b'o'; 3000];
    let mut oversized_opts = b"\x00\x01small\x00octet\x00".to_vec();
    oversized_opts.extend_from_slice(&long_name);
    oversized_opts.extend_from_slice(b"\x00x\x00");
    let mut huge = b"\x00\x01small\x00octet\x00blksize\x00".to_vec();
    huge.extend(std::iter::repeat_n(b'9', 9000));
    huge.push(0);
    let packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 1],
        b"\x00\x01small".to_vec(),
        b"\x00\x01small\x00".to_vec(),
        b"\x00\x01small\x00bogusmode\x00".to_vec(),
        b"\x00\x01small\x00octet\x00blksize\x00".to_vec(),
        b"\x00\x01\xff\xfe\x00octet\x00".to_vec(),
        b"\x00\x09small\x00octet\x00".to_vec(),
        b"\xff\xffsmall\x00octet\x00".to_vec(),
        vec![0, 3, 0, 1, 1, 2, 3],
        vec![0, 4, 0, 1],
        vec![0, 5, 0, 1, b'x', 0],
        vec![0, 6, b'a', 0, b'b', 0],
        oversized_opts,
        huge,
        b"\x00\x01small\x00octet\x00blksize\x0065535\x00windowsize\x000\x00timeout\x000\x00tsize\x00-1\x00".to_vec(),
    ];
    for p in &packets {
        sock.send_to(p, s.addr).expect("send");
    }
    for i in 0..200u64 {
        let len = (i as usize * 37) % 1500;
        sock.send_to(&noise(len, i + 1), s.addr).expect("send");
    }
    // A window far over the limit is cut to the server's maximum. The flood
    // may have filled the socket's buffer, so the request is sent again until
    // an answer comes, as a client would.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (n, from) = loop {
        assert!(Instant::now() < deadline, "no OACK");
        probe
            .send_to(
                b"\x00\x01small\x00octet\x00blksize\x001428\x00windowsize\x0065535\x00",
                s.addr,
            )
            .expect("send");
        if let Ok(got) = probe.recv_from(&mut buf) {
            break got;
        }
    };
    assert_eq!(&buf[..2], &[0, 6], "not an OACK: {:?}", &buf[..n]);
    let oack = &buf[2..n];
    let want = format!("windowsize\0{}\0", racklift::tftp::MAX_WINDOW);
    assert!(
        oack.windows(want.len()).any(|w| w == want.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(oack)
    );
    probe.send_to(&[0, 4, 0, 0], from).expect("ack 0");
    probe
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (n, _) = loop {
        // Repeated OACKs (from the requests sent again) come before the data.
        let (n, from2) = probe.recv_from(&mut buf).expect("data 1");
        if from2 == from && buf[..2] == [0, 3] {
            break (n, from2);
        }
    };
    assert_eq!(&buf[..4], &[0, 3, 0, 1]);
    assert_eq!(n - 4, 1000);
    probe.send_to(&[0, 4, 0, 1], from).expect("ack 1");

    let out = s.out("after.out");
    let r = atftp_get(&s, "big", &out, &["blksize 1428", "windowsize 16"], false);
    assert!(r.status.success(), "atftp failed: {}", tail(&r.output));
    assert!(same_bytes(&out, &s.root().join("big")), "bytes differ");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
