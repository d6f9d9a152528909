//! Hardware matching throughput: 10,000 synthetic inventories of about 300
//! facts (shaped like tests/fixtures/hw-samples) against 20 profiles.
//!
//! Run with `cargo bench --bench matcher`. Each inventory is generated just
//! before it is matched, as a server would parse it from JSON, and dropped
//! right after; neither is timed. The timed part builds the inventory's
//! index and matches it against every profile.

use std::hint::black_box;
use std::time::{Duration, Instant};

use racklift::profiles::matcher::*;
use racklift::protocol::Fact;

const INVENTORIES: usize = 10_000;
const FACTS_PER_INVENTORY: usize = 300;
const GIB: u64 = 1 << 30;

/// xorshift64*: small, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn inventory(rng: &mut Rng, serial: usize) -> Vec<Fact> {
    let mut f = Vec::with_capacity(FACTS_PER_INVENTORY);
    let mut add = |c: &str, t: &str, k: &str, v: String| f.push(Fact::new(c, t, k, v));

    let (vendor, product) = *rng.pick(&[
        ("HP", "ProLiant BL460c Gen8 (641016-B21)"),
        ("HP", "ProLiant BL460c Gen9 (727021-B21)"),
        ("HP", "ProLiant DL360 Gen9 (755258-B21)"),
        ("Dell Inc.", "PowerEdge R640"),
        ("Dell Inc.", "PowerEdge R740xd"),
        ("Supermicro", "SYS-1029P-WTR"),
    ]);
    add("system", "product", "serial", format!("CZ{serial:08}"));
    add("system", "product", "name", product.into());
    add("system", "product", "vendor", vendor.into());
    add(
        "system",
        "ipmi",
        "channel",
        rng.pick(&["1", "2"]).to_string(),
    );
    add(
        "firmware",
        "bios",
        "version",
        rng.pick(&["I31", "I32", "P89", "2.4.3"]).to_string(),
    );
    add(
        "firmware",
        "bios",
        "date",
        rng.pick(&["09/18/2013", "03/05/2015", "11/20/2019"])
            .to_string(),
    );
    add("firmware", "bios", "vendor", vendor.into());

    let sockets = *rng.pick(&[1u64, 2, 2, 2, 4]);
    let cores = *rng.pick(&[4u64, 8, 12, 16]);
    add("cpu", "physical", "number", sockets.to_string());
    for s in 0..sockets {
        let t = format!("physical_{s}");
        add("cpu", &t, "vendor", "Intel Corp.".into());
        add(
            "cpu",
            &t,
            "product",
            "Intel(R) Xeon(R) CPU E5-2650 0 @ 2.00GHz".into(),
        );
        add("cpu", &t, "cores", cores.to_string());
        add("cpu", &t, "threads", (2 * cores).to_string());
        add("cpu", &t, "frequency", "2000000000".into());
    }
    add(
        "cpu",
        "logical",
        "number",
        (sockets * cores * 2).to_string(),
    );

    let populated = *rng.pick(&[2u64, 4, 8, 12, 16]);
    let dimm = *rng.pick(&[8 * GIB, 16 * GIB, 32 * GIB]);
    let ddr = rng.pick(&["DDR3", "DDR4"]).to_string();
    add("memory", "banks", "count", "16".into());
    for b in 0..16 {
        let t = format!("bank:{}:{}", b / 8, b % 8);
        if b < populated {
            add("memory", &t, "size", dimm.to_string());
            add("memory", &t, "clock", "1600000000".into());
            add(
                "memory",
                &t,
                "description",
                format!("DIMM {ddr} Synchronous 1600 MHz"),
            );
            add("memory", &t, "vendor", "HP".into());
            add("memory", &t, "product", "672612-081".into());
        } else {
            add(
                "memory",
                &t,
                "description",
                format!("DIMM {ddr} Synchronous [empty]"),
            );
            add("memory", &t, "vendor", "UNKNOWN".into());
            add("memory", &t, "product", "NOT AVAILABLE".into());
        }
        add(
            "memory",
            &t,
            "slot",
            format!("PROC {} DIMM {}", b / 8 + 1, b % 8 + 1),
        );
    }

    for d in ["sda", "sdb"] {
        add(
            "disk",
            d,
            "size",
            rng.pick(&["299", "599", "1999"]).to_string(),
        );
        add("disk", d, "vendor", "HP".into());
        add("disk", d, "model", "LOGICAL VOLUME".into());
        add("disk", d, "rev", "4.68".into());
    }
    let drives = *rng.pick(&[2, 4, 8]);
    let drive_type = *rng.pick(&["SAS", "SATA", "SSD"]);
    for d in 1..=drives {
        let t = format!("1I:1:{d}");
        add("disk", &t, "type", drive_type.into());
        add("disk", &t, "slot", "0".into());
        add(
            "disk",
            &t,
            "size",
            rng.pick(&["300", "600", "1000", "2000", "480"]).to_string(),
        );
    }

    let nics = *rng.pick(&[2, 4]);
    let driver = *rng.pick(&["be2net", "ixgbe", "tg3", "i40e"]);
    for n in 0..nics {
        let t = format!("eth{n}");
        add(
            "network",
            &t,
            "serial",
            format!(
                "9c:b6:54:{:02x}:{:02x}:{:02x}",
                serial % 251,
                n,
                rng.below(256)
            ),
        );
        add("network", &t, "businfo", format!("pci@0000:04:00.{n}"));
        if n == 0 {
            let ip = if rng.below(4) == 0 {
                format!("192.168.{}.{}", rng.below(256), rng.below(254) + 1)
            } else {
                format!(
                    "10.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    rng.below(254) + 1
                )
            };
            add("network", &t, "ipv4", ip);
            add(
                "network",
                &t,
                "ipv4-cidr",
                rng.pick(&["16", "24"]).to_string(),
            );
            if rng.below(3) == 0 {
                add(
                    "network",
                    &t,
                    "ipv6",
                    format!("2001:db8:{:x}::{:x}", rng.below(65536), rng.below(65536)),
                );
            }
        }
        add(
            "network",
            &t,
            "link",
            rng.pick(&["yes", "yes", "no"]).to_string(),
        );
        add("network", &t, "driver", driver.into());
        add(
            "network",
            &t,
            "speed",
            rng.pick(&["1000", "10000"]).to_string(),
        );
        add("network", &t, "duplex", "full".into());
    }

    let mut n = 0;
    while f.len() < FACTS_PER_INVENTORY {
        let t = format!("logical_{}", n / 3);
        let (k, v) = match n % 3 {
            0 => ("bogomips", format!("3999.{}", rng.below(100))),
            1 => ("loops_per_sec", (10_000 + rng.below(2000)).to_string()),
            _ => ("cache_size", "20480KB".to_string()),
        };
        f.push(Fact::new("cpu", t, k, v));
        n += 1;
    }
    f
}

