//! The BMC's LAN address and MAC, asked through the kernel's IPMI device
//! (`/dev/ipmi0`, driver `ipmi_devintf`): Get LAN Configuration Parameters
//! (network function 0x0c, command 0x02), parameters 3 (IP address) and 5
//! (MAC address), on the first LAN channel that answers.
//!
//! No device, or no answer within a second: no BMC section.

use super::root::Root;
use crate::protocol::inventory::Bmc;

/// Parameter 3: the IPv4 address.
const PARAM_IP: u8 = 3;
/// Parameter 5: the MAC address.
const PARAM_MAC: u8 = 5;

/// The BMC as the machine's own IPMI device reports it, or a note saying why
/// there is a device but no answer (no device: neither).
pub fn bmc(root: &Root) -> (Option<Bmc>, Option<String>) {
    if !root.exists("/dev/ipmi0") {
        return (None, None);
    }
    let dev = match device::Device::open(root) {
        Ok(d) => d,
        Err(e) => return (None, Some(format!("/dev/ipmi0: {e}"))),
    };
    // Channels 1..=11 may be LAN channels; most machines use 1 (HP: 2).
    let mut last = String::new();
    for channel in 1..=11u8 {
        let ip = match dev.lan_param(channel, PARAM_IP) {
            Ok(r) if r.first() == Some(&0) => r,
            Ok(r) => {
                last = format!(
                    "completion code {:#04x}",
                    r.first().copied().unwrap_or(0xff)
                );
                continue;
            }
            Err(e) => {
                last = e;
                continue;
            }
        };
        let mac = dev.lan_param(channel, PARAM_MAC).ok();
        return (
            Some(Bmc {
                channel,
                ipv4: parse_ip(&ip),
                mac: mac.as_deref().and_then(parse_mac),
            }),
            None,
        );
    }
    (
        None,
        Some(format!(
            "the BMC behind /dev/ipmi0 gave no LAN configuration on channels 1 to 11 (last: {last})"
        )),
    )
}

/// A Get LAN Configuration Parameters response: completion code, revision, data.
fn param_data(resp: &[u8], want: usize) -> Option<&[u8]> {
    match resp {
        [0, _rev, data @ ..] if data.len() >= want => Some(&data[..want]),
        _ => None,
    }
}

fn parse_ip(resp: &[u8]) -> Option<String> {
    let d = param_data(resp, 4)?;
    (d != [0, 0, 0, 0]).then(|| format!("{}.{}.{}.{}", d[0], d[1], d[2], d[3]))
}

fn parse_mac(resp: &[u8]) -> Option<String> {
    let d = param_data(resp, 6)?;
    (d.iter().any(|&b| b != 0)).then(|| {
        d.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

mod device {
    //! The ioctl interface of `linux/ipmi.h`.
    use super::Root;
    use std::os::fd::AsRawFd;

    #[repr(C)]
    struct SystemInterfaceAddr {
        addr_type: i32,
        channel: i16,
        lun: u8,
    }

    #[repr(C)]
    struct Msg {
        netfn: u8,
        cmd: u8,
        data_len: u16,
        data: *mut u8,
    }

    #[repr(C)]
    struct Req {
        addr: *mut u8,
        addr_len: u32,
        msgid: libc::c_long,
        msg: Msg,
    }

    #[repr(C)]
    struct Recv {
        recv_type: i32,
        addr: *mut u8,
        addr_len: u32,
        msgid: libc::c_long,
        msg: Msg,
    }

    const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: i32 = 0x0c;
    const IPMI_BMC_CHANNEL: i16 = 0xf;

    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | ((b'i' as u64) << 8) | nr
    }
    const IPMICTL_SEND_COMMAND: u64 = ioc(2, 13, std::mem::size_of::<Req>());
    const IPMICTL_RECEIVE_MSG_TRUNC: u64 = ioc(3, 11, std::mem::size_of::<Recv>());

    pub struct Device(std::fs::File);

    impl Device {
        pub fn open(root: &Root) -> std::io::Result<Device> {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(root.host("/dev/ipmi0"))
                .map(Device)
        }

        /// Get LAN Configuration Parameters; the raw response (completion code first).
        pub fn lan_param(&self, channel: u8, param: u8) -> Result<Vec<u8>, String> {
            self.request(0x0c, 0x02, &[channel, param, 0, 0])
        }

        fn request(&self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>, String> {
            let fd = self.0.as_raw_fd();
            let mut addr = SystemInterfaceAddr {
                addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
                channel: IPMI_BMC_CHANNEL,
                lun: 0,
            };
            let mut body = data.to_vec();
            let mut req = Req {
                addr: (&mut addr as *mut SystemInterfaceAddr).cast(),
                addr_len: std::mem::size_of::<SystemInterfaceAddr>() as u32,
                msgid: 1,
                msg: Msg {
                    netfn,
                    cmd,
                    data_len: body.len() as u16,
                    data: body.as_mut_ptr(),
                },
            };
            // SAFETY: req points at live buffers for the call's duration.
            if unsafe { libc::ioctl(fd, IPMICTL_SEND_COMMAND as _, &mut req) } < 0 {
                return Err(format!("sending: {}", std::io::Error::last_os_error()));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 1000) } <= 0 {
                return Err("no answer within 1 s".into());
            }
            let mut raddr = [0u8; 64];
            let mut buf = vec![0u8; 256];
            let mut recv = Recv {
                recv_type: 0,
                addr: raddr.as_mut_ptr(),
                addr_len: raddr.len() as u32,
                msgid: 0,
                msg: Msg {
                    netfn: 0,
                    cmd: 0,
                    data_len: buf.len() as u16,
                    data: buf.as_mut_ptr(),
                },
            };
            // SAFETY: recv points at live buffers of the lengths given.
            if unsafe { libc::ioctl(fd, IPMICTL_RECEIVE_MSG_TRUNC as _, &mut recv) } < 0 {
                return Err(format!("receiving: {}", std::io::Error::last_os_error()));
            }
            buf.truncate(recv.msg.data_len as usize);
            Ok(buf)
        }
    }

    #[cfg(test)]
    #[test]
    fn ioctl_numbers_match_linux_ipmi_h() {
        // As computed by the C headers on x86_64.
        assert_eq!(IPMICTL_SEND_COMMAND, 0x8028_690d);
        assert_eq!(IPMICTL_RECEIVE_MSG_TRUNC, 0xc030_690b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_does_not_answer_is_a_note_not_a_bmc() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(bmc(&Root::new(t.path())), (None, None));
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        std::fs::write(t.path().join("dev/ipmi0"), b"").unwrap();
        let (b, note) = bmc(&Root::new(t.path()));
        assert_eq!(b, None);
        let note = note.unwrap();
        assert!(
            note.contains("no LAN configuration") && note.contains("sending:"),
            "{note}"
        );
    }

    #[test]
    fn lan_parameter_responses() {
        assert_eq!(
            parse_ip(&[0, 0x11, 10, 0, 3, 7]).as_deref(),
            Some("10.0.3.7")
        );
        assert_eq!(parse_ip(&[0, 0x11, 0, 0, 0, 0]), None);
        assert_eq!(parse_ip(&[0xc1]), None);
        assert_eq!(
            parse_mac(&[0, 0x11, 0x9c, 0xb6, 0x54, 1, 2, 3]).as_deref(),
            Some("9c:b6:54:01:02:03")
        );
        assert_eq!(parse_mac(&[0, 0x11, 1, 2]), None);
    }
}
