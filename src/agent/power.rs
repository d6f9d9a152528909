//! Carrying out the server's power commands from inside the ramdisk: flush the
//! file systems, then reboot(2) with the power-off or restart command, falling
//! back to the magic SysRq keys when the call is refused.

use crate::protocol::Command;

/// Powers the machine off or restarts it; returns only on failure.
pub fn obey(c: Command) -> std::io::Error {
    let (cmd, sysrq) = match c {
        Command::Wait => return std::io::Error::other("nothing to do"),
        Command::PowerOff => (libc::LINUX_REBOOT_CMD_POWER_OFF, b"o"),
        Command::Reboot => (libc::LINUX_REBOOT_CMD_RESTART, b"b"),
    };
    // SAFETY: plain system calls without pointers.
    unsafe {
        libc::sync();
        libc::reboot(cmd);
    }
    let err = std::io::Error::last_os_error();
    let _ = std::fs::write("/proc/sys/kernel/sysrq", b"1");
    let _ = std::fs::write("/proc/sysrq-trigger", sysrq);
    err
}
