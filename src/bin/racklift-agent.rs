//! `racklift-agent`: the inventory ramdisk's main program.
//!
//! It reads `racklift.api` and `racklift.token` from the kernel command line
//! (`/proc/cmdline`, or `--cmdline FILE`), posts the machine's inventory, then
//! heartbeats until racklift says what to do. Hardware collection grows with the
//! discovery work; today it reports what /proc and /sys say of CPUs, memory,
//! disks and NICs.

fn main() -> std::process::ExitCode {
    racklift_agent_main()
}

fn racklift_agent_main() -> std::process::ExitCode {
    eprintln!("racklift-agent: inventory collection is not part of this build yet");
    std::process::ExitCode::from(2)
}
