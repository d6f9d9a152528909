//! One conformance suite that every BMC driver runs, against a real far end
//! where one exists: `ipmi` against OpenIPMI's `ipmi_sim` (through a UDP
//! proxy that counts sessions), `redfish` against sushy-tools' emulator and
//! against the DMTF-schema service of `common/redfish_server.rs` (which
//! counts requests in flight), and `fake` against its in-process machines.
//!
//! Each driver must: report the machine's power and change it; set the boot
//! device the machine then shows; refuse a wrong password as not
//! transient, leaving the machine as it was; run concurrent commands to one
//! BMC one at a time (where the far end can see it); and give up on a BMC
//! that does not answer with a transient error, on its own.
//! What only one protocol has (lost packets, ETags, task monitors, TLS) is
//! tested in `tests/ipmi.rs` and `tests/redfish.rs`.

mod common;
#[path = "common/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "common/redfish_server.rs"]
mod redfish_server;
#[path = "common/sushy.rs"]
mod sushy;
#[path = "common/udp_proxy.rs"]
mod udp_proxy;

use common::peers;
use ipmi_sim::IpmiSim;
use racklift::bmc::{BmcDriver, BmcError, BmcTarget, BootDevice, Drivers, PowerAction, PowerState};
use racklift::node::BmcDriverKind;
use redfish_server::{Options, RedfishServer};
use std::time::{Duration, Instant};
use sushy::Sushy;
use udp_proxy::Proxy;

/// The far end of a driver: what the machine shows, read there, not
/// through the driver under test.
enum Far {
    Ipmi { sim: IpmiSim, proxy: Proxy },
    Redfish(RedfishServer),
    Sushy(Sushy),
    Fake,
}

/// A driver under test, its far end, and the targets the checks use.
struct Rig {
    name: &'static str,
    drivers: Drivers,
    /// The BMC with the right credentials.
    target: BmcTarget,
    /// Drivers with short timeouts, and a BMC address where nothing answers.
    quick: Drivers,
    unreachable: BmcTarget,
    far: Far,
}

fn target(
    driver: BmcDriverKind,
    address: &str,
    port: Option<u16>,
    user: &str,
    password: &str,
) -> BmcTarget {
    BmcTarget {
        driver,
        address: Some(address.into()),
        port,
        username: Some(user.into()),
        password: Some(password.into()),
        verify_tls: true,
        node_key: "conformance".into(),
    }
}

fn closed_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn redfish_drivers() -> Drivers {
    let mut d = Drivers::default();
    d.redfish.poll_interval = Duration::from_millis(100);
    d.redfish.retry_backoff = Duration::from_millis(50);
    d
}

fn quick_redfish() -> (Drivers, BmcTarget) {
    let mut d = redfish_drivers();
    d.redfish.retry_deadline = Duration::from_millis(500);
    let t = target(
        BmcDriverKind::Redfish,
        "http://127.0.0.1",
        Some(closed_tcp_port()),
        "u",
        "p",
    );
    (d, t)
}

impl Rig {
    async fn ipmi() -> Option<Rig> {
        let sim = tokio::task::spawn_blocking(IpmiSim::start).await.unwrap()?;
        let proxy = Proxy::start(sim.port, 0).await;
        let mut quick = Drivers::default();
        quick.ipmi.try_timeout = Duration::from_millis(200);
        quick.ipmi.tries = 3;
        let t = |port| {
            target(
                BmcDriverKind::Ipmi,
                "127.0.0.1",
                Some(port),
                ipmi_sim::USER,
                ipmi_sim::PASSWORD,
            )
        };
        Some(Rig {
            name: "ipmi (ipmi_sim)",
            drivers: Drivers::default(),
            target: t(proxy.port),
            quick,
            unreachable: t(ipmi_sim::free_udp_port()),
            far: Far::Ipmi { sim, proxy },
        })
    }

    async fn redfish() -> Rig {
        let srv = RedfishServer::start(Options::default()).await;
        let (quick, unreachable) = quick_redfish();
        Rig {
            name: "redfish (DMTF-schema service)",
            drivers: redfish_drivers(),
            target: target(
                BmcDriverKind::Redfish,
                &srv.address(false),
                Some(srv.addr.port()),
                redfish_server::USER,
                redfish_server::PASSWORD,
            ),
            quick,
            unreachable,
            far: Far::Redfish(srv),
        }
    }

    async fn sushy() -> Option<Rig> {
        let emu = Sushy::start_with(true).await?;
        let (quick, unreachable) = quick_redfish();
        Some(Rig {
            name: "redfish (sushy-emulator)",
            drivers: redfish_drivers(),
            target: target(
                BmcDriverKind::Redfish,
                &emu.address(),
                Some(emu.port),
                sushy::USER,
                sushy::PASSWORD,
            ),
            quick,
            unreachable,
            far: Far::Sushy(emu),
        })
    }

    fn fake() -> Rig {
        Rig {
            name: "fake",
            drivers: Drivers::default(),
            target: target(
                BmcDriverKind::Fake,
                "conformance-bmc",
                None,
                "admin",
                "secret",
            ),
            quick: Drivers::default(),
            unreachable: target(
                BmcDriverKind::Fake,
                "unreachable-bmc",
                None,
                "admin",
                "secret",
            ),
            far: Far::Fake,
        }
    }

