//! IPv6 router advertisements on the provisioning links (RFC 4861).
//!
//! A network-booting iPXE configures IPv4 (DHCP) and IPv6 (router
//! solicitations) side by side and goes on only when both are done. On a
//! provisioning link with no IPv6 router nobody answers its solicitations, and
//! it waits about 16 s for them on every boot. Where racklift serves the link
//! (`dhcp.router_advertisements`, on by default in server mode) it answers
//! them with an advertisement that says what is true of the link: no default
//! router (lifetime 0), no prefix, neither the managed nor the other-config
//! flag. iPXE then ends its IPv6 configuration at once with its link-local
//! address; Linux hosts take nothing from it either.
//!
//! As RFC 4861 6.2.6 asks of a router: a solicitation is answered to the
//! all-nodes group after a random delay of up to 0.5 s, at most one
//! advertisement in 3 s per link (solicitations in between share the next
//! one), and unsolicited advertisements go out at start and every 200 to 600 s.
//! A solicitation that did not come from the link itself (hop limit below
//! 255) or is malformed is dropped and counted.
//!
//! Sockets are raw ICMPv6 sockets bound to their interface, made before the
//! server runs ([`bind`]) so a caller can make them in another network
//! namespace, as for DHCP.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// RFC 4861 10: MAX_RA_DELAY_TIME and MIN_DELAY_BETWEEN_RAS.
const MAX_RA_DELAY: Duration = Duration::from_millis(500);
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// Unsolicited advertisements: every 200 to 600 s (the RFC's defaults).
const UNSOLICITED_SECS: std::ops::Range<u64> = 200..600;
/// A send that failed (the link-local address still tentative at start) is
/// tried again this much later.
const SEND_RETRY: Duration = Duration::from_secs(1);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// A raw ICMPv6 socket on one interface.
#[derive(Debug)]
pub struct RaSocket {
    pub socket: socket2::Socket,
    pub iface: String,
    pub ifindex: u32,
}

/// The advertisement racklift sends: no router, no prefix, no flags
/// (type, code, checksum the kernel fills in, hop limit, flags, router
/// lifetime, reachable time, retransmission timer; no options).
pub fn advertisement() -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = ROUTER_ADVERTISEMENT;
    m
}

/// Why a received ICMPv6 message is not a router solicitation to answer, or
/// `Ok` when it is one (RFC 4861 6.1.1). `hop_limit` is the IPv6 header's.
pub fn check_solicitation(msg: &[u8], hop_limit: Option<u8>) -> Result<(), &'static str> {
    if msg.first() != Some(&ROUTER_SOLICITATION) {
        return Err("not_solicitation");
    }
    if hop_limit != Some(255) {
        return Err("hop_limit");
    }
    if msg.len() < 8 || msg[1] != 0 {
        return Err("malformed");
    }
    // Options: type, length in units of 8 octets (never 0), inside the message.
    let mut rest = &msg[8..];
    while !rest.is_empty() {
        let len = usize::from(*rest.get(1).ok_or("malformed")?) * 8;
        if len == 0 || len > rest.len() {
            return Err("malformed");
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// One socket per interface in `cfg.interfaces` when router advertisements
/// are on, else none. An interface where none can be made (IPv6 off on the
/// host or the link) is warned of and served without: machines there boot,
/// only slower.
pub fn bind(cfg: &crate::config::DhcpConfig) -> Vec<RaSocket> {
    if !cfg.router_advertisements {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in &cfg.interfaces {
        match bind_on(name) {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!(
                iface = %name,
                error = %e,
                "no router advertisements on this interface: iPXE there waits about 16 s for IPv6 autoconfiguration on each boot"
            ),
        }
    }
    out
}

fn bind_on(name: &str) -> io::Result<RaSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: a NUL-terminated name; the call reads it only.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("router advertisements: no interface {name}"),
        ));
    }
    let with =
        |e: io::Error| io::Error::new(e.kind(), format!("router advertisements on {name}: {e}"));
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(with)?;
    s.bind_device(Some(name.as_bytes())).map_err(with)?;
    // Only solicitations reach this socket (a set bit blocks a type).
    let mut filter = [u32::MAX; 8];
    filter[usize::from(ROUTER_SOLICITATION >> 5)] &= !(1 << (ROUTER_SOLICITATION & 31));
    setsockopt(&s, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter).map_err(with)?;
    setsockopt(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &1i32).map_err(with)?;
    // Sent with hop limit 255, as receivers check (RFC 4861 6.1.2).
    s.set_multicast_hops_v6(255).map_err(with)?;
    s.set_unicast_hops_v6(255).map_err(with)?;
    s.set_multicast_loop_v6(false).map_err(with)?;
    s.join_multicast_v6(&ALL_ROUTERS, ifindex).map_err(with)?;
    s.set_nonblocking(true).map_err(with)?;
    Ok(RaSocket {
        socket: s,
        iface: name.to_string(),
        ifindex,
    })
}

