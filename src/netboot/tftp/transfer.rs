//! One read transfer on its own connected UDP socket: the OACK exchange, then
//! windows of DATA blocks (lock-step when the window is 1), RFC 1350 and
//! RFC 7440.
//!
//! The block buffers (two windows: the one in flight and the next, read while
//! the client takes in the first) are allocated once; a window goes out in one
//! `sendmmsg` (a single block in one `send`), and its ACK comes in one `recv`
//! (the socket's receive timeout is the retransmission timeout). An ACK of a block inside the window slides the
//! window to the block after it; an ACK outside it (a duplicate or an old one)
//! is ignored, so a late ACK never makes the server send a window twice (the
//! Sorcerer's Apprentice problem). On a timeout the window is sent again from
//! its first block, up to `max_retries` times in a row. Block numbers wrap from
//! 65535 to 0, so files of any length can be sent.

use super::packet::{self, Granted, Reply};
use std::io::{self, Read};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a transfer ended.
#[derive(Debug)]
pub enum End {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR (e.g. code 8 after reading tsize).
    PeerError(u16),
    /// No acknowledgement after the last retransmission.
    TimedOut,
    /// The server is shutting down.
    Stopped,
    /// The file could not be read, or the peer is unreachable.
    Failed(io::Error),
}

/// The result of a transfer: its end and the bytes the client acknowledged.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    pub bytes: u64,
}

enum Got {
    Ack(u16),
    PeerError(u16),
    Timeout,
    Stopped,
    Failed(io::Error),
}

/// Sends `source` over `socket` (connected to the client) as `granted` says.
pub fn run(
    socket: &UdpSocket,
    source: &mut dyn Read,
    granted: &Granted,
    max_retries: u32,
    stop: &AtomicBool,
) -> Outcome {
    let mut t = Transfer {
        socket,
        timeout: granted.timeout,
        shortened: false,
        stop,
        rx: [0; 1024],
        iov: Vec::with_capacity(granted.windowsize.into()),
        msgs: Vec::with_capacity(granted.windowsize.into()),
    };
    let mut bytes = 0;
    let end = t.send_all(source, granted, max_retries, &mut bytes);
    if let End::Failed(e) = &end
        && e.kind() != io::ErrorKind::ConnectionRefused
    {
        let _ = socket.send(&packet::encode_error(
            packet::ERR_UNDEFINED,
            "cannot read file",
        ));
    }
    Outcome { end, bytes }
}