fn profiles() -> Vec<(&'static str, Vec<[&'static str; 4]>)> {
    let banks = |n: usize, test: &'static str| -> Vec<[&'static str; 4]> {
        const NAMES: [&str; 16] = [
            "$b1", "$b2", "$b3", "$b4", "$b5", "$b6", "$b7", "$b8", "$b9", "$b10", "$b11", "$b12",
            "$b13", "$b14", "$b15", "$b16",
        ];
        NAMES[..n]
            .iter()
            .map(|b| ["memory", *b, "size", test])
            .collect()
    };
    let with = |mut a: Vec<[&'static str; 4]>, b: &[[&'static str; 4]]| {
        a.extend_from_slice(b);
        a
    };
    vec![
        (
            "hp-bl460-compute",
            with(
                vec![
                    ["system", "product", "vendor", "HP"],
                    ["system", "product", "name", "regexp(BL460c)"],
                    ["cpu", "physical", "number", "ge(2)"],
                ],
                &with(
                    banks(4, "ge(16GiB)"),
                    &[
                        ["network", "$eth", "ipv4", "network(10.0.0.0/8)"],
                        ["network", "$eth", "serial", "$$mac"],
                    ],
                ),
            ),
        ),
        (
            "hp-compute-small",
            with(
                vec![
                    ["system", "product", "vendor", "HP"],
                    ["cpu", "physical", "number", "ge(1)"],
                ],
                &with(
                    banks(2, "ge(8GiB)"),
                    &[
                        ["network", "$eth", "link", "yes"],
                        ["network", "$eth", "serial", "$$mac"],
                    ],
                ),
            ),
        ),
        (
            "dell-storage",
            vec![
                ["system", "product", "vendor", "regexp(^Dell)"],
                ["disk", "$d1", "type", "SATA"],
                ["disk", "$d1", "size", "ge(1000)"],
                ["disk", "$d2", "type", "SATA"],
                ["disk", "$d2", "size", "ge(1000)"],
                ["disk", "$d3", "type", "SATA"],
                ["disk", "$d3", "size", "ge(1000)"],
                ["disk", "$d4", "type", "SATA"],
                ["disk", "$d4", "size", "ge(1000)"],
            ],
        ),
        (
            "ssd-cache",
            vec![
                ["disk", "$s1", "type", "SSD"],
                ["disk", "$s2", "type", "SSD"],
            ],
        ),
        (
            "ipv6-edge",
            vec![
                ["network", "$e", "ipv6", "network(2001:db8::/32)"],
                ["network", "$e", "link", "yes"],
                ["network", "$e", "serial", "$$mac"],
            ],
        ),
        ("big-memory", banks(16, "ge(32GiB)")),
        (
            "bios-pinned",
            vec![
                ["firmware", "bios", "vendor", "HP"],
                ["firmware", "bios", "version", "in(I31,I32)"],
                ["firmware", "bios", "date", "regexp(201[3-5]$)"],
            ],
        ),
        (
            "dual-10g",
            vec![
                ["network", "$n1", "speed", "ge(10000)"],
                ["network", "$n1", "link", "yes"],
                ["network", "$n2", "speed", "ge(10000)"],
                ["network", "$n2", "link", "yes"],
            ],
        ),
        (
            "quad-socket",
            vec![
                ["cpu", "physical", "number", "ge(4)"],
                ["cpu", "physical_0", "cores", "ge(12)"],
            ],
        ),
        (
            "fails-late-vendor",
            with(
                vec![
                    ["cpu", "physical", "number", "ge(1)"],
                    ["network", "$e", "serial", "$$mac"],
                ],
                &with(
                    banks(2, "ge(1GiB)"),
                    &[["system", "product", "vendor", "Lenovo"]],
                ),
            ),
        ),
        (
            "fails-late-join",
            vec![
                ["system", "product", "vendor", "not(Lenovo)"],
                ["network", "$e", "ipv4", "network(10.0.0.0/8)"],
                ["network", "$e", "speed", "10000"],
                ["network", "$e", "link", "yes"],
                ["network", "$e", "driver", "tg3"],
            ],
        ),
        (
            "cpu-model",
            vec![
                ["cpu", "physical_0", "product", "regexp(e5-26[0-9]0, i)"],
                ["cpu", "logical", "number", "ge(32)"],
            ],
        ),
        (
            "sas-mirror",
            vec![
                ["disk", "$a", "type", "SAS"],
                ["disk", "$a", "size", "$size"],
                ["disk", "$b", "type", "SAS"],
                ["disk", "$b", "size", "$size"],
            ],
        ),
        ("mem-range", banks(8, "range(8GiB,16GiB)")),
        (
            "nic-driver",
            vec![
                ["network", "$e", "driver", "in(ixgbe,i40e)"],
                ["network", "$e", "serial", "$$mac"],
            ],
        ),
        (
            "ipmi-serial",
            vec![
                ["system", "ipmi", "channel", "$ch=in(1,2)"],
                ["system", "product", "serial", "$$serial"],
            ],
        ),
        (
            "private-net",
            vec![
                ["network", "$e", "ipv4", "network(192.168.0.0/16)"],
                ["network", "$e", "ipv4-cidr", "ge(16)"],
            ],
        ),
        (
            "ddr4-populated",
            vec![
                [
                    "memory",
                    "$m1",
                    "vendor",
                    "not(in(UNKNOWN,'NOT AVAILABLE'))",
                ],
                ["memory", "$m1", "description", "regexp(DDR4)"],
                [
                    "memory",
                    "$m2",
                    "vendor",
                    "not(in(UNKNOWN,'NOT AVAILABLE'))",
                ],
                ["memory", "$m2", "description", "regexp(DDR4)"],
            ],
        ),
        (
            "large-disk",
            vec![
                ["disk", "$d", "size", "ge(1000)"],
                ["disk", "$d", "type", "or(SATA,SAS)"],
                ["disk", "$d", "slot", "$slot"],
            ],
        ),
        (
            "generic",
            vec![
                ["cpu", "physical", "number", "ge(1)"],
                ["memory", "$b", "size", "ge(1GiB)"],
                ["disk", "$d", "size", "gt(0)"],
                ["network", "$e", "serial", "$$mac"],
            ],
        ),
    ]
}

