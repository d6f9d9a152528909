//! What the API, DHCP, TFTP and HTTP benches share: which `racklift` binaries
//! they run, and how each is started as `racklift serve`.
//!
//! By default a bench runs this build's binary. With
//! `RACKLIFT_BENCH_BASELINE=/path/to/an/older/racklift` it runs that binary
//! too, as one more server beside this build's, in alternation, in the same
//! rounds and the same table; `RACKLIFT_BENCH_BASELINE_LABEL` names it in the
//! table (default "baseline").
#![allow(dead_code)] // each bench uses part of it

#[path = "../../tests/common/peers.rs"]
pub mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One `racklift` binary a bench runs.
pub struct Racklift {
    /// How the bench's table names it, e.g. "racklift (this build)".
    pub name: String,
    pub path: PathBuf,
}

/// The binaries to run, in the order each round takes them: the baseline
/// (when `RACKLIFT_BENCH_BASELINE` is set), then this build.
pub fn binaries() -> Vec<Racklift> {
    let mut all = Vec::new();
    if let Some(path) = std::env::var_os("RACKLIFT_BENCH_BASELINE").filter(|p| !p.is_empty()) {
        // Absolute, as the servers run in directories of their own.
        let path = std::fs::canonicalize(&path).unwrap_or_else(|e| {
            panic!(
                "RACKLIFT_BENCH_BASELINE={}: {e}",
                Path::new(&path).display()
            )
        });
        let label = std::env::var("RACKLIFT_BENCH_BASELINE_LABEL")
            .ok()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or_else(|| "baseline".into());
        all.push(Racklift {
            name: format!("racklift ({})", label.trim()),
            path,
        });
    }
    all.push(Racklift {
        name: "racklift (this build)".into(),
        path: env!("CARGO_BIN_EXE_racklift").into(),
    });
    all
}

/// Writes `dir/racklift.toml` for `racklift serve`: data in `dir/data`, no
/// profiles, the HTTP API on `listen`, warnings only, then `tables` (more TOML
/// tables, e.g. `[tftp]` or `[[dhcp.subnet]]`). Only keys every version since
/// the benches began knows, as unknown keys are refused.
pub fn config(dir: &Path, listen: &str, tables: &str) -> PathBuf {
    let path = dir.join("racklift.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{d}/data\"\nprofiles = {{ dir = \"{d}/profiles\" }}\n\
             [http]\nlisten = \"{listen}\"\n\
             [log]\nlevel = \"warn\"\n\
             {tables}",
            d = dir.display(),
        ),
    )
    .expect("write racklift.toml");
    path
}

/// The admin token the server at `dir` (see [`config`]) wrote on its first start.
pub fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl Racklift {
    /// `racklift serve --config CONFIG` in `CONFIG`'s directory, its output
    /// discarded.
    pub fn serve(&self, config: &Path) -> peers::Peer {
        self.serve_by(Command::new(&self.path), config)
    }

    /// The same, with `cmd` running this binary, e.g. `ip netns exec NS PATH`
    /// for a network namespace.
    pub fn serve_by(&self, mut cmd: Command, config: &Path) -> peers::Peer {
        if let Some(dir) = config.parent() {
            cmd.current_dir(dir);
        }
        cmd.args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(peers::Peer)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }
}

/// A port nothing listens on now (TCP and UDP alike, on loopback).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
