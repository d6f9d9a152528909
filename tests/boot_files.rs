//! Boot files as firmware and ramdisks fetch them from a configured server:
//! over HTTP under `/assets/` (Range, HEAD, no token needed, nothing outside
//! the directory) and over TFTP from the configured root, both started by
//! `server::start` from the configuration; and a server with no ramdisk says
//! so at start, in `/healthz` and on the machine's console.

mod common;

use common::{Backend, TestServer, peers};
use std::time::Duration;

fn noise(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A server with TFTP on `port` serving `root` (also `/assets/ipxe/`).
async fn with_tftp(port: u16, root: &std::path::Path) -> Option<TestServer> {
    let root = root.to_path_buf();
    TestServer::start(Backend::Sqlite, move |c| {
        c.tftp.enabled = true;
        c.tftp.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.tftp.root = root;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_files_over_http_with_ranges_and_over_tftp() {
    let tftp_port = 20000 + (std::process::id() % 20000) as u16;
    let ipxe = tempfile::tempdir().unwrap();
    std::fs::write(ipxe.path().join("undionly.kpxe"), b"iPXE BIOS image").unwrap();
    let Some(s) = with_tftp(tftp_port, ipxe.path()).await else {
        return;
    };
    let image = noise(3 << 20);
    let dir = s.cfg.boot.assets_dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("disk.raw"), &image).unwrap();
    std::fs::write(s.cfg.data_dir.join("outside.txt"), b"not served").unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/assets/images/disk.raw", s.url);

    let full = http.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().await.unwrap().as_ref(), &image[..]);

    let part = http
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 1000-1999/{}", image.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &image[1000..2000]);

    let tail = http
        .get(&url)
        .header("Range", "bytes=-16")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &image[image.len() - 16..]
    );

    let resume = http
        .get(&url)
        .header("Range", format!("bytes={}-", image.len() - 100))
        .send()
        .await
        .unwrap();
    assert_eq!(resume.status(), 206);
    assert_eq!(resume.bytes().await.unwrap().len(), 100);

    let beyond = http
        .get(&url)
        .header("Range", format!("bytes={}-", image.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        image.len().to_string().as_str()
    );

    for path in [
        "/assets/../outside.txt",
        "/assets/%2e%2e/outside.txt",
        "/assets/images/missing.img",
    ] {
        let r = http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert!(
            r.status() == 404 || r.status() == 400,
            "{path}: {}",
            r.status()
        );
    }
    let efi = http
        .get(format!("{}/assets/ipxe/undionly.kpxe", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(efi.status(), 200);
    assert_eq!(efi.bytes().await.unwrap().as_ref(), b"iPXE BIOS image");

    // The TFTP server the configuration enabled.
    if peers::require(&["curl"], "Debian package curl") {
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new("curl")
                .args(["-s", "--max-time", "10"])
                .arg(format!("tftp://127.0.0.1:{tftp_port}/undionly.kpxe"))
                .output(),
        )
        .await
        .expect("curl finished")
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"iPXE BIOS image");
        assert!(
            s.metrics()
                .await
                .contains("racklift_tftp_transfers_total 1")
        );
    }
    s.finish().await;
}

/// One HTTP/1.1 response read off a raw connection: status, headers, body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (with a `content-length`; HEAD responses have no body).
async fn read_response(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    head_only: bool,
) -> Raw {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).await.unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut r = Raw {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = r
            .header("content-length")
            .expect("a content-length")
            .parse()
            .unwrap();
        r.body = vec![0; len];
        conn.read_exact(&mut r.body).await.unwrap();
    }
    r
}

/// Boot files on kept-alive and pipelined connections: downloads answered
/// before the router and requests handed to it mix on one connection, and
/// both give the same bytes and headers for the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_and_api_requests_share_connections() {
    use tokio::io::AsyncWriteExt;
    let Some(s) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let image = noise(5 << 20);
    let dir = s.cfg.boot.assets_dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("disk.raw"), &image).unwrap();
    std::fs::write(dir.join("empty.img"), b"").unwrap();
    let addr = s.url.strip_prefix("http://").unwrap().to_string();
    let open = || async {
        tokio::io::BufReader::new(tokio::net::TcpStream::connect(&addr).await.unwrap())
    };

    // Four requests in one write: a download, a range, the API, a download again.
    let mut conn = open().await;
    let req = "GET /assets/images/disk.raw HTTP/1.1\r\nHost: t\r\n\r\n\
               GET /assets/images/disk.raw HTTP/1.1\r\nHost: t\r\nRange: bytes=1000-1999\r\n\r\n\
               GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
               GET /assets/images/disk.raw HTTP/1.1\r\nHost: t\r\n\r\n";
    conn.get_mut().write_all(req.as_bytes()).await.unwrap();
    let first = read_response(&mut conn, false).await;
    assert_eq!(first.status, 200);
    assert!(first.body == image, "the download's bytes differ");
    assert_eq!(first.header("accept-ranges"), Some("bytes"));
    let part = read_response(&mut conn, false).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range").unwrap(),
        format!("bytes 1000-1999/{}", image.len())
    );
    assert_eq!(part.body, image[1000..2000]);
    let health = read_response(&mut conn, false).await;
    assert_eq!(health.status, 200);
    assert!(
        String::from_utf8_lossy(&health.body).contains("\"status\":\"ok\""),
        "{}",
        String::from_utf8_lossy(&health.body)
    );
    // The router serves the rest of this connection: same file, same answer.
    let again = read_response(&mut conn, false).await;
    assert_eq!(again.status, 200);
    assert!(again.body == image);
    for h in [
        "content-type",
        "content-length",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(first.header(h), again.header(h), "{h}");
    }

    // HTTP/1.0 without keep-alive: the answer, then the connection closes.
    let mut conn = open().await;
    conn.get_mut()
        .write_all(b"GET /assets/images/disk.raw HTTP/1.0\r\nRange: bytes=-10\r\n\r\n")
        .await
        .unwrap();
    let tail = read_response(&mut conn, false).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, image[image.len() - 10..]);
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty(), "bytes after the response: {rest:?}");

    // An empty file, a directory, a missing file, a query string.
    let mut conn = open().await;
    conn.get_mut()
        .write_all(
            b"GET /assets/images/empty.img HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /assets/images/disk.raw?v=2 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\n\r\n\
              GET /assets/images/missing.img HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /assets/images/disk.raw HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999-\r\n\r\n",
        )
        .await
        .unwrap();
    let empty = read_response(&mut conn, false).await;
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    let query = read_response(&mut conn, false).await;
    assert_eq!((query.status, &query.body[..]), (206, &image[..4]));
    let missing = read_response(&mut conn, false).await;
    assert_eq!(missing.status, 404);
    let beyond = read_response(&mut conn, false).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("content-range").unwrap(),
        format!("bytes */{}", image.len())
    );

    // Downloads are counted like every request.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("route=\"/assets/*\""),
        "no boot-file downloads in /metrics:\n{metrics}"
    );
}