fn main() {
    let profiles: Vec<(&str, SpecSet)> = profiles()
        .into_iter()
        .map(|(name, list)| match SpecSet::parse(&list) {
            Ok(set) => (name, set),
            Err(e) => panic!("profile {name}: {e}"),
        })
        .collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut facts_total = 0;
    let mut timed = Duration::ZERO;
    let mut indexing = Duration::ZERO;
    let mut matched = vec![0usize; profiles.len()];
    let mut limited = 0usize;
    for i in 0..INVENTORIES {
        let list = inventory(&mut rng, i);
        facts_total += list.len();
        let start = Instant::now();
        let facts = Facts::new(list);
        let built = Instant::now();
        for (p, (_, specs)) in profiles.iter().enumerate() {
            match black_box(matches(specs, &facts, DEFAULT_STEP_LIMIT)) {
                Ok(Some(_)) => matched[p] += 1,
                Ok(None) => {}
                Err(_) => limited += 1,
            }
        }
        let end = Instant::now();
        indexing += built - start;
        timed += end - start;
        drop(black_box(facts));
    }

    let pairs = INVENTORIES * profiles.len();
    println!(
        "{INVENTORIES} inventories x {} profiles, {:.0} facts per inventory",
        profiles.len(),
        facts_total as f64 / INVENTORIES as f64
    );
    println!(
        "total {:.3} s (index build {:.3} s, matching {:.3} s)",
        timed.as_secs_f64(),
        indexing.as_secs_f64(),
        (timed - indexing).as_secs_f64()
    );
    println!(
        "per (inventory, profile) pair: {:.2} us; {:.0} matches/s; target < 1 s: {}",
        timed.as_secs_f64() * 1e6 / pairs as f64,
        pairs as f64 / timed.as_secs_f64(),
        if timed < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
    println!("search limit reached: {limited}");
    for ((name, _), count) in profiles.iter().zip(&matched) {
        println!("  {name:<20} {count:>6} / {INVENTORIES} matched");
    }
}
