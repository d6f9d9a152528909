//! The TFTP server against real clients: atftp (the one client here that
//! sends windowsize, RFC 7440) and curl, plus hostile packets from a plain UDP
//! socket, and a client written here that loses packets on purpose (to see
//! the server send them again), fetches past block 65535, stalls while
//! another transfer runs, asks a server on 0.0.0.0 on a second address, and
//! reads in netascii. Without atftp or curl the tests that need them print
//! SKIP, except under CI where they fail (scripts/setup-test-env.sh installs
//! both).

#[path = "common/peers.rs"]
mod peers;

use racklift::metrics::Metrics;
use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const BIG: usize = 3 * 1024 * 1024;
/// 76,801 blocks of 8 bytes, so block numbers wrap past 65535.
const MANY: usize = 600 * 1024 + 5;
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
    /// Root: `big` (3 MiB), `small` (1000 bytes), `many` (600 KiB and 5
    /// bytes: over 65,535 blocks of 8 bytes), `etc/passwd` (a decoy that an
    /// absolute-path request must not reach), and `escape`, a symbolic link to
    /// `secret` outside the root.
    fn start() -> Server {
        Server::start_on("127.0.0.1:0")
    }

    /// As [`Server::start`], listening on `bind`; `addr` is on 127.0.0.1.
    fn start_on(bind: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("big"), noise(BIG, 0x9E37_79B9_7F4A_7C15)).expect("write");
        std::fs::write(root.join("small"), noise(1000, 7)).expect("write");
        std::fs::write(root.join("many"), noise(MANY, 11)).expect("write");
        std::fs::write(root.join("etc/passwd"), b"decoy inside the root\n").expect("write");
        std::fs::write(dir.path().join("secret"), b"outside the root\n").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape"))
            .expect("symlink");
        let socket = UdpSocket::bind(bind).expect("bind");
        let addr = SocketAddr::from(([127, 0, 0, 1], socket.local_addr().expect("addr").port()));
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
                racklift::netboot::tftp::serve(socket, &root, metrics, rx)
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
    let want = format!("windowsize\0{}\0", racklift::netboot::tftp::MAX_WINDOW);
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
    assert!(s.counter("tftp_malformed") > 0);
}

/// A TFTP client for the tests (RFC 1350 and RFC 7440 receiver): ACKs each
/// full window, the last block, and a duplicate (with the last block it has in
/// order). `lose` decides which packets it loses on purpose.
struct Client {
    sock: UdpSocket,
    blksize: usize,
    window: u64,
    /// The transfer's address, once the server answered.
    tid: Option<SocketAddr>,
    got: Vec<u8>,
    /// The next block (counted from 1, not wrapped) it waits for.
    next: u64,
    since_ack: u64,
    /// DATA copies received for each block.
    copies: HashMap<u64, u32>,
    oack: Option<String>,
}

/// A packet the client may lose: the first copy of a DATA block, or its ACK.
enum Lose {
    Data(u64),
    Ack(u64),
}

impl Client {
    /// Sends a read request for `name` with `opts` (name, value pairs).
    fn request(server: SocketAddr, name: &str, opts: &[(&str, &str)]) -> Client {
        Client::request_in(server, name, "octet", opts)
    }

