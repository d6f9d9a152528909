//! A real Redfish BMC for tests: sushy-tools' `sushy-emulator --fake` (PyPI),
//! one per test, on a free port of 127.0.0.1 with its own configuration file
//! and state directory in a temporary directory.
//!
//! The emulator is looked for in `RACKLIFT_SUSHY_EMULATOR`, then the
//! virtualenvs `scripts/setup-test-env.sh` makes (`/opt/racklift-peers`,
//! `.venv-peers` in the source tree), then `PATH`. Without it the test prints
//! `SKIP: ...` and returns, unless `CI` is set, where it fails.
//!
//! The fake driver applies power changes after a random delay of 1 to 11 s:
//! read the power state with [`Sushy::wait_power`], never once.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SYSTEM_UUID: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
pub const NIC_MAC: &str = "52:54:00:5c:31:9c";

/// Where `sushy-emulator` is, if anywhere.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RACKLIFT_SUSHY_EMULATOR") {
        return Some(PathBuf::from(p));
    }
    let candidates = [
        PathBuf::from("/opt/racklift-peers/bin/sushy-emulator"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-peers/bin/sushy-emulator"),
    ];
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("sushy-emulator"))
            .find(|p| p.is_file())
    })
}

/// The user and password of an emulator started with authentication.
pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";

/// Writes an htpasswd line for [`USER`] with a bcrypt digest of [`PASSWORD`],
/// using the Python beside the emulator (which has bcrypt for checking it).
fn write_htpasswd(bin: &std::path::Path, file: &std::path::Path) -> Result<(), String> {
    let python = bin.with_file_name("python3");
    let out = Command::new(&python)
        .args([
            "-c",
            "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(4)).decode())",
            USER,
            PASSWORD,
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} could not make a bcrypt digest: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(file, &out.stdout).map_err(|e| e.to_string())
}

/// One running emulator.
pub struct Sushy {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sushy {
    /// Starts an emulator with one machine (powered off) and waits until it
    /// answers; None (skip) when sushy-tools is not installed.
    pub async fn start() -> Option<Sushy> {
        Self::start_with(false).await
    }

    /// Like [`Sushy::start`]; with `auth`, the emulator asks for HTTP basic
    /// authentication as [`USER`] with [`PASSWORD`] (a bcrypt htpasswd file,
    /// made with the emulator's own Python).
    pub async fn start_with(auth: bool) -> Option<Sushy> {
        let Some(bin) = find() else {
            super::peers::check(Some(
                "sushy-emulator not installed (PyPI sushy-tools; see scripts/setup-test-env.sh)"
                    .into(),
            ));
            return None;
        };
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(&bin, auth).await {
                Ok(s) => return Some(s),
                Err(e) => last = e,
            }
        }
        panic!("sushy-emulator did not start: {last}");
    }

    async fn try_start(bin: &std::path::Path, auth: bool) -> Result<Sushy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).map_err(|e| e.to_string())?;
        let conf = dir.path().join("emulator.conf");
        let auth_line = if auth {
            let file = dir.path().join("htpasswd");
            write_htpasswd(bin, &file)?;
            format!("SUSHY_EMULATOR_AUTH_FILE = '{}'\n", file.display())
        } else {
            String::new()
        };
        std::fs::write(
            &conf,
            auth_line
                + &format!(
                    "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                 SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_STATE_DIR = '{}'\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [{{\n\
                 \x20   'uuid': '{SYSTEM_UUID}',\n\
                 \x20   'name': 'node-0',\n\
                 \x20   'power_state': 'Off',\n\
                 \x20   'nics': [{{'mac': '{NIC_MAC}', 'ip': '172.22.0.100'}}],\n\
                 \x20   'external_notifier': False,\n\
                 }}]\n",
                    state.display()
                ),
        )
        .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("emulator.log")).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["--fake", "-i", "127.0.0.1", "-p", &port.to_string()])
            .env("SUSHY_EMULATOR_CONFIG", &conf)
            .env("SUSHY_EMULATOR_STATE_DIR", &state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut s = Sushy { port, dir, child };
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!("exited with {status}: {}", s.log()));
            }
            let ok = http
                .get(format!("http://127.0.0.1:{port}/redfish/v1/Systems"))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(s);
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("no answer after 30 s: {}", s.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    /// The address as a racklift node writes it.
    pub fn address(&self) -> String {
        "http://127.0.0.1".into()
    }

    /// The emulated system, read straight from the emulator.
    pub async fn system(&self) -> Value {
        reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/redfish/v1/Systems/{SYSTEM_UUID}",
                self.port
            ))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .expect("emulator answers")
            .json()
            .await
            .expect("JSON")
    }

    /// Waits (up to 60 s) until the emulator reports `PowerState` `want`.
    pub async fn wait_power(&self, want: &str) {
        let started = Instant::now();
        loop {
            let s = self.system().await;
            if s["PowerState"] == want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the emulator never reported power {want}: {}",
                s["PowerState"]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
