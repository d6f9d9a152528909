//! The DHCP server's sockets: one per served interface and port, bound to the
//! device (so a broadcast goes out, and comes in, on that link only), with the
//! interface's IPv4 addresses read from the kernel.
//!
//! Sockets are plain `std` sockets until the server runs, so a caller can bind
//! them in another network namespace (tests do) and hand them over.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

/// An interface and its IPv4 networks (address and prefix length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub addrs: Vec<ipnetwork::Ipv4Network>,
}

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Port 67: DISCOVER, REQUEST, RELEASE, DECLINE, INFORM (or proxyDHCP offers).
    Dhcp,
    /// Port 4011: PXE boot-service requests (proxyDHCP, and BINL clients in
    /// either mode).
    PxeBoot,
}

/// A bound socket and what it serves.
#[derive(Debug)]
pub struct DhcpSocket {
    pub socket: UdpSocket,
    pub iface: Iface,
    pub port: Port,
}

/// The IPv4 networks configured on `name`, from `getifaddrs(3)`.
pub fn iface_addrs(name: &str) -> io::Result<Vec<ipnetwork::Ipv4Network>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs;
    // every pointer read is checked for null and only read while the list lives.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null()
                || ifa.ifa_netmask.is_null()
                || (*ifa.ifa_addr).sa_family as i32 != libc::AF_INET
            {
                continue;
            }
            let ifname = std::ffi::CStr::from_ptr(ifa.ifa_name);
            if ifname.to_bytes() != name.as_bytes() {
                continue;
            }
            let addr = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let mask = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            let prefix = u32::from_be(mask.sin_addr.s_addr).leading_ones() as u8;
            if let Ok(net) = ipnetwork::Ipv4Network::new(ip, prefix) {
                out.push(net);
            }
        }
        libc::freeifaddrs(head);
    }
    Ok(out)
}

/// A UDP socket on `0.0.0.0:port` bound to interface `name`, allowed to
/// broadcast, sharing the port with the other interfaces' sockets.
pub fn bind_on(name: &str, port: u16) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(name.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("interface {name}: {e}")))?;
    s.set_recv_buffer_size(4 << 20).ok();
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(|e| io::Error::new(e.kind(), format!("UDP port {port} on {name}: {e}")))?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Every socket the DHCP configuration asks for.
pub fn bind(cfg: &crate::config::DhcpConfig) -> io::Result<Vec<DhcpSocket>> {
    let mut out = Vec::new();
    for name in &cfg.interfaces {
        let addrs = iface_addrs(name)?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("interface {name} does not exist or has no IPv4 address"),
            ));
        }
        let iface = Iface {
            name: name.clone(),
            addrs,
        };
        out.push(DhcpSocket {
            socket: bind_on(name, cfg.port)?,
            iface: iface.clone(),
            port: Port::Dhcp,
        });
        // The PXE boot service, in both modes: a client that took a BINL
        // offer (ours in proxy mode, or another server's) asks here.
        out.push(DhcpSocket {
            socket: bind_on(name, cfg.proxy_port)?,
            iface,
            port: Port::PxeBoot,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_its_address() {
        let lo = super::iface_addrs("lo").unwrap();
        assert!(
            lo.iter()
                .any(|n| n.ip() == std::net::Ipv4Addr::LOCALHOST && n.prefix() == 8),
            "{lo:?}"
        );
        assert!(super::iface_addrs("rl-no-such-if").unwrap().is_empty());
    }
}
