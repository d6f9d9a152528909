//! The request loop: one thread reads the listening socket, and each accepted
//! read request gets its own OS thread and its own UDP socket.
//!
//! The transfer's socket is bound to the address the request was sent to (the
//! listener's own address, or, when the listener is bound to the unspecified
//! address, the one `IP_PKTINFO`/`IPV6_PKTINFO` reports), so a server with
//! several addresses answers from the one the client asked (an IPv6 link-local
//! destination is left to the kernel's choice, which needs no interface). It
//! is `connect()`ed to the client, so the kernel drops packets from anyone
//! else. Transfer sockets are made in the network namespace of the thread
//! that runs the loop, which first moves into the listening socket's own
//! namespace when that is another one (a listener bound in a namespace by a
//! thread that has left it), so they are always made beside the listener.
//!
//! At most [`MAX_TRANSFERS`] transfers run at once; past that a request is
//! answered "server busy" and counted in `tftp_busy`. A request repeated by a
//! client whose transfer is already running is ignored. To stop, the loop is
//! woken through a socket pair, and every running transfer's socket is shut
//! down for reading, which wakes its blocked `recv`.

use super::packet::{self, Incoming, Mode, Options};
use super::transfer::{self, End};
use super::{BootFiles, Content, DEFAULT_TIMEOUT, MAX_RETRIES, MAX_WINDOW, TransferEnded};
use std::collections::HashMap;
use std::io::{self, BufReader, Cursor, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many transfers may run at once.
pub const MAX_TRANSFERS: usize = 512;

/// How much of a file is read at once.
const READ_AHEAD: usize = 256 * 1024;

/// Each transfer thread's stack.
const STACK: usize = 512 * 1024;

struct Shared {
    files: BootFiles,
    rt: tokio::runtime::Handle,
    stop: AtomicBool,
    /// Running transfers by client address, with their sockets.
    active: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
}

/// The listening side; [`Listener::run`] blocks until told to stop.
pub struct Listener {
    socket: UdpSocket,
    local: SocketAddr,
    /// Whether the destination of each request comes with it (unspecified bind).
    pktinfo: bool,
    wake: UnixDatagram,
    shared: Arc<Shared>,
}

/// Tells the listener to stop, when asked or when dropped.
pub struct Stopper {
    wake: UnixDatagram,
    shared: Arc<Shared>,
}

impl Stopper {
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(b"s");
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Listener {
    pub fn new(
        socket: UdpSocket,
        files: BootFiles,
        rt: tokio::runtime::Handle,
    ) -> io::Result<(Listener, Stopper)> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let pktinfo = local.ip().is_unspecified();
        if pktinfo {
            enable_pktinfo(&socket, local.is_ipv6())?;
        }
        let (wake, woken) = UnixDatagram::pair()?;
        woken.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            files,
            rt,
            stop: AtomicBool::new(false),
            active: Mutex::new(HashMap::new()),
        });
        Ok((
            Listener {
                socket,
                local,
                pktinfo,
                wake: woken,
                shared: shared.clone(),
            },
            Stopper { wake, shared },
        ))
    }

    /// Serves requests until stopped; then wakes every running transfer.
    /// Runs on a thread of its own: it may move that thread into the
    /// listening socket's network namespace.
    pub fn run(self) -> io::Result<()> {
        enter_netns_of(&self.socket)?;
        let mut buf = vec![0u8; 65536];
        let result = self.serve(&mut buf);
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.active.lock().expect("lock").values() {
            // SAFETY: shutdown(2) on a socket this map keeps open.
            unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RD) };
        }
        result
    }

    fn serve(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut fds = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            // SAFETY: `fds` is a valid array of two pollfd for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                return Ok(());
            }
            // Drain what is queued, then poll again.
            loop {
                match recv_with_dst(&self.socket, buf, self.pktinfo) {
                    Ok((n, peer, dst)) => {
                        let local = dst.map(|ip| self.reply_ip(ip)).unwrap_or(self.local.ip());
                        self.handle(&buf[..n], peer, local);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // An ICMP error for an earlier packet; nothing to do.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The address to answer from, for a request sent to `dst`.
    fn reply_ip(&self, dst: IpAddr) -> IpAddr {
        let ip = match (self.local, dst) {
            (SocketAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => dst,
        };
        if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            self.local.ip()
        } else {
            ip
        }
    }

    fn handle(&self, p: &[u8], peer: SocketAddr, local: IpAddr) {
        let metrics = &self.shared.files.metrics;
        let req = match packet::decode_request(p) {
            Ok(Incoming::Request(r)) => r,
            Ok(Incoming::Stray(_)) => return,
            Err(e) => {
                metrics.count("tftp_malformed");
                tracing::debug!(%peer, error = %e, "malformed tftp packet");
                return;
            }
        };
        if req.bad_options > 0 {
            metrics.count("tftp_malformed");
            tracing::debug!(%peer, file = req.name, "tftp option out of range ignored");
        }
        let files = &self.shared.files;
        if req.write {
            files.refuse(&peer, req.name, "write request");
            answer(local, peer, packet::ERR_ACCESS, "writes are not accepted");
            return;
        }
        if req.mode == Mode::Mail {
            files.refuse(&peer, req.name, "mail mode");
            answer(
                local,
                peer,
                packet::ERR_ILLEGAL,
                "mail mode is not supported",
            );
            return;
        }
        let mut active = self.shared.active.lock().expect("lock");
        if active.contains_key(&peer) {
            // The client sent its request again before our first answer came.
            return;
        }
        if active.len() >= MAX_TRANSFERS {
            drop(active);
            metrics.count("tftp_busy");
            tracing::warn!(%peer, file = req.name, "tftp server busy");
            answer(local, peer, packet::ERR_UNDEFINED, "server busy");
            return;
        }
        let socket = match UdpSocket::bind(SocketAddr::new(local, 0)).and_then(|s| {
            s.connect(peer)?;
            Ok(s)
        }) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(%peer, %local, error = %e, "tftp cannot open a transfer socket");
                return;
            }
        };
        active.insert(peer, socket.clone());
        drop(active);
        let job = Job {
            shared: self.shared.clone(),
            socket,
            peer,
            name: req.name.to_string(),
            mode: req.mode,
            options: req.options,
        };
        let spawned = std::thread::Builder::new()
            .name("racklift-tftp-xfer".into())
            .stack_size(STACK)
            .spawn(move || job.run());
        if let Err(e) = spawned {
            self.shared.active.lock().expect("lock").remove(&peer);
            tracing::warn!(%peer, error = %e, "tftp cannot start a transfer thread");
            answer(local, peer, packet::ERR_UNDEFINED, "server busy");
        }
    }
}