struct Transfer<'a> {
    socket: &'a UdpSocket,
    timeout: Duration,
    /// Whether the socket's receive timeout is less than `timeout` (after a
    /// packet that did not count).
    shortened: bool,
    stop: &'a AtomicBool,
    rx: [u8; 1024],
    /// `sendmmsg` arguments, refilled for each window.
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Transfer<'_> {
    fn send_all(
        &mut self,
        source: &mut dyn Read,
        granted: &Granted,
        max_retries: u32,
        bytes: &mut u64,
    ) -> End {
        if let Err(e) = self.socket.set_read_timeout(Some(self.timeout)) {
            return End::Failed(e);
        }
        if !granted.oack.is_empty() {
            let mut oack = Vec::with_capacity(64);
            packet::encode_oack(&granted.oack, &mut oack);
            let mut tries = 0;
            loop {
                if let Err(e) = self.send(&oack) {
                    return End::Failed(e);
                }
                match self.wait(|b| b == 0) {
                    Got::Ack(_) => break,
                    Got::Timeout if tries < max_retries => tries += 1,
                    got => return ended(got),
                }
            }
        }

        let window = u64::from(granted.windowsize.max(1));
        let mut blocks = Blocks::new(usize::from(granted.blksize), window);
        let mut tries = 0;
        loop {
            if let Err(e) = blocks.load(source, window) {
                return End::Failed(e);
            }
            let top = blocks.loaded.min(blocks.base + window - 1);
            let sent = if blocks.base == top {
                self.send(blocks.packet(top))
            } else {
                self.send_many((blocks.base..=top).map(|idx| blocks.packet(idx)))
            };
            if let Err(e) = sent {
                return End::Failed(e);
            }
            // The next window is read while the client takes this one in.
            if let Err(e) = blocks.load(source, 2 * window) {
                return End::Failed(e);
            }
            let (base, in_window) = (blocks.base, top - blocks.base);
            let first = base as u16;
            match self.wait(|b| u64::from(b.wrapping_sub(first)) <= in_window) {
                Got::Ack(b) => {
                    let acked = base + u64::from(b.wrapping_sub(first));
                    for idx in base..=acked {
                        *bytes += (blocks.packet(idx).len() - 4) as u64;
                    }
                    if Some(acked) == blocks.last {
                        return End::Complete;
                    }
                    blocks.base = acked + 1;
                    tries = 0;
                }
                Got::Timeout if tries < max_retries => tries += 1,
                got => return ended(got),
            }
        }
    }

    /// Sends one packet; a full send buffer is left to retransmission.
    fn send(&self, p: &[u8]) -> io::Result<()> {
        match self.socket.send(p) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a window of packets with as few `sendmmsg` calls as the kernel
    /// allows; a full send buffer is left to retransmission.
    fn send_many<'b>(&mut self, packets: impl Iterator<Item = &'b [u8]>) -> io::Result<()> {
        self.iov.clear();
        self.msgs.clear();
        for p in packets {
            self.iov.push(libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            });
        }
        for iov in &mut self.iov {
            // SAFETY: all-zero is a valid msghdr (no address: the socket is connected).
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            self.msgs.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        let mut done = 0;
        while done < self.msgs.len() {
            let left = &mut self.msgs[done..];
            // SAFETY: each mmsghdr points at one iovec in `self.iov`, which
            // points at a packet borrowed for this call.
            let n = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    left.as_mut_ptr(),
                    left.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(()),
                    _ if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
                    _ => return Err(e),
                }
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Waits up to the timeout for an ACK that `wanted` accepts, or an ERROR.
    /// Other packets do not restart the timeout.
    fn wait(&mut self, wanted: impl Fn(u16) -> bool) -> Got {
        if self.shortened {
            if let Err(e) = self.socket.set_read_timeout(Some(self.timeout)) {
                return Got::Failed(e);
            }
            self.shortened = false;
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.socket.recv(&mut self.rx) {
                Ok(n) => match packet::decode_reply(&self.rx[..n]) {
                    Reply::Ack(b) if wanted(b) => return Got::Ack(b),
                    Reply::Error(code) => return Got::PeerError(code),
                    Reply::Ack(_) | Reply::Other => {}
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return if self.stop.load(Ordering::Relaxed) {
                        Got::Stopped
                    } else {
                        Got::Timeout
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Got::Failed(e),
            }
            // Not an answer: a stray packet, or an empty read after the server
            // shut the socket down to stop.
            if self.stop.load(Ordering::Relaxed) {
                return Got::Stopped;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            if let Err(e) = self.socket.set_read_timeout(Some(left)) {
                return Got::Failed(e);
            }
            self.shortened = true;
        }
    }
}

/// The DATA packets of two windows: the one in flight and the next, each
/// buffer allocated once. Blocks are counted from 1 without wrapping; the wire
/// number is the count modulo 65536.
struct Blocks {
    slots: Vec<Vec<u8>>,
    lens: Vec<usize>,
    blksize: usize,
    /// The first block not acknowledged.
    base: u64,
    /// The last block read from the source.
    loaded: u64,
    /// The last block of the file, once read (shorter than `blksize`).
    last: Option<u64>,
}

impl Blocks {
    fn new(blksize: usize, window: u64) -> Blocks {
        let slots: Vec<Vec<u8>> = (0..2 * window).map(|_| vec![0; 4 + blksize]).collect();
        Blocks {
            lens: vec![0; slots.len()],
            slots,
            blksize,
            base: 1,
            loaded: 0,
            last: None,
        }
    }

    /// Reads blocks until `count` from `base` are loaded or the file ends.
    fn load(&mut self, source: &mut dyn Read, count: u64) -> io::Result<()> {
        while self.last.is_none() && self.loaded + 1 - self.base < count {
            let idx = self.loaded + 1;
            let slot = (idx % self.slots.len() as u64) as usize;
            let buf = &mut self.slots[slot];
            let n = fill(source, &mut buf[4..])?;
            packet::data_header(buf, idx as u16);
            self.lens[slot] = n;
            self.loaded = idx;
            if n < self.blksize {
                self.last = Some(idx);
            }
        }
        Ok(())
    }

    /// Block `idx` as a DATA packet.
    fn packet(&self, idx: u64) -> &[u8] {
        let slot = (idx % self.slots.len() as u64) as usize;
        &self.slots[slot][..4 + self.lens[slot]]
    }
}

fn ended(got: Got) -> End {
    match got {
        Got::Ack(_) => End::Complete,
        Got::PeerError(code) => End::PeerError(code),
        Got::Timeout => End::TimedOut,
        Got::Stopped => End::Stopped,
        Got::Failed(e) => End::Failed(e),
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn fill(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
