//! A real BMC for tests and benchmarks: OpenIPMI's `ipmi_sim`, one per test, on
//! a free UDP port of 127.0.0.1 with its own directory, configuration and
//! chassis script.
//!
//! The chassis script keeps the "machine" in files: `power` (`0`/`1`), `boot`
//! (the device ipmi_sim names: `pxe`, `default` for the hard drive, `cdrom`,
//! `bios`), and `log`, one line per change (`power 1`, `boot pxe`, `reset 1`,
//! `shutdown 1`), so a test reads what racklift told the machine to do.
//!
//! Without `ipmi_sim` and `ipmitool` the test prints `SKIP: ...` and returns,
//! unless `CI` is set, where it fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "secret";

const CHASSIS_SCRIPT: &str = r#"#!/bin/bash
# ipmi_sim's chassis control: `chassis.sh MC get power|boot ...` prints
# `power:0|1` / `boot:DEV`; `chassis.sh MC set power 1 ...` changes the machine.
dir=$(dirname "$0")
shift
op=$1
shift
put() { printf '%s\n' "$2" > "$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1"; }
if [ "$op" = get ]; then
  for key in "$@"; do
    case $key in
      power) echo "power:$(cat "$dir/power")" ;;
      boot) echo "boot:$(cat "$dir/boot")" ;;
    esac
  done
  exit 0
fi
while [ $# -ge 2 ]; do
  key=$1 val=$2
  shift 2
  case $key in
    power) put power "$val" ;;
    boot) put boot "$val" ;;
    shutdown) put power 0 ;;
  esac
  printf '%s %s\n' "$key" "$val" >> "$dir/log"
done
"#;

/// Whether `ipmi_sim` and `ipmitool` are installed; prints why not, or fails in CI.
pub fn available() -> bool {
    super::peers::require(
        &["ipmi_sim", "ipmitool"],
        "Debian packages openipmi, ipmitool",
    )
}

/// One running `ipmi_sim`.
pub struct IpmiSim {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl IpmiSim {
    /// Starts a simulator and waits until it answers; None (skip) when not installed.
    pub fn start() -> Option<IpmiSim> {
        if !available() {
            return None;
        }
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(sim) => return Some(sim),
                Err(e) => last = e,
            }
        }
        panic!("ipmi_sim did not start: {last}");
    }

    fn try_start() -> Result<IpmiSim, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_udp_port();
        let d = dir.path();
        let script = d.join("chassis.sh");
        std::fs::write(&script, CHASSIS_SCRIPT).map_err(|e| e.to_string())?;
        make_executable(&script);
        std::fs::write(d.join("power"), "0\n").map_err(|e| e.to_string())?;
        std::fs::write(d.join("boot"), "default\n").map_err(|e| e.to_string())?;
        std::fs::write(d.join("log"), "").map_err(|e| e.to_string())?;
        std::fs::create_dir(d.join("state")).map_err(|e| e.to_string())?;
        std::fs::write(
            d.join("lan.conf"),
            format!(
                r#"name "rlbmc{port}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{script} 0x20"
  user 1 true  ""      "test"   user   10  none md2 md5 straight
  user 2 true  "{USER}" "{PASSWORD}" admin  10  none md2 md5 straight
"#,
                script = script.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            d.join("sim.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("sim.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ipmi_sim")
            .args(["-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n"])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run ipmi_sim: {e}"))?;
        let mut sim = IpmiSim { port, dir, child };
        sim.wait_ready()?;
        Ok(sim)
    }

    /// Polls with `ipmitool ... chassis power status` until the simulator answers.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "ipmi_sim exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
                ));
            }
            let out = self
                .ipmitool(&["-N", "1", "-R", "1", "chassis", "power", "status"])
                .output()
                .map_err(|e| format!("cannot run ipmitool: {e}"))?;
            if out.status.success() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "ipmi_sim on port {} did not answer within 30 s: {}",
                    self.port,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ipmitool -I lanplus -C 3` against this simulator, with `args` after the credentials.
    pub fn ipmitool(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ipmitool");
        c.args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", USER, "-P", PASSWORD])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Whether the machine is powered, as the chassis script last set it.
    pub fn powered(&self) -> bool {
        self.read("power") == "1"
    }

    /// The boot device the BMC last passed on (`pxe`, `default`, `cdrom`, ...).
    pub fn boot(&self) -> String {
        self.read("boot")
    }

    /// Every change the BMC passed on to the machine, in order.
    pub fn log(&self) -> Vec<String> {
        self.read("log")
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Waits (up to 20 s, polling) until `what` holds of the simulator.
    pub fn wait_until(&self, description: &str, what: impl Fn(&IpmiSim) -> bool) {
        let start = Instant::now();
        while !what(self) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the simulated machine never got to: {description}; its log: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port of 127.0.0.1 that nothing uses right now.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local address").port()
}

fn make_executable(p: &PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
}