    fn driver(&self, password: Option<&str>) -> Box<dyn BmcDriver> {
        let mut t = self.target.clone();
        if let Some(p) = password {
            t.password = Some(p.into());
        }
        self.drivers.driver_for(&t).expect("a driver")
    }

    /// Whether the machine is powered, as its far end says.
    async fn powered(&self) -> bool {
        match &self.far {
            Far::Ipmi { sim, .. } => sim.powered(),
            Far::Redfish(s) => s.machine().power == "On",
            Far::Sushy(e) => e.system().await["PowerState"] == "On",
            Far::Fake => self.fake_machine().powered,
        }
    }

    /// The boot device the machine was last given: `pxe`, `disk` or what the
    /// far end calls it.
    async fn boot(&self) -> String {
        let name = match &self.far {
            Far::Ipmi { sim, .. } => sim.boot(),
            Far::Redfish(s) => s.machine().boot_target.clone(),
            Far::Sushy(e) => e.system().await["Boot"]["BootSourceOverrideTarget"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            Far::Fake => format!("{:?}", self.fake_machine().boot.map(|(d, _)| d)),
        };
        match name.to_lowercase().as_str() {
            "pxe" | "some(pxe)" => "pxe".into(),
            // IPMI's "default hard drive", Redfish's Hdd.
            "default" | "hdd" | "some(disk)" => "disk".into(),
            other => other.into(),
        }
    }

    fn fake_machine(&self) -> racklift::bmc::FakeMachine {
        let key = self.target.address.as_deref().unwrap();
        self.drivers.fake.machine(key).unwrap_or_default()
    }

    /// The most commands the far end saw at once, where it can tell.
    fn max_in_flight(&self) -> Option<usize> {
        match &self.far {
            Far::Ipmi { proxy, .. } => Some(proxy.stats().max_sessions_in_flight()),
            Far::Redfish(s) => Some(s.machine().max_in_flight as usize),
            Far::Sushy(_) | Far::Fake => None,
        }
    }

    /// Waits (up to 60 s: an emulator's power change takes seconds) until
    /// the far end shows the machine powered as `on`.
    async fn wait_powered(&self, on: bool) {
        let started = Instant::now();
        while self.powered().await != on {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{}: the machine never showed powered = {on}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every check, in turn, on one rig.
async fn conforms(rig: Rig) {
    let name = rig.name;
    let bmc = rig.driver(None);

    // Power: read, on, off, each shown at the far end.
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off), "{name}");
    bmc.set_boot_device(BootDevice::Pxe, false).await.unwrap();
    assert_eq!(rig.boot().await, "pxe", "{name}: a one-time PXE boot");
    bmc.power(PowerAction::On).await.unwrap();
    rig.wait_powered(true).await;
    assert_eq!(bmc.power_state().await, Ok(PowerState::On), "{name}");
    bmc.power(PowerAction::Off).await.unwrap();
    rig.wait_powered(false).await;
    assert_eq!(bmc.power_state().await, Ok(PowerState::Off), "{name}");
    bmc.set_boot_device(BootDevice::Disk, true).await.unwrap();
    assert_eq!(rig.boot().await, "disk", "{name}: boot from the disk");

    // A wrong password: refused as not transient (so never retried; tests/ipmi.rs
    // and tests/redfish.rs count the attempts), the machine untouched.
    // ("wrong" is also the fake driver's scripted refusal.)
    let wrong = rig.driver(Some("wrong"));
    let e = wrong.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(e, BmcError::Auth { .. }), "{name}: {e:?}");
    assert!(!e.is_transient(), "{name}: {e}");
    assert!(
        e.to_string().contains("refused the credentials of user"),
        "{name}: {e}"
    );
    assert!(
        !rig.powered().await,
        "{name}: the machine was not powered on"
    );
    assert_eq!(rig.boot().await, "disk", "{name}");

    // Concurrent commands to one BMC: all succeed, one at a time.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let bmc = rig.driver(None);
        tasks.spawn(async move {
            if i % 2 == 0 {
                bmc.power_state().await.map(|_| ())
            } else {
                bmc.set_boot_device(BootDevice::Pxe, false).await
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(rig.boot().await, "pxe", "{name}");
    if let Some(n) = rig.max_in_flight() {
        assert_eq!(n, 1, "{name}: commands to one BMC never overlap");
    }

    // Nothing answers: a transient error, given up on without a caller's timeout.
    let gone = rig.quick.driver_for(&rig.unreachable).expect("a driver");
    let e = tokio::time::timeout(Duration::from_secs(60), gone.power_state())
        .await
        .unwrap_or_else(|_| panic!("{name}: the driver gives up on its own"))
        .unwrap_err();
    assert!(e.is_transient(), "{name}: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ipmi_driver_conforms() {
    if let Some(rig) = Rig::ipmi().await {
        conforms(rig).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redfish_driver_conforms_with_the_dmtf_schema_service() {
    conforms(Rig::redfish().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redfish_driver_conforms_with_sushy() {
    if let Some(rig) = Rig::sushy().await {
        conforms(rig).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_driver_conforms() {
    conforms(Rig::fake()).await;
}