/// A link inside a boot-file directory that leads out of it serves nothing,
/// whichever way the file is asked for: a plain download (the front), `HEAD`,
/// a conditional or multi-range request (the router), TFTP; the data
/// directory's token is never answered. A link that stays inside is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_a_boot_directory_serve_nothing() {
    let tftp_port = 20000 + ((std::process::id() + 7) % 20000) as u16;
    let ipxe = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("ipxe.efi"), b"elsewhere").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("ipxe.efi"),
        ipxe.path().join("ipxe.efi"),
    )
    .unwrap();
    std::fs::write(ipxe.path().join("undionly.kpxe"), b"iPXE BIOS image").unwrap();
    std::os::unix::fs::symlink("undionly.kpxe", ipxe.path().join("bios.kpxe")).unwrap();
    let Some(s) = with_tftp(tftp_port, ipxe.path()).await else {
        return;
    };
    let assets = &s.cfg.boot.assets_dir;
    std::fs::create_dir_all(assets).unwrap();
    std::os::unix::fs::symlink(&s.cfg.data_dir, assets.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(&s.cfg.secrets.admin_token_file, assets.join("token.img")).unwrap();
    std::fs::write(assets.join("real.img"), b"inside").unwrap();
    std::os::unix::fs::symlink("real.img", assets.join("alias.img")).unwrap();
    let token = std::fs::read_to_string(&s.cfg.secrets.admin_token_file).unwrap();
    let http = reqwest::Client::new();
    let asks: [(&str, Option<(&str, &str)>); 4] = [
        ("GET", None),
        ("HEAD", None),
        ("GET", Some(("If-None-Match", "\"x\""))),
        ("GET", Some(("Range", "bytes=0-1,3-4"))),
    ];
    for path in [
        "/assets/dirlink/admin.token",
        "/assets/token.img",
        "/assets/ipxe/ipxe.efi",
    ] {
        for (method, header) in asks {
            let mut r = http.request(method.parse().unwrap(), format!("{}{path}", s.url));
            if let Some((n, v)) = header {
                r = r.header(n, v);
            }
            let r = r.send().await.unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            assert_eq!(status, 404, "{method} {path} {header:?}");
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains(token.trim()) && !text.contains("elsewhere"),
                "{method} {path} {header:?} answered the file: {text}"
            );
        }
    }
    for (path, want) in [
        ("/assets/alias.img", &b"inside"[..]),
        ("/assets/ipxe/bios.kpxe", &b"iPXE BIOS image"[..]),
    ] {
        let r = http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), want, "{path}");
    }
    if peers::require(&["curl"], "Debian package curl") {
        let tftp = |name: &str| {
            tokio::process::Command::new("curl")
                .args(["-s", "--max-time", "10"])
                .arg(format!("tftp://127.0.0.1:{tftp_port}/{name}"))
                .output()
        };
        let out = tftp("ipxe.efi").await.unwrap();
        assert!(!out.status.success(), "TFTP served a link out of its root");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("elsewhere"));
        let out = tftp("bios.kpxe").await.unwrap();
        assert_eq!(out.stdout, b"iPXE BIOS image");
    }
    s.finish().await;
}

