//! Network namespaces for tests that put real DHCP clients, peer servers and
//! QEMU machines on a link with racklift, never on the machine's own network.
//!
//! Every namespace gets its own empty `/etc/netns/NAME/resolv.conf` before
//! anything runs in it (a DHCP client's hooks would otherwise rewrite the
//! machine's resolv.conf), and everything is removed by name on drop.
//! Sockets are made inside a namespace by a thread that joined it
//! ([`run_in`]); they stay there whoever uses them afterwards.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Whether this process can make namespaces (root and iproute2); prints why
/// not, or fails in CI.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return super::peers::check(Some(
            "network namespace tests need root (CAP_NET_ADMIN)".into(),
        ));
    }
    super::peers::require(&["ip"], "Debian package iproute2")
}

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
    /// A fresh namespace named `rl<pid>-<n><tag>` with loopback up.
    pub fn new(tag: &str) -> Netns {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_orphans);
        let name = format!(
            "rl{}-{}{tag}",
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
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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

    /// Runs `f` on a thread that joined this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in(&self.name, f)
    }
}

/// Deletes the namespaces of test processes that died without dropping them
/// (killed by a timeout or SIGKILL): `rl<pid>-...` whose process is gone.
fn remove_orphans() {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name
            .strip_prefix("rl")
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
        // Processes still inside (clients that daemonised) go with it.
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

/// Runs `f` on a new thread that joined namespace `ns` (sockets it makes
/// belong to that namespace).
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file descriptor we hold open; it only
        // changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
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

    /// Waits (up to 10 s) until both ends have an IPv6 link-local address that
    /// duplicate address detection has let go of (it is tentative for a second
    /// or two after the link comes up, and nothing can be sent from it).
    pub fn wait_link_local(&self) {
        let started = std::time::Instant::now();
        for (ns, dev) in [(&self.srv, "rl-s"), (&self.cli, "rl-c")] {
            loop {
                let out = ns
                    .cmd("ip")
                    .args(["-6", "addr", "show", "dev", dev, "scope", "link"])
                    .output()
                    .expect("ip runs");
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("inet6 fe80:") && !text.contains("tentative") {
                    break;
                }
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(10),
                    "no usable link-local address on {dev}: {text}"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }

    /// Sets the client interface's MAC (each DHCP client run can be a new machine).
    pub fn set_client_mac(&self, mac: &str) {
        self.cli.ip(&["link", "set", "rl-c", "address", mac]);
    }
}

/// Forwards a loopback port of the test's namespace to `target` inside `ns`,
/// so the test's HTTP client reaches a server listening there.
pub async fn forward(ns: &str, target: SocketAddr) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forwarder");
    let addr = l.local_addr().expect("addr");
    let ns = ns.to_string();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            let ns = ns.clone();
            tokio::spawn(async move {
                let s = tokio::task::spawn_blocking(move || {
                    run_in(&ns, move || std::net::TcpStream::connect(target))
                })
                .await;
                if let Ok(Ok(s)) = s {
                    let _ = s.set_nonblocking(true);
                    if let Ok(mut b) = tokio::net::TcpStream::from_std(s) {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                }
            });
        }
    });
    addr
}

/// Forwards `listen` inside `ns` to `target` in the test's namespace, so a
/// process in the namespace reaches a service outside it (PostgreSQL).
pub async fn forward_into(ns: &str, listen: SocketAddr, target: SocketAddr) {
    let l = run_in(ns, move || {
        let l = std::net::TcpListener::bind(listen)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })
    .expect("bind inside the namespace");
    let l = tokio::net::TcpListener::from_std(l).expect("listener");
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut b) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
        }
    });
}

/// A namespace with the tap `tap0` at 10.88.0.1/24, where a QEMU machine
/// network-boots (QEMU runs inside the namespace to open the tap).
pub fn with_tap(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ns.ip(&["addr", "add", "10.88.0.1/24", "dev", "tap0"]);
    ns.ip(&["link", "set", "tap0", "up"]);
    ns
}

/// dnsmasq handing out addresses on the tap network of [`with_tap`] from a
/// namespace of its own (10.88.0.2), joined to it by a bridge: `br0` in `ns`
/// takes the tap and racklift's address 10.88.0.1, so racklift (serving
/// `br0`) and dnsmasq each have port 67 on a link of their own.
pub fn dnsmasq_beside_tap(ns: &Netns, dir: &std::path::Path) -> (super::peers::Peer, Netns) {
    let dns = Netns::new("d");
    ns.ip(&["addr", "del", "10.88.0.1/24", "dev", "tap0"]);
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "tap0", "master", "br0"]);
    ns.ip(&[
        "link", "add", "rl-sd", "type", "veth", "peer", "name", "rl-d", "netns", &dns.name,
    ]);
    ns.ip(&["link", "set", "rl-sd", "master", "br0"]);
    ns.ip(&["link", "set", "rl-sd", "up"]);
    ns.ip(&["addr", "add", "10.88.0.1/24", "dev", "br0"]);
    ns.ip(&["link", "set", "br0", "up"]);
    dns.ip(&["addr", "add", "10.88.0.2/24", "dev", "rl-d"]);
    dns.ip(&["link", "set", "rl-d", "up"]);
    let peer = dnsmasq(&dns, "rl-d", "10.88.0.100,10.88.0.200,1h", dir);
    (peer, dns)
}

/// racklift as the DHCP server of the tap network of [`with_tap`], its HTTP
/// API (boot scripts, boot files) at 10.88.0.1:8080 inside the namespace.
pub fn serve_tap_network(c: &mut racklift::config::Config, discovery: bool) {
    c.dhcp.enabled = true;
    c.dhcp.mode = racklift::config::DhcpMode::Server;
    c.dhcp.interfaces = vec!["tap0".into()];
    c.dhcp.subnets = vec![racklift::config::SubnetConfig {
        network: "10.88.0.0/24".parse().unwrap(),
        ranges: vec![(
            "10.88.0.100".parse().unwrap(),
            "10.88.0.200".parse().unwrap(),
        )],
        router: None,
        dns_servers: vec![],
        domain: None,
        next_server: None,
        lease_time: std::time::Duration::from_secs(600),
        discovery,
    }];
    c.http.listen = "0.0.0.0:8080".parse().unwrap();
    c.http.public_url = "http://10.88.0.1:8080".into();
    c.boot.kernel_url = "http://10.88.0.1:8080/assets/ramdisk/vmlinuz".into();
    c.boot.initrd_url = "http://10.88.0.1:8080/assets/ramdisk/initrd.img".into();
}

/// dnsmasq handing out `range` ("first,last,lease") on `iface` inside `ns`,
/// and nothing else (no DNS, no boot options).
pub fn dnsmasq(ns: &Netns, iface: &str, range: &str, dir: &std::path::Path) -> super::peers::Peer {
    ns.cmd("dnsmasq")
        .args([
            "--no-daemon",
            "--port=0",
            "--bind-interfaces",
            "--no-ping",
            "--no-resolv",
            "--no-hosts",
            "--dhcp-authoritative",
        ])
        .arg(format!("--interface={iface}"))
        .arg(format!("--dhcp-range={range}"))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(super::peers::Peer)
        .expect("dnsmasq")
}