    /// As [`Client::request`], in transfer mode `mode`.
    fn request_in(server: SocketAddr, name: &str, mode: &str, opts: &[(&str, &str)]) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut p = vec![0, 1];
        for part in [name, mode]
            .into_iter()
            .chain(opts.iter().flat_map(|(k, v)| [*k, *v]))
        {
            p.extend_from_slice(part.as_bytes());
            p.push(0);
        }
        sock.send_to(&p, server).expect("send request");
        let opt = |key: &str| opts.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        Client {
            sock,
            blksize: opt("blksize").map_or(512, |v| v.parse().expect("blksize")),
            window: opt("windowsize").map_or(1, |v| v.parse().expect("windowsize")),
            tid: None,
            got: Vec::new(),
            next: 1,
            since_ack: 0,
            copies: HashMap::new(),
            oack: None,
        }
    }

    fn recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self.sock.recv_from(buf) {
            Ok(got) => Some(got),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => None,
            Err(e) => panic!("recv: {e}"),
        }
    }

    /// Waits for the server's first answer: an OACK (kept, not yet
    /// acknowledged), or DATA 1 (handled; true if it was the last block).
    /// Panics on an ERROR.
    fn first_answer(&mut self, lose: &mut dyn FnMut(Lose) -> bool) -> bool {
        let mut buf = vec![0u8; 70000];
        let (n, from) = self.recv(&mut buf).expect("an answer to the request");
        self.tid = Some(from);
        match buf[..2] {
            [0, 6] => {
                self.oack = Some(String::from_utf8_lossy(&buf[2..n]).replace('\0', " "));
                false
            }
            [0, 3] => self.data(&buf[..n], lose),
            _ => panic!("unexpected answer {:?}", &buf[..n.min(64)]),
        }
    }

    fn ack(&self, block: u64) {
        let b = (block as u16).to_be_bytes();
        self.sock
            .send_to(&[0, 4, b[0], b[1]], self.tid.expect("tid"))
            .expect("send ack");
    }

    /// Handles one DATA packet; true when the last block is in.
    fn data(&mut self, p: &[u8], lose: &mut dyn FnMut(Lose) -> bool) -> bool {
        let block = u16::from_be_bytes([p[2], p[3]]);
        let payload = &p[4..];
        if block != self.next as u16 {
            // A duplicate, or a block after a gap: say what is in order.
            let behind = (self.next as u16).wrapping_sub(block);
            if (1..=self.window as u16 * 2).contains(&behind) {
                *self
                    .copies
                    .entry(self.next - u64::from(behind))
                    .or_default() += 1;
            }
            self.ack(self.next - 1);
            self.since_ack = 0;
            return false;
        }
        let copies = self.copies.entry(self.next).or_default();
        *copies += 1;
        if *copies == 1 && lose(Lose::Data(self.next)) {
            return false;
        }
        self.got.extend_from_slice(payload);
        let this = self.next;
        self.next += 1;
        self.since_ack += 1;
        let last = payload.len() < self.blksize;
        if last || self.since_ack == self.window {
            self.since_ack = 0;
            if !(self.copies[&this] == 1 && !last && lose(Lose::Ack(this))) {
                self.ack(this);
            }
        }
        last
    }

    /// Acknowledges the OACK (if any) and receives the whole file.
    fn finish(mut self, lose: &mut dyn FnMut(Lose) -> bool) -> Client {
        if self.oack.is_some() {
            self.ack(0);
        }
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let mut buf = vec![0u8; 70000];
        loop {
            assert!(Instant::now() < deadline, "transfer did not finish");
            let Some((n, from)) = self.recv(&mut buf) else {
                // Nothing for a while: say again what is in order.
                self.ack(self.next - 1);
                continue;
            };
            if Some(from) != self.tid || n < 4 {
                continue;
            }
            let done = match buf[..2] {
                [0, 3] => self.data(&buf[..n], lose),
                [0, 6] => {
                    self.ack(0);
                    false
                }
                [0, 5] => panic!("server error {}", String::from_utf8_lossy(&buf[4..n])),
                _ => false,
            };
            if done {
                return self;
            }
        }
    }

    fn fetch(
        server: SocketAddr,
        name: &str,
        opts: &[(&str, &str)],
        lose: &mut dyn FnMut(Lose) -> bool,
    ) -> Client {
        let mut c = Client::request(server, name, opts);
        if c.first_answer(lose) {
            return c;
        }
        c.finish(lose)
    }

    fn copies(&self, block: u64) -> u32 {
        self.copies.get(&block).copied().unwrap_or(0)
    }
}

#[test]
fn lost_blocks_and_acks_are_sent_again() {
    let s = Server::start();
    let want = std::fs::read(s.root().join("big")).expect("big");
    for window in ["1", "4"] {
        // Lose the first copy of blocks 3, 10 and 11, and the first ACK the
        // client sends from block 20 on.
        let mut withheld = None;
        let c = Client::fetch(
            s.addr,
            "big",
            &[
                ("blksize", "1428"),
                ("windowsize", window),
                ("timeout", "1"),
            ],
            &mut |l| match l {
                Lose::Data(b) => [3, 10, 11].contains(&b),
                Lose::Ack(b) if b >= 20 && withheld.is_none() => {
                    withheld = Some(b);
                    true
                }
                Lose::Ack(_) => false,
            },
        );
        assert_eq!(c.got.len(), want.len(), "windowsize {window}");
        assert!(c.got == want, "bytes differ at windowsize {window}");
        let withheld = withheld.expect("an ACK was withheld");
        for b in [3, 10, 11, withheld] {
            assert!(
                c.copies(b) >= 2,
                "windowsize {window}: block {b} was not sent again"
            );
        }
    }
}