/// Moves the calling thread into the network namespace `socket` was made in,
/// when that is not the thread's own; threads it starts then inherit it.
fn enter_netns_of(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    // SIOCGSKNS (Linux 4.9): a descriptor of the socket's network namespace.
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: the ioctl reads the socket and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS as _) };
    if fd < 0 {
        // Older kernels: the socket is taken to be in the thread's namespace.
        return Ok(());
    }
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    let ns = unsafe { OwnedFd::from_raw_fd(fd) };
    let theirs = std::fs::File::from(ns.try_clone()?).metadata()?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net")?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Ok(());
    }
    // SAFETY: setns(2) on a namespace descriptor; affects this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::other(format!(
            "the TFTP socket belongs to another network namespace, which this thread cannot enter: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Sends one ERROR to `peer` from a fresh port on `local`.
fn answer(local: IpAddr, peer: SocketAddr, code: u16, message: &str) {
    if let Ok(s) = UdpSocket::bind(SocketAddr::new(local, 0)) {
        let _ = s.send_to(&packet::encode_error(code, message), peer);
    }
}

/// One accepted read request, run on its own thread.
struct Job {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    name: String,
    mode: Mode,
    options: Options,
}

impl Job {
    fn run(self) {
        let span =
            tracing::info_span!("tftp", peer = %self.peer, file = %self.name, mode = ?self.mode);
        let _entered = span.enter();
        let _active = Active {
            shared: &self.shared,
            peer: self.peer,
        };
        let files = &self.shared.files;
        let started = Instant::now();
        let opened = match files.open_read(self.peer, &self.name, &self.shared.rt) {
            Ok(o) => o,
            Err(refused) => {
                let _ = self
                    .socket
                    .send(&packet::encode_error(refused.code, refused.message));
                return;
            }
        };
        files.metrics.count("tftp_transfers");
        tracing::debug!(peer = %self.peer, file = %opened.name, "tftp transfer started");
        let netascii = self.mode == Mode::Netascii;
        // The size on the wire is unknown in netascii, so tsize is not answered.
        let size = (!netascii).then(|| opened.content.len());
        let granted = packet::negotiate(
            &self.options,
            size,
            packet::MAX_BLKSIZE,
            MAX_WINDOW,
            DEFAULT_TIMEOUT,
        );
        let raw: Box<dyn Read + Send> = match opened.content {
            Content::File { file, .. } => Box::new(BufReader::with_capacity(READ_AHEAD, file)),
            Content::Generated(bytes) => Box::new(Cursor::new(bytes)),
        };
        let mut source: Box<dyn Read + Send> = if netascii {
            Box::new(packet::Netascii::new(raw))
        } else {
            raw
        };
        let outcome = transfer::run(
            &self.socket,
            &mut *source,
            &granted,
            MAX_RETRIES,
            &self.shared.stop,
        );
        let millis = started.elapsed().as_millis() as u64;
        let complete = matches!(outcome.end, End::Complete);
        let end = match &outcome.end {
            End::Complete => "complete".to_string(),
            End::PeerError(code) => format!("client sent error {code}"),
            End::TimedOut => "client stopped answering".to_string(),
            End::Stopped => "server stopping".to_string(),
            End::Failed(e) => e.to_string(),
        };
        tracing::info!(
            peer = %self.peer,
            file = %opened.name,
            bytes = outcome.bytes,
            complete,
            ms = millis,
            blksize = granted.blksize,
            windowsize = granted.windowsize,
            end,
            "tftp transfer ended"
        );
        if let Some(tx) = &files.reports {
            let _ = tx.send(TransferEnded {
                peer: self.peer,
                file: opened.name,
                bytes: outcome.bytes,
                complete,
                millis,
            });
        }
    }
}