/// `racklift serve` started where no ramdisk was built (its default
/// `boot.ramdisk_dir` is relative): it says so in its log, in `/healthz` and to
/// a machine that would boot the ramdisk, and serves the ramdisk once built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_its_ramdisk_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_racklift"))
        .arg("serve")
        .current_dir(dir.path())
        .env("RACKLIFT__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "RACKLIFT__HTTP__PUBLIC_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .env("RACKLIFT__DISCOVERY__ENABLED", "true")
        .env("RACKLIFT__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("racklift starts");
    let url = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let health = loop {
        if let Ok(r) = reqwest::get(format!("{url}/healthz")).await
            && r.status() == 200
        {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!(
                "racklift did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ramdisk = dir.path().join("boot-assets/ramdisk");
    let logged = std::fs::read_to_string(&log).unwrap();
    let boot = health["boot"].as_str().unwrap_or_default().to_string();
    for text in [&logged, &boot] {
        assert!(
            text.contains("vmlinuz is missing (boot.kernel_url)")
                && text.contains("initrd.img is missing (boot.initrd_url)")
                && text.contains(&*ramdisk.to_string_lossy())
                && text.contains("build-ramdisk.sh"),
            "{text}"
        );
    }
    assert_eq!(health["status"], "ok", "{health}");
    let script = |mac: &'static str| {
        let url = url.clone();
        async move {
            reqwest::get(format!("{url}/boot.ipxe?mac={mac}"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let s = script("52:54:00:aa:00:01").await;
    assert!(
        s.contains("echo racklift: 52:54:00:aa:00:01 is not enrolled")
            && s.contains("echo racklift: warning: the server has no ramdisk to give (vmlinuz is missing, initrd.img is missing)")
            && !s.contains(&*dir.path().to_string_lossy()),
        "{s}"
    );
    // Its kernel line then fails on a 404 and the script asks again.
    let got = reqwest::get(format!("{url}/assets/ramdisk/vmlinuz"))
        .await
        .unwrap();
    assert_eq!(got.status(), 404);
    // Built while running: served at once, no restart.
    std::fs::create_dir_all(&ramdisk).unwrap();
    std::fs::write(ramdisk.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(ramdisk.join("initrd.img"), b"initrd").unwrap();
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["boot"], "ok", "{health}");
    let s = script("52:54:00:aa:00:02").await;
    assert!(
        s.contains(&format!("kernel {url}/assets/ramdisk/vmlinuz")) && !s.contains("warning"),
        "{s}"
    );
    let got = reqwest::get(format!("{url}/assets/ramdisk/vmlinuz"))
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(&got.bytes().await.unwrap()[..], b"kernel");
    let _ = child.kill();
    let _ = child.wait();
}