#[test]
fn block_numbers_wrap_past_65535() {
    let s = Server::start();
    let want = std::fs::read(s.root().join("many")).expect("many");
    let c = Client::fetch(
        s.addr,
        "many",
        &[("blksize", "8"), ("windowsize", "16")],
        &mut |_| false,
    );
    assert!(c.next - 1 > 65535, "only {} blocks", c.next - 1);
    assert!(c.got == want, "bytes differ");
    // Lock-step, as most firmware fetches, with atftp.
    if have("atftp") {
        let out = s.out("many.out");
        let r = atftp_get(&s, "many", &out, &["blksize 8"], false);
        assert!(r.status.success(), "atftp failed: {}", tail(&r.output));
        assert!(same_bytes(&out, &s.root().join("many")), "bytes differ");
    }
}

#[test]
fn a_file_of_whole_blocks_ends_with_an_empty_block() {
    let s = Server::start();
    let c = Client::fetch(s.addr, "small", &[("blksize", "8")], &mut |_| false);
    assert_eq!(c.next - 1, 1000 / 8 + 1, "blocks, the last one empty");
    assert!(c.got == std::fs::read(s.root().join("small")).expect("small"));
    // No options: no OACK, DATA 1 comes first, in blocks of 512.
    let c = Client::fetch(s.addr, "small", &[], &mut |_| false);
    assert!(c.oack.is_none());
    assert_eq!(c.next - 1, 2);
    assert!(c.got == std::fs::read(s.root().join("small")).expect("small"));
}

#[test]
fn a_stalled_transfer_does_not_hold_up_another() {
    let s = Server::start();
    let want = std::fs::read(s.root().join("big")).expect("big");
    let mut stalled = Client::request(s.addr, "big", &[("blksize", "1428"), ("timeout", "60")]);
    stalled.first_answer(&mut |_| false);
    assert!(stalled.oack.as_deref().unwrap_or("").contains("timeout 60"));
    // The OACK stays unanswered while another client fetches the same file.
    let other = Client::fetch(
        s.addr,
        "big",
        &[("blksize", "1428"), ("windowsize", "8")],
        &mut |_| false,
    );
    assert!(other.got == want, "bytes differ");
    let stalled = stalled.finish(&mut |_| false);
    assert!(stalled.got == want, "bytes differ after the stall");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[test]
fn a_server_on_every_address_answers_from_the_one_asked() {
    let s = Server::start_on("0.0.0.0:0");
    // Loopback answers for all of 127/8: ask on 127.0.0.2 from 127.0.0.1.
    let asked = SocketAddr::from(([127, 0, 0, 2], s.addr.port()));
    let c = Client::fetch(asked, "small", &[("blksize", "1428")], &mut |_| false);
    assert_eq!(c.tid.expect("answered").ip(), asked.ip());
    assert!(c.got == std::fs::read(s.root().join("small")).expect("small"));
}

#[test]
fn netascii_ends_lines_in_cr_lf_and_mail_is_refused() {
    let s = Server::start();
    std::fs::write(s.root().join("text"), b"#!ipxe\nchain boot.ipxe\r\nend\n").expect("write");
    let mut c = Client::request_in(
        s.addr,
        "text",
        "netascii",
        &[("blksize", "8"), ("tsize", "0")],
    );
    assert!(!c.first_answer(&mut |_| false));
    let oack = c.oack.clone().expect("an OACK");
    assert!(oack.contains("blksize 8"), "{oack}");
    assert!(!oack.contains("tsize"), "tsize in netascii: {oack}");
    let c = c.finish(&mut |_| false);
    assert_eq!(c.got, b"#!ipxe\r\nchain boot.ipxe\r\0\r\nend\r\n");

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    sock.send_to(b"\x00\x01text\x00mail\x00", s.addr)
        .expect("send");
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    assert_eq!(&buf[..4], &[0, 5, 0, 4], "{:?}", &buf[..n]);
    assert_eq!(s.counter("tftp_refused"), 1);
}