/// Removes a transfer from the running set when its thread ends.
struct Active<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Ok(mut active) = self.shared.active.lock() {
            active.remove(&self.peer);
        }
    }
}

fn enable_pktinfo(socket: &UdpSocket, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: setsockopt with a c_int value that lives for the call.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if v6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        // IPv4 clients of a dual-stack socket; not every socket allows it.
        let _ = set(libc::IPPROTO_IP, libc::IP_PKTINFO);
        Ok(())
    } else {
        set(libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// Receives one datagram without blocking: its length, sender and (with
/// `pktinfo`) the local address it was sent to.
fn recv_with_dst(
    socket: &UdpSocket,
    buf: &mut [u8],
    pktinfo: bool,
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    if !pktinfo {
        socket
            .recv_from(buf)
            .map(|(n, peer)| (n, peer, None::<IpAddr>))
    } else {
        recvmsg_pktinfo(socket, buf)
    }
}

fn recvmsg_pktinfo(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at a live buffer of the stated size.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let peer = match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a =
                unsafe { &*(&name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a =
                unsafe { &*(&name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => return Err(io::Error::other("datagram from an unknown address family")),
    };
    let mut dst = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen; each header's data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let ip = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                if !ip.is_unspecified() {
                    dst = Some(IpAddr::V4(ip));
                }
            } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                // A link-local address needs its interface to bind to; the
                // kernel picks the right one from the client's address.
                if !ip.is_unspecified() && !ip.is_unicast_link_local() {
                    dst = Some(IpAddr::V6(ip));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, peer, dst))
}
