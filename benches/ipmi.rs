//! One chassis-status round trip through racklift's `ipmi` driver against the
//! same through `ipmitool -I lanplus -C 3 ... chassis power status`, both
//! against one OpenIPMI `ipmi_sim` on loopback, N times each, alternating, and
//! a Markdown table of the latencies.
//!
//! Both sides do a whole session per round trip (set-up, privilege, Get Chassis
//! Status, close); `ipmitool` also pays for starting a process, as it does when
//! provisioning tools shell out to it.
//!
//! Run: `cargo bench --bench ipmi` (needs `ipmi_sim` and `ipmitool`).

#[path = "../tests/common/ipmi_sim.rs"]
mod ipmi_sim;
#[path = "../tests/common/peers.rs"]
mod peers;

use racklift::bmc::{BmcTarget, Drivers, PowerState};
use racklift::node::BmcDriverKind;
use std::time::{Duration, Instant};

const N: usize = 50;
const WARM_UP: usize = 3;

fn main() {
    let Some(sim) = ipmi_sim::IpmiSim::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let drivers = Drivers::default();
    let target = BmcTarget {
        driver: BmcDriverKind::Ipmi,
        address: Some("127.0.0.1".into()),
        port: Some(sim.port),
        username: Some(ipmi_sim::USER.into()),
        password: Some(ipmi_sim::PASSWORD.into()),
        verify_tls: true,
        node_key: "bench".into(),
    };
    let racklift_once = || {
        let d = drivers.driver_for(&target).expect("ipmi driver");
        let t = Instant::now();
        let p = rt
            .block_on(d.power_state())
            .expect("chassis status via racklift");
        assert_eq!(p, PowerState::Off);
        t.elapsed()
    };
    let ipmitool_once = || {
        let t = Instant::now();
        let out = sim
            .ipmitool(&["chassis", "power", "status"])
            .output()
            .expect("ipmitool runs");
        let took = t.elapsed();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("is off"),
            "ipmitool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    };
    for _ in 0..WARM_UP {
        racklift_once();
        ipmitool_once();
    }
    let mut racklift = Vec::with_capacity(N);
    let mut ipmitool = Vec::with_capacity(N);
    for _ in 0..N {
        racklift.push(racklift_once());
        ipmitool.push(ipmitool_once());
    }
    let r = Stats::of(racklift);
    let i = Stats::of(ipmitool);
    println!(
        "Chassis power status against one ipmi_sim on 127.0.0.1 (N = {N} each, alternating):\n"
    );
    println!("| client | mean | p50 | p95 | min | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", r.row("racklift `ipmi` driver"));
    println!("{}", i.row("`ipmitool -I lanplus -C 3`"));
    println!(
        "\nracklift / ipmitool: {:.2}x at the median, {:.2}x on the mean",
        r.p50.as_secs_f64() / i.p50.as_secs_f64(),
        r.mean.as_secs_f64() / i.mean.as_secs_f64()
    );
}

struct Stats {
    mean: Duration,
    p50: Duration,
    p95: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Stats {
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats {
            mean: v.iter().sum::<Duration>() / v.len() as u32,
            p50: at(0.50),
            p95: at(0.95),
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    fn row(&self, name: &str) -> String {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        format!(
            "| {name} | {} | {} | {} | {} | {} |",
            ms(self.mean),
            ms(self.p50),
            ms(self.p95),
            ms(self.min),
            ms(self.max)
        )
    }
}
