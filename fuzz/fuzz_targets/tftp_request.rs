//! Fuzzes the TFTP request path on whole packets: any bytes are decoded as a
//! request (never a panic), the options are negotiated, and when a read
//! request is accepted the opened file must really lie under the root (the
//! kernel's name for the open descriptor is checked), never a file reached
//! through `..`, an absolute name or a link leaving the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use racklift::metrics::Metrics;
use racklift::netboot::tftp::packet::{self, Incoming};
use racklift::netboot::tftp::{BootFiles, Content, MAX_WINDOW};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    files: BootFiles,
    rt: tokio::runtime::Runtime,
}

/// root/{boot.bin, sub/x.efi, up -> .., out -> /etc/hostname}; secret.txt beside root.
fn tree() -> &'static Tree {
    static T: OnceLock<Tree> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("boot.bin"), b"boot").unwrap();
        std::fs::write(root.join("sub/x.efi"), b"efi").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("out")).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        let files = BootFiles::new(&root, Arc::new(Metrics::default())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Tree {
            _dir: dir,
            root,
            files,
            rt,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = tree();
    let Ok(Incoming::Request(req)) = packet::decode_request(data) else {
        return;
    };
    let granted = packet::negotiate(
        &req.options,
        Some(4),
        packet::MAX_BLKSIZE,
        MAX_WINDOW,
        Duration::from_secs(3),
    );
    assert!((packet::MIN_BLKSIZE..=packet::MAX_BLKSIZE).contains(&granted.blksize));
    assert!((1..=MAX_WINDOW).contains(&granted.windowsize));
    let mut oack = Vec::new();
    packet::encode_oack(&granted.oack, &mut oack);
    if req.write {
        return;
    }
    let peer = "127.0.0.1:69".parse().unwrap();
    if let Ok(opened) = t.files.open_read(peer, req.name, t.rt.handle()) {
        let Content::File { file, .. } = &opened.content else {
            panic!("generated content without a generator");
        };
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .expect("the descriptor has a name");
        assert!(
            real.starts_with(&t.root),
            "{:?} opened {real:?} outside the root",
            req.name
        );
        assert!(real.is_file());
    }
});
