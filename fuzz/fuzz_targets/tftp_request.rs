//! Fuzzes the TFTP read-request handler with any file name: it must refuse or
//! open a regular file that really lies under the root (never one reached
//! through `..`, an absolute name or a link leaving the root), and never panic.
#![no_main]

use async_tftp::server::Handler;
use libfuzzer_sys::fuzz_target;
use racklift::metrics::Metrics;
use racklift::tftp::BootFiles;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
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
        Tree { _dir: dir, root }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = tree();
    let files = BootFiles::new(&t.root, Arc::new(Metrics::default())).unwrap();
    let name = Path::new(std::ffi::OsStr::from_bytes(data));
    let peer = "127.0.0.1:69".parse().unwrap();
    let mut files = files;
    if futures::executor::block_on(files.read_req_open(&peer, name)).is_ok() {
        // The handler sees the name as the crate decodes it: lossy UTF-8.
        let asked = name.to_string_lossy().into_owned();
        let real = std::fs::canonicalize(t.root.join(&asked)).expect("an opened name resolves");
        assert!(real.starts_with(&t.root), "{name:?} opened {real:?} outside the root");
        assert!(real.is_file());
    }
});
