//! `racklift-agent`: the inventory ramdisk's main program.
//!
//! It reads `racklift.api`, `racklift.token` and `BOOTIF` from the kernel
//! command line (`/proc/cmdline`, or `--cmdline FILE`), describes the machine,
//! posts the inventory until racklift stores it, then heartbeats and powers
//! off or reboots when told to. `--print` only prints the inventory (and its
//! facts with `--facts`); `--capture DIR` also copies every file read into DIR.
//! `--root DIR` reads a captured tree instead of the running machine.

use racklift::agent::{self, Client, Command, Pacing, Root};
use std::process::ExitCode;

struct Args {
    root: String,
    cmdline: String,
    print: bool,
    facts: bool,
    capture: Option<String>,
    no_power: bool,
}

const USAGE: &str = "usage: racklift-agent [--root DIR] [--cmdline FILE] [--print [--facts]] [--capture DIR] [--no-power]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        root: "/".into(),
        cmdline: "/proc/cmdline".into(),
        print: false,
        facts: false,
        capture: None,
        no_power: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().ok_or(format!("{x} needs a value\n{USAGE}"));
        match x.as_str() {
            "--root" => a.root = val()?,
            "--cmdline" => a.cmdline = val()?,
            "--capture" => a.capture = Some(val()?),
            "--print" => a.print = true,
            "--facts" => a.facts = true,
            "--no-power" => a.no_power = true,
            "-h" | "--help" => return Err(USAGE.into()),
            o => return Err(format!("unknown argument '{o}'\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut root = Root::new(&a.root);
    if let Some(dir) = &a.capture {
        root = root.capturing(dir);
    }
    let cmdline = std::fs::read_to_string(&a.cmdline).unwrap_or_default();
    if a.print || a.capture.is_some() {
        let bootif = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("BOOTIF="));
        let inv = agent::collect_timed(&root, bootif);
        let out = if a.facts {
            serde_json::to_string_pretty(&racklift::protocol::facts::facts(&inv))
        } else {
            serde_json::to_string_pretty(&inv)
        };
        println!("{}", out.unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let settings = match agent::parse_cmdline(&cmdline) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("racklift-agent: {e} ({})", a.cmdline);
            return ExitCode::from(2);
        }
    };
    let inv = agent::collect_timed(&root, settings.bootif.as_deref());
    let mut client = match Client::new(settings, Pacing::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("racklift-agent: {e}");
            return ExitCode::from(1);
        }
    };
    client.say(format!(
        "collected the inventory in {} ms",
        inv.agent.collect_ms.unwrap_or(0)
    ));
    match client.run(&inv) {
        Ok(o) if a.no_power || o.command == Command::Wait => ExitCode::SUCCESS,
        Ok(o) => {
            let e = agent::power::obey(o.command);
            eprintln!("racklift-agent: could not carry out {:?}: {e}", o.command);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("racklift-agent: {e}");
            ExitCode::from(3)
        }
    }
}
