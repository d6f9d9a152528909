//! The DHCP bench's network link: two namespaces joined by a veth pair, with
//! names of the bench's own (`rlbench<pid>-<n>s`, `...c`), distinct from the
//! tests' (`rl<pid>-...`, tests/common/netns.rs), so a bench and a test run
//! can share a machine and neither sweeps the other's namespaces.
//!
//! Every namespace gets its own empty `/etc/netns/NAME/resolv.conf` before
//! anything runs in it, and everything is removed by name on drop.

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "rlbench";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let o = ip(args);
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A namespace that is deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace named `rlbench<pid>-<n><tag>` with loopback up.
    pub fn new(tag: &str) -> Netns {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_orphans);
        let name = format!(
            "{PREFIX}{}-{}{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let etc = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&etc).expect("create /etc/netns entry");
        std::fs::write(format!("{etc}/resolv.conf"), "").expect("empty resolv.conf");
        ip_ok(&["netns", "add", &name]);
        ip_ok(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip -n NS ...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip_ok(&all);
    }
}

/// Deletes the namespaces of bench processes that died without dropping
/// them: `rlbench<pid>-...` whose process is gone. Nothing else is touched.
fn remove_orphans() {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            drop(Netns {
                name: name.to_string(),
            });
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside go with it.
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Two namespaces joined by a veth pair: the server side `rl-s` with
/// `server_cidr` (e.g. `10.77.0.1/16`), the client side `rl-c` without an
/// address.
pub struct Link {
    pub srv: Netns,
    pub cli: Netns,
}

impl Link {
    pub fn new(server_cidr: &str) -> Link {
        let srv = Netns::new("s");
        let cli = Netns::new("c");
        cli.ip(&[
            "link", "add", "rl-c", "type", "veth", "peer", "name", "rl-s", "netns", &srv.name,
        ]);
        srv.ip(&["addr", "add", server_cidr, "dev", "rl-s"]);
        srv.ip(&["link", "set", "rl-s", "up"]);
        cli.ip(&["link", "set", "rl-c", "up"]);
        Link { srv, cli }
    }
}
