//! Fuzzes the profile spec parser and matcher: any four fields must parse or be
//! refused with an error, and a parsed spec set must match or not within the
//! search bound — never panic, never hang.
//!
#![no_main]

use libfuzzer_sys::fuzz_target;
use racklift::profiles::matcher::{Facts, SpecSet, explain, matches};
use racklift::protocol::Fact;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Lines are specs; fields are separated by '|'.
    let specs: Vec<[String; 4]> = text
        .lines()
        .take(16)
        .map(|l| {
            let mut f = l.splitn(4, '|').map(str::to_string);
            [f.next().unwrap_or_default(), f.next().unwrap_or_default(), f.next().unwrap_or_default(), f.next().unwrap_or_default()]
        })
        .collect();
    let Ok(set) = SpecSet::parse(&specs) else { return };
    let facts = Facts::new(vec![
        Fact::new("cpu", "physical", "number", "2"),
        Fact::new("memory", "total", "size", "68719476736"),
        Fact::new("disk", "sda", "size", "300"),
        Fact::new("disk", "sdb", "size", "300"),
        Fact::new("network", "eth0", "ipv4", "10.0.0.5"),
        Fact::new("network", "eth0", "ipv6", "fd00::5"),
        Fact::new("system", "product", "vendor", "gt(1)"),
    ]);
    let _ = matches(&set, &facts, 10_000);
    let _ = explain(&set, &facts, 10_000);
});