/// `ICMP6_FILTER` of `<netinet/icmp6.h>` (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;

fn setsockopt<T>(
    s: &socket2::Socket,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one message and the hop limit it arrived with.
fn recv_with_hop_limit(fd: libc::c_int, buf: &mut [u8]) -> io::Result<(usize, Option<u8>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one IPV6_HOPLIMIT control message, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: zeroed msghdr is a valid empty header; every pointer set below
    // points into a live local buffer of the length given.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above; recvmsg writes within the buffers described.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hop_limit = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen; the data read is the c_int IPV6_HOPLIMIT carries.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                hop_limit = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, hop_limit))
}

/// Serves every socket until `shutdown` turns true.
pub async fn serve(
    sockets: Vec<RaSocket>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let mut tasks = Vec::new();
    for s in sockets {
        tasks.push(tokio::spawn(serve_one(
            s,
            shutdown.clone(),
            metrics.clone(),
        )));
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            return Err(e);
        }
    }
    Ok(())
}

async fn serve_one(
    s: RaSocket,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let RaSocket {
        socket,
        iface,
        ifindex,
    } = s;
    // SAFETY: the socket owns its descriptor and the AsyncFd owns the
    // socket, so the descriptor stays open and the same while registered.
    let fd = unsafe { AsyncFd::register(socket) }?;
    let to: socket2::SockAddr = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex).into();
    let ra = advertisement();
    tracing::info!(%iface, "answering IPv6 router solicitations (no router, no prefix)");
    // When the next advertisement goes out, and when the last one did.
    let mut due = Instant::now();
    let mut last: Option<Instant> = None;
    let mut failures = 0u32;
    let mut buf = [0u8; 1500];
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(due) => {
                match fd.get_ref().send_to(&ra, &to) {
                    Ok(_) => {
                        metrics.count("ra_sent");
                        failures = 0;
                        let now = Instant::now();
                        last = Some(now);
                        due = now + Duration::from_secs(rand::random_range(UNSOLICITED_SECS));
                    }
                    Err(e) => {
                        failures += 1;
                        // At start the link-local address is tentative for a
                        // second or two (duplicate address detection).
                        if failures == 5 {
                            tracing::warn!(%iface, error = %e, "router advertisement not sent; trying again every second");
                        } else {
                            tracing::debug!(%iface, error = %e, "router advertisement not sent");
                        }
                        due = Instant::now() + SEND_RETRY;
                    }
                }
            }
            ready = fd.readable() => {
                let mut guard = ready?;
                loop {
                    match recv_with_hop_limit(fd.get_ref().as_raw_fd(), &mut buf) {
                        Ok((n, hop_limit)) => match check_solicitation(&buf[..n], hop_limit) {
                            Ok(()) => {
                                metrics.count("ra_solicitations");
                                let now = Instant::now();
                                let delay = Duration::from_millis(rand::random_range(0..=MAX_RA_DELAY.as_millis() as u64));
                                let mut at = now + delay;
                                if let Some(l) = last {
                                    at = at.max(l + MIN_DELAY_BETWEEN_RAS);
                                }
                                due = due.min(at);
                            }
                            Err(why) => {
                                tracing::debug!(%iface, why, "router solicitation dropped");
                                metrics.count(&format!("ra_dropped_{why}"));
                            }
                        },
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(%iface, error = %e, "router solicitation not read");
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_offers_nothing() {
        let ra = advertisement();
        assert_eq!(ra[0], 134);
        // Flags (M, O), router lifetime, reachable time, retransmission timer.
        assert_eq!(ra[5], 0);
        assert_eq!(&ra[6..8], &[0, 0]);
        assert!(ra[8..].iter().all(|b| *b == 0));
    }

    #[test]
    fn solicitations_from_the_link_only() {
        let rs = [133, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_solicitation(&rs, Some(255)), Ok(()));
        // Source link-layer address option of 8 octets.
        let with_sll = [133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0, 0, 1];
        assert_eq!(check_solicitation(&with_sll, Some(255)), Ok(()));
        assert_eq!(check_solicitation(&rs, Some(64)), Err("hop_limit"));
        assert_eq!(check_solicitation(&rs, None), Err("hop_limit"));
        assert_eq!(check_solicitation(&rs[..7], Some(255)), Err("malformed"));
        assert_eq!(
            check_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0], Some(255)),
            Err("malformed")
        );
        let zero_len = [133, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(check_solicitation(&zero_len, Some(255)), Err("malformed"));
        let past_end = [133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0];
        assert_eq!(check_solicitation(&past_end, Some(255)), Err("malformed"));
        assert_eq!(
            check_solicitation(&[128, 0, 0, 0], Some(255)),
            Err("not_solicitation")
        );
    }
}
