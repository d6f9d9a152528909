//! Boot files as firmware and ramdisks fetch them from a configured server:
//! over HTTP under `/assets/` (Range, HEAD, no token needed, nothing outside
//! the directory) and over TFTP from the configured root, both started by
//! `server::start` from the configuration.

mod common;

use common::{Backend, TestServer, peers};
use std::time::Duration;

fn noise(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_files_over_http_with_ranges_and_over_tftp() {
    let tftp_port = 20000 + (std::process::id() % 20000) as u16;
    let ipxe = tempfile::tempdir().unwrap();
    std::fs::write(ipxe.path().join("undionly.kpxe"), b"iPXE BIOS image").unwrap();
    let ipxe_dir = ipxe.path().to_path_buf();
    let Some(s) = TestServer::start(Backend::Sqlite, move |c| {
        c.tftp.enabled = true;
        c.tftp.listen = format!("127.0.0.1:{tftp_port}").parse().unwrap();
        c.tftp.root = ipxe_dir;
    })
    .await
    else {
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
